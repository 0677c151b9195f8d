"""System checks: refuse to run in production with a development secret key; count stored secrets
no key decrypts."""

from collections.abc import Sequence
from typing import Any

from cryptography.fernet import Fernet
from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError

from portal.text import counted

from . import fields


def _secret_key() -> str:
    # Django raises ImproperlyConfigured on reading an empty SECRET_KEY (AttributeError when the
    # setting is absent): both are "missing" here, reported as portal.E001 rather than a traceback.
    try:
        return settings.SECRET_KEY or ""
    except (ImproperlyConfigured, AttributeError):
        return ""


def _weak(key: str) -> bool:
    return (
        not key
        or key == settings.DEFAULT_SECRET_KEY
        or key.startswith("django-insecure-")  # startproject's generated development key
        or len(key) < 32
        or len(set(key)) < 5  # "aaaa…": long but not random
    )


@register()
def secret_key_check(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    if settings.DEBUG:
        return []
    if _weak(_secret_key()):
        return [
            Error(
                "SECRET_KEY is missing, too short or the development default while DEBUG is off.",
                hint="Set SECRET_KEY (or SECRET_KEY_FILE) to a long random value, "
                "e.g. python -c 'import secrets; print(secrets.token_urlsafe(50))'.",
                id="portal.E001",
            )
        ]
    return []


@register()
def encryption_key_check(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    for position, key in enumerate(settings.ENCRYPTION_KEYS, start=1):
        try:
            Fernet(key.strip().encode())
        except (ValueError, TypeError):
            # The key itself is never printed.
            errors.append(
                Error(
                    f"ENCRYPTION_KEYS entry {position} is not a Fernet key "
                    "(32 url-safe base64-encoded bytes).",
                    hint="Generate one with python -c 'from cryptography.fernet import Fernet; "
                    "print(Fernet.generate_key().decode())'.",
                    id="portal.E003",
                )
            )
    if errors or settings.DEBUG or settings.ENCRYPTION_KEYS:
        return errors
    return [
        Warning(
            "ENCRYPTION_KEYS is not set: broker tokens are encrypted with a key derived from SECRET_KEY.",
            hint="Set ENCRYPTION_KEYS to a Fernet key (python -c 'from cryptography.fernet import "
            "Fernet; print(Fernet.generate_key().decode())') so rotating SECRET_KEY keeps tokens readable.",
            id="portal.W002",
        )
    ]


@register(Tags.database)  # reads every row: `check --database default` and `migrate` run it
def unreadable_secrets_check(
    app_configs: Sequence[AppConfig] | None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    counts: dict[str, list[Any]] = {}
    try:
        for database in databases or ():
            for model, field in fields.encrypted_fields():
                if pks := [pk for pk, _ in fields.unreadable(model, field, database)]:
                    counts[f"{model._meta.label}.{field.name}"] = pks
    except (DatabaseError, ImproperlyConfigured):
        return []  # not migrated yet, or a malformed key (portal.E003 says which)
    if not counts:
        return []
    total = sum(len(pks) for pks in counts.values())
    where = "; ".join(
        f"{label}: ids {', '.join(map(str, pks[:10]))}{' …' if len(pks) > 10 else ''}"
        for label, pks in counts.items()
    )
    return [
        Warning(
            f"{counted(total, 'stored secret', 'stored secrets')} cannot be decrypted with ENCRYPTION_KEYS "
            f"({where}).",
            hint="Put the key they were encrypted with back into ENCRYPTION_KEYS (the first key "
            "encrypts, every key decrypts), or enter those secrets again.",
            id="portal.W003",
        )
    ]

"""EncryptedTextField: a text column stored as a Fernet token, so the raw column never holds the secret.

A loaded row holds the stored ciphertext and decrypts it on the first read of the attribute, so that
a row whose secret no key can decrypt (ENCRYPTION_KEYS rotated without it) still loads, lists and
saves its other fields; only where the secret is used does UnreadableSecret say what is wrong.
"""

import base64
import hashlib
from collections.abc import Iterator
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.expressions import Expression
from django.db.models.query_utils import DeferredAttribute


class UnreadableSecret(ValueError):
    """No key of ENCRYPTION_KEYS decrypts the stored secret."""


class Ciphertext(str):
    """A secret as the column stores it, not decrypted yet (what `values()` queries return too)."""


def derived_key(secret_key: str) -> str:
    """The key used when ENCRYPTION_KEYS is empty (portal.W002 warns about it outside DEBUG)."""
    digest = hashlib.sha256(f"portal-encryption:{secret_key}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()


def _fernet() -> MultiFernet:
    keys = list(settings.ENCRYPTION_KEYS) or [derived_key(settings.SECRET_KEY)]
    fernets = []
    for position, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key.strip().encode()))
        except (ValueError, TypeError):
            # Fernet's own message does not say which setting is wrong; the key is never shown.
            raise ImproperlyConfigured(
                f"ENCRYPTION_KEYS entry {position} is not a Fernet key (32 url-safe base64-encoded bytes)."
            ) from None
    return MultiFernet(fernets)


def encrypt(value: str) -> str:
    return _fernet().encrypt(value.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise UnreadableSecret("Cannot decrypt a stored secret: check ENCRYPTION_KEYS.") from exc


class _DecryptOnRead(DeferredAttribute):
    """The attribute: holds what was loaded or set, decrypts a Ciphertext when it is read."""

    def __get__(self, instance: Any, cls: Any = None) -> Any:
        if instance is None:
            return self
        value = super().__get__(instance, cls)
        if isinstance(value, Ciphertext):
            value = decrypt(value)
            instance.__dict__[self.field.attname] = value  # decrypted once per instance
        return value

    def __set__(self, instance: Any, value: Any) -> None:
        instance.__dict__[self.field.attname] = value


class EncryptedTextField(models.TextField):
    descriptor_class = _DecryptOnRead

    def from_db_value(
        self, value: str | None, expression: Expression, connection: BaseDatabaseWrapper
    ) -> str | None:
        # "" stays "" (not None): the column is NOT NULL, so a blank row must save back unchanged.
        return value if value in (None, "") else Ciphertext(value)

    def pre_save(self, model_instance: models.Model, add: bool) -> Any:
        stored = model_instance.__dict__.get(self.attname)
        if isinstance(stored, Ciphertext):
            return stored  # never read since it was loaded: saved back as it is, readable or not
        return super().pre_save(model_instance, add)

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if isinstance(value, Ciphertext):
            return str(value)  # encrypted already
        return value if value in (None, "") else encrypt(value)


def encrypted_fields() -> Iterator[tuple[type[models.Model], EncryptedTextField]]:
    for model in apps.get_models():
        for field in model._meta.concrete_fields:
            if isinstance(field, EncryptedTextField):
                yield model, field


def unreadable(
    model: type[models.Model], field: EncryptedTextField, using: str = "default"
) -> Iterator[tuple[Any, str]]:
    """(primary key, stored ciphertext) of the rows whose `field` no key of ENCRYPTION_KEYS decrypts."""
    rows = model._default_manager.using(using).exclude(**{field.name: ""}).order_by("pk")
    for pk, token in rows.values_list("pk", field.name).iterator():
        try:
            decrypt(token)
        except UnreadableSecret:
            yield pk, token


def reencrypt(old_key: str) -> int:
    """Secrets no key of ENCRYPTION_KEYS decrypts but `old_key` does, encrypted again with the first
    key of ENCRYPTION_KEYS (a key retired without rotating its rows first). Returns how many."""
    old = Fernet(old_key.encode())
    moved = 0
    for model, field in encrypted_fields():
        for pk, token in list(unreadable(model, field)):
            try:
                secret = old.decrypt(token.encode()).decode()
            except InvalidToken:
                continue  # unreadable with either: portal.W003 counts it
            model._default_manager.filter(pk=pk).update(**{field.name: secret})
            moved += 1
    return moved

"""System checks: refuse to run in production with a development secret key."""

from django.conf import settings
from django.core.checks import Error, Warning, register


@register()
def secret_key_check(app_configs, **kwargs):
    if settings.DEBUG:
        return []
    key = settings.SECRET_KEY or ""
    if not key or key == settings.DEFAULT_SECRET_KEY or len(key) < 32:
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
def encryption_key_check(app_configs, **kwargs):
    if settings.DEBUG or settings.ENCRYPTION_KEYS:
        return []
    return [
        Warning(
            "ENCRYPTION_KEYS is not set: broker tokens are encrypted with a key derived from SECRET_KEY.",
            hint="Set ENCRYPTION_KEYS to a Fernet key (python -c 'from cryptography.fernet import "
            "Fernet; print(Fernet.generate_key().decode())') so rotating SECRET_KEY keeps tokens readable.",
            id="portal.W002",
        )
    ]

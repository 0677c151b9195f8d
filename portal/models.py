"""AuditEntry: who did what in the portal. The user name is copied so the row outlives the user."""

from typing import Any, NoReturn, TypeVar

from django.conf import settings
from django.core.validators import validate_slug
from django.db import models

_M = TypeVar("_M", bound=models.Model)


class AppendOnlyQuerySet(models.QuerySet[_M]):
    def update(self, **kwargs: Any) -> NoReturn:
        raise ValueError(f"{self.model.__name__} rows are append-only.")

    def delete(self) -> NoReturn:
        raise ValueError(f"{self.model.__name__} rows are append-only.")


class AppendOnly(models.Model):
    """Records that are written once: no save() of an existing row, no bulk update() or delete().

    Deleting a parent (a Run) still removes its rows through the ORM's cascade.
    """

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None and not kwargs.get("force_insert"):
            raise ValueError(f"{type(self).__name__} rows are append-only.")
        super().save(*args, **kwargs)


class AuditEntry(AppendOnly):
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    user_name = models.CharField(max_length=150, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    action = models.CharField(max_length=64, db_index=True)
    account_id = models.CharField(max_length=12, blank=True, db_index=True)
    object_repr = models.CharField(max_length=255, blank=True)
    details = models.JSONField(default=dict, blank=True, help_text="Redacted: never holds a secret.")

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.user_name or 'system'} {self.action} {self.object_repr}"


class ApiTokenScope(models.TextChoices):
    READ = "read", "Read"
    WRITE = "write", "Read and write"


class ApiToken(models.Model):
    """A per-user API token (`Authorization: Bearer <token>`). Only its SHA-256 is stored: the token
    is shown once, when it is made. It acts with its user's role, narrowed to reads by `read` scope."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(
        max_length=64, validators=[validate_slug], help_text="What uses it, e.g. account-vending-pipeline."
    )
    scope = models.CharField(max_length=8, choices=ApiTokenScope.choices, default=ApiTokenScope.READ)
    prefix = models.CharField(max_length=16, help_text="The token's first characters, to tell tokens apart.")
    digest = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the token.")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "name"], condition=models.Q(revoked_at=None), name="api_token_name_per_user"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

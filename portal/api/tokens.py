"""API tokens: made, checked, revoked. A token is `ecrp_` + 43 random URL-safe characters; the
database keeps only its SHA-256 (a token has 256 random bits: a slow hash would add nothing)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from django.utils import timezone

from portal import audit
from portal.audit import Actor
from portal.models import ApiToken, ApiTokenScope
from portal.roles import ADMIN, role_of

TOKEN_PREFIX = "ecrp_"
PREFIX_SHOWN = 12
# last_used_at is written at most this often per token: not a database write on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)
MAX_EXPIRES_DAYS = 3650


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def api_token_create(
    *,
    user: User,
    name: str,
    scope: str = ApiTokenScope.READ,
    expires_days: int | None = None,
    actor: Actor = None,
) -> tuple[ApiToken, str]:
    """Make a token for `user`; returns the row and the token itself, which is never stored."""
    errors: dict[str, list[str]] = {}
    if scope not in ApiTokenScope.values:
        errors["scope"] = [f"Choose one of {', '.join(ApiTokenScope.values)}."]
    if expires_days is not None and not 1 <= expires_days <= MAX_EXPIRES_DAYS:
        errors["expires_days"] = [f"Between 1 and {MAX_EXPIRES_DAYS} days, or none for no expiry."]
    if ApiToken.objects.filter(user=user, name=name, revoked_at=None).exists():
        errors["name"] = [
            f"{user.get_username()} already has a token named {name!r}: revoke it or pick another name."
        ]
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        user=user,
        name=name,
        scope=scope,
        prefix=secret[:PREFIX_SHOWN],
        digest=_digest(secret),
        expires_at=timezone.now() + timedelta(days=expires_days) if expires_days else None,
    )
    try:
        token.full_clean(exclude=["user"])
    except ValidationError as exc:
        for field, messages in exc.message_dict.items():
            errors.setdefault(field, []).extend(messages)
    if errors:
        raise ValidationError(errors)
    token.save()
    audit.record(
        user=actor,
        action="api_token.create",
        obj=token,
        owner=user.get_username(),
        scope=scope,
        prefix=token.prefix,
    )
    return token, secret


def api_token_revoke(*, token: ApiToken, actor: Actor = None) -> ApiToken:
    if token.revoked_at is None:
        ApiToken.objects.filter(pk=token.pk, revoked_at=None).update(revoked_at=timezone.now())
        token.refresh_from_db()
        audit.record(user=actor, action="api_token.revoke", obj=token, owner=token.user.get_username())
    return token


def api_token_check(secret: str) -> ApiToken | None:
    """The live token this secret is (not revoked, not expired, its user active), or None."""
    if not secret.startswith(TOKEN_PREFIX):
        return None
    now = timezone.now()
    token = (
        ApiToken.objects.select_related("user")
        .filter(digest=_digest(secret), revoked_at=None, user__is_active=True)
        .filter(Q(expires_at=None) | Q(expires_at__gt=now))
        .first()
    )
    if token is None:
        return None
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


def api_tokens_visible(user: User) -> QuerySet[ApiToken]:
    """Everyone's for an admin (who may revoke any), one's own for everyone else."""
    tokens = ApiToken.objects.select_related("user").order_by("revoked_at", "-created_at", "-pk")
    return tokens if _is_admin(user) else tokens.filter(user=user)


def api_token_for(user: User, pk: int) -> ApiToken | None:
    return api_tokens_visible(user).filter(pk=pk).first()


def _is_admin(user: User) -> bool:
    return role_of(user) == ADMIN

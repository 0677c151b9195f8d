"""Single sign-on through an OpenID provider (mozilla-django-oidc): PKCE, state and nonce by the
library; here the issuer and audience check, the user a provider's claims name, and the role their
groups map to (OIDC_ROLE_MAP), recomputed at every sign-in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.exceptions import SuspiciousOperation
from django.db import transaction
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponseBase
from django.urls import reverse
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from . import audit
from .roles import ADMIN, OPERATOR, ROLE_PERMISSIONS, VIEWER

RANK = {VIEWER: 1, OPERATOR: 2, ADMIN: 3}


def role_for_groups(groups: Any) -> str:
    """The highest role OIDC_ROLE_MAP gives any of these groups ("" for none)."""
    names = [g for g in groups if isinstance(g, str)] if isinstance(groups, list) else []
    roles = [settings.OIDC_ROLE_MAP[g] for g in names if g in settings.OIDC_ROLE_MAP]
    return max(roles, key=RANK.__getitem__, default="")


class RoleMappingBackend(OIDCAuthenticationBackend):
    def verify_token(self, token: str, **kwargs: Any) -> dict[str, Any]:
        payload: dict[str, Any] = super().verify_token(token, **kwargs)
        audiences = payload.get("aud")
        audiences = audiences if isinstance(audiences, list) else [audiences]
        if payload.get("iss") != settings.OIDC_ISSUER or settings.OIDC_RP_CLIENT_ID not in audiences:
            raise SuspiciousOperation(
                "The ID token is not from the configured issuer, or not for this portal."
            )
        return payload

    def verify_claims(self, claims: dict[str, Any]) -> bool:
        return bool(self.get_username(claims))

    def get_username(self, claims: dict[str, Any]) -> str:
        name = claims.get(settings.OIDC_USERNAME_CLAIM) or ""
        return name[:150] if isinstance(name, str) else ""

    def filter_users_by_claims(self, claims: dict[str, Any]) -> QuerySet[User]:
        users = User.objects.filter(username=self.get_username(claims))
        if any(user.has_usable_password() for user in users):
            # A local account (the break-glass admin): a provider's user of that name never takes it.
            raise SuspiciousOperation("A local account has this user name: sign in with its password.")
        return users

    def create_user(self, claims: dict[str, Any]) -> User:
        user = User.objects.create_user(self.get_username(claims), email=claims.get("email") or "")
        user.set_unusable_password()
        user.save(update_fields=["password"])
        return self.update_user(user, claims)

    @transaction.atomic
    def update_user(self, user: User, claims: dict[str, Any]) -> User:
        role = role_for_groups(claims.get(settings.OIDC_GROUPS_CLAIM, []))
        user.groups.remove(*Group.objects.filter(name__in=ROLE_PERMISSIONS))
        if role:
            user.groups.add(Group.objects.get(name=role))
        audit.record(user=user, action="user.sso_login", obj=user, role=role or "none")
        return user


def sso_only(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """The provider's URLs exist only while single sign-on is set up (OIDC_ISSUER)."""

    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not settings.OIDC_ENABLED:
            raise Http404("Single sign-on is not set up.")
        return view(request, *args, **kwargs)

    wrapped.login_required = False  # type: ignore[attr-defined]  # LoginRequiredMiddleware lets it through
    return wrapped


def provider_logout_url(request: HttpRequest) -> str:
    """OIDC_OP_LOGOUT_URL_METHOD: where logging out goes; the provider's end-session endpoint for a
    user who signed in through it (so its session ends too), else the login page."""
    login = reverse(settings.LOGOUT_REDIRECT_URL)
    id_token = request.session.get("oidc_id_token")
    if not (settings.OIDC_ENABLED and settings.OIDC_OP_LOGOUT_ENDPOINT and id_token):
        return login
    query = urlencode(
        {"id_token_hint": id_token, "post_logout_redirect_uri": request.build_absolute_uri(login)}
    )
    return f"{settings.OIDC_OP_LOGOUT_ENDPOINT}?{query}"

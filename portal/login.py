"""Local password sign-in: lockout after repeated failures (django-axes) and the login page that
hides the password form when PASSWORD_LOGIN is off."""

from __future__ import annotations

from typing import Any

from axes.backends import AxesStandaloneBackend
from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import User
from django.http import HttpRequest


class LockoutBackend(AxesStandaloneBackend):
    """Axes' check for sign-ins over HTTP. A sign-in without a request (the test client's login(),
    code on the server) has no address to lock out and passes on to the password check."""

    def authenticate(self, request: HttpRequest | None, *args: Any, **kwargs: Any) -> None:
        if request is None:
            return None
        return super().authenticate(request, *args, **kwargs)


class PasswordBackend(ModelBackend):
    """Django's password check, refused over HTTP when PASSWORD_LOGIN is off: the login page and the
    admin site's alike (a password still works on the server's command line)."""

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> User | None:
        if request is not None and not settings.PASSWORD_LOGIN:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


class LoginView(auth_views.LoginView):
    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return {
            **super().get_context_data(**kwargs),
            "password_login": settings.PASSWORD_LOGIN,
            "oidc_enabled": settings.OIDC_ENABLED,
        }

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        if not settings.PASSWORD_LOGIN:
            return self.http_method_not_allowed(request, *args, **kwargs)
        return super().post(request, *args, **kwargs)

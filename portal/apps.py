from typing import Any

from django.apps import AppConfig
from django.contrib.auth.signals import user_logged_in
from django.http import HttpRequest

from .middleware import mark_seen


def _seen_at_login(sender: Any, request: HttpRequest, **kwargs: Any) -> None:
    """A session starts with its idle clock set: the requests of the next minute write nothing."""
    if request is not None and hasattr(request, "session"):
        mark_seen(request.session)


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Portal"

    def ready(self) -> None:
        from . import checks  # noqa: F401, PLC0415  registers the system checks once apps load
        from .api import schema  # noqa: F401, PLC0415  registers the Bearer scheme with drf-spectacular

        user_logged_in.connect(_seen_at_login, dispatch_uid="portal.session_seen")

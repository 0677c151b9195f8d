"""Request ids: taken from X-Request-ID (when sane) or generated, echoed back, put on log lines.
Security headers: a Content-Security-Policy, a Permissions-Policy, and no-store for signed-in users.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.http import HttpRequest, HttpResponseBase
from django.utils.cache import patch_cache_control

if TYPE_CHECKING:
    from django.contrib.auth.models import User

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
# \Z, not $: "$" also matches before a trailing newline, which would reach headers and log lines.
_SAFE = re.compile(r"^[A-Za-z0-9._-]{1,64}\Z")


def current_request_id() -> str:
    return _request_id.get()


class PortalRequest(HttpRequest):
    """What a signed-in page's view receives (for type checkers only: at run time an HttpRequest).

    LoginRequiredMiddleware lets only signed-in users reach such views; this middleware sets the id.
    """

    user: User
    request_id: str


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _SAFE.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]  # declared on PortalRequest
        token = _request_id.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            _request_id.reset(token)
        response["X-Request-ID"] = request_id
        return response


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get()
        return True


# The pages run no inline script or style (portal/tests/test_no_inline_code.py) and load nothing from
# elsewhere: everything comes from the portal itself. htmx is told not to inject its own <style>
# (base.html's htmx-config), and no code may be evaluated from a string.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    )
)
# Browser features no page uses, refused to the pages and to anything they could ever embed.
PERMISSIONS_POLICY = ", ".join(
    f"{feature}=()"
    for feature in (
        "accelerometer",
        "autoplay",
        "camera",
        "display-capture",
        "encrypted-media",
        "geolocation",
        "gyroscope",
        "magnetometer",
        "microphone",
        "midi",
        "payment",
        "publickey-credentials-get",
        "screen-wake-lock",
        "serial",
        "usb",
        "xr-spatial-tracking",
    )
)


class SecurityHeadersMiddleware:
    """After AuthenticationMiddleware, so that it knows who is signed in, and around
    LoginRequiredMiddleware, so that its redirects carry the headers too. Static files (WhiteNoise,
    earlier) stay cacheable."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        response.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            # Their pages show inventory and secrets: no shared proxy or back button keeps a copy.
            patch_cache_control(response, no_store=True)
        return response


# A signed-in session's end moves to SESSION_IDLE_TIMEOUT after its latest request, written at most
# this often (seconds): not a session write on every request (and every htmx poll).
IDLE_REFRESH = 60
SEEN = "_seen"  # when the session last moved its end (epoch seconds)


def mark_seen(session: Any) -> None:
    session[SEEN] = int(time.time())


class SessionIdleMiddleware:
    """Sessions expire after SESSION_IDLE_TIMEOUT without a request (SESSION_COOKIE_AGE is set to it:
    a modified session is saved with that much time left, and its cookie sent again)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        session = getattr(request, "session", None)
        user = getattr(request, "user", None)
        if session is None or user is None or not user.is_authenticated or not session.session_key:
            return response
        if time.time() - session.get(SEEN, 0) >= IDLE_REFRESH:
            mark_seen(session)  # SessionMiddleware, outside this one, saves it
        return response

"""Request ids: taken from X-Request-ID (when sane) or generated, echoed back, put on log lines."""

from __future__ import annotations

import contextvars
import logging
import re
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from django.http import HttpRequest, HttpResponseBase

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

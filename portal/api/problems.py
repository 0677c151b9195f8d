"""Errors as RFC 9457 problem details (`application/problem+json`): `type`, `title`, `status`,
`detail`, `errors` per field (the same messages the forms show), and the request id."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from portal.middleware import current_request_id

CONTENT_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:ecr-portal:problem:"
NON_FIELD = "__all__"  # Django's name for errors of a form as a whole


class Problem(exceptions.APIException):
    """A problem a view names itself (409s): its code, and members beside the standard ones."""

    def __init__(self, *, status: int, code: str, detail: str, **members: Any) -> None:
        super().__init__(detail=detail, code=code)
        self.status_code = status
        self.members = members


def validation_problem(
    errors: dict[str, list[str]], detail: str = "The request has invalid fields."
) -> Problem:
    return Problem(status=400, code="invalid", detail=detail, errors=errors)


def django_errors(exc: DjangoValidationError) -> dict[str, list[str]]:
    if hasattr(exc, "error_dict"):
        return {field: list(dict.fromkeys(messages)) for field, messages in exc.message_dict.items()}
    return {NON_FIELD: list(exc.messages)}


def _field_errors(detail: Any, path: str = "") -> dict[str, list[str]]:
    """DRF's tree of ErrorDetails as {field: [message]}, nested fields joined with dots."""
    if isinstance(detail, dict):
        errors: dict[str, list[str]] = {}
        for key, value in detail.items():
            name = NON_FIELD if key == "non_field_errors" else str(key)
            for field, messages in _field_errors(value, f"{path}.{name}" if path else name).items():
                errors.setdefault(field, []).extend(messages)
        return errors
    if isinstance(detail, list) and any(isinstance(item, dict | list) for item in detail):
        errors = {}
        for index, item in enumerate(detail):
            for field, messages in _field_errors(item, f"{path}.{index}" if path else str(index)).items():
                errors.setdefault(field, []).extend(messages)
        return errors
    messages = [str(item) for item in detail] if isinstance(detail, list) else [str(detail)]
    return {path or NON_FIELD: messages}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DjangoValidationError):
        exc = validation_problem(django_errors(exc))
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound("Nothing here, or nothing you may see.")
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # a fault of the portal: Django's 500 (logged with the request id)
    assert isinstance(exc, exceptions.APIException)
    status = response.status_code
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + _code(exc),
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": _detail(exc),
        "instance": context["request"].path if context.get("request") else "",
        "request_id": current_request_id(),
    }
    if isinstance(exc, Problem):
        body.update(exc.members)
    elif isinstance(exc, exceptions.ValidationError):
        body["errors"] = _field_errors(exc.detail)
        body["detail"] = "The request has invalid fields."
    return Response(body, status=status, headers=dict(response.items()), content_type=CONTENT_TYPE)


def _code(exc: exceptions.APIException) -> str:
    codes = exc.get_codes()
    code = codes if isinstance(codes, str) else exc.default_code
    return str(code).replace("_", "-")


def _detail(exc: exceptions.APIException) -> str:
    if isinstance(exc.detail, str):
        return str(exc.detail)
    return str(exc.default_detail)


def not_found_body(path: str) -> dict[str, Any]:
    """The 404 problem for an API path no URL pattern matches (portal.views.not_found)."""
    return {
        "type": TYPE_PREFIX + "not-found",
        "title": HTTPStatus.NOT_FOUND.phrase,
        "status": 404,
        "detail": "Nothing here, or nothing you may see.",
        "instance": path,
        "request_id": current_request_id(),
    }

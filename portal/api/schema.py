"""What drf-spectacular cannot see by itself: the Bearer scheme and the problem details every
operation may answer with (so a client, and schemathesis, know each error's shape)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension

from .problems import CONTENT_TYPE

PROBLEM = {
    "type": "object",
    "description": "RFC 9457 problem details.",
    "required": ["type", "title", "status", "detail", "request_id"],
    "properties": {
        "type": {"type": "string", "description": "urn:ecr-portal:problem:<code>"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "request_id": {"type": "string", "description": "Also in the X-Request-ID header."},
        "errors": {
            "type": "object",
            "description": "Messages per field, as the forms show them (`__all__`: the whole request).",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
        "plan": {"type": "object", "description": "409 stale-plan: the new plan, with its digest."},
        "run": {"type": "integer", "description": "409 run-in-progress: the run working on it."},
        "run_url": {"type": "string"},
    },
}
ERRORS = {
    "400": "Invalid input: nothing saved, no AWS call",
    "401": "No token, or an unknown, expired or revoked one",
    "403": "The role or the token's scope may not do this",
    "404": "Not found",
    "409": "Conflict: a stale plan, a run in progress, a file that cannot be made",
    "429": "Too many requests (Retry-After says when to try again)",
}
READ_ERRORS = ("400", "401", "403", "404", "429")


class BearerScheme(OpenApiAuthenticationExtension):
    target_class = "portal.api.authentication.BearerTokenAuthentication"
    name = "bearer"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": "An API token (the API tokens page)."}


ANYTHING_OR_NULL = [{}, {"type": "null"}]


def _any_json(node: Any) -> None:
    """A nullable JSONField comes out as oneOf [anything, null], which null matches twice (oneOf
    wants exactly one): it is just anything."""
    if isinstance(node, dict):
        if node.get("oneOf") == ANYTHING_OR_NULL:
            del node["oneOf"]
        for value in node.values():
            _any_json(value)
    elif isinstance(node, list):
        for value in node:
            _any_json(value)


def add_problems(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """POSTPROCESSING_HOOK: the Problem component and every error answer of every operation."""
    _any_json(result.get("components", {}))
    result.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM
    ref = {"$ref": "#/components/schemas/Problem"}
    for item in result.get("paths", {}).values():
        for method, operation in item.items():
            responses = operation["responses"]
            for code in READ_ERRORS if method == "get" else ERRORS:
                responses.setdefault(code, {"description": ERRORS[code]})
            for code, response in responses.items():
                if int(code) >= 400:  # declared by a view (a GET's 409) or above: a problem
                    response["content"] = {CONTENT_TYPE: {"schema": ref}}
    return result

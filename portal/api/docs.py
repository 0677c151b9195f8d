"""The API's docs page, rendered by the portal from the generated schema: no script from elsewhere
(the Content-Security-Policy allows none) and the same look as every other page."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from django.shortcuts import render
from drf_spectacular.generators import SchemaGenerator

from portal.middleware import PortalRequest

METHODS = ("get", "post", "put", "patch", "delete")


def api_docs(request: PortalRequest) -> HttpResponse:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    operations: list[dict[str, Any]] = []
    for path, item in schema["paths"].items():
        for method in METHODS:
            if method in item:
                op = item[method]
                operations.append(
                    {
                        "method": method.upper(),
                        "path": path,
                        "summary": op.get("summary") or op.get("description", "").split("\n")[0],
                        "parameters": [p["name"] for p in op.get("parameters", [])],
                        "request": _ref_name(op.get("requestBody", {})),
                        "responses": sorted(op.get("responses", {})),
                    }
                )
    return render(request, "portal/api_docs.html", {"operations": operations, "info": schema["info"]})


def _ref_name(body: dict[str, Any]) -> str:
    for media in body.get("content", {}).values():
        ref = media.get("schema", {}).get("$ref", "")
        return str(ref.rsplit("/", 1)[-1])
    return ""

"""Helpers for the API tests: tokens for the personas, and requests that send them."""

from __future__ import annotations

from typing import Any

from portal.api import tokens


def bearer(user: Any, scope: str = "write", name: str = "") -> dict[str, str]:
    _, secret = tokens.api_token_create(user=user, name=name or f"{user.username}-{scope}", scope=scope)
    return {"Authorization": f"Bearer {secret}"}


def problem(response: Any) -> dict[str, Any]:
    assert response["Content-Type"] == "application/problem+json", response.content[:300]
    body = response.json()
    assert body["status"] == response.status_code
    assert body["request_id"] == response["X-Request-ID"]
    return body

"""record(): the one way services write an AuditEntry (explicit calls, no signals)."""

from __future__ import annotations

import contextvars
from typing import Any

from django.contrib.auth.models import AnonymousUser, User

from .middleware import current_request_id
from .models import AuditEntry
from .redact import redact

# The name of the API token the current request came with ("" for pages, commands and workers).
_api_token: contextvars.ContextVar[str] = contextvars.ContextVar("api_token", default="")


def set_api_token(name: str) -> contextvars.Token[str]:
    return _api_token.set(name)


def reset_api_token(token: contextvars.Token[str]) -> None:
    _api_token.reset(token)


# Who did something: a signed-in user, an anonymous request, or the command line / a worker (None).
Actor = User | AnonymousUser | None


def entry(
    *,
    user: User | AnonymousUser | None,
    action: str,
    account_id: str = "",
    obj: Any = None,
    **details: Any,
) -> AuditEntry:
    """The entry `record` saves, unsaved: many are saved in one statement (record_many)."""
    details = redact(details)
    if _api_token.get():
        details["api_token"] = _api_token.get()  # the token's name (redact() hides "*token*" keys)
    signed_in = user if user is not None and user.is_authenticated else None
    return AuditEntry(
        user=signed_in,
        user_name=signed_in.get_username() if signed_in is not None else "system",
        request_id=current_request_id() if current_request_id() != "-" else "",
        action=action,
        account_id=account_id,
        object_repr=str(obj)[:255] if obj is not None else "",
        details=details,
    )


def record_many(entries: list[AuditEntry]) -> list[AuditEntry]:
    return AuditEntry.objects.bulk_create(entries)


def record(
    *,
    user: User | AnonymousUser | None,
    action: str,
    account_id: str = "",
    obj: Any = None,
    **details: Any,
) -> AuditEntry:
    saved = entry(user=user, action=action, account_id=account_id, obj=obj, **details)
    saved.save(force_insert=True)
    return saved

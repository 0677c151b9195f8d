"""record(): the one way services write an AuditEntry (explicit calls, no signals)."""

from typing import Any

from .middleware import current_request_id
from .models import AuditEntry
from .redact import redact


def record(*, user, action: str, account_id: str = "", obj: Any = None, **details: Any) -> AuditEntry:
    authenticated = user is not None and getattr(user, "is_authenticated", False)
    return AuditEntry.objects.create(
        user=user if authenticated else None,
        user_name=user.get_username() if authenticated else "system",
        request_id=current_request_id() if current_request_id() != "-" else "",
        action=action,
        account_id=account_id,
        object_repr=str(obj)[:255] if obj is not None else "",
        details=redact(details),
    )

"""One redact() for everything that reaches rows, logs or pages."""

import re
from typing import Any

CENSOR = "**redacted**"
_SECRET_KEYS = re.compile(
    r"(token|secret|password|credential|session|access_?key|private|externalid_mgmt)", re.I
)
# Access key ids, Fernet tokens and 40-char secret keys appearing inside free text.
_SECRET_TEXT = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")


def redact(value: Any, key: str = "") -> Any:
    if key and _SECRET_KEYS.search(key):
        return CENSOR if value not in (None, "") else value
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _SECRET_TEXT.sub(CENSOR, value)
    return value

"""One redact() for everything that reaches rows, logs or pages."""

import re
from typing import Any

CENSOR = "**redacted**"
_SECRET_KEYS = re.compile(
    r"(token|secret|password|passwd|credential|session|access_?key|private|authorization|api_?key"
    r"|cookie|externalid_mgmt)",
    re.I,
)
# Inside free text: access key ids, Fernet tokens, and NAME=value / "Name": "value" / name: value
# assignments whose name looks secret (a .env line, an error echoing AWS_SECRET_ACCESS_KEY=..., a
# JSON or YAML dump). "ExpiredToken: The security token..." is prose, not an assignment: after a
# bare colon only a word of 8+ characters counts as a value.
_SECRET_NAME = r"[\w-]*(?:token|secret|password|passwd|credential|access_?key|api_?key)[\w-]*"
_SECRET_TEXT = re.compile(
    r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"
    r"|\bgAAAAA[A-Za-z0-9_-]{40,}={0,2}"
    rf"|(?P<name>{_SECRET_NAME}(?:\s*=\s*|[\"']\s*:\s*)[\"']?)(?P<value>[^\s\"',;&}}]+)"
    rf"|(?P<yname>{_SECRET_NAME}:\s*[\"']?)(?P<yvalue>[^\s\"',;&}}]{{8,}})",
    re.I,
)


def _censor_text(match: re.Match) -> str:
    name = match.group("name") or match.group("yname")
    return name + CENSOR if name else CENSOR


def redact(value: Any, key: str = "") -> Any:
    if key and _SECRET_KEYS.search(key):
        return CENSOR if value not in (None, "") else value
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _SECRET_TEXT.sub(_censor_text, value)
    return value

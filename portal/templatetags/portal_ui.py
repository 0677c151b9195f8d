"""Template helpers for documents: readable JSON, a line diff of before/after, ARNs that wrap."""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

from django import template
from django.utils.html import conditional_escape
from django.utils.safestring import SafeString, mark_safe

register = template.Library()


def pretty(document: Any) -> str:
    if document is None:
        return ""
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except ValueError:
            return document
    return json.dumps(document, indent=2, sort_keys=True)


# After these, an ARN (or a URL) may wrap: between its parts, never inside a name.
_WRAP_AFTER = re.compile(r"([:/])")


@register.filter
def breakable(value: Any) -> SafeString:
    """`{{ arn|breakable }}`: escaped, with a <wbr> after each : and / (copying the text copies no
    extra character). The CSS breaks a part only when it alone is wider than its column."""
    return mark_safe(_WRAP_AFTER.sub(r"\1<wbr>", str(conditional_escape(value))))  # noqa: S308  escaped first


@register.filter
def plain(value: Any) -> str:
    """A value of an audit entry's details as a person writes it: a list as "a, b", not "['a', 'b']"."""
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    return str(value)


@register.filter
def pretty_json(document: Any) -> str:
    return pretty(document)


def diff_lines(before: Any, after: Any) -> list[tuple[str, str]]:
    """(kind, text) per line: kind is "add", "del" or "same". Whole documents, no context cut."""
    old = pretty(before).splitlines() if before is not None else []
    new = pretty(after).splitlines() if after is not None else []
    lines: list[tuple[str, str]] = []
    for line in difflib.ndiff(old, new):
        tag, text = line[:2], line[2:]
        if tag == "- ":
            lines.append(("del", text))
        elif tag == "+ ":
            lines.append(("add", text))
        elif tag == "  ":
            lines.append(("same", text))
    return lines


@register.inclusion_tag("portal/_diff.html")
def document_diff(
    before: Any, after: Any, before_label: str = "live", after_label: str = "desired"
) -> dict[str, Any]:
    return {
        "lines": diff_lines(before, after),
        "before_label": before_label,
        "after_label": after_label,
        "before_missing": before is None,
        "after_missing": after is None,
    }

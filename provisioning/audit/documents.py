"""Reading IAM documents (pure): statements, actions, principals, ExternalId conditions, grants."""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass
from typing import Any

from .. import policies

ASSUME_ACTION = "sts:AssumeRole"
EXTERNAL_ID_KEY = "sts:externalid"
# Unique ids IAM shows in place of a principal that was deleted (roles, users, groups, ...).
UNIQUE_ID = re.compile(r"^(AROA|AIDA|AGPA|ANPA|ANVA|AIPA|ASIA|AKIA)[A-Z0-9]{12,}$")
ACCOUNT_ROOT = re.compile(r"^(?:arn:aws[\w-]*:iam::(\d{12}):root|(\d{12}))$")
ROLE_ARN = re.compile(r"^arn:aws[\w-]*:iam::(\d{12}):role/(.+)$")


def _document(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def statements(document: Any) -> list[dict[str, Any]]:
    document = _document(document)
    if not isinstance(document, dict):
        return []
    return [s for s in _as_list(document.get("Statement")) if isinstance(s, dict)]


def _pattern_matches(pattern: str, value: str) -> bool:
    """IAM wildcards (* and ?), case-insensitive as action names are."""
    return fnmatch.fnmatchcase(value.lower(), pattern.lower())


def allows_action(statement: dict[str, Any], action: str) -> bool:
    if statement.get("Effect") != "Allow":
        return False
    if "NotAction" in statement:
        return not any(_pattern_matches(p, action) for p in _as_list(statement["NotAction"]))
    return any(_pattern_matches(p, action) for p in _as_list(statement.get("Action")))


def principals_of(statement: dict[str, Any]) -> list[str]:
    """Trusted principals as strings: "*", an AWS ARN / account id / unique id, or "Service:<name>"."""
    if "NotPrincipal" in statement:
        return ["*"]  # Allow + NotPrincipal: everyone but the named ones
    principal = statement.get("Principal")
    if principal == "*":
        return ["*"]
    if not isinstance(principal, dict):
        return []
    found = []
    for kind, values in principal.items():
        for value in _as_list(values):
            found.append(str(value) if kind == "AWS" else f"{kind}:{value}")
    return found


def _is_aws_principal(principal: str) -> bool:
    return not principal.startswith(("Service:", "Federated:", "CanonicalUser:"))


@dataclass
class ExternalIdCondition:
    operator: str
    values: list[str]

    @property
    def negated(self) -> bool:
        return "Not" in self.operator.split(":")[-1]

    @property
    def optional(self) -> bool:
        return self.operator.endswith("IfExists")

    @property
    def pattern(self) -> bool:
        return "Like" in self.operator

    @property
    def null_check(self) -> bool:
        return self.operator.split(":")[-1].startswith("Null")

    @property
    def wild_values(self) -> list[str]:
        return [v for v in self.values if v == "" or (self.pattern and ("*" in v or "?" in v))]

    @property
    def strict(self) -> bool:
        """Only the ids it names pass, and an id must be sent (operators are ANDed: one is enough)."""
        return not (self.null_check or self.negated or self.optional or self.wild_values) and bool(
            self.values
        )

    def accepts_any(self) -> str:
        """Why this condition lets any id through ("" when it does not)."""
        if self.strict:
            return ""
        if self.negated:
            return f"{self.operator} accepts every id but the ones it names"
        if self.wild_values:
            return f"{self.operator} with {self.wild_values!r} accepts any id"
        if self.null_check and "false" in [v.lower() for v in self.values]:
            return f"{self.operator} false only requires that some id is sent"
        return ""


def external_id_conditions(statement: dict[str, Any]) -> list[ExternalIdCondition]:
    """Every condition on sts:ExternalId (condition keys are case-insensitive)."""
    found = []
    for operator, keys in (statement.get("Condition") or {}).items():
        if not isinstance(keys, dict):
            continue
        for key, values in keys.items():
            if key.lower() == EXTERNAL_ID_KEY:
                found.append(ExternalIdCondition(operator, [str(v) for v in _as_list(values)]))
    return found


@dataclass
class Grant:
    """One resource an agent's policy allows sts:AssumeRole on."""

    policy: str  # "inline SnykCraAssumeRolePolicy" / "managed SnykCraAssumeRolePolicy-2"
    sid: str
    resource: str

    def covers(self, arn: str) -> bool:
        return fnmatch.fnmatchcase(arn, self.resource)

    def to_dict(self) -> dict[str, str]:
        return {"policy": self.policy, "sid": self.sid, "resource": self.resource}


def grants_in(documents: dict[str, Any]) -> list[Grant]:
    """Every sts:AssumeRole resource granted by these documents (label -> document)."""
    grants = []
    for label, document in documents.items():
        for st in statements(document):
            if not allows_action(st, ASSUME_ACTION):
                continue
            resources = ["*"] if "NotResource" in st else _as_list(st.get("Resource"))
            grants += [Grant(label, str(st.get("Sid", "")), str(r)) for r in resources]
    return grants


def _size(document: Any) -> int:
    return policies.policy_size(document) if isinstance(document, (dict, list)) else 0

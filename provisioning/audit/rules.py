"""Findings (pure): an account's role and policies, and the account's status and documents."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .. import policies
from ..choices import AuditStatus
from .catalogue import SNYK_DRIFT_CODES, Finding
from .documents import (
    ASSUME_ACTION,
    Grant,
    _as_list,
    _pattern_matches,
    _size,
    allows_action,
    external_id_conditions,
    principals_of,
    statements,
)
from .reads import AccountFacts, AccountRead
from .trust_rules import trust_findings

NEAR_QUOTA = 0.9  # a document within 10 % of its IAM quota is a finding


def read_policy_findings(read: AccountRead) -> list[Finding]:
    acct = read.facts.account.account_id
    name = read.facts.account.read_policy_name
    findings = []
    allowed = [st for st in statements(read.read_document) if st.get("Effect") == "Allow"]
    wanted = {a.lower() for a in policies.READ_POLICY_ACTIONS}
    extra: list[str] = []
    patterns: list[str] = []
    for st in allowed:
        if "NotAction" in st:
            extra.append(f"every action but {', '.join(map(str, _as_list(st['NotAction'])))}")
            patterns.append("*")
            continue
        for action in map(str, _as_list(st.get("Action"))):
            patterns.append(action)
            if action.lower() not in wanted:
                extra.append(action)
    if extra:
        findings.append(
            Finding(
                "read-policy-extra-actions",
                f"{name} allows more than the 11 ECR read actions: {', '.join(sorted(set(extra)))}.",
                acct,
                ",".join(sorted(set(extra))),
            )
        )
    missing = [a for a in policies.READ_POLICY_ACTIONS if not any(_pattern_matches(p, a) for p in patterns)]
    if missing:
        findings.append(
            Finding(
                "read-policy-missing-actions",
                f"{name} lacks {', '.join(missing)}: scans of this account fail or are incomplete.",
                acct,
                ",".join(missing),
            )
        )
    return findings


def size_finding(subject: str, what: str, size: int, quota: int) -> Finding | None:
    if size < NEAR_QUOTA * quota:
        return None
    return Finding(
        "size-near-quota",
        f"{what} is {size} characters, {round(100 * size / quota)} % of IAM's quota of {quota}: "
        "the next change may not fit.",
        subject,
        what,
    )


def account_findings(read: AccountRead, now: datetime) -> list[Finding]:
    """Everything about one account that does not need the agent's permissions."""
    account = read.facts.account
    acct = account.account_id
    if read.error:
        reach = account.management_role_arn or "the portal's own credentials"
        return [
            Finding(
                "account-unreachable",
                f"The account could not be read through {reach}: {read.error}",
                acct,
            )
        ]
    findings = [Finding("inventory-invalid", read.plan_error, acct)] if read.plan_error else []
    if read.facts.removed:
        return findings + _removed_findings(read)
    if read.role is None:
        findings.append(
            Finding("role-missing", f"The service role {account.service_role_arn} does not exist.", acct)
        )
    if read.policy is None:
        findings.append(
            Finding("policy-missing", f"The read-only policy {account.read_policy_arn} does not exist.", acct)
        )
    if read.role is not None:
        findings += _role_findings(read, now)
    if read.policy is not None:
        findings += read_policy_findings(read)
        size = size_finding(
            acct, account.read_policy_name, _size(read.read_document), policies.MANAGED_POLICY_QUOTA
        )
        findings += [size] if size else []
    return findings


def _removed_findings(read: AccountRead) -> list[Finding]:
    """A removed account: only whether its role or policy is still there."""
    if not read.plan or read.plan.is_empty:
        return []
    left = " and ".join(
        what for what, live in (("role", read.role), ("read-only policy", read.policy)) if live
    )
    return [
        Finding(
            "removed-resources-remain",
            f"The account was removed from the portal but its {left or 'resources'} still exist "
            "in AWS. Offboard it again to delete them.",
            read.facts.account.account_id,
        )
    ]


def _role_findings(read: AccountRead, now: datetime) -> list[Finding]:
    """The service role exists: the policy attached to it, its trust, what else is on it, its sizes."""
    account = read.facts.account
    acct = account.account_id
    findings = []
    if account.read_policy_arn not in read.attached:
        findings.append(
            Finding(
                "attachment-missing",
                f"{account.read_policy_name} is not attached to {account.service_role_name}: the "
                "broker can assume the role but cannot read ECR.",
                acct,
            )
        )
    desired_trust = _desired_trust(read.facts)
    if desired_trust is not None and not policies.same_document(read.trust, desired_trust):
        findings.append(
            Finding(
                "trust-differs",
                f"The trust of {account.service_role_name} differs from the desired one (see the diff).",
                acct,
            )
        )
    return findings + trust_findings(read, now) + _extra_policy_findings(read) + _role_size_findings(read)


def _extra_policy_findings(read: AccountRead) -> list[Finding]:
    """Every policy on the service role but the read-only one, attached or inline."""
    account = read.facts.account
    role, acct = account.service_role_name, account.account_id
    attached = [
        Finding(
            "extra-policy-attached",
            f"{arn} is attached to {role}: whoever assumes the role gets its permissions too.",
            acct,
            arn,
        )
        for arn in read.attached
        if arn != account.read_policy_arn
    ]
    inline = [
        Finding(
            "extra-policy-attached",
            f"{role} has an inline policy {name}: whoever assumes the role gets its permissions too.",
            acct,
            f"inline:{name}",
        )
        for name in read.inline
    ]
    return attached + inline


def _role_size_findings(read: AccountRead) -> list[Finding]:
    account = read.facts.account
    acct, role = account.account_id, account.service_role_name
    sizes = [
        size_finding(acct, f"The trust of {role}", _size(read.trust), 2048),
        size_finding(
            acct,
            f"The inline policies of {role}",
            sum(_size(d) for d in read.inline.values()),
            policies.INLINE_QUOTA["role"],
        ),
    ]
    return [f for f in sizes if f]


def _desired_trust(facts: AccountFacts) -> dict[str, Any] | None:
    if facts.removed:
        return None
    try:
        return policies.service_role_trust_policy(
            facts.account.agent.arn, [e.value for e in facts.external_ids]
        )
    except policies.LayoutError:
        return None


def account_status(read: AccountRead, findings: list[Finding]) -> str:
    if read.error:
        return AuditStatus.UNREACHABLE
    if read.facts.removed:
        return AuditStatus.DRIFTED if read.plan and not read.plan.is_empty else AuditStatus.IN_SYNC
    if read.role is None or read.policy is None:
        return AuditStatus.MISSING
    drift_codes = {"agent-permission-missing", "inventory-invalid", *SNYK_DRIFT_CODES}
    if (read.plan and not read.plan.is_empty) or any(f.code in drift_codes for f in findings):
        return AuditStatus.DRIFTED
    return AuditStatus.IN_SYNC


def _live_ids(trust: Any) -> list[str]:
    ids = {
        v
        for st in statements(trust)
        if allows_action(st, ASSUME_ACTION)
        for c in external_id_conditions(st)
        if not c.negated
        for v in c.values
    }
    return sorted(ids)


def account_documents(
    read: AccountRead, live_grants: list[Grant], desired_grants: list[Grant]
) -> tuple[dict, dict]:
    account = read.facts.account
    trust = read.trust
    live = {
        "role_arn": account.service_role_arn,
        "role_exists": read.role is not None,
        "trust": trust,
        "trusted_principals": sorted({p for st in statements(trust) for p in principals_of(st)}),
        "external_ids": _live_ids(trust),
        "read_policy": read.read_document,
        "read_policy_version": (read.policy or {}).get("DefaultVersionId", ""),
        "attached_policies": sorted(read.attached),
        "inline_policies": read.inline,
        "agent_grants": [g.to_dict() for g in live_grants],
        "error": read.error,
    }
    if read.facts.removed:
        desired: dict[str, Any] = {
            "trust": None,
            "read_policy": None,
            "attached_policies": [],
            "inline_policies": {},
            "agent_grants": [],
        }
    else:
        desired = {
            "trust": _desired_trust(read.facts),
            "read_policy": policies.read_only_policy(),
            "attached_policies": [account.read_policy_arn],
            "inline_policies": {},
            "agent_grants": [g.to_dict() for g in desired_grants],
        }
    return live, desired

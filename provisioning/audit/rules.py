"""Findings (pure): an account's role and policies, an agent's permissions, and the account's status."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from accounts.choices import Lifecycle

from .. import policies
from ..choices import AuditStatus
from .catalogue import Finding
from .documents import (
    ASSUME_ACTION,
    ROLE_ARN,
    Grant,
    _as_list,
    _pattern_matches,
    _size,
    allows_action,
    external_id_conditions,
    grants_in,
    principals_of,
    statements,
)
from .reads import AccountFacts, AccountRead, AgentRead
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


def _size_finding(subject: str, what: str, size: int, quota: int) -> Finding | None:
    if size < NEAR_QUOTA * quota:
        return None
    return Finding(
        "size-near-quota",
        f"{what} is {size} characters, {round(100 * size / quota)} % of IAM's quota of {quota}: "
        "the next change may not fit.",
        subject,
        what,
    )


def account_findings(read: AccountRead, now: datetime) -> list[Finding]:  # noqa: C901  split next (issue 10)
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
    findings: list[Finding] = []
    if read.plan_error:
        findings.append(Finding("inventory-invalid", read.plan_error, acct))
    if read.facts.removed:
        if read.plan and not read.plan.is_empty:
            left = ", ".join(
                what for what, live in (("role", read.role), ("read-only policy", read.policy)) if live
            )
            findings.append(
                Finding(
                    "removed-resources-remain",
                    f"The account was removed from the portal but its {left or 'resources'} still exist "
                    "in AWS. Offboard it again to delete them.",
                    acct,
                )
            )
        return findings
    if read.role is None:
        findings.append(
            Finding("role-missing", f"The service role {account.service_role_arn} does not exist.", acct)
        )
    if read.policy is None:
        findings.append(
            Finding("policy-missing", f"The read-only policy {account.read_policy_arn} does not exist.", acct)
        )
    if read.role is not None:
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
        findings += trust_findings(read, now)
        for arn in read.attached:
            if arn != account.read_policy_arn:
                findings.append(
                    Finding(
                        "extra-policy-attached",
                        f"{arn} is attached to {account.service_role_name}: whoever assumes the role gets "
                        "its permissions too.",
                        acct,
                        arn,
                    )
                )
        for name in read.inline:
            findings.append(
                Finding(
                    "extra-policy-attached",
                    f"{account.service_role_name} has an inline policy {name}: whoever assumes the role "
                    "gets its permissions too.",
                    acct,
                    f"inline:{name}",
                )
            )
        sizes = [
            _size_finding(acct, f"The trust of {account.service_role_name}", _size(read.trust), 2048),
            _size_finding(
                acct,
                f"The inline policies of {account.service_role_name}",
                sum(_size(d) for d in read.inline.values()),
                policies.INLINE_QUOTA["role"],
            ),
        ]
        findings += [f for f in sizes if f]
    if read.policy is not None:
        findings += read_policy_findings(read)
        size = _size_finding(
            acct, account.read_policy_name, _size(read.read_document), policies.MANAGED_POLICY_QUOTA
        )
        findings += [size] if size else []
    return findings


def _desired_trust(facts: AccountFacts) -> dict[str, Any] | None:
    if facts.removed:
        return None
    try:
        return policies.service_role_trust_policy(
            facts.account.agent.arn, [e.value for e in facts.external_ids]
        )
    except policies.LayoutError:
        return None


def agent_findings(read: AgentRead, account_statuses: dict[str, str]) -> list[Finding]:
    """The agent's permissions: wildcards, roles it should not reach, sizes, drift."""
    agent = read.agent
    name = agent.name
    if read.error:
        reach = agent.management_role_arn or "the portal's own credentials"
        return [
            Finding(
                "agent-unreachable",
                f"The agent's account could not be read through {reach}: {read.error}",
                name,
            )
        ]
    findings: list[Finding] = []
    if read.plan_error:
        findings.append(Finding("inventory-invalid", read.plan_error, name))
    if read.identity is None:
        return [*findings, Finding("agent-missing", f"The agent {agent.arn} does not exist.", name)]
    members = set(read.members.values())
    for grant in grants_in(read.live_documents()):
        where = f"{grant.policy}" + (f" (statement {grant.sid})" if grant.sid else "")
        if "*" in grant.resource or "?" in grant.resource:
            findings.append(
                Finding(
                    "agent-resource-wildcard",
                    f'{where} allows sts:AssumeRole on "{grant.resource}": the agent may assume any role '
                    "that trusts it, not only the service roles the portal manages.",
                    name,
                    f"{grant.policy}:{grant.resource}",
                )
            )
            continue
        if grant.resource in members:
            continue
        match = ROLE_ARN.match(grant.resource)
        account_id = match[1] if match else ""
        status = account_statuses.get(account_id) if match else None
        if status == Lifecycle.REMOVED:
            findings.append(
                Finding(
                    "agent-removed-account",
                    f"{where} still allows sts:AssumeRole on {grant.resource}, but account {account_id} was "
                    "removed from the portal.",
                    name,
                    grant.resource,
                )
            )
        else:
            why = (
                f"account {account_id} is only a draft in the portal"
                if status == Lifecycle.DRAFT
                else "it is not the service role of an account the portal manages"
            )
            findings.append(
                Finding(
                    "agent-unmanaged-account",
                    f"{where} allows sts:AssumeRole on {grant.resource}, but {why}.",
                    name,
                    grant.resource,
                )
            )
    inline_size = sum(_size(d) for d in read.inline.values())
    sizes = [
        _size_finding(
            name, f"The inline policies of {agent.iam_name}", inline_size, policies.INLINE_QUOTA[agent.kind]
        )
    ]
    if read.managed:
        # The engine fills each <policy>-N to the brim and then starts another: what can run out is
        # the room of all the managed policies an identity may have attached.
        sizes.append(
            _size_finding(
                name,
                f"The {len(read.managed)} managed {agent.policy_name}-N policies together",
                sum(_size(doc) for doc in read.managed.values()),
                policies.MANAGED_POLICIES_PER_IDENTITY * policies.MANAGED_POLICY_QUOTA,
            )
        )
    findings += [f for f in sizes if f]
    if read.plan is not None and not read.plan.is_empty:
        summaries = [c.summary for c in read.plan.changes]
        more = f" and {len(summaries) - 3} more" if len(summaries) > 3 else ""
        findings.append(
            Finding(
                "agent-permissions-differ",
                f"Reconciling the agent would make {len(summaries)} change(s): "
                f"{'; '.join(summaries[:3])}{more}.",
                name,
            )
        )
    return findings


def agent_grant_findings(read: AccountRead, agent: AgentRead | None) -> tuple[list[Finding], list[Grant]]:
    """Whether the agent's live permissions let it assume this account's role."""
    account = read.facts.account
    if agent is None or agent.error or agent.identity is None:
        return [], []
    arn = account.service_role_arn
    grants = agent.grants("live").covering(arn)
    if grants or read.facts.removed or account.account_id not in agent.members:
        return [], grants
    finding = Finding(
        "agent-permission-missing",
        f"The agent {agent.agent.name}'s permissions do not allow sts:AssumeRole on {arn}: the broker "
        "cannot scan this account.",
        account.account_id,
    )
    return [finding], grants


def account_status(read: AccountRead, findings: list[Finding]) -> str:
    if read.error:
        return AuditStatus.UNREACHABLE
    if read.facts.removed:
        return AuditStatus.DRIFTED if read.plan and not read.plan.is_empty else AuditStatus.IN_SYNC
    if read.role is None or read.policy is None:
        return AuditStatus.MISSING
    drift_codes = {"agent-permission-missing", "inventory-invalid"}
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

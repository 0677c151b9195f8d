"""Findings on a service role's trust (pure): who may assume it, and with which ExternalIds."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings

from accounts.choices import ExternalIdState

from .catalogue import Finding
from .documents import (
    ACCOUNT_ROOT,
    ASSUME_ACTION,
    UNIQUE_ID,
    ExternalIdCondition,
    _is_aws_principal,
    allows_action,
    external_id_conditions,
    principals_of,
    statements,
)
from .reads import AccountRead


def _short(value: str, keep: int = 8) -> str:
    return value if len(value) <= keep + 2 else value[:keep] + "…"


def trust_findings(read: AccountRead, now: datetime) -> list[Finding]:
    """Who the live trust lets assume the role, and with which ExternalIds."""
    findings: list[Finding] = []
    for index, st in enumerate(statements(read.trust)):
        if allows_action(st, ASSUME_ACTION):
            findings += _statement_findings(read, index, st)
    return findings + _retiring_findings(read, now)


def _statement_findings(read: AccountRead, index: int, st: dict[str, Any]) -> list[Finding]:
    acct = read.facts.account.account_id
    agent_arn = read.facts.account.agent.arn
    principals = principals_of(st)
    found = [f for p in principals if (f := _principal_finding(p, agent_arn, acct, index))]
    if not any(_is_aws_principal(p) for p in principals):
        return found  # service / federated principals cannot pass an ExternalId
    conditions = external_id_conditions(st)
    return found + _condition_findings(conditions, acct, index) + _exact_id_findings(read, conditions)


def _principal_finding(principal: str, agent_arn: str, acct: str, index: int) -> Finding | None:
    """What is wrong with trusting this principal (None for the agent, or a service)."""
    root = ACCOUNT_ROOT.match(principal)
    if principal == "*":
        return Finding(
            "principal-wildcard",
            'The trust allows any AWS principal ("*") to assume this role: anyone who knows '
            "(or guesses) the ExternalId can read every ECR repository in the account.",
            acct,
            str(index),
        )
    if root:
        return Finding(
            "principal-account-root",
            f"The trust names the whole account {root[1] or root[2]} ({principal}): every "
            "role and user there with sts:AssumeRole may assume this role, not only the agent.",
            acct,
            principal,
        )
    if UNIQUE_ID.match(principal):
        return Finding(
            "principal-unique-id",
            f"The trust shows the unique id {principal} instead of an ARN: the principal it "
            "trusted was deleted, so trust is broken even if a principal of the same name "
            "exists again. Reconcile to trust the agent by ARN.",
            acct,
            principal,
        )
    if principal != agent_arn:
        return Finding(
            "principal-not-agent",
            f"The trust allows {principal} to assume this role; only the agent {agent_arn} should.",
            acct,
            principal,
        )
    return None


def _condition_findings(conditions: list[ExternalIdCondition], acct: str, index: int) -> list[Finding]:
    """A statement whose ExternalId conditions let any id through, or let none be sent."""
    strict = [c for c in conditions if c.strict]
    if strict:
        return []
    loose = [(c, why) for c in conditions if (why := c.accepts_any())]
    if loose:
        return [
            Finding(
                "external-id-wildcard",
                f"The trust's ExternalId condition is ineffective: {why}.",
                acct,
                f"{index}:{condition.operator}",
            )
            for condition, why in loose
        ]
    how = (
        "only " + ", ".join(c.operator for c in conditions) + ", which pass when no id is sent"
        if conditions
        else "none"
    )
    return [
        Finding(
            "external-id-missing",
            f"Statement {index + 1} of the trust has no required sts:ExternalId condition ({how}): "
            "the agent can be made to assume this role for someone else (confused deputy).",
            acct,
            str(index),
        )
    ]


def _exact_id_findings(read: AccountRead, conditions: list[ExternalIdCondition]) -> list[Finding]:
    """The ExternalIds a statement requires that no broker of the account uses."""
    facts, acct = read.facts, read.facts.account.account_id
    known = {e.value: e for e in facts.external_ids}
    findings = []
    for value in sorted({v for c in conditions if c.strict for v in c.values}):
        fact = known.get(value)
        if fact is None:
            findings.append(
                Finding(
                    "external-id-unused",
                    f"The trust accepts ExternalId {_short(value)}, which the portal does not know "
                    "and no broker uses: whoever holds it can have the agent assume this role.",
                    acct,
                    value,
                )
            )
        elif fact.state == ExternalIdState.ACTIVE and value != facts.broker_external_id:
            findings.append(
                Finding(
                    "external-id-unused",
                    f"The trust accepts ExternalId {_short(value)}, which no active broker of this "
                    "account uses.",
                    acct,
                    value,
                )
            )
    return findings


def _retiring_findings(read: AccountRead, now: datetime) -> list[Finding]:
    """Retiring ExternalIds past their grace period."""
    grace = timedelta(days=settings.EXTERNAL_ID_GRACE_DAYS)
    return [
        Finding(
            "external-id-retiring-expired",
            f"ExternalId {_short(fact.value)} has been retiring for {(now - fact.retiring_since).days} days "
            f"(grace period {settings.EXTERNAL_ID_GRACE_DAYS} days) and the trust still accepts it: finish "
            "the rotation so it is removed.",
            read.facts.account.account_id,
            fact.value,
        )
        for fact in read.facts.external_ids
        if fact.state == ExternalIdState.RETIRING
        and fact.retiring_since
        and now - fact.retiring_since > grace
    ]

"""Findings on a service role's trust (pure): who may assume it, and with which ExternalIds."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings

from accounts.choices import ExternalIdState

from .catalogue import Finding
from .documents import (
    ACCOUNT_ROOT,
    ASSUME_ACTION,
    UNIQUE_ID,
    _is_aws_principal,
    allows_action,
    external_id_conditions,
    principals_of,
    statements,
)
from .reads import AccountRead


def _short(value: str, keep: int = 8) -> str:
    return value if len(value) <= keep + 2 else value[:keep] + "…"


def trust_findings(read: AccountRead, now: datetime) -> list[Finding]:  # noqa: C901  split next (issue 10)
    """Who the live trust lets assume the role, and with which ExternalIds."""
    facts, acct = read.facts, read.facts.account.account_id
    agent_arn = facts.account.agent.arn
    findings: list[Finding] = []
    known = {e.value: e for e in facts.external_ids}
    grace = timedelta(days=settings.EXTERNAL_ID_GRACE_DAYS)
    for index, st in enumerate(statements(read.trust)):
        if not allows_action(st, ASSUME_ACTION):
            continue
        principals = principals_of(st)
        for principal in principals:
            root = ACCOUNT_ROOT.match(principal)
            if principal == "*":
                findings.append(
                    Finding(
                        "principal-wildcard",
                        'The trust allows any AWS principal ("*") to assume this role: anyone who knows '
                        "(or guesses) the ExternalId can read every ECR repository in the account.",
                        acct,
                        str(index),
                    )
                )
            elif root:
                findings.append(
                    Finding(
                        "principal-account-root",
                        f"The trust names the whole account {root[1] or root[2]} ({principal}): every "
                        "role and user there with sts:AssumeRole may assume this role, not only the agent.",
                        acct,
                        principal,
                    )
                )
            elif UNIQUE_ID.match(principal):
                findings.append(
                    Finding(
                        "principal-unique-id",
                        f"The trust shows the unique id {principal} instead of an ARN: the principal it "
                        "trusted was deleted, so trust is broken even if a principal of the same name "
                        "exists again. Reconcile to trust the agent by ARN.",
                        acct,
                        principal,
                    )
                )
            elif principal != agent_arn:
                findings.append(
                    Finding(
                        "principal-not-agent",
                        f"The trust allows {principal} to assume this role; only the agent {agent_arn} "
                        "should.",
                        acct,
                        principal,
                    )
                )
        if not any(_is_aws_principal(p) for p in principals):
            continue  # service / federated principals cannot pass an ExternalId
        conditions = external_id_conditions(st)
        strict = [c for c in conditions if c.strict]
        loose = [(c, why) for c in conditions if (why := c.accepts_any())]
        if not strict and loose:
            for condition, why in loose:
                findings.append(
                    Finding(
                        "external-id-wildcard",
                        f"The trust's ExternalId condition is ineffective: {why}.",
                        acct,
                        f"{index}:{condition.operator}",
                    )
                )
        elif not strict:
            how = (
                "only " + ", ".join(c.operator for c in conditions) + ", which pass when no id is sent"
                if conditions
                else "none"
            )
            findings.append(
                Finding(
                    "external-id-missing",
                    f"Statement {index + 1} of the trust has no required sts:ExternalId condition ({how}): "
                    "the agent can be made to assume this role for someone else (confused deputy).",
                    acct,
                    str(index),
                )
            )
        exact = {v for c in strict for v in c.values}
        for value in sorted(exact):
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
    for fact in facts.external_ids:
        if (
            fact.state == ExternalIdState.RETIRING
            and fact.retiring_since
            and now - fact.retiring_since > grace
        ):
            days = (now - fact.retiring_since).days
            findings.append(
                Finding(
                    "external-id-retiring-expired",
                    f"ExternalId {_short(fact.value)} has been retiring for {days} days (grace period "
                    f"{settings.EXTERNAL_ID_GRACE_DAYS} days) and the trust still accepts it: finish "
                    "the rotation so it is removed.",
                    acct,
                    fact.value,
                )
            )
    return findings

"""Findings on a service role's trust (pure): who may assume it, and with which ExternalIds.

Each message is rendered from the statement it is about: where it is, whom it trusts, and what it
asks of the ExternalId (one of the ids, an ineffective condition, or none at all).
"""

from __future__ import annotations

from dataclasses import dataclass, field
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


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


@dataclass
class TrustStatement:
    """One statement of the trust that allows sts:AssumeRole, as its findings describe it."""

    index: int
    body: dict[str, Any]
    role_name: str
    agent_arn: str
    principals: list[str] = field(init=False)
    conditions: list[ExternalIdCondition] = field(init=False)

    def __post_init__(self) -> None:
        self.principals = principals_of(self.body)
        self.conditions = external_id_conditions(self.body)

    @property
    def where(self) -> str:
        sid = self.body.get("Sid")
        return (
            f"Statement {self.index + 1}"
            + (f' ("{sid}")' if sid else "")
            + f" of the trust of {self.role_name}"
        )

    @property
    def excluded(self) -> list[str]:
        """The principals an Allow + NotPrincipal statement leaves out (it trusts everyone else)."""
        if "NotPrincipal" not in self.body:
            return []
        return principals_of({"Principal": self.body["NotPrincipal"]})

    @property
    def anyone(self) -> bool:
        return "*" in self.principals

    @property
    def everyone_it_trusts(self) -> str:
        return f"anyone but {_and(self.excluded)}" if self.excluded else "anyone"

    @property
    def trusts_agent(self) -> bool:
        agent_account = self.agent_arn.split(":")[4]
        return any(
            p == self.agent_arn or ((root := ACCOUNT_ROOT.match(p)) and agent_account in (root[1], root[2]))
            for p in self.principals
        )

    @property
    def who(self) -> str:
        """Whom it trusts, as AWS principals (the only ones that can send an ExternalId)."""
        if self.excluded:
            return f"every principal but {_and(self.excluded)} (NotPrincipal)"
        if self.anyone:
            return 'any AWS principal ("*")'
        names = [
            f"the agent {p}" if p == self.agent_arn else p for p in self.principals if _is_aws_principal(p)
        ]
        return _and(names)

    @property
    def exact_ids(self) -> list[str]:
        """The ids it requires one of (its strict conditions: operators are ANDed, one is enough)."""
        return sorted({v for c in self.conditions if c.strict for v in c.values})

    @property
    def loose(self) -> list[tuple[ExternalIdCondition, str]]:
        """Its conditions that let any id through, each with why."""
        return [(c, why) for c in self.conditions if (why := c.accepts_any())]

    @property
    def id_requirement(self) -> str:
        """What it asks of the ExternalId, to follow "assume the role"."""
        if self.exact_ids:
            return "only with ExternalId " + " or ".join(_short(v) for v in self.exact_ids)
        if self.loose:
            whys = "; ".join(why for _, why in self.loose)
            return f"with an sts:ExternalId condition that accepts any id ({whys})"
        if not self.conditions:
            return "with no sts:ExternalId condition"
        operators = [c.operator for c in self.conditions]
        passes = "passes" if len(operators) == 1 else "pass"
        return f"with only {_and(operators)} on sts:ExternalId, which {passes} when no id is sent"


def trust_findings(read: AccountRead, now: datetime) -> list[Finding]:
    """Who the live trust lets assume the role, and with which ExternalIds."""
    account = read.facts.account
    trusted = [
        TrustStatement(index, st, account.service_role_name, account.agent.arn)
        for index, st in enumerate(statements(read.trust))
        if allows_action(st, ASSUME_ACTION)
    ]
    findings = [f for st in trusted for f in _statement_findings(read, st)]
    accepted = {v for st in trusted for v in st.exact_ids}
    return findings + _retiring_findings(read, accepted, now)


def ids_accepted_from(trust: Any, role_name: str, agent_arn: str) -> set[str]:
    """The ExternalIds with which the live trust lets the agent assume the role (its Allow statements
    that trust the agent and require one of the ids they name)."""
    trusted = [
        TrustStatement(index, st, role_name, agent_arn)
        for index, st in enumerate(statements(trust))
        if allows_action(st, ASSUME_ACTION)
    ]
    return {v for st in trusted if st.trusts_agent for v in st.exact_ids}


def _statement_findings(read: AccountRead, st: TrustStatement) -> list[Finding]:
    acct = read.facts.account.account_id
    found = [f for p in st.principals if (f := _principal_finding(p, st, acct))]
    if not any(_is_aws_principal(p) for p in st.principals):
        return found  # service / federated principals cannot pass an ExternalId
    return found + _condition_findings(st, acct) + _exact_id_findings(read, st)


def _principal_finding(principal: str, st: TrustStatement, acct: str) -> Finding | None:
    """What is wrong with trusting this principal (None for the agent)."""
    root = ACCOUNT_ROOT.match(principal)
    if principal == "*":
        return _wildcard_finding(st, acct)
    if root:
        account_id = root[1] or root[2]
        named = account_id if principal == account_id else f"{account_id} ({principal})"
        not_only = ", not only the agent" if account_id == st.agent_arn.split(":")[4] else ""
        return Finding(
            "principal-account-root",
            f"{st.where} trusts the whole account {named} {st.id_requirement}: every role and user there "
            f"with sts:AssumeRole may assume this role{not_only}.",
            acct,
            principal,
        )
    if UNIQUE_ID.match(principal):
        return Finding(
            "principal-unique-id",
            f"{st.where} shows the unique id {principal} instead of an ARN: the principal it trusted was "
            "deleted, so trust is broken even if a principal of the same name exists again. Reconcile to "
            "trust the agent by ARN.",
            acct,
            principal,
        )
    if principal != st.agent_arn:
        # A service cannot send an ExternalId: what the condition asks does not concern it.
        requirement = f" {st.id_requirement}" if _is_aws_principal(principal) else ""
        return Finding(
            "principal-not-agent",
            f"{st.where} lets {principal} assume the role{requirement}; only the agent "
            f"{st.agent_arn} should.",
            acct,
            principal,
        )
    return None


def _wildcard_finding(st: TrustStatement, acct: str) -> Finding:
    anyone = st.everyone_it_trusts
    if st.exact_ids:
        risk = f"{anyone} who knows (or guesses) the ExternalId can read every ECR repository in the account"
    else:
        anyone = anyone if st.excluded else "anyone at all"
        risk = (
            f"{anyone} can assume it without knowing any ExternalId and read every ECR repository in "
            "the account"
        )
    return Finding(
        "principal-wildcard",
        f"{st.where} lets {st.who} assume the role {st.id_requirement}: {risk}.",
        acct,
        str(st.index),
    )


def _condition_findings(st: TrustStatement, acct: str) -> list[Finding]:
    """A statement whose ExternalId conditions let any id through, or let none be sent."""
    if st.exact_ids:
        return []
    if st.loose:
        return [
            Finding(
                "external-id-wildcard",
                f"{st.where} trusts {st.who}, but its sts:ExternalId condition is ineffective: {why}.",
                acct,
                f"{st.index}:{condition.operator}",
            )
            for condition, why in st.loose
        ]
    if st.anyone:
        risk = f"{st.everyone_it_trusts} may assume this role without an ExternalId"
    elif st.trusts_agent:
        risk = "the agent can be made to assume this role for someone else (confused deputy)"
    else:
        risk = f"{st.who} may assume this role without an ExternalId"
    return [
        Finding(
            "external-id-missing",
            f"{st.where} trusts {st.who} {st.id_requirement}: {risk}.",
            acct,
            str(st.index),
        )
    ]


def _exact_id_findings(read: AccountRead, st: TrustStatement) -> list[Finding]:
    """The ExternalIds a statement requires that no broker of the account uses."""
    facts, acct = read.facts, read.facts.account.account_id
    known = {e.value: e for e in facts.external_ids}
    gain = "assume this role" if st.anyone else f"have {st.who} assume this role"
    findings = []
    for value in st.exact_ids:
        fact = known.get(value)
        if fact is None:
            findings.append(
                Finding(
                    "external-id-unused",
                    f"{st.where} accepts ExternalId {_short(value)}, which the portal does not know and no "
                    f"broker uses: whoever holds it can {gain}.",
                    acct,
                    value,
                )
            )
        elif fact.state == ExternalIdState.ACTIVE and value != facts.broker_external_id:
            findings.append(
                Finding(
                    "external-id-unused",
                    f"{st.where} accepts ExternalId {_short(value)}, which no active broker of this account "
                    "uses.",
                    acct,
                    value,
                )
            )
    return findings


def _retiring_findings(read: AccountRead, accepted: set[str], now: datetime) -> list[Finding]:
    """Retiring ExternalIds past their grace period, whether the trust still accepts them or not."""
    grace = timedelta(days=settings.EXTERNAL_ID_GRACE_DAYS)
    role = read.facts.account.service_role_name
    findings = []
    for fact in read.facts.external_ids:
        if (
            fact.state != ExternalIdState.RETIRING
            or not fact.retiring_since
            or now - fact.retiring_since <= grace
        ):
            continue
        since = (
            f"ExternalId {_short(fact.value)} has been retiring for {(now - fact.retiring_since).days} days "
            f"(grace period {settings.EXTERNAL_ID_GRACE_DAYS} days)"
        )
        if fact.value in accepted:
            text = f"{since} and the trust of {role} still accepts it: finish the rotation so it is removed."
        else:
            text = (
                f"{since}, but the trust of {role} no longer accepts it: retire it in the portal to finish "
                "the rotation."
            )
        findings.append(
            Finding("external-id-retiring-expired", text, read.facts.account.account_id, fact.value)
        )
    return findings

"""Findings on an agent (pure): what its permissions let it assume, their sizes, their drift."""

from __future__ import annotations

from accounts.choices import Lifecycle
from portal.text import counted

from .. import adoption, policies
from .catalogue import Finding
from .documents import ROLE_ARN, Grant, _size, grants_in
from .reads import AccountRead, AgentRead
from .rules import size_finding


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
    findings = [Finding("inventory-invalid", read.plan_error, name)] if read.plan_error else []
    if read.identity is None:
        return [*findings, Finding("agent-missing", f"The agent {agent.arn} does not exist.", name)]
    findings += _trust_findings(read)
    members = set(read.members.values())
    findings += [
        _grant_finding(grant, account_statuses, name)
        for grant in grants_in(read.live_documents())
        if grant.resource not in members
    ]
    findings += _agent_size_findings(read)
    if read.plan is not None and not read.plan.is_empty:
        summaries = [c.summary for c in read.plan.changes]
        more = f" and {len(summaries) - 3} more" if len(summaries) > 3 else ""
        findings.append(
            Finding(
                "agent-permissions-differ",
                f"Reconciling the agent would make {counted(len(summaries), 'change', 'changes')}: "
                f"{'; '.join(summaries[:3])}{more}.",
                name,
            )
        )
    return findings


def _trust_findings(read: AgentRead) -> list[Finding]:
    """Whom the role's trust lets in (every runtime's weak variants), and the OIDC provider IRSA needs."""
    agent, name = read.agent, read.agent.name
    if agent.kind != "role" or read.identity is None:
        return []
    trust = read.identity.get("AssumeRolePolicyDocument")
    findings = [
        Finding(
            w.code, f"The trust of {agent.iam_name} {w.message} Statement: {w.statement}", name, w.statement
        )
        for w in adoption.agent_trust_weaknesses(trust)
    ]
    if read.runtime.oidc_read and read.runtime.oidc_provider is None:
        arn = policies.oidc_provider_arn(agent.account_id, agent.oidc_issuer)
        findings.append(
            Finding(
                "agent-oidc-provider-missing",
                f"The OIDC provider {arn} that the IRSA trust of {agent.iam_name} names does not exist "
                f"in account {agent.account_id}: no pod can assume the agent role.",
                name,
                arn,
            )
        )
    return findings


def _grant_finding(grant: Grant, account_statuses: dict[str, str], subject: str) -> Finding:
    """What is wrong with a grant that is not one of the agent's service roles."""
    where = f"{grant.policy}" + (f" (statement {grant.sid})" if grant.sid else "")
    if "*" in grant.resource or "?" in grant.resource:
        roles = "any role" if grant.resource == "*" else "any role matching it"
        return Finding(
            "agent-resource-wildcard",
            f'{where} allows sts:AssumeRole on "{grant.resource}": the agent may assume {roles} '
            "that trusts it, not only the service roles the portal manages.",
            subject,
            f"{grant.policy}:{grant.resource}",
        )
    match = ROLE_ARN.match(grant.resource)
    account_id = match[1] if match else ""
    status = account_statuses.get(account_id) if match else None
    if status == Lifecycle.REMOVED:
        return Finding(
            "agent-removed-account",
            f"{where} still allows sts:AssumeRole on {grant.resource}, but account {account_id} was "
            "removed from the portal.",
            subject,
            grant.resource,
        )
    why = (
        f"account {account_id} is only a draft in the portal"
        if status == Lifecycle.DRAFT
        else "it is not the service role of an account the portal manages"
    )
    return Finding(
        "agent-unmanaged-account",
        f"{where} allows sts:AssumeRole on {grant.resource}, but {why}.",
        subject,
        grant.resource,
    )


def _agent_size_findings(read: AgentRead) -> list[Finding]:
    agent = read.agent
    inline_size = sum(_size(d) for d in read.inline.values())
    sizes = [
        size_finding(
            agent.name,
            f"The inline policies of {agent.iam_name}",
            inline_size,
            policies.INLINE_QUOTA[agent.kind],
        )
    ]
    if read.managed:
        # The engine fills each <policy>-N to the brim and then starts another: what can run out is
        # the room of all the managed policies an identity may have attached.
        sizes.append(
            size_finding(
                agent.name,
                f"The {len(read.managed)} managed {agent.policy_name}-N policies together",
                sum(_size(doc) for doc in read.managed.values()),
                policies.MANAGED_POLICIES_PER_IDENTITY * policies.MANAGED_POLICY_QUOTA,
            )
        )
    return [f for f in sizes if f]


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

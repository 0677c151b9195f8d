"""The audit run (flows.AUDIT): its scope, the concurrent reads, findings, store, notify."""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import F, Prefetch
from django.utils import timezone

from accounts import services as inventory
from accounts.choices import Lifecycle
from accounts.models import AgentIdentity, BrokerInstance, EcrAccount
from portal.text import counted

from .. import aws
from ..choices import AuditStatus, RunStatus, Severity
from ..models import Run
from .agent_rules import agent_findings, agent_grant_findings
from .catalogue import Finding, severity_counts
from .documents import Grant
from .notify import notify_new_findings
from .reads import (
    AccountFacts,
    AccountRead,
    AgentRead,
    _close_thread_connections,
    _concurrency,
    _Gauge,
    read_account,
    read_agent,
)
from .rules import account_documents, account_findings, account_status
from .snyk_reads import (
    IntegrationsRead,
    SnykFacts,
    SnykRead,
    add_integrations,
    connection_ids,
    read_integrations,
    read_snyk,
    read_snyk_connections,
)
from .snyk_rules import SnykFindings, connection_documents, snyk_findings
from .store import AccountOutcome, store_results

log = logging.getLogger(__name__)


def audit_scope(run: Run) -> tuple[list[EcrAccount], list[AgentIdentity]]:
    """Accounts (every non-draft one, or the run's targets) and the agents they name."""
    scope = EcrAccount.objects.exclude(status=Lifecycle.DRAFT).select_related("agent")
    account_ids = run.options.get("account_ids")
    if account_ids is not None:
        scope = scope.filter(account_id__in=account_ids)
    # Only the brokers' state: the audit never needs (or decrypts) a broker token.
    brokers = Prefetch("brokers", queryset=BrokerInstance.objects.only("pk", "account_id", "status"))
    accounts = list(scope.prefetch_related("external_ids", brokers).order_by("account_id"))
    agents = {a.agent_id: a.agent for a in accounts}
    if account_ids is None:
        agents.update({a.pk: a for a in AgentIdentity.objects.exclude(status=Lifecycle.DRAFT)})
    return accounts, sorted(agents.values(), key=lambda a: a.name)


def handle_audit_run(run: Run) -> tuple[str, str]:
    """flows.AUDIT: read everything concurrently, store snapshots, report."""
    now = timezone.now()
    accounts, agents = audit_scope(run)
    facts = [AccountFacts.of(a) for a in accounts]
    members = {agent.pk: inventory.agent_member_arns(agent) for agent in agents}
    statuses = dict(EcrAccount.objects.values_list("account_id", "status"))
    snyk_facts = SnykFacts.of(accounts, agents)  # None: no universal agent, Snyk is not read
    total = len(accounts) + len(agents) + (1 if snyk_facts else 0)
    Run.objects.filter(pk=run.pk).update(progress_total=total)
    scope = f"{counted(len(accounts), 'account', 'accounts')} and {counted(len(agents), 'agent', 'agents')}"
    also = " and the Snyk side of its universal agents once" if snyk_facts else ""
    run.log(f"auditing {scope}{also}, up to {_concurrency()} reads at a time")

    writes_before = aws.write_calls()
    reads = _read_concurrently(run, facts, agents, members, snyk_facts)
    if reads.cancelled_after is not None:
        # A partial audit would make the unread accounts look gone: keep the last whole one.
        return RunStatus.CANCELLED, (
            f"Cancelled after reading {reads.cancelled_after} of {total + reads.more}; no snapshot stored, "
            "so the last complete audit stays the current one."
        )
    # The audit only calls the planner and Iam reads. The counter is process-wide, so a write seen
    # here may be another thread's (a threaded worker): report it, never fail the audit on it.
    writes = aws.write_calls() - writes_before
    if writes:
        log.error("AWS write calls were made in this process during audit run %s: %s", run.pk, writes)

    cross = SnykFindings()
    connections: dict[str, tuple[dict, dict]] = {}
    if snyk_facts is not None and reads.snyk is not None:
        by_account = {read.facts.account.account_id: read for read in reads.accounts}
        cross = snyk_findings(snyk_facts, reads.snyk, by_account)
        connections = connection_documents(snyk_facts, reads.snyk)
    agent_results = []
    for agent in agents:
        read = reads.agents[agent.pk]
        read.findings = agent_findings(read, statuses) + cross.agents.get(agent.name, [])
        agent_results.append(read)
    outcomes = [
        _outcome(
            read,
            reads.agents.get(read.facts.account.agent_id),
            now,
            cross.accounts.get(acct, []),
            connections.get(acct),
        )
        for read in reads.accounts
        for acct in [read.facts.account.account_id]
    ]
    outcomes.sort(key=lambda o: o.facts.account.account_id)
    snyk_status = _snyk_status(reads.snyk) if snyk_facts is not None else None
    new_high = store_results(run, outcomes, agent_results, now=now, peak=reads.peak, snyk=snyk_status)
    explanation = _explanation(
        outcomes, agent_results, new_high, peak=reads.peak, limit=_concurrency(), writes=writes
    ) + (f" {snyk_status['message']}" if snyk_status else "")
    notify_new_findings(run, new_high)
    unreachable = (
        sum(1 for o in outcomes if o.status == AuditStatus.UNREACHABLE)
        + sum(1 for a in agent_results if a.error)
        + (1 if snyk_status and snyk_status["status"] == SNYK_UNREADABLE else 0)
    )
    status = RunStatus.PARTIAL if unreachable else RunStatus.SUCCEEDED
    return status, explanation


@dataclass
class _Reads:
    accounts: list[AccountRead] = field(default_factory=list)
    agents: dict[int, AgentRead] = field(default_factory=dict)  # by agent pk
    peak: int = 0  # the most accounts read at once
    cancelled_after: int | None = None  # how many reads were done when a cancel was seen
    snyk: SnykRead | None = None  # the Snyk side (universal agents only), read once
    more: int = 0  # reads added on the way (one per Snyk connection, for its integrations)


SNYK_READ, SNYK_UNREADABLE = "read", "unreadable"


def _snyk_status(read: SnykRead | None) -> dict[str, Any]:
    """What the run says of the Snyk side: read (how much, in how many listings) or why not."""
    if read is None or read.error:
        error = read.error if read is not None else "the read did not finish"
        return {
            "status": SNYK_UNREADABLE,
            "message": f"The Snyk side could not be read ({error}); only the AWS side was audited.",
        }
    return {
        "status": SNYK_READ,
        "deployments": len(read.deployments),
        "connections": read.connection_count,
        "listings": read.listings,
        "message": f"Snyk side read once: {counted(len(read.deployments), 'deployment', 'deployments')}, "
        f"{counted(read.connection_count, 'connection', 'connections')}, "
        f"{counted(read.listings, 'listing', 'listings')}.",
    }


def _read_snyk(facts: SnykFacts) -> SnykRead:
    try:
        return read_snyk_connections(facts)
    except Exception as exc:  # the AWS side of the audit completes whatever Snyk does
        log.exception("audit of the Snyk side failed")
        return SnykRead(error=f"{type(exc).__name__}: {exc}")
    finally:
        _close_thread_connections()


def _read_integrations(facts: SnykFacts, connection_id: str) -> IntegrationsRead:
    try:
        return read_integrations(facts, connection_id)
    except Exception as exc:
        log.exception("audit of the integrations of Snyk connection %s failed", connection_id)
        return IntegrationsRead(connection_id, error=f"{type(exc).__name__}: {exc}")
    finally:
        _close_thread_connections()


def _read_account(item: AccountFacts, gauge: _Gauge) -> AccountRead:
    try:
        with gauge:
            return read_account(item)
    except Exception as exc:  # one account's surprise never stops the others
        log.exception("audit of account %s failed", item.account.account_id)
        return AccountRead(item, error=f"{type(exc).__name__}: {exc}")
    finally:
        _close_thread_connections()


def _read_agent(agent: AgentIdentity, members: dict[str, str]) -> AgentRead:
    try:
        return read_agent(agent, members)
    except Exception as exc:
        log.exception("audit of agent %s failed", agent.name)
        return AgentRead(agent, members, error=f"{type(exc).__name__}: {exc}")
    finally:
        _close_thread_connections()


def _read_concurrently(
    run: Run,
    facts: list[AccountFacts],
    agents: list[AgentIdentity],
    members: dict[int, dict[str, str]],
    snyk_facts: SnykFacts | None = None,
) -> _Reads:
    """Every agent and account on the pool, beating the run's heartbeat and watching for a cancel.

    The Snyk side is read on the same pool: one read lists the deployments and their connections,
    then each connection's integrations are one more read each (Snyk lists them per connection)."""
    reads = _Reads()
    gauge = _Gauge()
    with ThreadPoolExecutor(max_workers=_concurrency(), thread_name_prefix="audit") as pool:
        pending: set[Future] = {pool.submit(_read_snyk, snyk_facts)} if snyk_facts is not None else set()
        pending |= {pool.submit(_read_agent, a, members[a.pk]) for a in agents}
        pending |= {pool.submit(_read_account, f, gauge) for f in facts}
        done = 0
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                done += 1
                result = future.result()
                if isinstance(result, SnykRead):
                    assert snyk_facts is not None
                    reads.snyk = result
                    more = connection_ids(result)
                    if more:
                        reads.more += len(more)
                        Run.objects.filter(pk=run.pk).update(progress_total=F("progress_total") + len(more))
                    pending |= {pool.submit(_read_integrations, snyk_facts, c) for c in more}
                elif isinstance(result, IntegrationsRead):
                    assert reads.snyk is not None
                    add_integrations(reads.snyk, result)
                elif isinstance(result, AgentRead):
                    reads.agents[result.agent.pk] = result
                else:
                    reads.accounts.append(result)
                if not run.beat(progress_done=done):
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise RuntimeError("Another worker has taken over this audit run.")
                if Run.objects.filter(pk=run.pk, cancel_requested=True).exists():
                    pool.shutdown(wait=False, cancel_futures=True)
                    reads.cancelled_after = done
                    return reads
    reads.peak = gauge.peak
    return reads


def _explanation(
    outcomes: list[AccountOutcome],
    agents: list[AgentRead],
    new_high: list[dict[str, Any]],
    *,
    peak: int,
    limit: int,
    writes: int,
) -> str:
    """The run's one-paragraph summary: statuses, findings by severity, reads at once (measured, beside
    the limit the log names), writes seen."""
    counts = Counter(o.status for o in outcomes)
    all_findings = [f for o in outcomes for f in o.findings] + [
        f.to_dict() for a in agents for f in a.findings
    ]
    by_severity = severity_counts(all_findings)
    high = counted(len(new_high), "new high-severity finding", "new high-severity findings")
    audited = f"{counted(len(outcomes), 'account', 'accounts')} and {counted(len(agents), 'agent', 'agents')}"
    return (
        f"Audited {audited}: "
        + ", ".join(f"{counts[s]} {label.lower()}" for s, label in AuditStatus.choices)
        + "; findings: "
        + ", ".join(f"{by_severity[s]} {s}" for s in Severity.values)
        + (f"; {high}" if new_high else "")
        + f". Reads at once: at most {peak} (limit {limit}); "
        + (
            f"{counted(writes, 'AWS write call', 'AWS write calls')} seen in this process meanwhile "
            "(the audit makes none)."
            if writes
            else "no AWS write made."
        )
    )


def _outcome(
    read: AccountRead,
    agent: AgentRead | None,
    now: datetime,
    cross: list[Finding] | None = None,
    connections: tuple[dict, dict] | None = None,
) -> AccountOutcome:
    findings = account_findings(read, now)
    grant_findings, live_grants = agent_grant_findings(read, agent)
    findings += grant_findings + (cross or [])
    desired_grants: list[Grant] = []
    if agent is not None and agent.desired is not None and not read.facts.removed:
        desired_grants = agent.grants("desired").covering(read.facts.account.service_role_arn)
    live, desired = account_documents(read, live_grants, desired_grants)
    if connections is not None:  # a universal account whose Snyk side was read
        live["snyk_connections"], desired["snyk_connections"] = connections
    plan = read.plan.to_dict() if read.plan else {}
    if read.plan_error:
        plan["error"] = read.plan_error
    return AccountOutcome(
        read.facts,
        account_status(read, findings),
        [f.to_dict() for f in findings],
        live,
        desired,
        plan,
    )


def cross_system_findings(accounts: list[EcrAccount]) -> list[Finding]:
    """The cross-system checks alone, read now in this thread (the accounts' IAM and the Snyk side
    of their universal agents): what a test calls between two writes of a run."""
    agents = sorted({a.agent_id: a.agent for a in accounts}.values(), key=lambda a: a.name)
    facts = SnykFacts.of(accounts, agents)
    if facts is None:
        return []
    iam = {a.account_id: read_account(AccountFacts.of(a)) for a in accounts}
    return snyk_findings(facts, read_snyk(facts), iam).all

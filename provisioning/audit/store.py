"""Storing an audit: snapshots (a new row only when something changed), account flags, the run's result."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction

from accounts.models import EcrAccount

from ..choices import SEVERITY_RANK, AuditStatus, RunKind, RunStatus, Severity
from ..models import AuditSnapshot, Run
from .catalogue import HIGH_RANK, public_finding, severity_counts, worst
from .documents import _size
from .reads import AccountFacts, AgentRead, _concurrency


@dataclass
class AccountOutcome:
    facts: AccountFacts
    status: str
    findings: list[dict[str, Any]]
    live: dict[str, Any]
    desired: dict[str, Any]
    plan: dict[str, Any]


def _digest(outcome: AccountOutcome) -> str:
    body = {
        "status": outcome.status,
        "live": outcome.live,
        "desired": outcome.desired,
        "plan": outcome.plan,
        "findings": sorted(f["key"] for f in outcome.findings),
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _previous_agent_keys(run: Run) -> dict[str, set[str]]:
    previous = (
        Run.objects.filter(kind=RunKind.AUDIT, status__in=(RunStatus.SUCCEEDED, RunStatus.PARTIAL))
        .exclude(pk=run.pk)
        .order_by("-finished_at", "-pk")
        .only("result")
        .first()
    )
    agents = (previous.result or {}).get("agents", []) if previous else []
    return {a["name"]: {f.get("key", "") for f in a.get("findings", [])} for a in agents}


@dataclass
class _SnapshotWrites:
    """The snapshot rows to write: confirm the unchanged, supersede the changed, create their new rows."""

    unchanged: list[int] = field(default_factory=list)
    superseded: list[int] = field(default_factory=list)
    created: list[AuditSnapshot] = field(default_factory=list)


def store_results(
    run: Run,
    outcomes: list[AccountOutcome],
    agents: list[AgentRead],
    *,
    now: datetime,
    peak: int,
    snyk: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Snapshots (a new row only when something changed), account flags, the run's result.

    Returns the high-severity findings that the previous audit did not have.
    """
    previous = _latest_snapshots(outcomes)
    new_high = _new_high_account_findings(outcomes, previous) + _new_high_agent_findings(run, agents)
    writes = _snapshot_writes(run, outcomes, previous, now)
    accounts = [_flag_account(run, outcome, now) for outcome in outcomes]
    result = {
        "observed_at": now.isoformat(),
        "concurrency": _concurrency(),
        "max_concurrent_reads": peak,
        "account_count": len(outcomes),
        "agents": [_agent_result(a) for a in agents],
    }
    if snyk is not None:
        result["snyk"] = snyk  # the Snyk side of universal agents: read, or why it could not be
    with transaction.atomic():
        for chunk in _chunks(writes.unchanged):
            AuditSnapshot.objects.filter(pk__in=chunk).update(confirmed_at=now, run=run)
        for chunk in _chunks(writes.superseded):
            AuditSnapshot.objects.filter(pk__in=chunk).update(is_latest=False)
        AuditSnapshot.objects.bulk_create(writes.created, batch_size=200)
        EcrAccount.objects.bulk_update(
            accounts, ["drifted", "last_audit_at", "last_audit_summary"], batch_size=200
        )
        Run.objects.filter(pk=run.pk).update(result=result)
    run.result = result
    return new_high


def _latest_snapshots(outcomes: list[AccountOutcome]) -> dict[str, AuditSnapshot]:
    """The current snapshot of each audited account, by account id (without its large documents)."""
    ids = [o.facts.account.account_id for o in outcomes]
    latest = AuditSnapshot.objects.filter(is_latest=True, account_id__in=ids).defer("live", "desired", "plan")
    return {s.account_id: s for s in latest}


def _new_high_account_findings(
    outcomes: list[AccountOutcome], previous: dict[str, AuditSnapshot]
) -> list[dict[str, Any]]:
    new_high = []
    for outcome in outcomes:
        account_id = outcome.facts.account.account_id
        prev = previous.get(account_id)
        old_keys = {f.get("key") for f in prev.findings} if prev else set()
        for finding in outcome.findings:
            if SEVERITY_RANK[finding["severity"]] >= HIGH_RANK and finding["key"] not in old_keys:
                new_high.append({**finding, "account_id": account_id})
    return new_high


def _new_high_agent_findings(run: Run, agents: list[AgentRead]) -> list[dict[str, Any]]:
    previous_agent_keys = _previous_agent_keys(run)
    new_high = []
    for agent in agents:
        old_keys = previous_agent_keys.get(agent.agent.name, set())
        for finding in agent.findings:
            if finding.rank >= HIGH_RANK and finding.key not in old_keys:
                new_high.append({**finding.to_dict(), "agent": agent.agent.name})
    return new_high


def _snapshot_writes(
    run: Run, outcomes: list[AccountOutcome], previous: dict[str, AuditSnapshot], now: datetime
) -> _SnapshotWrites:
    writes = _SnapshotWrites()
    for outcome in outcomes:
        prev = previous.get(outcome.facts.account.account_id)
        digest = _digest(outcome)
        if prev is not None and prev.digest == digest:
            writes.unchanged.append(prev.pk)
            continue
        if prev is not None:
            writes.superseded.append(prev.pk)
        writes.created.append(_snapshot(run, outcome, prev, digest, now))
    return writes


def _flag_account(run: Run, outcome: AccountOutcome, now: datetime) -> EcrAccount:
    """The account's drift flag and last audit summary (an unreachable account keeps its flag)."""
    account = outcome.facts.account
    if outcome.status != AuditStatus.UNREACHABLE:
        account.drifted = outcome.status in (AuditStatus.DRIFTED, AuditStatus.MISSING)
    account.last_audit_at = now
    top = worst(outcome.findings)
    account.last_audit_summary = {
        "run_id": run.pk,
        "status": outcome.status,
        "counts": severity_counts(outcome.findings),
        "worst": public_finding(top) if top else None,
    }
    return account


def _chunks(items: list[int], size: int = 500) -> Iterable[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _snapshot(
    run: Run, outcome: AccountOutcome, prev: AuditSnapshot | None, digest: str, now: datetime
) -> AuditSnapshot:
    counts = severity_counts(outcome.findings)
    out_of_sync = outcome.status in (AuditStatus.DRIFTED, AuditStatus.MISSING)
    if outcome.status == AuditStatus.UNREACHABLE:
        drift_since = prev.drift_since if prev else None
    elif out_of_sync:
        drift_since = prev.drift_since if prev and prev.drift_since else now
    else:
        drift_since = None
    top = worst(outcome.findings)
    codes = sorted({f["code"] for f in outcome.findings})
    return AuditSnapshot(
        run=run,
        ecr_account=outcome.facts.account,
        account_id=outcome.facts.account.account_id,
        observed_at=now,
        confirmed_at=now,
        status=outcome.status,
        drift_since=drift_since,
        live=outcome.live,
        desired=outcome.desired,
        findings=outcome.findings,
        plan=outcome.plan,
        severity_rank=SEVERITY_RANK[top["severity"]] if top else 0,
        finding_codes=(" " + " ".join(codes) + " ") if codes else "",
        critical_count=counts[Severity.CRITICAL],
        high_count=counts[Severity.HIGH],
        medium_count=counts[Severity.MEDIUM],
        low_count=counts[Severity.LOW],
        digest=digest,
        is_latest=True,
    )


def _agent_result(read: AgentRead) -> dict[str, Any]:
    if read.error:
        status = AuditStatus.UNREACHABLE
    elif read.identity is None:
        status = AuditStatus.MISSING
    elif read.plan is not None and not read.plan.is_empty:
        status = AuditStatus.DRIFTED
    else:
        status = AuditStatus.IN_SYNC
    return {
        "name": read.agent.name,
        "arn": read.agent.arn,
        "kind": read.agent.kind,
        "layout": read.live_layout if not read.error else "",
        "desired_layout": read.desired.layout if read.desired else "",
        "status": status,
        "findings": [f.to_dict() for f in read.findings],
        "changes": [c.summary for c in read.plan.changes] if read.plan else [],
        "sizes": {label: _size(doc) for label, doc in read.live_documents().items()},
    }

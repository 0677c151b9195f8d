"""Reads for the audit pages and exports: stored snapshots only (no AWS call), constant query counts."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from django.core.paginator import Page, Paginator
from django.db.models import Count, Exists, OuterRef, Prefetch, Q, QuerySet, Sum
from django.shortcuts import get_object_or_404
from django.utils import timezone

from accounts.choices import ExternalIdState, Lifecycle
from accounts.models import AgentIdentity, EcrAccount

from .audit import catalogue
from .audit.report import report
from .choices import (
    ACTIVE_RUN_STATUSES,
    AUDIT_STATE_LABELS,
    NOT_AUDITED,
    SEVERITY_RANK,
    AuditStatus,
    RunKind,
    RunStatus,
    Severity,
)
from .models import AuditSnapshot, Run
from .policies import same_document

# Relationships per page: the table's rows are most of the page's CPU under many users (bench served).
PAGE_SIZE = 25
HISTORY_LIMIT = 50
# Badge classes the portal's stylesheet already has.
SEVERITY_BADGE = {"critical": "failed", "high": "failed", "medium": "pending", "low": "removed"}
STATUS_BADGE = {"in_sync": "in-sync", "drifted": "drifted", "missing": "failed", "unreachable": "partial"}


@dataclass
class AuditFilters:
    severity: str = ""  # this severity or worse
    code: str = ""
    agent: str = ""
    status: str = ""
    q: str = ""

    @classmethod
    def from_query(cls, params: Any) -> AuditFilters:
        severity, code, status = params.get("severity", ""), params.get("code", ""), params.get("status", "")
        return cls(
            severity=severity if severity in Severity.values else "",
            code=code if code in catalogue.CHECKS else "",
            agent=params.get("agent", "").strip()[:64],
            status=status if status in [*AuditStatus.values, NOT_AUDITED] else "",
            q=params.get("q", "").strip()[:100],
        )

    def as_query(self) -> str:
        return urlencode({k: v for k, v in vars(self).items() if v})


def _latest() -> QuerySet[AuditSnapshot]:
    return AuditSnapshot.objects.filter(is_latest=True)


def relationship_queryset(filters: AuditFilters, *, documents: bool = False) -> QuerySet[EcrAccount]:
    """Every audited trust relationship (one per non-draft account) with its latest snapshot."""
    snapshots = _latest() if documents else _latest().defer("desired", "plan")
    accounts = (
        EcrAccount.objects.exclude(status=Lifecycle.DRAFT)
        .select_related("agent")
        .prefetch_related("external_ids", Prefetch("audit_snapshots", snapshots, to_attr="latest_snapshots"))
    )
    if filters.agent:
        accounts = accounts.filter(agent__name=filters.agent)
    if filters.q:
        accounts = accounts.filter(Q(account_id__startswith=filters.q) | Q(alias__icontains=filters.q))
    if filters.severity:
        rank = SEVERITY_RANK[filters.severity]
        accounts = accounts.filter(
            Exists(_latest().filter(ecr_account=OuterRef("pk"), severity_rank__gte=rank))
        )
    if filters.code:
        code = f" {filters.code} "
        accounts = accounts.filter(
            Exists(_latest().filter(ecr_account=OuterRef("pk"), finding_codes__contains=code))
        )
    if filters.status == NOT_AUDITED:
        accounts = accounts.exclude(Exists(_latest().filter(ecr_account=OuterRef("pk"))))
    elif filters.status:
        accounts = accounts.filter(
            Exists(_latest().filter(ecr_account=OuterRef("pk"), status=filters.status))
        )
    return accounts.order_by("account_id")


@dataclass
class ExternalIdView:
    value: str
    state: str
    in_live_trust: bool
    retiring_since: datetime | None

    @property
    def retiring_days(self) -> int | None:
        if self.state != ExternalIdState.RETIRING or self.retiring_since is None:
            return None
        return (timezone.now() - self.retiring_since).days


@dataclass
class Relationship:
    """One row of the audit table: an account's service role and who it trusts."""

    account: EcrAccount
    snapshot: AuditSnapshot | None

    @property
    def status(self) -> str:
        return self.snapshot.status if self.snapshot else NOT_AUDITED

    @property
    def status_badge(self) -> str:
        return STATUS_BADGE.get(self.status, "")

    @property
    def fixable(self) -> bool:
        """A reconcile would change something: "fix" opens its plan preview."""
        return (
            self.status in (AuditStatus.DRIFTED, AuditStatus.MISSING)
            and self.account.status != Lifecycle.DRAFT
        )

    @property
    def principals(self) -> list[str]:
        return self.snapshot.live.get("trusted_principals", []) if self.snapshot else []

    @property
    def external_ids(self) -> list[ExternalIdView]:
        live = set(self.snapshot.live.get("external_ids", [])) if self.snapshot else set()
        known = [
            ExternalIdView(e.value, e.state, e.value in live, e.retiring_since)
            for e in self.account.external_ids.all()
        ]
        unknown = [ExternalIdView(v, "unknown", True, None) for v in sorted(live - {e.value for e in known})]
        return known + unknown

    @property
    def findings(self) -> list[dict[str, Any]]:
        findings = self.snapshot.findings if self.snapshot else []
        return sorted(findings, key=lambda f: -SEVERITY_RANK[f["severity"]])

    @property
    def worst(self) -> dict[str, Any] | None:
        top = catalogue.worst(self.snapshot.findings) if self.snapshot else None
        return {**top, "badge": SEVERITY_BADGE[top["severity"]]} if top else None


def relationships(accounts: list[EcrAccount]) -> list[Relationship]:
    rows = []
    for account in accounts:
        # latest_snapshots: set by the Prefetch(to_attr=...) of relationship_queryset
        latest = account.latest_snapshots  # type: ignore[attr-defined]
        snapshot = latest[0] if latest else None
        if snapshot is not None:
            snapshot.ecr_account = account  # the report reads the alias: no query per row
        rows.append(Relationship(account, snapshot))
    return rows


def relationship_page(filters: AuditFilters, page_number: Any) -> Page:
    page = Paginator(relationship_queryset(filters), PAGE_SIZE).get_page(page_number)
    page.object_list = relationships(list(page.object_list))  # type: ignore[assignment]  # rows, not accounts
    return page


def last_audit() -> Run | None:
    """The latest audit that completed (its agents' findings are the current ones)."""
    return (
        Run.objects.filter(kind=RunKind.AUDIT, status__in=(RunStatus.SUCCEEDED, RunStatus.PARTIAL))
        .defer("plan")  # the result holds the agents' findings; the plan is not shown here
        .order_by("-finished_at", "-pk")
        .first()
    )


def active_audit() -> Run | None:
    return (
        Run.objects.filter(kind=RunKind.AUDIT, status__in=ACTIVE_RUN_STATUSES)
        .defer("plan", "result")  # the progress panel reads neither
        .order_by("-created_at")
        .first()
    )


def agent_rows(run: Run | None) -> list[dict[str, Any]]:
    agents = (run.result or {}).get("agents", []) if run else []
    rows = []
    for agent in agents:
        findings = sorted(agent.get("findings", []), key=lambda f: -SEVERITY_RANK[f["severity"]])
        for finding in findings:
            finding["badge"] = SEVERITY_BADGE[finding["severity"]]
        rows.append(
            {**agent, "findings": findings, "status_badge": STATUS_BADGE.get(agent.get("status", ""), "")}
        )
    return rows


def finding_totals(*, statuses: bool = True) -> dict[str, Any]:
    """Findings of every account's latest snapshot by severity (1 query), and accounts by state (1)."""
    latest = _latest().filter(ecr_account__isnull=False)
    sums = latest.aggregate(
        critical=Sum("critical_count"),
        high=Sum("high_count"),
        medium=Sum("medium_count"),
        low=Sum("low_count"),
    )
    totals: dict[str, Any] = {"findings": {k: v or 0 for k, v in sums.items()}}
    if statuses:
        totals["statuses"] = dict.fromkeys(AuditStatus.values, 0)
        for row in latest.values("status").annotate(n=Count("pk")).order_by():
            totals["statuses"][row["status"]] = row["n"]
    return totals


def audit_page(filters: AuditFilters, page_number: Any) -> dict[str, Any]:
    last = last_audit()
    return {
        "page": relationship_page(filters, page_number),
        "filters": filters,
        "filter_query": filters.as_query(),
        "last_audit": last,
        "active_audit": active_audit(),
        "agents": agent_rows(last),
        "totals": finding_totals(),
        "agent_names": list(AgentIdentity.objects.order_by("name").values_list("name", flat=True)),
        "severities": Severity.choices,
        "statuses": list(AUDIT_STATE_LABELS.items()),
        "checks": sorted(catalogue.CHECKS.values(), key=lambda c: c.code),
    }


# --- one relationship --------------------------------------------------------------------------


@dataclass
class DocumentPair:
    label: str
    live: Any
    desired: Any

    @property
    def same(self) -> bool:

        if self.live in (None, [], {}) and self.desired in (None, [], {}):
            return True
        return same_document(self.live, self.desired)


def document_pairs(snapshot: AuditSnapshot) -> list[DocumentPair]:
    live, desired = snapshot.live, snapshot.desired
    return [
        DocumentPair("Trust policy", live.get("trust"), desired.get("trust")),
        DocumentPair(
            "Read-only policy (default version)", live.get("read_policy"), desired.get("read_policy")
        ),
        DocumentPair(
            "Policies attached to the role", live.get("attached_policies"), desired.get("attached_policies")
        ),
        DocumentPair(
            "Inline policies of the role", live.get("inline_policies"), desired.get("inline_policies")
        ),
        DocumentPair("Agent permission for this role", live.get("agent_grants"), desired.get("agent_grants")),
    ] + (
        [
            DocumentPair(
                "Snyk connections (Universal Broker)",
                live.get("snyk_connections"),
                desired.get("snyk_connections"),
            )
        ]
        if "snyk_connections" in live
        else []
    )


def audit_detail(account_id: str) -> dict[str, Any]:
    account = get_object_or_404(
        EcrAccount.objects.select_related("agent").prefetch_related("external_ids"), account_id=account_id
    )
    history = list(
        AuditSnapshot.objects.filter(account_id=account_id).defer("live", "desired", "plan")[:HISTORY_LIMIT]
    )
    latest = AuditSnapshot.objects.filter(account_id=account_id, is_latest=True).first()
    relationship = Relationship(account, latest)
    last = last_audit()
    agent = next((a for a in agent_rows(last) if a["name"] == account.agent.name), None)
    for snapshot in history:
        snapshot.badge = STATUS_BADGE.get(snapshot.status, "")  # type: ignore[attr-defined]  # for the template
    for finding in relationship.findings:
        finding["badge"] = SEVERITY_BADGE[finding["severity"]]
    return {
        "account": account,
        "relationship": relationship,
        "snapshot": latest,
        "documents": document_pairs(latest) if latest else [],
        "changes": (latest.plan or {}).get("changes", []) if latest else [],
        "plan_notes": (latest.plan or {}).get("notes", []) if latest else [],
        # The stored plan is IAM's; a finding on the Snyk side is planned by the reconcile preview.
        "snyk_drift": any(
            f["code"] in catalogue.SNYK_DRIFT_CODES for f in (latest.findings if latest else [])
        ),
        "history": history,
        "agent": agent,
        "last_audit": last,
        "active_audit": active_audit(),
    }


# --- exports -----------------------------------------------------------------------------------


def export_json(filters: AuditFilters) -> dict[str, Any]:
    rows = relationships(list(relationship_queryset(filters)))
    snapshots = [r.snapshot for r in rows if r.snapshot is not None]
    last = last_audit()
    agents = (last.result or {}).get("agents", []) if last else []
    if filters.agent:
        agents = [a for a in agents if a["name"] == filters.agent]
    return report(snapshots, agents, timezone.now(), (last.result or {}).get("snyk") if last else None)


CSV_COLUMNS = [
    "account_id",
    "alias",
    "agent",
    "role_arn",
    "status",
    "drift_since",
    "trusted_principals",
    "external_ids",
    "worst_severity",
    "worst_code",
    "findings",
    "observed_at",
    "confirmed_at",
]


def _cell(value: Any) -> str:
    """Text as a spreadsheet shows it, never as a formula (CSV injection)."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def export_csv(filters: AuditFilters) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for row in relationships(list(relationship_queryset(filters))):
        snapshot, account, worst = row.snapshot, row.account, row.worst
        ids = [
            f"{e.value} ({e.state}{'' if e.in_live_trust else ', not in live trust'})"
            for e in row.external_ids
        ]
        values = [
            account.account_id,
            account.alias,
            account.agent.name,
            account.service_role_arn,
            row.status,
            snapshot.drift_since.isoformat() if snapshot and snapshot.drift_since else "",
            "; ".join(row.principals),
            "; ".join(ids),
            worst["severity"] if worst else "",
            worst["code"] if worst else "",
            "; ".join(f"{f['severity']}:{f['code']}: {f['message']}" for f in row.findings),
            snapshot.observed_at.isoformat() if snapshot else "",
            snapshot.confirmed_at.isoformat() if snapshot else "",
        ]
        writer.writerow([_cell(v) for v in values])
    return out.getvalue()


# --- dashboard -----------------------------------------------------------------------------------


def dashboard_audit() -> dict[str, Any]:
    """The last completed audit's time and the current finding counts (2 queries)."""
    last = last_audit()
    totals = finding_totals(statuses=False)
    agent_findings = [
        f for a in ((last.result or {}).get("agents", []) if last else []) for f in a.get("findings", [])
    ]
    for severity, count in catalogue.severity_counts(agent_findings).items():
        totals["findings"][severity] += count
    totals["last_audit"] = last
    totals["finding_total"] = sum(totals["findings"].values())
    return totals

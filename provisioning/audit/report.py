"""The report (command line and JSON export): agents and accounts with their findings."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.utils import timezone

from ..choices import AuditStatus
from ..models import AuditSnapshot, Run
from .catalogue import public_finding


def report(
    snapshots: Iterable[AuditSnapshot],
    agents: list[dict[str, Any]],
    generated_at: datetime,
    snyk: dict[str, Any] | None = None,
) -> dict:
    """The JSON document of the audit issue: agents and accounts with their findings, and (with
    universal agents) whether the Snyk side was read."""
    document: dict[str, Any] = {
        "generated_at": generated_at.isoformat(),
        "agents": [
            {
                "name": a["name"],
                "arn": a["arn"],
                "layout": a.get("layout", ""),
                "findings": [public_finding(f) for f in a.get("findings", [])],
            }
            for a in agents
        ],
        "accounts": [
            {
                "account_id": s.account_id,
                "alias": s.ecr_account.alias if s.ecr_account else "",
                "role_arn": s.live.get("role_arn", ""),
                "status": s.status,
                "trusted_principals": s.live.get("trusted_principals", []),
                "external_ids": s.live.get("external_ids", []),
                "findings": [public_finding(f) for f in s.findings],
            }
            for s in snapshots
        ],
    }
    if snyk is not None:
        document["snyk"] = {"status": snyk["status"], "message": snyk["message"]}
    return document


def run_report(run: Run) -> dict:
    snapshots = AuditSnapshot.objects.filter(run=run).select_related("ecr_account").order_by("account_id")
    observed = (run.result or {}).get("observed_at")
    generated = datetime.fromisoformat(observed) if observed else (run.finished_at or timezone.now())
    result = run.result or {}
    return report(snapshots, result.get("agents", []), generated, result.get("snyk"))


def has_findings_or_drift(document: dict) -> bool:
    return any(a["findings"] for a in document["agents"]) or any(
        a["findings"] or a["status"] != AuditStatus.IN_SYNC for a in document["accounts"]
    )

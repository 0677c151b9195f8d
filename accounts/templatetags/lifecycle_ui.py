"""The lifecycle panel of the account page (rotation state, retire/redeploy/offboard buttons)."""

from typing import Any

from django import template
from django.template.context import Context

from accounts.models import EcrAccount
from provisioning import lifecycle
from provisioning.models import Run

register = template.Library()


@register.inclusion_tag("accounts/_lifecycle.html", takes_context=True)
def lifecycle_panel(context: Context, account: EcrAccount) -> dict[str, Any]:
    """Reads the account's prefetched ExternalIds and brokers; one audit query while rotating."""
    return {
        "account": account,
        "rotation": lifecycle.rotation_status(account),
        "can_onboard": context.get("can_onboard", False),
        "can_offboard": context.get("can_offboard", False),
        "csrf_token": context.get("csrf_token"),
    }


@register.inclusion_tag("accounts/_bulk_progress.html")
def bulk_progress(run: Run) -> dict[str, Any]:
    """Each account's outcome in a run over accounts, from `run.result` (the run updates it as
    accounts finish): no query. Renders nothing for agent setups and audits."""
    if not run.targets or run.kind in ("agent", "audit"):
        return {"show": False}
    result = run.result or {}
    outcome: dict[str, str] = result.get("accounts", {})
    errors: dict[str, str] = result.get("errors", {})
    counts = {"succeeded": 0, "unchanged": 0, "failed": 0, "not started": 0}
    for status in outcome.values():
        counts[status] = counts.get(status, 0) + 1
    total = len(run.targets or [])
    troubled = [
        (account, status, errors.get(account, ""))
        for account, status in sorted(outcome.items())
        if status in ("failed", "not started")
    ]
    return {
        "show": True,
        "bulk": run.kind == "bulk",
        "run": run,
        "total": total,
        "succeeded": counts["succeeded"] + counts["unchanged"],
        "unchanged": counts["unchanged"],
        "failed_count": counts["failed"],
        "not_started": counts["not started"],
        "working": max(0, total - len(outcome)) if run.is_active else 0,
        "failed": [account for account, status, _ in troubled if status == "failed"],
        "troubled": troubled,
        "options": run.options or {},
    }

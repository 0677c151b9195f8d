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
    """Per-account progress of a bulk run, from `run.result` (the engine updates it as each account
    finishes): no query. Renders nothing for other kinds of run."""
    if run.kind != "bulk":
        return {"show": False}
    outcome = (run.result or {}).get("accounts", {})
    counts = {"succeeded": 0, "failed": 0, "not started": 0}
    for status in outcome.values():
        counts[status] = counts.get(status, 0) + 1
    total = len(run.targets or [])
    failed = sorted(account for account, status in outcome.items() if status == "failed")
    return {
        "show": True,
        "run": run,
        "total": total,
        "succeeded": counts["succeeded"],
        "failed_count": counts["failed"],
        "not_started": counts["not started"],
        "working": max(0, total - len(outcome)) if run.is_active else 0,
        "failed": failed,
        "options": run.options or {},
    }

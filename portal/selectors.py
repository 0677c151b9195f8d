"""Reads for the dashboard: a fixed handful of aggregate queries, whatever the inventory size."""

from django.db.models import Count, Q

from accounts.choices import Lifecycle
from accounts.models import AgentIdentity, BrokerInstance, EcrAccount
from provisioning.choices import RunKind
from provisioning.models import Run


def dashboard_summary() -> dict:
    by_status = EcrAccount.objects.aggregate(
        total=Count("pk"),
        active=Count("pk", filter=Q(status=Lifecycle.ACTIVE, drifted=False)),
        drifted=Count("pk", filter=Q(drifted=True) & ~Q(status=Lifecycle.REMOVED)),
        failed=Count("pk", filter=Q(status=Lifecycle.FAILED)),
        draft=Count("pk", filter=Q(status=Lifecycle.DRAFT)),
        removed=Count("pk", filter=Q(status=Lifecycle.REMOVED)),
    )
    return {
        "agent_count": AgentIdentity.objects.count(),
        "accounts": by_status,
        "broker_count": BrokerInstance.objects.filter(status="active").count(),
        "latest_runs": list(Run.objects.select_related("agent")[:10]),
        "last_audit": Run.objects.filter(kind=RunKind.AUDIT).order_by("-created_at").first(),
    }

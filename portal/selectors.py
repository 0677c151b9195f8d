"""Reads for the dashboard: a fixed handful of queries, whatever the inventory size."""

from django.db.models import Count, Q

from accounts.choices import BrokerStatus, Lifecycle
from accounts.models import AgentIdentity, BrokerInstance, EcrAccount
from provisioning.audit_selectors import dashboard_audit
from provisioning.choices import ACTIVE_RUN_STATUSES, RunKind
from provisioning.models import Run

ATTENTION_LIMIT = 8
# A run's plan and result grow with its accounts (a 1,000-account bulk run's plan is megabytes of
# JSON): lists and tiles never read them, so they are never loaded for them.
RUN_DOCUMENTS = ("plan", "result")


def dashboard_summary() -> dict:
    by_status = EcrAccount.objects.aggregate(
        total=Count("pk"),
        active=Count("pk", filter=Q(status=Lifecycle.ACTIVE, drifted=False)),
        drifted=Count("pk", filter=Q(drifted=True) & ~Q(status=Lifecycle.REMOVED)),
        failed=Count("pk", filter=Q(status=Lifecycle.FAILED)),
        draft=Count("pk", filter=Q(status=Lifecycle.DRAFT)),
        pending=Count("pk", filter=Q(status=Lifecycle.PENDING)),
        removed=Count("pk", filter=Q(status=Lifecycle.REMOVED)),
    )
    attention = list(
        EcrAccount.objects.filter(
            Q(status__in=(Lifecycle.FAILED, Lifecycle.DRAFT))
            | (Q(drifted=True) & ~Q(status=Lifecycle.REMOVED))
        )
        .select_related("agent")
        .order_by("-updated_at")[:ATTENTION_LIMIT]
    )
    return {
        "agent_count": AgentIdentity.objects.count(),
        "accounts": by_status,
        **BrokerInstance.objects.filter(status=BrokerStatus.ACTIVE).aggregate(
            broker_count=Count("pk", filter=Q(account__status=Lifecycle.ACTIVE)),
            pending_broker_count=Count("pk", filter=~Q(account__status=Lifecycle.ACTIVE)),
        ),
        "active_run_count": Run.objects.filter(status__in=ACTIVE_RUN_STATUSES).count(),
        "latest_runs": list(
            Run.objects.select_related("agent").defer(*RUN_DOCUMENTS).order_by("-created_at", "-pk")[:10]
        ),
        "last_audit": Run.objects.filter(kind=RunKind.AUDIT)
        .defer(*RUN_DOCUMENTS)
        .order_by("-created_at")
        .first(),
        # One query: the syncs say themselves what they did or what waits (auto-apply on or off).
        "org_syncs": list(
            Run.objects.filter(kind=RunKind.ORG_SYNC).defer(*RUN_DOCUMENTS).order_by("-created_at", "-pk")[:5]
        ),
        "attention": attention,
        "audit": dashboard_audit(),
    }

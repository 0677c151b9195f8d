"""Reads for the inventory pages. Each page costs a fixed number of queries, whatever the inventory size."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from django.core.paginator import Page, Paginator
from django.db.models import Count, Exists, OuterRef, Prefetch, Q, QuerySet
from django.shortcuts import get_object_or_404

from accounts import services as inventory
from portal.models import AuditEntry
from provisioning import aws, policies, services
from provisioning import live as live_reads
from provisioning.changes import Plan
from provisioning.models import Run

from . import renderers
from .choices import BrokerStatus, Lifecycle
from .models import AgentIdentity, BrokerInstance, EcrAccount

PAGE_SIZE = 25


# --- accounts --------------------------------------------------------------------------------


@dataclass
class AccountFilters:
    status: str = ""
    agent: str = ""
    region: str = ""
    q: str = ""
    drift: bool = False

    @classmethod
    def from_query(cls, params: Any) -> AccountFilters:
        status = params.get("status", "")
        return cls(
            status=status if status in Lifecycle.values else "",
            agent=params.get("agent", "").strip(),
            region=params.get("region", "").strip(),
            q=params.get("q", "").strip()[:100],
            drift=params.get("drift", "") in ("1", "true", "on"),
        )

    def as_query(self) -> str:

        values = {k: v for k, v in vars(self).items() if v}
        if self.drift:
            values["drift"] = "1"
        return urlencode(values)


def account_queryset(filters: AccountFilters) -> QuerySet[EcrAccount]:
    accounts = EcrAccount.objects.select_related("agent").prefetch_related(
        Prefetch("brokers", queryset=BrokerInstance.objects.order_by("region"))
    )
    if filters.status:
        accounts = accounts.filter(status=filters.status)
    if filters.drift:
        accounts = accounts.filter(drifted=True).exclude(status=Lifecycle.REMOVED)
    if filters.agent:
        accounts = accounts.filter(agent__name=filters.agent)
    if filters.region:
        # EXISTS, not a join: an account with several brokers appears once.
        accounts = accounts.filter(
            Exists(BrokerInstance.objects.filter(account=OuterRef("pk"), region=filters.region))
        )
    if filters.q:
        accounts = accounts.filter(Q(account_id__startswith=filters.q) | Q(alias__icontains=filters.q))
    return accounts.order_by("account_id")


def account_page(filters: AccountFilters, page_number: Any) -> Page:
    """One page: a COUNT, the accounts with their agents (join), their brokers (one prefetch)."""
    return Paginator(account_queryset(filters), PAGE_SIZE).get_page(page_number)


def account_filter_choices() -> dict[str, Any]:
    return {
        "statuses": Lifecycle.choices,
        "agents": list(AgentIdentity.objects.order_by("name").values_list("name", flat=True)),
        "regions": list(
            BrokerInstance.objects.order_by("region").values_list("region", flat=True).distinct()
        ),
    }


def account_get(account_id: str) -> EcrAccount:
    return get_object_or_404(EcrAccount.objects.select_related("agent"), account_id=account_id)


def account_detail(account_id: str) -> dict[str, Any]:
    account = get_object_or_404(
        EcrAccount.objects.select_related("agent").prefetch_related("external_ids", "brokers"),
        account_id=account_id,
    )
    ids = [e.value for e in account.external_ids.all()]
    try:
        desired_trust = policies.service_role_trust_policy(account.agent.arn, ids) if ids else None
        trust_error = "" if ids else "This account has no ExternalId: its role would trust nobody."
    except policies.LayoutError as exc:
        desired_trust, trust_error = None, str(exc)
    return {
        "account": account,
        "external_ids": list(account.external_ids.all()),
        "brokers": broker_views(list(account.brokers.all())),
        "desired_trust": desired_trust,
        "trust_error": trust_error,
        "runs": list(account.runs.select_related("agent").order_by("-created_at")[:20]),
        "active_run": account.runs.filter(status__in=("queued", "running")).first(),
        "audit_entries": list(AuditEntry.objects.filter(account_id=account.account_id)[:20]),
    }


def account_plan(account: EcrAccount) -> Plan:
    """What confirming the account page's plan would do, in the engine's order (read-only AWS reads).

    A draft or failed account is onboarded, any other reconciled.
    """
    if account_is_onboarding(account):
        return services.plan_onboarding(account)
    return services.plan_reconcile([account])


def account_is_onboarding(account: EcrAccount) -> bool:
    return account.status in (Lifecycle.DRAFT, Lifecycle.FAILED)


@dataclass
class BrokerView:
    """A broker as pages show it: its settings with the token masked, or why no file can be made."""

    broker: BrokerInstance
    masked_env: str = ""
    error: str = ""


def broker_views(brokers: list[BrokerInstance]) -> list[BrokerView]:
    views = []
    for broker in brokers:
        try:
            views.append(BrokerView(broker, masked_env=renderers.render_env(broker, masked=True)))
        except renderers.BrokerFileError as exc:
            views.append(BrokerView(broker, error=str(exc)))
    return views


@dataclass
class LiveTrust:
    """The service role's trust as IAM has it now, next to the desired one."""

    desired: dict | None
    live: dict | None = None
    role_exists: bool = False
    error: str = ""
    in_sync: bool = False
    notes: list[str] = field(default_factory=list)


def account_live_trust(account: EcrAccount) -> LiveTrust:
    """Read the live role (one IAM read through aws.py, assuming the management role if set)."""
    ids = [e.value for e in account.external_ids.all()]
    try:
        desired = policies.service_role_trust_policy(account.agent.arn, ids) if ids else None
    except policies.LayoutError as exc:
        return LiveTrust(desired=None, error=str(exc))
    try:
        role = live_reads.read_service_role(account)
    except aws.AwsError as exc:
        return LiveTrust(desired=desired, error=f"Could not read the role: {exc.code}: {exc.message}")
    if role is None:
        return LiveTrust(desired=desired, notes=[f"{account.service_role_arn} does not exist in AWS."])
    live = role.get("AssumeRolePolicyDocument")
    return LiveTrust(
        desired=desired, live=live, role_exists=True, in_sync=policies.same_document(live, desired)
    )


# --- agents ----------------------------------------------------------------------------------


def agent_list() -> list[AgentIdentity]:
    return list(
        AgentIdentity.objects.annotate(
            account_count=Count("accounts", filter=Q(accounts__status__in=inventory.MEMBER_STATUSES))
        ).order_by("name")
    )


@dataclass
class PermissionSummary:
    layout: str
    note: str
    sizes: dict[str, int]
    quota: int
    headroom_percent: int
    error: str = ""


def agent_permission_summary(agent: AgentIdentity, role_arns: dict[str, str]) -> PermissionSummary:
    """The layout the agent's permissions take for its accounts, and how much quota is left (pure)."""
    try:
        desired = policies.agent_permissions(agent.kind, agent.policy_name, role_arns)
    except policies.LayoutError as exc:
        return PermissionSummary("", "", {}, 0, 0, error=str(exc))
    return PermissionSummary(
        layout=desired.layout,
        note=desired.note,
        sizes=desired.sizes,
        quota=desired.quota,
        headroom_percent=round(desired.headroom * 100),
    )


def agent_detail(pk: int) -> dict[str, Any]:
    agent = get_object_or_404(AgentIdentity, pk=pk)
    accounts = list(agent.accounts.order_by("account_id"))
    members = {a.account_id: a.service_role_arn for a in accounts if a.status in inventory.MEMBER_STATUSES}
    return {
        "agent": agent,
        "accounts": accounts,
        "member_count": len(members),
        "permissions": agent_permission_summary(agent, members),
        "inline_quota": policies.INLINE_QUOTA[agent.kind],
        "runs": list(Run.objects.filter(agent=agent).order_by("-created_at")[:10]),
        **BrokerInstance.objects.filter(account__agent=agent, status=BrokerStatus.ACTIVE).aggregate(
            active_brokers=Count("pk", filter=Q(account__status=Lifecycle.ACTIVE)),
            pending_brokers=Count("pk", filter=~Q(account__status=Lifecycle.ACTIVE)),
        ),
    }


def agent_get(pk: int) -> AgentIdentity:
    return get_object_or_404(AgentIdentity, pk=pk)


def broker_get(pk: int) -> BrokerInstance:
    """A broker with what its files need (account, agent, ExternalIds) in two queries."""
    return get_object_or_404(
        BrokerInstance.objects.select_related("account__agent").prefetch_related("account__external_ids"),
        pk=pk,
    )

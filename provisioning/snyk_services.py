"""Use cases of the Snyk side: connecting a tenant (tested before it is saved) and syncing agents.

snyk_sync is a reconcile run over a universal agent's accounts: the same flow, whose Snyk steps
follow its IAM steps, so a sync of an agent already in step writes nothing to either system.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone

from accounts import services as inventory
from accounts import validators
from accounts.choices import Lifecycle
from accounts.models import AgentIdentity, BrokerInstance, EcrAccount, SnykConnection, SnykTenant
from portal import audit
from portal.audit import Actor

from . import runner, services, snyk, snyk_plan
from .changes import Plan
from .choices import RunKind, RunStatus
from .models import Run
from .snyk_plan import access_of, connection_name, current_tenant

SYNCED_STATUSES = (Lifecycle.ACTIVE, Lifecycle.FAILED)


def snyk_connect(
    *,
    tenant_id: str,
    token: str,
    api_url: str = "",
    app_org_id: str = "",
    group_id: str = "",
    user: Actor = None,
) -> SnykTenant:
    """Test the token (GET /rest/self, then the Tenant Admin membership) and save the connection.

    Raises ValidationError for bad input (nothing sent), snyk.SnykError when Snyk refuses.
    """
    tenant = SnykTenant.objects.filter(tenant_id=tenant_id).first() or SnykTenant(tenant_id=tenant_id)
    tenant.api_url = (api_url or settings.SNYK_API_URL).rstrip("/")
    tenant.token = token
    tenant.app_org_id = app_org_id or tenant.app_org_id
    tenant.group_id = group_id or tenant.group_id
    if not token or token != token.strip():
        raise ValidationError({"token": "The token file must hold the token alone (one line)."})
    tenant.full_clean(validate_unique=False)
    client = snyk.Client(access_of(tenant))
    me = client.self_user()
    user_id = str(me.get("id", ""))
    if not client.is_tenant_admin(user_id):
        raise snyk.SnykError(
            403, "Not a Tenant Admin", f"the token's user {user_id} is not an admin of tenant {tenant_id}"
        )
    attributes = me.get("attributes") or {}
    tenant.user_id = user_id
    tenant.user_name = str(attributes.get("name") or attributes.get("username") or "")
    tenant.verified_at = timezone.now()
    tenant.save()
    audit.record(
        user=user,
        action="snyk.connect",
        obj=tenant,
        tenant_id=tenant_id,
        api_url=tenant.api_url,
        snyk_user=tenant.user_name,
    )
    return tenant


def sync_accounts(agent: AgentIdentity | None = None) -> list[EcrAccount]:
    """The onboarded accounts of universal agents (or of this one) a sync brings Snyk to."""
    accounts = EcrAccount.objects.filter(status__in=SYNCED_STATUSES).select_related("agent")
    if agent is not None:
        accounts = accounts.filter(agent=agent)
    return [a for a in accounts.order_by("account_id") if a.agent.is_universal]


def plan_sync(agent: AgentIdentity | None = None) -> Plan:
    return services.plan_reconcile(sync_accounts(agent))


def snyk_sync(*, agent: AgentIdentity | None = None, user: Actor = None, enqueue: bool = True) -> Run | None:
    accounts = sync_accounts(agent)
    if not accounts:
        return None
    return services.account_reconcile(accounts=accounts, user=user, enqueue=enqueue)


def broker_mode_switch(
    *, agent: AgentIdentity, broker_mode: str, user: Actor = None, enqueue: bool = True
) -> tuple[bool, Run | None]:
    """Switch the agent's broker mode (the page's button and `agent_set --broker-mode`): to universal,
    the run that migrates its onboarded accounts starts too (connections, Orgs, integrations; each
    account's classic brokers retire once its integration exists). (changed, that run or None).

    Raises ValidationError for an unknown mode.
    """
    changed = inventory.agent_set_broker_mode(agent=agent, broker_mode=broker_mode, user=user)
    if not changed or not agent.is_universal:
        return changed, None
    return True, snyk_sync(agent=agent, user=user, enqueue=enqueue)


def snyk_org_map(*, broker: BrokerInstance, org_id: str, user: Actor = None) -> str:
    """Integrate this registry (account and region) into an existing Snyk Org instead of one the
    portal creates; the Org's name. Checked with Snyk first (GET /orgs/{org_id}): it exists, is no
    personal Org, and is in the tenant (and its group, when the connection names one). One Org holds
    one ECR integration, and an integrated connection keeps its Org.

    Raises ValidationError (nothing saved) for every refusal, snyk.SnykError when Snyk fails.
    """
    org_id = org_id.strip().lower()
    try:
        validators.validate_snyk_id(org_id)
    except ValidationError as exc:
        raise ValidationError({"org_id": exc.messages}) from None
    tenant = current_tenant()
    name = connection_name(broker)
    taken = (
        BrokerInstance.objects.filter(snyk_org_id=org_id).exclude(pk=broker.pk).first()
        or SnykConnection.objects.filter(org_id=org_id).exclude(broker=broker).first()
    )
    if taken is not None:
        holder = taken if isinstance(taken, BrokerInstance) else taken.broker
        message = f"Org {org_id} is {connection_name(holder)}'s already: an Org holds one ECR integration."
        raise ValidationError({"org_id": message})
    row = SnykConnection.objects.filter(broker=broker).first()
    if row is not None and row.integration_id and row.org_id != org_id:
        raise ValidationError(
            {"org_id": f"{name} is integrated with Org {row.org_id} already: it keeps that Org."}
        )
    try:
        org = snyk.Client(access_of(tenant)).org(org_id)
    except snyk.SnykError as exc:
        if exc.is_not_found:
            raise ValidationError(
                {"org_id": f"Snyk has no Org {org_id} (or the token's user cannot see it)."}
            ) from None
        raise
    attributes = org.get("attributes") or {}
    related = ((org.get("relationships") or {}).get("tenant") or {}).get("data") or {}
    org_name = str(attributes.get("name") or org_id)
    if attributes.get("is_personal"):
        raise ValidationError({"org_id": f"{org_name!r} is a personal Org, in no group of the tenant."})
    if related.get("id") and related["id"] != tenant.tenant_id:
        raise ValidationError({"org_id": f"{org_name!r} is in another tenant, not {tenant.tenant_id}."})
    if tenant.group_id and attributes.get("group_id") != tenant.group_id:
        group = attributes.get("group_id")
        message = f"{org_name!r} is in group {group}, not the tenant's group {tenant.group_id}."
        raise ValidationError({"org_id": message})
    BrokerInstance.objects.filter(pk=broker.pk).update(snyk_org_id=org_id)
    broker.snyk_org_id = org_id
    if row is not None:
        SnykConnection.objects.filter(pk=row.pk).update(org_id=org_id, org_mapped=True)
    audit.record(
        user=user,
        action="snyk.org_map",
        account_id=broker.account.account_id,
        obj=broker,
        region=broker.region,
        org_id=org_id,
        org_name=org_name,
    )
    return org_name


def app_secret_rotate(*, user: Actor = None) -> str:
    """Replace the Broker App install's client secret; the new one, to be shown once. Snyk revokes the
    old one at once: every deployment runs with the new one only once redeployed with its new file.

    The write is a run like every other (its Operation recorded, redacted), run here in the request
    as an access key's is: the secret comes back to the person who asked, never through the queue.
    Raises ValidationError before the app is installed (nothing sent) and when Snyk refuses (the
    stored secret is kept), snyk.SnykError without a Snyk connection.
    """
    tenant = current_tenant()  # SnykPlanError (a SnykError) without a Snyk connection
    try:
        snyk_plan.plan_app_secret(tenant)  # refuses before anything is saved or sent
    except snyk_plan.SnykPlanError as exc:
        raise ValidationError(str(exc)) from None
    run = services.run_request(kind=RunKind.APP_SECRET, user=user, enqueue=False)
    if not run.claim():
        raise ValidationError({"run": f"Run {run.pk} was taken by another process."})
    runner.execute(run)
    secret: str | None = getattr(run, "new_client_secret", None)
    if run.status != RunStatus.SUCCEEDED or not secret:
        raise ValidationError(run.explanation or f"Run {run.pk} {run.status}.")
    tenant = current_tenant()
    operation = run.operations.get()
    audit.record(
        user=user,
        action="snyk.app_secret_rotate",
        obj=tenant,
        install_id=tenant.app_install_id,
        client_id=tenant.app_client_id,
        run_id=run.pk,
        request_id=operation.request_id,
    )
    return secret

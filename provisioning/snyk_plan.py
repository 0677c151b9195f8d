"""The Snyk side of a universal agent, planned like IAM: read what Snyk has, compare it with what the
inventory wants, and list the writes (SnykChange) in order. Read-only: the applier makes the writes.

What is wanted, per universal agent: the Broker App installed in the tenant's app Org (reused when
it is there), deployments of at most SNYK_CONNECTIONS_PER_DEPLOYMENT connections (a connection's
deployment is chosen once and kept: Snyk cannot move it), and per broker (account and region) one
`ecr` connection carrying the service role, region and ExternalId IAM trusts, its own Snyk Org
(found by name in the tenant's group, created there, or mapped by the operator) and the integration
of the two. Everything is looked up by name before it is created, so a re-run writes nothing.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from accounts.models import AgentIdentity, BrokerInstance, SnykConnection, SnykDeployment, SnykTenant

from . import aws, snyk
from .changes import Plan, SnykChange

MANAGED_BY = "ecr-broker-portal"
CONNECTION_TYPE = "ecr"


class SnykPlanError(snyk.SnykError):
    """What the inventory lacks for the Snyk side (no Snyk connection, no Org for an account)."""

    def __init__(self, message: str):
        super().__init__(0, message)
        self.code = "not ready"


def access_of(tenant: SnykTenant) -> snyk.SnykAccess:
    return snyk.SnykAccess(tenant.api_url, tenant.tenant_id, tenant.token)


def current_tenant() -> SnykTenant:
    tenant = SnykTenant.current()
    if tenant is None:
        raise SnykPlanError("No Snyk connection: run `manage.py snyk_connect` first (see the Snyk page).")
    return tenant


# --- pure builders -----------------------------------------------------------------------------


def registry_host(broker: BrokerInstance) -> str:
    return f"{broker.account.account_id}.dkr.ecr.{broker.region}.amazonaws.com"


def connection_required(broker: BrokerInstance, external_id: str) -> dict[str, str]:
    """The `ecr` connection's parameters (snyk-broker-config flagConnectionMapping.ecr): plain values."""
    for name in ("broker_client_url", "cr_agent_url"):
        if not getattr(broker, name):
            raise SnykPlanError(
                f"Broker {broker}: {name} is not set; a Universal Broker connection needs it."
            )
    return {
        "broker_client_url": broker.broker_client_url,
        "cr_agent_url": broker.cr_agent_url,
        "cr_base": registry_host(broker),
        "cr_role_arn": broker.account.service_role_arn,
        "cr_region": broker.region,
        "cr_external_id": external_id,
    }


def connection_name(broker: BrokerInstance) -> str:
    return f"{broker.account.account_id}-{broker.region}"


def org_name(broker: BrokerInstance) -> str:
    """One Org per registry (account and region): Snyk's ECR integration holds one region."""
    return f"ECR {broker.account.account_id} {broker.region}"


def deployment_name(agent: AgentIdentity, ordinal: int) -> str:
    return f"{agent.name}-{ordinal}"


def assign_deployments(used: Counter[int], new: Iterable[int], limit: int) -> dict[int, int]:
    """Deployment ordinal of each new connection: the lowest with room (`used` counts what each holds).

    Existing connections are never moved, so only the new ones are placed.
    """
    used = Counter(used)
    placed: dict[int, int] = {}
    for key in new:
        ordinal = 1
        while used[ordinal] >= limit:
            ordinal += 1
        used[ordinal] += 1
        placed[key] = ordinal
    return placed


# --- the agent: app install and deployments ----------------------------------------------------


@dataclass
class AgentState:
    """What the agent's Snyk step found or will make, for the connection steps that follow it."""

    tenant: SnykTenant
    access: snyk.SnykAccess
    install_id: str = ""
    install_change: SnykChange | None = None
    deployment_ids: dict[int, str] = field(default_factory=dict)
    deployment_changes: dict[int, SnykChange] = field(default_factory=dict)
    assignment: dict[int, int] = field(default_factory=dict)  # broker pk -> deployment ordinal
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def install_path(self) -> tuple[str, dict[str, SnykChange]]:
        """The install's REST path, with a placeholder while the install is still to be made."""
        install = self.install_id or "{install}"
        refs = {"install": self.install_change} if self.install_change and not self.install_id else {}
        return f"/rest/tenants/{self.tenant.tenant_id}/brokers/installs/{install}", refs


def plan_agent(agent: AgentIdentity, brokers: list[BrokerInstance]) -> tuple[Plan, AgentState]:
    tenant = current_tenant()
    state = AgentState(tenant=tenant, access=access_of(tenant))
    plan = Plan()
    client = snyk.Client(state.access)
    _plan_install(plan, agent, state, client)
    _assign(agent, brokers, state)
    _plan_deployments(plan, agent, state, client)
    return plan, state


def _change(account_id: str, tenant: snyk.SnykAccess, *, path: str, **fields: Any) -> SnykChange:
    """A Snyk write; its `arn` (what pages and operations name) is the path it calls."""
    return SnykChange(
        account_id=account_id,
        access=aws.Access(account_id),  # unused: Snyk changes go through snyk.py
        method="",
        params={},
        arn=path,
        path=path,
        tenant=tenant,
        **fields,
    )


def _plan_install(plan: Plan, agent: AgentIdentity, state: AgentState, client: snyk.Client) -> None:
    tenant = state.tenant
    if not tenant.app_org_id:
        raise SnykPlanError("The Snyk connection names no Org for the Broker App: snyk_connect --app-org-id.")
    installs = [
        i
        for i in client.app_installs(tenant.app_org_id)
        if ((i.get("relationships") or {}).get("app") or {}).get("data", {}).get("id")
        == settings.SNYK_BROKER_APP_ID
    ]
    path = f"/rest/orgs/{tenant.app_org_id}/apps/installs"
    found = next((i for i in installs if i["id"] == tenant.app_install_id), installs[0] if installs else None)
    if found is not None and found["id"] == tenant.app_install_id and tenant.app_client_secret:
        state.install_id = found["id"]
        return
    if found is not None:
        # Reused: its secret was shown once to whoever installed it, so the portal gets a new one.
        state.install_id = found["id"]
        state.install_change = _change(
            agent.account_id,
            state.access,
            kind="update",
            action="snyk:RotateAppSecret",
            summary="Reuse the tenant's Broker App install: replace its client secret (the old one stops)",
            http="POST",
            path=f"{path}/{found['id']}/secrets",
            version=snyk.APP_SECRETS_VERSION,
            body={"data": {"type": "app", "attributes": {"mode": "replace"}}},
            on_done=lambda answer, install=found["id"]: _save_install(state, install, answer),
        )
    else:
        state.install_change = _change(
            agent.account_id,
            state.access,
            kind="create",
            action="snyk:CreateAppInstall",
            summary="Install the Broker App (its client secret is stored encrypted, never shown)",
            http="POST",
            path=path,
            version=snyk.APP_INSTALL_VERSION,
            body={
                "data": {"type": "app_install"},
                "relationships": {"app": {"data": {"id": settings.SNYK_BROKER_APP_ID, "type": "app"}}},
            },
            on_done=lambda answer: _save_install(state, "", answer),
        )
    plan.changes.append(state.install_change)


def plan_app_secret(tenant: SnykTenant) -> Plan:
    """The install's client secret replaced (Snyk revokes the old one at once); on_done stores the new."""
    if not (tenant.app_install_id and tenant.app_org_id):
        raise SnykPlanError(
            "The Broker App is not installed yet: the first sync of a universal agent does it."
        )
    access = access_of(tenant)
    install = tenant.app_install_id
    change = _change(
        "",
        access,
        kind="update",
        action="snyk:RotateAppSecret",
        summary=f"Replace the client secret of the Broker App install {install} (the old one stops)",
        http="POST",
        path=f"/rest/orgs/{tenant.app_org_id}/apps/installs/{install}/secrets",
        version=snyk.APP_SECRETS_VERSION,
        body={"data": {"type": "app", "attributes": {"mode": "replace"}}},
        on_done=lambda answer: _save_install(AgentState(tenant=tenant, access=access), install, answer),
    )
    return Plan(changes=[change])


def _save_install(state: AgentState, install_id: str, answer: snyk.SnykResponse) -> None:
    tenant = state.tenant
    attributes = (answer.body.get("data") or {}).get("attributes") or {}
    state.install_id = tenant.app_install_id = install_id or answer.data_id
    tenant.app_client_id = attributes.get("client_id") or tenant.app_client_id
    tenant.app_client_secret = attributes.get("client_secret", "")
    tenant.save(update_fields=["app_install_id", "app_client_id", "app_client_secret", "updated_at"])


def _assign(agent: AgentIdentity, brokers: list[BrokerInstance], state: AgentState) -> None:
    rows = SnykConnection.objects.filter(
        deployment__agent=agent, deployment__tenant=state.tenant
    ).select_related("deployment")
    used = Counter(row.deployment.ordinal for row in rows)
    kept = {row.broker_id: row.deployment.ordinal for row in rows}
    state.assignment = {b.pk: kept[b.pk] for b in brokers if b.pk in kept}
    new = sorted((b for b in brokers if b.pk not in kept), key=lambda b: (b.account.account_id, b.region))
    state.assignment.update(
        assign_deployments(used, [b.pk for b in new], settings.SNYK_CONNECTIONS_PER_DEPLOYMENT)
    )


def _plan_deployments(plan: Plan, agent: AgentIdentity, state: AgentState, client: snyk.Client) -> None:
    live = {
        (d.get("attributes") or {}).get("metadata", {}).get("name"): d["id"]
        for d in client.deployments()
        if (d.get("attributes") or {}).get("metadata", {}).get("managed-by") == MANAGED_BY
    }
    for ordinal in sorted(set(state.assignment.values())):
        name = deployment_name(agent, ordinal)
        if name in live:
            state.deployment_ids[ordinal] = live[name]
            continue
        install_path, refs = state.install_path()
        metadata = {"name": name, "managed-by": MANAGED_BY, "agent": agent.arn}
        change = _change(
            agent.account_id,
            state.access,
            kind="create",
            action="snyk:CreateDeployment",
            summary=f"Universal Broker deployment {name}",
            after={"metadata": metadata},
            http="POST",
            path=f"{install_path}/deployments",
            refs=refs,
            version=snyk.BROKER_VERSION,
            body={
                "data": {
                    "type": "broker_deployment",
                    "attributes": {
                        "broker_app_installed_in_org_id": state.tenant.app_org_id,
                        "metadata": metadata,
                    },
                }
            },
            on_done=lambda answer, o=ordinal: state.deployment_ids.__setitem__(o, answer.data_id),
        )
        state.deployment_changes[ordinal] = change
        plan.changes.append(change)


def save_agent(agent: AgentIdentity, brokers: list[BrokerInstance], state: AgentState) -> None:
    """The inventory learns the deployments and each new connection's (fixed) deployment."""
    deployments = {}
    for ordinal, deployment_id in state.deployment_ids.items():
        deployments[ordinal], _ = SnykDeployment.objects.update_or_create(
            tenant=state.tenant, agent=agent, ordinal=ordinal, defaults={"deployment_id": deployment_id}
        )
    for broker in brokers:
        SnykConnection.objects.get_or_create(
            broker=broker, defaults={"deployment": deployments[state.assignment[broker.pk]]}
        )


# --- one broker: connection, Org, integration --------------------------------------------------


@dataclass
class Found:
    """Ids found in Snyk by name (adopted: recorded without a write)."""

    connection_id: str = ""
    org_id: str = ""
    org_mapped: bool = False
    integration_id: str = ""


def plan_connection(state: AgentState, broker: BrokerInstance, external_id: str, found: Found) -> Plan:
    plan = Plan()
    client = snyk.Client(state.access)
    row = SnykConnection.objects.filter(broker=broker).first()
    desired = connection_required(broker, external_id)
    connection_change = _plan_connection_itself(plan, state, client, broker, desired, found)
    org_change = _plan_org(plan, state, client, broker, row, found)
    if found.connection_id and found.org_id:
        for integration in client.integrations(found.connection_id):
            if (integration.get("attributes") or {}).get("org_id") == found.org_id:
                found.integration_id = integration["id"]
    if not found.integration_id:
        tenant = state.tenant.tenant_id
        connection = found.connection_id or "{connection}"
        org = found.org_id or "{org}"
        refs = {k: c for k, c in (("connection", connection_change), ("org", org_change)) if c is not None}
        path = f"/rest/tenants/{tenant}/brokers/connections/{connection}/orgs/{org}/integration"
        plan.changes.append(
            _change(
                broker.account.account_id,
                state.access,
                kind="create",
                action="snyk:CreateIntegration",
                summary=f"Integrate {connection_name(broker)} with its Org (opens the broker's tunnel)",
                http="POST",
                path=path,
                refs=refs,
                version=snyk.BROKER_VERSION,
                body={"data": {"type": CONNECTION_TYPE}},
                on_done=lambda answer: SnykConnection.objects.filter(broker=broker).update(
                    integration_id=answer.data_id
                ),
            )
        )
    return plan


def _connections_path(state: AgentState, broker: BrokerInstance) -> tuple[str, dict[str, SnykChange]]:
    ordinal = state.assignment[broker.pk]
    install_path, refs = state.install_path()
    deployment_id = state.deployment_ids.get(ordinal, "")
    if not deployment_id:
        refs = {**refs, "deployment": state.deployment_changes[ordinal]}
    return f"{install_path}/deployments/{deployment_id or '{deployment}'}/connections", refs


def _plan_connection_itself(
    plan: Plan,
    state: AgentState,
    client: snyk.Client,
    broker: BrokerInstance,
    desired: dict[str, str],
    found: Found,
) -> SnykChange | None:
    path, refs = _connections_path(state, broker)
    name = connection_name(broker)
    ordinal = state.assignment[broker.pk]
    deployment_id = state.deployment_ids.get(ordinal, "")
    live = None
    if deployment_id and state.install_id:
        live = next(
            (
                c
                for c in client.connections(state.install_id, deployment_id)
                if c["attributes"]["name"] == name
            ),
            None,
        )
    attributes = {
        "name": name,
        "deployment_id": deployment_id or "{deployment}",
        "configuration": {"type": CONNECTION_TYPE, "required": desired},
    }
    if live is None:
        change = _change(
            broker.account.account_id,
            state.access,
            kind="create",
            action="snyk:CreateConnection",
            summary=f"ecr connection {name} in deployment {deployment_name(broker.account.agent, ordinal)}",
            after=desired,
            http="POST",
            path=path,
            refs=refs,
            version=snyk.BROKER_VERSION,
            body={"data": {"type": "broker_connection", "attributes": attributes}},
            on_done=lambda answer: SnykConnection.objects.filter(broker=broker).update(
                connection_id=answer.data_id
            ),
        )
        plan.changes.append(change)
        return change
    found.connection_id = live["id"]
    current = (live["attributes"].get("configuration") or {}).get("required") or {}
    if current != desired:
        plan.changes.append(
            _change(
                broker.account.account_id,
                state.access,
                kind="update",
                action="snyk:UpdateConnection",
                summary=f"ecr connection {name}: "
                + ", ".join(k for k in desired if current.get(k) != desired[k]),
                before=current,
                after=desired,
                http="PATCH",
                path=f"{path}/{live['id']}",
                version=snyk.BROKER_VERSION,
                body={"data": {"type": "broker_connection", "attributes": attributes}},
            )
        )
    return None


def _plan_org(
    plan: Plan,
    state: AgentState,
    client: snyk.Client,
    broker: BrokerInstance,
    row: SnykConnection | None,
    found: Found,
) -> SnykChange | None:
    if broker.snyk_org_id:  # the operator's choice: integrated into, never created
        found.org_id = broker.snyk_org_id
        found.org_mapped = True
        return None
    if row is not None and row.org_id:
        found.org_id = row.org_id
        return None
    tenant, name = state.tenant, org_name(broker)
    existing = client.orgs_named(name, tenant.group_id)
    if existing:
        found.org_id = existing[0]["id"]
        return None
    if not tenant.group_id:
        raise SnykPlanError(
            f"No Snyk Org for {connection_name(broker)}: map one, or give the Snyk connection a group "
            "to create Orgs in (snyk_connect --group-id)."
        )
    change = _change(
        broker.account.account_id,
        state.access,
        kind="create",
        action="snyk:CreateOrg",
        summary=f"Snyk Org {name!r} in group {tenant.group_id}",
        after={"name": name, "groupId": tenant.group_id},
        http="POST",
        path="/v1/org",
        body={"name": name, "groupId": tenant.group_id},
        v1=True,
        on_done=lambda answer: SnykConnection.objects.filter(broker=broker).update(org_id=answer.data_id),
    )
    plan.changes.append(change)
    return change


def save_found(broker: BrokerInstance, found: Found) -> None:
    """Ids found by name (no write was needed) are recorded like the ones the writes returned."""
    fields = {k: v for k, v in vars(found).items() if v}
    if fields:
        SnykConnection.objects.filter(broker=broker).update(**fields)


# --- removal: integration and connection before the role ---------------------------------------


def plan_removal(broker: BrokerInstance) -> Plan:
    plan = Plan()
    row = SnykConnection.objects.filter(broker=broker).select_related("deployment__tenant").first()
    if row is None or not row.deployment.deployment_id:
        return plan
    tenant = row.deployment.tenant
    access = access_of(tenant)
    client = snyk.Client(access)
    install = f"/rest/tenants/{tenant.tenant_id}/brokers/installs/{tenant.app_install_id}"
    connections = client.connections(tenant.app_install_id, row.deployment.deployment_id)
    live = next((c for c in connections if c["attributes"]["name"] == connection_name(broker)), None)
    if live is None:
        return plan
    account_id = broker.account.account_id
    for integration in client.integrations(live["id"]):
        org = (integration.get("attributes") or {}).get("org_id", "")
        connection = f"/rest/tenants/{tenant.tenant_id}/brokers/connections/{live['id']}"
        path = f"{connection}/orgs/{org}/integrations/{integration['id']}"
        plan.changes.append(
            _change(
                account_id,
                access,
                kind="delete",
                action="snyk:DeleteIntegration",
                summary=f"Integration of {connection_name(broker)} with Org {org}",
                http="DELETE",
                path=path,
                version=snyk.BROKER_VERSION,
            )
        )
    path = f"{install}/deployments/{row.deployment.deployment_id}/connections/{live['id']}"
    plan.changes.append(
        _change(
            account_id,
            access,
            kind="delete",
            action="snyk:DeleteConnection",
            summary=f"ecr connection {connection_name(broker)}",
            before=live["attributes"]["configuration"],
            http="DELETE",
            path=path,
            version=snyk.BROKER_VERSION,
        )
    )
    plan.notes.append(f"The Snyk Org of {connection_name(broker)} is kept (it holds the scan history).")
    return plan

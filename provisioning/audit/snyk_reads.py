"""What the audit reads of the Snyk side (universal agents): the inventory's expectations (database,
read in the run's thread) and the install's deployments, connections and integrations (Snyk, read
once per run on one of the pool's threads, never one listing per account).

Only universal agents in the audit's scope make this read; with none, Snyk is never called.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from accounts.choices import BrokerStatus, Lifecycle
from accounts.models import (
    AgentIdentity,
    BrokerInstance,
    EcrAccount,
    SnykConnection,
    SnykDeployment,
    SnykTenant,
)

from .. import snyk, snyk_plan


@dataclass(frozen=True)
class ExpectedConnection:
    """One broker (account and region) of a universal agent: the connection the inventory wants."""

    account_id: str
    region: str
    name: str
    agent_name: str
    agent_arn: str
    role_arn: str
    registry: str
    deployment_id: str = ""  # Snyk's id of the deployment the portal placed it in ("": none yet)
    deployment_name: str = ""
    connection_id: str = ""
    org_id: str = ""
    integration_id: str = ""
    # The parameters a sync would give it (snyk_plan.connection_required); None: the inventory lacks one.
    desired: dict[str, str] | None = field(default=None, compare=False, hash=False)


@dataclass
class SnykFacts:
    """What the database says about the Snyk side of the audited universal agents."""

    agents: list[str]  # names of the universal agents in scope
    access: snyk.SnykAccess | None = None
    install_id: str = ""
    problem: str = ""  # why Snyk cannot be read at all ("": it can)
    deployments: dict[str, str] = field(default_factory=dict)  # portal deployment id -> agent name
    deployment_names: dict[str, str] = field(default_factory=dict)  # deployment id -> its name
    agent_arns: dict[str, str] = field(default_factory=dict)  # agent ARN -> name (deployment metadata)
    expected: list[ExpectedConnection] = field(default_factory=list)  # the audited accounts' brokers
    known_ids: set[str] = field(default_factory=set)  # connection ids the portal recorded
    known_names: set[tuple[str, str]] = field(default_factory=set)  # (deployment id, connection name)

    @classmethod
    def of(cls, accounts: list[EcrAccount], agents: list[AgentIdentity]) -> SnykFacts | None:
        """None when no audited agent is universal (then Snyk is not read)."""
        universal = [a for a in agents if a.is_universal]
        if not universal:
            return None
        facts = cls(agents=[a.name for a in universal], agent_arns={a.arn: a.name for a in universal})
        tenant = SnykTenant.current()
        if tenant is None:
            facts.problem = "no Snyk connection is set up (run `manage.py snyk_connect`, see the Snyk page)"
            return facts
        facts.access = snyk_plan.access_of(tenant)
        facts.install_id = tenant.app_install_id  # "": nothing made in Snyk yet
        deployments = SnykDeployment.objects.filter(tenant=tenant, agent__in=universal).select_related(
            "agent"
        )
        for deployment in deployments:
            if deployment.deployment_id:
                facts.deployments[deployment.deployment_id] = deployment.agent.name
                facts.deployment_names[deployment.deployment_id] = deployment.name
        rows = SnykConnection.objects.filter(deployment__in=deployments).select_related(
            "deployment", "broker__account"
        )
        by_broker: dict[int, SnykConnection] = {}
        for row in rows:
            by_broker[row.broker_id] = row
            facts.known_names.add((row.deployment.deployment_id, row.name))
            if row.connection_id:
                facts.known_ids.add(row.connection_id)
        facts.expected = [
            _expected(broker, by_broker.get(broker.pk)) for broker in _audited_brokers(accounts, universal)
        ]
        return facts


def _audited_brokers(accounts: list[EcrAccount], universal: list[AgentIdentity]) -> list[BrokerInstance]:
    """The active brokers of the audited, onboarded accounts of universal agents."""
    ids = {a.pk for a in universal}
    mine = [a for a in accounts if a.agent_id in ids and a.status == Lifecycle.ACTIVE]
    found = BrokerInstance.objects.filter(account__in=mine, status=BrokerStatus.ACTIVE)
    return list(found.select_related("account__agent").order_by("account__account_id", "region"))


def _expected(broker: BrokerInstance, row: SnykConnection | None) -> ExpectedConnection:
    account = broker.account
    placed = {}
    if row is not None:
        placed = {
            "deployment_id": row.deployment.deployment_id,
            "deployment_name": row.deployment.name,
            "connection_id": row.connection_id,
            "org_id": row.org_id,
            "integration_id": row.integration_id,
        }
    ids = [e.value for e in account.external_ids.all()]
    try:
        desired = snyk_plan.connection_required(broker, ids[-1]) if ids else None
    except snyk_plan.SnykPlanError:
        desired = None
    return ExpectedConnection(
        desired=desired,
        account_id=account.account_id,
        region=broker.region,
        name=snyk_plan.connection_name(broker),
        agent_name=account.agent.name,
        agent_arn=account.agent.arn,
        role_arn=account.service_role_arn,
        registry=snyk_plan.registry_host(broker),
        **placed,
    )


@dataclass
class SnykRead:
    """The install's deployments, their connections and those connections' integrations, as Snyk
    has them now (or why they could not be read)."""

    error: str = ""
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)  # the portal's, by id
    connections: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # by deployment id
    integrations: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # by connection id
    listings: int = 0  # list calls made (each followed through its pages)

    @property
    def connection_count(self) -> int:
        return sum(len(c) for c in self.connections.values())


def _is_portals(deployment: dict[str, Any], facts: SnykFacts) -> bool:
    """Recorded by the portal, or made by it for an audited agent (metadata), even if not recorded."""
    metadata = (deployment.get("attributes") or {}).get("metadata") or {}
    return deployment["id"] in facts.deployments or (
        metadata.get("managed-by") == snyk_plan.MANAGED_BY and metadata.get("agent") in facts.agent_arns
    )


def _error(exc: snyk.SnykError) -> str:
    return f"{exc.code}: {exc.message}" + (f" (request id {exc.request_id})" if exc.request_id else "")


def read_snyk_connections(facts: SnykFacts) -> SnykRead:
    """The install's deployments, then each portal deployment's connections (a pool thread: Snyk
    only, no database). Any Snyk error stops the read and says why."""
    result = SnykRead()
    if facts.problem or facts.access is None:
        result.error = facts.problem or "no Snyk connection is set up"
        return result
    if not facts.install_id:
        return result  # no Broker App install yet: no deployment, no connection
    client = snyk.Client(facts.access)
    try:
        result.listings += 1
        for deployment in client.install_deployments(facts.install_id):
            if _is_portals(deployment, facts):
                result.deployments[deployment["id"]] = deployment
        for deployment_id in result.deployments:
            result.listings += 1
            result.connections[deployment_id] = client.connections(facts.install_id, deployment_id)
    except snyk.SnykError as exc:
        result.error = _error(exc)
    return result


@dataclass
class IntegrationsRead:
    """One connection's integrations (Snyk lists them per connection only), or why not."""

    connection_id: str
    integrations: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""


def read_integrations(facts: SnykFacts, connection_id: str) -> IntegrationsRead:
    assert facts.access is not None
    try:
        return IntegrationsRead(connection_id, snyk.Client(facts.access).integrations(connection_id))
    except snyk.SnykError as exc:
        return IntegrationsRead(connection_id, error=_error(exc))


def add_integrations(read: SnykRead, found: IntegrationsRead) -> None:
    read.listings += 1
    read.integrations[found.connection_id] = found.integrations
    if found.error and not read.error:
        read.error = found.error


def connection_ids(read: SnykRead) -> list[str]:
    """The connections whose integrations are to be read (none when the listing failed)."""
    return [] if read.error else [c["id"] for cs in read.connections.values() for c in cs]


def read_snyk(facts: SnykFacts) -> SnykRead:
    """The whole Snyk side in one thread, one listing after the other (the audit run spreads the
    integration listings over its pool instead)."""
    result = read_snyk_connections(facts)
    for connection_id in connection_ids(result):
        add_integrations(result, read_integrations(facts, connection_id))
    return result

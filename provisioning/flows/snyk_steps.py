"""The Snyk side of the flows (agents in universal mode), planned through snyk_plan.py.

Order across both systems: an account's IAM side first (its role trusts the agent with the
ExternalId), then its connection carrying that id and the integration; removal the other way round
(integration and connection before the role). Rotation needs no step of its own: the reconcile run
puts the new id into the trust, then the connection step PATCHes the connection to it; retiring
the old id later changes only the trust.
"""

from __future__ import annotations

from django.conf import settings

from accounts import services as inventory
from accounts.choices import BrokerStatus
from accounts.models import AgentIdentity, BrokerInstance, SnykConnection

from .. import snyk_plan
from ..applier import apply_step
from ..changes import Plan
from ..locks import agent_lock
from ..models import Run
from .base import AccountTarget, Outcomes, Scope, Step, agents_of
from .steps import AccountStep, ForEachAccount


def _brokers(targets: list[AccountTarget], *, connected: bool = False) -> list[BrokerInstance]:
    """The active brokers of these accounts; connected=True: those with a Snyk connection (any status)."""
    found = BrokerInstance.objects.filter(account__in=[t.account for t in targets])
    found = (
        found.filter(snyk_connection__isnull=False) if connected else found.filter(status=BrokerStatus.ACTIVE)
    )
    return list(found.select_related("account__agent").order_by("account__account_id", "region"))


class SnykAgentStep(Step):
    """The agent's Broker App install and deployments exist; each new connection gets its deployment."""

    def __init__(self, agent: AgentIdentity, targets: list[AccountTarget]):
        self.agent = agent
        self.targets = targets
        self.serves = [t.account_id for t in targets]
        self.label = f"agent {agent.name} Snyk deployments"
        self.state: snyk_plan.AgentState | None = None

    def plan(self, scope: Scope) -> Plan:
        try:
            plan, self.state = snyk_plan.plan_agent(self.agent, _brokers(self.targets))
        except snyk_plan.SnykPlanError as exc:
            if not scope.previewing:
                raise
            self.state = None
            return Plan(notes=[str(exc)])
        return plan

    def execute(self, run: Run, scope: Scope, outcomes: Outcomes) -> int:
        # One run at a time places an agent's new connections, so no deployment gets more than its share.
        with agent_lock(self.agent.pk):
            brokers = _brokers(self.targets)
            plan, self.state = snyk_plan.plan_agent(self.agent, brokers)
            writes = apply_step(run, plan, self.label)
            snyk_plan.save_agent(self.agent, brokers, self.state)
        return writes


class SnykAccountStep(AccountStep):
    """Each broker of the account has its `ecr` connection (as IAM trusts it), its Org, the integration.

    An account whose IAM step failed never gets here (ForEachAccount skips it): its trust may not
    hold the id the connection would be given."""

    def __init__(self, target: AccountTarget, agent_step: SnykAgentStep):
        super().__init__(target)
        self.agent_step = agent_step
        self.label = f"account {target.account_id} Snyk connection"
        self.found: dict[int, snyk_plan.Found] = {}

    def plan_account(self, scope: Scope) -> Plan:
        plan = Plan()
        state = self.agent_step.state
        if state is None or not self.target.wanted.external_ids:
            return plan
        # The newest id the run's IAM step has put into the trust (during rotation, the new one).
        external_id = self.target.wanted.external_ids[-1]
        for broker in _brokers([self.target]):
            found = self.found.setdefault(broker.pk, snyk_plan.Found())
            plan.extend(snyk_plan.plan_connection(state, broker, external_id, found))
        return plan

    def done(self, run: Run, scope: Scope) -> None:
        brokers = _brokers([self.target])
        for broker in brokers:
            snyk_plan.save_found(broker, self.found.get(broker.pk, snyk_plan.Found()))
        # Each integrated connection serves its account and region now: the classic broker retires.
        inventory.brokers_retire_classic(brokers, user=run.requested_by)


class SnykRemoveStep(AccountStep):
    """The account's integrations and connections are deleted in Snyk (its Orgs are kept)."""

    def __init__(self, target: AccountTarget):
        super().__init__(target)
        self.label = f"remove {target.account_id} Snyk connection"

    def plan_account(self, scope: Scope) -> Plan:
        plan = Plan()
        for broker in _brokers([self.target], connected=True):
            plan.extend(snyk_plan.plan_removal(broker))
        return plan

    def done(self, run: Run, scope: Scope) -> None:
        SnykConnection.objects.filter(broker__account=self.target.account).delete()


class AppSecretStep(Step):
    """The Broker App install's new client secret: one Snyk write, recorded like every other. It is
    stored encrypted (the change's on_done) and travels back on the in-memory run object only
    (`run.new_client_secret`), to be shown once: never in an Operation, a log line or a task."""

    label = "Broker App client secret"

    def plan(self, scope: Scope) -> Plan:
        return snyk_plan.plan_app_secret(snyk_plan.current_tenant())

    def execute(self, run: Run, scope: Scope, outcomes: Outcomes) -> int:
        writes = apply_step(run, self.plan(scope), self.label)
        run.new_client_secret = snyk_plan.current_tenant().app_client_secret  # type: ignore[attr-defined]  # in memory only
        return writes


def _universal(targets: list[AccountTarget]) -> list[AccountTarget]:
    return [t for t in targets if t.account.agent.is_universal]


def present_steps(targets: list[AccountTarget]) -> list[Step]:
    """After the IAM steps: per universal agent its deployments, then each account's connections."""
    steps: list[Step] = []
    universal = _universal(targets)
    for agent in agents_of(universal):
        mine = [t for t in universal if t.account.agent_id == agent.pk]
        agent_step = SnykAgentStep(agent, mine)
        each = ForEachAccount(
            [SnykAccountStep(t, agent_step) for t in mine], concurrency=settings.RECONCILE_CONCURRENCY
        )
        each.label = f"Snyk connections of {len(mine)} account(s)"
        steps += [agent_step, each]
    return steps


def removal_steps(targets: list[AccountTarget]) -> list[Step]:
    """Before the IAM steps: the connections of accounts that have one go first."""
    with_connection = set(
        SnykConnection.objects.filter(broker__account__in=[t.account for t in targets]).values_list(
            "broker__account_id", flat=True
        )
    )
    mine = [t for t in targets if t.account.pk in with_connection]  # type: ignore[comparison-overlap]
    if not mine:
        return []
    each = ForEachAccount([SnykRemoveStep(t) for t in mine], concurrency=settings.RECONCILE_CONCURRENCY)
    each.label = f"Snyk connections of {len(mine)} account(s) removed"
    return [each]

"""What the audit reads: the database facts of an account, and the live IAM state of accounts and agents.

The reads run on the pool's threads: AWS only, no database.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connections

from accounts.choices import BrokerStatus, Lifecycle
from accounts.models import AgentIdentity, EcrAccount
from accounts.renderers import BrokerFileError, current_external_id

from .. import aws, compare, live, policies
from ..changes import Plan
from .catalogue import Finding
from .documents import ROLE_ARN, Grant, _document, grants_in, statements


@dataclass
class ExternalIdFact:
    value: str
    state: str
    retiring_since: datetime | None


@dataclass
class AccountFacts:
    """What the database says about one account, read before the threads start."""

    account: EcrAccount
    external_ids: list[ExternalIdFact]
    broker_external_id: str  # the id the account's active brokers are configured with ("" if none)

    @classmethod
    def of(cls, account: EcrAccount) -> AccountFacts:
        ids = [ExternalIdFact(e.value, e.state, e.retiring_since) for e in account.external_ids.all()]
        used = ""
        if any(b.status == BrokerStatus.ACTIVE for b in account.brokers.all()):
            try:
                used = current_external_id(account)
            except BrokerFileError:
                used = ""
        return cls(account, ids, used)

    @property
    def removed(self) -> bool:
        return self.account.status == Lifecycle.REMOVED


@dataclass
class AccountRead:
    facts: AccountFacts
    error: str = ""
    role: dict[str, Any] | None = None
    policy: dict[str, Any] | None = None
    read_document: Any = None
    attached: list[str] = field(default_factory=list)
    inline: dict[str, Any] = field(default_factory=dict)
    plan: Plan | None = None
    plan_error: str = ""

    @property
    def trust(self) -> Any:
        return _document(self.role.get("AssumeRolePolicyDocument")) if self.role else None


class GrantIndex:
    """Which grants cover a role ARN, without scanning every grant for every account."""

    def __init__(self, grants: list[Grant]):
        self.exact: dict[str, list[Grant]] = {}
        self.patterns: list[Grant] = []
        for grant in grants:
            if "*" in grant.resource or "?" in grant.resource:
                self.patterns.append(grant)
            else:
                self.exact.setdefault(grant.resource, []).append(grant)

    def covering(self, arn: str) -> list[Grant]:
        return self.exact.get(arn, []) + [g for g in self.patterns if g.covers(arn)]


@dataclass
class AgentRead:
    agent: AgentIdentity
    members: dict[str, str]  # account id -> service role ARN the permissions must list
    error: str = ""
    identity: dict[str, Any] | None = None
    inline: dict[str, Any] = field(default_factory=dict)
    managed: dict[str, Any] = field(default_factory=dict)  # policy ARN -> default version document
    plan: Plan | None = None
    plan_error: str = ""
    desired: policies.AgentPermissions | None = None
    runtime: live.LiveRuntime = field(default_factory=lambda: live.LiveRuntime())
    identity_error: str = ""  # the identity's plan was refused (IRSA: no OIDC provider)
    findings: list[Finding] = field(default_factory=list)
    _indexes: dict[str, GrantIndex] = field(default_factory=dict, repr=False)

    def grants(self, which: str) -> GrantIndex:
        """ "live" or "desired" grants, indexed once per agent."""
        if which not in self._indexes:
            documents = self.live_documents() if which == "live" else self.desired_documents()
            self._indexes[which] = GrantIndex(grants_in(documents))
        return self._indexes[which]

    def live_documents(self) -> dict[str, Any]:
        docs = {f"inline {name}": doc for name, doc in self.inline.items()}
        docs.update({f"managed {arn.rsplit('/', 1)[-1]}": doc for arn, doc in self.managed.items()})
        return docs

    def desired_documents(self) -> dict[str, Any]:
        if self.desired is None:
            return {}
        docs = {f"inline {self.agent.policy_name}": self.desired.inline} if self.desired.inline else {}
        docs.update({f"managed {name}": doc for name, doc in self.desired.managed.items()})
        return docs

    @property
    def live_layout(self) -> str:
        engine_inline = self.inline.get(self.agent.policy_name)
        if engine_inline is not None and self.managed:
            return "mixed"
        if self.managed:
            return policies.LAYOUT_MANAGED
        if engine_inline is None:
            return policies.LAYOUT_NONE
        per_account = all(
            isinstance(st.get("Resource"), str)
            and (m := ROLE_ARN.match(st["Resource"]))
            and st.get("Sid") == policies.sid_for(self.agent.policy_name, m[1])
            for st in statements(engine_inline)
        )
        return policies.LAYOUT_PER_ACCOUNT if per_account else policies.LAYOUT_COMBINED


class _Gauge:
    """How many account reads are in flight at once, and the most there ever were."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current = 0
        self.peak = 0

    def __enter__(self) -> _Gauge:
        with self._lock:
            self.current += 1
            self.peak = max(self.peak, self.current)
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.current -= 1


def _close_thread_connections() -> None:
    """A pool thread never needs the database; close anything a library opened on it anyway."""
    for connection in connections.all(initialized_only=True):
        connection.close()


def read_account(facts: AccountFacts) -> AccountRead:
    """The account's live documents (every one, inline policies included) and the plan that would
    make them match: the same reads and comparison as a reconcile's."""
    account = facts.account
    result = AccountRead(facts)
    wanted = compare.AccountWanted([e.value for e in facts.external_ids], remove=facts.removed)
    try:
        state = live.read_account(account, wanted, full=True)
    except aws.AwsError as exc:
        result.error = f"{exc.code}: {exc.message}"
        return result
    result.role, result.policy, result.read_document = state.role, state.policy, state.read_document
    result.attached, result.inline = state.attached, state.inline
    try:
        result.plan = compare.account_changes(account, wanted, state)
    except policies.LayoutError as exc:
        result.plan_error = str(exc)
    return result


def read_agent(agent: AgentIdentity, members: dict[str, str]) -> AgentRead:
    """The agent's identity and every policy that may grant it sts:AssumeRole, and its plan."""
    result = AgentRead(agent, members)
    try:
        result.desired = policies.agent_permissions(agent.kind, agent.policy_name, members)
    except policies.LayoutError as exc:
        result.plan_error = str(exc)
    try:
        state = live.read_agent_permissions(agent, result.desired, full=True)
        if agent.kind == "role":
            state.instance_profile = live.read_instance_profile(agent)
            state.runtime = live.read_runtime(agent)
    except aws.AwsError as exc:
        result.error = f"{exc.code}: {exc.message}"
        return result
    result.identity = state.identity
    result.runtime = state.runtime
    if state.identity is not None:
        pattern = compare.managed_policy_pattern(agent)
        result.inline = state.inline_all
        result.managed = {
            arn: managed.document
            for arn, managed in state.managed.items()
            if arn in state.attached and pattern.match(arn)
        }
    try:
        plan = compare.agent_identity_changes(agent, state)
    except policies.LayoutError as exc:  # IRSA without its OIDC provider: a finding says so
        plan = Plan()
        result.identity_error = str(exc)
    if result.desired is not None:
        plan.extend(compare.agent_permission_changes(agent, members, result.desired, state))
    result.plan = plan
    return result


def _concurrency() -> int:
    return max(1, int(settings.AUDIT_CONCURRENCY))

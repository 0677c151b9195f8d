"""What a flow is: one ordered list of steps, walked read-only by preview() and for real by execute().

A flow builds its steps from a Scope: the accounts and agents it works on and what each should
become. execute() takes the scope from the run (the inventory already says what is wanted);
a preview takes it from the request not yet made (a draft to onboard, an id to rotate in, an
account to offboard) — `members_added` / `members_removed` say how the agent's accounts will
differ once it is. Both then walk `steps(scope)`: the same steps, the same order, the same
comparisons. There is no second description of any flow's order.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from accounts import services as inventory
from accounts.models import AgentIdentity, EcrAccount

from .. import aws, compare, policies, snyk
from ..applier import ApplyError, apply_step, settle_recovered
from ..changes import Plan
from ..choices import OperationStatus
from ..models import Run, RunChunk

# How a run ends for one account (Run.result["accounts"]).
SUCCEEDED, UNCHANGED, FAILED, NOT_STARTED = "succeeded", "unchanged", "failed", "not started"
# Why an account was not started.
CANCELLED_BEFORE_START = "cancelled before it started"
OVER_TOLERANCE = "not started: more failures than the failure tolerance"


@dataclass
class AccountTarget:
    """One account and what its resources should become."""

    account: EcrAccount
    wanted: compare.AccountWanted
    origin: str = ""  # where a preview's account came from ("row 3"), for its read errors

    @property
    def account_id(self) -> str:
        return self.account.account_id


@dataclass
class Scope:
    """What a flow works on. Built from a run (execute) or from a request still to be made (preview)."""

    accounts: list[AccountTarget] = field(default_factory=list)
    agent: AgentIdentity | None = None
    options: dict[str, Any] = field(default_factory=dict)
    # A preview's inventory change not yet saved: how each agent's member roles will differ.
    members_added: dict[int, dict[str, str]] = field(default_factory=dict)
    members_removed: dict[int, set[str]] = field(default_factory=dict)
    agent_leaving: bool = False  # the agent itself is offboarded (it serves no account any more)
    previewing: bool = False
    # Previews only: the members each agent's permissions were already planned for in this flow.
    planned_members: dict[int, dict[str, str]] = field(default_factory=dict)

    def members(self, agent: AgentIdentity) -> dict[str, str]:
        """Account id -> service role ARN the agent's permissions must list (after the request)."""
        members = inventory.agent_member_arns(agent) if agent.pk else {}
        members.update(self.members_added.get(agent.pk or 0, {}))
        for account_id in self.members_removed.get(agent.pk or 0, set()):
            members.pop(account_id, None)
        return members

    @property
    def removed(self) -> list[AccountTarget]:
        return [t for t in self.accounts if t.wanted.remove]

    @property
    def present(self) -> list[AccountTarget]:
        return [t for t in self.accounts if not t.wanted.remove]


def agents_of(targets: Sequence[AccountTarget]) -> list[AgentIdentity]:
    """The distinct agents of these accounts, in the order they first appear."""
    agents: dict[int | None, AgentIdentity] = {}
    for target in targets:
        agents.setdefault(target.account.agent_id, target.account.agent)
    return list(agents.values())


class Outcomes:
    """Per-account results of one run, kept as the steps finish (from several threads at once)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.status: dict[str, str] = {}
        self.errors: dict[str, str] = {}  # failed: the error; not started: why
        self.exceptions: dict[str, Exception] = {}
        self.writes = 0
        self._unwritten: set[str] = set()  # accounts whose outcome changed since write_to(run)

    def record(self, account_id: str, writes: int) -> None:
        """An account's step went through: with writes it succeeded, without it was already in sync."""
        with self._lock:
            if self.status.get(account_id) != FAILED:
                changed = writes > 0 or self.status.get(account_id) == SUCCEEDED
                self.status[account_id] = SUCCEEDED if changed else UNCHANGED
                self._unwritten.add(account_id)
            self.writes += writes

    def add_writes(self, writes: int) -> None:
        with self._lock:
            self.writes += writes

    def fail(self, account_id: str, error: Exception) -> None:
        with self._lock:
            self.status[account_id] = FAILED
            self.errors[account_id] = str(error)
            self.exceptions[account_id] = error
            self._unwritten.add(account_id)

    def not_started(self, account_id: str, reason: str) -> None:
        with self._lock:
            self.status[account_id] = NOT_STARTED
            self.errors[account_id] = reason
            self._unwritten.add(account_id)

    def merge(self, result: dict[str, Any]) -> None:
        """Add the outcomes another worker recorded for a chunk of this run (`chunk_result`)."""
        with self._lock:
            self.status.update(result.get("accounts", {}))
            self.errors.update(result.get("errors", {}))
            self.writes += int(result.get("writes", 0))

    def chunk_result(self) -> dict[str, Any]:
        return {**self.as_result(), "writes": self.writes}

    def failed(self, account_id: str) -> bool:
        return self.status.get(account_id) == FAILED

    def count(self, outcome: str) -> int:
        return sum(1 for status in self.status.values() if status == outcome)

    def tally(self, total: int) -> str:
        """ "Accounts: 3 succeeded, 1 already in sync, 5 failed, 2 not started (of 11)." """
        parts = [
            f"{self.count(outcome)} {label}"
            for outcome, label in (
                (SUCCEEDED, "succeeded"),
                (UNCHANGED, "already in sync"),
                (FAILED, "failed"),
                (NOT_STARTED, "not started"),
            )
            if self.count(outcome)
        ]
        unreached = total - len(self.status)
        if unreached:
            parts.append(f"{unreached} not reached")
        return f"Accounts: {', '.join(parts)} (of {total})."

    def write_to(self, run: Run) -> None:
        """Merge the outcomes that changed since the last call into `run.result` (Run.merge_result):
        each account's outcome is written about once, however often the run page is refreshed."""
        with self._lock:
            changed, self._unwritten = self._unwritten, set()
            accounts = {a: self.status[a] for a in sorted(changed)}
            errors = {a: self.errors[a] for a in sorted(changed) if a in self.errors}
        run.merge_result(accounts, errors, cleared=[a for a in accounts if a not in errors])

    def as_result(self) -> dict[str, Any]:
        with self._lock:
            return {
                "accounts": dict(sorted(self.status.items())),
                "errors": dict(sorted(self.errors.items())),
            }


class RunFailed(Exception):
    """An expected failure: the run ends "failed" with this explanation."""


# What makes one account (or one step) fail without ending the run: AWS said no, or a quota.
STEP_ERRORS = (ApplyError, aws.AwsError, snyk.SnykError, policies.LayoutError)


class Step(ABC):
    """One step of a flow: plan() reads and compares (never writes); the runner applies that plan."""

    label: str
    # The accounts this step's writes serve: when it fails they fail; when they all failed it is skipped.
    # None: the run cannot go on without it, so its failure ends the run.
    serves: list[str] | None = None

    @abstractmethod
    def plan(self, scope: Scope) -> Plan: ...

    def execute(self, run: Run, scope: Scope, outcomes: Outcomes) -> int:
        """Apply the step in a run; the number of writes. Steps that coordinate (locks) override it."""
        writes = apply_step(run, self.plan(scope), self.label)
        self.done(run, scope)
        return writes

    def done(self, run: Run, scope: Scope) -> None:  # noqa: B027  optional hook, most steps keep none
        """The inventory's bookkeeping once the step's writes are made (no AWS call)."""

    def substeps(self) -> list[Step]:
        """The steps that plan and apply (and so label operations): itself, or those it fans out to."""
        return [self]


class AccountFanOut(Step):
    """Marks a step that records each account's writes in the outcomes itself (ForEachAccount)."""


class Flow(ABC):
    """A run kind: its steps in order, and how a run of it ends."""

    kinds: ClassVar[tuple[str, ...]]
    # Its fan-outs may be split over the worker pool (flows/chunks.py): any worker can build its
    # scope and steps again from the run alone (scope_of reads the inventory, nothing else).
    spreads: ClassVar[bool] = False

    @abstractmethod
    def scope_of(self, run: Run) -> Scope:
        """The scope of a run, from the inventory as it is now."""

    @abstractmethod
    def steps(self, scope: Scope) -> list[Step]:
        """The one ordered list of steps of this flow."""

    @abstractmethod
    def summarize(self, run: Run, scope: Scope, outcomes: Outcomes) -> tuple[str, str]:
        """(status, explanation) once every step has run."""

    def preview(self, scope: Scope) -> Plan:
        """Every change the flow would make now, in order, read-only."""
        scope.previewing = True
        plan = Plan()
        for step in self.steps(scope):
            plan.extend(step.plan(scope))
        return plan

    def execute(self, run: Run) -> tuple[str, str]:
        """Walk the same steps and apply them; each account's outcome lands in `run.result`."""
        return self.execute_scope(run, self.scope_of(run))

    def execute_scope(self, run: Run, scope: Scope) -> tuple[str, str]:
        outcomes = Outcomes()
        try:
            steps = self.steps(scope)
            recover_started_operations(run, scope, steps)
            for step in steps:
                self._execute_step(run, scope, outcomes, step)
            return self.summarize(run, scope, outcomes)
        except STEP_ERRORS as exc:
            if len(scope.accounts) < 2 or not outcomes.status:
                raise
            # A step every account needed failed (the agent's permissions, say): say so, and how far
            # each account got, rather than one error for a run that did most of its work.
            raise RunFailed(f"{exc}\n{outcomes.tally(len(scope.accounts))}") from exc
        finally:
            if scope.accounts:
                outcomes.write_to(run)

    @staticmethod
    def _execute_step(run: Run, scope: Scope, outcomes: Outcomes, step: Step) -> None:
        serves = step.serves
        if serves and all(outcomes.status.get(a) in (FAILED, NOT_STARTED) for a in serves):
            return  # every account it would write for has failed
        try:
            writes = step.execute(run, scope, outcomes)
        except STEP_ERRORS as exc:
            if serves is None:
                raise
            run.log(f"{step.label} failed: {exc}", level="ERROR")
            for account_id in serves:
                if outcomes.status.get(account_id) not in (FAILED, NOT_STARTED):
                    outcomes.fail(account_id, exc)
            return
        if not isinstance(step, AccountFanOut):
            outcomes.add_writes(writes)


def recover_started_operations(
    run: Run, scope: Scope, steps: list[Step], chunk: RunChunk | None = None
) -> None:
    """Settle the writes an earlier attempt of this run left started (its worker died mid-call).

    Before this attempt writes anything, each such operation's step is planned again, the way every
    step plans (live reads, then the comparison), and the operation is marked applied or not
    applied from that plan (applier.settle_recovered). A step that can no longer be planned (the
    account left the run, AWS refuses the read) leaves its operation started, and says so in the log;
    the run's own walk of that step then fails or succeeds as it would have anyway.

    The accounts of a chunked fan-out are another worker's: only the attempt that takes their chunk
    over settles them (`chunk`: only its steps), never the run's own attempt.
    """
    started = list(run.operations.filter(status=OperationStatus.STARTED).order_by("sequence"))
    if not started:
        return
    if chunk is not None:
        mine = set(chunk.steps)
        started = [o for o in started if o.step in mine]
    else:
        chunked = {label for labels in run.chunks.values_list("steps", flat=True) for label in labels}
        started = [o for o in started if o.step not in chunked]
    attempt = chunk.attempts if chunk is not None else run.attempts
    by_label = {sub.label: sub for step in steps for sub in step.substeps()}
    plans: dict[str, Plan] = {}
    for operation in started:
        step = by_label.get(operation.step)
        try:
            if step is None:
                raise LookupError(f"no step {operation.step!r} in this run any more")
            if step.label not in plans:
                plans[step.label] = step.plan(scope)
        except (*STEP_ERRORS, LookupError) as exc:
            run.log(f"operation {operation.sequence} ({operation.action}) left started: {exc}", level="ERROR")
            continue
        status = settle_recovered(operation, plans[step.label], attempt)
        run.log(
            f"operation {operation.sequence} ({operation.action} on {operation.resource_arn}), in flight "
            f"when the worker stopped: {OperationStatus(status).label.lower()}"
        )

"""The steps flows are made of. Each plans through planner.py (read, then compare) and, in a run,
applies that very plan; what the inventory records afterwards is in `done` (no AWS call there)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from django.db import IntegrityError, close_old_connections, transaction
from django.utils import timezone
from django.utils.translation import ngettext

from accounts import services as inventory
from accounts.choices import BrokerStatus, Lifecycle
from accounts.models import AgentIdentity, EcrAccount, ExternalId
from portal import audit
from portal.text import counted

from .. import aws, planner
from ..applier import apply_expecting_absent, apply_step
from ..changes import Plan
from ..locks import agent_lock
from ..models import Run, RunLock
from ..organizations import SyncPlan
from . import chunks
from .base import (
    CANCELLED_BEFORE_START,
    FAILED,
    NOT_STARTED,
    OVER_TOLERANCE,
    STEP_ERRORS,
    AccountFanOut,
    AccountTarget,
    Outcomes,
    RunFailed,
    Scope,
    Step,
)

PREVIEW_READ_CONCURRENCY = 8
RESULT_FLUSH_SECONDS = 1.0
CANCEL_CHECK_SECONDS = 0.5


class AgentIdentityStep(Step):
    """The agent's role (the trust of its runtime; instance profile on EC2, OIDC provider or Pod Identity
    association on EKS) or user exists."""

    def __init__(self, agent: AgentIdentity):
        self.agent = agent
        self.label = f"agent {agent.name}"

    def plan(self, scope: Scope) -> Plan:
        return planner.plan_agent_identity(self.agent)

    def done(self, run: Run, scope: Scope) -> None:
        if self.agent.status != Lifecycle.ACTIVE:
            AgentIdentity.objects.filter(pk=self.agent.pk).update(status=Lifecycle.ACTIVE)
            self.agent.status = Lifecycle.ACTIVE


class AccessKeyStep(Step):
    """A new access key for a user agent. The key travels back on the in-memory run object only
    (`run.new_access_key`), to be shown once: never in a row, a log line or a task argument."""

    def __init__(self, agent: AgentIdentity):
        self.agent = agent
        self.label = f"agent {agent.name} access key"

    def plan(self, scope: Scope) -> Plan:
        return planner.plan_access_key(self.agent)

    def execute(self, run: Run, scope: Scope, outcomes: Outcomes) -> int:
        plan = self.plan(scope)
        writes = apply_step(run, plan, self.label)
        key = (plan.changes[0].answer or {})["AccessKey"]
        run.new_access_key = {"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}  # type: ignore[attr-defined]  # in memory only
        return writes


class AgentPermissionsStep(Step):
    """The agent may assume exactly its accounts' service roles, written whole from the inventory.

    In a run it is written under a per-agent lock, once for any number of waiting runs: with
    check_live=False (onboarding, offboarding) it is skipped when another run already wrote a
    generation that includes this run's change; check_live=True (reconcile) always compares with IAM.
    `bump` first marks the permissions as needing a write (a bulk run's accounts joined).
    """

    def __init__(
        self, agent: AgentIdentity, *, check_live: bool, serves: list[str] | None = None, bump: bool = False
    ):
        self.agent = agent
        self.check_live = check_live
        self.serves = serves
        self.bump = bump
        self.label = f"agent {agent.name} permissions"
        self._read_ahead: tuple[dict[str, str], int, Future[Plan]] | None = None

    def read_ahead(self, scope: Scope) -> None:
        """Plan now, on a thread, while the accounts run (ReadAheadStep): the agent's session and live
        permissions are read then, and the end of the run is left only the write. Used only when no
        other run wrote the permissions meanwhile and the members are still these (else planned again)."""
        members = scope.members(self.agent)
        generation = AgentIdentity.objects.values_list("synced_generation", flat=True).get(pk=self.agent.pk)
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead")
        self._read_ahead = (
            members,
            generation,
            pool.submit(planner.plan_agent_permissions, self.agent, members),
        )
        pool.shutdown(wait=False)

    def _plan_read_ahead(self, scope: Scope) -> Plan | None:
        if self._read_ahead is None:
            return None
        members, generation, future = self._read_ahead
        self._read_ahead = None
        try:
            plan = future.result()
        except STEP_ERRORS:
            return None  # planned again, now: its error is the run's
        if self.agent.synced_generation != generation or scope.members(self.agent) != members:
            return None
        return plan

    def plan(self, scope: Scope) -> Plan:
        members = scope.members(self.agent)
        if scope.previewing:
            # An earlier step of this preview already brings the permissions to these members.
            if scope.planned_members.get(self.agent.pk or 0) == members:
                return Plan()
            scope.planned_members[self.agent.pk or 0] = members
        return planner.plan_agent_permissions(self.agent, members)

    def execute(self, run: Run, scope: Scope, outcomes: Outcomes) -> int:
        agent_id = self.agent.pk
        if self.bump:
            self.agent.bump_policy_generation()
        wanted = AgentIdentity.objects.values_list("policy_generation", flat=True).get(pk=agent_id)
        with agent_lock(agent_id):
            self.agent = AgentIdentity.objects.get(pk=agent_id)
            if not self.check_live and self.agent.synced_generation >= wanted:
                run.log(f"agent {self.agent.name}: permissions already written by another run (coalesced)")
                return 0
            generation = self.agent.policy_generation  # read before the members: a later bump is not covered
            plan = self._plan_read_ahead(scope) or self.plan(scope)
            writes = apply_step(run, plan, f"{self.label} ({plan.layout})", step=self.label)
            AgentIdentity.objects.filter(pk=agent_id, synced_generation__lt=generation).update(
                synced_generation=generation
            )
            AgentIdentity.objects.filter(pk=agent_id).update(layout=plan.layout)
        return writes


class ReadAheadStep(Step):
    """Starts a later AgentPermissionsStep's reads at the start of a run (nothing to preview or write)."""

    serves: list[str] | None = []  # nothing fails with it: the step it reads for plans again

    def __init__(self, step: AgentPermissionsStep):
        self.step = step
        self.label = f"{step.label} (read ahead)"

    def plan(self, scope: Scope) -> Plan:
        return Plan()

    def execute(self, run: Run, scope: Scope, outcomes: Outcomes) -> int:
        if not scope.previewing and self.step.agent.status == Lifecycle.ACTIVE:
            self.step.read_ahead(scope)
        return 0


class AccountStep(Step):
    """A step on one account's own resources (run for many accounts at once by ForEachAccount)."""

    # It plans and applies from its own target alone (no other step's state in memory): a fan-out
    # of such steps may be split over the worker pool (flows/chunks.py).
    spreads = False

    def __init__(self, target: AccountTarget):
        self.target = target
        self.serves = [target.account_id]

    def plan(self, scope: Scope) -> Plan:
        try:
            return self.plan_account(scope)
        except aws.AwsError as exc:
            if not self.target.origin:
                raise
            # Say which of a file's accounts could not be read.
            raise aws.AwsError(
                exc.code,
                f"{self.target.origin}, account {self.target.account_id}: {exc.message}",
                request_id=exc.request_id,
                operation=exc.operation,
            ) from None

    def plan_account(self, scope: Scope) -> Plan:
        raise NotImplementedError


class ReconcileAccountStep(AccountStep):
    """The read-only policy, the service role trusting the agent with the desired ExternalIds, attached."""

    spreads = True

    def __init__(self, target: AccountTarget):
        super().__init__(target)
        self.label = f"account {target.account_id}"

    def plan_account(self, scope: Scope) -> Plan:
        return planner.plan_account(self.target.account, self.target.wanted.external_ids)

    def execute(self, run: Run, scope: Scope, outcomes: Outcomes) -> int:
        """An account new to the portal is created without reading first (its preview saw nothing);
        what exists after all is read, compared and adopted (apply_expecting_absent)."""
        if not self.expects_absent(run, scope):
            return super().execute(run, scope, outcomes)
        account, ids = self.target.account, self.target.wanted.external_ids
        plan = planner.plan_new_account(account, ids)
        writes = apply_expecting_absent(run, plan, self.label, lambda: self.plan(scope), step=self.label)
        self.done(run, scope)
        return writes

    def expects_absent(self, run: Run, scope: Scope) -> bool:
        """Never onboarded (a draft, or onboarding for the first time, nothing adopted), in the first
        attempt of the run and of its chunk (one taking over from a dead worker reads what that
        worker made), and, when the run was confirmed from a preview, one whose resources that
        preview saw absent."""
        account = self.target.account
        previewed_absent = scope.options.get("previewed_absent")
        chunk = getattr(run, "plan_chunk", None)  # the chunk this worker took (flows/chunks.py)
        return (
            run.attempts <= 1
            and (chunk is None or chunk.attempts <= 1)
            and account.status in (Lifecycle.DRAFT, Lifecycle.PENDING)
            and not (account.role_adopted or account.policy_adopted)
            and (previewed_absent is None or account.account_id in previewed_absent)
        )

    def done(self, run: Run, scope: Scope) -> None:
        # The trust now accepts every desired id: broker files may switch to the newest one.
        ExternalId.objects.filter(
            account=self.target.account, value__in=self.target.wanted.external_ids, applied_at__isnull=True
        ).update(applied_at=timezone.now())


class RemoveAccountStep(AccountStep):
    """The account's role and policy are deleted (only what the portal may delete); brokers retire."""

    spreads = True

    def __init__(self, target: AccountTarget, *, retire_brokers: bool = False):
        super().__init__(target)
        self.retire_brokers = retire_brokers
        self.label = f"remove {target.account_id}"

    def plan_account(self, scope: Scope) -> Plan:
        wanted = self.target.wanted
        plan = planner.plan_account(
            self.target.account, [], remove=True, delete_adopted=wanted.delete_adopted
        )
        if self.retire_brokers:
            regions = [b.region for b in self.target.account.brokers.all() if b.status == BrokerStatus.ACTIVE]
            if regions:
                plan.notes.append(
                    ngettext(
                        "Broker %(regions)s is retired: its files are no longer served. Stop it.",
                        "Brokers %(regions)s are retired: their files are no longer served. Stop them.",
                        len(regions),
                    )
                    % {"regions": ", ".join(regions)}
                )
        return plan

    def done(self, run: Run, scope: Scope) -> None:
        if self.retire_brokers:
            self.target.account.brokers.update(status=BrokerStatus.RETIRED)


class ForEachAccount(AccountFanOut):
    """One step per account, `concurrency` at a time; a failed account never stops the others.

    `tolerance` (bulk runs, StackSets' strict failure tolerance): never more in flight than failures
    still tolerated (`tolerance + 1 - failures`), so at most tolerance+1 accounts fail; after more
    than `tolerance` failures no new account starts. A cancelled run starts no new account.
    In a worker, a fan-out of more than RUN_CHUNK_SIZE accounts is split into chunks that every
    worker of the pool takes (chunks.py), each at this concurrency.
    """

    def __init__(
        self,
        steps: Sequence[AccountStep],
        *,
        concurrency: int,
        tolerance: int | None = None,
        preview_concurrency: int = 1,
        log_each: bool = False,
    ):
        self.account_steps = steps
        self.concurrency = max(1, min(concurrency, len(steps) or 1))
        self.tolerance = tolerance
        self.preview_concurrency = preview_concurrency
        self.log_each = log_each
        self.serves = [s.target.account_id for s in steps]
        self.label = counted(len(steps), "account", "accounts")
        self.cancelled = False
        self.cancel_checked = -CANCEL_CHECK_SECONDS  # the first account reads it
        # Where the accounts' outcomes go while it runs: the run's result, or its chunk's row.
        self.publish: Callable[[Run, Outcomes], None] = _publish_in_run

    def part(
        self, steps: Sequence[AccountStep], *, publish: Callable[[Run, Outcomes], None], concurrency: int
    ) -> ForEachAccount:
        """The same fan-out over some of its accounts (one chunk), publishing elsewhere."""
        each = ForEachAccount(steps, concurrency=concurrency, log_each=self.log_each)
        each.publish = publish
        return each

    def plan(self, scope: Scope) -> Plan:
        plan = Plan()
        if self.preview_concurrency > 1 and len(self.account_steps) > 1:
            with ThreadPoolExecutor(max_workers=self.preview_concurrency) as pool:
                plans = list(pool.map(lambda step: step.plan(scope), self.account_steps))
        else:
            plans = [step.plan(scope) for step in self.account_steps]
        for account_plan in plans:
            plan.extend(account_plan)
        return plan

    def execute(self, run: Run, scope: Scope, outcomes: Outcomes) -> int:
        if chunks.spreads(run, self):
            return chunks.execute_spread(self, run, scope, outcomes)
        writes_before = outcomes.writes
        fanout = _FanOut(self, run, scope, outcomes)
        if self.concurrency == 1:  # in this thread: in-process callers and tests see a plain loop
            fanout.run_here()
        else:
            fanout.run_pooled()
        for step in fanout.waiting:
            reason = CANCELLED_BEFORE_START if self.cancelled else OVER_TOLERANCE
            outcomes.not_started(step.target.account_id, reason)
        self.publish(run, outcomes)
        return outcomes.writes - writes_before

    def substeps(self) -> list[Step]:
        return list(self.account_steps)

    def stopped(self, run: Run) -> bool:
        """Cancelled? Read at most every CANCEL_CHECK_SECONDS, not once per account started."""
        now = time.monotonic()
        if not self.cancelled and now - self.cancel_checked >= CANCEL_CHECK_SECONDS:
            self.cancel_checked = now
            self.cancelled = Run.objects.filter(pk=run.pk, cancel_requested=True).exists()
        return self.cancelled

    def run_one(self, run: Run, scope: Scope, outcomes: Outcomes, step: AccountStep) -> None:
        account_id = step.target.account_id
        if outcomes.failed(account_id):
            return  # an earlier step of this account failed: the run stops there for it
        try:
            outcomes.record(account_id, step.execute(run, scope, outcomes))
        except STEP_ERRORS as exc:
            outcomes.fail(account_id, exc)
            run.log(f"account {account_id} failed: {exc}", level="ERROR")

    def run_threaded(self, run: Run, scope: Scope, outcomes: Outcomes, step: AccountStep) -> None:
        close_old_connections()
        try:
            self.run_one(run, scope, outcomes, step)
        finally:
            close_old_connections()


class _FanOut:
    """One ForEachAccount in a run: which accounts wait, which run, when the next may start."""

    def __init__(self, each: ForEachAccount, run: Run, scope: Scope, outcomes: Outcomes):
        self.each, self.run, self.scope, self.outcomes = each, run, scope, outcomes
        self.waiting = list(each.account_steps)
        self.running: dict[Future[None], AccountStep] = {}
        self.flushed = time.monotonic()

    def may_start(self) -> bool:
        each, in_flight = self.each, len(self.running)
        if not self.waiting or each.stopped(self.run):
            return False
        if each.tolerance is None:
            return in_flight < each.concurrency
        failures = sum(1 for s in each.account_steps if self.outcomes.failed(s.target.account_id))
        return failures <= each.tolerance and in_flight < min(each.concurrency, each.tolerance + 1 - failures)

    def run_here(self) -> None:
        while self.may_start():
            step = self.waiting.pop(0)
            self.each.run_one(self.run, self.scope, self.outcomes, step)
            self.finished(step)

    def run_pooled(self) -> None:
        each = self.each
        with ThreadPoolExecutor(max_workers=each.concurrency, thread_name_prefix=f"run{self.run.pk}") as pool:
            while True:
                while self.may_start():
                    step = self.waiting.pop(0)
                    future = pool.submit(each.run_threaded, self.run, self.scope, self.outcomes, step)
                    self.running[future] = step
                if not self.running:
                    return
                done_now, _ = wait(self.running, return_when=FIRST_COMPLETED)
                for future in done_now:
                    step = self.running.pop(future)
                    future.result()  # an unexpected error ends the run as errored
                    self.finished(step)

    def finished(self, step: AccountStep) -> None:
        """Log the account's outcome (bulk runs) and keep `run.result` fresh for the run page."""
        total = len(self.each.account_steps)
        if self.each.log_each:
            done = total - len(self.waiting) - len(self.running)
            status = self.outcomes.status[step.target.account_id]
            self.run.note(f"account {step.target.account_id}: {status} ({done} of {total} done)")
        if time.monotonic() - self.flushed >= RESULT_FLUSH_SECONDS:
            self.each.publish(self.run, self.outcomes)  # only the accounts finished since the last time
            self.flushed = time.monotonic()


def _publish_in_run(run: Run, outcomes: Outcomes) -> None:
    outcomes.write_to(run)


class AccountStatuses(Step):
    """The inventory learns how the accounts went (no AWS call, nothing to preview).

    failed: accounts still pending (or draft) whose step failed or never started become "failed";
    they stay members of the agent's permissions, so a retry converges without flapping.
    active: accounts that succeeded (or were already in sync) become "active".
    """

    def __init__(self, targets: list[AccountTarget], *, failed: bool = False, active: bool = False):
        self.targets = targets
        self.mark_failed = failed
        self.mark_active = active
        self.label = "account statuses"

    def plan(self, scope: Scope) -> Plan:
        return Plan()

    def execute(self, run: Run, scope: Scope, outcomes: Outcomes) -> int:
        for target in self.targets:
            account, status = target.account, outcomes.status.get(target.account_id, NOT_STARTED)
            if (
                self.mark_failed
                and status in (FAILED, NOT_STARTED)
                and account.status
                in (
                    Lifecycle.PENDING,
                    Lifecycle.DRAFT,
                )
            ):
                EcrAccount.objects.filter(pk=account.pk).update(
                    status=Lifecycle.FAILED, updated_at=timezone.now()
                )
                account.status = Lifecycle.FAILED
        if self.mark_active:
            done = [
                t.account
                for t in self.targets
                if outcomes.status.get(t.account_id) not in (FAILED, NOT_STARTED)
                and t.account.status != Lifecycle.ACTIVE
            ]
            EcrAccount.objects.filter(pk__in=[a.pk for a in done]).update(
                status=Lifecycle.ACTIVE, updated_at=timezone.now()
            )
            for account in done:
                account.status = Lifecycle.ACTIVE
        return 0


class SyncInventoryStep(Step):
    """An organization sync's inventory change, before any AWS write (no AWS call, nothing to preview).

    New accounts are saved (pending, remembering the organization and rule that onboard them);
    leaving accounts are marked removed. Both join the run (its accounts and their run locks), and
    each agent concerned must write its permissions again.
    """

    label = "organization inventory"

    def __init__(self, sync: SyncPlan):
        self.sync = sync

    def plan(self, scope: Scope) -> Plan:
        return Plan()

    def execute(self, run: Run, scope: Scope, outcomes: Outcomes) -> int:
        sync, accounts = self.sync, []
        try:
            with transaction.atomic():
                for agent_id, rows in sync.onboard.items():
                    for row in rows:
                        row.account.status = Lifecycle.PENDING
                        accounts.append(inventory.account_save(row.account, row.external_id, row.brokers))
                    sync.agents[agent_id].bump_policy_generation()
                for account in sync.offboard:
                    was_member = account.status in inventory.MEMBER_STATUSES
                    EcrAccount.objects.filter(pk=account.pk).update(
                        status=Lifecycle.REMOVED, updated_at=timezone.now()
                    )
                    account.status = Lifecycle.REMOVED
                    if was_member:
                        account.agent.bump_policy_generation()
                    audit.record(
                        user=None,
                        action="account.offboard",
                        account_id=account.account_id,
                        obj=account,
                        by="organization sync",
                    )
                    accounts.append(account)
                run.accounts.add(*accounts)
                Run.objects.filter(pk=run.pk).update(targets=[a.account_id for a in accounts])
                RunLock.objects.bulk_create([RunLock(key=f"account:{a.pk}", run=run) for a in accounts])
        except IntegrityError:
            raise RunFailed("Another run works on one of these accounts: the next sync retries.") from None
        return 0

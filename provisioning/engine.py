"""The reconcile engine: takes a claimed Run through plan -> apply -> recorded outcome.

Every flow is the same loop over accounts: read live state, plan against the database's desired
state, apply, record. Onboarding, reconcile and rotation make an account's resources match and
then the agent's permissions; offboarding does the reverse order (the agent loses the permission
before the role disappears). The agent's permissions are written whole from the database under a
per-agent lock; a run whose change another run already wrote skips its write (coalescing).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from django.conf import settings
from django.db import close_old_connections
from django.db.models import F
from django.utils import timezone

from accounts.choices import BrokerStatus, Lifecycle
from accounts.models import AgentIdentity, EcrAccount, ExternalId

from . import audit, aws, planner, policies, services
from .applier import ApplyError, RunLost, apply_plan
from .choices import RunKind, RunStatus
from .locks import agent_lock
from .models import Run

log = logging.getLogger(__name__)


class RunFailed(Exception):
    """An expected failure: the run ends "failed" with this explanation."""


def execute(run: Run) -> Run:
    """Execute a run this process has claimed, always leaving it in a terminal state."""
    handler = HANDLERS[run.kind]
    try:
        status, explanation = handler(run)
        _flush_plan(run)
        run.finish(status, explanation=explanation)
    except RunLost as exc:  # the run belongs to another worker now; it records the outcome
        log.warning("%s", exc)
    except (ApplyError, RunFailed, policies.LayoutError, aws.AwsError) as exc:
        run.log(str(exc), level="ERROR")
        _flush_plan(run)
        run.finish(RunStatus.FAILED, explanation=str(exc))
    except Exception as exc:  # errored: keep the traceback for the run page
        log.exception("run %s errored", run.pk)
        _flush_plan(run)
        run.finish(RunStatus.ERRORED, explanation=f"Unexpected error: {exc}", error=traceback.format_exc())
    return run


_plan_lock = threading.Lock()  # bulk runs record steps from several threads: no step may be lost


PLAN_FLUSH_SECONDS = 2.0


def _record_plan(run: Run, plan: planner.Plan, label: str) -> None:
    """Append a planned step to the run's plan and grow its progress total.

    The plan JSON is rewritten at most every PLAN_FLUSH_SECONDS (and at the end): rewriting it per
    step made a bulk run's storage grow with the square of its size.
    """
    with _plan_lock:
        stored = run.plan or {"steps": []}
        stored.setdefault("steps", []).append({"label": label, **plan.to_dict()})
        run.plan = stored
        fields = {"progress_total": F("progress_total") + len(plan.changes)}
        now = time.monotonic()
        if now - getattr(run, "_plan_flushed", 0.0) >= PLAN_FLUSH_SECONDS:
            fields["plan"] = stored
            run._plan_flushed = now
        Run.objects.filter(pk=run.pk).update(**fields)
    for note in plan.notes:
        run.log(note)


def _flush_plan(run: Run) -> None:
    with _plan_lock:
        Run.objects.filter(pk=run.pk).update(plan=run.plan)


def _apply(run: Run, plan: planner.Plan, label: str) -> int:
    _record_plan(run, plan, label)
    if plan.is_empty:
        run.log(f"{label}: in sync, nothing to change")
        return 0
    run.log(f"{label}: applying {len(plan.changes)} change(s)")
    return len(apply_plan(run, plan))


# --- steps -----------------------------------------------------------------------------------


def ensure_agent_identity(run: Run, agent: AgentIdentity) -> int:
    writes = _apply(run, planner.plan_agent_identity(agent), f"agent {agent.name}")
    if agent.status != Lifecycle.ACTIVE:
        AgentIdentity.objects.filter(pk=agent.pk).update(status=Lifecycle.ACTIVE)
        agent.status = Lifecycle.ACTIVE
    return writes


def sync_agent_permissions(run: Run, agent_id: int, *, check_live: bool = False) -> int:
    """Write the agent's permissions whole from the database, once for any number of waiting runs.

    check_live=False (onboarding, offboarding): skip when another run has already written a
    generation that includes this run's change. check_live=True (reconcile): always compare with IAM.
    """
    wanted = AgentIdentity.objects.values_list("policy_generation", flat=True).get(pk=agent_id)
    with agent_lock(agent_id):
        agent = AgentIdentity.objects.get(pk=agent_id)
        if not check_live and agent.synced_generation >= wanted:
            run.log(f"agent {agent.name}: permissions already written by another run (coalesced)")
            return 0
        generation = agent.policy_generation  # read before the members: a later bump is not covered
        plan = planner.plan_agent_permissions(agent, services.agent_member_arns(agent))
        writes = _apply(run, plan, f"agent {agent.name} permissions ({plan.layout})")
        AgentIdentity.objects.filter(pk=agent_id, synced_generation__lt=generation).update(
            synced_generation=generation
        )
        AgentIdentity.objects.filter(pk=agent_id).update(layout=plan.layout)
    return writes


def reconcile_account_resources(run: Run, account: EcrAccount) -> int:
    ids = services.desired_external_ids(account)
    writes = _apply(run, planner.plan_account(account, ids), f"account {account.account_id}")
    # The trust now accepts every desired id: broker files may switch to the newest one.
    ExternalId.objects.filter(account=account, value__in=ids, applied_at__isnull=True).update(
        applied_at=timezone.now()
    )
    return writes


def remove_account_resources(run: Run, account: EcrAccount) -> int:
    # Adopted resources (made by hand before the portal) go only in an offboarding the operator
    # confirmed for them; a reconcile of a removed account leaves them.
    delete_adopted = run.kind == RunKind.OFFBOARD and bool(run.options.get("confirm_adopted"))
    plan = planner.plan_account(account, [], remove=True, delete_adopted=delete_adopted)
    return _apply(run, plan, f"remove {account.account_id}")


def _set_status(account: EcrAccount, status: str) -> None:
    EcrAccount.objects.filter(pk=account.pk).update(status=status, updated_at=timezone.now())
    account.status = status


# --- handlers: run -> (status, explanation) --------------------------------------------------


def _handle_agent(run: Run) -> tuple[str, str]:
    agent = run.agent
    if agent is None:
        raise RunFailed("The agent of this run no longer exists.")
    writes = ensure_agent_identity(run, agent)
    writes += sync_agent_permissions(run, agent.pk, check_live=True)
    return RunStatus.SUCCEEDED, f"Agent {agent.name} is set up ({writes} write(s))."


def _account_failed(account: EcrAccount) -> None:
    if account.status in (Lifecycle.PENDING, Lifecycle.DRAFT):
        _set_status(account, Lifecycle.FAILED)


def _for_each(run: Run, accounts: list[EcrAccount], step: Callable[[EcrAccount], int], failures: dict) -> int:
    """Apply `step` to every account, RECONCILE_CONCURRENCY at a time; record failures, keep going.

    With one account (or concurrency 1) it runs in this thread, so in-process callers and tests
    see exactly the sequential engine.
    """
    concurrency = min(settings.RECONCILE_CONCURRENCY, len(accounts))

    def one(account: EcrAccount) -> int:
        if Run.objects.filter(pk=run.pk, cancel_requested=True).exists():
            failures[account.account_id] = "cancelled before it started"
            return 0
        try:
            return step(account)
        except (ApplyError, aws.AwsError, policies.LayoutError) as exc:
            failures[account.account_id] = exc
            run.log(f"account {account.account_id} failed: {exc}", level="ERROR")
            return 0

    if concurrency <= 1:
        return sum(one(account) for account in accounts)

    def threaded(account: EcrAccount) -> int:
        close_old_connections()
        try:
            return one(account)
        finally:
            close_old_connections()

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"run{run.pk}") as pool:
        return sum(pool.map(threaded, accounts))


def _outcome(run: Run, accounts: list[EcrAccount], failures: dict, writes: int, verb: str) -> tuple[str, str]:
    if not failures:
        return RunStatus.SUCCEEDED, f"{len(accounts)} account(s) {verb} ({writes} write(s))."
    if len(accounts) == 1:
        error = next(iter(failures.values()))
        if isinstance(error, Exception):
            raise error
        return RunStatus.CANCELLED, f"Cancelled: {error}."
    if all(isinstance(e, str) for e in failures.values()):
        return RunStatus.CANCELLED, f"Cancelled after {writes} write(s)."
    lines = "\n".join(f"{account_id}: {error}" for account_id, error in sorted(failures.items()))
    status = RunStatus.FAILED if len(failures) == len(accounts) else RunStatus.PARTIAL
    return status, f"{len(failures)} of {len(accounts)} account(s) failed:\n{lines}"


def _handle_accounts(run: Run) -> tuple[str, str]:
    """Onboard, reconcile or rotate: resources of many accounts concurrently, each agent's permissions once.

    Removed accounts go first and the other way round: the agent loses sts:AssumeRole on a role
    before the role is deleted. For present accounts the roles exist before the agent may assume
    them. Reconcile and rotation compare the agent's permissions with IAM; onboarding relies on the
    generation counter (another run may already have written this account's statement).
    """
    accounts = list(run.accounts.select_related("agent").order_by("account_id"))
    if not accounts:
        raise RunFailed("This run has no accounts (they may have been deleted).")
    check_live = run.kind in (RunKind.RECONCILE, RunKind.ROTATE)
    removed = [a for a in accounts if a.status == Lifecycle.REMOVED]
    present = [a for a in accounts if a.status != Lifecycle.REMOVED]
    failures: dict[str, Exception | str] = {}
    writes = 0
    for agent_id in {a.agent_id for a in removed}:
        writes += sync_agent_permissions(run, agent_id, check_live=check_live)
    writes += _for_each(run, removed, lambda account: remove_account_resources(run, account), failures)

    for agent in {a.agent_id: a.agent for a in present if a.agent.status != Lifecycle.ACTIVE}.values():
        writes += ensure_agent_identity(run, agent)
    writes += _for_each(run, present, lambda account: reconcile_account_resources(run, account), failures)
    for account in present:
        if account.account_id in failures:
            _account_failed(account)
    for agent_id in {a.agent_id for a in present if a.account_id not in failures}:
        try:
            writes += sync_agent_permissions(run, agent_id, check_live=check_live)
        except (ApplyError, aws.AwsError, policies.LayoutError) as exc:
            for account in present:
                if account.agent_id == agent_id and account.account_id not in failures:
                    failures[account.account_id] = exc
                    _account_failed(account)
    done = [a for a in present if a.account_id not in failures and a.status != Lifecycle.ACTIVE]
    EcrAccount.objects.filter(pk__in=[a.pk for a in done]).update(
        status=Lifecycle.ACTIVE, updated_at=timezone.now()
    )
    return _outcome(run, accounts, failures, writes, "in sync")


def _handle_offboard(run: Run) -> tuple[str, str]:
    accounts = list(run.accounts.select_related("agent").order_by("account_id"))
    if not accounts and run.agent is not None and run.agent.status == Lifecycle.REMOVED:
        # An offboarded agent (it serves no account any more) loses every assume permission.
        writes = sync_agent_permissions(run, run.agent.pk, check_live=True)
        return RunStatus.SUCCEEDED, f"Agent {run.agent.name} offboarded ({writes} write(s))."
    # The agent loses sts:AssumeRole on the roles before they are deleted: one write per agent.
    writes = sum(sync_agent_permissions(run, agent_id) for agent_id in {a.agent_id for a in accounts})
    failures: dict[str, Exception | str] = {}

    def offboard(account: EcrAccount) -> int:
        removed = remove_account_resources(run, account)
        account.brokers.update(status=BrokerStatus.RETIRED)
        return removed

    writes += _for_each(run, accounts, offboard, failures)
    return _outcome(run, accounts, failures, writes, "offboarded")


def _handle_bulk(run: Run) -> tuple[str, str]:
    """Many accounts, as a StackSets operation: resources concurrently, the agent's permissions once.

    At most `max_concurrency` accounts at a time, and (StackSets' default strict failure tolerance)
    never more in flight than failures still tolerated: `failure_tolerance + 1 - failures`, so at
    most K+1 accounts fail. After more than K failures no new account starts. Each account's
    outcome lands in the log and in `run.result` as it finishes.
    """
    accounts = list(run.accounts.select_related("agent").order_by("account_id"))
    max_concurrency = max(1, int(run.options.get("max_concurrency", 8)))
    tolerance = max(0, int(run.options.get("failure_tolerance", len(accounts))))
    failures: dict[str, str] = {}
    outcome: dict[str, str] = {}

    def one(account: EcrAccount) -> None:
        close_old_connections()
        try:
            reconcile_account_resources(run, account)
        except (ApplyError, aws.AwsError, policies.LayoutError) as exc:
            failures[account.account_id] = str(exc)
            run.log(f"account {account.account_id} failed: {exc}", level="ERROR")
        finally:
            close_old_connections()

    if accounts and accounts[0].agent.status != Lifecycle.ACTIVE:
        ensure_agent_identity(run, accounts[0].agent)
    waiting = list(accounts)
    cancelled = False
    with ThreadPoolExecutor(max_workers=max_concurrency) as pool:
        running: dict[Future, EcrAccount] = {}
        while True:
            limit = min(max_concurrency, tolerance + 1 - len(failures))
            while waiting and not cancelled and len(failures) <= tolerance and len(running) < limit:
                account = waiting.pop(0)
                running[pool.submit(one, account)] = account
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                account = running.pop(future)
                future.result()  # an unexpected error ends the run as errored
                outcome[account.account_id] = "failed" if account.account_id in failures else "succeeded"
                run.log(
                    f"account {account.account_id}: {outcome[account.account_id]} "
                    f"({len(outcome)} of {len(accounts)} done)"
                )
            Run.objects.filter(pk=run.pk).update(result={"accounts": outcome})
            cancelled = cancelled or Run.objects.filter(pk=run.pk, cancel_requested=True).exists()
    skipped = [a.account_id for a in waiting]
    outcome.update(dict.fromkeys(skipped, "not started"))
    Run.objects.filter(pk=run.pk).update(result={"accounts": outcome})
    done = [a for a in accounts if outcome.get(a.account_id) == "succeeded"]
    # Failed and skipped accounts stay members (status failed) so a retry converges without flapping.
    for account in accounts:
        if account not in done and account.status == Lifecycle.PENDING:
            _set_status(account, Lifecycle.FAILED)
    EcrAccount.objects.filter(pk__in=[a.pk for a in done]).update(status=Lifecycle.ACTIVE)
    if accounts:
        AgentIdentity.objects.filter(pk=accounts[0].agent_id).update(
            policy_generation=F("policy_generation") + 1
        )
        sync_agent_permissions(run, accounts[0].agent_id)
    summary = f"{len(done)} of {len(accounts)} account(s) onboarded"
    if skipped:
        why = "cancelled" if cancelled else f"after {len(failures)} failure(s) (tolerance {tolerance})"
        summary += f"; {len(skipped)} not started, {why}"
    if failures:
        summary += ":\n" + "\n".join(f"{k}: {v}" for k, v in sorted(failures.items()))
        return (RunStatus.PARTIAL if done else RunStatus.FAILED), summary
    if cancelled and skipped:
        return RunStatus.CANCELLED, summary + "."
    return RunStatus.SUCCEEDED, summary + "."


HANDLERS: dict[str, Callable[[Run], tuple[str, str]]] = {
    RunKind.AGENT: _handle_agent,
    RunKind.ONBOARD: _handle_accounts,
    RunKind.RECONCILE: _handle_accounts,
    RunKind.ROTATE: _handle_accounts,
    RunKind.OFFBOARD: _handle_offboard,
    RunKind.BULK: _handle_bulk,
    RunKind.AUDIT: audit.handle_audit_run,
}

"""Use cases shared by the browser, the command line and the tasks (HackSoft style: keyword-only).

Every input is validated with full_clean() before anything is saved or sent to AWS; a bad value
raises django.core.exceptions.ValidationError naming the field. Runs are enqueued only after
the transaction that created them commits, with the run id as the task's only argument.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts import services as inventory
from accounts.choices import AgentKind, Lifecycle
from accounts.models import AgentIdentity, EcrAccount
from portal import audit
from portal.audit import Actor
from portal.celery import app

from . import flows, policies, runner
from .changes import Plan
from .choices import ACTIVE_RUN_STATUSES, RunKind, RunStatus
from .compare import AccountWanted
from .flows import AccountTarget, Scope
from .models import Run, RunLock

EXECUTE_RUN_TASK = "provisioning.tasks.execute_run"


def plan_onboarding(account: EcrAccount, external_ids: list[str] | None = None) -> Plan:
    """Read-only preview of onboarding `account` (saved draft or unsaved): the onboarding flow."""
    ids = external_ids if external_ids is not None else inventory.desired_external_ids(account)
    scope = Scope(
        accounts=[AccountTarget(account, AccountWanted(ids))],
        members_added={account.agent.pk: {account.account_id: account.service_role_arn}},
    )
    return flows.ONBOARD.preview(scope)


def plan_reconcile(accounts: Iterable[EcrAccount]) -> Plan:
    """Preview of reconciling these accounts (removed ones are made absent): the reconcile flow."""
    targets = []
    for account in accounts:
        removed = account.status == Lifecycle.REMOVED
        ids = [] if removed else inventory.desired_external_ids(account)
        targets.append(AccountTarget(account, AccountWanted(ids, remove=removed)))
    return flows.RECONCILE.preview(Scope(accounts=targets))


def plan_agent(agent: AgentIdentity) -> Plan:
    """Preview of an agent's setup (also of one not saved yet: `agent_add --plan`)."""
    return flows.AGENT_SETUP.preview(Scope(agent=agent))


def run_request(
    *,
    kind: str,
    user: Actor = None,
    agent: AgentIdentity | None = None,
    accounts: Iterable[EcrAccount] = (),
    options: dict[str, Any] | None = None,
    request_id: str = "",
    enqueue: bool = True,
) -> Run:
    """Create a queued Run; its task is sent after the surrounding transaction commits."""
    accounts = list(accounts)
    with transaction.atomic():
        run = Run.objects.create(
            kind=kind,
            agent=agent or (accounts[0].agent if accounts else None),
            targets=[a.account_id for a in accounts],
            options=options or {},
            requested_by=user if user is not None and user.is_authenticated else None,
            requested_by_name=user.get_username() if user is not None and user.is_authenticated else "cli",
            request_id=request_id,
            task_id=str(uuid.uuid4()) if enqueue else "",
        )
        if accounts:
            run.accounts.set(accounts)
        _lock_targets(run, accounts, agent)
        audit.record(
            user=user,
            action=f"run.request.{kind}",
            account_id=accounts[0].account_id if len(accounts) == 1 else "",
            obj=run,
            run_id=run.pk,
            targets=run.targets[:50],
        )
        if enqueue:
            transaction.on_commit(lambda: _send(run))
    return run


class RunInProgress(ValidationError):
    """Another run already works on this account (or agent): the request made no run."""

    def __init__(self, run: Run):
        self.run = run
        what = (
            "this organization"
            if run.kind == RunKind.ORG_SYNC
            else f"account {run.targets[0]}"
            if len(run.targets) == 1
            else (f"agent {run.agent.name}" if run.agent and not run.targets else "these accounts")
        )
        super().__init__({"run": f"Run #{run.pk} is still {run.status} for {what}: wait for it."})


def _lock_targets(run: Run, accounts: list[EcrAccount], agent: AgentIdentity | None) -> None:
    """Take the run's keys, or raise RunInProgress naming the run that holds one (see RunLock)."""
    if run.kind in (RunKind.AUDIT, RunKind.ORG_DISCOVER):
        return  # it only reads: it never stops another run
    keys = [f"account:{a.pk}" for a in accounts] or ([f"agent:{agent.pk}"] if agent is not None else [])
    if run.kind == RunKind.ORG_SYNC:  # one sync per organization at a time (it locks its accounts itself)
        keys = [f"organization:{run.options['organization']}"]
    for attempt in range(2):
        try:
            with transaction.atomic():  # a savepoint: the caller's transaction stays usable
                RunLock.objects.bulk_create([RunLock(key=key, run=run) for key in keys])
            return
        except IntegrityError:
            held = RunLock.objects.select_related("run__agent").filter(key__in=keys)
            stale = [lock.pk for lock in held if not lock.run.is_active]
            if stale and attempt == 0:  # its run ended without releasing (a crash): take it
                RunLock.objects.filter(pk__in=stale).delete()
                continue
            holder = next((lock.run for lock in held if lock.run.is_active), None)
            if holder is None:
                raise
            raise RunInProgress(holder) from None


def _send(run: Run) -> None:
    # By name, as celery beat does: tasks.py sits above the services (its tasks call them).
    app.signature(EXECUTE_RUN_TASK, args=[run.pk]).apply_async(task_id=run.task_id)


def account_onboard(
    *, account: EcrAccount, user: Actor = None, enqueue: bool = True, **run_fields: Any
) -> Run:
    """Confirm a draft (or retry a failed) account: it joins the agent's permissions; a run applies it."""
    with transaction.atomic():
        if account.status in (Lifecycle.DRAFT, Lifecycle.REMOVED):
            EcrAccount.objects.filter(pk=account.pk).update(status=Lifecycle.PENDING)
            account.status = Lifecycle.PENDING
            account.agent.bump_policy_generation()
        return run_request(kind=RunKind.ONBOARD, user=user, accounts=[account], enqueue=enqueue, **run_fields)


def account_reconcile(
    *, accounts: list[EcrAccount], user: Actor = None, enqueue: bool = True, **run_fields: Any
) -> Run:
    return run_request(kind=RunKind.RECONCILE, user=user, accounts=accounts, enqueue=enqueue, **run_fields)


def agent_setup(*, agent: AgentIdentity, user: Actor = None, enqueue: bool = True, **run_fields: Any) -> Run:
    return run_request(kind=RunKind.AGENT, user=user, agent=agent, enqueue=enqueue, **run_fields)


def active_run_for(account: EcrAccount) -> Run | None:
    return account.runs.filter(status__in=ACTIVE_RUN_STATUSES).first()


def plan_access_key(agent: AgentIdentity) -> Plan:
    """Preview of a user agent's new access key (refused for role agents and at IAM's two keys)."""
    if agent.kind != AgentKind.USER:
        raise ValidationError({"kind": "Access keys exist only for user agents."})
    try:
        return flows.ACCESS_KEY.preview(Scope(agent=agent))
    except policies.LayoutError as exc:
        raise ValidationError({"agent": str(exc)}) from None


def agent_create_access_key(*, agent: AgentIdentity, user: Actor = None) -> dict[str, str]:
    """Create an access key for a user agent and return it once. It is never stored or logged.

    The write is a run like every other (its Operation recorded), run here in the request: the
    secret must come back to the person who asked, and never travels through the queue.
    """
    plan_access_key(agent)  # refuses before anything is saved or sent
    run = run_request(kind=RunKind.ACCESS_KEY, user=user, agent=agent, enqueue=False)
    if not run.claim():
        raise ValidationError({"run": f"Run {run.pk} was taken by another process."})
    runner.execute(run)
    key: dict[str, str] | None = getattr(run, "new_access_key", None)
    if run.status != RunStatus.SUCCEEDED or key is None:
        raise ValidationError({"agent": run.explanation or f"Run {run.pk} {run.status}."})
    audit.record(user=user, action="agent.access_key.create", obj=agent, key_suffix=key["AccessKeyId"][-4:])
    return key


def run_cancel(*, run: Run, user: Actor = None) -> Run:
    """Stop a run: a queued one never starts; a running one stops before its next account (an audit
    before its next read, storing nothing).

    Operations already made stay (and stay recorded); a later run plans from what AWS has then.
    """
    if not run.is_active:
        raise ValidationError({"run": f"Run {run.pk} is {run.status}: there is nothing to cancel."})
    Run.objects.filter(pk=run.pk).update(cancel_requested=True)
    # Queued: nobody has claimed it, so it ends here (a later delivery finds it not queued).
    if Run.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
        status=RunStatus.CANCELLED, finished_at=timezone.now(), explanation="Cancelled before it started."
    ):
        RunLock.objects.filter(run=run).delete()
    audit.record(user=user, action="run.cancel", obj=run, run_id=run.pk)
    run.refresh_from_db()
    return run

"""The applier: executes a plan's changes in order, one recorded Operation per AWS write.

No database transaction is held across an AWS call: its Operation row is written "started" (with
the request and documents) in one short transaction before the call, numbered from the run's
counter (Operation.start: nothing in this process makes one account's write wait for another's),
and settled in another after it, so a worker killed mid-call leaves a row saying what was in
flight (settle_recovered, when the run is taken over, decides from the live state whether it took
effect). Throttling and 5xx are retried by botocore (standard mode); "Invalid principal" right
after the principal was created is IAM's eventual consistency and is retried here with backoff;
any other error stops the plan at that change, with every earlier operation already recorded, and
a later run re-plans from the live state.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings

from accounts.models import EcrAccount
from portal.redact import redact
from portal.text import counted

from . import aws, policies, snyk
from .changes import Change, Plan, SnykChange
from .choices import OperationStatus
from .models import Operation, Run, RunChunk
from .models import RunLost as RunLost  # raised here (the runner and the flows catch it from here)

log = logging.getLogger(__name__)

DOCUMENT_PARAMS = ("PolicyDocument", "AssumeRolePolicyDocument")


class ApplyError(Exception):
    def __init__(self, change: Change, error: aws.AwsError | snyk.SnykError):
        self.change = change
        self.error = error
        super().__init__(explain(change, error))


def explain(change: Change, error: aws.AwsError | snyk.SnykError) -> str:
    """The failure in plain words, for the run page and the command line."""
    hints = {
        "AccessDenied": "the portal's credentials (or the account's management role) may not do this; "
        "see `manage.py iam_policy` for what they need.",
        "AccessDeniedException": "the portal's credentials may not do this.",
        "EntityAlreadyExists": "something with this name exists already; re-run to adopt it.",
        "LimitExceeded": "an IAM quota was reached.",
        "DeleteConflict": "it is still attached or in use elsewhere.",
        "MalformedPolicyDocument": "IAM rejected the document.",
    }
    hint = hints.get(error.code, "")
    return f"{change.action} on {change.arn} failed: {error.code}: {error.message}" + (
        f" — {hint}" if hint else ""
    )


def _wire_params(params: dict[str, Any]) -> dict[str, Any]:
    return {k: json.dumps(v) if k in DOCUMENT_PARAMS else v for k, v in params.items()}


def _start(run: Run, change: Change, step: str) -> Operation:
    """Record the write as started (numbered by the run's counter); RunLost once the run is re-claimed."""
    return Operation.start(
        run,
        step=step[:255],
        account_id=change.account_id,
        action=change.action,
        resource_arn=change.arn,
        summary=change.summary[:255],
        request=redact({k: v for k, v in change.params.items() if k not in DOCUMENT_PARAMS}),
        before=change.before,
        after=change.after,
    )


def apply_change(run: Run, change: Change, step: str = "") -> Operation:
    """Make one AWS write, recorded as started before the call and settled after it (also when it fails)."""
    if isinstance(change, SnykChange):
        return apply_snyk_change(run, change, step)
    client = aws.client_for_change(change.access, change.action, change.region)
    operation = _start(run, change, step)
    started = time.monotonic()
    deadline = started + settings.IAM_PROPAGATION_TIMEOUT
    delay, attempts = min(1.0, settings.IAM_PROPAGATION_TIMEOUT / 10), 0
    error: aws.AwsError | None = None
    request_id = ""
    while True:
        attempts += 1
        try:
            if change.keeps_answer:
                change.answer = client.call(change.method, **_wire_params(change.params))
                request_id = aws.request_id(change.answer)
            else:
                request_id = client.write(change.method, **_wire_params(change.params))
            error = None
            break
        except aws.AwsError as exc:
            error = exc
            if exc.is_invalid_principal and time.monotonic() + delay < deadline:
                log.info(
                    "IAM has not propagated the principal yet; retrying %s in %.0fs", change.action, delay
                )
                time.sleep(delay)
                delay = min(delay * 2, 16.0)
                continue
            break
    settled = operation.settle(
        OperationStatus.FAILED if error else OperationStatus.SUCCEEDED,
        error_code=error.code if error else "",
        error_message=error.message if error else "",
        request_id=(error.request_id if error else request_id) or "",
        duration_ms=int((time.monotonic() - started) * 1000),
        attempts=attempts,
    )
    if not settled:  # taken over meanwhile: the new holder settled it from the live state
        raise RunLost(f"run {run.pk} was re-claimed while {change.action} on {change.arn} was in flight")
    run.count_progress(done=1)  # written with the run's next write (no write of its own)
    if error:
        raise ApplyError(change, error)
    return operation


def apply_snyk_change(run: Run, change: SnykChange, step: str = "") -> Operation:
    """Make one Snyk write and record it like an AWS write (started before the call, settled after):
    the request (redacted, never the answer: it may hold a client secret), Snyk's request id,
    attempts, duration and error."""
    assert change.tenant is not None
    path = change.resolved_path()
    change.params = {"method": change.http, "path": path, "version": change.version, "body": change.body}
    change.arn = path
    operation = _start(run, change, step)
    started = time.monotonic()
    error: snyk.SnykError | None = None
    answer: snyk.SnykResponse | None = None
    try:
        answer = snyk.Client(change.tenant).request(
            change.http, path, version=change.version, body=change.body, v1=change.v1
        )
        change.answer = answer.body
    except snyk.SnykError as exc:
        error = exc
    settled = operation.settle(
        OperationStatus.FAILED if error else OperationStatus.SUCCEEDED,
        error_code=error.code if error else "",
        error_message=error.message if error else "",
        request_id=(error.request_id if error else answer.request_id if answer else "") or "",
        duration_ms=int((time.monotonic() - started) * 1000),
        attempts=answer.attempts if answer else 1,
    )
    if not settled:  # taken over meanwhile: the new holder settled it from the live state
        raise RunLost(f"run {run.pk} was re-claimed while {change.action} on {change.arn} was in flight")
    run.count_progress(done=1)  # written with the run's next write (no write of its own)
    if error:
        raise ApplyError(change, error)
    if change.on_done is not None and answer is not None:
        change.on_done(answer)
    return operation


PLAN_FLUSH_SECONDS = 2.0
_plan_lock = threading.Lock()  # accounts plan on several threads of one run: no step may be lost


def record_plan(run: Run, plan: Plan, label: str) -> None:
    """Append a planned step to the run's plan and grow its progress total.

    The lock guards only the in-memory append: the total is counted in memory (written with the
    run's next write), and the plan JSON is rewritten at most every PLAN_FLUSH_SECONDS, outside the
    lock, from a copy (and whole at the end, flush_plan): rewriting it per step made a bulk run's
    storage grow with the square of its size, and made every account wait for the rewrite.
    """
    with _plan_lock:
        stored = run.plan or {"steps": []}
        stored.setdefault("steps", []).append({"label": label, **plan.to_dict()})
        run.plan = stored
        now = time.monotonic()
        due = now - getattr(run, "_plan_flushed", 0.0) >= PLAN_FLUSH_SECONDS
        if due:
            run._plan_flushed = now  # type: ignore[attr-defined]  # per-instance flush clock
            snapshot = {**stored, "steps": list(stored["steps"])}
    run.count_progress(total=len(plan.changes))
    if due:
        _store_plan(run, snapshot)
    for note in plan.notes:
        run.note(note)


def flush_plan(run: Run) -> None:
    """Write the whole plan and the progress counted in this process (at the end of a run)."""
    with _plan_lock:
        stored = run.plan or {}
        snapshot = {**stored, "steps": list(stored["steps"])} if "steps" in stored else dict(stored)
    _store_plan(run, snapshot)
    run.write_progress()


def _store_plan(run: Run, plan: dict[str, Any]) -> None:
    # A chunk of the run (flows/chunks.py) keeps the steps it planned on its own row: its run's
    # worker merges them, so that workers never overwrite each other's steps in the run's plan.
    chunk: RunChunk | None = getattr(run, "plan_chunk", None)
    if chunk is not None:
        RunChunk.objects.filter(pk=chunk.pk).update(plan=plan)
    else:
        Run.objects.filter(pk=run.pk).update(plan=plan)


def apply_step(run: Run, plan: Plan, label: str, *, step: str = "") -> int:
    """Record one step's plan in the run and apply it; the number of writes made.

    `step` is the step's own label (Step.label), kept on each operation so that an attempt taking
    over the run can re-plan that step; `label` is what the plan and the log show (default: it)."""
    record_plan(run, plan, label)
    if plan.is_empty:
        run.note(f"{label}: in sync, nothing to change")
        return 0
    run.note(f"{label}: applying {counted(len(plan.changes), 'change', 'changes')}")  # with its first start
    return len(apply_plan(run, plan, step or label))


def apply_expecting_absent(run: Run, plan: Plan, label: str, replan: Callable[[], Plan], *, step: str) -> int:
    """Apply a plan made without reading, its resources expected absent (creates only); the writes made.

    A create answered EntityAlreadyExists (made by hand or meanwhile: nothing was overwritten) falls
    back to what every other plan does: `replan` reads and compares, and that plan (an adoption,
    each difference from the guide in its notes, as any adoption) replaces the rest of this one in
    the run's record and is applied.
    """
    try:
        return apply_step(run, plan, label, step=step)
    except ApplyError as exc:
        if exc.error.code != "EntityAlreadyExists":
            raise
        conflict = exc.change
    made = plan.changes.index(conflict)
    unmade = len(plan.changes) - made - 1  # after the refused create: replaced by the new plan
    if unmade:
        run.count_progress(total=-unmade)
    run.log(f"{label}: {conflict.arn} exists after all (EntityAlreadyExists): read, compared and adopted")
    return made + apply_step(run, replan(), f"{label} (what exists, adopted)", step=step)


def apply_plan(run: Run, plan: Plan, step: str = "") -> list[Operation]:
    """Apply the changes in order; each one's start also beats (RunLost once the run is re-claimed)."""
    operations = []
    for change in plan.changes:
        operations.append(apply_change(run, change, step))
        if change.adopts:
            _mark_adopted(change)
    return operations


def _mark_adopted(change: Change) -> None:
    field = {"role": "role_adopted", "policy": "policy_adopted"}[change.adopts]
    EcrAccount.objects.filter(account_id=change.account_id).update(**{field: True})


def settle_recovered(operation: Operation, replanned: Plan, attempt: int) -> str:
    """Settle an operation a dead worker left started, from a fresh plan of its step (live reads
    compared with the desired documents, as every plan is made).

    The write took effect when the fresh plan no longer asks for it, or asks for it only because the
    live document, which is what this operation wrote, has moved on from it since (the desired state
    changed). It did not when the plan still asks for the same call on the same resource from a live
    state that is not the operation's result.
    """
    again = next(
        (c for c in replanned.changes if c.action == operation.action and c.arn == operation.resource_arn),
        None,
    )
    applied = again is None or (
        operation.after is not None and policies.same_document(again.before, operation.after)
    )
    status = OperationStatus.APPLIED if applied else OperationStatus.NOT_APPLIED
    found = "in AWS: it took effect" if applied else "not in AWS: it did not take effect"
    operation.settle(
        status,
        error_message=f"The worker stopped during this call; attempt {attempt} found its result {found}.",
    )
    return status

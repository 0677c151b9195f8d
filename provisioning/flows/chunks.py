"""A fan-out over many accounts, spread over the worker pool in chunks (RunChunk rows).

Only the worker that holds the run walks its flow. When it reaches a ForEachAccount of more than
RUN_CHUNK_SIZE self-contained account steps (in a flow whose scope any worker can build again from
the run: Flow.spreads), it saves the accounts in chunks, sends one `execute_chunk` message for each
chunk but one, and takes chunks itself like every other worker: a conditional UPDATE claims a
pending chunk, or one whose lease ran out (its worker died: the taker first settles what that worker
left started, from the live state, as a run's takeover does). Each chunk runs at the fan-out's own
concurrency, beats its own lease, starts no account once the run is cancelled, and records its
outcomes and plan on its row. Once every chunk is done the run's worker merges them and walks on:
the steps after the fan-out (the agent's permissions) run once, after every chunk's service roles.

The run stays one Run (its operations, log and progress bar are the run's; progress counters are
atomic increments), and no result backend is needed: the database says which chunks are done.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import close_old_connections
from django.db.models import Q
from django.utils import timezone

from portal.text import counted

from ..applier import RunLost, flush_plan
from ..choices import ChunkStatus, RunStatus
from ..heartbeat import Heartbeat
from ..models import Run, RunChunk
from .base import FAILED, AccountFanOut, Outcomes, Scope, Step, recover_started_operations

if TYPE_CHECKING:
    from .steps import ForEachAccount

log = logging.getLogger(__name__)

EXECUTE_CHUNK_TASK = "provisioning.tasks.execute_chunk"
WAIT_SECONDS = 0.05  # how often the run's worker looks whether the other chunks are done (the agent's
# write waits for this after the last chunk: at 0.25 s it was a twentieth of a 200-account run)
PUBLISH_SECONDS = 1.0  # how often it merges their outcomes into the run's result meanwhile


def spread_here(run: Run) -> None:
    """Let this run's fan-outs spread over the pool (the runner, in a worker, for Flow.spreads)."""
    run.spread_chunk_size = settings.RUN_CHUNK_SIZE  # type: ignore[attr-defined]  # in memory only


def spreads(run: Run, fanout: ForEachAccount) -> bool:
    size: int = getattr(run, "spread_chunk_size", 0)
    steps = fanout.account_steps
    return bool(
        size
        and len(steps) > size
        and all(step.spreads for step in steps)
        # A binding failure tolerance counts every account's failure as they happen: one worker.
        and (fanout.tolerance is None or fanout.tolerance >= len(steps))
    )


def execute_spread(fanout: ForEachAccount, run: Run, scope: Scope, outcomes: Outcomes) -> int:
    """The run's worker: chunks saved (or found, on a later attempt), sent, taken, waited for, merged."""
    writes_before = outcomes.writes
    key = fanout_key(fanout)
    # An account an earlier step failed stops there (as ForEachAccount.run_one does): not chunked.
    labels = [s.label for s in fanout.account_steps if not outcomes.failed(s.target.account_id)]
    if not labels:
        return 0
    chunks = _chunks(run, key, labels, getattr(run, "spread_chunk_size", len(labels)) or len(labels))
    open_chunks = [c for c in chunks if c.status != ChunkStatus.DONE]
    worker = worker_name()
    run.log(
        f"{counted(len(labels), 'account', 'accounts')} in {counted(len(chunks), 'chunk', 'chunks')} "
        f"for the workers ({len(open_chunks)} to do; the run's worker: {worker})"
    )
    _send_helpers(run, key, len(open_chunks) - 1)
    published = time.monotonic()
    while True:
        take_chunks(run, scope, fanout)  # also those abandoned meanwhile, once their lease ran out
        rows = list(RunChunk.objects.filter(run=run, fanout=key).order_by("index"))
        if all(c.status == ChunkStatus.DONE for c in rows):
            break
        for row in rows:
            _give_up_if_exhausted(row)
        if not run.beat():
            raise RunLost(f"run {run.pk} was re-claimed by another worker")
        if time.monotonic() - published >= PUBLISH_SECONDS:
            progress = Outcomes()
            progress.merge(outcomes.chunk_result())
            for row in rows:
                progress.merge(row.result or {})
            Run.objects.filter(pk=run.pk).update(result=progress.as_result())
            published = time.monotonic()
        time.sleep(WAIT_SECONDS)
    for row in rows:
        outcomes.merge(row.result or {})
        run.plan = run.plan or {"steps": []}
        run.plan.setdefault("steps", []).extend((row.plan or {}).get("steps", []))
    flush_plan(run)
    Run.objects.filter(pk=run.pk).update(result=outcomes.as_result())
    return outcomes.writes - writes_before


def take_chunks(run: Run, scope: Scope, fanout: ForEachAccount) -> int:
    """Take this run's pending (or abandoned) chunks of `fanout` until none is left; how many.

    Chunks smaller than the fan-out's concurrency are taken several at once (lanes), so that a
    worker keeps as many accounts in flight as one worker would without chunks, never more.
    """
    lanes = max(1, math.ceil(fanout.concurrency / settings.RUN_CHUNK_SIZE))
    if lanes == 1:
        return _lane(run, scope, fanout, fanout.concurrency)
    per_lane = math.ceil(fanout.concurrency / lanes)
    with ThreadPoolExecutor(max_workers=lanes, thread_name_prefix=f"run{run.pk}-lane") as pool:
        futures = [pool.submit(_threaded_lane, run, scope, fanout, per_lane) for _ in range(lanes)]
        return sum(future.result() for future in futures)


def _lane(run: Run, scope: Scope, fanout: ForEachAccount, concurrency: int) -> int:
    key, worker, taken = fanout_key(fanout), worker_name(), 0
    while (chunk := claim_next(run, key, worker)) is not None:
        take(run, scope, fanout, chunk, concurrency)
        taken += 1
    return taken


def _threaded_lane(run: Run, scope: Scope, fanout: ForEachAccount, concurrency: int) -> int:
    close_old_connections()
    try:
        return _lane(run, scope, fanout, concurrency)
    finally:
        close_old_connections()


def fanout_key(fanout: ForEachAccount) -> str:
    """Which fan-out of the run a chunk belongs to: its first account step (labels are per account)."""
    return fanout.account_steps[0].label[:255]


def find_fanout(steps: Sequence[Step], key: str) -> ForEachAccount | None:
    for step in steps:
        if isinstance(step, AccountFanOut) and step.substeps() and step.substeps()[0].label[:255] == key:
            return step  # type: ignore[return-value]  # ForEachAccount is the only fan-out
    return None


def claim_next(run: Run, key: str, worker: str) -> RunChunk | None:
    """Claim a chunk of this fan-out: pending, or abandoned by a worker that died (lease run out).

    Only while the run is running under the claim this worker knows: a chunk never outlives its run.
    """
    if not Run.objects.filter(pk=run.pk, status=RunStatus.RUNNING, claim_token=run.claim_token).exists():
        return None
    lapsed = timezone.now() - timedelta(seconds=Run.lease_seconds())
    candidates = RunChunk.objects.filter(run=run, fanout=key).filter(
        Q(status=ChunkStatus.PENDING)
        | Q(status=ChunkStatus.RUNNING, heartbeat_at__lt=lapsed, attempts__lt=settings.RUN_MAX_ATTEMPTS)
    )
    for chunk in candidates.order_by("index"):
        if chunk.claim(worker):
            if chunk.attempts > 1:
                log.warning("run %s: chunk %s taken over (attempt %s)", run.pk, chunk.index, chunk.attempts)
            return chunk
    return None


def take(run: Run, scope: Scope, fanout: ForEachAccount, chunk: RunChunk, concurrency: int) -> None:
    """Run one claimed chunk's accounts; its outcomes and plan go to its row."""
    # A run of its own in memory: the same claim, but its plan goes to the chunk (applier._store_plan).
    mine = Run.objects.get(pk=run.pk)
    mine.claim_token = run.claim_token
    mine.plan = {"steps": []}
    mine.plan_chunk = chunk  # type: ignore[attr-defined]  # in memory only
    by_label = {step.label: step for step in fanout.account_steps}
    steps = [by_label[label] for label in chunk.steps if label in by_label]
    outcomes = Outcomes()
    with Heartbeat(chunk):
        if chunk.attempts > 1:  # a worker died with this chunk: settle what it left started first
            recover_started_operations(mine, scope, list(steps), chunk)

        def publish(_run: Run, done: Outcomes) -> None:
            chunk.beat(result=done.chunk_result())

        part = fanout.part(steps, publish=publish, concurrency=concurrency)
        part.execute(mine, scope, outcomes)
        flush_plan(mine)
        if not chunk.finish(outcomes.chunk_result(), mine.plan):
            log.warning("run %s: chunk %s was taken over while it ran", run.pk, chunk.index)


def worker_name() -> str:
    """The worker taking a chunk (its node name when in a Celery worker), for the run's records."""
    from celery import current_task  # noqa: PLC0415  only the worker's task context is wanted

    request = getattr(current_task, "request", None)
    hostname = getattr(request, "hostname", None) or socket.gethostname()
    return f"{hostname} pid {os.getpid()}"


def _chunks(run: Run, key: str, labels: list[str], size: int) -> list[RunChunk]:
    existing = list(RunChunk.objects.filter(run=run, fanout=key).order_by("index"))
    if existing:  # a later attempt of the run: the chunks (and what is done of them) stay
        return existing
    count = math.ceil(len(labels) / size)
    per = math.ceil(len(labels) / count)  # even chunks: 26 accounts at 25 make 13 + 13, not 25 + 1
    RunChunk.objects.bulk_create(
        [RunChunk(run=run, fanout=key, index=i, steps=labels[i * per : (i + 1) * per]) for i in range(count)]
    )
    return list(RunChunk.objects.filter(run=run, fanout=key).order_by("index"))


def _send_helpers(run: Run, key: str, count: int) -> None:
    from portal.celery import app  # noqa: PLC0415  the Celery app only where a message is sent

    if count <= 0 or app.conf.task_always_eager:  # eager: nobody else would take them
        return
    for _ in range(count):  # by name, as services sends runs: tasks.py sits above the flows
        app.signature(EXECUTE_CHUNK_TASK, args=[run.pk, key]).apply_async()


def _give_up_if_exhausted(chunk: RunChunk) -> None:
    """A chunk whose worker died RUN_MAX_ATTEMPTS times: its unfinished accounts fail (no claim
    takes it any more), so the run ends instead of waiting for it."""
    lapsed = timezone.now() - timedelta(seconds=Run.lease_seconds())
    if not (
        chunk.status == ChunkStatus.RUNNING
        and chunk.attempts >= settings.RUN_MAX_ATTEMPTS
        and chunk.heartbeat_at is not None
        and chunk.heartbeat_at < lapsed
    ):
        return
    result = dict(chunk.result or {})
    accounts, errors = dict(result.get("accounts", {})), dict(result.get("errors", {}))
    why = f"Gave up after {counted(chunk.attempts, 'attempt', 'attempts')}: the worker stopped each time."
    for label in chunk.steps:
        account_id = label.rsplit(" ", 1)[-1]  # "account <id>", "remove <id>"
        if account_id not in accounts:
            accounts[account_id], errors[account_id] = FAILED, why
    RunChunk.objects.filter(pk=chunk.pk, claim_token=chunk.claim_token, status=ChunkStatus.RUNNING).update(
        status=ChunkStatus.DONE,
        finished_at=timezone.now(),
        result={**result, "accounts": accounts, "errors": errors},
    )

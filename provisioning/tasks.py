"""Celery tasks: thin wrappers that take ids only. The runner does the work."""

import logging
import time
from datetime import datetime, timedelta

from celery import shared_task
from celery.signals import worker_process_init
from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from portal.text import counted

from . import aws, org_services, runner
from .audit.notify import post_webhook
from .audit.services import audit_request
from .choices import ACTIVE_RUN_STATUSES, ChunkStatus, RunKind, RunStatus
from .models import Run, RunChunk, RunLock

log = logging.getLogger(__name__)


@worker_process_init.connect(weak=False)
def load_aws_models(**_kwargs: object) -> None:
    """A pool process reads botocore's IAM and STS models as it starts (a fifth of a second of CPU),
    not in the first run it is given."""
    aws.sessions.warm()


@shared_task(acks_late=True, reject_on_worker_lost=True)
def execute_run(run_id: int) -> str:
    run = Run.objects.filter(pk=run_id).first()
    if run is None:
        return "missing"
    if not claim_or_take_over(run):  # another worker has it (alive), or it is over
        log.info("run %s is not queued (status %s): not running it twice", run_id, run.status)
        return "not-claimed"
    runner.execute(run, spread=True)
    return run.status


@shared_task(acks_late=True, reject_on_worker_lost=True)
def execute_chunk(run_id: int, fanout: str) -> int:
    """Help with a run spread over the pool (flows/chunks.py): take its chunks until none is left.

    Redelivered after its worker died, it takes that worker's chunk over once its lease has run out
    (or the run's own worker does, whichever looks first)."""
    return runner.help_with_chunks(run_id, fanout)


def claim_or_take_over(run: Run) -> bool:
    """Claim a queued run, or take over a running one whose worker died.

    A message is redelivered when its worker died, usually before that worker's lease has run out:
    wait (at most one lease) for the lease to run out and take the run over then. If the run beats
    meanwhile, its worker is alive and the message is a duplicate: never run a live run twice.
    """
    seen = run.heartbeat_at
    deadline = time.monotonic() + Run.lease_seconds() + settings.RUN_HEARTBEAT_INTERVAL
    while not run.claim():
        run.refresh_from_db()
        if run.status != RunStatus.RUNNING or run.heartbeat_at != seen or time.monotonic() > deadline:
            return False
        if run.attempts >= settings.RUN_MAX_ATTEMPTS:
            return False  # the sweeper gives up on it
        time.sleep(min(1.0, settings.RUN_HEARTBEAT_INTERVAL / 2))
    if run.attempts > 1:
        log.warning("run %s taken over (attempt %s)", run.pk, run.attempts)
    return True


@shared_task
def sweep_stale_runs() -> int:
    """Re-queue runs whose worker died (lease run out) or whose message was lost; give up on poison runs."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.RUN_STALE_AFTER)
    lapsed = now - timedelta(seconds=Run.lease_seconds())
    candidates = Run.objects.filter(
        Q(status=RunStatus.RUNNING, heartbeat_at__lt=lapsed)
        | Q(status=RunStatus.QUEUED, created_at__lt=stale, heartbeat_at__isnull=True)
        | Q(status=RunStatus.QUEUED, heartbeat_at__lt=stale)
    )
    requeued = 0
    for run in candidates:
        if run.kind == RunKind.ACCESS_KEY:  # its secret goes back only in the request that ran it
            _give_up(run, NOT_RERUN_ACCESS_KEY)
            continue
        if run.attempts >= settings.RUN_MAX_ATTEMPTS:
            attempts = counted(run.attempts, "attempt", "attempts")
            _give_up(run, f"Gave up after {attempts}: the worker stopped each time.")
            continue
        # Conditional: only if nobody touched it since we read it.
        if Run.objects.filter(pk=run.pk, status=run.status, claim_token=run.claim_token).update(
            status=RunStatus.QUEUED, claim_token="", heartbeat_at=now, attempts=F("attempts")
        ):
            execute_run.apply_async(args=(run.pk,))
            requeued += 1
            log.warning("re-queued stale run %s (attempt %s)", run.pk, run.attempts + 1)
    _requeue_abandoned_chunks(lapsed)
    return requeued


def _requeue_abandoned_chunks(lapsed: datetime) -> None:
    """A live run's chunk whose worker died: any worker may take it over (not only the run's own)."""
    abandoned = (
        RunChunk.objects.filter(
            status=ChunkStatus.RUNNING,
            heartbeat_at__lt=lapsed,
            attempts__lt=settings.RUN_MAX_ATTEMPTS,
            run__status=RunStatus.RUNNING,
            run__heartbeat_at__gte=lapsed,
        )
        .order_by()  # not by index: one message per fan-out, however many of its chunks
        .values_list("run_id", "fanout")
        .distinct()
    )
    for run_id, fanout in abandoned:
        execute_chunk.apply_async(args=(run_id, fanout))
        log.warning("re-queued an abandoned chunk of run %s", run_id)


NOT_RERUN_ACCESS_KEY = (
    "The process creating this access key stopped. It is not run again: a key made now would go to "
    "a worker, and nobody would see its secret. Check the agent's keys (a key may have been made) "
    "and create one again."
)


def _give_up(run: Run, explanation: str) -> None:
    """End a stale run as failed, if nobody touched it since it was read, and free its accounts."""
    Run.objects.filter(pk=run.pk, status=run.status, claim_token=run.claim_token).update(
        status=RunStatus.FAILED, finished_at=timezone.now(), explanation=explanation
    )
    RunLock.objects.filter(run=run).exclude(run__status__in=ACTIVE_RUN_STATUSES).delete()


@shared_task
def scheduled_audit() -> int:
    """Periodic audit (celery beat): queue an audit of every account (or return the one running)."""
    return audit_request(user=None).pk


@shared_task
def scheduled_organization_sync() -> list[int]:
    """Periodic sync (celery beat) of every organization with rules: the runs it queued."""
    return org_services.sync_scheduled()


@shared_task(
    autoretry_for=(Exception,),
    retry_backoff=5,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=6,
    acks_late=False,
)
def post_audit_webhook(payload: dict) -> int:
    """POST one new high-severity audit finding to AUDIT_WEBHOOK_URL, retried with backoff.

    A separate task so a slow or failing webhook never holds up or fails the audit. The payload is
    the finding (codes, account id, message): nothing secret.
    """
    return post_webhook(payload)

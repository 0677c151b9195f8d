"""Runs (one unit of engine work, claimed by one worker) and their append-only Operations."""

import json
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import F, Max, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone

from portal.models import AppendOnly

from .choices import ACTIVE_RUN_STATUSES, AuditStatus, ChunkStatus, OperationStatus, RunKind, RunStatus


class Run(models.Model):
    kind = models.CharField(max_length=16, choices=RunKind.choices, db_index=True)
    status = models.CharField(
        max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED, db_index=True
    )
    agent = models.ForeignKey(
        "accounts.AgentIdentity", null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )
    accounts = models.ManyToManyField("accounts.EcrAccount", blank=True, related_name="runs")
    # Account ids as text, so the run still says what it touched after an account is deleted.
    targets = models.JSONField(default=list, blank=True)
    options = models.JSONField(default=dict, blank=True, help_text="Non-secret run parameters.")
    plan = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    requested_by_name = models.CharField(max_length=150, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    explanation = models.TextField(blank=True)
    error = models.TextField(blank=True)
    task_id = models.CharField(max_length=64, blank=True)
    claim_token = models.CharField(max_length=36, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    cancel_requested = models.BooleanField(default=False)
    progress_total = models.PositiveIntegerField(default=0)
    progress_done = models.PositiveIntegerField(default=0)
    # The sequence of the run's latest operation: the counter each new operation takes its number from.
    last_sequence = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["status", "heartbeat_at"], name="run_status_heartbeat")]
        permissions = [("request_audit", "Can start audit runs")]

    def __str__(self) -> str:
        return f"Run {self.pk} ({self.kind}, {self.status})"

    def get_absolute_url(self) -> str:
        return reverse("provisioning:run_detail", args=[self.pk])

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_RUN_STATUSES

    @property
    def progress_expected(self) -> int:
        """The total to show: steps are planned as the run reaches them, so while it runs the confirmed
        preview's count keeps the bar from jumping back; once it is over, what was actually planned."""
        if self.status not in ACTIVE_RUN_STATUSES:
            return self.progress_total
        return max(self.progress_total, int((self.options or {}).get("previewed_changes") or 0))

    @property
    def progress_percent(self) -> int:
        if self.status not in ACTIVE_RUN_STATUSES:
            return 100
        expected = self.progress_expected
        return min(100, int(100 * self.progress_done / expected)) if expected else 0

    @staticmethod
    def lease_seconds() -> int:
        """How long a claim lasts without a heartbeat: RUN_LEASE_BEATS missed beats."""
        return int(settings.RUN_HEARTBEAT_INTERVAL * settings.RUN_LEASE_BEATS)

    def claim(self) -> bool:
        """Take this run for the current worker: a queued run, or a running one whose lease ran out
        (its worker stopped beating a lease ago) and that has attempts left.

        A conditional UPDATE: 0 rows means someone else has it. The claim token is the lease's
        holder: every heartbeat and the finish are conditional on it, so a worker presumed dead
        that comes back finds its token replaced and stops (RunLost) instead of writing on.
        """
        now = timezone.now()
        updated = claim_lease(
            Run.objects.filter(pk=self.pk),
            waiting=RunStatus.QUEUED,
            running=RunStatus.RUNNING,
            now=now,
            started_at=now,
            # Seeded once per attempt from the rows (the counter never falls behind them).
            last_sequence=Coalesce(_last_sequence_of_outer_run(), 0),
        )
        if updated:
            self.refresh_from_db()
        return updated

    def beat(self, **progress: Any) -> bool:
        """Record a sign of life (and progress, with what this process counted meanwhile); False once
        another worker has re-claimed the run."""
        counted = unwritten_progress.take(self.pk)
        try:
            with write_transaction(atomic=False):
                counted.write_notes(self.pk)
                return bool(
                    Run.objects.filter(pk=self.pk, claim_token=self.claim_token).update(
                        heartbeat_at=timezone.now(), **{**counted.fields(), **progress}
                    )
                )
        except BaseException:
            unwritten_progress.give_back(self.pk, counted)
            raise

    def count_progress(self, *, done: int = 0, total: int = 0) -> None:
        """Count progress in memory: the run's row gets it with the next write made to it anyway (an
        operation's start, a heartbeat, the finish), not with a write of its own per change."""
        unwritten_progress.add(self.pk, done=done, total=total)

    def note(self, message: str, level: str = "INFO") -> None:
        """A log line written with the run's next write (an operation's start, a log line, a
        heartbeat, the finish), not with an insert of its own: a bulk run's lines per account."""
        unwritten_progress.add(self.pk, notes=[(level, message)])

    def write_progress(self) -> None:
        """Write what this process has counted and noted (at the end of a step, before the finish)."""
        counted = unwritten_progress.take(self.pk)
        with write_transaction(atomic=False):
            counted.write_notes(self.pk)
            if counted.fields():
                Run.objects.filter(pk=self.pk).update(**counted.fields())

    def finish(
        self, status: str, *, explanation: str = "", error: str = "", result: dict[str, Any] | None = None
    ) -> None:
        fields: dict[str, Any] = {
            "status": status,
            "finished_at": timezone.now(),
            "explanation": explanation,
            "error": error,
        }
        if result is not None:
            fields["result"] = result
        counted = unwritten_progress.take(self.pk)
        counted.write_notes(self.pk)
        fields.update(counted.fields())
        if Run.objects.filter(pk=self.pk, claim_token=self.claim_token).update(**fields):
            RunLock.objects.filter(run_id=self.pk).delete()
        self.refresh_from_db()

    def merge_result(
        self, accounts: dict[str, str], errors: dict[str, str], cleared: Sequence[str] = ()
    ) -> None:
        """Merge accounts' outcomes into `result` in the database (its "accounts" and "errors"), not
        rewrite it whole: one statement carrying only what changed, so the JSON written per flush does
        not grow with the run, and workers sharing a run never overwrite each other's accounts.
        `cleared`: accounts whose earlier error no longer holds."""
        if not (accounts or errors or cleared):
            return
        table = Run._meta.db_table
        if connection.vendor == "postgresql":
            sql = _MERGE_RESULT_POSTGRESQL.format(table=table)
            params: list[Any] = [json.dumps(accounts), list(cleared), json.dumps(errors), self.pk]
        else:  # SQLite: a merge patch (RFC 7396), where null removes a key
            sql = _MERGE_RESULT_SQLITE.format(table=table)
            patch = {**dict.fromkeys(cleared), **errors}
            params = [json.dumps(accounts), json.dumps(patch), self.pk]
        with write_transaction(atomic=False), connection.cursor() as cursor:
            cursor.execute(sql, params)

    def log(self, message: str, level: str = "INFO") -> None:
        """A log line now (after the lines noted before it)."""
        counted = unwritten_progress.take(self.pk)
        try:
            with write_transaction(atomic=False):
                counted.write_notes(self.pk, (level, message))
        finally:
            unwritten_progress.give_back(self.pk, Progress(counted.done, counted.total))


def _last_sequence_of_outer_run() -> Subquery:
    """The largest operation sequence of the run being updated."""
    return Subquery(
        Operation.objects.filter(run=OuterRef("pk"))
        .order_by()
        .values("run")
        .annotate(last=Max("sequence"))
        .values("last")
    )


class Progress:
    """Changes counted done and planned, and log lines noted, not yet written to the run."""

    def __init__(self, done: int = 0, total: int = 0, notes: list[tuple[str, str]] | None = None):
        self.done, self.total = done, total
        self.notes: list[tuple[str, str]] = notes or []  # (level, message), in order

    def fields(self) -> dict[str, Any]:
        """The row's update: F() additions, so counts from several processes add up."""
        fields: dict[str, Any] = {}
        if self.done:
            fields["progress_done"] = F("progress_done") + self.done
        if self.total:
            fields["progress_total"] = F("progress_total") + self.total
        return fields

    def write_notes(self, run_id: int, *also: tuple[str, str]) -> None:
        """The noted lines (then `also`) in one insert."""
        lines = [*self.notes, *also]
        if lines:
            RunLogEntry.objects.bulk_create(
                [RunLogEntry(run_id=run_id, level=level, message=message[:4000]) for level, message in lines]
            )
        self.notes = []


class UnwrittenProgress:
    """Per run, the progress this process counted and the log lines it noted since it last wrote to
    the run (threads of one run count here without a write, and without waiting for one another
    beyond a dict update)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[int, Progress] = {}

    def add(
        self, run_id: int, *, done: int = 0, total: int = 0, notes: Sequence[tuple[str, str]] = ()
    ) -> None:
        with self._lock:
            progress = self._runs.setdefault(run_id, Progress())
            progress.done += done
            progress.total += total
            progress.notes.extend(notes)

    def take(self, run_id: int) -> Progress:
        with self._lock:
            return self._runs.pop(run_id, None) or Progress()

    def give_back(self, run_id: int, progress: Progress) -> None:
        """A write that was to carry it failed: the next one carries it (the lines first)."""
        with self._lock:
            pending = self._runs.setdefault(run_id, Progress())
            pending.done += progress.done
            pending.total += progress.total
            pending.notes[:0] = progress.notes


unwritten_progress = UnwrittenProgress()


_sqlite_writer = threading.Lock()


@contextmanager
def write_transaction(*, atomic: bool = True) -> Iterator[None]:
    """A short write transaction of the run's bookkeeping (never around an AWS call).

    SQLite admits one writer at a time, and a writer that finds the database locked sleeps in its
    busy handler, in steps growing to 100 ms: 32 threads starting writes at once waited up to 0.8 s
    each for a transaction of a millisecond. So on SQLite this process's writers queue on a lock,
    which hands over the moment the writer before commits (the database serialises them anyway).
    PostgreSQL has no such wait: there it is the transaction alone. `atomic=False`: one statement,
    which commits by itself.
    """
    with _sqlite_writer if connection.vendor == "sqlite" else nullcontext():
        if atomic:
            with transaction.atomic():
                yield
        else:
            yield


class RunLost(Exception):
    """Another worker has re-claimed this run (ours was presumed dead): stop without writing more."""


def claim_lease(
    rows: models.QuerySet[Any], *, waiting: str, running: str, now: datetime, **fields: Any
) -> bool:
    """Take a leased row (a run or a chunk) for this worker with one conditional UPDATE: `waiting`,
    or `running` with its lease run out (its worker stopped beating a lease ago) and attempts left.
    A new claim token marks the holder; False when another worker has it."""
    lapsed = Q(
        status=running,
        heartbeat_at__lt=now - timedelta(seconds=Run.lease_seconds()),
        attempts__lt=settings.RUN_MAX_ATTEMPTS,
    )
    return bool(
        rows.filter(Q(status=waiting) | lapsed).update(
            status=running,
            claim_token=str(uuid.uuid4()),
            attempts=models.F("attempts") + 1,
            heartbeat_at=now,
            **fields,
        )
    )


class RunChunk(models.Model):
    """Some accounts of one fan-out of a run, for any worker of the pool to take (flows/chunks.py).

    Leased like a run: a worker claims it with a conditional UPDATE (pending, or running with its
    lease run out: its worker died), beats while it works, and records the chunk's outcomes and plan
    here when it is done, for the run's own worker to merge. The run stays one Run.
    """

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="chunks")
    fanout = models.CharField(max_length=255, help_text="The fan-out it belongs to (its first step's label).")
    index = models.PositiveIntegerField()
    steps = models.JSONField(default=list, help_text="The labels of its account steps.")
    status = models.CharField(max_length=16, choices=ChunkStatus.choices, default=ChunkStatus.PENDING)
    claim_token = models.CharField(max_length=36, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    worker = models.CharField(max_length=255, blank=True, help_text="The worker that took it last.")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(default=dict, blank=True, help_text="Its accounts' outcomes and writes.")
    plan = models.JSONField(default=dict, blank=True, help_text="The steps it planned.")

    class Meta:
        ordering = ["run_id", "fanout", "index"]
        constraints = [
            models.UniqueConstraint(fields=["run", "fanout", "index"], name="runchunk_run_fanout_index")
        ]

    def __str__(self) -> str:
        return f"chunk {self.index} of run {self.run_id} ({self.status})"

    def claim(self, worker: str) -> bool:
        """Take it: pending, or running with its lease run out and attempts left (as Run.claim)."""
        updated = claim_lease(
            RunChunk.objects.filter(pk=self.pk),
            waiting=ChunkStatus.PENDING,
            running=ChunkStatus.RUNNING,
            now=timezone.now(),
            worker=worker[:255],
        )
        if updated:
            self.refresh_from_db()
        return updated

    def beat(self, **fields: Any) -> bool:
        """Renew the lease (and record fields); False once another worker has taken the chunk over."""
        return bool(
            RunChunk.objects.filter(pk=self.pk, claim_token=self.claim_token).update(
                heartbeat_at=timezone.now(), **fields
            )
        )

    def finish(self, result: dict[str, Any], plan: dict[str, Any]) -> bool:
        return self.beat(status=ChunkStatus.DONE, finished_at=timezone.now(), result=result, plan=plan)


class RunLock(models.Model):
    """One active run per account (and per agent for agent runs), enforced by the database.

    run_request inserts a row per key in the transaction that creates the run: a second run for the
    same account fails on the unique key instead of on a check made before the insert (two
    confirmations of one preview used to start two runs). Rows go when the run ends.
    """

    key = models.CharField(max_length=48, unique=True, help_text='"account:<pk>" or "agent:<pk>".')
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="locks")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.key} held by run {self.run_id}"


class RunLogEntry(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="log_entries")
    created_at = models.DateTimeField(auto_now_add=True)
    level = models.CharField(max_length=8, default="INFO")
    message = models.TextField()

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return f"{self.level} {self.message[:60]}"


# Run.merge_result: one update of the two maps inside the JSON, on each database in its own words.
_MERGE_RESULT_SQLITE = (
    "UPDATE \"{table}\" SET result = json_set(json_set(COALESCE(result, '{{}}'), "
    "'$.accounts', json_patch(COALESCE(json_extract(result, '$.accounts'), '{{}}'), %s)), "
    "'$.errors', json_patch(COALESCE(json_extract(result, '$.errors'), '{{}}'), %s)) WHERE id = %s"
)
_MERGE_RESULT_POSTGRESQL = (
    "UPDATE \"{table}\" SET result = jsonb_set(jsonb_set(COALESCE(result, '{{}}'::jsonb), "
    "'{{accounts}}', COALESCE(result->'accounts', '{{}}'::jsonb) || %s::jsonb), "
    "'{{errors}}', (COALESCE(result->'errors', '{{}}'::jsonb) - %s::text[]) || %s::jsonb) WHERE id = %s"
)

# The run's counter, moved and read in one statement (Django's update() returns no values).
_NEXT_SEQUENCE_SQL = (
    'UPDATE "{table}" SET last_sequence = last_sequence + 1, heartbeat_at = %s, '
    "progress_done = progress_done + %s, progress_total = progress_total + %s "
    "WHERE id = %s AND claim_token = %s RETURNING last_sequence"
)


class Operation(AppendOnly):
    """One AWS write the engine made (or tried), with the documents before and after.

    Recorded "started", with everything it is about to do, before the call; settled once after it
    (succeeded / failed), or, when its worker died mid-call, by the attempt that takes over the
    run, from the live state (applied / not applied). Settling a started row is the only change an
    Operation allows (`settle`): no other field changes, and a settled row never changes again.
    """

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="operations")
    sequence = models.PositiveIntegerField()
    step = models.CharField(
        max_length=255, blank=True, help_text="The flow step that planned it (to re-plan it after a crash)."
    )
    account_id = models.CharField(max_length=12, db_index=True)
    action = models.CharField(max_length=64)
    resource_arn = models.CharField(max_length=2048)
    summary = models.CharField(max_length=255, blank=True)
    request = models.JSONField(default=dict, blank=True, help_text="Redacted request parameters.")
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=OperationStatus.choices)
    error_code = models.CharField(max_length=128, blank=True)
    error_message = models.TextField(blank=True)
    request_id = models.CharField(max_length=128, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    attempts = models.PositiveSmallIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run_id", "sequence", "pk"]
        # Recovery reads a run's started operations in order, and the pages list by it.
        indexes = [models.Index(fields=["run", "sequence"], name="operation_run_sequence")]

    def __str__(self) -> str:
        return f"{self.action} {self.resource_arn} ({self.status})"

    @classmethod
    def start(cls, run: Run, **fields: Any) -> "Operation":
        """Record a write about to be made, "started", numbered from the run's counter.

        The counter moves in one statement (UPDATE .. RETURNING, PostgreSQL and SQLite alike), only
        while this worker still holds the run: the same conditional update as a heartbeat, so it
        beats too, and carries the progress counted meanwhile. The row is then inserted with the
        number it got: no two operations get one number, a number is never reused (a crash between
        the two leaves a gap, never a duplicate), and no thread waits for another's AWS call.
        """
        counted = unwritten_progress.take(run.pk)
        try:
            with write_transaction(atomic=False), connection.cursor() as cursor:
                counted.write_notes(run.pk)
                cursor.execute(
                    _NEXT_SEQUENCE_SQL.format(table=Run._meta.db_table),
                    [
                        connection.ops.adapt_datetimefield_value(timezone.now()),
                        counted.done,
                        counted.total,
                        run.pk,
                        run.claim_token,
                    ],
                )
                moved = cursor.fetchone()
                if moved is None:
                    raise RunLost(f"run {run.pk} was re-claimed by another worker")
                return cls.objects.create(
                    run=run, sequence=moved[0], status=OperationStatus.STARTED, **fields
                )
        except BaseException:
            unwritten_progress.give_back(run.pk, counted)
            raise

    def settle(self, status: str, **outcome: Any) -> bool:
        """Record the outcome of this started write, once; False if it was settled already (by the
        attempt that took the run over while this worker was presumed dead)."""
        if status == OperationStatus.STARTED:
            raise ValueError("An operation is settled with its outcome, not started again.")
        allowed = {"error_code", "error_message", "request_id", "duration_ms", "attempts"}
        if set(outcome) - allowed:
            raise ValueError(f"Only the outcome of an operation is settled, not {set(outcome) - allowed}.")
        # The plain QuerySet: AppendOnlyQuerySet refuses every update, this one is conditional.
        started: models.QuerySet[Operation] = models.QuerySet(Operation).filter(
            pk=self.pk, status=OperationStatus.STARTED
        )
        with write_transaction(atomic=False):
            if not started.update(status=status, **outcome):
                return False
        self.status = status
        for name, value in outcome.items():
            setattr(self, name, value)
        return True


class AuditSnapshot(models.Model):
    """What one audit saw in one ECR account: live and desired documents, findings, the plan.

    An unchanged state is not stored twice: the audit moves `confirmed_at` of the latest snapshot,
    so each row is a period (observed_at .. confirmed_at) and history shows when drift began and
    ended. The account id is kept as text so history outlives the account row.
    """

    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    ecr_account = models.ForeignKey(
        "accounts.EcrAccount",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="audit_snapshots",
    )
    account_id = models.CharField(max_length=12, db_index=True)  # text: survives the account row
    observed_at = models.DateTimeField(help_text="First audit that saw this state.")
    confirmed_at = models.DateTimeField(help_text="Latest audit that saw this state.")
    status = models.CharField(max_length=16, choices=AuditStatus.choices)
    drift_since = models.DateTimeField(null=True, blank=True, help_text="Out of sync since (unbroken).")
    live = models.JSONField(default=dict, blank=True)
    desired = models.JSONField(default=dict, blank=True)
    findings = models.JSONField(default=list, blank=True)
    plan = models.JSONField(default=dict, blank=True)
    # Denormalised from `findings` for filters and dashboard sums.
    severity_rank = models.PositiveSmallIntegerField(default=0)
    finding_codes = models.CharField(max_length=1024, blank=True, help_text="Space-delimited codes.")
    critical_count = models.PositiveIntegerField(default=0)
    high_count = models.PositiveIntegerField(default=0)
    medium_count = models.PositiveIntegerField(default=0)
    low_count = models.PositiveIntegerField(default=0)
    digest = models.CharField(max_length=64)
    is_latest = models.BooleanField(default=True)

    class Meta:
        ordering = ["-observed_at", "-pk"]
        indexes = [
            models.Index(fields=["account_id", "-observed_at"], name="auditsnap_account_time"),
            models.Index(fields=["is_latest", "severity_rank"], name="auditsnap_latest_rank"),
        ]

    def __str__(self) -> str:
        return f"{self.account_id} {self.status} at {self.observed_at:%Y-%m-%d %H:%M}"

    @property
    def finding_count(self) -> int:
        return self.critical_count + self.high_count + self.medium_count + self.low_count

"""Runs (one unit of engine work, claimed by one worker) and their append-only Operations."""

import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
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
        token = str(uuid.uuid4())
        now = timezone.now()
        lapsed = Q(
            status=RunStatus.RUNNING,
            heartbeat_at__lt=now - timedelta(seconds=Run.lease_seconds()),
            attempts__lt=settings.RUN_MAX_ATTEMPTS,
        )
        updated = Run.objects.filter(Q(status=RunStatus.QUEUED) | lapsed, pk=self.pk).update(
            status=RunStatus.RUNNING,
            claim_token=token,
            attempts=models.F("attempts") + 1,
            started_at=now,
            heartbeat_at=now,
        )
        if updated:
            self.refresh_from_db()
        return bool(updated)

    def beat(self, **progress: Any) -> bool:
        """Record a sign of life (and progress); False once another worker has re-claimed the run."""
        return bool(
            Run.objects.filter(pk=self.pk, claim_token=self.claim_token).update(
                heartbeat_at=timezone.now(), **progress
            )
        )

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
        if Run.objects.filter(pk=self.pk, claim_token=self.claim_token).update(**fields):
            RunLock.objects.filter(run_id=self.pk).delete()
        self.refresh_from_db()

    def log(self, message: str, level: str = "INFO") -> None:
        RunLogEntry.objects.create(run=self, level=level, message=message[:4000])


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
        token = str(uuid.uuid4())
        now = timezone.now()
        lapsed = Q(
            status=ChunkStatus.RUNNING,
            heartbeat_at__lt=now - timedelta(seconds=Run.lease_seconds()),
            attempts__lt=settings.RUN_MAX_ATTEMPTS,
        )
        updated = RunChunk.objects.filter(Q(status=ChunkStatus.PENDING) | lapsed, pk=self.pk).update(
            status=ChunkStatus.RUNNING,
            claim_token=token,
            attempts=models.F("attempts") + 1,
            worker=worker[:255],
            heartbeat_at=now,
        )
        if updated:
            self.refresh_from_db()
        return bool(updated)

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
        # The applier reads a run's last sequence before every write, and the pages list by it.
        indexes = [models.Index(fields=["run", "sequence"], name="operation_run_sequence")]

    def __str__(self) -> str:
        return f"{self.action} {self.resource_arn} ({self.status})"

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

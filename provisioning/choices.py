from django.db import models


class RunKind(models.TextChoices):
    AGENT = "agent", "Agent setup"
    ONBOARD = "onboard", "Onboard"
    RECONCILE = "reconcile", "Reconcile"
    ROTATE = "rotate", "ExternalId rotation"
    OFFBOARD = "offboard", "Offboard"
    AUDIT = "audit", "Audit"
    BULK = "bulk", "Bulk onboarding"
    ACCESS_KEY = "access_key", "Agent access key"
    ORG_DISCOVER = "org_discover", "Organization discovery"
    ORG_SYNC = "org_sync", "Organization sync"
    APP_SECRET = "app_secret", "Snyk client secret rotation"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"  # an expected failure: AWS refused, or the input cannot be applied
    ERRORED = "errored", "Errored"  # an unexpected exception in the portal: its traceback is in `error`
    PARTIAL = "partial", "Partially succeeded"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_RUN_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)
TERMINAL_RUN_STATUSES = (
    RunStatus.SUCCEEDED,
    RunStatus.FAILED,
    RunStatus.ERRORED,
    RunStatus.PARTIAL,
    RunStatus.CANCELLED,
)


class OperationStatus(models.TextChoices):
    """An Operation is recorded "started" before its AWS call and settled once, after it."""

    STARTED = "started", "Started, no answer yet"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    # Settled from the live state by the attempt that took over a run whose worker died mid-call.
    APPLIED = "applied", "Applied (found after a crash)"
    NOT_APPLIED = "not_applied", "Not applied (found after a crash)"


class ChunkStatus(models.TextChoices):
    """A chunk of a run's accounts (RunChunk): waiting for a worker, taken by one, or done."""

    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    DONE = "done", "Done"


# Operations whose write is in AWS (made and answered, or found there after a crash).
APPLIED_OPERATION_STATUSES = (OperationStatus.SUCCEEDED, OperationStatus.APPLIED)


class AuditStatus(models.TextChoices):
    IN_SYNC = "in_sync", "In sync"
    DRIFTED = "drifted", "Drifted"
    MISSING = "missing", "Missing"
    UNREACHABLE = "unreachable", "Unreachable"


# An account no audit has read yet has no snapshot: a state of the audit pages, not of a row.
NOT_AUDITED = "not_audited"
AUDIT_STATE_LABELS: dict[str, str] = {**dict(AuditStatus.choices), NOT_AUDITED: "Not audited yet"}


class Severity(models.TextChoices):
    CRITICAL = "critical", "Critical"
    HIGH = "high", "High"
    MEDIUM = "medium", "Medium"
    LOW = "low", "Low"


# Worst first is the higher rank; 0 means "no finding".
SEVERITY_RANK: dict[str, int] = {Severity.LOW: 1, Severity.MEDIUM: 2, Severity.HIGH: 3, Severity.CRITICAL: 4}

from django.db import models


class RunKind(models.TextChoices):
    AGENT = "agent", "Agent setup"
    ONBOARD = "onboard", "Onboard"
    RECONCILE = "reconcile", "Reconcile"
    ROTATE = "rotate", "ExternalId rotation"
    OFFBOARD = "offboard", "Offboard"
    AUDIT = "audit", "Audit"
    BULK = "bulk", "Bulk onboarding"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    PARTIAL = "partial", "Partially succeeded"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_RUN_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)
TERMINAL_RUN_STATUSES = (
    RunStatus.SUCCEEDED,
    RunStatus.FAILED,
    RunStatus.PARTIAL,
    RunStatus.CANCELLED,
)


class OperationStatus(models.TextChoices):
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"

"""The Celery app. Tasks take ids only, are acknowledged late and rejected when a worker dies."""

import os

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES

from portal import beat

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

# The embedded broker (see portal/kombu_fs.py); registered before any connection is made.
TRANSPORT_ALIASES["portalfs"] = "portal.kombu_fs:Transport"

app = Celery("portal")


def _configure() -> None:
    from django.conf import settings  # noqa: PLC0415  read when Celery configures, after Django is set up

    queue_dir = str(settings.CELERY_QUEUE_DIR)
    hard = settings.CELERY_TASK_HARD_TIME_LIMIT
    app.conf.update(
        broker_url=settings.CELERY_BROKER_URL,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            # Redis: a message not acknowledged within this time is delivered again. It must
            # outlive the hard time limit plus retry delays, or a long task runs twice at once.
            "visibility_timeout": hard + 3600,
            # Filesystem broker (embedded run).
            "data_folder_in": queue_dir,
            "data_folder_out": queue_dir,
            "polling_interval": 0.1,
        },
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=hard,
        task_soft_time_limit=settings.CELERY_TASK_SOFT_TIME_LIMIT,
        worker_hijack_root_logger=False,
        timezone="UTC",
        # One beat per schedule file (portal.beat): a second one refuses to start.
        beat_scheduler="portal.beat:ExclusiveScheduler",
        beat_schedule={
            "sweep-stale-runs": {
                "task": "provisioning.tasks.sweep_stale_runs",
                "schedule": float(settings.RUN_SWEEP_INTERVAL),
            },
            "scheduled-audit": {
                "task": "provisioning.tasks.scheduled_audit",
                "schedule": float(settings.AUDIT_INTERVAL),
            },
            "scheduled-organization-sync": {
                "task": "provisioning.tasks.scheduled_organization_sync",
                "schedule": float(settings.ORG_SYNC_INTERVAL),
            },
        },
    )


app.on_configure.connect(lambda **_: _configure(), weak=False)
beat.connect_signals()
app.autodiscover_tasks()

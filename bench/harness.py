"""The stack every scenario runs on: a scratch database, a moto server behind the fault proxy, and
real Celery worker processes. Nothing here touches the portal's own database or queue.

Database: a scratch SQLite file under a temporary folder, or, when DATABASE_URL names PostgreSQL,
a scratch database created beside it (dropped at the end). The Celery broker is the filesystem
broker in the scratch folder, or Redis when REDIS_URL is set (its queue is purged first).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

AGENT_ROLE = "SnykCraEc2Role"


def configure_django(scratch: Path) -> None:
    """Point settings at the scratch folder and fake AWS credentials, then set Django up."""
    os.environ["PORTAL_VAR_DIR"] = str(scratch)
    os.environ["CELERY_QUEUE_DIR"] = str(scratch / "queue")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ[key] = value  # never real credentials: every call goes to the emulator
    os.environ.pop("AWS_PROFILE", None)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    import warnings

    import django

    warnings.filterwarnings("ignore", message="No directory at")
    django.setup()
    for name in ("", "werkzeug", "provisioning", "portal", "accounts", "celery"):
        logging.getLogger(name).setLevel(logging.WARNING)


@dataclass
class Stack:
    proxy: Any  # bench.proxy.FaultProxy
    moto_url: str
    scratch: Path
    workers: int
    concurrency: int
    database: str
    broker: str


@contextmanager
def stack(*, delay: float, workers: int, concurrency: int, keep: bool = False) -> Iterator[Stack]:
    scratch = Path(tempfile.mkdtemp(prefix="ecr-portal-bench-"))
    configure_django(scratch)
    from django.conf import settings
    from django.db import connection
    from django.test.utils import setup_databases, setup_test_environment, teardown_databases

    from portal.testing import celery_workers, moto_server, purge_broker, worker_env
    from provisioning import aws

    from .proxy import FaultProxy

    setup_test_environment()
    if connection.vendor == "postgresql":
        settings.DATABASES["default"]["TEST"] = {"NAME": f"ecr_portal_bench_{os.getpid()}"}
    old_config = setup_databases(verbosity=0, interactive=False)
    try:
        with moto_server() as moto_url, FaultProxy(moto_url, delay=delay) as proxy:
            os.environ["AWS_ENDPOINT_URL"] = proxy.url
            aws.sessions.clear()
            purge_broker()
            with celery_workers(
                count=workers, concurrency=concurrency, env=worker_env(), log_dir=scratch / "workers"
            ):
                yield Stack(
                    proxy=proxy,
                    moto_url=moto_url,
                    scratch=scratch,
                    workers=workers,
                    concurrency=concurrency,
                    database=connection.vendor,
                    broker="redis" if settings.CELERY_BROKER_URL.startswith("redis") else "filesystem",
                )
            os.environ.pop("AWS_ENDPOINT_URL", None)
            aws.sessions.clear()
    finally:
        connection.close()
        teardown_databases(old_config, verbosity=0)
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)


def wait_for_runs(run_ids: list[int], timeout: float) -> float:
    """Wait until every run is terminal; returns the time waited. Raises on timeout."""
    from provisioning.choices import TERMINAL_RUN_STATUSES
    from provisioning.models import Run

    started = time.monotonic()
    while True:
        done = Run.objects.filter(pk__in=run_ids, status__in=TERMINAL_RUN_STATUSES).count()
        if done == len(run_ids):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(
                f"{len(run_ids) - done} of {len(run_ids)} run(s) not finished after {timeout}s"
            )
        time.sleep(0.05)

"""The stack every scenario runs on: a scratch database, a moto server behind the fault proxy, and
real Celery worker processes. Nothing here touches the portal's own database or queue.

Worker processes can be replaced mid-run by others (`Stack.restart_workers`: the latency scenario
runs with 1, 2 and 4), and are metered per scenario (`WorkerMeter`): which pool processes ran a task
(from their log lines) and the peak memory (RSS high-water mark) of every worker process.

Database: a scratch SQLite file under a temporary folder, or, when DATABASE_URL names PostgreSQL,
a scratch database created beside it (dropped at the end). The Celery broker is the filesystem
broker in the scratch folder, or Redis when REDIS_URL is set (its queue is purged first).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
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


# A worker's log line about the outcome of a task one of its pool processes ran ("received" lines
# are the main process's; the outcome is the pool process's: succeeded, raised, retry).
_TASK_DONE = re.compile(r"\bTask (?P<task>[\w.]+)\[(?P<id>[^\]]+)\] (?:succeeded|raised|retry|failed)")
# A pool process used less CPU than this in a scenario: it ran nothing (an idle child only waits).
BUSY_CPU_SECONDS = 0.05


def tasks_by_worker(logs: dict[str, str]) -> Counter[str]:
    """Tasks run per worker (its log's name), from the new text of the worker logs."""
    tasks: Counter[str] = Counter()
    for worker, text in logs.items():
        tasks[worker] += sum(1 for line in text.splitlines() if _TASK_DONE.search(line))
    return +tasks


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of the process so far; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # after the command: state (field 3) ... utime (14) and stime (15)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_processes(before: dict[int, float | None], after: dict[int, float | None]) -> dict[int, float]:
    """CPU seconds each pool process used between two readings, for those that did work."""
    used = {}
    for pid, end in after.items():
        start = before.get(pid) or 0.0  # a process started meanwhile (a replaced child) counts from 0
        if end is not None and end - start >= BUSY_CPU_SECONDS:
            used[pid] = round(end - start, 2)
    return used


def process_tree(pid: int) -> list[int]:
    """The process and its descendants (a prefork worker: its main process and pool children)."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with suppress(OSError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return pids


def peak_rss_mib(pid: int) -> float | None:
    """The process's RSS high-water mark (VmHWM) in MiB; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return round(int(match[1]) / 1024, 1) if match else None


def reset_peak_rss(pid: int) -> bool:
    """Start the high-water mark again from the current RSS (Linux 4.0+, our own processes)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@dataclass
class WorkerMeter:
    """What the workers did between start() and stop(): pool processes that worked (their CPU time),
    tasks per worker (its log), and the peak memory of every worker process."""

    log_dir: Path
    main_pids: list[int]
    offsets: dict[str, int] = field(default_factory=dict)
    cpu: dict[int, float | None] = field(default_factory=dict)
    reset: bool = False

    def _logs(self) -> list[Path]:
        return sorted(self.log_dir.glob("worker-*.log"))

    def _pool(self) -> list[int]:
        return [pid for main in self.main_pids for pid in process_tree(main) if pid != main]

    def start(self) -> WorkerMeter:
        self.offsets = {p.stem: p.stat().st_size for p in self._logs()}
        pids = [pid for main in self.main_pids for pid in process_tree(main)]
        self.reset = all([reset_peak_rss(pid) for pid in pids])  # noqa: C419  reset every one
        self.cpu = {pid: cpu_seconds(pid) for pid in self._pool()}
        return self

    def stop(self) -> dict[str, Any]:
        logs = {}
        for path in self._logs():
            with path.open("rb") as f:
                f.seek(self.offsets.get(path.stem, 0))
                logs[path.stem] = f.read().decode("utf-8", "replace")
        pool = self._pool()
        busy = busy_processes(self.cpu, {pid: cpu_seconds(pid) for pid in pool})
        rss = {pid: peak_rss_mib(pid) for main in self.main_pids for pid in process_tree(main)}
        peaks = [v for v in rss.values() if v is not None]
        return {
            "processes_used": len(busy),
            "pool_processes": len(pool),
            "pool_cpu_seconds": round(sum(busy.values()), 2),
            "tasks_by_worker": dict(sorted(tasks_by_worker(logs).items())),
            "peak_rss_mib": max(peaks, default=None),
            "peak_rss_mib_sum": round(sum(peaks), 1),
            "peak_since": "scenario start" if self.reset else "worker start",
        }


@dataclass
class Stack:
    proxy: Any  # bench.proxy.FaultProxy
    moto_url: str
    scratch: Path
    workers: int
    concurrency: int
    database: str
    broker: str
    worker_extra_env: dict[str, str] = field(default_factory=dict)
    capacity: float = 0.0  # the fake AWS's calls per second, measured first (bench/criteria.py)
    log_dir: Path = Path()
    _workers: ExitStack = field(default_factory=ExitStack)
    _procs: list[Any] = field(default_factory=list)
    _starts: int = 0

    def start_workers(self, count: int, concurrency: int) -> None:
        """Replace the running worker processes (if any) by `count` new ones."""
        from portal.testing import celery_workers, purge_broker, worker_env

        self.stop_workers()
        purge_broker()
        self._starts += 1
        self.log_dir = self.scratch / "workers" / f"{self._starts}-{count}x{concurrency}"
        self._procs = self._workers.enter_context(
            celery_workers(
                count=count,
                concurrency=concurrency,
                env=worker_env(**self.worker_extra_env),
                log_dir=self.log_dir,
            )
        )
        self.workers, self.concurrency = count, concurrency

    def stop_workers(self) -> None:
        self._workers.close()
        self._workers = ExitStack()
        self._procs = []

    def meter(self) -> WorkerMeter:
        return WorkerMeter(self.log_dir, [p.pid for p in self._procs]).start()


@contextmanager
def stack(
    *,
    delay: float,
    workers: int,
    concurrency: int,
    keep: bool = False,
    worker_env: dict[str, str] | None = None,
) -> Iterator[Stack]:
    scratch = Path(tempfile.mkdtemp(prefix="ecr-portal-bench-"))
    configure_django(scratch)
    from django.conf import settings
    from django.db import connection
    from django.test.utils import setup_databases, setup_test_environment, teardown_databases

    from portal.testing import moto_server
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
            st = Stack(
                proxy=proxy,
                moto_url=moto_url,
                scratch=scratch,
                workers=workers,
                concurrency=concurrency,
                database=connection.vendor,
                broker="redis" if settings.CELERY_BROKER_URL.startswith("redis") else "filesystem",
                worker_extra_env=dict(worker_env or {}),
            )
            try:
                st.start_workers(workers, concurrency)
                yield st
            finally:
                st.stop_workers()
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

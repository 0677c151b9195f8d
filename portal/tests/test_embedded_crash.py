"""`make run` when its processes are killed: no beat outlives its worker, and no second beat starts.

Before, SIGKILL of the Celery worker's main process left its embedded beat (and pool) running,
re-parented; the next `make run` on the same var/ started another beat and every periodic task
(audits, the stale-run sweeper) was sent twice.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from portal import beat
from portal.tests.test_beat import alive, wait_until
from portal.tests.test_embedded import ROOT, group_members, launch

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.skipif(not Path("/proc").is_dir(), reason="process checks read /proc (Linux)"),
]


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
                if int(fields[1]) == pid and fields[0] != "Z":
                    found.append(int(entry.name))
    return found


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def test_sigkill_of_the_worker_takes_its_beat_and_pool_with_it(tmp_path):
    var_dir = tmp_path / "var"
    portal = launch(var_dir, "killed-worker")
    try:
        portal.wait_ready()
        (worker,) = [p for p in children(portal.process.pid) if " celery " in cmdline(p)]
        # The embedded beat and the 2 pool processes (forked: the same command line).
        assert wait_until(lambda: len(children(worker)) >= 3, timeout=60), children(worker)
        below = children(worker)
        schedule = var_dir / "celerybeat-schedule"
        assert wait_until(lambda: beat.holder_pid(schedule) in below, timeout=60)

        os.kill(worker, signal.SIGKILL)

        assert wait_until(lambda: not any(alive(p) for p in below), timeout=10), [
            f"{p} {cmdline(p)[:80]}" for p in below if alive(p)
        ]
        assert beat.holder_pid(schedule) is None
        # The launcher sees its worker gone and stops the rest: nothing of the run is left.
        assert portal.process.wait(timeout=60) == 1
        assert "The worker process exited" in portal.output()
        assert wait_until(lambda: group_members(portal.process.pid) == [], timeout=10)
    finally:
        portal.kill_all()


def test_a_second_run_refuses_to_start_while_a_beat_holds_the_schedule(tmp_path):
    var_dir = tmp_path / "var"
    var_dir.mkdir(mode=0o700)
    schedule = var_dir / "celerybeat-schedule"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_QUEUE_DIR")}
    env["PORTAL_VAR_DIR"] = str(var_dir)
    # A beat left behind, as a SIGKILLed worker left it before (in its own session: not a child).
    leftover = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "portal", "beat", "--schedule", str(schedule)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert wait_until(lambda: beat.holder_pid(schedule) == leftover.pid, timeout=60)
        second = launch(var_dir, "second")
        try:
            deadline = time.monotonic() + 120
            while second.process.poll() is None and "Press Ctrl-C" not in second.output():
                assert time.monotonic() < deadline, second.output()[-3000:]
                time.sleep(0.2)
            assert second.process.wait(timeout=60) == 1, second.output()[-3000:]
            assert f"A celery beat (pid {leftover.pid}) still holds {schedule}.lock" in second.output()
            assert "Starting the AWS emulator" not in second.output()  # refused before starting anything
        finally:
            second.kill_all()
        assert leftover.poll() is None  # left alone: it may be another run's
    finally:
        leftover.kill()
        leftover.wait()


def test_a_second_beat_on_the_same_schedule_exits_with_the_reason(tmp_path):
    """Whoever starts it (compose, a shell): the beat itself refuses a schedule another beat holds."""
    schedule = tmp_path / "celerybeat-schedule"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_QUEUE_DIR")}
    env["PORTAL_VAR_DIR"] = str(tmp_path)
    command = [sys.executable, "-m", "celery", "-A", "portal", "beat", "--schedule", str(schedule)]
    first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: beat.holder_pid(schedule) == first.pid, timeout=60)
        second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode != 0
        assert f"Another celery beat (pid {first.pid}) holds {schedule}.lock" in second.stderr
        assert first.poll() is None and beat.holder_pid(schedule) == first.pid
    finally:
        first.kill()
        first.wait()

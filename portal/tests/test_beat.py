"""One beat per schedule file (portal.beat) and children that die with their parent (portal.processes).

Before, nothing stopped a second beat: a beat left behind by a SIGKILLed worker and the next
`make run`'s beat both sent every periodic task. Real processes where it matters: the lock is held
by another process, the parent really dies.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from portal import beat, celery_app, processes

ROOT = Path(__file__).resolve().parents[2]
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")


def alive(pid: int) -> bool:
    """Running (not a zombie waiting for its new parent to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def wait_until(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_the_schedule_lock_admits_one_holder_and_names_it(tmp_path):
    schedule = tmp_path / "celerybeat-schedule"
    assert beat.holder_pid(schedule) is None
    fd = beat.hold(schedule)
    try:
        assert beat.holder_pid(schedule) == os.getpid()
        with pytest.raises(
            beat.ScheduleLocked, match=rf"pid {os.getpid()}\) holds .*celerybeat-schedule\.lock"
        ):
            beat.hold(schedule)  # another open file description: flock refuses it as it would another process
    finally:
        os.close(fd)
    assert beat.holder_pid(schedule) is None  # released with the descriptor, as at the holder's death
    os.close(beat.hold(schedule))


def test_the_portals_scheduler_refuses_a_schedule_another_scheduler_holds(tmp_path):
    assert celery_app.conf.beat_scheduler == "portal.beat:ExclusiveScheduler"
    filename = str(tmp_path / "celerybeat-schedule")
    first = beat.ExclusiveScheduler(app=celery_app, schedule_filename=filename, lazy=False)
    try:
        with pytest.raises(beat.ScheduleLocked):
            beat.ExclusiveScheduler(app=celery_app, schedule_filename=filename, lazy=False)
        assert "sweep-stale-runs" in first.schedule
    finally:
        first.close()
    beat.ExclusiveScheduler(app=celery_app, schedule_filename=filename, lazy=False).close()


def test_a_lock_held_by_a_dead_process_is_free(tmp_path):
    schedule = tmp_path / "celerybeat-schedule"
    code = f"import os, portal.beat as b; b.hold({str(schedule)!r}); os.kill(os.getpid(), 9)"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False, timeout=60)
    assert beat.lock_path(schedule).read_text().strip().isdigit()  # the dead holder's pid is still written
    assert beat.holder_pid(schedule) is None


@linux_only
def test_a_child_dies_with_its_parent_even_when_the_parent_is_sigkilled():
    parent = (
        "import subprocess, sys, os\n"
        "from portal import processes\n"
        "child = subprocess.Popen(['sleep', '60'], preexec_fn=processes.preexec_die_with_parent())\n"
        "print(child.pid, flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    run = subprocess.run([sys.executable, "-c", parent], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == -signal.SIGKILL
    child = int(run.stdout.strip())
    try:
        assert wait_until(lambda: not alive(child)), "the child outlived its SIGKILLed parent"
    finally:
        if alive(child):
            os.kill(child, signal.SIGKILL)


@linux_only
def test_die_with_parent_signals_at_once_when_the_parent_is_already_gone():
    code = "import os\nfrom portal import processes\nprocesses.die_with_parent(os.getppid() + 1)\nprint('survived')"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == -signal.SIGKILL
    assert "survived" not in run.stdout


def test_without_prctl_nothing_is_asked_of_the_kernel(monkeypatch):
    monkeypatch.setattr(processes, "_prctl", None)
    assert processes.preexec_die_with_parent() is None  # subprocess gets no preexec_fn at all
    processes.die_with_parent(os.getppid() + 1)  # and a wrong parent is not acted on: a no-op elsewhere

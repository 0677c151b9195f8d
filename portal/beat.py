"""One celery beat per schedule file, and worker processes that die with the worker.

Two beats send every periodic task twice (two audits, two sweeps). A beat outlived its worker when
the worker's main process was SIGKILLed (the embedded beat of `worker --beat` is a forked child),
and the next `make run` started a second one. Two guards, each enough alone:

- the beat holds an exclusive `flock` on `<schedule file>.lock` for its whole life (the kernel
  releases it however the process ends), so a second beat on the same schedule refuses to start;
- the pool children and the embedded beat die with the worker's main process
  (portal.processes.die_with_parent: Linux; elsewhere the lock still holds).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

from celery import signals
from celery.beat import PersistentScheduler

from portal.processes import die_with_parent

LOCK_SUFFIX = ".lock"


class ScheduleLocked(RuntimeError):
    """Another beat holds the schedule file."""


def lock_path(schedule: str | Path) -> Path:
    return Path(f"{schedule}{LOCK_SUFFIX}")


def hold(schedule: str | Path) -> int:
    """Take the schedule's lock for this process's life (the descriptor stays open); its pid inside.

    Raises ScheduleLocked when another process holds it.
    """
    path = lock_path(schedule)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        holder = holder_pid(schedule)
        raise ScheduleLocked(
            f"Another celery beat (pid {holder or 'unknown'}) holds {path}: it already sends the "
            "periodic tasks. Stop it first; a second beat would send each of them twice."
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    os.set_inheritable(fd, False)  # a task's subprocess never keeps the beat's lock
    return fd


def holder_pid(schedule: str | Path) -> int | None:
    """The pid of the beat holding the schedule's lock, None when no process holds it."""
    path = lock_path(schedule)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode(errors="replace").strip()
            return int(text) if text.isdigit() else 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class ExclusiveScheduler(PersistentScheduler):
    """celery's file-backed scheduler, opened only by the process holding the schedule's lock."""

    schedule_filename: str  # set by PersistentScheduler (not in celery's type stubs)
    _lock_fd: int | None = None

    def setup_schedule(self) -> None:
        self._lock_fd = hold(self.schedule_filename)  # before the schedule file is opened
        super().setup_schedule()

    def close(self) -> None:
        super().close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


class _Worker:
    pid: int | None = None  # the worker's main process, remembered before it forks pool and beat


def _remember_worker(**_: Any) -> None:
    _Worker.pid = os.getpid()


def _die_with_worker(**_: Any) -> None:
    if _Worker.pid is not None:
        die_with_parent(_Worker.pid)


def connect_signals() -> None:
    """Pool children and the embedded beat (`worker --beat`) die with the worker's main process."""
    signals.worker_init.connect(_remember_worker, weak=False)
    signals.worker_process_init.connect(_die_with_worker, weak=False)
    signals.beat_embedded_init.connect(_die_with_worker, weak=False)

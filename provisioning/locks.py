"""agent_lock(): one writer at a time for an agent's shared permissions, across processes.

PostgreSQL: a session-level advisory lock (no transaction held open across the AWS call; released
if the worker dies because its connection closes). SQLite (the embedded run, one machine): an
flock on a file beside the database; select_for_update is a no-op there. Neither has a TTL, so a
slow holder can never be overtaken by a second one.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import connection

AGENT_LOCK_CLASS = 0x45435201  # advisory-lock namespace for agent permissions


@contextmanager
def agent_lock(agent_id: int) -> Iterator[None]:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s, %s)", [AGENT_LOCK_CLASS, agent_id])
        try:
            yield
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [AGENT_LOCK_CLASS, agent_id])
        return
    lock_dir = settings.VAR_DIR / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"agent-{agent_id}.lock", "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

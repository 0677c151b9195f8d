"""A running run's heartbeat: a thread that renews the run's lease while the run executes.

The steps beat too (before every write, with progress), but one step can block for minutes (IAM
propagation retries, a slow account): the lease must not run out under a live run, or a redelivered
message would take it over and run it twice. The thread beats every RUN_HEARTBEAT_INTERVAL; the
lease is RUN_LEASE_BEATS intervals, so a live run misses several beats before anyone may take it.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from django.conf import settings
from django.db import DatabaseError, connection

from .models import Run, RunChunk

log = logging.getLogger(__name__)


class Heartbeat:
    """`with Heartbeat(run):` beats for a claimed run (or chunk of one) until the block ends."""

    def __init__(self, run: Run | RunChunk, interval: float | None = None):
        self.run = run
        self.interval = float(interval if interval is not None else settings.RUN_HEARTBEAT_INTERVAL)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name=f"{type(run).__name__.lower()}{run.pk}-heartbeat", daemon=True
        )

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    if not self.run.beat():  # the steps stop at their own next beat (RunLost)
                        log.warning("%s: another worker holds its lease now; no more beats", self.run)
                        return
                except DatabaseError:  # a busy database: the next beat tries again, the lease has room
                    log.warning("%s: heartbeat failed", self.run, exc_info=True)
        finally:
            connection.close()  # this thread's own connection

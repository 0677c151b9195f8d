"""The filesystem broker (portal.kombu_fs) under load: real producer and consumer processes.

Kombu issue 1551: upstream's transport lets a consumer take a message file before the producer
has finished writing it; the consumer cannot decode it and the message is gone. The embedded run
depends on this transport, so it is tested the way it is used: several processes publishing and
several consuming the same queue folder at once, all starting on one signal.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class LoadResult:
    expected: set[str]
    delivered: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)  # "bad ..." and "error ..." lines
    leftovers: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def lost(self) -> set[str]:
        return self.expected - set(self.delivered)

    @property
    def duplicated(self) -> dict[str, int]:
        return {k: n for k, n in self.delivered.items() if n > 1}


def run_load(
    tmp_path: Path,
    transport: str,
    *,
    producers: int = 4,
    consumers: int = 4,
    count: int = 150,
    size: int = 64 * 1024,
    connect_after_go: bool = False,
    timeout: float = 180,
) -> LoadResult:
    folder = tmp_path / "queue"
    go, done = tmp_path / "go", tmp_path / "done"

    def spawn(*args: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "portal.tests.fs_load", *args]
        common = ["--folder", str(folder), "--go", str(go), "--transport", transport]
        if connect_after_go:
            common.append("--connect-after-go")
        return subprocess.Popen(cmd + common, cwd=ROOT, env={**os.environ, "TMPDIR": str(tmp_path)})

    outs = [tmp_path / f"consumer-{i}.txt" for i in range(consumers)]
    consumer_procs = [spawn("consume", "--out", str(out), "--done", str(done)) for out in outs]
    producer_procs = [
        spawn("produce", "--name", f"p{i}", "--count", str(count), "--size", str(size))
        for i in range(producers)
    ]
    time.sleep(1.5)  # every process imported and connected, waiting at the barrier
    started = time.monotonic()
    go.touch()
    try:
        for proc in producer_procs:
            assert proc.wait(timeout) == 0, "a producer failed"
        done.touch()
        for proc in consumer_procs:
            assert proc.wait(timeout) == 0, "a consumer crashed"
    finally:
        for proc in producer_procs + consumer_procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    result = LoadResult(expected={f"p{i}-{seq}" for i in range(producers) for seq in range(count)})
    result.seconds = time.monotonic() - started
    for out in outs:
        for line in out.read_text().splitlines():
            kind, _, rest = line.partition(" ")
            if kind == "ok":
                result.delivered[rest] += 1
            else:
                result.problems.append(line)
    # Whatever is still on disk was neither delivered nor cleaned up.
    result.leftovers = sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.suffix == ".msg"
    )
    return result


@pytest.mark.reliability
def test_every_message_is_delivered_exactly_once_with_many_producers_and_consumers(tmp_path):
    result = run_load(tmp_path, "portalfs")

    assert result.problems == []  # nothing half-read, nothing undecodable
    assert result.lost == set()
    assert result.duplicated == {}
    assert sum(result.delivered.values()) == len(result.expected) == 600
    assert result.leftovers == []  # no message left in the queue, staging or claimed folders
    print(f"portalfs: 600 messages of 64 KiB, 4 producers x 4 consumers, {result.seconds:.1f} s")


@pytest.mark.reliability
def test_processes_starting_together_on_an_empty_folder_all_publish(tmp_path):
    """The exchange table is created by whichever process binds first, while others publish."""
    result = run_load(
        tmp_path, "portalfs", producers=8, consumers=2, count=5, size=256, connect_after_go=True
    )

    assert result.problems == []
    assert result.lost == set()
    assert result.duplicated == {}
    assert result.leftovers == []


@pytest.mark.reliability
def test_upstream_transport_loses_messages_under_the_same_load(tmp_path):
    """The control: the load above is heavy enough to show kombu issue 1551 on upstream's transport.

    If this starts failing, upstream has fixed the race and portal.kombu_fs may be retired.
    """
    # A race shows on most loads, not all (a quiet moment can deliver everything): try a few.
    for attempt in range(4):
        (tmp_path / f"attempt-{attempt}").mkdir()
        result = run_load(tmp_path / f"attempt-{attempt}", "upstream", count=100)
        if result.lost:
            break

    assert result.lost, (
        "upstream's filesystem transport delivered everything 4 times: the load test is too light"
    )
    assert all(line.startswith("error ") for line in result.problems)


def test_a_fresh_folder_can_be_declared_and_keeps_its_tables_beside_the_queue(tmp_path, monkeypatch):
    """A queue declared before any message exists (the first web request of a fresh install)."""
    from portal.tests.fs_load import connect

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "var" / "queue"
    with connect(str(folder), "portalfs") as conn:
        queue = conn.SimpleQueue("fresh")
        assert queue.qsize() == 0
        queue.put({"n": 1})
        assert queue.get(timeout=5).payload == {"n": 1}
        queue.close()
    assert (folder / ".control" / "fresh.exchange").is_file()
    assert not (tmp_path / "control").exists()  # upstream's default: a folder wherever the process runs

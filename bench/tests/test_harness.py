"""The worker meter's parts: tasks from worker logs, pool processes that worked, peak memory."""

import os
import subprocess
import sys

import pytest

from bench import harness

LOG = """\
2026-12-02 06:33:52,102 INFO celery.worker.strategy [-] Task provisioning.tasks.execute_run[64f] received
2026-12-02 06:33:54,420 INFO celery.app.trace [-] Task provisioning.tasks.execute_run[64f] succeeded in 2.3s: 'ok'
[2026-12-02 06:34:01,000: INFO/ForkPoolWorker-2] Task provisioning.tasks.execute_chunk[a1] succeeded in 1s: None
[2026-12-02 06:34:02,000: ERROR/ForkPoolWorker-1] Task provisioning.tasks.execute_chunk[a2] raised unexpected: X
2026-12-02 06:34:03,000 INFO celery.app.trace [-] Task provisioning.tasks.execute_run[b3] retry: Retry in 1s
"""


def test_tasks_by_worker_counts_outcomes_not_receipts():
    tasks = harness.tasks_by_worker({"worker-0": LOG, "worker-1": LOG.splitlines()[0], "worker-2": ""})
    assert tasks == {"worker-0": 4}  # idle workers are left out


def test_busy_processes_are_those_that_used_cpu():
    before = {1: 10.0, 2: 5.0, 3: 1.0}
    after = {1: 12.5, 2: 5.01, 3: None, 4: 0.3}  # 3 is gone; 4 replaced a child meanwhile
    assert harness.busy_processes(before, after) == {1: 2.5, 4: 0.3}


def test_process_tree_peak_memory_and_its_reset_on_a_real_process():
    script = "import sys, time; b = bytearray(64 << 20); del b; print('freed', flush=True); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "freed"
        assert child.pid in harness.process_tree(os.getpid())
        assert harness.peak_rss_mib(child.pid) >= 64  # the high-water mark outlives the memory
        assert harness.cpu_seconds(child.pid) > 0
        if not harness.reset_peak_rss(child.pid):
            pytest.skip("this kernel does not let a process reset its child's high-water mark")
        assert harness.peak_rss_mib(child.pid) < 64  # from the RSS now, without the bytearray
    finally:
        child.kill()
        child.wait()
    assert harness.peak_rss_mib(child.pid) is None
    assert harness.cpu_seconds(child.pid) is None

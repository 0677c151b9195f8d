"""A run over many accounts spread over the worker pool in chunks (flows/chunks.py), with real worker
processes, a moto server behind the latency proxy, the test database and the broker: one Run, every
worker takes chunks, the agent's permissions are written once, a cancel stops every chunk, and a
worker killed mid-chunk is taken over without losing or doubling a write.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from accounts.choices import Lifecycle
from accounts.models import EcrAccount
from provisioning import services
from provisioning.choices import ChunkStatus, OperationStatus, RunStatus
from provisioning.models import Operation, Run, RunChunk

from .conftest import AGENT_ACCOUNT
from .test_reliability import (
    _log_dir,
    assert_converged,
    assert_every_portal_resource_has_its_operation,
    bulk_onboard,
    make_agent,
    proxy,  # noqa: F401  the fixture: moto behind the fault proxy
    setup_agent,
    wait_terminal,
)

pytestmark = [pytest.mark.reliability, pytest.mark.django_db(transaction=True)]

CHUNK = "4"  # accounts per chunk in these tests' workers (RUN_CHUNK_SIZE)


def hostnames(run: Run) -> set[str]:
    """The worker processes (Celery node names) that took the run's chunks."""
    return {
        worker.split(" ", 1)[0]
        for worker in RunChunk.objects.filter(run=run).values_list("worker", flat=True)
    }


def agent_writes(run: Run) -> int:
    return Operation.objects.filter(run=run, account_id=AGENT_ACCOUNT).count()


def test_bulk_run_is_taken_by_every_worker_and_writes_the_agent_once(proxy):  # noqa: F811
    from portal.testing import celery_workers, worker_env

    agent = make_agent()
    with celery_workers(count=2, concurrency=1, env=worker_env(RUN_CHUNK_SIZE=CHUNK)):
        setup_agent(agent)
        proxy.reset_counts()
        proxy.delay = 0.1  # each chunk lasts a few seconds: the second worker has time to join
        run, accounts = bulk_onboard(agent, 430000000000, 12, max_concurrency=2)
        (run,) = wait_terminal([run], timeout=180)

    assert run.status == RunStatus.SUCCEEDED, run.explanation
    assert run.attempts == 1
    chunks = list(RunChunk.objects.filter(run=run).order_by("index"))
    assert [len(c.steps) for c in chunks] == [4, 4, 4]
    assert {c.status for c in chunks} == {ChunkStatus.DONE}
    assert len(hostnames(run)) == 2, [c.worker for c in chunks]  # both worker processes took chunks
    # One run, with every account's outcome and every step's plan.
    assert run.result["accounts"] == {a.account_id: "succeeded" for a in accounts}
    planned = {step["label"] for step in run.plan["steps"]}
    assert {f"account {a.account_id}" for a in accounts} <= planned
    assert run.progress_done == run.operations.count() == run.progress_total
    # The agent's permissions: written once, after every chunk's service roles, listing them all.
    assert agent_writes(run) == 1 and proxy.writes(AGENT_ACCOUNT) == 1
    last_role = run.operations.filter(action="iam:CreateRole").latest("created_at").created_at
    assert run.operations.get(account_id=AGENT_ACCOUNT).created_at >= last_role
    assert_converged(agent, accounts)
    for account in accounts:
        calls = proxy.by_account[account.account_id]
        assert (calls["iam:CreateRole"], calls["iam:CreatePolicy"], calls["iam:AttachRolePolicy"]) == (
            1,
            1,
            1,
        )
    assert set(EcrAccount.objects.values_list("status", flat=True)) == {Lifecycle.ACTIVE}


def test_cancel_stops_every_chunk(proxy):  # noqa: F811
    from portal.testing import celery_workers, wait_for, worker_env

    agent = make_agent()
    with celery_workers(count=2, concurrency=1, env=worker_env(RUN_CHUNK_SIZE=CHUNK)):
        setup_agent(agent)
        proxy.delay = 0.2  # one account at a time per chunk: ~1 s an account
        run, _ = bulk_onboard(agent, 440000000000, 16, max_concurrency=1)
        wait_for(
            lambda: (
                len({w for w in RunChunk.objects.filter(run=run).values_list("worker", flat=True) if w}) >= 2
                and Operation.objects.filter(run=run).count() >= 2
            ),
            timeout=60,
            message="two workers on their chunks",
        )
        services.run_cancel(run=run)
        (run,) = wait_terminal([run], timeout=120)
        time.sleep(1)  # a chunk that would go on after the cancel has time to show it
        operations = Operation.objects.filter(run=run).count()

    assert run.status == RunStatus.CANCELLED, run.explanation
    chunks = list(RunChunk.objects.filter(run=run).order_by("index"))
    assert {c.status for c in chunks} == {ChunkStatus.DONE}
    # Every chunk stopped starting accounts: each has accounts that never started.
    for chunk in chunks:
        outcomes = list(chunk.result["accounts"].values())
        assert "not started" in outcomes, (chunk.index, chunk.result)
    not_started = [a for a, status in run.result["accounts"].items() if status == "not started"]
    assert len(not_started) >= 8, run.result
    created = set(run.operations.filter(action="iam:CreateRole").values_list("account_id", flat=True))
    assert created.isdisjoint(not_started)
    assert Operation.objects.filter(run=run).count() == operations  # nothing after the run ended
    assert not run.operations.filter(status=OperationStatus.STARTED).exists()


def test_worker_killed_mid_chunk_is_taken_over_and_converges(proxy):  # noqa: F811
    """SIGKILL a worker (not the run's own) while it works on a chunk: once the chunk's lease runs
    out it is taken over, what it left started is settled from AWS, and every account converges
    with each resource created exactly once and recorded."""
    from portal.testing import celery_workers, wait_for, worker_env

    heartbeat = 1  # the lease: RUN_LEASE_BEATS heartbeats
    env = worker_env(RUN_CHUNK_SIZE=CHUNK, RUN_HEARTBEAT_INTERVAL=str(heartbeat))
    agent = make_agent()
    with celery_workers(count=2, concurrency=1, env=env, log_dir=_log_dir("chunk-killed")) as workers:
        setup_agent(agent)
        proxy.delay = 0.25
        run, accounts = bulk_onboard(agent, 450000000000, 12, max_concurrency=2)

        def helper_busy() -> RunChunk | None:
            coordinator = next(
                (e.message for e in run.log_entries.all() if "the run's worker:" in e.message), ""
            ).rsplit("the run's worker: ", 1)[-1]
            for chunk in RunChunk.objects.filter(run=run, status=ChunkStatus.RUNNING):
                mine = Operation.objects.filter(run=run, step__in=chunk.steps)
                if coordinator and not chunk.worker.startswith(coordinator.split(" ")[0]) and mine.exists():
                    return chunk
            return None

        chunk = wait_for(helper_busy, timeout=60, message="the other worker mid-chunk")
        victim = next(w for i, w in enumerate(workers) if chunk.worker.startswith(f"test{i}@"))
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
        (run,) = wait_terminal([run], timeout=180)

    assert run.status == RunStatus.SUCCEEDED, run.explanation
    assert run.attempts == 1  # the run's own worker lived: only the chunk was taken over
    chunk.refresh_from_db()
    assert chunk.status == ChunkStatus.DONE and chunk.attempts == 2, chunk.worker
    assert run.result["accounts"] == {a.account_id: run.result["accounts"][a.account_id] for a in accounts}
    assert set(run.result["accounts"].values()) <= {"succeeded", "unchanged"}
    assert not run.operations.filter(status__in=(OperationStatus.FAILED, OperationStatus.STARTED)).exists()
    assert agent_writes(run) == 1
    assert_converged(agent, accounts)
    assert_every_portal_resource_has_its_operation([AGENT_ACCOUNT, *(a.account_id for a in accounts)])
    for account in accounts:
        calls = proxy.by_account[account.account_id]
        assert (calls["iam:CreateRole"], calls["iam:CreatePolicy"], calls["iam:AttachRolePolicy"]) == (
            1,
            1,
            1,
        )
    assert set(EcrAccount.objects.values_list("status", flat=True)) == {Lifecycle.ACTIVE}


def test_the_runs_own_worker_killed_mid_chunk_is_taken_over_and_converges(proxy):  # noqa: F811
    """SIGKILL the only worker, which holds the run and one of its chunks: a new worker and the sweeper
    take the run over; the chunks already done stay done, the killed one is taken over (what it left
    started settled from AWS), the agent's permissions are written once at the end."""
    from django.conf import settings

    from portal.testing import celery_workers, wait_for, worker_env
    from provisioning.tasks import sweep_stale_runs

    heartbeat = 1
    env = worker_env(RUN_CHUNK_SIZE="2", RUN_HEARTBEAT_INTERVAL=str(heartbeat))
    agent = make_agent()
    log_dir = _log_dir("chunk-coordinator-killed")
    with celery_workers(count=1, concurrency=1, env=env, log_dir=log_dir / "first") as (worker,):
        setup_agent(agent)
        proxy.reset_counts()
        proxy.delay = 0.25
        run, accounts = bulk_onboard(agent, 460000000000, 8, max_concurrency=2)
        wait_for(
            lambda: (
                RunChunk.objects.filter(run=run, status=ChunkStatus.DONE).exists()
                and RunChunk.objects.filter(run=run, status=ChunkStatus.RUNNING).exists()
                and Operation.objects.filter(run=run).count() >= 5
            ),
            timeout=60,
            message="a chunk done and one running",
        )
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING and run.attempts == 1
    assert agent_writes(run) == 0  # killed before the end

    proxy.delay = 0.0
    time.sleep(settings.RUN_LEASE_BEATS * heartbeat + 0.5)  # the run's and the chunk's leases ran out
    with celery_workers(count=1, concurrency=1, env=env, log_dir=log_dir / "second"):

        def swept() -> bool:  # as celery beat sends it: the run is re-queued once its lease ran out
            sweep_stale_runs.apply_async()
            return Run.objects.filter(pk=run.pk, attempts=2).exists()

        # The first message the new worker takes may be a chunk's (sent by the dead worker): it
        # takes the chunks over, beating the run, which the sweeper re-queues after that.
        wait_for(swept, timeout=120, interval=2, message="the run re-queued and taken over")
        (run,) = wait_terminal([run], timeout=120)

    assert run.status == RunStatus.SUCCEEDED, run.explanation
    assert run.attempts == 2
    chunks = list(RunChunk.objects.filter(run=run))
    assert {c.status for c in chunks} == {ChunkStatus.DONE}
    assert max(c.attempts for c in chunks) == 2  # the chunk the kill interrupted was taken over
    assert set(run.result["accounts"]) == {a.account_id for a in accounts}
    assert set(run.result["accounts"].values()) <= {"succeeded", "unchanged"}
    assert not run.operations.filter(status__in=(OperationStatus.FAILED, OperationStatus.STARTED)).exists()
    assert agent_writes(run) == 1
    assert_converged(agent, accounts)
    assert_every_portal_resource_has_its_operation([AGENT_ACCOUNT, *(a.account_id for a in accounts)])
    for account in accounts:
        calls = proxy.by_account[account.account_id]
        assert (calls["iam:CreateRole"], calls["iam:CreatePolicy"], calls["iam:AttachRolePolicy"]) == (
            1,
            1,
            1,
        )
    assert set(EcrAccount.objects.values_list("status", flat=True)) == {Lifecycle.ACTIVE}

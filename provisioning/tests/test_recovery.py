"""Crash recovery with real parts: a Celery worker process whose pool child is killed (SIGKILL) while
AWS writes are in flight, a moto server behind the fault proxy (bench/proxy.py), the test database.

What must hold through the crash: every resource the portal made in AWS has its Operation, the
writes in flight are settled from the live state (applied / not applied), and the redelivered
message takes the run over within a few heartbeat intervals, never while the run is alive.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from bench.proxy import Hold, Rule
from portal.celery import app
from portal.testing import celery_workers, wait_for, worker_env
from provisioning import services
from provisioning.choices import OperationStatus, RunStatus
from provisioning.models import Operation, Run

from .conftest import AGENT_ACCOUNT
from .test_reliability import (
    _log_dir,
    assert_converged,
    assert_every_portal_resource_has_its_operation,
    assert_operations_consistent,
    bulk_onboard,
    make_accounts,
    make_agent,
    proxy,  # noqa: F401  the fixture
    setup_agent,
    wait_terminal,
)

pytestmark = [pytest.mark.reliability, pytest.mark.django_db(transaction=True)]

HEARTBEAT = 1  # seconds: the lease is RUN_LEASE_BEATS (4) of them


def fast_heartbeat_env() -> dict[str, str]:
    return worker_env(RUN_HEARTBEAT_INTERVAL=str(HEARTBEAT))


def pool_child(worker) -> int:
    """The pid of the prefork worker's only pool process (the one executing tasks)."""
    children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def test_writes_in_flight_when_the_worker_dies_are_recorded_and_the_run_taken_over(proxy):  # noqa: F811
    """A bulk run's pool process is SIGKILLed while two CreateRole calls are in flight: one made by
    AWS (its answer never came back), one that never reached AWS. The worker requeues the message;
    the redelivered task takes the run over once the dead process's lease runs out (no sweeper
    here), settles both operations from the live state, and finishes the run."""
    agent = make_agent()
    log_dir = _log_dir("recovery")
    env = fast_heartbeat_env()
    with celery_workers(count=1, concurrency=1, env=env, log_dir=log_dir) as (worker,):
        setup_agent(agent)
        made = proxy.add_hold(Hold("iam:CreateRole", account=f"{470000000000:012d}", made=True))
        lost = proxy.add_hold(Hold("iam:CreateRole", account=f"{470000000001:012d}", made=False))
        run, accounts = bulk_onboard(agent, 470000000000, 3, max_concurrency=2)
        assert made.arrived.wait(60) and lost.arrived.wait(60), "both writes in flight"
        child = pool_child(worker)
        in_flight = list(Operation.objects.filter(run=run, action="iam:CreateRole").values_list("status"))
        os.kill(child, signal.SIGKILL)
        proxy.release_holds()
        # Taken over by the redelivered message within a few heartbeats (no sweeper runs here).
        wait_for(
            lambda: Run.objects.filter(pk=run.pk, attempts=2).exists(),
            timeout=15 * HEARTBEAT,
            message="the redelivered message to take the run over",
        )
        (run,) = wait_terminal([run], timeout=120)

    assert in_flight == [(OperationStatus.STARTED,)] * 2  # recorded before the calls were answered
    assert run.status == RunStatus.SUCCEEDED, run.explanation
    assert run.attempts == 2
    role_ops = {
        op.account_id: op.status
        for op in run.operations.filter(action="iam:CreateRole").exclude(status=OperationStatus.SUCCEEDED)
    }
    assert role_ops == {
        f"{470000000000:012d}": OperationStatus.APPLIED,
        f"{470000000001:012d}": OperationStatus.NOT_APPLIED,
    }
    assert not run.operations.filter(status=OperationStatus.STARTED).exists()
    assert "found its result in AWS" in run.operations.get(status=OperationStatus.APPLIED).error_message
    # The role AWS made was not made again; the one that never reached AWS was made by attempt 2.
    assert proxy.by_account[f"{470000000000:012d}"]["iam:CreateRole"] == 1
    assert proxy.by_account[f"{470000000001:012d}"]["iam:CreateRole"] == 2
    assert_every_portal_resource_has_its_operation([AGENT_ACCOUNT, *(a.account_id for a in accounts)])
    assert_converged(agent, accounts)
    assert_operations_consistent([run])


def test_a_live_run_in_a_long_step_is_never_taken_over(proxy):  # noqa: F811
    """IAM answers "Invalid principal" four times (eventual consistency): the step retries for
    ~15 s, far beyond the lease, beating from its heartbeat thread. A duplicate message delivered to
    the worker's other pool process meanwhile must leave the live run alone."""
    agent = make_agent()
    (account,) = make_accounts(agent, 480000000000, 1)
    log_dir = _log_dir("live")
    with celery_workers(count=1, concurrency=2, env=fast_heartbeat_env(), log_dir=log_dir):
        setup_agent(agent)
        rule = proxy.add_rule(
            Rule(
                "iam:CreateRole",
                code="MalformedPolicyDocument",
                status=400,
                message="Invalid principal in policy",
                account=account.account_id,
                times=4,
            )
        )
        run = services.account_onboard(account=account)
        wait_for(lambda: rule.hits >= 1, timeout=60, message="the step to start retrying")
        app.signature(services.EXECUTE_RUN_TASK, args=[run.pk]).apply_async()  # as a redelivery would
        wait_for(
            lambda: "not running it twice" in (log_dir / "worker-0.log").read_text(),
            timeout=60,
            message="the duplicate message to be refused",
        )
        still_retrying = run.operations.filter(
            action="iam:CreateRole", status=OperationStatus.STARTED
        ).exists()
        (run,) = wait_terminal([run], timeout=120)

    assert still_retrying  # the duplicate came while the long step was running
    assert run.status == RunStatus.SUCCEEDED, run.explanation
    assert run.attempts == 1
    assert proxy.by_account[account.account_id]["iam:CreateRole"] == 5  # 4 refused, 1 made: once
    assert proxy.by_account[account.account_id]["iam:CreatePolicy"] == 1
    assert_converged(agent, [account])

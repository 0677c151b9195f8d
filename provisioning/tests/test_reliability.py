"""Reliability under load and faults, with real parts: Celery worker processes, a moto server behind
the latency-and-fault proxy of bench/proxy.py, the test database (SQLite file or PostgreSQL) and the
broker (filesystem, or Redis when REDIS_URL is set).

Every test asserts what IAM holds at the end (read back through the portal's aws module) and the
rows the runs left behind; none asserts a duration.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from urllib.parse import urlsplit

import pytest
from django.db.models import Count

from accounts import services as account_services
from accounts.choices import Lifecycle
from accounts.models import AgentIdentity, EcrAccount
from bench.proxy import FaultProxy, Rule
from bench.scenarios import agent_permission_arns
from provisioning import aws, services
from provisioning.choices import (
    APPLIED_OPERATION_STATUSES,
    TERMINAL_RUN_STATUSES,
    OperationStatus,
    RunStatus,
)
from provisioning.models import Operation, Run

from .conftest import AGENT_ACCOUNT, iam_in

pytestmark = [pytest.mark.reliability, pytest.mark.django_db(transaction=True)]

READ_POLICY = "AmazonEC2ContainerRegistryReadOnlyForSnyk"


def management_role(account_id: str) -> str:
    # moto lets the base credentials assume any role ARN (it need not exist): the session lands in
    # that account, as with a real management role.
    return f"arn:aws:iam::{account_id}:role/PortalManagement"


@pytest.fixture
def proxy(monkeypatch):
    """A moto server behind the fault proxy (no delay, no faults until a test sets them)."""
    from portal.testing import moto_server, purge_broker

    with moto_server() as moto_url, FaultProxy(moto_url, delay=0.0, seed=7) as fault_proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", fault_proxy.url)
        aws.sessions.clear()
        purge_broker()
        yield fault_proxy
        aws.sessions.clear()


def make_agent() -> AgentIdentity:
    return account_services.agent_create(
        name="cra", kind="role", account_id=AGENT_ACCOUNT, management_role_arn=management_role(AGENT_ACCOUNT)
    )


def make_accounts(agent: AgentIdentity, first: int, count: int) -> list[EcrAccount]:
    return [
        account_services.account_create(
            agent=agent,
            account_id=f"{first + i:012d}",
            regions=["eu-west-1"],
            management_role_arn=management_role(f"{first + i:012d}"),
        )
        for i in range(count)
    ]


def bulk_onboard(agent: AgentIdentity, first: int, count: int, **options) -> tuple[Run, list[EcrAccount]]:
    """Bulk onboarding from a file, as a user uploads it: every row validated, then one bulk run."""
    from provisioning import lifecycle

    ids = [f"{first + i:012d}" for i in range(count)]
    content = "account_id,regions,management_role_arn\n" + "".join(
        f"{i},eu-west-1,{management_role(i)}\n" for i in ids
    )
    report = lifecycle.bulk_validate(agent=agent, content=content.encode(), filename="accounts.csv")
    assert report.ok, report.as_text()
    run = lifecycle.accounts_bulk_onboard(report=report, **options)
    return run, list(EcrAccount.objects.filter(account_id__in=ids))


def wait_terminal(runs: list[Run], timeout: float = 240) -> list[Run]:
    from portal.testing import wait_for

    ids = [r.pk for r in runs]
    wait_for(
        lambda: Run.objects.filter(pk__in=ids, status__in=TERMINAL_RUN_STATUSES).count() == len(ids),
        timeout=timeout,
        message=f"{len(ids)} run(s) to finish",
    )
    return list(Run.objects.filter(pk__in=ids).order_by("pk"))


def setup_agent(agent: AgentIdentity) -> None:
    (run,) = wait_terminal([services.agent_setup(agent=agent)], timeout=120)
    assert run.status == RunStatus.SUCCEEDED, run.explanation


def assert_converged(agent: AgentIdentity, accounts: list[EcrAccount]) -> None:
    """IAM holds exactly the desired state: the agent may assume exactly these roles, once each; every
    account has its role trusting the agent and its read-only policy attached, in one version."""
    granted = agent_permission_arns(agent)
    assert sorted(granted) == sorted(a.service_role_arn for a in accounts)
    for account in accounts:
        iam = iam_in(account.account_id)
        role = iam.get_role(account.service_role_name)
        assert role is not None, account.account_id
        trust = role["AssumeRolePolicyDocument"]["Statement"]
        assert [s["Principal"]["AWS"] for s in trust] == [agent.arn]
        assert iam.list_attached_policies("role", account.service_role_name) == [account.read_policy_arn]
        assert len(iam.list_policy_versions(account.read_policy_arn)) == 1


def assert_operations_consistent(runs: list[Run]) -> None:
    """Each run's operations are numbered 1..n without gaps or repeats, and no resource was created twice."""
    for run in runs:
        sequences = list(run.operations.order_by("sequence").values_list("sequence", flat=True))
        assert sequences == list(range(1, len(sequences) + 1)), (run.pk, sequences)
    created = (
        Operation.objects.filter(run__in=runs, action__in=("iam:CreateRole", "iam:CreatePolicy"))
        .filter(status__in=APPLIED_OPERATION_STATUSES)
        .values("action", "resource_arn")
        .annotate(n=Count("pk"))
        .filter(n__gt=1)
    )
    assert list(created) == []


CREATES = {"role": "iam:CreateRole", "policy": "iam:CreatePolicy"}


def portal_made(account_id: str) -> list[tuple[str, str]]:
    """(kind, ARN) of every role and customer-managed policy in the account tagged as the portal's."""
    from provisioning.changes import MANAGED_TAG

    iam = iam_in(account_id)
    found = []
    for role in iam.call("list_roles")["Roles"]:
        tags = iam.call("list_role_tags", RoleName=role["RoleName"])["Tags"]
        if MANAGED_TAG in tags:
            found.append(("role", role["Arn"]))
    for policy in iam.call("list_policies", Scope="Local")["Policies"]:
        tags = iam.call("list_policy_tags", PolicyArn=policy["Arn"])["Tags"]
        if MANAGED_TAG in tags:
            found.append(("policy", policy["Arn"]))
    return found


def assert_every_portal_resource_has_its_operation(account_ids: list[str]) -> None:
    """'Every AWS write is an Operation', read back from AWS: each resource the portal tagged was
    created by an Operation that says so (succeeded, or found applied after a crash)."""
    for account_id in account_ids:
        made = portal_made(account_id)
        assert made, account_id
        for kind, arn in made:
            recorded = Operation.objects.filter(
                action=CREATES[kind], resource_arn=arn, status__in=APPLIED_OPERATION_STATUSES
            )
            assert recorded.count() == 1, (arn, list(Operation.objects.filter(resource_arn=arn).values()))


def test_hundred_onboardings_at_once_over_two_workers(proxy):
    """100 onboarding runs requested at once, two worker processes with two children each."""
    from portal.testing import celery_workers

    agent = make_agent()
    accounts = make_accounts(agent, 410000000000, 100)
    with celery_workers(count=2, concurrency=2):
        setup_agent(agent)
        runs = [services.account_onboard(account=a) for a in accounts]
        runs = wait_terminal(runs, timeout=300)

    assert {r.status for r in runs} == {RunStatus.SUCCEEDED}, [(r.pk, r.explanation) for r in runs]
    assert {r.attempts for r in runs} == {1}  # no run executed twice
    assert_converged(agent, accounts)
    assert_operations_consistent(runs)
    # Each account's resources were written exactly once, as the proxy saw it (all attempts).
    for account in accounts:
        calls = proxy.by_account[account.account_id]
        assert (calls["iam:CreateRole"], calls["iam:CreatePolicy"], calls["iam:AttachRolePolicy"]) == (
            1,
            1,
            1,
        )
    # The agent's permissions were written far fewer times than there were runs (coalescing).
    assert 1 <= proxy.writes(AGENT_ACCOUNT) < 100


def test_worker_killed_mid_run_is_requeued_and_converges(proxy):
    """SIGKILL the worker (its whole process group) in the middle of a bulk run; a new worker and the
    sweeper finish it: every account converges, nothing is created twice, the run's rows line up."""
    from django.conf import settings

    from portal.testing import celery_workers, wait_for, worker_env
    from provisioning.tasks import sweep_stale_runs

    heartbeat = 1  # the lease: RUN_LEASE_BEATS heartbeats
    env = worker_env(RUN_HEARTBEAT_INTERVAL=str(heartbeat))
    agent = make_agent()
    log_dir = _log_dir("killed")
    with celery_workers(count=1, concurrency=1, env=env, log_dir=log_dir / "first") as (worker,):
        setup_agent(agent)
        proxy.delay = 0.25  # makes the run last ~10 s: 6 accounts, 2 at a time, ~7 calls each
        run, accounts = bulk_onboard(agent, 420000000000, 6, max_concurrency=2)
        wait_for(lambda: Operation.objects.filter(run=run).count() >= 4, timeout=60, message="4 operations")
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        done_before = Operation.objects.filter(run=run).count()
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING and run.attempts == 1
    assert done_before < 6 * 3 + 1  # it was killed before the end

    proxy.delay = 0.0
    time.sleep(settings.RUN_LEASE_BEATS * heartbeat + 0.5)  # no heartbeat since the kill: its lease ran out
    with celery_workers(count=1, concurrency=1, env=env, log_dir=log_dir / "second"):
        sweep_stale_runs.apply_async()  # as celery beat sends it; the worker runs it with its settings
        (run,) = wait_terminal([run], timeout=120)

    assert run.status == RunStatus.SUCCEEDED, run.explanation
    assert run.attempts == 2
    assert_converged(agent, accounts)
    assert_operations_consistent([run])
    # The write the kill interrupted, if any, was settled from AWS by attempt 2.
    assert not run.operations.filter(status__in=(OperationStatus.FAILED, OperationStatus.STARTED)).exists()
    assert_every_portal_resource_has_its_operation([AGENT_ACCOUNT, *(a.account_id for a in accounts)])
    # Nothing written twice in AWS, even the write that the kill may have left unrecorded.
    for account in accounts:
        calls = proxy.by_account[account.account_id]
        assert (calls["iam:CreateRole"], calls["iam:CreatePolicy"], calls["iam:AttachRolePolicy"]) == (
            1,
            1,
            1,
        )
    assert set(EcrAccount.objects.values_list("status", flat=True)) == {Lifecycle.ACTIVE}


def test_throttling_and_server_errors_are_absorbed(proxy):
    """20 % of calls throttled, 5 % answered with HTTP 500: botocore's standard retries absorb them and
    every run succeeds (faults are injected on a call's first 4 of 8 attempts only, so that a failure
    could only be ours, never the luck of 8 faults in a row)."""
    from portal.testing import celery_workers

    agent = make_agent()
    singles = make_accounts(agent, 430000000000, 4)
    proxy.throttle_rate, proxy.error_rate, proxy.max_faults_per_call = 0.20, 0.05, 4
    with celery_workers(count=2, concurrency=2):
        setup_agent(agent)
        runs = [services.account_onboard(account=a) for a in singles]
        bulk, batch = bulk_onboard(agent, 431000000000, 6)
        runs = wait_terminal([*runs, bulk], timeout=240)

    assert {r.status for r in runs} == {RunStatus.SUCCEEDED}, [(r.pk, r.explanation) for r in runs]
    assert proxy.faults["throttle"] > 0 and proxy.faults["500"] > 0, proxy.faults
    proxy.throttle_rate = proxy.error_rate = 0.0
    assert_converged(agent, singles + batch)
    assert_operations_consistent(runs)
    assert not Operation.objects.filter(status=OperationStatus.FAILED).exists()


def test_permanent_access_denied_fails_at_that_operation_and_a_rerun_succeeds(proxy):
    from portal.testing import celery_workers

    agent = make_agent()
    (account,) = make_accounts(agent, 440000000000, 1)
    rule = proxy.add_rule(Rule("iam:AttachRolePolicy", code="AccessDenied", account=account.account_id))
    with celery_workers(count=1, concurrency=1):
        setup_agent(agent)
        (failed,) = wait_terminal([services.account_onboard(account=account)])

        assert failed.status == RunStatus.FAILED
        assert "iam:AttachRolePolicy" in failed.explanation and "AccessDenied" in failed.explanation
        operations = list(
            failed.operations.order_by("sequence").values_list("action", "status", "error_code")
        )
        assert operations == [
            ("iam:CreatePolicy", OperationStatus.SUCCEEDED, ""),
            ("iam:CreateRole", OperationStatus.SUCCEEDED, ""),
            ("iam:AttachRolePolicy", OperationStatus.FAILED, "AccessDenied"),
        ]
        assert rule.hits == 1  # refused once: AccessDenied is not retried
        account.refresh_from_db()
        assert account.status == Lifecycle.FAILED

        proxy.clear_rules()  # the fix: the management role is granted the permission
        (rerun,) = wait_terminal([services.account_onboard(account=account)])

    assert rerun.status == RunStatus.SUCCEEDED, rerun.explanation
    actions = list(rerun.operations.order_by("sequence").values_list("action", flat=True))
    assert actions == ["iam:AttachRolePolicy", "iam:PutRolePolicy"]  # only what was left, then the agent
    account.refresh_from_db()
    assert account.status == Lifecycle.ACTIVE
    assert_converged(agent, [account])


@pytest.mark.redis
@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis (REDIS_URL)")
@pytest.mark.skipif(
    int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1,
    reason="restarts the Redis server, emptying every database: not beside other xdist workers "
    "(`make test` runs it in its serial pass)",
)
def test_redis_restart_loses_no_queued_run(proxy):
    """Redis restarts (without persistence: every queued message is gone) while runs are queued and
    running. The workers reconnect; the sweeper re-queues what the restart lost; every run finishes."""
    from portal.testing import celery_workers, wait_for, worker_env
    from provisioning.tasks import sweep_stale_runs

    stale_after = 4
    agent = make_agent()
    accounts = make_accounts(agent, 450000000000, 16)
    env = worker_env(RUN_STALE_AFTER=str(stale_after))
    with celery_workers(count=2, concurrency=1, env=env, log_dir=_log_dir("redis")):
        setup_agent(agent)
        proxy.delay = 0.1
        runs = [services.account_onboard(account=a) for a in accounts]
        wait_for(
            lambda: Run.objects.filter(pk__in=[r.pk for r in runs], status=RunStatus.SUCCEEDED).exists(),
            timeout=60,
            message="a first run to finish",
        )
        restart_redis(os.environ["REDIS_URL"])
        queued = Run.objects.filter(pk__in=[r.pk for r in runs], status=RunStatus.QUEUED).count()
        assert queued > 0  # the restart did drop queued messages: this test proves something
        proxy.delay = 0.0
        # The sweeper runs on a schedule (celery beat); here it is sent until every run is done.
        deadline = time.monotonic() + 180
        while Run.objects.filter(pk__in=[r.pk for r in runs], status__in=TERMINAL_RUN_STATUSES).count() < len(
            runs
        ):
            assert time.monotonic() < deadline, "runs lost after the Redis restart"
            time.sleep(stale_after + 0.5)
            _send_with_retry(sweep_stale_runs)
        runs = wait_terminal(runs)

    assert {r.status for r in runs} == {RunStatus.SUCCEEDED}, [(r.pk, r.explanation) for r in runs]
    assert_converged(agent, accounts)
    assert_operations_consistent(runs)


def restart_redis(url: str) -> None:
    """Restart the Redis server of `url` on the same port, empty (no RDB, no AOF)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", str(parts.port or 6379)
    assert host in ("127.0.0.1", "localhost"), "only a loopback Redis is restarted"
    subprocess.run(
        ["redis-cli", "-h", host, "-p", port, "shutdown", "nosave"], check=False, capture_output=True
    )
    server = ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", port]
    subprocess.run([*server, "--save", "", "--appendonly", "no"], check=True, capture_output=True)
    from portal.testing import wait_for

    wait_for(
        lambda: (
            subprocess.run(["redis-cli", "-h", host, "-p", port, "ping"], capture_output=True).returncode == 0
        ),
        timeout=20,
        message="Redis to answer again",
    )


def _send_with_retry(task, attempts: int = 10) -> None:
    for attempt in range(attempts):
        try:
            task.apply_async()
            return
        except Exception:  # the producer's pooled connection may still point at the old server
            if attempt == attempts - 1:
                raise
            time.sleep(0.5)


def _log_dir(name: str):
    from django.conf import settings

    return settings.VAR_DIR / "test-workers" / f"reliability-{name}-{os.getpid()}"


def run_inline(run: Run) -> Run:
    from provisioning import runner

    assert run.claim()
    return runner.execute(run)


def test_reapply_with_nothing_changed_writes_nothing_and_reads_the_agent_once(proxy):
    """Re-applying many accounts compares the agent's permissions with IAM once per run, not per
    account; a drift of the agent's permissions is still found and repaired by that one check."""
    agent = make_agent()
    accounts = make_accounts(agent, 460000000000, 4)
    assert run_inline(services.agent_setup(agent=agent, enqueue=False)).status == RunStatus.SUCCEEDED
    for account in accounts:
        assert (
            run_inline(services.account_onboard(account=account, enqueue=False)).status == RunStatus.SUCCEEDED
        )

    proxy.reset_counts()
    run = run_inline(services.account_reconcile(accounts=accounts, enqueue=False))
    assert run.status == RunStatus.SUCCEEDED, run.explanation
    assert proxy.writes() == 0 and not run.operations.exists()
    assert proxy.by_account[AGENT_ACCOUNT]["iam:GetRolePolicy"] == 1

    iam_in(AGENT_ACCOUNT).write("delete_role_policy", RoleName=agent.iam_name, PolicyName=agent.policy_name)
    proxy.reset_counts()
    run = run_inline(services.account_reconcile(accounts=accounts, enqueue=False))
    assert run.status == RunStatus.SUCCEEDED, run.explanation
    assert list(run.operations.values_list("action", flat=True)) == ["iam:PutRolePolicy"]
    assert proxy.writes() == 1
    assert_converged(agent, accounts)

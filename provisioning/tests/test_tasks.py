"""Run lifecycle: claiming, redelivery, and the sweeper that rescues runs of dead workers."""

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from accounts import services as account_services
from portal.celery import app
from provisioning import flows, services, tasks
from provisioning.choices import ChunkStatus, RunKind, RunStatus
from provisioning.models import Run, RunChunk, RunLock

from .conftest import BASE_ACCOUNT


@pytest.fixture
def eager():
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


@pytest.fixture
def agent(db, aws):
    return account_services.agent_create(name="cra", kind="user", account_id=BASE_ACCOUNT)


def test_a_redelivered_task_never_runs_a_run_twice(agent, aws):
    run = services.agent_setup(agent=agent, enqueue=False)
    assert tasks.execute_run(run.pk) == RunStatus.SUCCEEDED
    writes = aws.write_calls()
    assert tasks.execute_run(run.pk) == "not-claimed"
    assert aws.write_calls() == writes
    assert Run.objects.get(pk=run.pk).attempts == 1


def test_a_task_whose_run_raises_reports_it_errored(agent, monkeypatch):
    def broken(run):  # fault injection: a bug in the portal
        raise KeyError("missing")

    monkeypatch.setattr(flows.AGENT_SETUP, "execute", broken)
    run = services.agent_setup(agent=agent, enqueue=False)
    assert tasks.execute_run(run.pk) == RunStatus.ERRORED
    run.refresh_from_db()
    assert "KeyError: 'missing'" in run.error
    assert tasks.sweep_stale_runs() == 0  # terminal: never re-queued


def lapsed() -> datetime:
    """A heartbeat older than the lease: its worker is presumed dead."""
    return timezone.now() - timedelta(seconds=Run.lease_seconds() + 5)


def test_a_run_whose_worker_died_is_requeued_and_converges(agent, eager, settings):
    run = services.agent_setup(agent=agent, enqueue=False)
    stale = lapsed()
    # As a worker killed mid-run leaves it: running, claimed, silent.
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING, claim_token="dead", attempts=1, heartbeat_at=stale
    )
    assert tasks.sweep_stale_runs() == 1
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.attempts == 2


def test_a_live_run_is_left_alone(agent, settings):
    run = services.agent_setup(agent=agent, enqueue=False)
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING, claim_token="alive", heartbeat_at=timezone.now()
    )
    assert tasks.sweep_stale_runs() == 0
    assert Run.objects.get(pk=run.pk).status == RunStatus.RUNNING


def test_a_poison_run_ends_failed_instead_of_looping(agent, settings):
    run = services.agent_setup(agent=agent, enqueue=False)
    stale = lapsed()
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING, claim_token="dead", attempts=settings.RUN_MAX_ATTEMPTS, heartbeat_at=stale
    )
    assert tasks.sweep_stale_runs() == 0
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert f"after {settings.RUN_MAX_ATTEMPTS} attempt" in run.explanation


def test_the_stale_deadline_follows_the_heartbeat_interval(settings):
    settings.RUN_HEARTBEAT_INTERVAL = 7
    assert Run.lease_seconds() == 7 * settings.RUN_LEASE_BEATS


def test_a_redelivered_message_takes_over_a_run_whose_heartbeat_stopped(agent, aws):
    """No wait for the sweeper: the message a dead worker's broker redelivers runs the run."""
    run = services.agent_setup(agent=agent, enqueue=False)
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING, claim_token="dead", attempts=1, heartbeat_at=lapsed()
    )
    assert tasks.execute_run(run.pk) == RunStatus.SUCCEEDED
    run.refresh_from_db()
    assert run.attempts == 2 and run.claim_token != "dead"


def test_a_run_out_of_attempts_is_not_taken_over(agent, aws, settings):
    run = services.agent_setup(agent=agent, enqueue=False)
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING,
        claim_token="dead",
        attempts=settings.RUN_MAX_ATTEMPTS,
        heartbeat_at=lapsed(),
    )
    assert tasks.execute_run(run.pk) == "not-claimed"  # the sweeper fails it
    assert aws.write_calls() == 0


def test_a_running_run_within_its_lease_is_not_claimed(agent):
    run = services.agent_setup(agent=agent, enqueue=False)
    Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, claim_token="alive", attempts=1)
    Run.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now())
    assert not Run.objects.get(pk=run.pk).claim()


def test_a_late_worker_cannot_overwrite_a_reclaimed_run(agent):
    run = services.agent_setup(agent=agent, enqueue=False)
    assert run.claim()
    old_token = run.claim_token
    Run.objects.filter(pk=run.pk).update(status=RunStatus.QUEUED, claim_token="")
    fresh = Run.objects.get(pk=run.pk)
    assert fresh.claim()
    run.claim_token = old_token
    assert run.beat() is False
    run.finish(RunStatus.FAILED, explanation="late")
    assert Run.objects.get(pk=run.pk).status == RunStatus.RUNNING


def test_a_cancelled_queued_run_never_starts(agent, aws):
    run = services.agent_setup(agent=agent, enqueue=False)
    run = services.run_cancel(run=run)
    assert run.status == RunStatus.CANCELLED
    assert tasks.execute_run(run.pk) == "not-claimed"
    assert aws.write_calls() == 0
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="nothing to cancel"):
        services.run_cancel(run=run)


def test_a_running_run_stops_before_its_next_account(db, aws):
    from provisioning import runner

    from .conftest import make_management_role

    agent = account_services.agent_create(name="cra", kind="user", account_id=BASE_ACCOUNT)
    assert tasks.execute_run(services.agent_setup(agent=agent, enqueue=False).pk) == RunStatus.SUCCEEDED
    accounts = [
        account_services.account_create(
            agent=agent,
            account_id=account_id,
            regions=["us-east-1"],
            management_role_arn=make_management_role(account_id),
        )
        for account_id in ("222222222222", "333333333333")
    ]
    aws.calls.clear()
    run = services.account_reconcile(accounts=accounts, enqueue=False)
    assert run.claim()
    services.run_cancel(run=run)
    runner.execute(run)
    assert run.status == RunStatus.CANCELLED
    assert aws.write_calls() == 0


def test_cancel_is_an_operator_action(agent, client, viewer, operator, settings):
    from django.urls import reverse

    settings.SECURE_SSL_REDIRECT = False
    run = services.agent_setup(agent=agent, enqueue=False)
    url = reverse("provisioning:run_cancel", args=[run.pk])
    client.force_login(viewer)
    assert client.post(url).status_code == 403
    assert Run.objects.get(pk=run.pk).status == RunStatus.QUEUED
    client.force_login(operator)
    assert 'id="cancel-run"' in client.get(reverse("provisioning:run_detail", args=[run.pk])).content.decode()
    assert client.post(url).status_code == 302
    assert Run.objects.get(pk=run.pk).status == RunStatus.CANCELLED


def test_an_access_key_run_whose_process_died_fails_instead_of_running_again(agent, eager, aws):
    """Its secret goes only to the person who asked, in the request that ran it: a worker taking the
    run over would create a key nobody ever sees."""
    run = services.run_request(kind=RunKind.ACCESS_KEY, user=None, agent=agent, enqueue=False)
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING, claim_token="dead", attempts=1, heartbeat_at=lapsed()
    )
    writes = aws.write_calls()

    assert tasks.sweep_stale_runs() == 0

    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert "nobody would see" in run.explanation
    assert aws.write_calls() == writes
    assert not RunLock.objects.filter(run=run).exists()


def test_an_abandoned_chunk_of_a_live_run_is_sent_to_the_pool(agent, monkeypatch, settings):
    """The sweeper sends a chunk whose worker died (lease run out) to any worker; a chunk within its
    lease, one out of attempts, or one of a run whose own worker died (re-queued whole) is left."""
    sent = []
    monkeypatch.setattr(tasks.execute_chunk, "apply_async", lambda args: sent.append(tuple(args)))
    live = services.agent_setup(agent=agent, enqueue=False)
    Run.objects.filter(pk=live.pk).update(
        status=RunStatus.RUNNING, claim_token="live", heartbeat_at=timezone.now()
    )
    running = {"status": ChunkStatus.RUNNING, "claim_token": "dead"}
    RunChunk.objects.create(
        run=live, fanout="account 1", index=0, attempts=1, heartbeat_at=lapsed(), **running
    )
    RunChunk.objects.create(
        run=live, fanout="account 1", index=1, attempts=1, heartbeat_at=lapsed(), **running
    )
    RunChunk.objects.create(
        run=live, fanout="account 9", index=0, attempts=1, heartbeat_at=timezone.now(), **running
    )
    RunChunk.objects.create(
        run=live,
        fanout="account 8",
        index=0,
        attempts=settings.RUN_MAX_ATTEMPTS,
        heartbeat_at=lapsed(),
        **running,
    )
    tasks.sweep_stale_runs()
    assert sent == [(live.pk, "account 1")]


def test_a_pool_process_builds_its_aws_clients_as_it_starts(aws):
    """botocore reads a service's model once per process (a fifth of a second of CPU): a new pool
    process reads IAM's and STS's as it starts, not in its first run."""
    from celery.signals import worker_process_init

    worker_process_init.send(sender=None)
    assert set(aws.sessions._clients) >= {(True, "iam", ""), (False, "sts", "")}

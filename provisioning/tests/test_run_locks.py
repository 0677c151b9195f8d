"""One active run per account (and per agent), enforced by the database (issue 11, item 1).

Two confirmations of one preview used to start two runs: each request checked for an active run,
found none, and inserted its own. The check is still made (it answers early); the unique RunLock
key is what makes the second insert fail, however the requests interleave.
"""

import threading

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse

from accounts import services as account_services
from accounts.models import EcrAccount
from provisioning import services
from provisioning.choices import RunKind, RunStatus
from provisioning.models import Run, RunLock

from .conftest import AGENT_ACCOUNT, make_management_role
from .test_engine import run_inline


@pytest.fixture
def draft(db, aws):
    agent = account_services.agent_create(
        name="cra",
        kind="role",
        account_id=AGENT_ACCOUNT,
        management_role_arn=make_management_role(AGENT_ACCOUNT),
    )
    return account_services.account_create(
        agent=agent,
        account_id="222222222222",
        regions=["us-east-1"],
        management_role_arn=make_management_role("222222222222"),
    )


def test_two_requests_that_both_passed_the_check_make_one_run(draft):
    first_view = EcrAccount.objects.get(pk=draft.pk)  # what each request loaded before either wrote
    second_view = EcrAccount.objects.get(pk=draft.pk)
    first = services.account_onboard(account=first_view, enqueue=False)
    with pytest.raises(services.RunInProgress) as lost:
        services.account_onboard(account=second_view, enqueue=False)
    assert lost.value.run == first
    assert "Run #" in lost.value.messages[0] and "wait for it" in lost.value.messages[0]
    assert Run.objects.count() == 1
    assert list(RunLock.objects.values_list("key", flat=True)) == [f"account:{draft.pk}"]


def test_the_lock_goes_with_the_run_and_the_next_run_may_start(draft):
    run = run_inline(services.agent_setup(agent=draft.agent, enqueue=False))
    assert run.status == RunStatus.SUCCEEDED and not RunLock.objects.exists()
    run = run_inline(services.account_onboard(account=draft, enqueue=False))
    assert run.status == RunStatus.SUCCEEDED and not RunLock.objects.exists()
    queued = services.account_reconcile(accounts=[draft], enqueue=False)
    services.run_cancel(run=queued)
    assert not RunLock.objects.exists()
    assert services.account_reconcile(accounts=[draft], enqueue=False).kind == RunKind.RECONCILE


def test_a_lock_left_by_a_run_that_ended_without_releasing_it_is_taken_over(draft):
    run = services.account_onboard(account=draft, enqueue=False)
    Run.objects.filter(pk=run.pk).update(status=RunStatus.FAILED)  # as a crash between the two writes
    again = services.account_reconcile(accounts=[draft], enqueue=False)
    assert list(RunLock.objects.values_list("run_id", flat=True)) == [again.pk]


def test_agent_runs_lock_the_agent(draft):
    first = services.agent_setup(agent=draft.agent, enqueue=False)
    with pytest.raises(services.RunInProgress) as lost:
        services.agent_setup(agent=draft.agent, enqueue=False)
    assert lost.value.run == first


@pytest.mark.postgres
def test_simultaneous_confirmations_of_one_preview_start_one_run(
    transactional_db, aws, monkeypatch, admin_user
):
    """Three browsers confirm the same plan at the same moment: one run; the others land on it."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (DATABASE_URL): SQLite serialises every writer anyway")
    agent = account_services.agent_create(
        name="cra",
        kind="role",
        account_id=AGENT_ACCOUNT,
        management_role_arn=make_management_role(AGENT_ACCOUNT),
    )
    account = account_services.account_create(
        agent=agent,
        account_id="222222222222",
        regions=["us-east-1"],
        management_role_arn=make_management_role("222222222222"),
    )
    clients = [Client() for _ in range(3)]
    for client in clients:
        client.force_login(admin_user)
    url = reverse("accounts:account_plan", args=[account.account_id])
    body = clients[0].get(url, secure=True).content.decode()
    digest = body.split('name="plan_digest" value="', 1)[1][:64]
    barrier = threading.Barrier(3, timeout=30)
    real_onboard = services.account_onboard

    def racing_onboard(**fields):  # every request has passed its checks before any writes
        barrier.wait()
        return real_onboard(**fields)

    monkeypatch.setattr(services, "account_onboard", racing_onboard)
    locations: list[str] = []

    def confirm(client: Client) -> None:
        response = client.post(
            reverse("accounts:account_apply", args=[account.account_id]), {"plan_digest": digest}, secure=True
        )
        locations.append(response["Location"])
        connection.close()

    threads = [threading.Thread(target=confirm, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run = Run.objects.get()
    assert locations == [run.get_absolute_url()] * 3

"""The scheduled organization sync on real Celery worker processes (moto server)."""

import pytest

from accounts import organizations as org_inventory
from accounts.choices import Lifecycle
from accounts.models import EcrAccount
from portal import emulator
from provisioning import aws, org_services, tasks
from provisioning.choices import TERMINAL_RUN_STATUSES, RunKind, RunStatus
from provisioning.models import Run

from .conftest import BASE_ACCOUNT, make_management_role

pytestmark = [pytest.mark.reliability, pytest.mark.django_db(transaction=True)]


def _finished_syncs() -> list[Run]:
    return list(Run.objects.filter(kind=RunKind.ORG_SYNC, status__in=TERMINAL_RUN_STATUSES).order_by("pk"))


def test_beat_syncs_on_a_worker_applies_with_auto_apply_and_a_second_beat_writes_nothing(moto_endpoint):
    from accounts import services as inventory
    from portal.testing import celery_workers, wait_for

    seeded = emulator.create_demo_organization(aws.Access(BASE_ACCOUNT))
    agent = inventory.agent_create(
        name="cra",
        kind="role",
        account_id="111111111111",
        management_role_arn=make_management_role("111111111111"),
    )
    organization = org_services.organization_connect(name="acme", account_id=BASE_ACCOUNT, auto_apply=True)
    org_inventory.rule_create(
        organization=organization,
        agent=agent,
        regions=["us-east-1", "eu-west-1"],
        ou_ids=[seeded.units["Apps"]],
        include_children=True,
        broker_client_url_template="http://broker-{account_id}-{region}:8000",
    )
    wanted = sorted(seeded.accounts[n] for n in ("apps-web", "apps-api", "payments-core"))

    with celery_workers(count=2, concurrency=1):
        tasks.scheduled_organization_sync.apply_async()  # what celery beat sends every ORG_SYNC_INTERVAL
        first = wait_for(_finished_syncs, timeout=180, message="the scheduled sync")[0]
        assert first.status == RunStatus.SUCCEEDED, first.explanation
        assert first.explanation.startswith("Auto-apply is on: applied by the schedule.")
        assert first.requested_by_name == "cli" and first.attempts == 1
        assert sorted(first.result["accounts"]) == wanted
        assert set(first.result["accounts"].values()) == {"succeeded"}
        accounts = EcrAccount.objects.filter(account_id__in=wanted)
        assert {a.status for a in accounts} == {Lifecycle.ACTIVE}
        urls = set(accounts.get(account_id=wanted[0]).brokers.values_list("broker_client_url", flat=True))
        assert urls == {
            f"http://broker-{wanted[0]}-us-east-1:8000",
            f"http://broker-{wanted[0]}-eu-west-1:8000",
        }

        tasks.scheduled_organization_sync.apply_async()
        second = wait_for(lambda: _finished_syncs()[1:], timeout=120, message="the second sync")[0]
    assert second.status == RunStatus.SUCCEEDED, second.explanation
    assert second.operations.count() == 0
    assert "Nothing to change" in second.explanation

"""Organizations: discovery, rules, sync (in-process moto; the organization is made through provisioning.aws)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from accounts import organizations as org_inventory
from accounts.choices import Lifecycle
from accounts.models import EcrAccount, OnboardingRule, Organization, OrganizationSnapshot
from portal import emulator
from provisioning import aws as aws_module
from provisioning import org_services
from provisioning import organizations as orgs
from provisioning.choices import RunStatus
from provisioning.models import Run

from .conftest import BASE_ACCOUNT, make_management_role
from .test_engine import run_inline

BASE = aws_module.Access(BASE_ACCOUNT)


@pytest.fixture
def demo_org(aws):
    """The embedded demo's organization, managed by the base account."""
    return emulator.create_demo_organization(BASE)


@pytest.fixture
def agent(db, aws):
    from accounts import services as inventory

    return inventory.agent_create(
        name="cra",
        kind="role",
        account_id="111111111111",
        management_role_arn=make_management_role("111111111111"),
    )


def connect(name: str = "acme", **extra) -> Organization:
    return org_services.organization_connect(name=name, account_id=BASE_ACCOUNT, **extra)


def command(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_discovery_reads_the_tree_with_paths_states_and_tags(db, demo_org):
    organization = connect()
    run = run_inline(org_services.discover_request(organization=organization, enqueue=False))
    assert run.status == RunStatus.SUCCEEDED, run.explanation
    tree = OrganizationSnapshot.objects.get(organization=organization).tree
    accounts = {a["name"]: a for a in tree["accounts"] if a["name"] in demo_org.accounts}
    core = accounts["payments-core"]
    assert core["parent_id"] == demo_org.units["Apps/Payments"]
    assert core["path"] == (
        f"{tree['organization_id']}/{demo_org.root_id}/{demo_org.units['Apps']}/"
        f"{demo_org.units['Apps/Payments']}/{core['id']}/"
    )
    assert core["tags"] == {"team": "payments"}
    assert accounts["payments-legacy"]["state"] == "SUSPENDED"
    assert {u["path"].count("/") for u in tree["units"]} == {3, 4}


def add_rule(organization, agent, **fields) -> OnboardingRule:
    fields.setdefault("regions", ["us-east-1"])
    return org_inventory.rule_create(organization=organization, agent=agent, **fields)


def test_a_sync_onboards_the_ous_active_accounts_and_a_second_sync_writes_nothing(db, demo_org, agent):
    organization = connect()
    add_rule(
        organization,
        agent,
        ou_ids=[demo_org.units["Apps"]],
        include_children=True,
        broker_client_url_template="http://broker-{account_id}-{region}:8000",
        cr_agent_url_template="http://cra:8081",
    )
    wanted = sorted(demo_org.accounts[n] for n in ("apps-web", "apps-api", "payments-core"))
    preview = org_services.plan_sync(organization)
    assert preview.sync.onboard_ids == wanted
    assert preview.sync.decisions[demo_org.accounts["payments-legacy"]].action == orgs.SKIP
    assert not EcrAccount.objects.exists()

    aws_module.calls.clear()
    run = run_inline(org_services.sync_request(organization=organization, apply=True, enqueue=False))
    assert run.status == RunStatus.SUCCEEDED, run.explanation
    assert sorted(run.result["accounts"]) == wanted
    assert [c.action for c in preview.plan.changes] == list(
        run.operations.order_by("sequence").values_list("action", flat=True)
    )
    accounts = EcrAccount.objects.filter(account_id__in=wanted)
    assert {a.status for a in accounts} == {Lifecycle.ACTIVE}
    broker = accounts.get(account_id=wanted[0]).brokers.get()
    assert broker.broker_client_url == f"http://broker-{wanted[0]}-us-east-1:8000"

    again = run_inline(org_services.sync_request(organization=organization, apply=True, enqueue=False))
    assert again.status == RunStatus.SUCCEEDED, again.explanation
    assert again.operations.count() == 0
    assert "Nothing to change" in again.explanation


def test_the_organization_page_shows_the_tree_with_each_accounts_status(
    db, demo_org, agent, client, operator, settings
):
    settings.SECURE_SSL_REDIRECT = False
    organization = connect()
    add_rule(organization, agent, ou_ids=[demo_org.units["Apps"]], include_children=True)
    run_inline(org_services.discover_request(organization=organization, enqueue=False))
    client.force_login(operator)
    page = client.get(organization.get_absolute_url())
    assert page.status_code == 200
    html = page.content.decode()
    web, legacy = demo_org.accounts["apps-web"], demo_org.accounts["payments-legacy"]
    assert f'id="status-{web}">Not managed<' in html
    assert f'id="status-{legacy}">Suspended or closed<' in html
    sync_page = client.get(f"{organization.get_absolute_url()}sync/")
    assert sync_page.status_code == 200
    assert f'id="decision-{web}"' in sync_page.content.decode()


def test_with_auto_apply_off_a_scheduled_sync_waits_for_the_operator_to_confirm_its_preview(
    db, demo_org, agent, client, operator, settings
):
    settings.SECURE_SSL_REDIRECT = False
    organization = connect()
    add_rule(organization, agent, ou_ids=[demo_org.units["Apps"]])  # Apps only, not Payments below it
    (run_id,) = org_services.sync_scheduled()
    held = run_inline(Run.objects.get(pk=run_id))
    assert held.status == RunStatus.SUCCEEDED, held.explanation
    wanted = sorted(demo_org.accounts[n] for n in ("apps-web", "apps-api"))
    assert held.result["pending"]["onboard"] == wanted
    assert held.operations.count() == 0 and not EcrAccount.objects.exists()

    client.force_login(operator)
    page = client.get(organization.get_absolute_url()).content.decode()
    assert 'id="pending-change"' in page
    preview = client.get(f"{organization.get_absolute_url()}sync/")
    context = preview.context
    confirm_url = f"{organization.get_absolute_url()}sync/confirm/"
    stale = client.post(confirm_url, {"plan_digest": "0" * 64, "pins": context["pins"]})
    assert stale.status_code == 200 and not EcrAccount.objects.exists()  # the new preview, nothing run
    response = client.post(
        confirm_url, {"plan_digest": context["preview"]["digest"], "pins": context["pins"]}
    )
    assert response.status_code == 302
    run = run_inline(Run.objects.filter(kind="org_sync").latest("pk"))
    assert run.status == RunStatus.SUCCEEDED, run.explanation
    assert (
        sorted(EcrAccount.objects.filter(status=Lifecycle.ACTIVE).values_list("account_id", flat=True))
        == wanted
    )
    assert not org_services.pending_change(organization)

"""Organizations: discovery, rules, sync (in-process moto; the organization is made through provisioning.aws)."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

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


# --- discovery: pagination and what moto does not model -----------------------------------------------


def test_list_accounts_follows_next_token_over_45_accounts_20_at_a_time(db, aws):
    aws_module.call(BASE, "organizations", "create_organization", FeatureSet="ALL")
    for n in range(45):
        aws_module.call(
            BASE, "organizations", "create_account", AccountName=f"a{n:02}", Email=f"a{n:02}@example.com"
        )
    aws_module.calls.clear()
    tree = orgs.read_tree(Organization(name="big", account_id=BASE_ACCOUNT))
    assert len(tree["accounts"]) == 46  # and the management account
    assert aws_module.calls["organizations:ListAccounts"] == 3  # 20 + 20 + 6
    assert aws_module.calls["organizations:ListTagsForResource"] == 46


def test_every_list_follows_next_token_even_after_an_empty_page(aws):
    """moto's ListChildren ignores MaxResults and never pages: a botocore Stubber plays AWS's pages,
    an empty one with a NextToken included ("can occasionally return an empty set ... even when more
    results are available")."""
    from botocore.stub import Stubber

    reader = object.__new__(aws_module.Organizations)
    reader.client = aws_module.sessions.base().client("organizations", region_name="us-east-1")
    pages = [
        ({"Children": [{"Id": "111111111111", "Type": "ACCOUNT"}], "NextToken": "t1"}, {}),
        ({"Children": [], "NextToken": "t2"}, {"NextToken": "t1"}),
        ({"Children": [{"Id": "222222222222", "Type": "ACCOUNT"}]}, {"NextToken": "t2"}),
    ]
    with Stubber(reader.client) as stub:
        for answer, token in pages:
            stub.add_response(
                "list_children",
                answer,
                {"ParentId": "r-ab12", "ChildType": "ACCOUNT", "MaxResults": 20, **token},
            )
        assert reader.list_child_accounts("r-ab12") == ["111111111111", "222222222222"]
        stub.assert_no_pending_responses()


def test_closing_states_are_real_account_states_of_the_api():
    """moto closes an account straight to SUSPENDED; botocore's model has the states discovery treats
    as ended (CLOSED, PENDING_CLOSURE) and the Paths field moto leaves out."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("organizations")
    account = model.shape_for("Account")
    assert set(orgs.ENDED_STATES) <= set(account.members["State"].enum)
    assert "Paths" in account.members


# --- rules -----------------------------------------------------------------------------------------------

UNITS = {
    "ou-ab12-apps0001": {"id": "ou-ab12-apps0001", "parent_id": "r-ab12"},
    "ou-ab12-pay00001": {"id": "ou-ab12-pay00001", "parent_id": "ou-ab12-apps0001"},
}


def node(
    account_id="333333333333", *, parent="ou-ab12-apps0001", name="web", email="web@example.com", **tags
):
    return {
        "id": account_id,
        "name": name,
        "email": email,
        "state": "ACTIVE",
        "parent_id": parent,
        "tags": tags,
    }


def rule(position=1, **fields) -> OnboardingRule:
    fields.setdefault("regions", ["us-east-1"])
    return OnboardingRule(position=position, **fields)


@pytest.mark.parametrize(
    ("fields", "account", "matches"),
    [
        ({"ou_ids": ["ou-ab12-apps0001"]}, node(), True),
        ({"ou_ids": ["ou-ab12-apps0001"]}, node(parent="ou-ab12-pay00001"), False),
        ({"ou_ids": ["ou-ab12-apps0001"], "include_children": True}, node(parent="ou-ab12-pay00001"), True),
        ({"ou_ids": ["r-ab12"], "include_children": True}, node(parent="ou-ab12-pay00001"), True),
        ({"account_ids": ["333333333333"]}, node(), True),
        ({"account_ids": ["444444444444"]}, node(), False),
        ({"name_glob": "WEB*"}, node(name="web-prod"), True),
        ({"name_glob": "web-?"}, node(name="web-prod"), False),
        ({"email_glob": "*@example.com"}, node(), True),
        ({"email_glob": "*@corp.example.com"}, node(), False),
        ({"tag_key": "snyk", "tag_value": "yes"}, node(snyk="yes"), True),
        ({"tag_key": "snyk", "tag_value": "yes"}, node(snyk="no"), False),
        (
            {"ou_ids": ["ou-ab12-apps0001"], "name_glob": "api*"},
            node(name="web"),
            False,
        ),  # every matcher holds
    ],
)
def test_each_rule_kind_matches_what_it_names(fields, account, matches):
    assert org_inventory.rule_matches(rule(**fields), account, UNITS) is matches


def test_the_first_matching_rule_decides_and_an_exclusion_stops_at_its_rule():
    broad = rule(1, ou_ids=["r-ab12"], include_children=True, exclude=["444444444444"])
    narrow = rule(2, name_glob="*")
    assert org_inventory.first_match([broad, narrow], node(), UNITS).rule is broad
    assert org_inventory.first_match([narrow, broad], node(), UNITS).rule is narrow
    excluded = org_inventory.first_match([broad, narrow], node("444444444444"), UNITS)
    assert (excluded.rule, excluded.reason) == (None, "excluded by rule 1")
    assert org_inventory.first_match([rule(1, name_glob="api*")], node(), UNITS).reason == "no rule matches"


# --- leaving, closing, and what a sync never touches ------------------------------------------------------


def _synced(demo_org, agent, **rule_fields):
    organization = connect()
    add_rule(organization, agent, ou_ids=[demo_org.units["Apps"]], include_children=True, **rule_fields)
    run = run_inline(org_services.sync_request(organization=organization, apply=True, enqueue=False))
    assert run.status == RunStatus.SUCCEEDED, run.explanation
    return organization


def _move(demo_org, name, source, destination):
    aws_module.call(
        BASE,
        "organizations",
        "move_account",
        AccountId=demo_org.accounts[name],
        SourceParentId=demo_org.units.get(source, demo_org.root_id),
        DestinationParentId=demo_org.units.get(destination, demo_org.root_id),
    )


def test_accounts_that_move_out_are_closed_or_leave_are_offboarded_per_the_rule(db, demo_org, agent):
    organization = _synced(demo_org, agent)
    web, api, core = (demo_org.accounts[n] for n in ("apps-web", "apps-api", "payments-core"))
    _move(demo_org, "apps-web", "Apps", "Platform")
    aws_module.call(BASE, "organizations", "close_account", AccountId=api)
    aws_module.call(BASE, "organizations", "remove_account_from_organization", AccountId=core)
    run = run_inline(org_services.sync_request(organization=organization, apply=True, enqueue=False))
    assert run.status == RunStatus.SUCCEEDED, run.explanation
    decisions = run.result["decisions"]
    assert decisions[web]["reason"].startswith("stopped matching")
    assert decisions[api]["reason"].startswith("suspended")
    assert decisions[core]["reason"].startswith("left the organization")
    assert set(EcrAccount.objects.filter(status=Lifecycle.REMOVED).values_list("account_id", flat=True)) == {
        web,
        api,
        core,
    }
    assert iam_role_missing(web) and iam_role_missing(api)
    assert {b.status for b in EcrAccount.objects.get(account_id=web).brokers.all()} == {"retired"}
    again = run_inline(org_services.sync_request(organization=organization, apply=True, enqueue=False))
    assert again.operations.count() == 0, again.explanation


def iam_role_missing(account_id: str) -> bool:
    member = aws_module.Access(account_id, f"arn:aws:iam::{account_id}:role/OrganizationAccountAccessRole")
    return aws_module.Iam(member).get_role("SnykEcrServiceRole") is None


def test_a_rule_that_says_keep_keeps_a_leaving_account(db, demo_org, agent):
    organization = _synced(demo_org, agent, on_leave="keep")
    _move(demo_org, "apps-web", "Apps", "Platform")
    run = run_inline(org_services.sync_request(organization=organization, apply=True, enqueue=False))
    assert run.operations.count() == 0
    assert EcrAccount.objects.get(account_id=demo_org.accounts["apps-web"]).status == Lifecycle.ACTIVE
    assert "kept (its rule says keep)" in run.result["decisions"][demo_org.accounts["apps-web"]]["reason"]


def test_a_closed_account_is_offboarded_like_a_suspended_one(db, demo_org, agent):
    """moto has no CLOSED or PENDING_CLOSURE: the stored tree is given those states (a thin fake)."""
    organization = _synced(demo_org, agent)
    tree = orgs.read_tree(organization)
    states = {demo_org.accounts["apps-web"]: "CLOSED", demo_org.accounts["apps-api"]: "PENDING_CLOSURE"}
    for account in tree["accounts"]:
        account["state"] = states.get(account["id"], account["state"])
    decisions, _ = orgs.decide(organization, tree)
    assert {k: d.action for k, d in decisions.items() if k in states} == dict.fromkeys(states, orgs.OFFBOARD)
    nodes = {a["id"]: a for a in tree["accounts"]}
    account = EcrAccount.objects.get(account_id=demo_org.accounts["apps-web"])
    assert orgs.portal_status(nodes[account.account_id], account) == "suspended"


def test_a_sync_never_touches_an_account_it_did_not_onboard(db, demo_org, agent):
    from accounts import services as inventory

    by_hand = demo_org.accounts["apps-web"]
    inventory.account_create(agent=agent, account_id=by_hand, regions=["us-east-1"])
    organization = _synced(demo_org, agent)
    _move(demo_org, "apps-web", "Apps", "Platform")
    run = run_inline(org_services.sync_request(organization=organization, apply=True, enqueue=False))
    assert run.result["decisions"][by_hand]["action"] == orgs.SKIP
    assert EcrAccount.objects.get(account_id=by_hand).status == Lifecycle.DRAFT
    assert run.operations.filter(account_id=by_hand).count() == 0


# --- the command line -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--ou", "ou-nope"], "ou_ids"),
        (["--ou", "r-ab12", "--name-glob", "web[prod"], "name_glob"),
        (["--ou", "r-ab12", "--email-glob", "\x07*"], "email_glob"),
        (["--ou", "r-ab12", "--tag", "team"], "tag"),
        (["--ou", "r-ab12", "--tag", "aws:x=1"], "tag"),
        (
            ["--ou", "r-ab12", "--broker-client-url", "http://broker-{acount}:8000"],
            "broker_client_url_template",
        ),
        (
            ["--ou", "r-ab12", "--broker-client-url", "http://broker-{account_id}/x"],
            "broker_client_url_template",
        ),
        (["--ou", "r-ab12", "--cr-agent-url", "cra:8081"], "cr_agent_url_template"),
        (["--account", "12345"], "account_ids"),
        (["--ou", "r-ab12", "--exclude", "abc"], "exclude"),
        (["--ou", "r-ab12", "--region", "mars-1"], "regions"),
        (["--ou", "r-ab12", "--agent", "nobody"], "agent"),
        ([], "__all__"),
    ],
)
def test_bad_rule_input_is_refused_with_field_messages_nothing_saved_no_aws_call(db, aws, agent, args, field):
    organization = Organization.objects.create(name="acme", account_id=BASE_ACCOUNT)
    aws_module.calls.clear()
    base = ["org_rule_add", "acme", "--agent", "cra", "--region", "us-east-1"]
    with pytest.raises(CommandError) as refused:
        command(*base, *args)
    assert refused.value.returncode == 2
    assert f"{field}:" in str(refused.value)
    assert not organization.rules.exists() and sum(aws_module.calls.values()) == 0


def test_org_connect_refuses_bad_input_and_credentials_landing_elsewhere(db, aws):
    aws_module.calls.clear()
    with pytest.raises(CommandError) as bad:
        command("org_connect", "acme", "--account-id", "12345")
    assert bad.value.returncode == 2 and "account_id:" in str(bad.value)
    assert sum(aws_module.calls.values()) == 0
    with pytest.raises(CommandError) as elsewhere:  # the base credentials act in 123456789012
        command("org_connect", "acme", "--account-id", "999999999999")
    assert elsewhere.value.returncode == 1 and "WrongAccount" in str(elsewhere.value)
    assert not Organization.objects.exists()


def test_org_commands_connect_discover_as_json_and_sync(db, demo_org, agent):
    role = make_management_role(BASE_ACCOUNT, name="PortalOrganizationRead", external_id="org-ext-1")
    out, _ = command(
        "org_connect", "acme", "--account-id", BASE_ACCOUNT, "--management-role-arn", role,
        "--management-external-id", "org-ext-1",
    )  # fmt: skip
    assert "connected" in out
    out, err = command("org_discover", "acme", "--inline", "--json")
    document = json.loads(out)  # stdout holds the outcome document only
    assert document["status"] == "succeeded" and len(document["tree"]["accounts"]) == 7
    assert "Run" in err
    out, _ = command(
        "org_rule_add", "acme", "--agent", "cra", "--region", "us-east-1", "--ou", demo_org.units["Apps"]
    )
    assert out.startswith("Rule 1 of acme: accounts in ")
    out, _ = command("org_sync", "acme", "--plan")
    assert f"{demo_org.accounts['apps-web']}: onboard (rule 1)" in out
    assert not EcrAccount.objects.exists()


def test_iam_policy_for_the_organization_role_covers_exactly_the_calls_discovery_makes(db, demo_org):
    from provisioning import permissions

    out, _ = command("iam_policy", "--role", "organization")
    granted = permissions.actions_of(json.loads(out))
    aws_module.calls.clear()
    orgs.read_tree(connect())
    made = {name for name in aws_module.calls if name.startswith("organizations:")}
    assert {f"organizations:{name.split(':')[1]}" for name in made} == granted


def test_run_pages_and_the_dashboard_show_organization_runs(db, demo_org, agent, client, operator, settings):
    settings.SECURE_SSL_REDIRECT = False
    organization = connect(auto_apply=True)
    add_rule(organization, agent, ou_ids=[demo_org.units["Apps"]])
    discovery = run_inline(org_services.discover_request(organization=organization, enqueue=False))
    (run_id,) = org_services.sync_scheduled()
    sync = run_inline(Run.objects.get(pk=run_id))
    assert sync.explanation.startswith("Auto-apply is on: applied by the schedule.")
    client.force_login(operator)
    for run in (discovery, sync):
        assert client.get(run.get_absolute_url()).status_code == 200
    dashboard = client.get("/").content.decode()
    assert 'id="organization-syncs"' in dashboard and "Auto-apply is on" in dashboard

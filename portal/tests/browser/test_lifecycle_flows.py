"""The lifecycle pages in real headless Chromium, each run applied by a real worker process against a
moto server: rotate an ExternalId and retire the old one, cancel a rotation, offboard an account
(with its adopted role), offboard an agent, onboard accounts from a CSV file.

The state a flow starts from (an agent set up, accounts onboarded) is applied in this process,
straight against moto; everything the test is about goes through the pages and the worker.
"""

import csv
import io
import json
import re
from pathlib import Path

import pytest
from django.conf import settings

from accounts import services as account_services
from accounts.choices import BrokerStatus, ExternalIdState, Lifecycle
from accounts.models import AgentIdentity, BrokerInstance, EcrAccount, ExternalId
from portal.models import AuditEntry
from provisioning import aws, bulkfile, lifecycle, runner, services
from provisioning.choices import RunKind, RunStatus
from provisioning.models import Run

from .conftest import management_role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

AGENT_ACCOUNT = "111111111111"  # the `agent` fixture's account
ACCOUNT = "222233334444"
OTHER = "555566667777"
SERVICE_ROLE = "SnykEcrServiceRole"
READ_POLICY = "AmazonEC2ContainerRegistryReadOnlyForSnyk"
NEW_ID = "rotated-external-id-0001"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


# --- helpers ---------------------------------------------------------------------------------------


def run_inline(run: Run) -> Run:
    run.refresh_from_db()
    assert run.claim()
    run = runner.execute(run)
    assert run.status == RunStatus.SUCCEEDED, run.explanation
    return run


def iam(account_id: str) -> aws.Iam:
    return aws.Iam(aws.Access(account_id, management_role(account_id)))


def trust_ids(account_id: str) -> list[str]:
    """The ExternalIds the live service role trusts, in document order."""
    role = iam(account_id).get_role(SERVICE_ROLE)
    [statement] = role["AssumeRolePolicyDocument"]["Statement"]
    value = statement["Condition"]["StringEquals"]["sts:ExternalId"]
    return [value] if isinstance(value, str) else list(value)


def agent_grants(agent: AgentIdentity) -> list[str] | None:
    """The role ARNs the agent's live inline policy lets it assume (None: no inline policy)."""
    document = iam(AGENT_ACCOUNT).get_inline_policy(agent.kind, agent.iam_name, agent.policy_name)
    if document is None:
        return None
    statements = document["Statement"]
    statements = [statements] if isinstance(statements, dict) else statements
    arns = []
    for statement in statements:
        resource = statement["Resource"]
        arns += [resource] if isinstance(resource, str) else resource
    return sorted(arns)


def role_arn(account_id: str) -> str:
    return f"arn:aws:iam::{account_id}:role/{SERVICE_ROLE}"


def calls(page) -> list[str]:
    """The AWS calls the plan preview lists, in order."""
    return page.locator("#aws-calls tr td:nth-child(2)").all_inner_texts()


def finished_run(page, timeout: float = 60_000) -> Run:
    """Wait on the run page (it polls by itself) until the run is over; it must have succeeded."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.wait_for_url(re.compile(r"/runs/\d+/$"))
    run = Run.objects.get(pk=int(re.search(r"/runs/(\d+)/$", page.url).group(1)))
    try:
        page.wait_for_selector(
            "#run-progress:not([data-status=queued]):not([data-status=running])", timeout=timeout
        )
    except PlaywrightTimeout:
        run.refresh_from_db()
        log = Path(settings.VAR_DIR) / "test-workers" / "worker-0.log"
        tail = log.read_text()[-2000:] if log.exists() else "(no worker log)"
        raise AssertionError(
            f"run #{run.pk} is still {run.status} after {timeout / 1000:.0f} s:\n{tail}"
        ) from None
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.explanation
    assert page.locator("#run-progress").get_attribute("data-status") == RunStatus.SUCCEEDED
    assert run.explanation in page.locator("#run-success").inner_text()
    return run


def messages(page) -> str:
    return page.locator(".messages").inner_text() if page.locator(".messages").count() else ""


@pytest.fixture
def active_agent(agent, moto):
    """The agent, set up in this process (its IAM role exists in moto)."""
    run_inline(services.agent_setup(agent=agent, enqueue=False))
    return AgentIdentity.objects.get(pk=agent.pk)


@pytest.fixture
def onboarded(active_agent):
    """Onboard accounts (each with a broker in us-east-1) in this process, straight against moto."""
    agent = active_agent

    def onboard(account_id: str, alias: str = "payments") -> EcrAccount:
        account = account_services.account_create(
            agent=agent,
            account_id=account_id,
            alias=alias,
            regions=["us-east-1"],
            external_id=f"ext-{account_id}",
            management_role_arn=management_role(account_id),
            broker_client_url="http://broker.internal:8000",
            cr_agent_url="http://cra.internal:8081",
        )
        run_inline(services.account_onboard(account=account, enqueue=False))
        return EcrAccount.objects.get(pk=account.pk)

    return onboard


# --- ExternalId rotation and retirement ----------------------------------------------------------


def test_rotate_the_external_id_redeploy_then_retire_the_old_one(
    page, portal, login, operator, onboarded, start_worker, tmp_path
):
    account = onboarded(ACCOUNT)
    old = account.external_ids.get()
    start_worker()
    login(operator)

    page.goto(portal + f"/accounts/{ACCOUNT}/")
    assert f"ExternalId in use: ext-{ACCOUNT}." in page.locator("#lifecycle").inner_text()
    page.click("#rotate")
    page.wait_for_url(portal + f"/accounts/{ACCOUNT}/rotate/")
    # A fresh UUID is proposed and already previewed; the operator picks a value of their own.
    assert UUID.fullmatch(page.input_value("#choose-id input[name=external_id]"))
    page.fill("#choose-id input[name=external_id]", NEW_ID)
    page.click("#choose-id button")
    page.wait_for_url(portal + f"/accounts/{ACCOUNT}/rotate/?external_id={NEW_ID}")

    # The preview: only the trust changes, and it will list both ids. Nothing is saved yet.
    assert calls(page) == ["iam:UpdateAssumeRolePolicy"]
    documents = page.locator("#plan-changes").inner_text()
    assert f'"ext-{ACCOUNT}"' in documents and f'"{NEW_ID}"' in documents
    assert page.locator("#confirm-plan").inner_text() == f"Add {NEW_ID} and apply 1 change"
    assert list(ExternalId.objects.values_list("value", flat=True)) == [old.value]
    assert not Run.objects.filter(kind=RunKind.ROTATE).exists()

    page.click("#confirm-plan")
    run = finished_run(page)
    assert run.kind == RunKind.ROTATE and run.requested_by == operator
    assert f"New ExternalId {NEW_ID}: broker files hold it now" in messages(page)
    assert trust_ids(ACCOUNT) == [old.value, NEW_ID]
    states = dict(ExternalId.objects.values_list("value", "state"))
    assert states == {old.value: ExternalIdState.RETIRING, NEW_ID: ExternalIdState.ACTIVE}

    # The account page: rotation in progress, the broker has neither the new file nor a redeploy.
    page.locator("#run-facts a", has_text=ACCOUNT).click()
    page.wait_for_url(portal + f"/accounts/{ACCOUNT}/")
    rotation = page.locator("#rotation")
    assert f"{NEW_ID} (new; broker files hold it) and {old.value} (retiring)" in rotation.inner_text()
    assert page.locator("#trust-pending").count() == 0  # the run put the new id into the trust
    assert page.locator("#rotation-us-east-1 .badge", has_text="not yet").count() == 2

    # Retiring the old id now warns: the broker still runs with it.
    page.click(f"#retire-{old.pk}")
    page.wait_for_url(portal + f"/accounts/{ACCOUNT}/external-ids/{old.pk}/retire/")
    warnings = page.locator("#warnings").inner_text()
    assert "Broker us-east-1: no broker file holding the new ExternalId has been downloaded" in warnings
    assert page.locator("#confirm-plan").inner_text() == f"Retire {old.value} despite 1 warning"
    page.locator("#confirm-form a", has_text="Not now").click()
    page.wait_for_url(portal + f"/accounts/{ACCOUNT}/")

    # Download the new file, redeploy (outside the portal), say so.
    with page.expect_download() as info:
        page.locator("#broker-us-east-1 a", has_text="Download .env").click()
    path = tmp_path / "broker.env"
    info.value.save_as(path)
    assert f"CR_EXTERNAL_ID={NEW_ID}\n" in path.read_text()
    page.reload()
    assert page.locator("#rotation-us-east-1 .badge", has_text="not yet").count() == 1
    page.click("#redeployed-us-east-1")
    page.wait_for_url(portal + f"/accounts/{ACCOUNT}/#lifecycle")
    assert f"Broker us-east-1 marked redeployed with ExternalId {NEW_ID}." in messages(page)
    assert page.locator("#rotation-us-east-1 .badge", has_text="not yet").count() == 0
    assert page.locator("#redeployed-us-east-1").count() == 0
    entry = AuditEntry.objects.get(action="broker.redeployed")
    assert entry.user == operator and entry.details["external_id"] == NEW_ID

    # Now retiring the old id warns of nothing; confirm it.
    page.click(f"#retire-{old.pk}")
    page.wait_for_url(portal + f"/accounts/{ACCOUNT}/external-ids/{old.pk}/retire/")
    assert page.locator("#warnings").count() == 0
    assert calls(page) == ["iam:UpdateAssumeRolePolicy"]
    assert page.locator("#confirm-plan").inner_text() == f"Retire {old.value}"
    page.click("#confirm-plan")
    run = finished_run(page)
    assert run.kind == RunKind.ROTATE
    assert trust_ids(ACCOUNT) == [NEW_ID]
    assert list(ExternalId.objects.values_list("value", "state")) == [(NEW_ID, ExternalIdState.ACTIVE)]
    assert AuditEntry.objects.get(action="external_id.retire").details["warnings"] == []

    page.goto(portal + f"/accounts/{ACCOUNT}/")
    assert page.locator("#rotation").count() == 0
    assert f"ExternalId in use: {NEW_ID}." in page.locator("#lifecycle").inner_text()
    assert page.locator("#external-ids td.mono").all_inner_texts() == [NEW_ID]


def test_cancel_a_rotation_by_retiring_the_new_id_despite_the_warnings(
    page, portal, login, operator, onboarded, start_worker, tmp_path
):
    account = onboarded(ACCOUNT)
    old = account.external_ids.get()
    run_inline(lifecycle.external_id_rotate(account=account, value=NEW_ID, enqueue=False))
    new = ExternalId.objects.get(value=NEW_ID)
    assert trust_ids(ACCOUNT) == [old.value, NEW_ID]
    start_worker()
    login(operator)

    # The broker took the new file already: cancelling now would break it, and the page says so.
    page.goto(portal + f"/accounts/{ACCOUNT}/")
    with page.expect_download():
        page.locator("#broker-us-east-1 a", has_text="Download .env").click()
    page.click("#cancel-rotation")
    page.wait_for_url(portal + f"/accounts/{ACCOUNT}/external-ids/{new.pk}/retire/")
    warnings = page.locator("#warnings li").all_inner_texts()
    assert warnings == [
        f"{NEW_ID} is the newest ExternalId: retiring it cancels the rotation, and broker files switch "
        f"back to {old.value}.",
        f"Broker us-east-1 took a file holding {NEW_ID}: it stops working.",
    ]
    assert calls(page) == ["iam:UpdateAssumeRolePolicy"]
    confirm = page.locator("#confirm-plan")
    assert confirm.inner_text() == f"Retire {NEW_ID} despite 2 warnings"
    assert confirm.get_attribute("class") == "danger"

    confirm.click()
    finished_run(page)
    shown = messages(page)
    assert all(warning in shown for warning in warnings)  # repeated on the run page
    assert trust_ids(ACCOUNT) == [old.value]
    assert list(ExternalId.objects.values_list("value", "state", "retiring_since")) == [
        (old.value, ExternalIdState.ACTIVE, None)
    ]

    # Broker files hold the old id again.
    page.goto(portal + f"/accounts/{ACCOUNT}/")
    assert page.locator("#rotation").count() == 0
    assert f"ExternalId in use: {old.value}." in page.locator("#lifecycle").inner_text()
    with page.expect_download() as info:
        page.locator("#broker-us-east-1 a", has_text="Download .env").click()
    path = tmp_path / "broker.env"
    info.value.save_as(path)
    assert f"CR_EXTERNAL_ID={old.value}\n" in path.read_text()


# --- offboarding -----------------------------------------------------------------------------------


def test_offboard_an_account_and_its_adopted_role(
    page, portal, login, admin_user, agent, onboarded, start_worker
):
    """The role was made by hand from the guide before onboarding: it goes only with the box ticked."""
    onboarded(OTHER, alias="data")
    guide_trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": agent.arn}, "Action": "sts:AssumeRole"}],
    }
    iam(ACCOUNT).client.create_role(RoleName=SERVICE_ROLE, AssumeRolePolicyDocument=json.dumps(guide_trust))
    account = onboarded(ACCOUNT)
    assert account.role_adopted and not account.policy_adopted
    assert agent_grants(agent) == sorted([role_arn(ACCOUNT), role_arn(OTHER)])
    start_worker()
    login(admin_user)

    page.goto(portal + f"/accounts/{ACCOUNT}/")
    page.click("#offboard")
    page.wait_for_url(portal + f"/accounts/{ACCOUNT}/offboard/")
    choice = page.locator("#adopted-choice").inner_text()
    assert "This account's role existed before the portal: without this box it is left in place" in choice
    left_in_place = calls(page)
    assert left_in_place[0] == "iam:PutRolePolicy"  # the agent loses the account first
    assert "iam:DeleteRole" not in left_in_place and "iam:DeletePolicy" in left_in_place
    notes = page.locator("#plan-summary .notes").inner_text()
    assert "Broker us-east-1 is retired: its files are no longer served. Stop it." in notes

    # Ticking the box updates the preview by itself (no button pressed).
    page.check("#adopted-choice input[name=confirm_adopted]")
    page.wait_for_url(portal + f"/accounts/{ACCOUNT}/offboard/?confirm_adopted=on")
    confirmed = calls(page)
    assert confirmed[0] == "iam:PutRolePolicy" and "iam:DeleteRole" in confirmed
    assert len(confirmed) > len(left_in_place)
    assert page.locator("#confirm-plan").inner_text() == f"Offboard {ACCOUNT}: apply {len(confirmed)} changes"
    assert EcrAccount.objects.get(account_id=ACCOUNT).status == Lifecycle.ACTIVE  # previewed only

    page.click("#confirm-plan")
    run = finished_run(page)
    assert run.kind == RunKind.OFFBOARD and run.options["confirm_adopted"] is True
    assert [op.action for op in run.operations.order_by("sequence")] == confirmed
    account.refresh_from_db()
    assert account.status == Lifecycle.REMOVED
    assert set(account.brokers.values_list("status", flat=True)) == {BrokerStatus.RETIRED}
    # AWS: the account's role and policy are gone; the other account and the agent's grant to it stay.
    assert iam(ACCOUNT).get_role(SERVICE_ROLE) is None
    assert iam(ACCOUNT).get_policy(f"arn:aws:iam::{ACCOUNT}:policy/{READ_POLICY}") is None
    assert iam(OTHER).get_role(SERVICE_ROLE) is not None
    assert agent_grants(agent) == [role_arn(OTHER)]

    page.locator("#run-facts a", has_text=ACCOUNT).click()
    page.wait_for_url(portal + f"/accounts/{ACCOUNT}/")
    assert page.locator("h1 .badge").inner_text() == "Removed"
    lifecycle_panel = page.locator("#lifecycle").inner_text()
    assert "Offboarded: the agent may no longer assume this account's role" in lifecycle_panel
    assert page.locator("#rotate").count() == 0
    assert page.locator("#offboard").inner_text().startswith("Offboard again")
    assert page.locator("#broker-us-east-1 .badge").inner_text() == "Retired"


def test_offboard_an_agent_once_it_serves_no_account(
    page, portal, login, admin_user, agent, onboarded, start_worker
):
    account = onboarded(ACCOUNT)
    start_worker()
    login(admin_user)

    # While it serves an account the page refuses, with nothing to confirm.
    page.goto(portal + f"/agents/{agent.pk}/")
    page.click("#agent-offboard")
    page.wait_for_url(portal + f"/agents/{agent.pk}/offboard/")
    refusal = page.locator("#refusal").inner_text()
    assert f"Agent cra still serves 1 account: {ACCOUNT}. Offboard it" in refusal
    assert page.locator("#confirm-plan").count() == 0

    # The account is offboarded; later someone puts the guide's wildcard policy back on the agent.
    run_inline(lifecycle.account_offboard(account=account, enqueue=False))
    assert agent_grants(agent) is None
    wildcard = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}],
    }
    iam(AGENT_ACCOUNT).client.put_role_policy(
        RoleName=agent.iam_name, PolicyName=agent.policy_name, PolicyDocument=json.dumps(wildcard)
    )

    page.reload()
    assert page.locator("#refusal").count() == 0
    assert calls(page) == ["iam:DeleteRolePolicy"]
    notes = page.locator("#plan-summary .notes").inner_text()
    assert f"The agent's IAM role {agent.arn} itself is left in place" in notes
    assert 'on "*" (as the guide first writes it): it is removed: the agent serves no account' in notes
    assert page.locator("#confirm-plan").inner_text() == "Offboard cra"
    assert AgentIdentity.objects.get(pk=agent.pk).status == Lifecycle.ACTIVE  # previewed only

    page.click("#confirm-plan")
    run = finished_run(page)
    assert run.kind == RunKind.OFFBOARD and run.agent_id == agent.pk
    assert run.explanation == "Agent cra offboarded (1 write)."
    assert AgentIdentity.objects.get(pk=agent.pk).status == Lifecycle.REMOVED
    assert agent_grants(agent) is None  # every assume permission is gone
    assert iam(AGENT_ACCOUNT).get_role(agent.iam_name) is not None  # the identity itself stays

    page.goto(portal + f"/agents/{agent.pk}/")
    assert page.locator("h1 .badge").inner_text() == "Removed"
    assert page.locator("#agent-offboard").count() == 0


# --- bulk onboarding from a file -----------------------------------------------------------------


def csv_file(rows: list[dict[str, str]]) -> dict:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(bulkfile.COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                "regions": "us-east-1",
                "management_role_arn": management_role(row["account_id"]),
                "broker_client_url": "http://broker.internal:8000",
                "cr_agent_url": "http://cra.internal:8081",
                **row,
            }
        )
    return {"name": "accounts.csv", "mimeType": "text/csv", "buffer": out.getvalue().encode()}


BULK = ["400000000001", "400000000002", "400000000003"]


def test_onboard_accounts_from_a_csv_file(page, portal, login, operator, active_agent, start_worker):
    agent = active_agent
    start_worker()
    login(operator)
    page.goto(portal + "/accounts/onboard/file/")
    page.select_option("#id_agent", str(agent.pk))
    page.fill("#id_max_concurrency", "2")
    page.fill("#id_failure_tolerance", "0")

    # A file with two bad rows: one report naming both, nothing saved, nothing sent to AWS.
    bad = [
        {"account_id": BULK[0], "alias": "team-0"},
        {"account_id": "4000", "alias": "short"},
        {"account_id": BULK[2], "alias": "=HYPERLINK(1)"},
    ]
    page.set_input_files("#id_file", csv_file(bad))
    with page.expect_navigation():
        page.click("#upload")
    assert page.locator("#bulk-report h2").inner_text().startswith("2 of 3 rows invalid")
    problems = [
        row.locator("td").all_inner_texts()[:3] for row in page.locator("#bulk-problems tr").all()[1:]
    ]
    assert ["3", "4000", "account_id"] in problems and ["4", BULK[2], "alias"] in problems
    assert {p[0] for p in problems} == {"3", "4"}
    assert not EcrAccount.objects.exists()
    assert not Run.objects.filter(kind=RunKind.BULK).exists()

    # Corrected: one plan for all three, with the options chosen; still nothing saved.
    assert page.input_value("#id_max_concurrency") == "2"  # the form kept the choices
    good = [
        {"account_id": BULK[0], "alias": "team-0", "external_id": "bulk-ext-0001"},
        {"account_id": BULK[1], "alias": "team-1", "regions": "us-east-1 eu-west-1"},
        {"account_id": BULK[2], "alias": "team-2"},
    ]
    page.set_input_files("#id_file", csv_file(good))
    with page.expect_navigation():
        page.click("#upload")
    assert page.locator("#bulk-report").count() == 0, page.locator("#bulk-report").inner_text()
    assert "3 accounts for agent cra: one plan for all, then one run." in page.locator("main").inner_text()
    planned = calls(page)
    assert planned.count("iam:CreateRole") == 3 and planned.count("iam:CreatePolicy") == 3
    assert planned[-1] == "iam:PutRolePolicy"  # the agent's permissions once, after the accounts
    assert page.input_value("#confirm-form input[name=max_concurrency]") == "2"
    assert page.input_value("#confirm-form input[name=failure_tolerance]") == "0"
    button = page.locator("#confirm-plan").inner_text()
    assert button == f"Onboard 3 accounts: apply {len(planned)} changes"
    records = json.loads(page.input_value("#confirm-form input[name=records]"))
    external_ids = {values["account_id"]: values["external_id"] for _, values in records}
    assert external_ids[BULK[0]] == "bulk-ext-0001"
    assert UUID.fullmatch(external_ids[BULK[1]]) and UUID.fullmatch(external_ids[BULK[2]])
    assert not EcrAccount.objects.exists()

    page.click("#confirm-plan")
    run = finished_run(page)
    assert run.kind == RunKind.BULK
    assert run.options["max_concurrency"] == 2 and run.options["failure_tolerance"] == 0
    assert run.result == {"accounts": dict.fromkeys(BULK, "succeeded"), "errors": {}}
    assert page.locator("#bulk-progress").inner_text().startswith("3 of 3 accounts done.")

    # The database and AWS hold what the preview showed.
    assert dict(EcrAccount.objects.values_list("account_id", "status")) == dict.fromkeys(
        BULK, Lifecycle.ACTIVE
    )
    assert dict(ExternalId.objects.values_list("account__account_id", "value")) == external_ids
    assert sorted(
        BrokerInstance.objects.filter(account__account_id=BULK[1]).values_list("region", flat=True)
    ) == [
        "eu-west-1",
        "us-east-1",
    ]
    for account_id in BULK:
        assert trust_ids(account_id) == [external_ids[account_id]]
    assert agent_grants(agent) == sorted(role_arn(a) for a in BULK)

    page.locator("#run-facts a", has_text=BULK[1]).click()
    page.wait_for_url(portal + f"/accounts/{BULK[1]}/")
    assert page.locator("h1 .badge").inner_text() == "Active"
    assert page.locator("#external-ids td.mono").all_inner_texts() == [external_ids[BULK[1]]]
    assert page.locator("#brokers article.broker").count() == 2

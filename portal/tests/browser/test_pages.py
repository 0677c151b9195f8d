"""Pages as a new user meets them, in real Chromium: the audit page follows its run to the end, a
draft account's brokers are pending, ARNs wrap between their parts, the forms are styled, and the main
pages read as words (screenshots on request)."""

import re

import pytest

from accounts import services as account_services
from provisioning import runner, services
from provisioning.audit.services import audit_request
from provisioning.choices import RunKind, RunStatus
from provisioning.models import Run

from .conftest import management_role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ACTIVE = "222233334444"
DRAFT = "555566667777"


def run_inline(run):
    assert run.claim()
    runner.execute(run)
    assert run.status in (RunStatus.SUCCEEDED, RunStatus.PARTIAL), run.explanation
    return run


def account(agent, account_id, alias):
    return account_services.account_create(
        agent=agent,
        account_id=account_id,
        regions=["eu-west-1", "us-east-1"],
        alias=alias,
        management_role_arn=management_role(account_id),
        broker_client_url="http://broker.internal:8000",
        cr_agent_url="http://cra.internal:8081",
    )


def inventory(agent):
    """The agent set up, one account onboarded, one draft (with its brokers), nothing audited."""
    run_inline(services.agent_setup(agent=agent, enqueue=False))
    run_inline(services.account_onboard(account=account(agent, ACTIVE, "payments"), enqueue=False))
    return account(agent, DRAFT, "search")


def _shot(page, directory, name):
    if directory is not None:
        page.screenshot(path=str(directory / f"{name}.png"), full_page=True)


def test_the_audit_page_shows_the_results_when_its_run_ends(
    page, portal, login, operator, agent, moto, start_worker, screenshots
):
    inventory(agent)
    login(operator)
    page.goto(portal + "/audit/")
    assert "never" in page.locator("#audit-summary").inner_text()
    assert "not audited yet" in page.locator(f"#relationship-{ACTIVE}").inner_text()

    page.click("#audit-refresh")
    page.wait_for_url(portal + "/audit/")
    run = Run.objects.get(kind=RunKind.AUDIT)
    assert f"Audit run #{run.pk} is queued" in page.locator("#messages").inner_text()
    page.evaluate("window.__samePage = true")  # gone if the page were reloaded
    start_worker()

    page.wait_for_selector("#run-progress[data-status=succeeded]", timeout=60_000)
    page.wait_for_selector(f"#audit-summary a:text('run #{run.pk}')", timeout=10_000)
    assert page.evaluate("window.__samePage") is True  # htmx swapped parts, no full reload
    assert "not audited yet" not in page.locator("#audit-table").inner_text()
    assert page.locator("#messages").inner_text() == ""  # "queued" is gone
    assert page.locator("#run-success").is_visible()  # the finished run panel stays
    assert page.locator("#audit-refresh").is_enabled()
    _shot(page, screenshots, "audit")


def test_a_draft_accounts_brokers_are_pending_and_offer_no_download(
    page, portal, login, operator, agent, moto
):
    inventory(agent)
    login(operator)
    tile = page.locator("#tile-brokers").inner_text()
    assert re.sub(r"\s+", " ", tile) == "2 brokers + 2 pending"  # the draft's are pending

    page.goto(portal + f"/accounts/{DRAFT}/")
    broker = page.locator("#broker-eu-west-1")
    assert broker.locator(".badge").inner_text() == "Pending"
    assert "is pending: the account is not onboarded yet" in broker.inner_text()
    assert broker.locator("a", has_text="Download .env").count() == 0


# For each element whose whole text is one ARN: the pairs of characters a line break falls between.
LINE_BREAKS = """(element) => {
  const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
  const chars = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (let i = 0; i < node.data.length; i++) {
      const range = document.createRange();
      range.setStart(node, i);
      range.setEnd(node, i + 1);
      const rect = range.getClientRects()[0];
      if (rect) chars.push([node.data[i], rect.top]);
    }
  }
  const breaks = [];
  for (let i = 1; i < chars.length; i++) {
    if (chars[i][1] > chars[i - 1][1] + 2) breaks.push(chars[i - 1][0] + chars[i][0]);
  }
  return breaks;
}"""


def arn_line_breaks(page) -> dict[str, list[str]]:
    found = {}
    for element in page.locator(".mono, dd").all():
        text = element.inner_text().strip()
        if re.fullmatch(r"arn:aws:[a-z]+::\d{12}:\S+", text):
            found[text] = found.get(text, []) + element.evaluate(LINE_BREAKS)
    return found


def test_long_arns_wrap_between_their_parts_never_inside_a_name(page, portal, login, operator, agent, moto):
    inventory(agent)
    login(operator)
    wrapped = 0
    for path in (f"/accounts/{ACTIVE}/", f"/agents/{agent.pk}/", f"/accounts/{DRAFT}/plan/"):
        page.goto(portal + path)
        breaks = arn_line_breaks(page)
        assert breaks, f"{path}: no ARN on the page"
        for arn, pairs in breaks.items():
            assert all(pair[0] in ":/" for pair in pairs), f"{path}: {arn} breaks at {pairs}"
            wrapped += bool(pairs)
    assert wrapped >= 3  # the narrow columns do wrap (the check is not vacuous)


PRIMARY_BLUE = "rgb(31, 95, 191)"


def assert_styled_like_the_wizard(page, form, submit):
    assert page.locator(submit).evaluate("b => getComputedStyle(b).backgroundColor") == PRIMARY_BLUE
    for label in page.locator(f"{form} .field label").all():
        assert label.evaluate("l => getComputedStyle(l).display") == "block"  # above its input
    widths = page.locator(f"{form} .field input:not([type=hidden]), {form} .field select").evaluate_all(
        "inputs => inputs.map(i => i.getBoundingClientRect().width)"
    )
    assert widths and min(widths) >= 300, widths


def test_the_login_and_upload_forms_are_styled_like_the_wizard(page, portal, login, operator, agent):
    page.goto(portal + "/login/")
    assert page.locator("#login .field").count() == 2
    assert_styled_like_the_wizard(page, "#login form", "#log-in")
    login(operator)
    page.goto(portal + "/accounts/onboard/file/")
    assert page.locator("#upload-form .field").count() == 4
    assert_styled_like_the_wizard(page, "#upload-form", "#upload")


def test_screenshots_of_the_pages_a_new_user_meets(page, portal, login, operator, agent, moto, screenshots):
    """`make screenshots`: login, dashboard, accounts, a draft account, onboarding from a file, the
    audit and a run."""
    if screenshots is None:
        pytest.skip("writes docs/screenshots/ only when asked: make screenshots")
    inventory(agent)
    audit = run_inline(audit_request(enqueue=False))
    page.goto(portal + "/login/")
    _shot(page, screenshots, "login")
    login(operator)
    _shot(page, screenshots, "dashboard-audited")
    for name, path in [
        ("account-list", "/accounts/"),
        ("account-draft", f"/accounts/{DRAFT}/"),
        ("onboard-from-file", "/accounts/onboard/file/"),
        ("audit-list", "/audit/"),
        ("audit-detail", f"/audit/accounts/{ACTIVE}/"),
        ("run-audit", f"/runs/{audit.pk}/"),
        ("agent-detail", f"/agents/{agent.pk}/"),
    ]:
        page.goto(portal + path)
        _shot(page, screenshots, name)


def test_a_run_page_names_every_operation_state_after_a_crash(
    page, portal, login, operator, agent, screenshots
):
    """A bulk run taken over after its worker died with two writes in flight: one found applied, one
    not (and made again), one started now. Each state reads as words, the recovery says how."""
    from provisioning import applier
    from provisioning.changes import Plan
    from provisioning.choices import OperationStatus
    from provisioning.models import Operation

    first, second = account(agent, ACTIVE, "payments"), account(agent, DRAFT, "search")
    run = services.run_request(kind=RunKind.BULK, accounts=[first, second], enqueue=False)
    assert run.claim()
    options = {"max_concurrency": 2, "failure_tolerance": 0}
    Run.objects.filter(pk=run.pk).update(attempts=2, progress_total=6, options=options)

    def operation(account_id: str, action: str, name: str) -> Operation:
        arn = f"arn:aws:iam::{account_id}:{name}"
        sequence = run.operations.count() + 1
        return Operation.objects.create(
            run=run, sequence=sequence, account_id=account_id, action=action, resource_arn=arn,
            summary=f"{action.split(':')[1]} {name.split('/')[-1]}", status=OperationStatus.STARTED,
        )  # fmt: skip

    for account_id in (ACTIVE, DRAFT):
        operation(account_id, "iam:CreatePolicy", "policy/AmazonEC2ContainerRegistryReadOnlyForSnyk").settle(
            OperationStatus.SUCCEEDED, duration_ms=41
        )
    role = "role/SnykEcrServiceRole"
    applier.settle_recovered(operation(ACTIVE, "iam:CreateRole", role), Plan(), attempt=2)
    lost = operation(DRAFT, "iam:CreateRole", role)
    applier.settle_recovered(lost, Plan(changes=[_same_change(lost)]), attempt=2)
    operation(DRAFT, "iam:CreateRole", role).settle(OperationStatus.SUCCEEDED, duration_ms=52)
    operation(ACTIVE, "iam:AttachRolePolicy", role)  # in flight now

    login(operator)
    page.goto(portal + f"/runs/{run.pk}/")
    badges = page.locator("#operations .badge").all_inner_texts()
    assert badges == [
        "Succeeded",
        "Succeeded",
        "Applied (found after a crash)",
        "Not applied (found after a crash)",
        "Succeeded",
        "Started, no answer yet",
    ]
    notes = page.locator("#operations .recovered").all_inner_texts()
    assert notes == [
        "The worker stopped during this call; attempt 2 found its result in AWS: it took effect.",
        "The worker stopped during this call; attempt 2 found its result not in AWS: it did not take effect.",
    ]
    assert "not_applied" not in page.locator("#operations").inner_text()
    _shot(page, screenshots, "run-recovered")


def _same_change(operation):
    from provisioning import aws
    from provisioning.changes import Change

    access = aws.Access(operation.account_id)
    return Change(
        operation.account_id, access, "create", operation.action, "x", {}, operation.resource_arn, ""
    )

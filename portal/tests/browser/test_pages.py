"""Pages as a new user meets them, in real Chromium: the audit page follows its run to the end, a
draft account's brokers are pending, and the main pages read as words (screenshots on request)."""

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

"""The audit across both systems as a person sees it, in real Chromium: a universal account whose Snyk
connection sends an ExternalId IAM's trust does not accept shows the finding on the audit page and
on the account's audit page, and the summary says the Snyk side was read."""

import pytest

from accounts import services as account_services
from portal.snyk_fake import FakeSnyk
from provisioning import runner, services, snyk_services
from provisioning.audit.services import audit_request
from provisioning.choices import RunStatus

from .conftest import management_role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ACCOUNT = "222233334444"


def run_inline(run):
    assert run.claim()
    runner.execute(run)
    assert run.status in (RunStatus.SUCCEEDED, RunStatus.PARTIAL), run.explanation
    return run


@pytest.fixture
def fake_snyk():
    fake = FakeSnyk()
    tenant_id = fake.add_tenant(name="Browser")
    fake.add_user(token="tok-browser", admin_of=tenant_id)
    with fake.serve() as url:
        fake.url, fake.tenant_id = url, tenant_id
        yield fake


def test_the_audit_page_shows_a_connection_whose_external_id_iam_refuses(
    page, portal, login, operator, moto, fake_snyk, settings, screenshots
):
    settings.RECONCILE_CONCURRENCY = 1
    snyk_services.snyk_connect(
        tenant_id=fake_snyk.tenant_id,
        token="tok-browser",
        api_url=fake_snyk.url,
        app_org_id=fake_snyk.org_of(fake_snyk.tenant_id),
        group_id=fake_snyk.group_of(fake_snyk.tenant_id),
    )
    agent = account_services.agent_create(
        name="ub",
        kind="role",
        account_id="111111111111",
        broker_mode="universal",
        management_role_arn=management_role("111111111111"),
    )
    account = account_services.account_create(
        agent=agent,
        account_id=ACCOUNT,
        regions=["eu-west-1"],
        alias="payments",
        external_id="ext-payments",
        management_role_arn=management_role(ACCOUNT),
        broker_client_url="http://ub-client:8000",
        cr_agent_url="http://cra:8081",
    )
    run_inline(services.agent_setup(agent=agent, enqueue=False))
    run_inline(services.account_onboard(account=account, enqueue=False))
    # Someone edits the connection in Snyk by hand.
    (connection,) = fake_snyk.connections.values()
    connection["required"]["cr_external_id"] = "ext-typed-by-hand"
    run_inline(audit_request(enqueue=False))

    login(operator)
    page.goto(portal + "/audit/")
    summary = page.locator("#audit-summary").inner_text()
    assert "Snyk side read once: 1 deployment, 1 connection" in summary
    row = page.locator(f"#relationship-{ACCOUNT}").inner_text()
    assert "snyk-connection-external-id-rejected" in row and "drifted" in row.lower(), row
    if screenshots is not None:
        page.screenshot(path=str(screenshots / "audit-snyk.png"), full_page=True)

    page.goto(portal + f"/audit/accounts/{ACCOUNT}/")
    findings = page.locator("#audit-findings").inner_text()
    assert "snyk-connection-external-id-rejected" in findings
    assert f"Connection {ACCOUNT}-eu-west-1 sends ExternalId ext-type…" in findings
    assert "does not accept (it accepts ext-paym…)" in findings
    # The connection's parameters, live (Snyk) beside desired (the inventory), with the line diff.
    snyk_pair = page.locator("#documents article", has_text="Snyk connections (Universal Broker)")
    assert "differs" in snyk_pair.locator("header").inner_text()
    assert '"cr_external_id": "ext-typed-by-hand"' in snyk_pair.inner_text()
    assert '"cr_external_id": "ext-payments"' in snyk_pair.inner_text()
    if screenshots is not None:
        page.screenshot(path=str(screenshots / "audit-snyk-account.png"), full_page=True)

"""The Snyk issue's acceptance, end to end on the stack `make run` starts: the AWS emulator (moto
server, its own process), the fake Snyk API with the demo tenant, a real Celery worker and real
Chromium. Switch the demo agent to universal and onboard an account in the browser; the fake Snyk
API then holds a deployment, a connection carrying IAM's live role ARN, region and ExternalId, an
Org and an integration, and the real broker client loads that connection from the deployment's
.env. Rotating the ExternalId puts the new id in the trust before the connection carries it;
offboarding removes integration and connection before the role; 30 accounts land in two
deployments; a second sync writes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from accounts import services as inventory
from accounts.choices import Lifecycle
from accounts.models import AgentIdentity, EcrAccount, SnykDeployment
from portal import emulator, snyk_fake
from portal.testing import celery_workers, purge_broker, wait_for, worker_env
from provisioning import aws, services, snyk_services
from provisioning.choices import RunStatus
from provisioning.models import Run
from provisioning.tests.test_snyk_real_broker import assert_real_client_loads, real_client_missing

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ACCOUNT = emulator.DEMO.ecr_accounts[0].account_id  # payments-prod, one region
REGION = emulator.DEMO.ecr_accounts[0].regions[0]
CONNECTION = f"{ACCOUNT}-{REGION}"
FINISHED = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.PARTIAL, RunStatus.CANCELLED)


@dataclass
class Stack:
    aws_url: str
    snyk: snyk_fake.FakeSnyk
    env: dict[str, str]


@pytest.fixture
def stack(tmp_path, monkeypatch) -> Iterator[Stack]:
    """As `make run` starts it: the emulator, the fake Snyk's demo tenant connected, a worker."""
    server = emulator.start()
    fake, token = snyk_fake.demo()
    url = fake.start()
    try:
        env = emulator.aws_environ(server.url, tmp_path)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        aws.sessions.clear()
        snyk_services.snyk_connect(
            tenant_id=snyk_fake.DEMO_TENANT_ID,
            token=token,
            api_url=url,
            app_org_id=snyk_fake.DEMO_ORG_ID,
            group_id=snyk_fake.DEMO_GROUP_ID,
        )
        purge_broker()
        with celery_workers(count=1, env=worker_env(**env)):
            yield Stack(server.url, fake, env)
    finally:
        fake.stop()
        server.stop()
        aws.sessions.clear()


def finished(run: Run, timeout: float = 240) -> Run:
    def done() -> Run | None:
        run.refresh_from_db()
        return run if run.status in FINISHED else None

    wait_for(done, timeout=timeout, message=f"run #{run.pk} to finish")
    assert run.status == RunStatus.SUCCEEDED, run.explanation
    return run


def latest_run() -> Run:
    return Run.objects.latest("pk")


def confirm_and_wait(page, portal) -> Run:
    """Click the plan's confirm button; the worker runs it while the run page polls to success."""
    page.click("#confirm-plan")
    page.wait_for_url(f"{portal}/runs/*/")
    page.wait_for_selector("#run-success", timeout=180_000)
    return finished(latest_run())


def service_role_trust(account_id: str) -> tuple[str, list[str]]:
    """The live service role's ARN and the ExternalIds its trust accepts (from IAM, not the database)."""
    iam = aws.Iam(aws.Access(account_id, emulator.management_role_arn(account_id)))
    role = iam.get_role("SnykEcrServiceRole")
    assert role is not None
    ids: list[str] = []
    for statement in role["AssumeRolePolicyDocument"]["Statement"]:
        listed = statement["Condition"]["StringEquals"]["sts:ExternalId"]
        ids += [listed] if isinstance(listed, str) else listed
    return role["Arn"], ids


def actions(run: Run) -> list[str]:
    return list(run.operations.order_by("sequence").values_list("action", flat=True))


def assert_each_recorded(run: Run) -> None:
    """Every write of the run is an Operation that succeeded, with the request id AWS or Snyk gave."""
    ops = list(run.operations.order_by("sequence"))
    assert all(op.status == "succeeded" and op.request_id for op in ops), [(o.action, o.status) for o in ops]


def manage(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def the_connection(fake: snyk_fake.FakeSnyk) -> dict[str, Any]:
    return next(c for c in fake.connections.values() if c["name"] == CONNECTION)


def test_universal_broker_from_the_browser_to_the_real_client_and_back(
    stack, page, portal, login, admin_user, screenshots, tmp_path
):
    fake = stack.snyk
    emulator.seed_aws()
    agent = emulator.seed_inventory().agent
    finished(services.agent_setup(agent=agent))

    # 1. Switch the demo agent to universal in the browser (no account onboarded: no run yet).
    login(admin_user)
    page.goto(portal + agent.get_absolute_url())
    page.click("#broker-mode-switch")
    page.wait_for_url(portal + agent.get_absolute_url())
    assert "Universal" in page.locator("#agent-broker-mode").inner_text()
    assert AgentIdentity.objects.get(pk=agent.pk).is_universal

    # 2. Onboard an account in the browser: the preview lists the Snyk calls after the AWS ones.
    page.goto(f"{portal}/accounts/{ACCOUNT}/plan/")
    calls = page.locator("#aws-calls").inner_text()
    for call in (
        "iam:CreateRole",
        "snyk:CreateDeployment",
        "snyk:CreateConnection",
        "snyk:CreateIntegration",
    ):
        assert call in calls
    assert calls.index("iam:CreateRole") < calls.index("snyk:CreateConnection")
    assert fake.writes() == []  # a preview writes nothing
    onboarding = confirm_and_wait(page, portal)
    assert EcrAccount.objects.get(account_id=ACCOUNT).status == Lifecycle.ACTIVE
    done = actions(onboarding)
    assert (
        done.index("iam:CreateRole")
        < done.index("snyk:CreateConnection")
        < done.index("snyk:CreateIntegration")
    )
    assert_each_recorded(onboarding)

    # What Snyk holds: a deployment, the connection as IAM trusts it, an Org and the integration.
    (deployment_id,) = fake.deployments
    assert fake.deployments[deployment_id]["metadata"]["name"] == f"{agent.name}-1"
    connection = the_connection(fake)
    role_arn, trusted = service_role_trust(ACCOUNT)
    required = connection["required"]
    assert (required["cr_role_arn"], required["cr_region"]) == (role_arn, REGION)
    assert trusted == [required["cr_external_id"]]
    assert required["cr_base"] == f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
    (org_id,) = [o for o, v in fake.orgs.items() if v["name"] == f"ECR {ACCOUNT} {REGION}"]
    assert fake.orgs[org_id]["group_id"] == snyk_fake.DEMO_GROUP_ID
    connection_id = next(i for i, c in fake.connections.items() if c["name"] == CONNECTION)
    assert [(v["connection_id"], v["org_id"]) for v in fake.integrations.values()] == [
        (connection_id, org_id)
    ]

    # Its classic broker retired with the integration: the account page offers no classic file.
    page.goto(f"{portal}/accounts/{ACCOUNT}/")
    assert "Universal Broker connection" in page.locator(f"#broker-{REGION}").inner_text()
    assert page.locator(f"#broker-{REGION} a", has_text="Download .env").count() == 0
    page.screenshot(path=str(tmp_path / "account-universal.png"), full_page=True)

    page.goto(f"{portal}/snyk/")
    assert CONNECTION in page.locator("#snyk-connections").inner_text()
    page.screenshot(path=str(tmp_path / "snyk-universal.png"), full_page=True)
    if screenshots is not None:
        page.screenshot(path=str(screenshots / "snyk-universal.png"), full_page=True)

    # 3. The real broker client, in universal mode on the deployment's .env, loads the connection.
    deployment = SnykDeployment.objects.get(deployment_id=deployment_id)
    env_file = inventory.deployment_file_download(deployment=deployment, fmt="env").content
    if not real_client_missing():
        loaded = assert_real_client_loads(env_file, fake, deployment_id, tmp_path / "client")
        assert list(loaded) == [CONNECTION]

    # 4. Rotation in the browser: the trust takes the new id first, then the connection, each recorded.
    old = required["cr_external_id"]
    new = "5b0e6d2a-3c4f-4e1a-9b8d-7c6a5f4e3d21"
    page.goto(f"{portal}/accounts/{ACCOUNT}/rotate/?external_id={new}")
    rotation = confirm_and_wait(page, portal)
    assert actions(rotation) == ["iam:UpdateAssumeRolePolicy", "snyk:UpdateConnection"]
    assert_each_recorded(rotation)
    iam_write, snyk_write = rotation.operations.order_by("sequence")
    assert new in json.dumps(iam_write.after) and snyk_write.after["cr_external_id"] == new
    _, trusted = service_role_trust(ACCOUNT)
    assert sorted(trusted) == sorted([old, new])  # both accepted while brokers switch
    assert the_connection(fake)["required"]["cr_external_id"] == new
    manage("external_id_retire", ACCOUNT, old, "--inline")
    _, trusted = service_role_trust(ACCOUNT)
    assert trusted == [new] == [the_connection(fake)["required"]["cr_external_id"]]

    # 5. Offboarding in the browser: integration, then connection, then the role.
    page.goto(f"{portal}/accounts/{ACCOUNT}/offboard/")
    offboarding = confirm_and_wait(page, portal)
    done = actions(offboarding)
    assert done[:2] == ["snyk:DeleteIntegration", "snyk:DeleteConnection"]
    assert done.index("snyk:DeleteConnection") < done.index("iam:DeleteRole")
    assert_each_recorded(offboarding)
    assert fake.connections == {} and fake.integrations == {}
    iam = aws.Iam(aws.Access(ACCOUNT, emulator.management_role_arn(ACCOUNT)))
    assert iam.get_role("SnykEcrServiceRole") is None
    assert org_id in fake.orgs  # kept: it holds the scan history

    # 6. Thirty accounts in one bulk run land in two deployments (24 in the first, which is empty now).
    base = emulator.base_account()
    ids = [f"{600000000000 + i}" for i in range(30)]
    accounts = [
        inventory.account_create(
            agent=agent,
            account_id=account_id,
            regions=["us-east-1"],
            management_role_arn=emulator.prepare_account(account_id, trusted_account=base),
            broker_client_url="http://broker-universal:8000",
            cr_agent_url="http://cra:8081",
        )
        for account_id in ids
    ]
    finished(services.run_request(kind="bulk", accounts=accounts, agent=agent), timeout=600)
    assert sorted(len(fake.connections_of(d)) for d in fake.deployments) == [6, 24]
    assert len(fake.integrations) == 30
    assert fake.connections_of(deployment_id) and len(fake.connections_of(deployment_id)) == 24

    # 7. A second sync writes nothing to either system.
    writes = len(fake.writes())
    resync = finished(snyk_services.snyk_sync(agent=agent), timeout=600)
    assert resync.operations.count() == 0
    assert len(fake.writes()) == writes

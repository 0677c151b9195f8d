"""The Snyk side as steps of the same flows, against moto (AWS) and the fake Snyk API: onboarding
creates IAM first, then the app install, deployment, connection, Org and integration; the preview
shows the Snyk calls beside the AWS calls; a second sync writes nothing; rotation PATCHes the
connection only once the trust holds the new id; offboarding removes both sides in order."""

import json

import pytest

from accounts import services as account_services
from accounts.models import SnykConnection, SnykDeployment, SnykTenant
from provisioning import lifecycle, services, snyk_services
from provisioning.choices import RunStatus
from provisioning.models import Operation

from .conftest import AGENT_ACCOUNT, iam_in, make_management_role
from .test_engine import run_inline


@pytest.fixture
def tenant(db, snyk_fake):
    return snyk_services.snyk_connect(
        tenant_id=snyk_fake.tenant_id,
        token=snyk_fake.token,
        api_url=snyk_fake.url,
        app_org_id=snyk_fake.org_of(snyk_fake.tenant_id),
        group_id=snyk_fake.group_of(snyk_fake.tenant_id),
    )


def universal_inventory(account_ids, regions=("eu-west-1",)):
    agent = account_services.agent_create(
        name="ub",
        kind="role",
        account_id=AGENT_ACCOUNT,
        broker_mode="universal",
        management_role_arn=make_management_role(AGENT_ACCOUNT),
    )
    accounts = [
        account_services.account_create(
            agent=agent,
            account_id=account_id,
            regions=list(regions),
            external_id=f"ext-{account_id}",
            management_role_arn=make_management_role(account_id),
            broker_client_url="http://ub-client:8000",
            cr_agent_url="http://cra:8081",
        )
        for account_id in account_ids
    ]
    assert run_inline(services.agent_setup(agent=agent, enqueue=False)).status == RunStatus.SUCCEEDED
    return agent, accounts


def onboard(account):
    run = run_inline(services.account_onboard(account=account, enqueue=False))
    assert run.status == RunStatus.SUCCEEDED, run.explanation
    account.refresh_from_db()
    return run


def trust_ids(account_id):
    trust = iam_in(account_id).get_role("SnykEcrServiceRole")["AssumeRolePolicyDocument"]
    ids = trust["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"]
    return [ids] if isinstance(ids, str) else ids


def the_connection(snyk_fake, name):
    return next(c for c in snyk_fake.connections.values() if c["name"] == name)


def test_onboarding_makes_iam_then_snyk_and_the_connection_equals_the_trust(aws, tenant, snyk_fake):
    _, (account,) = universal_inventory(["222222222222"])
    preview = services.plan_onboarding(account)
    previewed = [c.action for c in preview.changes]
    assert previewed.index("iam:CreateRole") < previewed.index("snyk:CreateAppInstall")
    assert previewed[-5:] == [
        "snyk:CreateAppInstall",
        "snyk:CreateDeployment",
        "snyk:CreateConnection",
        "snyk:CreateOrg",
        "snyk:CreateIntegration",
    ]
    assert snyk_fake.writes() == []  # the preview wrote nothing

    run = onboard(account)
    actions = list(run.operations.order_by("sequence").values_list("action", flat=True))
    assert actions == previewed
    connection = the_connection(snyk_fake, "222222222222-eu-west-1")
    assert connection["required"] == {
        "broker_client_url": "http://ub-client:8000",
        "cr_agent_url": "http://cra:8081",
        "cr_base": "222222222222.dkr.ecr.eu-west-1.amazonaws.com",
        "cr_role_arn": "arn:aws:iam::222222222222:role/SnykEcrServiceRole",
        "cr_region": "eu-west-1",
        "cr_external_id": "ext-222222222222",
    }
    assert trust_ids("222222222222") == [connection["required"]["cr_external_id"]]
    row = SnykConnection.objects.get()
    assert row.connection_id in snyk_fake.connections
    assert snyk_fake.integrations[row.integration_id] == {
        "connection_id": row.connection_id,
        "org_id": row.org_id,
        "type": "ecr",
    }
    assert snyk_fake.orgs[row.org_id]["name"] == "ECR 222222222222 eu-west-1"
    deployment = SnykDeployment.objects.get()
    assert snyk_fake.deployments[deployment.deployment_id]["metadata"]["name"] == "ub-1"

    # The client secret is stored encrypted, and no operation holds it.
    tenant = SnykTenant.objects.get()
    secret = snyk_fake.installs[tenant.app_install_id]["client_secret"]
    assert tenant.app_client_secret == secret
    assert secret not in json.dumps(
        list(Operation.objects.values("request", "before", "after", "error_message"))
    )
    snyk_ops = Operation.objects.filter(action__startswith="snyk:")
    assert all(op.request_id for op in snyk_ops) and snyk_ops.count() == 5


def test_a_second_sync_writes_nothing_to_either_system(aws, tenant, snyk_fake):
    agent, accounts = universal_inventory(
        ["222222222222", "333333333333"], regions=("eu-west-1", "us-east-1")
    )
    for account in accounts:
        onboard(account)
    assert len(snyk_fake.connections) == 4 and len(snyk_fake.integrations) == 4
    writes_before = len(snyk_fake.writes())
    aws.calls.clear()
    assert snyk_services.plan_sync(agent).is_empty
    run = run_inline(snyk_services.snyk_sync(agent=agent, enqueue=False))
    assert run.status == RunStatus.SUCCEEDED and run.operations.count() == 0
    assert len(snyk_fake.writes()) == writes_before and aws.write_calls() == 0


def test_lost_ids_are_found_again_by_name(aws, tenant, snyk_fake):
    _, (account,) = universal_inventory(["222222222222"])
    onboard(account)
    SnykConnection.objects.update(connection_id="", org_id="", integration_id="")
    writes_before = len(snyk_fake.writes())
    run = run_inline(snyk_services.snyk_sync(agent=account.agent, enqueue=False))
    assert run.status == RunStatus.SUCCEEDED and run.operations.count() == 0
    assert len(snyk_fake.writes()) == writes_before
    row = SnykConnection.objects.get()
    assert row.connection_id and row.org_id and row.integration_id


def test_thirty_accounts_land_in_two_deployments_and_connections_never_move(aws, tenant, snyk_fake, settings):
    settings.RECONCILE_CONCURRENCY = 1  # one SQLite connection in these tests: no threads
    ids = [f"{400000000000 + i}" for i in range(30)]
    agent, accounts = universal_inventory(ids)
    options = {"max_concurrency": 1}
    run = run_inline(
        services.run_request(kind="bulk", accounts=accounts, agent=agent, options=options, enqueue=False)
    )
    assert run.status == RunStatus.SUCCEEDED, run.explanation
    sizes = sorted(len(snyk_fake.connections_of(d)) for d in snyk_fake.deployments)
    assert sizes == [6, 24]
    placed = dict(SnykConnection.objects.values_list("broker_id", "deployment_id"))
    # An account leaves the first deployment: the others stay where they are, a new one fills its slot.
    first = SnykConnection.objects.filter(deployment__ordinal=1).first().broker.account
    assert run_inline(lifecycle.account_offboard(account=first, enqueue=False)).status == RunStatus.SUCCEEDED
    new_agent_account = account_services.account_create(
        agent=agent,
        account_id="499999999999",
        regions=["eu-west-1"],
        external_id="ext-new",
        management_role_arn=make_management_role("499999999999"),
        broker_client_url="http://ub-client:8000",
        cr_agent_url="http://cra:8081",
    )
    onboard(new_agent_account)
    after = dict(SnykConnection.objects.values_list("broker_id", "deployment_id"))
    assert all(after[b] == d for b, d in placed.items() if b in after)
    assert SnykConnection.objects.get(broker__account=new_agent_account).deployment.ordinal == 1
    assert sorted(len(snyk_fake.connections_of(d)) for d in snyk_fake.deployments) == [6, 24]


def test_rotation_puts_the_id_in_the_trust_before_the_connection_and_retires_it_after(aws, tenant, snyk_fake):
    _, (account,) = universal_inventory(["222222222222"])
    onboard(account)
    name = "222222222222-eu-west-1"
    preview = lifecycle.plan_rotation(account, "ext-rotated-1")
    assert [c.action for c in preview.changes] == ["iam:UpdateAssumeRolePolicy", "snyk:UpdateConnection"]
    patch = preview.changes[1]
    assert (patch.before["cr_external_id"], patch.after["cr_external_id"]) == (
        "ext-222222222222",
        "ext-rotated-1",
    )

    run = run_inline(lifecycle.external_id_rotate(account=account, value="ext-rotated-1", enqueue=False))
    assert run.status == RunStatus.SUCCEEDED, run.explanation
    assert list(run.operations.order_by("sequence").values_list("action", flat=True)) == [
        "iam:UpdateAssumeRolePolicy",
        "snyk:UpdateConnection",
    ]
    assert sorted(trust_ids("222222222222")) == ["ext-222222222222", "ext-rotated-1"]
    assert the_connection(snyk_fake, name)["required"]["cr_external_id"] == "ext-rotated-1"

    account.refresh_from_db()
    run, _ = lifecycle.external_id_retire(account=account, value="ext-222222222222", enqueue=False)
    run = run_inline(run)
    assert list(run.operations.values_list("action", flat=True)) == ["iam:UpdateAssumeRolePolicy"]
    assert trust_ids("222222222222") == ["ext-rotated-1"]
    assert the_connection(snyk_fake, name)["required"]["cr_external_id"] == "ext-rotated-1"


def test_offboarding_removes_integration_and_connection_before_the_role(aws, tenant, snyk_fake):
    _, (account,) = universal_inventory(["222222222222"])
    onboard(account)
    run = run_inline(lifecycle.account_offboard(account=account, enqueue=False))
    assert run.status == RunStatus.SUCCEEDED, run.explanation
    actions = list(run.operations.order_by("sequence").values_list("action", flat=True))
    assert actions[:2] == ["snyk:DeleteIntegration", "snyk:DeleteConnection"]
    assert actions.index("snyk:DeleteConnection") < actions.index("iam:DeleteRole")
    assert snyk_fake.connections == {} and snyk_fake.integrations == {}
    assert not SnykConnection.objects.exists()
    assert len(snyk_fake.orgs) == 2  # the account's Org is kept, with its scan history


def test_a_snyk_refusal_fails_the_account_in_plain_words(aws, tenant, snyk_fake):
    _, (account,) = universal_inventory(["222222222222"])
    snyk_fake.faults.append(("POST /rest/tenants/", 403, ""))  # the deployment
    run = run_inline(services.account_onboard(account=account, enqueue=False))
    assert run.status == RunStatus.FAILED
    assert "snyk:CreateDeployment" in run.explanation and "Tenant Admin" in run.explanation
    failed = run.operations.get(status="failed")
    assert failed.error_code == "HTTP 403" and failed.request_id
    assert iam_in("222222222222").get_role("SnykEcrServiceRole")  # the IAM side was made first


def test_classic_agents_never_call_snyk(aws, tenant, snyk_fake, inventory):
    from .test_engine import setup_agent_and_onboard

    agent, accounts = inventory
    setup_agent_and_onboard(agent, accounts)
    assert snyk_fake.log == ["GET /rest/self", f"GET /rest/tenants/{snyk_fake.tenant_id}/memberships"]


def test_deployment_files_on_the_command_line_are_audited(aws, tenant, snyk_fake):
    import io

    import yaml
    from django.core.management import call_command

    from portal.models import AuditEntry

    _, (account,) = universal_inventory(["222222222222"])
    onboard(account)

    def deployment_env(*args):
        out = io.StringIO()
        call_command("deployment_env", *args, stdout=out)
        return out.getvalue()

    env = deployment_env("ub-1")
    secret = SnykTenant.objects.get().app_client_secret
    assert f"CLIENT_SECRET={secret}\n" in env and "BROKER_CLIENT_URL=http://ub-client:8000\n" in env
    assert f"DEPLOYMENT_ID={SnykDeployment.objects.get().deployment_id}\n" in env

    SnykTenant.objects.update(api_url="https://api.eu.snyk.io")  # a real region, for the chart
    values = yaml.safe_load(deployment_env("ub-1", "--format", "helm"))
    assert values["region"] == "eu" and values["clientSecret"] == secret and values["replicaCount"] == 2
    assert values["highAvailabilityMode"] == {"enabled": True}

    manifest = list(yaml.safe_load_all(deployment_env("ub-1", "--format", "cra-manifest")))
    assert [d["kind"] for d in manifest] == ["ServiceAccount", "Deployment", "Service"]
    assert manifest[0]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == account.agent.arn
    assert manifest[2]["metadata"]["name"] == "cra" and manifest[2]["spec"]["ports"][0]["port"] == 8081
    assert secret not in yaml.safe_dump_all(manifest)
    entries = AuditEntry.objects.filter(action="deployment.download")
    assert sorted(e.details["format"] for e in entries) == ["cra-manifest", "env", "helm"]
    assert secret not in json.dumps([e.details for e in entries])


def test_a_failed_snyk_removal_keeps_that_accounts_role(aws, tenant, snyk_fake, settings):
    from accounts.choices import Lifecycle
    from accounts.models import EcrAccount

    settings.RECONCILE_CONCURRENCY = 1
    _, accounts = universal_inventory(["222222222222", "333333333333"])
    for account in accounts:
        onboard(account)
    failing = SnykConnection.objects.get(broker__account=accounts[0]).connection_id
    snyk_fake.faults.append(
        (f"DELETE /rest/tenants/{snyk_fake.tenant_id}/brokers/connections/{failing}/", 500, "")
    )
    settings.SNYK_RETRIES = 0
    # Both removed in one run: the failed account's step stops it there; the other goes on.
    EcrAccount.objects.update(status=Lifecycle.REMOVED)
    run = run_inline(services.account_reconcile(accounts=list(EcrAccount.objects.all()), enqueue=False))
    assert run.status == RunStatus.PARTIAL, run.explanation
    assert run.result["accounts"] == {"222222222222": "failed", "333333333333": "succeeded"}
    assert iam_in("222222222222").get_role("SnykEcrServiceRole")  # kept: its connection is still there
    assert iam_in("333333333333").get_role("SnykEcrServiceRole") is None
    assert [c["name"] for c in snyk_fake.connections.values()] == ["222222222222-eu-west-1"]

"""Inventory pages and the onboarding wizard through the Django test client (AWS: in-process moto)."""

import json
import re

import pytest
from django.urls import reverse

from accounts.choices import BROKER_PENDING_REASONS, Lifecycle
from accounts.models import AgentIdentity, BrokerInstance, EcrAccount
from portal.models import AuditEntry
from provisioning import runner, services
from provisioning.choices import RunKind, RunStatus
from provisioning.models import Run

from .conftest import TOKEN, access, management_role, onboarded

WIZARD = {
    "account_id": "222222222222",
    "alias": "payments",
    "regions": ["us-east-1", "eu-west-1"],
    "management_role_arn": management_role("222222222222"),
    "management_external_id": "",
    "external_id": "",
    "broker_client_url": "http://broker.internal:8000",
    "cr_agent_url": "http://cra.internal:8081",
    "broker_token": "",
    "broker_server_url": "https://broker.eu.snyk.io",
}


@pytest.fixture
def as_user(client):
    def login(user):
        client.force_login(user)
        return client

    return login


def wizard_data(agent, **overrides):
    return {**WIZARD, "agent": agent.pk, **overrides}


def run_inline(run):
    assert run.claim()
    return runner.execute(run)


# --- wizard: inputs --------------------------------------------------------------------------


def test_bad_account_id_shows_the_field_error_and_creates_nothing(as_user, operator, role_agent):
    client = as_user(operator)
    response = client.post(reverse("accounts:account_onboard"), wizard_data(role_agent, account_id="12345"))
    assert response.status_code == 200
    assert "An AWS account id is exactly 12 digits." in response.content.decode()
    assert 'id="errors-account_id"' in response.content.decode()
    assert not EcrAccount.objects.exists()
    assert not BrokerInstance.objects.exists()
    assert not AuditEntry.objects.filter(action="account.create").exists()


def test_every_bad_field_is_reported_at_once(as_user, operator, role_agent):
    client = as_user(operator)
    data = wizard_data(
        role_agent,
        account_id="abc",
        external_id="x",
        broker_client_url="http://broker.internal",  # no port
        cr_agent_url="ftp://cra:8081",
        broker_token="not-a-uuid",
        management_role_arn="arn:aws:iam::1:role/x",
    )
    body = client.post(reverse("accounts:account_onboard"), data).content.decode()
    for field in (
        "account_id",
        "external_id",
        "broker_client_url",
        "cr_agent_url",
        "broker_token",
        "management_role_arn",
    ):
        assert f'id="errors-{field}"' in body, field
    assert "The URL needs an explicit port" in body
    assert not EcrAccount.objects.exists()


def test_inline_validation_returns_the_field_with_its_error(as_user, operator, role_agent):
    client = as_user(operator)
    url = reverse("accounts:account_onboard_validate")
    body = client.post(
        url, {**wizard_data(role_agent, account_id="12"), "_field": "account_id"}
    ).content.decode()
    assert body.lstrip().startswith('<div class="field invalid" id="field-account_id"')
    assert "exactly 12 digits" in body
    assert 'hx-post="' + url in body  # stays live for the next change
    body = client.post(url, {**wizard_data(role_agent), "_field": "account_id"}).content.decode()
    assert "field valid" in body and "errorlist" not in body
    assert client.post(url, {"_field": "nope"}).status_code == 400
    assert not EcrAccount.objects.exists()


def test_existing_account_id_is_refused(as_user, operator, role_agent, make_account):
    make_account("222222222222")
    body = (
        as_user(operator).post(reverse("accounts:account_onboard"), wizard_data(role_agent)).content.decode()
    )
    assert "already exists" in body
    assert EcrAccount.objects.count() == 1


def test_valid_inputs_save_a_draft_and_open_its_plan(as_user, operator, role_agent):
    response = as_user(operator).post(reverse("accounts:account_onboard"), wizard_data(role_agent))
    assert response.status_code == 302
    assert response["Location"] == reverse("accounts:account_plan", args=["222222222222"])
    account = EcrAccount.objects.get()
    assert account.status == Lifecycle.DRAFT
    assert sorted(account.brokers.values_list("region", flat=True)) == ["eu-west-1", "us-east-1"]
    assert account.external_ids.count() == 1  # generated
    assert not Run.objects.exists()  # nothing sent to AWS yet


# --- wizard: plan preview and confirm --------------------------------------------------------


def test_plan_preview_shows_every_document_and_call(aws, as_user, operator, role_agent, account):
    body = as_user(operator).get(reverse("accounts:account_plan", args=[account.account_id])).content.decode()
    for call in ("iam:CreatePolicy", "iam:CreateRole", "iam:AttachRolePolicy", "iam:PutRolePolicy"):
        assert call in body, call
    assert "ecr:GetDownloadUrlForLayer" in body  # the read-only policy document
    assert "sts:ExternalId" in body and "ext-222222222222" in body  # the trust document
    assert "SnykCraAssumeRolePolicy222222222222" in body  # the agent statement
    assert "New document (nothing in AWS yet)" in body
    assert re.search(r'name="plan_digest" value="[0-9a-f]{64}"', body)


def test_plan_preview_includes_creating_an_agent_not_set_up_yet(aws, as_user, operator, account):
    """The run creates a draft agent first; the preview must show it (nothing applied unseen)."""
    body = as_user(operator).get(reverse("accounts:account_plan", args=[account.account_id])).content.decode()
    assert "iam:CreateInstanceProfile" in body and "Create agent role SnykCraEc2Role" in body
    assert body.index("Create agent role SnykCraEc2Role") < body.index("Create role SnykEcrServiceRole")


def test_plan_preview_shows_an_aws_error_in_plain_words(aws, as_user, operator, make_account):
    account = make_account(management_role_arn="arn:aws:iam::222222222222:role/Missing")
    from unittest import mock

    from provisioning import aws as aws_module

    error = aws_module.AwsError("AccessDenied", "not allowed to assume", request_id="req-1")
    with mock.patch.object(aws_module.Iam, "get_role", side_effect=error):
        body = (
            as_user(operator)
            .get(reverse("accounts:account_plan", args=[account.account_id]))
            .content.decode()
        )
    assert "AWS answered AccessDenied: not allowed to assume (request id req-1)" in body
    assert "confirm-plan" not in body


def _digest(client, account):
    body = client.get(reverse("accounts:account_plan", args=[account.account_id])).content.decode()
    return re.search(r'name="plan_digest" value="([0-9a-f]{64})"', body).group(1)


def test_confirming_the_previewed_plan_starts_an_onboarding_run(aws, as_user, operator, account):
    client = as_user(operator)
    preview = client.get(reverse("accounts:account_plan", args=[account.account_id])).content.decode()
    digest = re.search(r'name="plan_digest" value="([0-9a-f]{64})"', preview).group(1)
    planned = int(re.search(r"(\d+) changes? to make", preview).group(1))
    response = client.post(
        reverse("accounts:account_apply", args=[account.account_id]), {"plan_digest": digest}
    )
    run = Run.objects.get()
    assert response["Location"] == run.get_absolute_url()
    assert run.kind == RunKind.ONBOARD and run.status == RunStatus.QUEUED
    assert run.requested_by == operator
    assert run.options == {
        "previewed_plan": digest,
        "previewed_changes": planned,
        "previewed_absent": [account.account_id],  # its role and policy: created without reading
    }
    # Steps are planned as the run reaches them: until then the page counts the confirmed preview.
    assert f"0 of {planned} changes applied" in client.get(run.get_absolute_url()).content.decode()
    account.refresh_from_db()
    assert account.status == Lifecycle.PENDING


def test_a_plan_that_changed_since_the_preview_is_not_applied(aws, as_user, operator, account):
    client = as_user(operator)
    digest = _digest(client, account)
    # Someone creates the role by hand between preview and confirm.
    aws.call(access("222222222222"), "iam", "create_role", RoleName="SnykEcrServiceRole",
             AssumeRolePolicyDocument='{"Version":"2012-10-17","Statement":[]}')  # fmt: skip
    response = client.post(
        reverse("accounts:account_apply", args=[account.account_id]), {"plan_digest": digest}, follow=True
    )
    assert not Run.objects.exists()
    assert "changed since this plan was shown" in response.content.decode()
    assert "Adopt existing role" in response.content.decode()  # the new plan is shown


def test_another_accounts_run_landing_does_not_void_an_account_preview(
    aws, as_user, admin_user, make_account, role_agent
):
    """The agent's shared policy changes when any of its accounts is onboarded; an open preview of a
    different account stays confirmable. The agent's own page, which is about that policy, does not."""
    run_inline(services.agent_setup(agent=role_agent, enqueue=False))
    first, second = make_account("222222222222"), make_account("333333333333")
    client = as_user(admin_user)
    account_page = client.get(reverse("accounts:account_plan", args=[second.account_id])).content.decode()
    assert "other accounts' runs may change it meanwhile" in account_page
    account_digest = _digest(client, second)
    agent_page = client.get(reverse("accounts:agent_plan", args=[role_agent.pk])).content.decode()
    agent_digest = re.search(r'name="plan_digest" value="([0-9a-f]{64})"', agent_page).group(1)
    assert "other accounts' runs may change it meanwhile" not in agent_page

    assert run_inline(services.account_onboard(account=first, enqueue=False)).status == RunStatus.SUCCEEDED

    refused = client.post(
        reverse("accounts:agent_setup", args=[role_agent.pk]), {"plan_digest": agent_digest}
    )
    assert refused["Location"] == reverse("accounts:agent_plan", args=[role_agent.pk])
    assert not Run.objects.filter(kind=RunKind.AGENT).exclude(status=RunStatus.SUCCEEDED).exists()
    response = client.post(
        reverse("accounts:account_apply", args=[second.account_id]), {"plan_digest": account_digest}
    )
    run = Run.objects.order_by("-pk").first()
    assert response["Location"] == run.get_absolute_url()
    assert run.kind == RunKind.ONBOARD and list(run.accounts.all()) == [second]
    assert run_inline(run).status == RunStatus.SUCCEEDED
    live = aws.call(access("111111111111"), "iam", "get_role_policy", RoleName=role_agent.iam_name,
                    PolicyName=role_agent.policy_name)["PolicyDocument"]  # fmt: skip
    assert {first.service_role_arn, second.service_role_arn} <= set(
        json.dumps(live).replace('"', " ").split()
    )


def test_a_hand_made_grant_added_to_the_agent_since_the_preview_voids_it(
    aws, as_user, operator, make_account, role_agent
):
    """What the agent's rebuilt policy would take from roles outside the portal is pinned: a grant
    someone adds by hand between preview and confirm would be revoked unseen, so the plan is shown again."""
    run_inline(services.agent_setup(agent=role_agent, enqueue=False))
    account = make_account("333333333333")
    client = as_user(operator)
    digest = _digest(client, account)
    hand_made = "arn:aws:iam::444444444444:role/HandMadeScanRole"
    aws.call(access("111111111111"), "iam", "put_role_policy", RoleName=role_agent.iam_name,
             PolicyName=role_agent.policy_name, PolicyDocument=json.dumps({"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": hand_made}]}))  # fmt: skip
    response = client.post(
        reverse("accounts:account_apply", args=[account.account_id]), {"plan_digest": digest}, follow=True
    )
    assert not Run.objects.exclude(kind=RunKind.AGENT).exists()
    body = response.content.decode()
    assert "changed since this plan was shown" in body
    warning = re.search(r'id="revokes-outside-inventory">(.*?)</div>', body, flags=re.S).group(1)
    assert "loses sts:AssumeRole on 1 role the portal does not manage" in warning  # the new plan says so
    assert f'<li class="mono">{hand_made}</li>' in warning.replace("<wbr>", "")


def test_confirm_without_a_digest_is_refused(aws, as_user, operator, account):
    as_user(operator).post(reverse("accounts:account_apply", args=[account.account_id]), {})
    assert not Run.objects.exists()


def test_apply_while_a_run_is_active_redirects_to_it(aws, as_user, operator, account):
    run = services.account_onboard(account=account, enqueue=False)
    response = as_user(operator).post(reverse("accounts:account_apply", args=[account.account_id]), {})
    assert response["Location"] == run.get_absolute_url()
    assert Run.objects.count() == 1


def test_an_active_account_is_reconciled(aws, as_user, operator, account, role_agent):
    run_inline(services.agent_setup(agent=role_agent, enqueue=False))
    assert run_inline(services.account_onboard(account=account, enqueue=False)).status == RunStatus.SUCCEEDED
    client = as_user(operator)
    body = client.get(reverse("accounts:account_plan", args=[account.account_id])).content.decode()
    assert "No change: AWS already matches" in body
    digest = re.search(r'name="plan_digest" value="([0-9a-f]{64})"', body).group(1)
    client.post(reverse("accounts:account_apply", args=[account.account_id]), {"plan_digest": digest})
    assert Run.objects.order_by("-pk").first().kind == RunKind.RECONCILE


# --- account pages ---------------------------------------------------------------------------


def test_account_detail_shows_role_ids_brokers_runs_and_audit(as_user, viewer, account):
    onboarded(account)
    body = as_user(viewer).get(account.get_absolute_url()).content.decode()
    assert "arn:aws:iam::222222222222:role/SnykEcrServiceRole" in body
    assert "ext-222222222222" in body
    assert account.brokers.get().masked_token in body
    assert TOKEN not in body
    assert "account.create" in body  # audit entry
    assert "Download .env" not in body  # viewers: config yes, files no
    assert "BROKER_CLIENT_VALIDATION_URL=http://cra.internal:8081/systemcheck" in body


def test_live_trust_before_and_after_onboarding(aws, as_user, viewer, account, role_agent):
    client = as_user(viewer)
    url = reverse("accounts:account_live_trust", args=[account.account_id])
    assert "role not created yet" in client.get(url).content.decode()
    run_inline(services.agent_setup(agent=role_agent, enqueue=False))
    run_inline(services.account_onboard(account=account, enqueue=False))
    assert "live trust matches" in client.get(url).content.decode()
    # Drift: someone removes the ExternalId condition by hand.
    statement = {
        "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::111111111111:role/SnykCraEc2Role"},
        "Action": "sts:AssumeRole",
    }
    document = json.dumps({"Version": "2012-10-17", "Statement": [statement]})
    aws.call(
        access("222222222222"),
        "iam",
        "update_assume_role_policy",
        RoleName="SnykEcrServiceRole",
        PolicyDocument=document,
    )
    body = client.get(url).content.decode()
    assert "live trust differs" in body
    assert '<span class="add">' in body and "sts:ExternalId" in body


def test_account_list_filters_and_search(as_user, viewer, make_account, user_agent):
    make_account("222222222222", alias="payments", regions=("us-east-1",))
    make_account("333333333333", alias="search-team", regions=("eu-west-1",))
    make_account("444444444444", alias="ml", agent=user_agent, regions=("eu-west-1", "us-east-1"))
    EcrAccount.objects.filter(account_id="333333333333").update(status=Lifecycle.FAILED)
    client = as_user(viewer)
    url = reverse("accounts:account_list")

    def ids(**params):
        body = client.get(url, params).content.decode()
        return re.findall(r'class="mono">(\d{12})</a>', body)

    assert ids() == ["222222222222", "333333333333", "444444444444"]
    assert ids(status="failed") == ["333333333333"]
    assert ids(agent="cra-user") == ["444444444444"]
    assert ids(region="eu-west-1") == ["333333333333", "444444444444"]
    assert ids(q="search") == ["333333333333"]
    assert ids(q="4444") == ["444444444444"]
    assert ids(status="bogus") == ids()


def test_account_list_paginates(as_user, viewer, make_account):
    for i in range(30):
        make_account(f"5000000000{i:02d}")
    client = as_user(viewer)
    first = client.get(reverse("accounts:account_list")).content.decode()
    assert "page 1 of 2" in first and "500000000024" in first and "500000000025" not in first
    second = client.get(reverse("accounts:account_list"), {"page": 2}).content.decode()
    assert "500000000029" in second and "500000000000" not in second


# --- broker downloads ------------------------------------------------------------------------


@pytest.fixture
def broker(account):
    """A broker of an onboarded account (a draft's brokers are pending: no file)."""
    return onboarded(account).brokers.get()


@pytest.mark.parametrize("status", [Lifecycle.DRAFT, Lifecycle.PENDING, Lifecycle.FAILED])
def test_a_pending_broker_shows_why_and_its_download_refuses(as_user, operator, account, status):
    EcrAccount.objects.filter(pk=account.pk).update(status=status)
    broker = account.brokers.get()
    client = as_user(operator)
    body = client.get(account.get_absolute_url()).content.decode()
    panel = body[body.index('id="broker-us-east-1"') :].split("</article>")[0]
    assert '<span class="badge pending">Pending</span>' in panel
    assert "Active" not in panel
    reason = BROKER_PENDING_REASONS[status]
    assert f"is pending: {reason}" in panel.replace("&#x27;", "'")
    assert "/download/" not in panel  # no download offered
    for fmt in ("env", "helm", "docker"):
        response = client.get(reverse("accounts:broker_download", args=[broker.pk, fmt]), follow=True)
        assert response.redirect_chain[-1][0] == account.get_absolute_url()
        assert f"No file for this broker: The broker for {account.account_id} in us-east-1 is pending: " in (
            response.content.decode().replace("&#x27;", "'")
        )
    assert not AuditEntry.objects.filter(action="broker.download").exists()


def test_dashboard_and_agent_page_count_only_the_brokers_of_onboarded_accounts(
    as_user, viewer, make_account, role_agent
):
    onboarded(make_account("222222222222", regions=("us-east-1", "eu-west-1")))
    make_account("333333333333")  # a draft: its broker is pending
    client = as_user(viewer)
    tile = client.get(reverse("dashboard")).content.decode().split('id="tile-brokers"')[1].split("</a>")[0]
    assert "<b>2</b> brokers" in tile and "+ 1 pending" in tile
    agent = client.get(reverse("accounts:agent_detail", args=[role_agent.pk])).content.decode()
    assert "<dt>Active brokers</dt><dd>2 " in agent and "and 1 pending" in agent


def test_operator_downloads_the_env_and_it_is_audited(as_user, operator, broker):
    response = as_user(operator).get(reverse("accounts:broker_download", args=[broker.pk, "env"]))
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="broker-222222222222-us-east-1.env"'
    assert response["Cache-Control"] == "no-store"
    assert f"BROKER_TOKEN={TOKEN}" in response.content.decode()
    entry = AuditEntry.objects.get(action="broker.download")
    assert entry.user == operator and entry.user_name == "otto-operator"
    assert entry.details["filename"] == "broker-222222222222-us-east-1.env"


@pytest.mark.parametrize(
    "fmt, filename",
    [
        ("helm", "broker-222222222222-us-east-1-values.yaml"),
        ("docker", "cra-cra.internal-8081-docker-run.sh"),
    ],
)
def test_other_formats(as_user, operator, broker, fmt, filename):
    response = as_user(operator).get(reverse("accounts:broker_download", args=[broker.pk, fmt]))
    assert response["Content-Disposition"] == f'attachment; filename="{filename}"'
    assert TOKEN in response.content.decode()


def test_viewer_may_not_download_token_files(as_user, viewer, broker):
    for fmt in ("env", "helm", "docker"):
        assert (
            as_user(viewer).get(reverse("accounts:broker_download", args=[broker.pk, fmt])).status_code == 403
        )
    assert not AuditEntry.objects.filter(action="broker.download").exists()


def test_download_without_urls_explains_instead_of_rendering(as_user, operator, make_onboarded_account):
    broker = make_onboarded_account(broker_client_url="").brokers.get()
    response = as_user(operator).get(
        reverse("accounts:broker_download", args=[broker.pk, "env"]), follow=True
    )
    assert "BROKER_CLIENT_URL is not set" in response.content.decode()
    assert not AuditEntry.objects.filter(action="broker.download").exists()


def test_unknown_format_is_404(as_user, operator, broker):
    assert (
        as_user(operator).get(reverse("accounts:broker_download", args=[broker.pk, "xml"])).status_code == 404
    )


# --- agents ----------------------------------------------------------------------------------


def test_admin_adds_an_agent_through_plan_and_run(aws, as_user, admin_user):
    client = as_user(admin_user)
    response = client.post(
        reverse("accounts:agent_add"),
        {
            "name": "cra-prod",
            "kind": "user",
            "account_id": "111111111111",
            "management_role_arn": management_role("111111111111"),
        },
    )
    agent = AgentIdentity.objects.get()
    assert response["Location"] == reverse("accounts:agent_plan", args=[agent.pk])
    assert agent.iam_name == "SnykCraUser" and agent.status == Lifecycle.DRAFT
    body = client.get(response["Location"]).content.decode()
    assert "iam:CreateUser" in body
    digest = re.search(r'name="plan_digest" value="([0-9a-f]{64})"', body).group(1)
    response = client.post(reverse("accounts:agent_setup", args=[agent.pk]), {"plan_digest": digest})
    run = Run.objects.get()
    assert run.kind == RunKind.AGENT and run.agent == agent
    assert response["Location"] == run.get_absolute_url()


def test_bad_agent_input_is_reported(as_user, admin_user):
    body = (
        as_user(admin_user)
        .post(
            reverse("accounts:agent_add"),
            {"name": "x y", "kind": "role", "account_id": "1", "iam_name": "a b"},
        )
        .content.decode()
    )
    assert "exactly 12 digits" in body
    assert "IAM role and user names" in body
    assert not AgentIdentity.objects.exists()


def test_agent_detail_shows_layout_and_headroom(as_user, viewer, role_agent, make_account):
    make_account("222222222222")
    EcrAccount.objects.update(status=Lifecycle.ACTIVE)
    body = as_user(viewer).get(role_agent.get_absolute_url()).content.decode().replace("<wbr>", "")
    assert "arn:aws:iam::111111111111:role/SnykCraEc2Role" in body
    assert '<dd id="agent-layout">Inline, one statement per account</dd>' in body
    assert re.search(r'id="agent-headroom">\d+ % free', body)
    assert "222222222222" in body


def test_access_key_is_shown_once_with_a_cra_env_and_never_stored(aws, as_user, admin_user, user_agent):
    run_inline(services.agent_setup(agent=user_agent, enqueue=False))
    response = as_user(admin_user).post(reverse("accounts:agent_access_key", args=[user_agent.pk]))
    body = response.content.decode()
    assert "no-store" in response["Cache-Control"]
    key_id = re.search(r'id="access-key-id">(\w+)<', body).group(1)
    secret = re.search(r'id="secret-access-key">([^<]+)<', body).group(1)
    assert 'download="cra-cra-user.env"' in body
    assert f"AWS_ACCESS_KEY_ID%3D{key_id}" in body and "SNYK_PORT%3D8081" in body
    # Nowhere in the database.
    from django.db import connection

    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')
            assert secret not in repr(cursor.fetchall()), table
    assert AuditEntry.objects.filter(action="agent.access_key.create").exists()


def test_access_key_for_a_role_agent_is_refused(as_user, admin_user, role_agent):
    response = as_user(admin_user).post(
        reverse("accounts:agent_access_key", args=[role_agent.pk]), follow=True
    )
    assert "only for user agents" in response.content.decode()

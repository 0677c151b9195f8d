"""The lifecycle pages through the test client (AWS: in-process moto): rotation, offboarding, file onboarding."""

import csv
import html
import io
import json
import re

import pytest
from django.urls import reverse

from accounts.choices import BrokerStatus, ExternalIdState, Lifecycle
from accounts.models import BrokerInstance, EcrAccount, ExternalId
from portal.models import AuditEntry
from provisioning import bulkfile, runner, services
from provisioning.choices import RunKind, RunStatus
from provisioning.models import Run

from .conftest import access, management_role


def run_inline(run):
    run.refresh_from_db()
    assert run.claim()
    return runner.execute(run)


def digest_of(body):
    return re.search(r'name="plan_digest" value="([0-9a-f]{64})"', body).group(1)


def trust_ids(account_id):
    from provisioning import aws

    role = aws.Iam(access(account_id)).get_role("SnykEcrServiceRole")
    return role["AssumeRolePolicyDocument"]["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"]


@pytest.fixture
def active(aws, role_agent, account):
    assert run_inline(services.agent_setup(agent=role_agent, enqueue=False)).status == RunStatus.SUCCEEDED
    assert run_inline(services.account_onboard(account=account, enqueue=False)).status == RunStatus.SUCCEEDED
    return EcrAccount.objects.get(pk=account.pk)


def test_rotation_from_the_account_page_to_the_retired_old_id(client, operator, active):
    client.force_login(operator)
    detail = reverse("accounts:account_detail", args=[active.account_id])
    body = client.get(detail).content.decode()
    rotate = reverse("accounts:external_id_rotate", args=[active.account_id])
    assert f'href="{rotate}"' in body

    # Preview: the trust will list both ids; nothing is saved yet.
    body = client.get(rotate + "?external_id=browser-new-id").content.decode()
    assert "iam:UpdateAssumeRolePolicy" in body and "browser-new-id" in body
    assert active.external_ids.count() == 1
    response = client.post(rotate, {"external_id": "browser-new-id", "plan_digest": digest_of(body)})
    run = Run.objects.get(kind=RunKind.ROTATE)
    assert response["Location"] == run.get_absolute_url()
    assert run_inline(run).status == RunStatus.SUCCEEDED
    assert trust_ids(active.account_id) == ["ext-222222222222", "browser-new-id"]

    # The account page now shows the rotation: the broker has neither downloaded nor redeployed.
    body = client.get(detail).content.decode()
    assert 'id="rotation"' in body and "Mark redeployed" in body
    old = ExternalId.objects.get(value="ext-222222222222")
    retire = reverse("accounts:external_id_retire", args=[active.account_id, old.pk])
    assert f'href="{retire}"' in body
    body = client.get(retire).content.decode()
    assert 'id="warnings"' in body and "no broker file holding the new ExternalId" in body

    broker = active.brokers.get()
    download = client.get(reverse("accounts:broker_download", args=[broker.pk, "env"]))
    assert b"CR_EXTERNAL_ID=browser-new-id\n" in download.content
    client.post(reverse("accounts:broker_redeployed_confirm", args=[broker.pk]))
    assert AuditEntry.objects.get(action="broker.redeployed").details["external_id"] == "browser-new-id"

    body = client.get(retire).content.decode()
    assert 'id="warnings"' not in body
    response = client.post(retire, {"plan_digest": digest_of(body)})
    run = Run.objects.filter(kind=RunKind.ROTATE).latest("pk")
    assert response["Location"] == run.get_absolute_url()
    assert run_inline(run).status == RunStatus.SUCCEEDED
    assert trust_ids(active.account_id) == "browser-new-id"
    assert list(active.external_ids.values_list("state", flat=True)) == [ExternalIdState.ACTIVE]


def test_a_stale_rotation_preview_is_not_applied(client, operator, active):
    client.force_login(operator)
    rotate = reverse("accounts:external_id_rotate", args=[active.account_id])
    response = client.post(rotate, {"external_id": "stale-id", "plan_digest": "0" * 64}, follow=True)
    assert "changed since this plan was shown" in response.content.decode()
    assert not ExternalId.objects.filter(value="stale-id").exists()
    assert not Run.objects.filter(kind=RunKind.ROTATE).exists()


def test_the_last_id_has_no_retire_button_and_its_page_refuses(client, operator, active):
    client.force_login(operator)
    only = active.external_ids.get()
    body = client.get(
        reverse("accounts:external_id_retire", args=[active.account_id, only.pk])
    ).content.decode()
    assert 'id="refusal"' in body and "only ExternalId" in body and "confirm-plan" not in body
    client.post(
        reverse("accounts:external_id_retire", args=[active.account_id, only.pk]), {"plan_digest": "x"}
    )
    assert active.external_ids.count() == 1 and not Run.objects.filter(kind=RunKind.ROTATE).exists()


def test_viewers_see_no_lifecycle_buttons_and_may_not_use_them(client, viewer, active):
    client.force_login(viewer)
    body = client.get(reverse("accounts:account_detail", args=[active.account_id])).content.decode()
    assert 'id="lifecycle"' in body and 'id="rotate"' not in body and 'id="offboard"' not in body
    for url in (
        reverse("accounts:external_id_rotate", args=[active.account_id]),
        reverse("accounts:account_offboard", args=[active.account_id]),
        reverse("accounts:account_onboard_file"),
    ):
        assert client.get(url).status_code == 403
        assert client.post(url, {"plan_digest": "x"}).status_code == 403


def test_offboarding_is_for_admins_and_previewed(client, operator, admin_user, active, role_agent):
    client.force_login(operator)
    offboard = reverse("accounts:account_offboard", args=[active.account_id])
    assert client.get(offboard).status_code == 403
    assert 'id="offboard"' not in client.get(active.get_absolute_url()).content.decode()

    client.force_login(admin_user)
    assert 'id="offboard"' in client.get(active.get_absolute_url()).content.decode()
    body = client.get(offboard).content.decode()
    calls = re.findall(r'<td class="mono">(iam:\w+)</td>', body)
    assert calls == ["iam:DeleteRolePolicy", "iam:DetachRolePolicy", "iam:DeleteRole", "iam:DeletePolicy"]
    response = client.post(offboard, {"plan_digest": digest_of(body)})
    run = Run.objects.get(kind=RunKind.OFFBOARD)
    assert response["Location"] == run.get_absolute_url()
    assert run.options["confirm_adopted"] is False
    assert run_inline(run).status == RunStatus.SUCCEEDED
    active.refresh_from_db()
    assert active.status == Lifecycle.REMOVED
    assert set(active.brokers.values_list("status", flat=True)) == {BrokerStatus.RETIRED}
    broker = active.brokers.get()
    response = client.get(reverse("accounts:broker_download", args=[broker.pk, "env"]), follow=True)
    assert "retired" in response.content.decode() and b"BROKER_TOKEN=" not in response.content


def test_the_adopted_checkbox_changes_the_plan(client, admin_user, aws, role_agent, make_account):
    run_inline(services.agent_setup(agent=role_agent, enqueue=False))
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": role_agent.arn}, "Action": "sts:AssumeRole"}],
    }
    aws.call(access("333333333333"), "iam", "create_role", RoleName="SnykEcrServiceRole",
             AssumeRolePolicyDocument=json.dumps(trust))  # fmt: skip
    account = make_account("333333333333")
    assert run_inline(services.account_onboard(account=account, enqueue=False)).status == RunStatus.SUCCEEDED
    client.force_login(admin_user)
    offboard = reverse("accounts:account_offboard", args=[account.account_id])
    body = client.get(offboard).content.decode()
    assert "existed before the portal (adopted): it is left in place" in body
    assert "iam:DeleteRole<" not in body
    confirmed = client.get(offboard + "?confirm_adopted=on").content.decode()
    assert "iam:DeleteRole<" in confirmed
    client.post(offboard, {"plan_digest": digest_of(confirmed), "confirm_adopted": "on"})
    run = Run.objects.get(kind=RunKind.OFFBOARD)
    assert run.options["confirm_adopted"] is True
    assert run_inline(run).status == RunStatus.SUCCEEDED
    assert aws.Iam(access("333333333333")).get_role("SnykEcrServiceRole") is None


def _file(rows):
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(bulkfile.COLUMNS), lineterminator="\n")
    writer.writeheader()
    for account_id, alias in rows:
        writer.writerow(
            {
                "account_id": account_id,
                "alias": alias,
                "regions": "us-east-1",
                "management_role_arn": management_role(account_id) if len(account_id) == 12 else "",
                "broker_client_url": "http://broker.internal:8000",
                "cr_agent_url": "http://cra.internal:8081",
            }
        )
    upload = io.BytesIO(out.getvalue().encode())
    upload.name = "accounts.csv"
    return upload


def test_a_bad_file_gets_one_report_and_nothing_is_saved(client, operator, aws, role_agent):
    client.force_login(operator)
    aws.calls.clear()
    rows = [(f"40000000000{i}", f"team-{i}") for i in range(6)]
    rows[1] = ("4000", "short")
    rows[4] = ("400000000004", "=cmd|' /C calc'!A0")
    response = client.post(
        reverse("accounts:account_onboard_file"),
        {"agent": role_agent.pk, "max_concurrency": 4, "file": _file(rows)},
    )
    assert response.status_code == 400
    body = response.content.decode()
    assert "2 of 6 rows invalid" in body
    problems = re.findall(
        r"<tr><td>(\d+)</td><td class=\"mono\">[^<]*</td><td class=\"mono\">(\w+)</td>", body
    )
    assert ("3", "account_id") in problems and ("6", "alias") in problems
    assert {row for row, _ in problems} == {"3", "6"}
    assert not EcrAccount.objects.exists() and not Run.objects.exists()
    assert sum(aws.calls.values()) == 0


def test_a_good_file_is_previewed_then_confirmed_into_one_bulk_run(client, operator, aws, role_agent):
    client.force_login(operator)
    url = reverse("accounts:account_onboard_file")
    assert "upload-form" in client.get(url).content.decode()
    rows = [(f"40000000001{i}", f"team-{i}") for i in range(5)]
    body = client.post(
        url, {"agent": role_agent.pk, "max_concurrency": 3, "failure_tolerance": 1, "file": _file(rows)}
    ).content.decode()
    # Five service roles, and the role of the agent: it is a draft, so the run creates it first.
    assert "5 accounts for agent" in body and body.count(">iam:CreateRole<") == 6
    assert ">iam:CreateInstanceProfile<" in body
    assert not EcrAccount.objects.exists()  # a preview saves nothing
    form = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', body))
    data = {k: html.unescape(v) for k, v in form.items()}
    data.update(max_concurrency=3, failure_tolerance=1)
    response = client.post(url, data)
    run = Run.objects.get(kind=RunKind.BULK)
    assert response["Location"] == run.get_absolute_url()
    assert run.options["max_concurrency"] == 3 and run.options["failure_tolerance"] == 1
    assert run.options["previewed_plan"] == data["plan_digest"]
    assert EcrAccount.objects.filter(status=Lifecycle.PENDING).count() == 5
    # The ExternalIds the preview showed are the ones saved.
    previewed = {values["external_id"] for _, values in json.loads(data["records"])}
    assert set(ExternalId.objects.values_list("value", flat=True)) == previewed
    assert BrokerInstance.objects.count() == 5


def test_a_tampered_confirmation_is_revalidated(client, operator, aws, role_agent):
    client.force_login(operator)
    records = '[[2, {"account_id": "=1+2", "regions": "us-east-1"}]]'
    response = client.post(
        reverse("accounts:account_onboard_file"),
        {"agent": role_agent.pk, "max_concurrency": 2, "records": records, "plan_digest": "0" * 64},
    )
    assert response.status_code == 400
    assert "spreadsheet formulas are refused" in response.content.decode()
    assert not EcrAccount.objects.exists()
    assert aws.write_calls() == 0


def test_an_agent_serving_accounts_cannot_be_offboarded_from_its_page(
    client, admin_user, operator, active, role_agent
):
    from accounts.models import AgentIdentity
    from provisioning import lifecycle

    url = reverse("accounts:agent_offboard", args=[role_agent.pk])
    client.force_login(operator)
    assert client.get(url).status_code == 403
    client.force_login(admin_user)
    assert f'href="{url}"' in client.get(role_agent.get_absolute_url()).content.decode()
    body = client.get(url).content.decode()
    assert 'id="refusal"' in body and "still serves 1 account: 222222222222" in body
    assert "confirm-plan" not in body
    client.post(url, {"plan_digest": "0" * 64})
    assert AgentIdentity.objects.get(pk=role_agent.pk).status == Lifecycle.ACTIVE

    run_inline(lifecycle.account_offboard(account=active, enqueue=False))
    body = client.get(url).content.decode()
    assert 'id="refusal"' not in body and "is left in place" in body
    response = client.post(url, {"plan_digest": digest_of(body)})
    run = Run.objects.filter(kind=RunKind.OFFBOARD).latest("pk")
    assert response["Location"] == run.get_absolute_url() and run.agent_id == role_agent.pk
    assert run_inline(run).status == RunStatus.SUCCEEDED
    assert AgentIdentity.objects.get(pk=role_agent.pk).status == Lifecycle.REMOVED


@pytest.mark.parametrize("value", ["12345678", "1e5"])
def test_rotation_refuses_an_external_id_yaml_reads_as_a_number(client, operator, active, aws, value):
    """Snyk's Helm chart writes the id into Kubernetes unquoted: the page and the command refuse it."""
    from django.core.management import call_command
    from django.core.management.base import CommandError

    client.force_login(operator)
    rotate = reverse("accounts:external_id_rotate", args=[active.account_id])
    body = html.unescape(client.get(rotate, {"external_id": value}).content.decode())
    assert "reads as a number, boolean, date or null in YAML" in body
    client.post(rotate, {"external_id": value, "plan_digest": "0" * 64})
    with pytest.raises(CommandError, match="reads as a number") as exc:
        call_command("external_id_rotate", active.account_id, "--external-id", value, stdout=io.StringIO())
    assert exc.value.returncode == 2
    assert not ExternalId.objects.filter(value=value).exists()
    assert not Run.objects.filter(kind=RunKind.ROTATE).exists()

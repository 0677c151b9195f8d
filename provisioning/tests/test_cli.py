"""The command line: exact flags, exit codes, --plan changes nothing, bad input saves and sends nothing."""

import io
import subprocess
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from accounts import services as account_services
from accounts.models import AgentIdentity, EcrAccount
from provisioning import flows, services
from provisioning.models import Operation, Run

from .conftest import AGENT_ACCOUNT, ECR_ACCOUNTS, iam_in, make_management_role

PREFLIGHT = Path(settings.BASE_DIR).parent / "shared" / "tools" / "broker-preflight"


def cli(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def exit_code(*args) -> int:
    with pytest.raises(CommandError) as caught:
        cli(*args)
    return caught.value.returncode


def mgmt(account_id: str) -> str:
    return f"arn:aws:iam::{account_id}:role/PortalManagement"


@pytest.fixture
def roles(aws):
    for account_id in [AGENT_ACCOUNT, *ECR_ACCOUNTS]:
        make_management_role(account_id)
    aws.calls.clear()


def test_plan_prints_every_document_and_changes_nothing(db, aws, roles):
    out = cli("agent_add", "cra", "--kind", "role", "--account-id", AGENT_ACCOUNT,
              "--management-role-arn", mgmt(AGENT_ACCOUNT), "--plan")  # fmt: skip
    assert "iam:CreateRole" in out and "ec2.amazonaws.com" in out
    assert "iam:CreateInstanceProfile" in out
    assert not AgentIdentity.objects.exists()
    assert aws.write_calls() == 0


def test_agent_add_then_onboard_inline_then_reconcile_writes_nothing(db, aws, roles):
    out = cli("agent_add", "cra", "--kind", "role", "--account-id", AGENT_ACCOUNT,
              "--management-role-arn", mgmt(AGENT_ACCOUNT), "--inline")  # fmt: skip
    assert "succeeded" in out
    preview = cli("account_onboard", ECR_ACCOUNTS[0], "--agent", "cra", "--region", "eu-west-1",
                  "--management-role-arn", mgmt(ECR_ACCOUNTS[0]), "--external-id", "ext-preview", "--plan")  # fmt: skip
    assert '"sts:ExternalId": "ext-preview"' in preview
    assert "iam:PutRolePolicy" in preview and "SnykCraAssumeRolePolicy222222222222" in preview
    assert not EcrAccount.objects.exists()

    for account_id in ECR_ACCOUNTS:
        out = cli("account_onboard", account_id, "--agent", "cra", "--region", "eu-west-1", "--region", "us-east-1",
                  "--management-role-arn", mgmt(account_id), "--inline")  # fmt: skip
        assert "[succeeded] iam:CreateRole" in out
    account = EcrAccount.objects.get(account_id=ECR_ACCOUNTS[1])
    assert sorted(account.brokers.values_list("region", flat=True)) == ["eu-west-1", "us-east-1"]
    assert len(account.external_ids.get().value) == 36  # generated UUID4

    aws.calls.clear()
    out = cli("reconcile", "--inline")
    assert "in sync" in out
    assert aws.write_calls() == 0
    assert Run.objects.latest("pk").operations.count() == 0
    assert cli("reconcile", "--plan").strip().endswith("No changes: AWS already matches.")


@pytest.mark.parametrize(
    "args,field",
    [
        (["12345", "--agent", "cra", "--region", "eu-west-1"], "account_id"),
        ([ECR_ACCOUNTS[0], "--agent", "nobody", "--region", "eu-west-1"], "agent"),
        ([ECR_ACCOUNTS[0], "--agent", "cra", "--region", "eu-west-9"], "regions"),
        ([ECR_ACCOUNTS[0], "--agent", "cra", "--region", "eu-west-1", "--external-id", 'a"b'], "external_id"),
        ([ECR_ACCOUNTS[0], "--agent", "cra", "--region", "eu-west-1", "--broker-token", "not-a-uuid"], "broker_token"),
        ([ECR_ACCOUNTS[0], "--agent", "cra", "--region", "eu-west-1", "--cr-agent-url", "http://cra"], "cr_agent_url"),
        ([ECR_ACCOUNTS[0], "--agent", "cra", "--region", "eu-west-1", "--management-role-arn", "arn:aws:iam::1:role/x"],
         "management_role_arn"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_naming_the_field_with_nothing_saved_or_sent(db, aws, args, field):
    AgentIdentity.objects.create(name="cra", kind="role", account_id=AGENT_ACCOUNT, iam_name="SnykCraEc2Role")
    rows_before = Run.objects.count(), EcrAccount.objects.count()
    with pytest.raises(CommandError) as caught:
        cli("account_onboard", *args, "--inline")
    assert caught.value.returncode == 2
    assert f"{field}:" in str(caught.value)
    assert (Run.objects.count(), EcrAccount.objects.count()) == rows_before
    assert sum(aws.calls.values()) == 0


def test_failed_run_exits_1(db, aws, roles):
    cli("agent_add", "cra", "--kind", "role", "--account-id", AGENT_ACCOUNT, "--management-role-arn", mgmt(AGENT_ACCOUNT),
        "--inline")  # fmt: skip
    # Two maximal ExternalIds make a trust policy over IAM's 2,048 characters: refused before any write.
    account = EcrAccount.objects.create(agent=AgentIdentity.objects.get(), account_id=ECR_ACCOUNTS[0],
                                        management_role_arn=mgmt(ECR_ACCOUNTS[0]), status="pending")  # fmt: skip
    account.external_ids.create(value="a" * 1224)
    account.external_ids.create(value="b" * 1224)
    aws.calls.clear()
    assert exit_code("reconcile", ECR_ACCOUNTS[0], "--inline") == 1
    run = Run.objects.latest("pk")
    assert run.status == "failed" and "2048" in run.explanation
    assert aws.write_calls() == 0


def test_errored_run_exits_1_and_says_where_the_traceback_is(db, aws, roles, monkeypatch):
    def broken(run):  # fault injection: a bug in the portal
        raise RuntimeError("the portal tripped over itself")

    monkeypatch.setattr(flows.AGENT_SETUP, "execute", broken)
    out = io.StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("agent_add", "cra", "--kind", "role", "--account-id", AGENT_ACCOUNT,
                     "--management-role-arn", mgmt(AGENT_ACCOUNT), "--inline", stdout=out)  # fmt: skip
    run = Run.objects.get()
    assert caught.value.returncode == 1
    assert str(caught.value) == f"run {run.pk} errored: its traceback is on the run page"
    assert f"Run {run.pk} errored: Unexpected error: the portal tripped over itself" in out.getvalue()


@pytest.mark.reliability
@pytest.mark.django_db(transaction=True)
def test_done_when_against_a_moto_server_with_a_worker(moto_endpoint, tmp_path):
    """The issue's acceptance: agent_add, two onboardings, reconcile writes nothing, broker_env passes preflight."""
    from portal.testing import celery_workers

    for account_id in [AGENT_ACCOUNT, *ECR_ACCOUNTS]:
        make_management_role(account_id)
    with celery_workers(count=2):
        cli("agent_add", "cra", "--kind", "role", "--account-id", AGENT_ACCOUNT,
            "--management-role-arn", mgmt(AGENT_ACCOUNT), "--timeout", "120")  # fmt: skip
        for account_id in ECR_ACCOUNTS:
            out = cli("account_onboard", account_id, "--agent", "cra", "--region", "eu-west-1",
                      "--management-role-arn", mgmt(account_id), "--broker-client-url", "http://broker:8000",
                      "--cr-agent-url", "http://cra:8081", "--timeout", "120")  # fmt: skip
            assert "succeeded" in out
        writes_before = Operation.objects.count()
        cli("reconcile", "--timeout", "120")
        assert Operation.objects.count() == writes_before
    statements = iam_in(AGENT_ACCOUNT).get_inline_policy("role", "SnykCraEc2Role", "SnykCraAssumeRolePolicy")
    assert sorted(s["Resource"] for s in statements["Statement"]) == [
        f"arn:aws:iam::{a}:role/SnykEcrServiceRole" for a in ECR_ACCOUNTS
    ]
    for account_id in ECR_ACCOUNTS:
        assert iam_in(account_id).get_role("SnykEcrServiceRole")["Arn"].split(":")[4] == account_id
    env_file = tmp_path / "broker.env"
    env_file.write_text(cli("broker_env", ECR_ACCOUNTS[0]))
    if not PREFLIGHT.exists() or subprocess.run(["which", "node"], capture_output=True).returncode:
        pytest.skip("broker-preflight needs ../shared/tools and node")
    result = subprocess.run([str(PREFLIGHT), str(env_file)], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no check in error" in result.stdout


def test_onboarding_plan_for_an_agent_not_yet_set_up_shows_its_creation(db, aws, roles):
    cli(
        "agent_add",
        "cra",
        "--kind",
        "role",
        "--account-id",
        AGENT_ACCOUNT,
        "--management-role-arn",
        mgmt(AGENT_ACCOUNT),
        "--plan",
    )

    account_services.agent_create(
        name="cra", kind="role", account_id=AGENT_ACCOUNT, management_role_arn=mgmt(AGENT_ACCOUNT)
    )
    out = cli("account_onboard", ECR_ACCOUNTS[0], "--agent", "cra", "--region", "eu-west-1",
              "--management-role-arn", mgmt(ECR_ACCOUNTS[0]), "--plan")  # fmt: skip
    assert out.index("iam:CreateInstanceProfile") < out.index("iam:CreatePolicy")
    assert f"iam:CreateRole arn:aws:iam::{AGENT_ACCOUNT}:role/SnykCraEc2Role" in out
    assert aws.write_calls() == 0


# --- run_cancel ----------------------------------------------------------------------------------


def queued_agent() -> AgentIdentity:
    return account_services.agent_create(
        name="cra", kind="user", account_id=AGENT_ACCOUNT, management_role_arn=mgmt(AGENT_ACCOUNT)
    )


def test_run_cancel_stops_a_queued_run_and_refuses_what_is_over(db, aws, roles):
    run = services.agent_setup(agent=queued_agent(), enqueue=False)
    out = cli("run_cancel", str(run.pk))
    assert f"Run {run.pk} cancelled: Cancelled before it started." in out
    assert Run.objects.get(pk=run.pk).status == "cancelled"
    assert exit_code("run_cancel", str(run.pk)) == 2  # nothing left to cancel
    assert exit_code("run_cancel", "999999") == 2
    assert aws.write_calls() == 0


def test_run_cancel_waits_for_a_running_run_to_stop(db, aws, roles):
    run = services.agent_setup(agent=queued_agent(), enqueue=False)
    assert run.claim()  # a worker holds it and never finishes: --wait gives up with exit 1
    out = io.StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("run_cancel", str(run.pk), "--wait", "--timeout", "0.3", stdout=out)
    assert caught.value.returncode == 1 and "still running" in str(caught.value)
    assert "cancel requested" in out.getvalue()
    assert Run.objects.get(pk=run.pk).cancel_requested


def test_json_output_gives_each_accounts_outcome_and_the_exit_status_says_partial(
    db, aws, roles, monkeypatch, admin_user
):
    import json

    from provisioning import aws as aws_module

    cli("agent_add", "cra", "--kind", "role", "--account-id", AGENT_ACCOUNT,
        "--management-role-arn", mgmt(AGENT_ACCOUNT), "--inline")  # fmt: skip
    for account_id in ECR_ACCOUNTS:
        cli("account_onboard", account_id, "--agent", "cra", "--region", "us-east-1",
            "--management-role-arn", mgmt(account_id), "--inline")  # fmt: skip
    drifted, broken = ECR_ACCOUNTS
    by_hand = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]})  # fmt: skip
    for account_id in ECR_ACCOUNTS:  # both trusts changed by hand; one account then refuses every write
        iam_in(account_id).write(
            "update_assume_role_policy", RoleName="SnykEcrServiceRole", PolicyDocument=by_hand
        )
    real_write = aws_module.Iam.write

    def write(self, method, **params):  # fault injection: AWS refuses writes in one account
        if self.access.account_id == broken:
            raise aws_module.AwsError("AccessDenied", "not allowed here")
        return real_write(self, method, **params)

    monkeypatch.setattr(aws_module.Iam, "write", write)
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("reconcile", "--inline", "--json", stdout=out, stderr=err)
    assert caught.value.returncode == 1
    outcome = json.loads(out.getvalue())  # stdout holds the document alone; progress went to stderr
    assert outcome["kind"] == "reconcile" and outcome["status"] == "partial"
    assert outcome["accounts"] == {drifted: "succeeded", broken: "failed"}
    assert "AccessDenied" in outcome["errors"][broken] and drifted not in outcome["errors"]
    assert "iam:UpdateAssumeRolePolicy" in err.getvalue()
    # The run page says it per account too, the error beside the account that failed.
    from django.test import Client
    from django.urls import reverse

    client = Client()
    client.force_login(admin_user)
    body = client.get(
        reverse("provisioning:run_progress", args=[outcome["run"]]), secure=True
    ).content.decode()
    assert "<b>1</b> of 2 accounts done, <b>1</b> failed." in body
    row = body[body.index('id="account-outcomes"') :]
    assert broken in row and "AccessDenied" in row and drifted not in row.split("</table>")[0]

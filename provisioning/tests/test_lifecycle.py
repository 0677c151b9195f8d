"""Lifecycle at scale against in-process moto: rotation, offboarding, adoption of hand-made setups."""

import io
import json

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError, OutputWrapper

from accounts import renderers
from accounts import services as account_services
from accounts.choices import BrokerStatus, ExternalIdState, Lifecycle
from accounts.models import AgentIdentity, BrokerInstance, EcrAccount, ExternalId
from portal.models import AuditEntry
from provisioning import cli, lifecycle, planner, policies, selectors, services
from provisioning.choices import RunKind, RunStatus
from provisioning.models import Operation, Run

from .conftest import AGENT_ACCOUNT, ECR_ACCOUNTS, iam_in, make_management_role
from .test_engine import run_inline, setup_agent_and_onboard

READ_POLICY = "AmazonEC2ContainerRegistryReadOnlyForSnyk"
URLS = {"broker_client_url": "http://broker.internal:8000", "cr_agent_url": "http://cra.internal:8081"}


def live_trust(account):
    return iam_in(account.account_id).get_role("SnykEcrServiceRole")["AssumeRolePolicyDocument"]


def trusted_ids(account):
    return live_trust(account)["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"]


def agent_policy(agent):
    return iam_in(AGENT_ACCOUNT).get_inline_policy("role", agent.iam_name, agent.policy_name)


def download(broker, user=None):
    broker = BrokerInstance.objects.select_related("account__agent").get(pk=broker.pk)
    return account_services.broker_file_download(broker=broker, fmt="env", user=user)


@pytest.fixture
def onboarded(inventory):
    """Two active accounts with complete broker URLs, so broker files can be downloaded."""
    agent, accounts = inventory
    BrokerInstance.objects.update(**URLS)
    setup_agent_and_onboard(agent, accounts)
    return agent, [EcrAccount.objects.select_related("agent").get(pk=a.pk) for a in accounts]


# --- rotation ------------------------------------------------------------------------------------


def test_rotation_widens_then_narrows_the_trust_and_switches_broker_files(onboarded):
    _agent, (account, _) = onboarded
    broker = account.brokers.get()
    old = f"ext-{account.account_id}"
    assert trusted_ids(account) == old  # one id: a string, as the guide writes it

    run = run_inline(lifecycle.external_id_rotate(account=account, value="new-id-0001", enqueue=False))
    assert run.status == RunStatus.SUCCEEDED, run.explanation
    assert run.kind == RunKind.ROTATE
    assert trusted_ids(account) == [old, "new-id-0001"]  # both accepted: no downtime
    assert [op.action for op in run.operations.all()] == ["iam:UpdateAssumeRolePolicy"]
    assert ExternalId.objects.get(value=old).state == ExternalIdState.RETIRING
    assert "CR_EXTERNAL_ID=new-id-0001\n" in renderers.render_env(BrokerInstance.objects.get(pk=broker.pk))

    # Not downloaded since the switch: retiring the old id would stop the broker.
    (warning,) = lifecycle.retirement_warnings(account, ExternalId.objects.get(value=old))
    assert "us-east-1" in warning and "no broker file holding the new ExternalId" in warning
    download(broker)
    (warning,) = lifecycle.retirement_warnings(account, ExternalId.objects.get(value=old))
    assert "not marked redeployed" in warning
    lifecycle.broker_mark_redeployed(broker=broker)
    assert lifecycle.retirement_warnings(account, ExternalId.objects.get(value=old)) == []
    assert lifecycle.rotation_status(account).ready

    run, warnings = lifecycle.external_id_retire(account=account, value=old, enqueue=False)
    assert warnings == []
    assert run_inline(run).status == RunStatus.SUCCEEDED
    assert trusted_ids(account) == "new-id-0001"
    assert list(account.external_ids.values_list("value", "state")) == [("new-id-0001", "active")]
    actions = list(AuditEntry.objects.filter(account_id=account.account_id).values_list("action", flat=True))
    assert {"external_id.rotate", "broker.download", "broker.redeployed", "external_id.retire"} <= set(
        actions
    )
    # The other account was never touched.
    assert trusted_ids(onboarded[1][1]) == f"ext-{ECR_ACCOUNTS[1]}"


def test_the_last_external_id_is_never_retired(onboarded, aws):
    _, (account, _) = onboarded
    aws.calls.clear()
    with pytest.raises(ValidationError, match="only ExternalId"):
        lifecycle.external_id_retire(account=account, value=f"ext-{account.account_id}", enqueue=False)
    assert account.external_ids.count() == 1
    assert not Run.objects.filter(kind=RunKind.ROTATE).exists()
    assert aws.write_calls() == 0
    with pytest.raises(CommandError) as exc:
        call_command("external_id_retire", account.account_id, f"ext-{account.account_id}", "--inline")
    assert exc.value.returncode == 2 and "only ExternalId" in str(exc.value)


def test_a_download_before_the_switch_does_not_count(onboarded):
    _, (account, _) = onboarded
    broker = account.brokers.get()
    download(broker)  # holds the old id
    lifecycle.broker_mark_redeployed(broker=broker)  # with the old id
    run_inline(lifecycle.external_id_rotate(account=account, value="new-id-0002", enqueue=False))
    old = ExternalId.objects.get(value=f"ext-{account.account_id}")
    (warning,) = lifecycle.retirement_warnings(account, old)
    assert "no broker file holding the new ExternalId" in warning
    # The retirement goes ahead (the operator was warned) and says so in the audit log.
    _run, warnings = lifecycle.external_id_retire(account=account, value=old.value, enqueue=False)
    assert warnings == [warning]
    assert AuditEntry.objects.get(action="external_id.retire").details["warnings"] == [warning]


def test_a_failed_rotation_run_is_a_warning_until_a_reconcile_succeeds(onboarded, monkeypatch, aws):
    _, (account, _) = onboarded
    real_write = aws.Iam.write

    def deny(self, method, **params):
        if method == "update_assume_role_policy":
            raise aws.AwsError("AccessDenied", "not today")
        return real_write(self, method, **params)

    monkeypatch.setattr(aws.Iam, "write", deny)
    run = run_inline(lifecycle.external_id_rotate(account=account, value="new-id-0006", enqueue=False))
    assert run.status == RunStatus.FAILED
    assert trusted_ids(account) == f"ext-{account.account_id}"  # the trust still has the old id only
    old = ExternalId.objects.get(value=f"ext-{account.account_id}")
    status = lifecycle.rotation_status(account)
    assert status.trust_pending and status.trust_run == run
    assert any(f"(#{run.pk}) is failed" in w for w in lifecycle.retirement_warnings(account, old))

    monkeypatch.setattr(aws.Iam, "write", real_write)
    reconcile = run_inline(
        lifecycle.services.run_request(kind=RunKind.ROTATE, accounts=[account], enqueue=False)
    )
    assert reconcile.status == RunStatus.SUCCEEDED
    assert trusted_ids(account) == [old.value, "new-id-0006"]
    assert not lifecycle.rotation_status(account).trust_pending


def test_a_second_rotation_waits_until_the_first_is_retired(onboarded):
    _, (account, _) = onboarded
    run_inline(lifecycle.external_id_rotate(account=account, value="new-id-0003", enqueue=False))
    with pytest.raises(ValidationError, match="rotation is in progress"):
        lifecycle.external_id_rotate(account=account, value="new-id-0004", enqueue=False)
    assert account.external_ids.count() == 2


def test_retiring_the_new_id_cancels_the_rotation(onboarded):
    _, (account, _) = onboarded
    old = f"ext-{account.account_id}"
    run_inline(lifecycle.external_id_rotate(account=account, value="new-id-0005", enqueue=False))
    new = ExternalId.objects.get(value="new-id-0005")
    (first, _) = lifecycle.retirement_warnings(account, new)[0], None
    assert "cancels the rotation" in first
    run, _ = lifecycle.external_id_retire(account=account, value="new-id-0005", enqueue=False)
    assert run_inline(run).status == RunStatus.SUCCEEDED
    assert trusted_ids(account) == old
    assert ExternalId.objects.get(value=old).state == ExternalIdState.ACTIVE
    assert renderers.current_external_id(EcrAccount.objects.get(pk=account.pk)) == old


def test_rotation_refuses_bad_ids_and_inactive_accounts(onboarded, inventory):
    _, (account, _) = onboarded
    for value, message in (
        ("has space", "ExternalId"),
        (f"ext-{account.account_id}", "already an ExternalId"),
        ("x", "ExternalId"),
    ):
        with pytest.raises(ValidationError) as exc:
            lifecycle.external_id_rotate(account=account, value=value, enqueue=False)
        assert "external_id" in exc.value.message_dict, value
        assert message in " ".join(exc.value.message_dict["external_id"]), value
    draft = account_services.account_create(
        agent=account.agent, account_id="444444444444", regions=["us-east-1"], external_id="ext-draft"
    )
    with pytest.raises(ValidationError, match="draft"):
        lifecycle.external_id_rotate(account=draft, enqueue=False)
    assert ExternalId.objects.filter(state=ExternalIdState.RETIRING).count() == 0


def test_rotation_from_the_command_line(onboarded):
    _, (account, _) = onboarded
    out = io.StringIO()
    call_command(
        "external_id_rotate", account.account_id, "--external-id", "cli-new-id", "--plan", stdout=out
    )
    assert "iam:UpdateAssumeRolePolicy" in out.getvalue() and "cli-new-id" in out.getvalue()
    assert account.external_ids.count() == 1  # --plan changes nothing

    out = io.StringIO()
    call_command(
        "external_id_rotate", account.account_id, "--external-id", "cli-new-id", "--inline", stdout=out
    )
    assert "succeeded" in out.getvalue() and "external_id_retire" in out.getvalue()
    assert trusted_ids(account) == [f"ext-{account.account_id}", "cli-new-id"]

    out = io.StringIO()
    call_command("broker_redeployed", account.account_id, stdout=out)
    assert "us-east-1: redeployed with cli-new-id" in out.getvalue()

    out, err = io.StringIO(), io.StringIO()
    call_command(
        "external_id_retire",
        account.account_id,
        f"ext-{account.account_id}",
        "--inline",
        stdout=out,
        stderr=err,
    )
    assert "no broker file holding the new ExternalId" in err.getvalue()  # marked, never downloaded
    assert trusted_ids(account) == "cli-new-id"


# --- offboarding ---------------------------------------------------------------------------------


def test_offboarding_removes_the_agent_statement_first_then_everything_the_portal_created(onboarded):
    agent, (account, other) = onboarded
    iam = iam_in(account.account_id)
    doc = json.dumps(policies.read_only_policy())
    iam.write(
        "create_policy_version", PolicyArn=account.read_policy_arn, PolicyDocument=doc, SetAsDefault=True
    )
    generation = AgentIdentity.objects.get(pk=agent.pk).policy_generation

    preview = lifecycle.plan_offboarding(account)
    run = lifecycle.account_offboard(account=account, enqueue=False)
    account.refresh_from_db()
    assert account.status == Lifecycle.REMOVED
    assert AgentIdentity.objects.get(pk=agent.pk).policy_generation == generation + 1
    assert set(account.brokers.values_list("status", flat=True)) == {BrokerStatus.RETIRED}
    with pytest.raises(renderers.BrokerFileError, match="retired"):
        download(account.brokers.get())

    assert run_inline(run).status == RunStatus.SUCCEEDED, run.explanation
    actions = [(op.action, op.resource_arn) for op in run.operations.all()]
    assert [a for a, _ in actions] == [c.action for c in preview.changes]  # the preview was the run
    assert actions == [
        ("iam:PutRolePolicy", agent.arn),
        ("iam:DetachRolePolicy", account.service_role_arn),
        ("iam:DeleteRole", account.service_role_arn),
        ("iam:DeletePolicyVersion", account.read_policy_arn),
        ("iam:DeletePolicy", account.read_policy_arn),
    ]
    assert iam.get_role("SnykEcrServiceRole") is None
    assert iam.get_policy(account.read_policy_arn) is None
    assert agent_policy(agent)["Statement"] == [
        {
            "Effect": "Allow",
            "Action": "sts:AssumeRole",
            "Sid": f"SnykCraAssumeRolePolicy{other.account_id}",
            "Resource": other.service_role_arn,
        }
    ]
    assert iam_in(other.account_id).get_role("SnykEcrServiceRole") is not None
    assert AuditEntry.objects.get(action="account.offboard").details == {
        "confirm_adopted": False,
        "brokers_retired": 1,
    }


def hand_made_setup(account_id, agent_arn, *, extra_actions=(), trust_condition=None, extra_policy=True):
    """What the guide's console clicks leave behind: untagged policy and role, maybe deviating."""
    make_management_role(account_id)
    iam = iam_in(account_id)
    read = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": [*policies.READ_POLICY_ACTIONS, *extra_actions], "Resource": "*"}
        ],
    }
    arn = iam.call("create_policy", PolicyName=READ_POLICY, PolicyDocument=json.dumps(read))["Policy"]["Arn"]
    statement = {"Effect": "Allow", "Principal": {"AWS": agent_arn}, "Action": "sts:AssumeRole"}
    if trust_condition:
        statement["Condition"] = trust_condition
    trust = {"Version": "2012-10-17", "Statement": [statement]}
    iam.write("create_role", RoleName="SnykEcrServiceRole", AssumeRolePolicyDocument=json.dumps(trust))
    iam.write("attach_role_policy", RoleName="SnykEcrServiceRole", PolicyArn=arn)
    if extra_policy:
        team = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "*"}],
        }
        team_arn = iam.call("create_policy", PolicyName="TeamExtra", PolicyDocument=json.dumps(team))[
            "Policy"
        ]["Arn"]
        iam.write("attach_role_policy", RoleName="SnykEcrServiceRole", PolicyArn=team_arn)
    return iam


def guide_star_policy(agent):
    """The guide's first SnykCraAssumeRolePolicy: sts:AssumeRole on every role."""
    doc = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}],
    }
    iam_in(AGENT_ACCOUNT).write(
        "put_role_policy",
        RoleName=agent.iam_name,
        PolicyName=agent.policy_name,
        PolicyDocument=json.dumps(doc),
    )
    return doc


def test_adopting_a_hand_made_setup_reports_every_deviation_in_the_plan(inventory, aws):
    agent, _ = inventory
    assert run_inline(services.agent_setup(agent=agent, enqueue=False)).status == RunStatus.SUCCEEDED
    star = guide_star_policy(agent)
    hand = "555555555555"
    iam = hand_made_setup(hand, agent.arn, extra_actions=("ecr:PutImage", "ecr:BatchDeleteImage"))
    live_read = iam.get_policy_document(f"arn:aws:iam::{hand}:policy/{READ_POLICY}", "v1")
    live_role_trust = iam.get_role("SnykEcrServiceRole")["AssumeRolePolicyDocument"]
    account = account_services.account_create(
        agent=agent,
        account_id=hand,
        regions=["us-east-1"],
        external_id="portal-ext-1",
        management_role_arn=f"arn:aws:iam::{hand}:role/PortalManagement",
    )
    aws.calls.clear()
    plan = services.plan_onboarding(account)
    assert aws.write_calls() == 0
    notes = "\n".join(plan.notes)
    role_arn, policy_arn = account.service_role_arn, account.read_policy_arn
    assert plan.adopted == [policy_arn, role_arn]
    # The read policy: two actions beyond the guide's eleven, replaced by a new default version.
    assert (
        f"Adopt policy {policy_arn}, which differs from the guide: 2 actions beyond the guide's 11: " in notes
    )
    assert "ecr:BatchDeleteImage, ecr:PutImage" in notes
    # The trust: no ExternalId condition.
    assert f"Adopt role {role_arn}, which differs from the guide: no sts:ExternalId condition" in notes
    # What stays as it is.
    assert "Adopted role SnykEcrServiceRole also has TeamExtra attached: left as it is." in notes
    # The agent's Resource "*": what it loses beyond the portal's accounts is named, and printed.
    assert 'allows sts:AssumeRole on "*"' in notes
    assert selectors.revokes_outside_inventory(plan) == ["*"]
    out = io.StringIO()
    cli.print_plan(OutputWrapper(out), plan)
    assert "warning: the agent loses sts:AssumeRole on *, which the portal does not manage" in out.getvalue()

    changes = [(c.kind, c.action, c.arn) for c in plan.changes]
    assert changes == [
        ("adopt", "iam:TagPolicy", policy_arn),
        ("update", "iam:CreatePolicyVersion", policy_arn),
        ("adopt", "iam:TagRole", role_arn),
        ("update", "iam:UpdateAssumeRolePolicy", role_arn),
        ("update", "iam:PutRolePolicy", agent.arn),
    ]
    by_action = {c.action: c for c in plan.changes}
    assert by_action["iam:CreatePolicyVersion"].before == live_read
    assert by_action["iam:UpdateAssumeRolePolicy"].before == live_role_trust
    assert by_action["iam:PutRolePolicy"].before == star
    assert not [c for c in plan.changes if c.kind in ("delete", "detach")]  # nothing existing removed

    run = run_inline(services.account_onboard(account=account, enqueue=False))
    assert run.status == RunStatus.SUCCEEDED, run.explanation
    operations = list(run.operations.all())
    # New to the portal: created without reading first; IAM refused the create, the plan was made.
    assert [op.action for op in operations if op.error_code == "EntityAlreadyExists"] == ["iam:CreatePolicy"]
    made = [op.action for op in operations if op.error_code != "EntityAlreadyExists"]
    assert made == [c.action for c in plan.changes]
    account.refresh_from_db()
    assert account.role_adopted and account.policy_adopted
    # Kept: the hand-made first version, and the other attached policy.
    versions = {v["VersionId"]: v["IsDefaultVersion"] for v in iam.list_policy_versions(policy_arn)}
    assert versions == {"v1": False, "v2": True}
    assert f"arn:aws:iam::{hand}:policy/TeamExtra" in iam.list_attached_policies("role", "SnykEcrServiceRole")
    assert trusted_ids(account) == "portal-ext-1"
    assert services.plan_onboarding(account).is_empty


def test_a_hand_made_setup_matching_the_guide_is_adopted_as_it_is(inventory):
    agent, _ = inventory
    run_inline(services.agent_setup(agent=agent, enqueue=False))
    hand = "666666666666"
    hand_made_setup(
        hand, agent.arn, trust_condition={"StringEquals": {"sts:ExternalId": "hand-ext"}}, extra_policy=False
    )
    account = account_services.account_create(
        agent=agent,
        account_id=hand,
        regions=["us-east-1"],
        external_id="hand-ext",
        management_role_arn=f"arn:aws:iam::{hand}:role/PortalManagement",
    )
    plan = services.plan_onboarding(account)
    assert f"Adopt policy {account.read_policy_arn} as it is: it already matches the guide." in plan.notes
    assert f"Adopt role {account.service_role_arn} as it is: it already matches the guide." in plan.notes
    assert [c.action for c in plan.changes] == ["iam:TagPolicy", "iam:TagRole", "iam:PutRolePolicy"]


def test_a_hand_made_external_id_the_portal_does_not_hold_is_called_out(inventory):
    agent, _ = inventory
    run_inline(services.agent_setup(agent=agent, enqueue=False))
    hand = "777777777777"
    hand_made_setup(
        hand,
        agent.arn,
        trust_condition={"StringEquals": {"sts:ExternalId": "old-hand-id"}},
        extra_policy=False,
    )
    account = account_services.account_create(
        agent=agent,
        account_id=hand,
        regions=["us-east-1"],
        management_role_arn=f"arn:aws:iam::{hand}:role/PortalManagement",
    )
    notes = "\n".join(services.plan_onboarding(account).notes)
    assert "requires ExternalId old-hand-id, which the portal does not hold" in notes
    assert "onboard with that ExternalId" in notes


def test_offboarding_leaves_adopted_resources_unless_confirmed(inventory):
    agent, _ = inventory
    run_inline(services.agent_setup(agent=agent, enqueue=False))
    hand = "888888888888"
    iam = hand_made_setup(hand, agent.arn)
    account = account_services.account_create(
        agent=agent,
        account_id=hand,
        regions=["us-east-1"],
        management_role_arn=f"arn:aws:iam::{hand}:role/PortalManagement",
    )
    assert run_inline(services.account_onboard(account=account, enqueue=False)).status == RunStatus.SUCCEEDED
    account = EcrAccount.objects.select_related("agent").get(pk=account.pk)

    plan = lifecycle.plan_offboarding(account)
    notes = "\n".join(plan.notes)
    assert (
        f"Role {account.service_role_arn} existed before the portal (adopted): it is left in place" in notes
    )
    assert f"Policy {account.read_policy_arn} existed before the portal (adopted)" in notes
    run = run_inline(lifecycle.account_offboard(account=account, enqueue=False))
    assert [op.action for op in run.operations.all()] == [
        "iam:DeleteRolePolicy"
    ]  # the agent's last statement
    assert iam.get_role("SnykEcrServiceRole") is not None
    assert iam.get_policy(account.read_policy_arn) is not None
    assert agent_policy(agent) is None  # yet the agent can no longer assume it

    # A reconcile of the removed account does not delete them behind the operator's back either.
    run = run_inline(services.account_reconcile(accounts=[account], enqueue=False))
    assert run.operations.count() == 0

    # Confirmed: the adopted role (with the hand-attached policy detached) and policy go.
    plan = lifecycle.plan_offboarding(account, confirm_adopted=True)
    assert [c.action for c in plan.changes] == [
        "iam:DetachRolePolicy",
        "iam:DetachRolePolicy",
        "iam:DeleteRole",
        "iam:DeletePolicy",  # the hand-made policy matched the guide: one version only
    ]
    out = io.StringIO()
    call_command("account_offboard", hand, "--confirm-adopted", "--inline", stdout=out)
    assert iam.get_role("SnykEcrServiceRole") is None
    assert iam.get_policy(account.read_policy_arn) is None
    assert iam.get_policy(f"arn:aws:iam::{hand}:policy/TeamExtra") is not None  # never the portal's
    assert Run.objects.filter(kind=RunKind.OFFBOARD).latest("pk").options["confirm_adopted"] is True


def test_offboarding_never_deletes_what_the_portal_did_not_create_or_adopt(inventory):
    agent, _ = inventory
    run_inline(services.agent_setup(agent=agent, enqueue=False))
    hand = "999999999999"
    iam = hand_made_setup(hand, agent.arn, extra_policy=False)
    account = account_services.account_create(
        agent=agent,
        account_id=hand,
        regions=["us-east-1"],
        management_role_arn=f"arn:aws:iam::{hand}:role/PortalManagement",
    )  # a draft: never onboarded, so nothing was tagged
    plan = lifecycle.plan_offboarding(account, confirm_adopted=True)
    assert plan.is_empty
    assert any("was not created or adopted by the portal" in note for note in plan.notes)
    run = run_inline(lifecycle.account_offboard(account=account, confirm_adopted=True, enqueue=False))
    assert run.operations.count() == 0
    assert iam.get_role("SnykEcrServiceRole") is not None


def test_offboarding_from_the_command_line_previews_then_applies(onboarded):
    _, (account, _) = onboarded
    out = io.StringIO()
    call_command("account_offboard", account.account_id, "--plan", stdout=out)
    text = out.getvalue()
    assert text.index("iam:PutRolePolicy") < text.index("iam:DeleteRole")
    assert EcrAccount.objects.get(pk=account.pk).status == Lifecycle.ACTIVE  # --plan changes nothing
    call_command("account_offboard", account.account_id, "--inline", stdout=io.StringIO())
    assert EcrAccount.objects.get(pk=account.pk).status == Lifecycle.REMOVED
    assert iam_in(account.account_id).get_role("SnykEcrServiceRole") is None
    with pytest.raises(CommandError) as exc:
        call_command("account_offboard", "000000000001")
    assert exc.value.returncode == 2


def test_an_agent_is_not_offboarded_while_it_serves_accounts(onboarded, aws):
    agent, accounts = onboarded
    aws.calls.clear()
    with pytest.raises(ValidationError, match="still serves 2 account"):
        lifecycle.agent_offboard(agent=agent, enqueue=False)
    with pytest.raises(CommandError) as exc:
        call_command("agent_offboard", agent.name, "--inline")
    assert exc.value.returncode == 2 and ECR_ACCOUNTS[0] in str(exc.value)
    assert AgentIdentity.objects.get(pk=agent.pk).status == Lifecycle.ACTIVE
    assert aws.write_calls() == 0 and agent_policy(agent) is not None

    run_inline(lifecycle.account_offboard(account=accounts[0], enqueue=False))
    with pytest.raises(ValidationError, match=f"still serves 1 account.*{ECR_ACCOUNTS[1]}"):
        lifecycle.agent_offboard(agent=agent, enqueue=False)
    # A draft account counts too: it would be onboarded onto a removed agent.
    account_services.account_create(agent=agent, account_id="444444444444", regions=["us-east-1"])
    run_inline(lifecycle.account_offboard(account=accounts[1], enqueue=False))
    assert "444444444444" in lifecycle.agent_offboard_refusal(agent)
    run_inline(
        lifecycle.account_offboard(account=EcrAccount.objects.get(account_id="444444444444"), enqueue=False)
    )

    assert lifecycle.agent_offboard_refusal(agent) == ""
    out = io.StringIO()
    call_command("agent_offboard", agent.name, "--plan", stdout=out)
    assert "No changes" in out.getvalue() and "is left in place" in out.getvalue()  # no account: no policy
    run = run_inline(lifecycle.agent_offboard(agent=agent, enqueue=False))
    assert run.status == RunStatus.SUCCEEDED, run.explanation
    assert AgentIdentity.objects.get(pk=agent.pk).status == Lifecycle.REMOVED
    assert iam_in(AGENT_ACCOUNT).get_role(agent.iam_name) is not None  # the identity itself stays


def test_an_offboarded_agent_loses_a_permission_left_behind(onboarded):
    agent, accounts = onboarded
    for account in accounts:
        run_inline(lifecycle.account_offboard(account=account, enqueue=False))
    guide_star_policy(agent)  # someone puts the guide's "*" policy back by hand
    plan = lifecycle.plan_agent_offboarding(agent)
    assert [c.action for c in plan.changes] == ["iam:DeleteRolePolicy"]
    run = run_inline(lifecycle.agent_offboard(agent=agent, enqueue=False))
    assert [op.action for op in run.operations.all()] == ["iam:DeleteRolePolicy"]
    assert agent_policy(agent) is None
    assert AuditEntry.objects.filter(action="agent.offboard").count() == 1


def test_the_plan_of_a_removed_account_still_offboards_without_the_account(onboarded):
    agent, (account, other) = onboarded
    members = account_services.agent_member_arns(agent)
    plan = lifecycle.plan_offboarding(account)
    assert plan.changes[0].after["Statement"][0]["Resource"] == other.service_role_arn
    assert account_services.agent_member_arns(agent) == members  # the preview changed nothing
    assert isinstance(plan, planner.Plan)
    assert not Operation.objects.filter(run__kind=RunKind.OFFBOARD).exists()


def test_broker_files_switch_to_a_new_id_only_once_the_trust_accepts_it(onboarded):
    _, (account, _) = onboarded
    old = f"ext-{account.account_id}"
    broker = account.brokers.get()
    run = lifecycle.external_id_rotate(account=account, value="new-id-0009", enqueue=False)
    # Requested, not yet applied: AWS would refuse the new id, so files keep the old one.
    assert f"CR_EXTERNAL_ID={old}\n" in renderers.render_env(BrokerInstance.objects.get(pk=broker.pk))
    assert run_inline(run).status == RunStatus.SUCCEEDED
    assert "CR_EXTERNAL_ID=new-id-0009\n" in renderers.render_env(BrokerInstance.objects.get(pk=broker.pk))

"""The engine against in-process moto: the guide's documents land in the right accounts, idempotently."""

import pytest

from accounts import services as account_services
from accounts.choices import Lifecycle
from provisioning import flows, policies, runner, services
from provisioning.choices import TERMINAL_RUN_STATUSES, RunStatus

from .conftest import AGENT_ACCOUNT, BASE_ACCOUNT, ECR_ACCOUNTS, iam_in


def run_inline(run):
    assert run.claim()
    return runner.execute(run)


def setup_agent_and_onboard(agent, accounts):
    assert run_inline(services.agent_setup(agent=agent, enqueue=False)).status == RunStatus.SUCCEEDED
    for account in accounts:
        run = run_inline(services.account_onboard(account=account, enqueue=False))
        assert run.status == RunStatus.SUCCEEDED, run.explanation


def test_onboarding_creates_the_guides_resources_in_each_account(inventory):
    agent, accounts = inventory
    setup_agent_and_onboard(agent, accounts)

    agent_iam = iam_in(AGENT_ACCOUNT)
    assert (
        agent_iam.get_role("SnykCraEc2Role")["AssumeRolePolicyDocument"] == policies.agent_role_trust_policy()
    )
    assert agent_iam.get_instance_profile("SnykCraEc2Role")["Roles"][0]["RoleName"] == "SnykCraEc2Role"
    assert agent_iam.get_inline_policy("role", "SnykCraEc2Role", "SnykCraAssumeRolePolicy") == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "sts:AssumeRole",
                "Sid": f"SnykCraAssumeRolePolicy{account_id}",
                "Resource": f"arn:aws:iam::{account_id}:role/SnykEcrServiceRole",
            }
            for account_id in ECR_ACCOUNTS
        ],
    }
    for account_id in ECR_ACCOUNTS:
        iam = iam_in(account_id)
        role = iam.get_role("SnykEcrServiceRole")
        assert role["Arn"] == f"arn:aws:iam::{account_id}:role/SnykEcrServiceRole"
        assert role["AssumeRolePolicyDocument"] == {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{AGENT_ACCOUNT}:role/SnykCraEc2Role"},
                    "Action": "sts:AssumeRole",
                    "Condition": {"StringEquals": {"sts:ExternalId": f"ext-{account_id}"}},
                }
            ],
        }
        policy_arn = f"arn:aws:iam::{account_id}:policy/AmazonEC2ContainerRegistryReadOnlyForSnyk"
        policy = iam.get_policy(policy_arn)
        assert policy["Description"] == policies.READ_POLICY_DESCRIPTION
        document = iam.get_policy_document(policy_arn, policy["DefaultVersionId"])
        assert sorted(document["Statement"][0]["Action"]) == sorted(policies.READ_POLICY_ACTIONS)
        assert iam.list_attached_policies("role", "SnykEcrServiceRole") == [policy_arn]
        # Nothing landed in the base account.
    assert iam_in(AGENT_ACCOUNT).get_role("SnykEcrServiceRole") is None
    for account in accounts:
        account.refresh_from_db()
        assert account.status == Lifecycle.ACTIVE


def test_reapplying_an_unchanged_account_makes_zero_writes(inventory, aws):
    agent, accounts = inventory
    setup_agent_and_onboard(agent, accounts)
    aws.calls.clear()
    run = run_inline(services.account_reconcile(accounts=accounts, enqueue=False))
    assert run.status == RunStatus.SUCCEEDED
    assert run.operations.count() == 0
    assert aws.write_calls() == 0, aws.calls
    assert sum(aws.calls.values()) > 0  # it did read the live state


def test_every_write_is_recorded_as_an_operation(inventory, aws):
    agent, accounts = inventory
    aws.calls.clear()
    setup_agent_and_onboard(agent, accounts[:1])
    ops = list(accounts[0].runs.get().operations.values_list("action", flat=True))
    assert ops == [
        "iam:CreatePolicy",
        "iam:CreateRole",
        "iam:AttachRolePolicy",
        "iam:PutRolePolicy",
    ]
    writes = aws.write_calls()
    from provisioning.models import Operation

    assert Operation.objects.count() == writes


def test_drift_is_planned_semantically_and_repaired(inventory):
    agent, accounts = inventory
    setup_agent_and_onboard(agent, accounts)
    account = accounts[0]
    import json

    iam = iam_in(account.account_id)
    # Same trust, other key order and list form: not drift.
    trust = iam.get_role("SnykEcrServiceRole")["AssumeRolePolicyDocument"]
    trust["Statement"][0]["Action"] = ["sts:AssumeRole"]
    iam.write(
        "update_assume_role_policy", RoleName="SnykEcrServiceRole", PolicyDocument=json.dumps(trust, indent=4)
    )
    assert services.plan_reconcile([account]).is_empty
    # A hand edit that drops the ExternalId condition: drift, one update.
    del trust["Statement"][0]["Condition"]
    iam.write("update_assume_role_policy", RoleName="SnykEcrServiceRole", PolicyDocument=json.dumps(trust))
    plan = services.plan_reconcile([account])
    assert [c.action for c in plan.changes] == ["iam:UpdateAssumeRolePolicy"]
    assert run_inline(services.account_reconcile(accounts=[account], enqueue=False)).status == "succeeded"
    assert services.plan_reconcile([account]).is_empty


def test_policy_content_change_creates_a_version_and_prunes_at_five(inventory):
    agent, accounts = inventory
    setup_agent_and_onboard(agent, accounts[:1])
    account = accounts[0]
    iam = iam_in(account.account_id)
    arn = account.read_policy_arn
    import json

    for n in range(4):  # 5 versions, the last one (default) drifted
        doc = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": f"ecr:Extra{n}", "Resource": "*"}],
        }
        iam.write("create_policy_version", PolicyArn=arn, PolicyDocument=json.dumps(doc), SetAsDefault=True)
    assert len(iam.list_policy_versions(arn)) == 5
    plan = services.plan_reconcile([account])
    assert [c.action for c in plan.changes] == ["iam:DeletePolicyVersion", "iam:CreatePolicyVersion"]
    assert plan.changes[0].params["VersionId"] == "v1"
    assert run_inline(services.account_reconcile(accounts=[account], enqueue=False)).status == "succeeded"
    versions = iam.list_policy_versions(arn)
    assert len(versions) == 5
    default = next(v for v in versions if v["IsDefaultVersion"])
    assert policies.same_document(
        iam.get_policy_document(arn, default["VersionId"]), policies.read_only_policy()
    )


def test_a_permanent_error_fails_the_run_at_that_operation_and_a_rerun_continues(inventory, monkeypatch):
    agent, accounts = inventory
    assert run_inline(services.agent_setup(agent=agent, enqueue=False)).status == "succeeded"
    from provisioning import aws

    real_write = aws.Iam.write

    def deny_attach(self, method, **params):
        if method == "attach_role_policy":
            raise aws.AwsError("AccessDenied", "User is not authorized to perform iam:AttachRolePolicy")
        return real_write(self, method, **params)

    monkeypatch.setattr(aws.Iam, "write", deny_attach)
    run = run_inline(services.account_onboard(account=accounts[0], enqueue=False))
    assert run.status == RunStatus.FAILED
    assert "iam:AttachRolePolicy" in run.explanation and "AccessDenied" in run.explanation
    ops = list(run.operations.values_list("action", "status", "error_code"))
    assert ops == [
        ("iam:CreatePolicy", "succeeded", ""),
        ("iam:CreateRole", "succeeded", ""),
        ("iam:AttachRolePolicy", "failed", "AccessDenied"),
    ]
    accounts[0].refresh_from_db()
    assert accounts[0].status == Lifecycle.FAILED

    monkeypatch.setattr(aws.Iam, "write", real_write)
    retry = run_inline(services.account_onboard(account=accounts[0], enqueue=False))
    assert retry.status == RunStatus.SUCCEEDED
    assert [op.action for op in retry.operations.all()] == ["iam:AttachRolePolicy", "iam:PutRolePolicy"]


def test_an_unexpected_exception_ends_the_run_errored_with_its_traceback(inventory, monkeypatch):
    agent, _ = inventory

    def broken(run):  # fault injection: a bug in the portal, not an AWS answer
        raise RuntimeError("the portal tripped over itself")

    monkeypatch.setattr(flows.AGENT_SETUP, "execute", broken)
    run = run_inline(services.agent_setup(agent=agent, enqueue=False))
    assert run.status == RunStatus.ERRORED and run.get_status_display() == "Errored"
    assert RunStatus.ERRORED in TERMINAL_RUN_STATUSES and not run.is_active and run.finished_at
    assert "the portal tripped over itself" in run.explanation
    assert run.error.startswith("Traceback (most recent call last):")
    assert "in broken" in run.error and run.error.rstrip().endswith(
        "RuntimeError: the portal tripped over itself"
    )


def test_an_aws_refusal_still_ends_the_run_failed_without_a_traceback(inventory, monkeypatch):
    agent, _ = inventory
    from provisioning import aws

    def refuse(self, method, **params):
        raise aws.AwsError("AccessDenied", "User is not authorized to perform iam:CreateRole")

    monkeypatch.setattr(aws.Iam, "write", refuse)
    run = run_inline(services.agent_setup(agent=agent, enqueue=False))
    assert run.status == RunStatus.FAILED and "AccessDenied" in run.explanation
    assert run.error == ""


def test_invalid_principal_is_retried_until_iam_catches_up(inventory, monkeypatch, settings):
    settings.IAM_PROPAGATION_TIMEOUT = 2.0
    agent, accounts = inventory
    assert run_inline(services.agent_setup(agent=agent, enqueue=False)).status == "succeeded"
    from provisioning import aws

    real_write = aws.Iam.write
    failures = {"left": 2}

    def not_yet(self, method, **params):
        if method == "create_role" and failures["left"]:
            failures["left"] -= 1
            raise aws.AwsError("MalformedPolicyDocument", 'Invalid principal in policy: "AWS":"arn..."')
        return real_write(self, method, **params)

    monkeypatch.setattr(aws.Iam, "write", not_yet)
    run = run_inline(services.account_onboard(account=accounts[0], enqueue=False))
    assert run.status == RunStatus.SUCCEEDED
    assert run.operations.get(action="iam:CreateRole").attempts == 3


def test_invalid_principal_gives_up_after_the_propagation_window(inventory, monkeypatch, settings):
    settings.IAM_PROPAGATION_TIMEOUT = 0.5
    _agent, accounts = inventory
    from provisioning import aws

    real_write = aws.Iam.write

    def never(self, method, **params):
        if method == "create_role" and params["RoleName"] == "SnykEcrServiceRole":
            raise aws.AwsError("MalformedPolicyDocument", "Invalid principal in policy")
        return real_write(self, method, **params)

    monkeypatch.setattr(aws.Iam, "write", never)
    run = run_inline(services.account_onboard(account=accounts[0], enqueue=False))
    assert run.status == RunStatus.FAILED
    op = run.operations.get(action="iam:CreateRole", resource_arn__contains="SnykEcrServiceRole")
    assert op.error_code == "MalformedPolicyDocument" and op.attempts > 1


def test_unreachable_management_role_fails_the_run_without_writes(inventory, aws):
    agent, accounts = inventory
    assert run_inline(services.agent_setup(agent=agent, enqueue=False)).status == "succeeded"
    account = accounts[0]
    account.management_role_arn = "arn:aws:iam::222222222222:role/DoesNotExist"
    account.save()
    # moto lets any role be assumed; make STS refuse it as AWS would.
    real_call = aws._call

    def refuse(client, method, **params):
        if method == "assume_role" and params["RoleArn"].endswith("DoesNotExist"):
            raise aws.AwsError(
                "AccessDenied", "Not authorized to perform sts:AssumeRole", operation="AssumeRole"
            )
        return real_call(client, method, **params)

    aws.sessions.clear()
    import unittest.mock

    with unittest.mock.patch.object(aws, "_call", refuse):
        run = run_inline(services.account_onboard(account=account, enqueue=False))
    assert run.status == RunStatus.FAILED
    assert "AccessDenied" in run.explanation
    assert run.operations.count() == 0


def test_offboarding_removes_the_agent_statement_before_the_role(inventory):
    agent, accounts = inventory
    setup_agent_and_onboard(agent, accounts)
    account = accounts[0]
    account.status = Lifecycle.REMOVED
    account.save()
    from django.db.models import F

    from accounts.models import AgentIdentity

    AgentIdentity.objects.filter(pk=agent.pk).update(policy_generation=F("policy_generation") + 1)
    run = run_inline(services.run_request(kind="offboard", accounts=[account], enqueue=False))
    assert run.status == RunStatus.SUCCEEDED, run.explanation
    actions = list(run.operations.values_list("action", flat=True))
    assert actions[0] == "iam:PutRolePolicy"
    assert actions.index("iam:PutRolePolicy") < actions.index("iam:DeleteRole")
    assert iam_in(account.account_id).get_role("SnykEcrServiceRole") is None
    assert iam_in(account.account_id).get_policy(account.read_policy_arn) is None
    remaining = iam_in(AGENT_ACCOUNT).get_inline_policy("role", "SnykCraEc2Role", "SnykCraAssumeRolePolicy")
    assert remaining["Statement"][0]["Resource"] == accounts[1].service_role_arn
    assert len(remaining["Statement"]) == 1


def test_credentials_landing_in_another_account_are_refused(db, aws):
    # No management role: the base credentials act in moto's default account, not the agent's.
    agent = account_services.agent_create(name="misplaced", kind="role", account_id=AGENT_ACCOUNT)
    run = run_inline(services.agent_setup(agent=agent, enqueue=False))
    assert run.status == RunStatus.FAILED
    assert "WrongAccount" in run.explanation and "123456789012" in run.explanation
    assert aws.write_calls() == 0


@pytest.mark.parametrize("kind,iam_name", [("user", "SnykCraUser"), ("role", "SnykCraEc2Role")])
def test_agent_identity_kinds(db, aws, kind, iam_name):
    agent = account_services.agent_create(name=f"a-{kind}", kind=kind, account_id=BASE_ACCOUNT)
    run = run_inline(services.agent_setup(agent=agent, enqueue=False))
    assert run.status == "succeeded"
    iam = aws.Iam(aws.Access(BASE_ACCOUNT))
    if kind == "user":
        assert iam.get_user(iam_name)["Arn"] == agent.arn
        key = services.agent_create_access_key(agent=agent)
        assert key["AccessKeyId"] and key["SecretAccessKey"]
        services.agent_create_access_key(agent=agent)
        from django.core.exceptions import ValidationError

        with pytest.raises(ValidationError, match="2 access keys"):
            services.agent_create_access_key(agent=agent)
        from portal.models import AuditEntry
        from provisioning.models import Operation, Run, RunLogEntry

        # Each key is a run with its Operation, like every AWS write; the secret is in no row.
        runs = Run.objects.filter(kind="access_key", agent=agent, status="succeeded")
        assert runs.count() == 2
        assert (
            list(Operation.objects.filter(run__in=runs).values_list("action", flat=True))
            == ["iam:CreateAccessKey"] * 2
        )
        everything = str([list(m.objects.values()) for m in (AuditEntry, Run, Operation, RunLogEntry)])
        assert key["SecretAccessKey"] not in everything and key["AccessKeyId"][-4:] in everything
    else:
        assert iam.get_role(iam_name)["Arn"] == agent.arn
        assert iam.get_instance_profile(iam_name)["Roles"][0]["RoleName"] == iam_name


def test_a_hand_made_policy_named_like_a_managed_chunk_is_detached_not_deleted(inventory):
    agent, accounts = inventory
    setup_agent_and_onboard(agent, accounts[:1])
    import json

    iam = iam_in(AGENT_ACCOUNT)
    arn = f"arn:aws:iam::{AGENT_ACCOUNT}:policy/SnykCraAssumeRolePolicy-1"
    document = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}],
    }
    iam.write("create_policy", PolicyName="SnykCraAssumeRolePolicy-1", PolicyDocument=json.dumps(document))
    iam.write("attach_role_policy", RoleName="SnykCraEc2Role", PolicyArn=arn)
    plan = services.plan_reconcile(accounts[:1])
    assert [c.action for c in plan.changes] == ["iam:DetachRolePolicy"]
    assert any("not created by the portal" in note for note in plan.notes)
    assert run_inline(services.account_reconcile(accounts=accounts[:1], enqueue=False)).status == "succeeded"
    assert iam.get_policy(arn) is not None
    assert arn not in iam.list_attached_policies("role", "SnykCraEc2Role")

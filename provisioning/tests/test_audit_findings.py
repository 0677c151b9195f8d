"""Every finding code, each from a live state crafted in moto (or the inventory), with zero AWS writes.

Each case starts from two onboarded accounts and an agent in sync, changes one thing the way a
person with console access (or a stale inventory) would, audits, and asserts the code, its
severity and that the audit wrote nothing to AWS.
"""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts import services as account_services
from accounts.choices import ExternalIdState, Lifecycle
from accounts.models import EcrAccount, ExternalId
from provisioning import runner
from provisioning.audit.catalogue import CHECKS
from provisioning.audit.services import audit_request
from provisioning.choices import AuditStatus, RunStatus
from provisioning.models import AuditSnapshot

from .conftest import AGENT_ACCOUNT, ECR_ACCOUNTS, iam_in
from .test_engine import setup_agent_and_onboard

ACCT = ECR_ACCOUNTS[0]
ROLE = "SnykEcrServiceRole"
AGENT_ROLE = "SnykCraEc2Role"
AGENT_POLICY = "SnykCraAssumeRolePolicy"
READ_POLICY_ARN = f"arn:aws:iam::{ACCT}:policy/AmazonEC2ContainerRegistryReadOnlyForSnyk"
AGENT_ARN = f"arn:aws:iam::{AGENT_ACCOUNT}:role/{AGENT_ROLE}"


def audit_now(accounts=None):
    run = audit_request(accounts=accounts, enqueue=False)
    assert run.claim()
    return runner.execute(run)


@pytest.fixture
def onboarded(inventory):
    agent, accounts = inventory
    setup_agent_and_onboard(agent, accounts)
    return agent, accounts


# --- crafting live states ------------------------------------------------------------------------


def edit_trust(change, account_id=ACCT):
    iam = iam_in(account_id)
    trust = iam.get_role(ROLE)["AssumeRolePolicyDocument"]
    change(trust["Statement"][0])
    iam.write("update_assume_role_policy", RoleName=ROLE, PolicyDocument=json.dumps(trust))


def set_principal(principal):
    def change(statement):
        statement["Principal"] = principal

    edit_trust(change)


def set_condition(condition):
    def change(statement):
        if condition is None:
            statement.pop("Condition")
        else:
            statement["Condition"] = condition

    edit_trust(change)


def new_read_policy_version(actions):
    document = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
    }
    iam_in(ACCT).write(
        "create_policy_version",
        PolicyArn=READ_POLICY_ARN,
        PolicyDocument=json.dumps(document),
        SetAsDefault=True,
    )


def agent_statements(extra=(), keep=None):
    """Rewrite the agent's inline policy: its statements (those of `keep` accounts) plus `extra`."""
    iam = iam_in(AGENT_ACCOUNT)
    document = iam.get_inline_policy("role", AGENT_ROLE, AGENT_POLICY)
    if keep is not None:
        document["Statement"] = [s for s in document["Statement"] if any(k in s["Resource"] for k in keep)]
    document["Statement"] += list(extra)
    iam.write(
        "put_role_policy", RoleName=AGENT_ROLE, PolicyName=AGENT_POLICY, PolicyDocument=json.dumps(document)
    )


def assume(resource, sid=None):
    statement = {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": resource}
    if sid:
        statement["Sid"] = sid
    return statement


def unreachable_account(agent, accounts):
    # The base credentials land in another account than the one named: aws.py refuses (WrongAccount).
    EcrAccount.objects.filter(account_id=ACCT).update(
        management_role_arn="arn:aws:iam::999999999999:role/PortalManagement"
    )


def role_missing(agent, accounts):
    iam = iam_in(ACCT)
    iam.write("detach_role_policy", RoleName=ROLE, PolicyArn=READ_POLICY_ARN)
    iam.write("delete_role", RoleName=ROLE)


def policy_missing(agent, accounts):
    iam = iam_in(ACCT)
    iam.write("detach_role_policy", RoleName=ROLE, PolicyArn=READ_POLICY_ARN)
    iam.write("delete_policy", PolicyArn=READ_POLICY_ARN)


def attachment_missing(agent, accounts):
    iam_in(ACCT).write("detach_role_policy", RoleName=ROLE, PolicyArn=READ_POLICY_ARN)


def trust_differs(agent, accounts):
    set_condition(
        {"StringEquals": {"sts:ExternalId": "ext-222222222222"}, "Bool": {"aws:SecureTransport": "true"}}
    )


def external_id_unused(agent, accounts):
    set_condition({"StringEquals": {"sts:ExternalId": ["ext-222222222222", "leaked-id-from-an-old-broker"]}})


def retiring_expired(agent, accounts):
    account = accounts[0]
    ExternalId.objects.create(
        account=account,
        value="old-rotated-id",
        state=ExternalIdState.RETIRING,
        retiring_since=timezone.now() - timedelta(days=30),
    )


def extra_actions(agent, accounts):
    from provisioning.policies import READ_POLICY_ACTIONS

    new_read_policy_version([*READ_POLICY_ACTIONS, "ecr:PutImage", "ecr:*"])


def missing_actions(agent, accounts):
    new_read_policy_version(["ecr:GetAuthorizationToken", "ecr:BatchGetImage"])


def extra_policy(agent, accounts):
    iam = iam_in(ACCT)
    everything = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    arn = iam.call("create_policy", PolicyName="Everything", PolicyDocument=json.dumps(everything))["Policy"][
        "Arn"
    ]
    iam.write("attach_role_policy", RoleName=ROLE, PolicyArn=arn)
    iam.write("put_role_policy", RoleName=ROLE, PolicyName="Handy", PolicyDocument=json.dumps(everything))


def near_quota(agent, accounts):
    # 1,911 of the trust policy's 2,048 characters (93 %): still valid in IAM, within 10 % of the quota.
    ids = [f"rotation-id-{n:03d}-xxxxxxxxxxxxxxxxxxxxxxxxxx" for n in range(38)]
    set_condition({"StringEquals": {"sts:ExternalId": ids}})


def removed_remains(agent, accounts):
    # Marked removed in the portal, but nobody offboarded it: its role and policy are still there.
    EcrAccount.objects.filter(account_id=ACCT).update(status=Lifecycle.REMOVED)


def inventory_invalid(agent, accounts):
    ExternalId.objects.filter(account__account_id=ACCT).delete()


def permission_missing(agent, accounts):
    agent_statements(keep=[ECR_ACCOUNTS[1]])


def agent_unreachable(agent, accounts):
    type(agent).objects.filter(pk=agent.pk).update(
        management_role_arn="arn:aws:iam::999999999999:role/PortalManagement"
    )


def agent_missing(agent, accounts):
    iam = iam_in(AGENT_ACCOUNT)
    iam.write("delete_role_policy", RoleName=AGENT_ROLE, PolicyName=AGENT_POLICY)
    iam.write("remove_role_from_instance_profile", InstanceProfileName=AGENT_ROLE, RoleName=AGENT_ROLE)
    iam.write("delete_role", RoleName=AGENT_ROLE)


def agent_wildcard(agent, accounts):
    agent_statements(extra=[assume("*")])


def agent_unmanaged(agent, accounts):
    agent_statements(extra=[assume("arn:aws:iam::555555555555:role/SnykEcrServiceRole")])


def agent_removed(agent, accounts):
    gone = account_services.account_create(agent=agent, account_id="666666666666", regions=["us-east-1"])
    EcrAccount.objects.filter(pk=gone.pk).update(status=Lifecycle.REMOVED)
    agent_statements(extra=[assume(gone.service_role_arn, sid="Leftover")])


def agent_differs(agent, accounts):
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
    iam_in(AGENT_ACCOUNT).write(
        "update_assume_role_policy", RoleName=AGENT_ROLE, PolicyDocument=json.dumps(trust)
    )


ISSUER = "https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
PROVIDER = ISSUER.removeprefix("https://")
CLUSTER_ARN = f"arn:aws:eks:eu-west-1:{AGENT_ACCOUNT}:cluster/tools"


def agent_trust(statement, **runtime):
    """The agent moves to a runtime in the inventory, and its role's trust is `statement`."""
    type_ = type(runtime.pop("agent"))
    type_.objects.filter(name="cra").update(**runtime)
    trust = {"Version": "2012-10-17", "Statement": [statement]}
    iam_in(AGENT_ACCOUNT).write(
        "update_assume_role_policy", RoleName=AGENT_ROLE, PolicyDocument=json.dumps(trust)
    )


def irsa_agent(agent, condition, *, provider=True):
    if provider:
        iam_in(AGENT_ACCOUNT).write(
            "create_open_id_connect_provider",
            Url=ISSUER,
            ClientIDList=["sts.amazonaws.com"],
            ThumbprintList=["a" * 40],
        )
    statement = {
        "Effect": "Allow",
        "Principal": {"Federated": f"arn:aws:iam::{AGENT_ACCOUNT}:oidc-provider/{PROVIDER}"},
        "Action": "sts:AssumeRoleWithWebIdentity",
    }
    if condition:
        statement["Condition"] = condition
    agent_trust(
        statement,
        agent=agent,
        runtime="eks-irsa",
        oidc_issuer=ISSUER,
        namespace="snyk-broker",
        service_account="cra",
    )


def ecs_without_source(agent, accounts):
    statement = {
        "Effect": "Allow",
        "Principal": {"Service": "ecs-tasks.amazonaws.com"},
        "Action": "sts:AssumeRole",
    }
    agent_trust(statement, agent=agent, runtime="ecs")


def irsa_any_service_account(agent, accounts):
    irsa_agent(
        agent,
        {
            "StringLike": {f"{PROVIDER}:sub": "system:serviceaccount:snyk-broker:*"},
            "StringEquals": {f"{PROVIDER}:aud": "sts.amazonaws.com"},
        },
    )


def irsa_no_audience(agent, accounts):
    irsa_agent(agent, {"StringEquals": {f"{PROVIDER}:sub": "system:serviceaccount:snyk-broker:cra"}})


def irsa_provider_gone(agent, accounts):
    irsa_agent(
        agent,
        {
            "StringEquals": {
                f"{PROVIDER}:sub": "system:serviceaccount:snyk-broker:cra",
                f"{PROVIDER}:aud": "sts.amazonaws.com",
            }
        },
        provider=False,
    )


def pod_identity_without_tag_session(agent, accounts):
    from provisioning import aws

    access = aws.Access(AGENT_ACCOUNT, f"arn:aws:iam::{AGENT_ACCOUNT}:role/PortalManagement")
    aws.sessions.client_for(access, "eks", "eu-west-1").create_cluster(
        name="tools", roleArn=AGENT_ARN, resourcesVpcConfig={}
    )
    statement = {
        "Effect": "Allow",
        "Principal": {"Service": "pods.eks.amazonaws.com"},
        "Action": "sts:AssumeRole",
    }
    agent_trust(
        statement,
        agent=agent,
        runtime="eks-pod-identity",
        cluster_arn=CLUSTER_ARN,
        namespace="snyk-broker",
        service_account="cra",
    )


# code -> (expected severity, craft, subject: "account" (ACCT) or "agent")
CASES = {
    "account-unreachable": ("high", unreachable_account, "account"),
    "role-missing": ("high", role_missing, "account"),
    "policy-missing": ("high", policy_missing, "account"),
    "attachment-missing": ("high", attachment_missing, "account"),
    "trust-differs": ("medium", trust_differs, "account"),
    "principal-wildcard": ("critical", lambda *_: set_principal({"AWS": "*"}), "account"),
    "principal-account-root": (
        "high",
        lambda *_: set_principal({"AWS": f"arn:aws:iam::{AGENT_ACCOUNT}:root"}),
        "account",
    ),
    "principal-unique-id": ("high", lambda *_: set_principal({"AWS": "AROAQWERTYUIOPASDFGHJ"}), "account"),
    "principal-not-agent": (
        "high",
        lambda *_: set_principal({"AWS": [AGENT_ARN, "arn:aws:iam::444444444444:role/Contractor"]}),
        "account",
    ),
    "external-id-missing": ("high", lambda *_: set_condition(None), "account"),
    "external-id-wildcard": (
        "high",
        lambda *_: set_condition({"StringLike": {"sts:ExternalId": "*"}}),
        "account",
    ),
    "external-id-unused": ("medium", external_id_unused, "account"),
    "external-id-retiring-expired": ("medium", retiring_expired, "account"),
    "read-policy-extra-actions": ("high", extra_actions, "account"),
    "read-policy-missing-actions": ("medium", missing_actions, "account"),
    "extra-policy-attached": ("high", extra_policy, "account"),
    "size-near-quota": ("medium", near_quota, "account"),
    "removed-resources-remain": ("high", removed_remains, "account"),
    "inventory-invalid": ("high", inventory_invalid, "account"),
    "agent-permission-missing": ("medium", permission_missing, "account"),
    "agent-unreachable": ("high", agent_unreachable, "agent"),
    "agent-missing": ("high", agent_missing, "agent"),
    "agent-resource-wildcard": ("high", agent_wildcard, "agent"),
    "agent-unmanaged-account": ("high", agent_unmanaged, "agent"),
    "agent-removed-account": ("medium", agent_removed, "agent"),
    "agent-permissions-differ": ("low", agent_differs, "agent"),
    "agent-trust-no-source-condition": ("medium", ecs_without_source, "agent"),
    "agent-trust-any-service-account": ("high", irsa_any_service_account, "agent"),
    "agent-trust-no-audience": ("medium", irsa_no_audience, "agent"),
    "agent-trust-no-tag-session": ("medium", pod_identity_without_tag_session, "agent"),
    "agent-oidc-provider-missing": ("high", irsa_provider_gone, "agent"),
}


def test_every_finding_code_has_a_crafted_case():
    # The Snyk side's (universal agents) are crafted in test_audit_snyk.py.
    assert set(CASES) == {code for code in CHECKS if not code.startswith("snyk-")}


def findings_of(run, subject):
    if subject == "agent":
        return next(a for a in run.result["agents"] if a["name"] == "cra")["findings"]
    return AuditSnapshot.objects.get(run=run, account_id=ACCT).findings


@pytest.mark.parametrize("code", sorted(CASES))
def test_crafted_live_state_gives_the_finding(onboarded, aws, code):
    severity, craft, subject = CASES[code]
    agent, accounts = onboarded
    craft(agent, accounts)
    aws.calls.clear()

    run = audit_now()

    assert run.status in (RunStatus.SUCCEEDED, RunStatus.PARTIAL), run.explanation
    found = [f for f in findings_of(run, subject) if f["code"] == code]
    assert found, (code, findings_of(run, subject))
    assert {f["severity"] for f in found} == {severity}
    assert all(f["message"] and not f["message"].startswith(code) for f in found)
    assert aws.write_calls() == 0, aws.calls
    assert sum(aws.calls.values()) > 0
    # The untouched account is not blamed for account-level changes.
    other = AuditSnapshot.objects.get(run=run, account_id=ECR_ACCOUNTS[1])
    if subject == "account":
        assert code not in {f["code"] for f in other.findings}


def test_an_account_in_sync_has_no_finding(onboarded, aws):
    aws.calls.clear()
    run = audit_now()
    assert run.status == RunStatus.SUCCEEDED
    assert all(
        not s.findings and s.status == AuditStatus.IN_SYNC for s in AuditSnapshot.objects.filter(run=run)
    )
    assert run.result["agents"][0]["findings"] == []
    assert run.result["agents"][0]["layout"] == "inline-per-account"
    assert aws.write_calls() == 0


def test_status_and_details_of_typical_findings(onboarded, aws):
    """The right status per account, the principals and ids the reviewer sees, the unreachable error."""
    _agent, accounts = onboarded
    set_principal({"AWS": "*"})
    unreachable = accounts[1]
    EcrAccount.objects.filter(pk=unreachable.pk).update(
        management_role_arn="arn:aws:iam::999999999999:role/PortalManagement"
    )
    run = audit_now()
    assert run.status == RunStatus.PARTIAL  # one account could not be read: a finding, not a failure
    drifted = AuditSnapshot.objects.get(run=run, account_id=ACCT)
    assert drifted.status == AuditStatus.DRIFTED
    assert drifted.live["trusted_principals"] == ["*"]
    assert drifted.live["external_ids"] == ["ext-222222222222"]
    assert [c["action"] for c in drifted.plan["changes"]] == ["iam:UpdateAssumeRolePolicy"]
    assert drifted.severity_rank == 4 and drifted.critical_count == 1
    lost = AuditSnapshot.objects.get(run=run, account_id=unreachable.account_id)
    assert lost.status == AuditStatus.UNREACHABLE
    assert "WrongAccount" in lost.findings[0]["message"]
    assert "999999999999" in lost.findings[0]["message"]


def test_role_missing_is_status_missing_and_marks_the_account_drifted(onboarded, aws):
    agent, accounts = onboarded
    role_missing(agent, accounts)
    run = audit_now()
    snapshot = AuditSnapshot.objects.get(run=run, account_id=ACCT)
    assert snapshot.status == AuditStatus.MISSING
    account = EcrAccount.objects.get(account_id=ACCT)
    assert account.drifted is True
    assert account.last_audit_at is not None
    assert account.last_audit_summary["status"] == "missing"
    assert account.last_audit_summary["worst"]["severity"] == "high"


def test_the_agent_is_read_in_the_managed_layout_too(onboarded, aws):
    """Past the inline quota the engine writes <policy>-N managed policies: the audit reads those."""
    _agent, accounts = onboarded
    managed = {
        "Version": "2012-10-17",
        "Statement": [assume([a.service_role_arn for a in accounts] + ["*"])],
    }
    iam = iam_in(AGENT_ACCOUNT)
    arn = iam.call("create_policy", PolicyName=f"{AGENT_POLICY}-1", PolicyDocument=json.dumps(managed))[
        "Policy"
    ]["Arn"]
    iam.write("attach_role_policy", RoleName=AGENT_ROLE, PolicyArn=arn)
    iam.write("delete_role_policy", RoleName=AGENT_ROLE, PolicyName=AGENT_POLICY)
    aws.calls.clear()
    run = audit_now()
    result = run.result["agents"][0]
    assert result["layout"] == "managed"
    codes = {f["code"] for f in result["findings"]}
    assert "agent-resource-wildcard" in codes
    assert f"managed {AGENT_POLICY}-1" in result["findings"][0]["message"]
    # Both accounts are reachable through the managed policy: no missing permission.
    assert not AuditSnapshot.objects.filter(
        run=run, finding_codes__contains=" agent-permission-missing "
    ).exists()
    assert aws.write_calls() == 0


EXTERNAL_ID_CODES = {"external-id-missing", "external-id-wildcard"}


@pytest.mark.parametrize(
    ("condition", "code"),
    [
        ({"StringNotEquals": {"sts:ExternalId": "nobody"}}, "external-id-wildcard"),
        ({"Null": {"sts:ExternalId": "false"}}, "external-id-wildcard"),
        ({"StringLike": {"sts:ExternalId": "ext-*"}}, "external-id-wildcard"),
        ({"StringEquals": {"sts:ExternalId": ""}}, "external-id-wildcard"),
        ({"StringEqualsIfExists": {"sts:ExternalId": "ext-222222222222"}}, "external-id-missing"),
        ({"Null": {"sts:ExternalId": "true"}}, "external-id-missing"),
        ({"StringEquals": {"aws:PrincipalTag/team": "scanners"}}, "external-id-missing"),
        # Operators are ANDed: a strict one holds whatever a loose one says.
        (
            {"StringEquals": {"sts:ExternalId": "ext-222222222222"}, "StringLike": {"sts:ExternalId": "*"}},
            None,
        ),
        ({"StringEquals": {"STS:EXTERNALID": "ext-222222222222"}}, None),  # keys are case-insensitive
    ],
)
def test_external_id_conditions_as_iam_evaluates_them(onboarded, aws, condition, code):
    set_condition(condition)
    aws.calls.clear()
    run = audit_now()
    codes = {f["code"] for f in AuditSnapshot.objects.get(run=run, account_id=ACCT).findings}
    assert codes & EXTERNAL_ID_CODES == ({code} if code else set()), codes
    assert aws.write_calls() == 0

"""The printed least-privilege policy allows exactly the calls the engine makes in every flow, each
only on the resources the engine makes it on.

moto's IAM enforcement cannot prove this: it checks a statement's Resource only for roles that
already exist (a scoped iam:CreateRole is refused) and ignores iam:PolicyARN conditions (attaching
AdministratorAccess passes). So the test records each call with its parameters and evaluates the
printed document itself, as IAM would for these actions, resources and condition keys.
"""

import contextlib
import fnmatch
import io
import json
import re

from django.core.management import call_command
from django.db.models import F

from accounts import services as account_services
from accounts.choices import Lifecycle
from accounts.models import AgentIdentity
from provisioning import aws, live, permissions, policies, runner, services
from provisioning.audit.services import audit_request

from .conftest import AGENT_ACCOUNT, BASE_ACCOUNT, iam_in, make_management_role


def run_inline(run):
    assert run.claim()
    runner.execute(run)
    assert run.status == "succeeded", run.explanation
    return run


def allow(action):
    return {"Effect": "Allow", "Action": action, "Resource": "*"}


def document(statement):
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


def offboard(account):
    account.status = Lifecycle.REMOVED
    account.save()
    AgentIdentity.objects.filter(pk=account.agent_id).update(policy_generation=F("policy_generation") + 1)
    run_inline(services.run_request(kind="offboard", accounts=[account], enqueue=False))


def hand_made(account_id, agent_arn):
    """An untagged service role (trust without ExternalId, an extra inline policy) and a read policy
    with four extra versions, as the guide's reader makes them by hand."""
    make_management_role(account_id)
    iam = iam_in(account_id)
    trust = {"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"AWS": agent_arn}}
    iam.write("create_role", RoleName="SnykEcrServiceRole", AssumeRolePolicyDocument=document(trust))
    read_policy = "AmazonEC2ContainerRegistryReadOnlyForSnyk"
    iam.write("create_policy", PolicyName=read_policy, PolicyDocument=document(allow("ecr:*")))
    iam.write(
        "put_role_policy",
        RoleName="SnykEcrServiceRole",
        PolicyName="extra",
        PolicyDocument=document(allow("s3:List*")),
    )
    arn = f"arn:aws:iam::{account_id}:policy/{read_policy}"
    for n in range(4):
        iam.write(
            "create_policy_version",
            PolicyArn=arn,
            SetAsDefault=True,
            PolicyDocument=document(allow(f"ecr:X{n}")),
        )


def exercise_every_flow(monkeypatch, setup=contextlib.nullcontext):
    """Agent kinds, onboarding, adoption, drift repair with version pruning, layout switches, offboarding.

    What the test itself makes in AWS (management roles, hand-made resources) happens inside `setup()`.
    """
    with setup():
        agent_management = make_management_role(AGENT_ACCOUNT)
    role_agent = account_services.agent_create(
        name="role-agent", kind="role", account_id=AGENT_ACCOUNT, management_role_arn=agent_management
    )
    run_inline(services.agent_setup(agent=role_agent, enqueue=False))
    with setup():  # someone edits the agent role's trust: setting the agent up again repairs it
        ecs = {
            "Effect": "Allow",
            "Action": "sts:AssumeRole",
            "Principal": {"Service": "ecs-tasks.amazonaws.com"},
        }
        iam_in(AGENT_ACCOUNT).write(
            "update_assume_role_policy", RoleName=role_agent.iam_name, PolicyDocument=document(ecs)
        )
    run_inline(services.agent_setup(agent=role_agent, enqueue=False))
    exercise_runtimes(setup, agent_management)
    user_agent = account_services.agent_create(name="user-agent", kind="user", account_id=BASE_ACCOUNT)
    run_inline(services.agent_setup(agent=user_agent, enqueue=False))
    services.agent_create_access_key(agent=user_agent)

    # A hand-made setup (untagged role and policy, trust without ExternalId) is adopted and repaired.
    hand = "200000000001"
    with setup():
        hand_made(hand, role_agent.arn)
    adopted = account_services.account_create(
        agent=role_agent,
        account_id=hand,
        regions=["us-east-1"],
        management_role_arn=f"arn:aws:iam::{hand}:role/PortalManagement",
    )
    run_inline(services.account_onboard(account=adopted, enqueue=False))
    run_inline(audit_request(enqueue=False))  # reads the adopted role's own inline policy too
    with monkeypatch.context() as large:  # accounts too large for one page: read resource by resource
        large.setattr(aws.Iam, "authorization_details_page", lambda self, filters, max_items: None)
        run_inline(audit_request(enqueue=False))
        run_inline(services.account_reconcile(accounts=[adopted], enqueue=False))
    live._read_one_by_one.clear()

    # A second account takes the role agent past a (shrunk) inline quota: managed policies, then back.
    with setup():
        second_management = make_management_role("200000000002")
    second = account_services.account_create(
        agent=role_agent,
        account_id="200000000002",
        regions=["us-east-1"],
        management_role_arn=second_management,
    )
    with monkeypatch.context() as shrunk:
        shrunk.setitem(policies.INLINE_QUOTA, "role", 1)
        run_inline(services.account_onboard(account=second, enqueue=False))
    assert AgentIdentity.objects.get(pk=role_agent.pk).layout == "managed"
    offboard(second)  # one account again: inline, the managed policy detached and deleted
    assert AgentIdentity.objects.get(pk=role_agent.pk).layout == "inline-per-account"
    offboard(adopted)  # the role agent's last account: its inline policy is deleted

    # A user agent past its inline quota switches to managed policies, then back.
    with setup():
        managements = {f"{300000000000 + i}": make_management_role(f"{300000000000 + i}") for i in range(40)}
    accounts = [
        account_services.account_create(
            agent=user_agent, account_id=account_id, regions=["us-east-1"], management_role_arn=management
        )
        for account_id, management in managements.items()
    ]
    for account in accounts:
        services.account_onboard(account=account, enqueue=False).delete()
    run_inline(services.run_request(kind="bulk", accounts=accounts, enqueue=False))
    assert AgentIdentity.objects.get(pk=user_agent.pk).layout == "managed"
    run_inline(audit_request(enqueue=False))  # the audit reads every layout with the same policy
    for account in accounts[2:]:
        account.status = Lifecycle.REMOVED
        account.save()
    AgentIdentity.objects.filter(pk=user_agent.pk).update(policy_generation=F("policy_generation") + 1)
    run_inline(services.account_reconcile(accounts=accounts[:2], enqueue=False))
    assert AgentIdentity.objects.get(pk=user_agent.pk).layout == "inline-per-account"
    offboard(accounts[0])
    offboard(accounts[1])  # the user agent's last account: its inline policy is deleted


ISSUER = "https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
CLUSTER_ARN = f"arn:aws:eks:eu-west-1:{AGENT_ACCOUNT}:cluster/tools"


def eks_in_agent_account():
    from provisioning import aws

    access = aws.Access(AGENT_ACCOUNT, f"arn:aws:iam::{AGENT_ACCOUNT}:role/PortalManagement")
    return aws.sessions.client_for(access, "eks", "eu-west-1")


def exercise_runtimes(setup, management):
    """An IRSA agent whose OIDC provider the portal creates; an EC2 agent moved to Pod Identity (its
    instance profile left, the association made, repaired after a hand edit), then to IRSA (the
    association removed)."""
    irsa = account_services.agent_create(
        name="irsa-agent",
        kind="role",
        account_id=AGENT_ACCOUNT,
        iam_name="SnykCraIrsaRole",
        management_role_arn=management,
        runtime="eks-irsa",
        oidc_issuer=ISSUER,
        oidc_thumbprint="a" * 40,
    )
    run_inline(services.agent_setup(agent=irsa, enqueue=False))
    mover = account_services.agent_create(
        name="mover",
        kind="role",
        account_id=AGENT_ACCOUNT,
        iam_name="SnykCraMover",
        management_role_arn=management,
    )
    run_inline(services.agent_setup(agent=mover, enqueue=False))
    with setup():
        eks_in_agent_account().create_cluster(name="tools", roleArn=mover.arn, resourcesVpcConfig={})
    account_services.agent_set_runtime(
        agent=mover, runtime={"runtime": "eks-pod-identity", "cluster_arn": CLUSTER_ARN}
    )
    run_inline(services.agent_setup(agent=mover, enqueue=False))
    with setup():  # someone gives the service account another role: setting the agent up repairs it
        eks = eks_in_agent_account()
        association = eks.list_pod_identity_associations(clusterName="tools")["associations"][0]
        eks.update_pod_identity_association(
            clusterName="tools", associationId=association["associationId"], roleArn=irsa.arn
        )
    run_inline(services.agent_setup(agent=mover, enqueue=False))
    account_services.agent_set_runtime(agent=mover, runtime={"runtime": "eks-irsa", "oidc_issuer": ISSUER})
    run_inline(services.agent_setup(agent=mover, enqueue=False))


ANY_ACCOUNT = "999999999999"  # the printed ARNs name every account ("*")


class Requests(list):
    """Every API call made from here on, as (service:Operation, parameters), except during `setup()`."""

    def __init__(self, aws_module):
        super().__init__()
        self.sessions = aws_module.sessions
        self._listen()

    def _listen(self):
        # Clients copy their session's handlers when created: start with no client cached.
        self.sessions.clear()
        self.sessions.base().events.register("provide-client-params", self.record)
        self.recording = True

    def record(self, params, model, **_):
        if self.recording:
            self.append((f"{model.service_model.endpoint_prefix}:{model.name}", dict(params)))

    @contextlib.contextmanager
    def setup(self):
        self.recording = False
        try:
            yield
        finally:
            self._listen()  # the engine assumes its roles itself, not with the sessions setup left


def arn(kind, name):
    return f"arn:aws:iam::{ANY_ACCOUNT}:{kind}/{name}"


def authorisations(action, params):
    """What IAM checks for one call: (action, resource, condition context), the implied ones too."""
    if action == "sts:AssumeRole":
        return [(action, params["RoleArn"], {})]
    if action in ("sts:GetCallerIdentity", "iam:GetAccountAuthorizationDetails"):
        return [(action, "*", {})]
    if action.startswith("eks:"):
        return eks_authorisations(action, params)
    if "OpenIDConnectProviderArn" in params or "Url" in params:
        provider = params.get("OpenIDConnectProviderArn") or arn(
            "oidc-provider", params["Url"].removeprefix("https://")
        )
        checks = [(action, provider.replace(f"::{AGENT_ACCOUNT}:", f"::{ANY_ACCOUNT}:"), {})]
        if params.get("Tags"):
            checks.append(("iam:TagOpenIDConnectProvider", checks[0][1], {}))
        return checks
    if action == "iam:AddRoleToInstanceProfile":
        profile = arn("instance-profile", params["InstanceProfileName"])
        return [(action, profile, {}), ("iam:PassRole", arn("role", params["RoleName"]), {})]
    if "InstanceProfileName" in params:
        return [(action, arn("instance-profile", params["InstanceProfileName"]), {})]
    if "RoleName" in params or "UserName" in params:
        kind, name = ("role", params["RoleName"]) if "RoleName" in params else ("user", params["UserName"])
        context = {"iam:PolicyARN": params["PolicyArn"]} if "PolicyArn" in params else {}
        checks = [(action, arn(kind, name), context)]
        if params.get("Tags") and action.startswith("iam:Create"):
            checks.append((f"iam:Tag{kind.capitalize()}", arn(kind, name), {}))
        return checks
    resource = params.get("PolicyArn") or arn("policy", params["PolicyName"])
    checks = [(action, resource, {})]
    if params.get("Tags") and action == "iam:CreatePolicy":
        checks.append(("iam:TagPolicy", resource, {}))
    return checks


def eks_authorisations(action, params):
    """EKS checks the cluster (list, create) or the association, and iam:PassRole for its role."""
    cluster = CLUSTER_ARN.rsplit("/", 1)[0] + "/" + params["clusterName"]
    if "associationId" in params:
        resource = f"{cluster.replace(':cluster/', ':podidentityassociation/')}/{params['associationId']}"
    else:
        resource = cluster
    checks = [(action, resource, {})]
    if params.get("roleArn"):
        checks.append(("iam:PassRole", arn("role", params["roleArn"].rsplit("/", 1)[1]), {}))
    if params.get("tags"):
        checks.append(("eks:TagResource", resource, {}))
    return checks


def _condition_holds(operator, key, patterns, context):
    value = context.get(key)
    if value is None:  # IAM: a condition on a key the request lacks does not match
        return False
    patterns = [patterns] if isinstance(patterns, str) else patterns
    if operator in ("ArnLike", "StringLike"):
        return any(fnmatch.fnmatchcase(value, p) for p in patterns)
    assert operator in ("ArnEquals", "StringEquals"), f"the evaluator does not know {operator}"
    return value in patterns


def allowing_statement(document, action, resource, context):
    """The Sid of the statement allowing the request, or None (the printed policy has no Deny)."""
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = (
            statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        )
        if not any(re.fullmatch(fnmatch.translate(a), action, re.IGNORECASE) for a in actions):
            continue
        if not any(fnmatch.fnmatchcase(resource, r) for r in resources):
            continue
        conditions = statement.get("Condition", {})
        if all(
            _condition_holds(operator, key, patterns, context)
            for operator, keys in conditions.items()
            for key, patterns in keys.items()
        ):
            return statement["Sid"]
    return None


def test_the_printed_policy_allows_every_call_the_engine_makes_and_nothing_more(
    transactional_db, aws, monkeypatch
):
    # transactional: the bulk run writes from its own threads (their own connections)
    made = Requests(aws)
    exercise_every_flow(monkeypatch, made.setup)
    printed = permissions.base_policy()

    called = {action for action, _ in made}
    granted = permissions.actions_of(printed) - set(permissions.IMPLIED_PERMISSIONS)
    assert called - granted == set(), "the engine calls actions the printed policy does not grant"
    assert granted - called == set(), "the printed policy grants actions the engine never calls"

    used = set()
    for action, params in made:
        for check in authorisations(action, params):
            sid = allowing_statement(printed, *check)
            assert sid, f"the printed policy refuses {check} (from {action} {params})"
            used.add((sid, check[0]))
    unused = {(st["Sid"], a) for st in printed["Statement"] for a in st["Action"]} - used
    assert unused == set(), "the printed policy grants actions on resources the engine never uses them on"


def test_the_printed_policy_refuses_what_the_engine_never_does(db):
    printed = permissions.base_policy()
    admin = "arn:aws:iam::aws:policy/AdministratorAccess"
    service_role, agent_role = arn("role", "SnykEcrServiceRole"), arn("role", "SnykCraEc2Role")
    agent_policy = arn("policy", "SnykCraAssumeRolePolicy-1")
    refused = [
        ("iam:AttachRolePolicy", service_role, {"iam:PolicyARN": admin}),
        ("iam:AttachRolePolicy", agent_role, {"iam:PolicyARN": admin}),
        ("iam:AttachUserPolicy", arn("user", "SnykCraUser"), {"iam:PolicyARN": admin}),
        ("iam:AttachRolePolicy", service_role, {"iam:PolicyARN": agent_policy}),  # assume from ECR
        ("iam:AttachRolePolicy", service_role, {}),
        ("iam:PassRole", service_role, {}),
        ("iam:PutRolePolicy", service_role, {}),
        ("iam:DeleteRole", agent_role, {}),
        ("iam:CreateInstanceProfile", arn("instance-profile", "SnykEcrServiceRole"), {}),
        ("iam:AddRoleToInstanceProfile", arn("instance-profile", "SnykEcrServiceRole"), {}),
        ("iam:CreateRole", arn("role", "Anything"), {}),
        ("sts:AssumeRole", arn("role", "OrganizationAccountAccessRole"), {}),
    ]
    assert [check for check in refused if allowing_statement(printed, *check)] == []


def test_iam_policy_command_scopes_to_the_managed_names(db):
    account_services.agent_create(
        name="custom",
        kind="role",
        account_id=AGENT_ACCOUNT,
        iam_name="CustomAgent",
        policy_name="CustomAssume",
        management_role_arn=f"arn:aws:iam::{AGENT_ACCOUNT}:role/OrgAccess",
    )
    out = io.StringIO()
    call_command("iam_policy", "--role", "base", stdout=out)
    document = json.loads(out.getvalue())
    by_sid = {st["Sid"]: st for st in document["Statement"]}
    assert by_sid["AssumeManagementRoles"]["Resource"] == ["arn:aws:iam::*:role/OrgAccess"]
    assert "arn:aws:iam::*:role/CustomAgent" in by_sid["AgentRoles"]["Resource"]
    assert "arn:aws:iam::*:role/CustomAgent" not in by_sid["ServiceRoles"]["Resource"]
    assert "arn:aws:iam::*:policy/CustomAssume-*" in by_sid["Policies"]["Resource"]
    assert by_sid["AttachAgentPolicies"]["Condition"]["ArnLike"]["iam:PolicyARN"] == [
        "arn:aws:iam::*:policy/CustomAssume-*",
        "arn:aws:iam::*:policy/SnykCraAssumeRolePolicy-*",
    ]
    # On "*" only what IAM grants on nothing narrower, both reads.
    assert all(
        st["Resource"] != "*" for sid, st in by_sid.items() if sid not in ("WhoAmI", "ReadAccountAtOnce")
    )

    out = io.StringIO()
    call_command("iam_policy", "--format", "cloudformation", stdout=out)
    template = json.loads(out.getvalue())
    role = template["Resources"]["ManagementRole"]["Properties"]
    condition = role["AssumeRolePolicyDocument"]["Statement"][0]["Condition"]
    assert condition == {"StringEquals": {"sts:ExternalId": {"Ref": "ExternalId"}}}
    assert permissions.actions_of(role["Policies"][0]["PolicyDocument"]) == permissions.actions_of(
        permissions.management_policy()
    )


def test_iam_policy_cloudformation_for_the_base_role_renders_the_base_policy(db):
    out = io.StringIO()
    call_command("iam_policy", "--role", "base", "--format", "cloudformation", stdout=out)
    template = json.loads(out.getvalue())
    assert "ManagementRole" not in template["Resources"]
    policy = template["Resources"]["BasePolicy"]
    assert policy["Type"] == "AWS::IAM::ManagedPolicy"
    assert policy["Properties"]["PolicyDocument"] == permissions.base_policy()
    assert policies.policy_size(permissions.base_policy()) <= policies.MANAGED_POLICY_QUOTA

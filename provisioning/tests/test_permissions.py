"""The printed least-privilege policy lists exactly the calls the engine makes in every flow."""

import io
import json

from django.core.management import call_command
from django.db.models import F

from accounts import services as account_services
from accounts.choices import Lifecycle
from accounts.models import AgentIdentity
from provisioning import permissions, runner, services
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


def exercise_every_flow():
    """Agent kinds, onboarding, adoption, drift repair with version pruning, layout switches, offboarding."""
    role_agent = account_services.agent_create(
        name="role-agent",
        kind="role",
        account_id=AGENT_ACCOUNT,
        management_role_arn=make_management_role(AGENT_ACCOUNT),
    )
    run_inline(services.agent_setup(agent=role_agent, enqueue=False))
    user_agent = account_services.agent_create(name="user-agent", kind="user", account_id=BASE_ACCOUNT)
    run_inline(services.agent_setup(agent=user_agent, enqueue=False))
    services.agent_create_access_key(agent=user_agent)

    # A hand-made setup (untagged role and policy, trust without ExternalId) is adopted and repaired.
    hand = "200000000001"
    management = make_management_role(hand)
    iam = iam_in(hand)
    trust = {"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"AWS": role_agent.arn}}
    iam.write("create_role", RoleName="SnykEcrServiceRole", AssumeRolePolicyDocument=document(trust))
    read_policy = "AmazonEC2ContainerRegistryReadOnlyForSnyk"
    iam.write("create_policy", PolicyName=read_policy, PolicyDocument=document(allow("ecr:*")))
    iam.write(
        "put_role_policy",
        RoleName="SnykEcrServiceRole",
        PolicyName="extra",
        PolicyDocument=document(allow("s3:List*")),
    )
    arn = f"arn:aws:iam::{hand}:policy/{read_policy}"
    for n in range(4):
        iam.write(
            "create_policy_version",
            PolicyArn=arn,
            SetAsDefault=True,
            PolicyDocument=document(allow(f"ecr:X{n}")),
        )
    adopted = account_services.account_create(
        agent=role_agent,
        account_id=hand,
        regions=["us-east-1"],
        management_role_arn=management,
    )
    run_inline(services.account_onboard(account=adopted, enqueue=False))
    offboard(adopted)  # the role agent's last account: its inline policy is deleted

    # A user agent past its inline quota switches to managed policies, then back.
    accounts = []
    for i in range(40):
        account_id = f"{300000000000 + i}"
        accounts.append(
            account_services.account_create(
                agent=user_agent, account_id=account_id, regions=["us-east-1"],
                management_role_arn=make_management_role(account_id),
            )
        )  # fmt: skip
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


def test_iam_policy_lists_exactly_the_calls_the_engine_makes(transactional_db, aws):
    # transactional: the bulk run writes from its own threads (their own connections)
    exercise_every_flow()
    called = set(aws.calls)
    printed = permissions.actions_of(permissions.base_policy()) - set(permissions.IMPLIED_PERMISSIONS)
    assert called - printed == set(), "the engine calls actions the printed policy does not grant"
    assert printed - called == set(), "the printed policy grants actions the engine never calls"


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
    assert "arn:aws:iam::*:role/CustomAgent" in by_sid["Roles"]["Resource"]
    assert "arn:aws:iam::*:policy/CustomAssume-*" in by_sid["Policies"]["Resource"]
    assert all(st["Resource"] != "*" for sid, st in by_sid.items() if sid != "WhoAmI")

    out = io.StringIO()
    call_command("iam_policy", "--format", "cloudformation", stdout=out)
    template = json.loads(out.getvalue())
    role = template["Resources"]["ManagementRole"]["Properties"]
    condition = role["AssumeRolePolicyDocument"]["Statement"][0]["Condition"]
    assert condition == {"StringEquals": {"sts:ExternalId": {"Ref": "ExternalId"}}}
    assert permissions.actions_of(role["Policies"][0]["PolicyDocument"]) == permissions.actions_of(
        permissions.management_policy()
    )

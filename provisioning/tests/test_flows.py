"""The guarantee of one definition per flow: what a run writes, in order, is what its preview showed.

For every run kind — draft and active agents, role and user agents, one and many accounts, hand-made
resources to adopt — the preview is taken first (as the pages and `--plan` show it), then the
request is made and its run executed in process. The AWS write calls are recorded by botocore itself
(an event handler on the session every client comes from), with the parameters boto3 was called
with, and must equal the preview's changes one for one.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from accounts import services as account_services
from accounts.choices import Lifecycle
from accounts.models import AgentIdentity, EcrAccount
from provisioning import flows, lifecycle, services
from provisioning.audit.services import audit_request
from provisioning.changes import Plan
from provisioning.choices import RunKind, RunStatus
from provisioning.models import Run

from .conftest import AGENT_ACCOUNT, iam_in, make_management_role
from .test_engine import run_inline, setup_agent_and_onboard
from .test_lifecycle import guide_star_policy, hand_made_setup

DOCUMENTS = ("PolicyDocument", "AssumeRolePolicyDocument")


@pytest.fixture
def writes(aws) -> list[tuple[str, dict[str, Any]]]:
    """Every AWS write made from now on, in order: ("iam:CreateRole", the parameters as called)."""
    recorded: list[tuple[str, dict[str, Any]]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        action = f"{model.service_model.endpoint_prefix}:{model.name}"
        # botocore itself fills idempotency tokens (EKS's clientRequestToken): not the portal's ask.
        members = model.input_shape.members if model.input_shape else {}
        filled = {name for name, shape in members.items() if shape.metadata.get("idempotencyToken")}
        if aws.is_write(action):
            recorded.append(
                (
                    action,
                    {k: json.loads(v) if k in DOCUMENTS else v for k, v in params.items() if k not in filled},
                )
            )

    aws.sessions.base().events.register("before-parameter-build", record)
    return recorded


def _previewed(plan: Plan) -> list[tuple[str, dict[str, Any]]]:
    return [(change.action, change.params) for change in plan.changes]


@dataclass
class Case:
    """A preview and the request it previews, both ready to call (setup done)."""

    preview: Callable[[], Plan]
    request: Callable[[], Run]
    expect_writes: bool = True


def _role_agent() -> AgentIdentity:
    return account_services.agent_create(
        name="cra",
        kind="role",
        account_id=AGENT_ACCOUNT,
        management_role_arn=make_management_role(AGENT_ACCOUNT),
    )


def _user_agent() -> AgentIdentity:
    return account_services.agent_create(
        name="cra-user",
        kind="user",
        account_id=AGENT_ACCOUNT,
        management_role_arn=make_management_role(AGENT_ACCOUNT),
    )


def _account(agent: AgentIdentity, account_id: str, *, role_exists: bool = False) -> EcrAccount:
    """A draft account; `role_exists`: its management role was made already (by hand_made_setup)."""
    management = f"arn:aws:iam::{account_id}:role/PortalManagement"
    if not role_exists:
        make_management_role(account_id)
    return account_services.account_create(
        agent=agent,
        account_id=account_id,
        regions=["us-east-1"],
        external_id=f"ext-{account_id}",
        management_role_arn=management,
    )


def _active(agent: AgentIdentity, *accounts: EcrAccount) -> None:
    setup_agent_and_onboard(agent, list(accounts))
    agent.refresh_from_db()
    for account in accounts:
        account.refresh_from_db()


def _bulk_report(agent: AgentIdentity, account_ids: list[str]) -> Any:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["account_id", "regions", "management_role_arn", "external_id"])
    writer.writeheader()
    for account_id in account_ids:
        writer.writerow(
            {
                "account_id": account_id,
                "regions": "us-east-1",
                "management_role_arn": f"arn:aws:iam::{account_id}:role/PortalManagement",
                "external_id": f"ext-{account_id}",
            }
        )
    report = lifecycle.bulk_validate(agent=agent, content=out.getvalue().encode(), filename="accounts.csv")
    assert report.ok, report.as_text()
    return report


# --- the cases ------------------------------------------------------------------------------------


def agent_setup_role() -> Case:
    agent = _role_agent()
    return Case(lambda: services.plan_agent(agent), lambda: services.agent_setup(agent=agent, enqueue=False))


def agent_setup_irsa_creating_its_oidc_provider() -> Case:
    agent = account_services.agent_create(
        name="cra",
        kind="role",
        account_id=AGENT_ACCOUNT,
        management_role_arn=make_management_role(AGENT_ACCOUNT),
        runtime="eks-irsa",
        oidc_issuer="https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE",
        oidc_thumbprint="9e99a48a9960b14926bb7f3b02e22da2b0ab7280",
    )
    return Case(lambda: services.plan_agent(agent), lambda: services.agent_setup(agent=agent, enqueue=False))


def agent_moved_from_ec2_to_pod_identity() -> Case:
    from provisioning import aws

    agent = _role_agent()
    account = _account(agent, "222222222222")
    _active(agent, account)
    access = aws.Access(AGENT_ACCOUNT, agent.management_role_arn)
    aws.sessions.client_for(access, "eks", "eu-west-1").create_cluster(
        name="tools", roleArn=agent.arn, resourcesVpcConfig={}
    )
    cluster = f"arn:aws:eks:eu-west-1:{AGENT_ACCOUNT}:cluster/tools"
    account_services.agent_set_runtime(
        agent=agent, runtime={"runtime": "eks-pod-identity", "cluster_arn": cluster}
    )
    return Case(lambda: services.plan_agent(agent), lambda: services.agent_setup(agent=agent, enqueue=False))


def agent_setup_user_serving_accounts() -> Case:
    agent = _user_agent()
    account = _account(agent, "222222222222")
    _active(agent, account)
    iam_in(AGENT_ACCOUNT).write("delete_user_policy", UserName=agent.iam_name, PolicyName=agent.policy_name)
    return Case(lambda: services.plan_agent(agent), lambda: services.agent_setup(agent=agent, enqueue=False))


def onboard_with_a_draft_role_agent() -> Case:
    agent = _role_agent()
    account = _account(agent, "222222222222")
    return Case(
        lambda: services.plan_onboarding(account),
        lambda: services.account_onboard(account=account, enqueue=False),
    )


def onboard_with_an_active_user_agent() -> Case:
    agent = _user_agent()
    _active(agent, _account(agent, "222222222222"))
    account = _account(agent, "333333333333")
    return Case(
        lambda: services.plan_onboarding(account),
        lambda: services.account_onboard(account=account, enqueue=False),
    )


def onboard_adopting_a_hand_made_role() -> Case:
    agent = _role_agent()
    _active(agent)
    hand_made_setup("222222222222", agent.arn, extra_actions=("ecr:PutImage",))
    account = _account(agent, "222222222222", role_exists=True)
    return Case(
        lambda: services.plan_onboarding(account),
        lambda: services.account_onboard(account=account, enqueue=False),
    )


def reconcile_many_with_drift_and_a_removed_account() -> Case:
    agent = _role_agent()
    accounts = [_account(agent, f"{n}" * 12) for n in (2, 3, 4)]
    _active(agent, *accounts)
    wide_open = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
    }
    iam_in("222222222222").write(
        "update_assume_role_policy", RoleName="SnykEcrServiceRole", PolicyDocument=json.dumps(wide_open)
    )
    EcrAccount.objects.filter(pk=accounts[2].pk).update(status=Lifecycle.REMOVED)
    agent.bump_policy_generation()
    targets = list(EcrAccount.objects.select_related("agent").order_by("account_id"))
    return Case(
        lambda: services.plan_reconcile(targets),
        lambda: services.account_reconcile(accounts=targets, enqueue=False),
    )


def rotate_an_external_id() -> Case:
    agent = _role_agent()
    account = _account(agent, "222222222222")
    _active(agent, account)
    return Case(
        lambda: lifecycle.plan_rotation(account, "ext-rotated-1"),
        lambda: lifecycle.external_id_rotate(account=account, value="ext-rotated-1", enqueue=False),
    )


def retire_the_old_external_id() -> Case:
    agent = _role_agent()
    account = _account(agent, "222222222222")
    _active(agent, account)
    run_inline(lifecycle.external_id_rotate(account=account, value="ext-rotated-1", enqueue=False))
    account.refresh_from_db()
    old = "ext-222222222222"
    return Case(
        lambda: lifecycle.plan_retirement(account, old),
        lambda: lifecycle.external_id_retire(account=account, value=old, enqueue=False)[0],
    )


def offboard_an_adopted_account_confirmed() -> Case:
    agent = _role_agent()
    other = _account(agent, "333333333333")
    _active(agent, other)
    hand_made_setup("222222222222", agent.arn)
    account = _account(agent, "222222222222", role_exists=True)
    _active(agent, account)
    return Case(
        lambda: lifecycle.plan_offboarding(account, confirm_adopted=True),
        lambda: lifecycle.account_offboard(account=account, confirm_adopted=True, enqueue=False),
    )


def offboard_an_agent_holding_the_guides_star_policy() -> Case:
    agent = _role_agent()
    account = _account(agent, "222222222222")
    _active(agent, account)
    run_inline(lifecycle.account_offboard(account=account, enqueue=False))
    guide_star_policy(agent)  # written by hand since: the agent may assume any role
    agent.refresh_from_db()
    return Case(
        lambda: lifecycle.plan_agent_offboarding(agent),
        lambda: lifecycle.agent_offboard(agent=agent, enqueue=False),
    )


def bulk_with_a_draft_role_agent() -> Case:
    agent = _role_agent()
    ids = [f"4000000000{n:02}" for n in range(1, 6)]
    for account_id in ids:
        make_management_role(account_id)
    report = _bulk_report(agent, ids)
    return Case(
        lambda: lifecycle.plan_bulk(report),
        lambda: lifecycle.accounts_bulk_onboard(report=report, max_concurrency=1, enqueue=False),
    )


def bulk_with_an_active_user_agent_adopting_one() -> Case:
    agent = _user_agent()
    _active(agent, _account(agent, "222222222222"))
    hand_made_setup("400000000001", agent.arn)
    make_management_role("400000000002")
    report = _bulk_report(agent, ["400000000001", "400000000002"])
    return Case(
        lambda: lifecycle.plan_bulk(report),
        lambda: lifecycle.accounts_bulk_onboard(report=report, max_concurrency=1, enqueue=False),
    )


def create_an_access_key_for_a_user_agent() -> Case:
    agent = _user_agent()
    _active(agent)
    return Case(
        lambda: services.plan_access_key(agent),
        lambda: services.run_request(kind=RunKind.ACCESS_KEY, agent=agent, enqueue=False),
    )


def audit_everything() -> Case:
    agent = _role_agent()
    _active(agent, _account(agent, "222222222222"))
    return Case(
        lambda: flows.AUDIT.preview(flows.Scope()), lambda: audit_request(user=None), expect_writes=False
    )


def _synced_organization(agent: AgentIdentity):
    """The demo organization connected, its Apps OU (and below) onboarded by a first sync."""
    from accounts import organizations as org_inventory
    from portal import emulator
    from provisioning import aws, org_services

    from .conftest import BASE_ACCOUNT

    base = aws.Access(BASE_ACCOUNT)
    seeded = emulator.create_demo_organization(base)
    organization = org_services.organization_connect(name="acme", account_id=BASE_ACCOUNT)
    org_inventory.rule_create(
        organization=organization,
        agent=agent,
        regions=["us-east-1"],
        ou_ids=[seeded.units["Apps"]],
        include_children=True,
    )
    run_inline(org_services.sync_request(organization=organization, apply=True, enqueue=False))
    return base, seeded, organization


def discover_an_organization() -> Case:
    from provisioning import org_services

    _, _, organization = _synced_organization(_role_agent())
    return Case(
        lambda: flows.ORG_DISCOVER.preview(flows.Scope()),
        lambda: org_services.discover_request(organization=organization, enqueue=False),
        expect_writes=False,
    )


def sync_an_organization_one_joining_one_leaving() -> Case:
    from provisioning import aws, org_services

    base, seeded, organization = _synced_organization(_role_agent())
    joined = aws.call(
        base, "organizations", "create_account", AccountName="apps-new", Email="new@example.com"
    )
    new_id = joined["CreateAccountStatus"]["AccountId"]
    aws.call(
        base,
        "organizations",
        "move_account",
        AccountId=new_id,
        SourceParentId=seeded.root_id,
        DestinationParentId=seeded.units["Apps"],
    )
    aws.call(
        base,
        "organizations",
        "move_account",
        AccountId=seeded.accounts["apps-web"],
        SourceParentId=seeded.units["Apps"],
        DestinationParentId=seeded.units["Platform"],
    )
    previews: list[org_services.SyncPreview] = []

    def preview() -> Plan:
        previews.append(org_services.plan_sync(organization))
        return previews[-1].plan

    # As the organization page confirms a preview: its accounts and generated ExternalIds pinned.
    return Case(
        preview,
        lambda: org_services.sync_confirm(organization=organization, preview=previews[-1], enqueue=False),
    )


CASES = [
    agent_setup_role,
    agent_setup_irsa_creating_its_oidc_provider,
    agent_moved_from_ec2_to_pod_identity,
    agent_setup_user_serving_accounts,
    onboard_with_a_draft_role_agent,
    onboard_with_an_active_user_agent,
    onboard_adopting_a_hand_made_role,
    reconcile_many_with_drift_and_a_removed_account,
    rotate_an_external_id,
    retire_the_old_external_id,
    offboard_an_adopted_account_confirmed,
    offboard_an_agent_holding_the_guides_star_policy,
    bulk_with_a_draft_role_agent,
    bulk_with_an_active_user_agent_adopting_one,
    create_an_access_key_for_a_user_agent,
    audit_everything,
    discover_an_organization,
    sync_an_organization_one_joining_one_leaving,
]


@pytest.mark.parametrize("make_case", CASES, ids=[c.__name__ for c in CASES])
def test_a_run_writes_exactly_what_its_preview_showed_in_order(db, writes, monkeypatch, make_case):
    monkeypatch.setattr("provisioning.audit.run.notify_new_findings", lambda *_: None)
    case = make_case()
    previewed = _previewed(case.preview())
    writes.clear()
    run = run_inline(case.request())
    assert run.status == RunStatus.SUCCEEDED, run.explanation
    assert _took_effect(writes, run) == previewed
    assert bool(previewed) == case.expect_writes


def _took_effect(writes: list[tuple[str, dict[str, Any]]], run: Run) -> list[tuple[str, dict[str, Any]]]:
    """The writes without the creates IAM refused as EntityAlreadyExists: an account new to the portal
    is created without reading first, and what exists after all is then adopted as the preview showed
    (nothing changed by the refused call; its operation records it)."""
    made = list(writes)
    for operation in run.operations.filter(error_code="EntityAlreadyExists"):
        assert operation.action in ("iam:CreatePolicy", "iam:CreateRole"), operation.action
        refused = next(
            w for w in made if w[0] == operation.action and operation.request.items() <= w[1].items()
        )
        made.remove(refused)
    return made


def test_every_run_kind_has_a_flow_and_a_case_here():
    """A new run kind cannot land without its flow, nor without a case in the test above."""
    assert set(flows.FLOWS) == set(RunKind.values)
    kinds_tested = {"agent", "onboard", "reconcile", "rotate", "offboard", "bulk", "audit", "access_key"}
    kinds_tested |= {"org_discover", "org_sync"}
    kinds_tested |= {"app_secret"}  # a Snyk write only: test_snyk_secret's preview-equals-run test
    assert kinds_tested == set(RunKind.values)

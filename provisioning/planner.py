"""The planner: desired documents (policies.py) vs live IAM (aws.py) -> an ordered list of changes.

Read-only: it never writes to AWS or the database. Documents compare semantically, so key order,
"x" vs ["x"] and whitespace never cause a write. The order of the list is the order to apply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from . import adoption, aws, policies

MANAGED_TAG = {"Key": "managed-by", "Value": "ecr-broker-portal"}


@dataclass
class Change:
    account_id: str  # the AWS account the call is made in
    access: aws.Access
    kind: str  # create | update | attach | detach | delete | adopt
    action: str  # "iam:CreateRole"
    method: str  # boto3 method name
    params: dict[str, Any]
    arn: str
    summary: str
    before: Any = None
    after: Any = None
    adopts: str = ""  # "role" / "policy": mark the account's resource as adopted on success
    # The agent's permission documents list every account of the agent, so other people's runs change
    # them between a preview and its confirmation; the engine rebuilds them from the inventory anyway.
    shared: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "kind": self.kind,
            "action": self.action,
            "arn": self.arn,
            "summary": self.summary,
            "before": self.before,
            "after": self.after,
        }


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)  # resources taken over as they are
    layout: str = ""
    reads: int = 0
    about_agent: bool = False  # an agent page's plan: its confirmation pins the shared documents too

    def extend(self, other: Plan) -> Plan:
        self.changes.extend(other.changes)
        self.notes.extend(other.notes)
        self.adopted.extend(other.adopted)
        self.layout = other.layout or self.layout
        self.about_agent = self.about_agent or other.about_agent
        return self

    @property
    def is_empty(self) -> bool:
        return not self.changes

    def to_dict(self) -> dict[str, Any]:
        return {
            "changes": [c.to_dict() for c in self.changes],
            "notes": list(self.notes),
            "adopted": list(self.adopted),
            "layout": self.layout,
        }


def account_access(account: Any) -> aws.Access:
    return aws.Access(account.account_id, account.management_role_arn, account.management_external_id)


agent_access = account_access  # same fields on AgentIdentity


def _tagged(resource: dict[str, Any] | None) -> bool:
    tags = (resource or {}).get("Tags") or []
    return any(t.get("Key") == MANAGED_TAG["Key"] for t in tags)


# --- ECR account: read-only policy, service role, attachment ----------------------------------


def plan_account(
    account: Any, external_ids: list[str], *, remove: bool = False, delete_adopted: bool = False
) -> Plan:
    """Changes that make one ECR account's policy, role and attachment match (or be absent).

    remove=True deletes only what the portal created (tagged, not adopted); resources it adopted
    are deleted only with delete_adopted=True (the operator's explicit confirmation).
    """
    access = account_access(account)
    iam = aws.Iam(access)
    acct = account.account_id
    plan = Plan()
    policy_arn = account.read_policy_arn
    role_name = account.service_role_name
    role_arn = account.service_role_arn

    def change(kind, action, method, arn, summary, before=None, after=None, adopts="", **params):
        plan.changes.append(
            Change(acct, access, kind, action, method, params, arn, summary, before, after, adopts)
        )

    live_role = iam.get_role(role_name)
    live_policy = iam.get_policy(policy_arn)
    attached = iam.list_attached_policies("role", role_name) if live_role else []

    if remove:
        _plan_removal(plan, change, iam, account, live_role, live_policy, attached, delete_adopted)
        return plan

    # 1. The read-only policy.
    desired_read = policies.read_only_policy()
    if live_policy is None:
        change(
            "create",
            "iam:CreatePolicy",
            "create_policy",
            policy_arn,
            f"Create policy {account.read_policy_name} (11 ECR read actions)",
            after=desired_read,
            PolicyName=account.read_policy_name,
            PolicyDocument=desired_read,
            Description=policies.READ_POLICY_DESCRIPTION,
            Tags=[MANAGED_TAG],
        )
    else:
        live_doc = iam.get_policy_document(policy_arn, live_policy["DefaultVersionId"])
        if not _tagged(live_policy):
            plan.adopted.append(policy_arn)
            plan.notes.append(
                adoption.describe(
                    "policy",
                    policy_arn,
                    adoption.read_policy_deviations(live_doc),
                    matches=policies.same_document(live_doc, desired_read),
                    fix="A new default version with exactly the guide's 11 actions replaces it "
                    "(the current one stays as an older version).",
                )
            )
            change(
                "adopt",
                "iam:TagPolicy",
                "tag_policy",
                policy_arn,
                f"Adopt existing policy {account.read_policy_name}",
                adopts="policy",
                PolicyArn=policy_arn,
                Tags=[MANAGED_TAG],
            )
        if not policies.same_document(live_doc, desired_read):
            plan.changes.extend(_new_policy_version(iam, access, acct, policy_arn, live_doc, desired_read))

    # 2. The service role and its trust.
    desired_trust = policies.service_role_trust_policy(account.agent.arn, external_ids)
    if live_role is None:
        change(
            "create",
            "iam:CreateRole",
            "create_role",
            role_arn,
            f"Create role {role_name} trusting {account.agent.arn} with the ExternalId",
            after=desired_trust,
            RoleName=role_name,
            AssumeRolePolicyDocument=desired_trust,
            Description="Assumed by the Snyk Container Registry Agent to read ECR",
            Tags=[MANAGED_TAG],
        )
    else:
        if not _tagged(live_role):
            plan.adopted.append(role_arn)
            plan.notes.append(
                adoption.describe(
                    "role",
                    role_arn,
                    adoption.trust_deviations(
                        live_role.get("AssumeRolePolicyDocument"), account.agent.arn, external_ids
                    ),
                    matches=policies.same_document(live_role.get("AssumeRolePolicyDocument"), desired_trust),
                    fix="Its trust is replaced: only the agent, only with the portal's ExternalId.",
                )
            )
            plan.notes.extend(
                f"Adopted role {role_name} {extra}."
                for extra in adoption.role_extras(
                    attached, iam.list_inline_policies("role", role_name), policy_arn
                )
            )
            change(
                "adopt",
                "iam:TagRole",
                "tag_role",
                role_arn,
                f"Adopt existing role {role_name}",
                adopts="role",
                RoleName=role_name,
                Tags=[MANAGED_TAG],
            )
        live_trust = live_role.get("AssumeRolePolicyDocument")
        if not policies.same_document(live_trust, desired_trust):
            change(
                "update",
                "iam:UpdateAssumeRolePolicy",
                "update_assume_role_policy",
                role_arn,
                f"Set the trust of {role_name}",
                before=live_trust,
                after=desired_trust,
                RoleName=role_name,
                PolicyDocument=desired_trust,
            )

    # 3. The attachment.
    if policy_arn not in attached:
        change(
            "attach",
            "iam:AttachRolePolicy",
            "attach_role_policy",
            role_arn,
            f"Attach {account.read_policy_name} to {role_name}",
            RoleName=role_name,
            PolicyArn=policy_arn,
        )
    return plan


def _plan_removal(plan, change, iam, account, live_role, live_policy, attached, delete_adopted) -> None:
    """Offboarding: delete the role and the read-only policy, but only what the portal may delete.

    A resource without the portal's tag was neither created nor adopted by it: it stays. An adopted
    one (it existed before the portal) stays unless the operator confirmed its deletion. A policy
    still attached elsewhere stays (deleting it would fail, and would cut the other holders off).
    """
    role_name, role_arn = account.service_role_name, account.service_role_arn
    policy_arn = account.read_policy_arn

    def deletable(resource, adopted: bool, label: str, arn: str) -> bool:
        if not _tagged(resource):
            plan.notes.append(
                f"{label} {arn} was not created or adopted by the portal (no {MANAGED_TAG['Key']} tag): "
                "it is left in place."
            )
            return False
        if adopted and not delete_adopted:
            plan.notes.append(
                f"{label} {arn} existed before the portal (adopted): it is left in place. Confirm the "
                "deletion of adopted resources to delete it."
            )
            return False
        return True

    delete_role = live_role is not None and deletable(live_role, account.role_adopted, "Role", role_arn)
    delete_policy = live_policy is not None and deletable(
        live_policy, account.policy_adopted, "Policy", policy_arn
    )
    if delete_policy:
        elsewhere = int(live_policy.get("AttachmentCount") or 0) - (1 if policy_arn in attached else 0)
        if elsewhere > 0:
            plan.notes.append(
                f"Policy {policy_arn} is also attached to {elsewhere} other identit"
                f"{'y' if elsewhere == 1 else 'ies'}: it is left in place (detach it there first)."
            )
            delete_policy = False
    if delete_role:
        for arn in attached:
            change(
                "detach",
                "iam:DetachRolePolicy",
                "detach_role_policy",
                role_arn,
                f"Detach {arn.rsplit('/', 1)[-1]} from {role_name}",
                RoleName=role_name,
                PolicyArn=arn,
            )
        for name in iam.list_inline_policies("role", role_name):
            change(
                "delete",
                "iam:DeleteRolePolicy",
                "delete_role_policy",
                role_arn,
                f"Delete inline policy {name} of {role_name}",
                RoleName=role_name,
                PolicyName=name,
            )
        change(
            "delete",
            "iam:DeleteRole",
            "delete_role",
            role_arn,
            f"Delete role {role_name}",
            before=live_role.get("AssumeRolePolicyDocument"),
            RoleName=role_name,
        )
    elif live_role is not None and delete_policy and policy_arn in attached:
        change(
            "detach",
            "iam:DetachRolePolicy",
            "detach_role_policy",
            role_arn,
            f"Detach {account.read_policy_name} from {role_name} (the role stays)",
            RoleName=role_name,
            PolicyArn=policy_arn,
        )
    if delete_policy:
        for version in iam.list_policy_versions(policy_arn):
            if not version["IsDefaultVersion"]:
                change(
                    "delete",
                    "iam:DeletePolicyVersion",
                    "delete_policy_version",
                    policy_arn,
                    f"Delete version {version['VersionId']} of {account.read_policy_name}",
                    PolicyArn=policy_arn,
                    VersionId=version["VersionId"],
                )
        change(
            "delete",
            "iam:DeletePolicy",
            "delete_policy",
            policy_arn,
            f"Delete policy {account.read_policy_name}",
            PolicyArn=policy_arn,
        )


def _new_policy_version(iam: aws.Iam, access, acct, arn, before, after) -> list[Change]:
    """A managed policy's content changes by a new default version; IAM keeps at most 5."""
    changes = []
    versions = iam.list_policy_versions(arn)
    if len(versions) >= policies.MAX_POLICY_VERSIONS:
        oldest = min((v for v in versions if not v["IsDefaultVersion"]), key=lambda v: v["CreateDate"])
        changes.append(
            Change(
                acct,
                access,
                "delete",
                "iam:DeletePolicyVersion",
                "delete_policy_version",
                {"PolicyArn": arn, "VersionId": oldest["VersionId"]},
                arn,
                f"Delete the oldest version {oldest['VersionId']} (IAM keeps 5)",
            )
        )
    changes.append(
        Change(
            acct,
            access,
            "update",
            "iam:CreatePolicyVersion",
            "create_policy_version",
            {"PolicyArn": arn, "PolicyDocument": after, "SetAsDefault": True},
            arn,
            f"New default version of {arn.rsplit('/', 1)[-1]}",
            before,
            after,
        )
    )
    return changes


# --- Agent identity and its permissions -------------------------------------------------------


def plan_agent_identity(agent: Any) -> Plan:
    """Role + EC2 trust + instance profile, or user; the permissions are planned separately."""
    access = agent_access(agent)
    iam = aws.Iam(access)
    acct = agent.account_id
    plan = Plan()
    if agent.kind == "role":
        trust = policies.agent_role_trust_policy()
        role = iam.get_role(agent.iam_name)
        if role is None:
            plan.changes.append(
                Change(
                    acct,
                    access,
                    "create",
                    "iam:CreateRole",
                    "create_role",
                    {"RoleName": agent.iam_name, "AssumeRolePolicyDocument": trust, "Tags": [MANAGED_TAG]},
                    agent.arn,
                    f"Create agent role {agent.iam_name} (EC2 trust)",
                    None,
                    trust,
                )
            )
        elif not policies.same_document(role.get("AssumeRolePolicyDocument"), trust):
            plan.changes.append(
                Change(
                    acct,
                    access,
                    "update",
                    "iam:UpdateAssumeRolePolicy",
                    "update_assume_role_policy",
                    {"RoleName": agent.iam_name, "PolicyDocument": trust},
                    agent.arn,
                    f"Set the EC2 trust of {agent.iam_name}",
                    role.get("AssumeRolePolicyDocument"),
                    trust,
                )
            )
        profile = iam.get_instance_profile(agent.iam_name)
        profile_arn = f"arn:aws:iam::{acct}:instance-profile/{agent.iam_name}"
        if profile is None:
            plan.changes.append(
                Change(
                    acct,
                    access,
                    "create",
                    "iam:CreateInstanceProfile",
                    "create_instance_profile",
                    {"InstanceProfileName": agent.iam_name},
                    profile_arn,
                    f"Create instance profile {agent.iam_name}",
                )
            )
        if profile is None or agent.iam_name not in {r["RoleName"] for r in profile.get("Roles", [])}:
            plan.changes.append(
                Change(
                    acct,
                    access,
                    "attach",
                    "iam:AddRoleToInstanceProfile",
                    "add_role_to_instance_profile",
                    {"InstanceProfileName": agent.iam_name, "RoleName": agent.iam_name},
                    profile_arn,
                    f"Add role {agent.iam_name} to its instance profile",
                )
            )
    elif iam.get_user(agent.iam_name) is None:
        plan.changes.append(
            Change(
                acct,
                access,
                "create",
                "iam:CreateUser",
                "create_user",
                {"UserName": agent.iam_name, "Tags": [MANAGED_TAG]},
                agent.arn,
                f"Create agent user {agent.iam_name}",
            )
        )
    return plan


def plan_agent_permissions(agent: Any, role_arns: dict[str, str]) -> Plan:
    """The agent's sts:AssumeRole permissions for exactly these service roles, in the layout that fits."""
    access = agent_access(agent)
    iam = aws.Iam(access)
    acct = agent.account_id
    kind = agent.kind
    cap = "Role" if kind == "role" else "User"
    ident = {f"{cap}Name": agent.iam_name}
    desired = policies.agent_permissions(kind, agent.policy_name, role_arns)
    plan = Plan(layout=desired.layout)
    if desired.note:
        plan.notes.append(desired.note)

    exists = iam.get_role(agent.iam_name) if kind == "role" else iam.get_user(agent.iam_name)
    live_inline = iam.get_inline_policy(kind, agent.iam_name, agent.policy_name) if exists else None
    attached = iam.list_attached_policies(kind, agent.iam_name) if exists else []
    pattern = re.compile(rf"^arn:aws:iam::{acct}:policy/{re.escape(agent.policy_name)}-\d+$")
    live_managed = [arn for arn in attached if pattern.match(arn)]

    if live_inline is not None and _grants_everything(live_inline):
        outcome = (
            "narrowed to the service roles below" if role_arns else "removed: the agent serves no account"
        )
        plan.notes.append(
            f'The agent\'s {agent.policy_name} allows sts:AssumeRole on "*" (as the guide first writes '
            f"it): it is {outcome}."
        )
    if live_inline is not None and not policies.same_document(live_inline, desired.inline):
        plan.notes.extend(
            f"The agent's {agent.policy_name} {deviation}."
            for deviation in adoption.agent_policy_deviations(live_inline, list(role_arns.values()))
        )

    def change(kind_, action, method, arn, summary, before=None, after=None, **params):
        plan.changes.append(Change(acct, access, kind_, action, method, params, arn, summary, before, after))

    # Managed policies first, so permissions never shrink mid-switch.
    for name, document in desired.managed.items():
        arn = f"arn:aws:iam::{acct}:policy/{name}"
        live = iam.get_policy(arn)
        if live is None:
            change(
                "create",
                "iam:CreatePolicy",
                "create_policy",
                arn,
                f"Create policy {name}",
                after=document,
                PolicyName=name,
                PolicyDocument=document,
                Tags=[MANAGED_TAG],
            )
        else:
            live_doc = iam.get_policy_document(arn, live["DefaultVersionId"])
            if not policies.same_document(live_doc, document):
                plan.changes.extend(_new_policy_version(iam, access, acct, arn, live_doc, document))
        if arn not in attached:
            change(
                "attach",
                f"iam:Attach{cap}Policy",
                f"attach_{kind}_policy",
                agent.arn,
                f"Attach {name} to {agent.iam_name}",
                PolicyArn=arn,
                **ident,
            )

    if desired.inline is not None:
        if not policies.same_document(live_inline, desired.inline):
            change(
                "update" if live_inline else "create",
                f"iam:Put{cap}Policy",
                f"put_{kind}_policy",
                agent.arn,
                f"Write {agent.policy_name} on {agent.iam_name} ({_count(len(role_arns), 'account')})",
                before=live_inline,
                after=desired.inline,
                PolicyName=agent.policy_name,
                PolicyDocument=desired.inline,
                **ident,
            )
    elif live_inline is not None:
        change(
            "delete",
            f"iam:Delete{cap}Policy",
            f"delete_{kind}_policy",
            agent.arn,
            f"Remove inline {agent.policy_name} from {agent.iam_name}",
            before=live_inline,
            PolicyName=agent.policy_name,
            **ident,
        )

    desired_arns = {f"arn:aws:iam::{acct}:policy/{name}" for name in desired.managed}
    for arn in live_managed:
        if arn in desired_arns:
            continue
        change(
            "detach",
            f"iam:Detach{cap}Policy",
            f"detach_{kind}_policy",
            agent.arn,
            f"Detach {arn.rsplit('/', 1)[-1]} from {agent.iam_name}",
            PolicyArn=arn,
            **ident,
        )
        if not _tagged(iam.get_policy(arn)):
            # Named like ours but not made by the portal: it loses its attachment, nothing more.
            plan.notes.append(
                f"{arn} was not created by the portal: it is detached from the agent, not deleted."
            )
            continue
        for version in iam.list_policy_versions(arn):
            if not version["IsDefaultVersion"]:
                change(
                    "delete",
                    "iam:DeletePolicyVersion",
                    "delete_policy_version",
                    arn,
                    f"Delete version {version['VersionId']}",
                    PolicyArn=arn,
                    VersionId=version["VersionId"],
                )
        change(
            "delete",
            "iam:DeletePolicy",
            "delete_policy",
            arn,
            f"Delete {arn.rsplit('/', 1)[-1]}",
            PolicyArn=arn,
        )
    for shared_change in plan.changes:
        shared_change.shared = True
    return plan


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _grants_everything(document: dict[str, Any]) -> bool:
    statements = document.get("Statement", [])
    statements = statements if isinstance(statements, list) else [statements]
    for st in statements:
        resources = st.get("Resource", [])
        if (resources == "*" or "*" in resources) and st.get("Effect") == "Allow":
            return True
    return False

"""Pure comparisons: live state (live.py) and desired documents (policies.py) -> the changes to make.

No AWS call and no database query here. Documents compare semantically, so key order, "x" vs ["x"]
and whitespace never cause a write. The order of a plan's changes is the order to apply them.
The predicates `*_needs_*` tell the readers which extra documents a comparison looks at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import adoption, aws, policies
from .changes import MANAGED_TAG, Change, Plan

if TYPE_CHECKING:  # the readers' result types; live.py imports this module for its predicates
    from accounts.models import AgentIdentity, EcrAccount

    from .live import LiveAccount, LiveAgent, LivePolicy


@dataclass(frozen=True)
class AccountWanted:
    """What an account's resources should be: trusting these ExternalIds, or gone."""

    external_ids: list[str] = field(default_factory=list)
    remove: bool = False
    delete_adopted: bool = False  # removal: also what the portal adopted (the operator confirmed)


def tagged(resource: dict[str, Any] | None) -> bool:
    tags = (resource or {}).get("Tags") or []
    return any(t.get("Key") == MANAGED_TAG["Key"] for t in tags)


def access_of(identity: EcrAccount | AgentIdentity) -> aws.Access:
    return aws.Access(identity.account_id, identity.management_role_arn, identity.management_external_id)


def managed_arn(agent: AgentIdentity, name: str) -> str:
    return f"arn:aws:iam::{agent.account_id}:policy/{name}"


def managed_policy_pattern(agent: AgentIdentity) -> re.Pattern[str]:
    """ARNs of the agent's own managed policies (`<policy name>-<n>`)."""
    return re.compile(rf"^arn:aws[\w-]*:iam::{agent.account_id}:policy/{re.escape(agent.policy_name)}-\d+$")


class _Changes:
    """Appends Changes in one account to a plan (keeps every call site to one line per field)."""

    def __init__(self, plan: Plan, identity: EcrAccount | AgentIdentity):
        self.plan, self.account_id, self.access = plan, identity.account_id, access_of(identity)

    def add(
        self,
        kind: str,
        action: str,
        arn: str,
        summary: str,
        *,
        before: Any = None,
        after: Any = None,
        adopts: str = "",
        **params: Any,
    ) -> None:
        method = _method_of(action)
        self.plan.changes.append(
            Change(
                self.account_id,
                self.access,
                kind,
                action,
                method,
                params,
                arn,
                summary,
                before,
                after,
                adopts,
            )
        )

    def new_version(self, arn: str, versions: list[dict[str, Any]], before: Any, after: Any) -> None:
        """A managed policy's content changes by a new default version; IAM keeps at most 5."""
        if len(versions) >= policies.MAX_POLICY_VERSIONS:
            oldest = min((v for v in versions if not v["IsDefaultVersion"]), key=lambda v: v["CreateDate"])
            self.add(
                "delete",
                "iam:DeletePolicyVersion",
                arn,
                f"Delete the oldest version {oldest['VersionId']} (IAM keeps 5)",
                PolicyArn=arn,
                VersionId=oldest["VersionId"],
            )
        self.add(
            "update",
            "iam:CreatePolicyVersion",
            arn,
            f"New default version of {arn.rsplit('/', 1)[-1]}",
            before=before,
            after=after,
            PolicyArn=arn,
            PolicyDocument=after,
            SetAsDefault=True,
        )

    def delete_policy(
        self, arn: str, versions: list[dict[str, Any]], summary: str, version_label: str
    ) -> None:
        """A managed policy goes: its older versions first (IAM refuses otherwise)."""
        for version in versions:
            if not version["IsDefaultVersion"]:
                self.add(
                    "delete",
                    "iam:DeletePolicyVersion",
                    arn,
                    f"Delete version {version['VersionId']}{version_label}",
                    PolicyArn=arn,
                    VersionId=version["VersionId"],
                )
        self.add("delete", "iam:DeletePolicy", arn, summary, PolicyArn=arn)


def _method_of(action: str) -> str:
    """boto3's method for "iam:CreatePolicyVersion": create_policy_version."""
    name = action.split(":", 1)[1]
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


# --- an ECR account: read-only policy, service role, attachment ------------------------------------


def _deletable(
    account: EcrAccount, wanted: AccountWanted, resource: dict[str, Any] | None, adopted: bool
) -> bool:
    """Removal deletes only what the portal created, and what it adopted only when confirmed."""
    return resource is not None and tagged(resource) and (not adopted or wanted.delete_adopted)


def _policy_used_elsewhere(account: EcrAccount, live: LiveAccount) -> int:
    policy = live.policy or {}
    return int(policy.get("AttachmentCount") or 0) - (1 if account.read_policy_arn in live.attached else 0)


def account_needs_inline_names(account: EcrAccount, wanted: AccountWanted, live: LiveAccount) -> bool:
    if wanted.remove:
        return _deletable(account, wanted, live.role, account.role_adopted)
    return not tagged(live.role)  # adopting: the plan names the role's other policies


def account_needs_versions(account: EcrAccount, wanted: AccountWanted, live: LiveAccount) -> bool:
    if wanted.remove:
        return _deletable(
            account, wanted, live.policy, account.policy_adopted
        ) and not _policy_used_elsewhere(account, live)
    return not policies.same_document(live.read_document, policies.read_only_policy())


def account_changes(account: EcrAccount, wanted: AccountWanted, live: LiveAccount) -> Plan:
    """Changes that make one ECR account's policy, role and attachment match (or be absent)."""
    plan = Plan()
    if wanted.remove:
        _removal(plan, account, wanted, live)
    else:
        _read_policy(plan, account, live)
        _service_role(plan, account, wanted.external_ids, live)
        if account.read_policy_arn not in live.attached:
            _Changes(plan, account).add(
                "attach",
                "iam:AttachRolePolicy",
                account.service_role_arn,
                f"Attach {account.read_policy_name} to {account.service_role_name}",
                RoleName=account.service_role_name,
                PolicyArn=account.read_policy_arn,
            )
    return plan


def _read_policy(plan: Plan, account: EcrAccount, live: LiveAccount) -> None:
    add = _Changes(plan, account)
    arn, desired = account.read_policy_arn, policies.read_only_policy()
    if live.policy is None:
        add.add(
            "create",
            "iam:CreatePolicy",
            arn,
            f"Create policy {account.read_policy_name} (11 ECR read actions)",
            after=desired,
            PolicyName=account.read_policy_name,
            PolicyDocument=desired,
            Description=policies.READ_POLICY_DESCRIPTION,
            Tags=[MANAGED_TAG],
        )
        return
    matches = policies.same_document(live.read_document, desired)
    if not tagged(live.policy):
        plan.adopted.append(arn)
        plan.notes.append(
            adoption.describe(
                "policy",
                arn,
                adoption.read_policy_deviations(live.read_document),
                matches=matches,
                fix="A new default version with exactly the guide's 11 actions replaces it "
                "(the current one stays as an older version).",
            )
        )
        add.add(
            "adopt",
            "iam:TagPolicy",
            arn,
            f"Adopt existing policy {account.read_policy_name}",
            adopts="policy",
            PolicyArn=arn,
            Tags=[MANAGED_TAG],
        )
    if not matches:
        add.new_version(arn, live.versions or [], live.read_document, desired)


def _service_role(plan: Plan, account: EcrAccount, external_ids: list[str], live: LiveAccount) -> None:
    add = _Changes(plan, account)
    name, arn, agent_arn = account.service_role_name, account.service_role_arn, account.agent.arn
    desired = policies.service_role_trust_policy(agent_arn, external_ids)
    if live.role is None:
        add.add(
            "create",
            "iam:CreateRole",
            arn,
            f"Create role {name} trusting {agent_arn} with the ExternalId",
            after=desired,
            RoleName=name,
            AssumeRolePolicyDocument=desired,
            Description="Assumed by the Snyk Container Registry Agent to read ECR",
            Tags=[MANAGED_TAG],
        )
        return
    trust = live.role.get("AssumeRolePolicyDocument")
    if not tagged(live.role):
        plan.adopted.append(arn)
        plan.notes.append(
            adoption.describe(
                "role",
                arn,
                adoption.trust_deviations(trust, agent_arn, external_ids),
                matches=policies.same_document(trust, desired),
                fix="Its trust is replaced: only the agent, only with the portal's ExternalId.",
            )
        )
        plan.notes.extend(
            f"Adopted role {name} {extra}."
            for extra in adoption.role_extras(live.attached, live.inline_names, account.read_policy_arn)
        )
        add.add(
            "adopt",
            "iam:TagRole",
            arn,
            f"Adopt existing role {name}",
            adopts="role",
            RoleName=name,
            Tags=[MANAGED_TAG],
        )
    if not policies.same_document(trust, desired):
        add.add(
            "update",
            "iam:UpdateAssumeRolePolicy",
            arn,
            f"Set the trust of {name}",
            before=trust,
            after=desired,
            RoleName=name,
            PolicyDocument=desired,
        )


def _kept_note(plan: Plan, label: str, arn: str, resource: dict[str, Any], adopted: bool) -> None:
    if not tagged(resource):
        plan.notes.append(
            f"{label} {arn} was not created or adopted by the portal (no {MANAGED_TAG['Key']} tag): "
            "it is left in place."
        )
    elif adopted:
        plan.notes.append(
            f"{label} {arn} existed before the portal (adopted): it is left in place. Confirm the "
            "deletion of adopted resources to delete it."
        )


def _removal(plan: Plan, account: EcrAccount, wanted: AccountWanted, live: LiveAccount) -> None:
    """Offboarding: delete the role and the read-only policy, but only what the portal may delete.

    A resource without the portal's tag was neither created nor adopted by it: it stays. An adopted
    one (it existed before the portal) stays unless the operator confirmed its deletion. A policy
    still attached elsewhere stays (deleting it would fail, and would cut the other holders off).
    """
    add = _Changes(plan, account)
    role_name, role_arn, policy_arn = (
        account.service_role_name,
        account.service_role_arn,
        account.read_policy_arn,
    )
    delete_role = _deletable(account, wanted, live.role, account.role_adopted)
    delete_policy = _deletable(account, wanted, live.policy, account.policy_adopted)
    if live.role is not None and not delete_role:
        _kept_note(plan, "Role", role_arn, live.role, account.role_adopted)
    if live.policy is not None and not delete_policy:
        _kept_note(plan, "Policy", policy_arn, live.policy, account.policy_adopted)
    elsewhere = _policy_used_elsewhere(account, live)
    if delete_policy and elsewhere > 0:
        plan.notes.append(
            f"Policy {policy_arn} is also attached to {elsewhere} other identit"
            f"{'y' if elsewhere == 1 else 'ies'}: it is left in place (detach it there first)."
        )
        delete_policy = False
    if delete_role and live.role is not None:
        for arn in live.attached:
            name = arn.rsplit("/", 1)[-1]
            add.add(
                "detach",
                "iam:DetachRolePolicy",
                role_arn,
                f"Detach {name} from {role_name}",
                RoleName=role_name,
                PolicyArn=arn,
            )
        for name in live.inline_names:
            add.add(
                "delete",
                "iam:DeleteRolePolicy",
                role_arn,
                f"Delete inline policy {name} of {role_name}",
                RoleName=role_name,
                PolicyName=name,
            )
        add.add(
            "delete",
            "iam:DeleteRole",
            role_arn,
            f"Delete role {role_name}",
            before=live.role.get("AssumeRolePolicyDocument"),
            RoleName=role_name,
        )
    elif live.role is not None and delete_policy and policy_arn in live.attached:
        add.add(
            "detach",
            "iam:DetachRolePolicy",
            role_arn,
            f"Detach {account.read_policy_name} from {role_name} (the role stays)",
            RoleName=role_name,
            PolicyArn=policy_arn,
        )
    if delete_policy:
        add.delete_policy(
            policy_arn,
            live.versions or [],
            f"Delete policy {account.read_policy_name}",
            f" of {account.read_policy_name}",
        )


# --- the agent's identity -------------------------------------------------------------------------


def agent_identity_changes(agent: AgentIdentity, live: LiveAgent) -> Plan:
    """Role + EC2 trust + instance profile, or user; the permissions are compared separately."""
    plan = Plan()
    add = _Changes(plan, agent)
    name = agent.iam_name
    if agent.kind != "role":
        if live.identity is None:
            add.add(
                "create",
                "iam:CreateUser",
                agent.arn,
                f"Create agent user {name}",
                UserName=name,
                Tags=[MANAGED_TAG],
            )
        return plan
    trust = policies.agent_role_trust_policy()
    if live.identity is None:
        add.add(
            "create",
            "iam:CreateRole",
            agent.arn,
            f"Create agent role {name} (EC2 trust)",
            after=trust,
            RoleName=name,
            AssumeRolePolicyDocument=trust,
            Tags=[MANAGED_TAG],
        )
    elif not policies.same_document(live.identity.get("AssumeRolePolicyDocument"), trust):
        add.add(
            "update",
            "iam:UpdateAssumeRolePolicy",
            agent.arn,
            f"Set the EC2 trust of {name}",
            before=live.identity.get("AssumeRolePolicyDocument"),
            after=trust,
            RoleName=name,
            PolicyDocument=trust,
        )
    profile_arn = f"arn:aws:iam::{agent.account_id}:instance-profile/{name}"
    profile = live.instance_profile
    if profile is None:
        add.add(
            "create",
            "iam:CreateInstanceProfile",
            profile_arn,
            f"Create instance profile {name}",
            InstanceProfileName=name,
        )
    if profile is None or name not in {r["RoleName"] for r in profile.get("Roles", [])}:
        add.add(
            "attach",
            "iam:AddRoleToInstanceProfile",
            profile_arn,
            f"Add role {name} to its instance profile",
            InstanceProfileName=name,
            RoleName=name,
        )
    return plan


# --- the agent's permissions ----------------------------------------------------------------------


def managed_needs_versions(arn: str, desired: Any, live: LivePolicy, planning: bool) -> bool:
    """A desired managed policy whose content changes (IAM's 5-version limit), or a stale one to delete."""
    if not planning:
        return False
    if desired is not None:
        return not policies.same_document(live.document, desired)
    return tagged(live.policy)


def grants_everything(document: Any) -> bool:
    for st in adoption.statements(document):
        resources = st.get("Resource", [])
        if (resources == "*" or "*" in resources) and st.get("Effect") == "Allow":
            return True
    return False


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def agent_permission_changes(
    agent: AgentIdentity, role_arns: dict[str, str], desired: policies.AgentPermissions, live: LiveAgent
) -> Plan:
    """The agent's sts:AssumeRole permissions for exactly these service roles, in the layout that fits.

    Managed policies first, so permissions never shrink mid-switch; stale ones are detached last.
    Every change is `shared`: the documents list all the agent's accounts (see Change.shared).
    """
    plan = Plan(layout=desired.layout)
    if desired.note:
        plan.notes.append(desired.note)
    _permission_notes(plan, agent, role_arns, desired, live)
    cap = "Role" if agent.kind == "role" else "User"
    ident = {f"{cap}Name": agent.iam_name}
    add = _Changes(plan, agent)
    for name, document in desired.managed.items():
        arn = managed_arn(agent, name)
        managed = live.managed.get(arn)
        if managed is None:
            add.add(
                "create",
                "iam:CreatePolicy",
                arn,
                f"Create policy {name}",
                after=document,
                PolicyName=name,
                PolicyDocument=document,
                Tags=[MANAGED_TAG],
            )
        elif not policies.same_document(managed.document, document):
            add.new_version(arn, managed.versions or [], managed.document, document)
        if arn not in live.attached:
            add.add(
                "attach",
                f"iam:Attach{cap}Policy",
                agent.arn,
                f"Attach {name} to {agent.iam_name}",
                PolicyArn=arn,
                **ident,
            )
    if desired.inline is not None and not policies.same_document(live.inline, desired.inline):
        add.add(
            "update" if live.inline else "create",
            f"iam:Put{cap}Policy",
            agent.arn,
            f"Write {agent.policy_name} on {agent.iam_name} ({_count(len(role_arns), 'account')})",
            before=live.inline,
            after=desired.inline,
            PolicyName=agent.policy_name,
            PolicyDocument=desired.inline,
            **ident,
        )
    elif desired.inline is None and live.inline is not None:
        add.add(
            "delete",
            f"iam:Delete{cap}Policy",
            agent.arn,
            f"Remove inline {agent.policy_name} from {agent.iam_name}",
            before=live.inline,
            PolicyName=agent.policy_name,
            **ident,
        )
    _stale_managed(plan, add, agent, desired, live, cap, ident)
    for change in plan.changes:
        change.shared = True
    return plan


def _permission_notes(
    plan: Plan,
    agent: AgentIdentity,
    role_arns: dict[str, str],
    desired: policies.AgentPermissions,
    live: LiveAgent,
) -> None:
    if live.inline is not None and grants_everything(live.inline):
        outcome = (
            "narrowed to the service roles below" if role_arns else "removed: the agent serves no account"
        )
        plan.notes.append(
            f'The agent\'s {agent.policy_name} allows sts:AssumeRole on "*" (as the guide first writes '
            f"it): it is {outcome}."
        )
    if live.inline is not None and not policies.same_document(live.inline, desired.inline):
        plan.notes.extend(
            f"The agent's {agent.policy_name} {deviation}."
            for deviation in adoption.agent_policy_deviations(live.inline, list(role_arns.values()))
        )


def _stale_managed(
    plan: Plan,
    add: _Changes,
    agent: AgentIdentity,
    desired: policies.AgentPermissions,
    live: LiveAgent,
    cap: str,
    ident: dict[str, str],
) -> None:
    """Managed policies named like the portal's that the layout no longer uses: detached, and deleted
    when the portal made them."""
    pattern = managed_policy_pattern(agent)
    desired_arns = {managed_arn(agent, name) for name in desired.managed}
    for arn in live.attached:
        if not pattern.match(arn) or arn in desired_arns:
            continue
        short = arn.rsplit("/", 1)[-1]
        add.add(
            "detach",
            f"iam:Detach{cap}Policy",
            agent.arn,
            f"Detach {short} from {agent.iam_name}",
            PolicyArn=arn,
            **ident,
        )
        managed = live.managed.get(arn)
        if managed is None or not tagged(managed.policy):
            # Named like ours but not made by the portal: it loses its attachment, nothing more.
            plan.notes.append(
                f"{arn} was not created by the portal: it is detached from the agent, not deleted."
            )
            continue
        add.delete_policy(arn, managed.versions or [], f"Delete {short}", "")

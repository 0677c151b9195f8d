"""An ECR account compared: the read-only policy, the service role and its trust, the attachment."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import adoption, policies
from ..changes import MANAGED_TAG, Plan
from .common import AccountWanted, ChangeList, tagged

if TYPE_CHECKING:
    from accounts.models import EcrAccount

    from ..live import LiveAccount


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
            ChangeList(plan, account).add(
                "attach",
                "iam:AttachRolePolicy",
                account.service_role_arn,
                f"Attach {account.read_policy_name} to {account.service_role_name}",
                RoleName=account.service_role_name,
                PolicyArn=account.read_policy_arn,
            )
    return plan


def _read_policy(plan: Plan, account: EcrAccount, live: LiveAccount) -> None:
    add = ChangeList(plan, account)
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
    add = ChangeList(plan, account)
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
    role_arn, policy_arn = account.service_role_arn, account.read_policy_arn
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
    add = ChangeList(plan, account)
    if delete_role and live.role is not None:
        _delete_role(add, account, live.role, live)
    elif live.role is not None and delete_policy and policy_arn in live.attached:
        add.add(
            "detach",
            "iam:DetachRolePolicy",
            role_arn,
            f"Detach {account.read_policy_name} from {account.service_role_name} (the role stays)",
            RoleName=account.service_role_name,
            PolicyArn=policy_arn,
        )
    if delete_policy:
        name = account.read_policy_name
        add.delete_policy(policy_arn, live.versions or [], f"Delete policy {name}", f" of {name}")


def _delete_role(add: ChangeList, account: EcrAccount, role: dict[str, Any], live: LiveAccount) -> None:
    """A role goes after its policies: every attachment detached, every inline policy deleted."""
    role_name, role_arn = account.service_role_name, account.service_role_arn
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
        before=role.get("AssumeRolePolicyDocument"),
        RoleName=role_name,
    )

"""The agent compared: its identity (a role with the trust of where it runs — EC2 and its instance
profile, ECS tasks, EKS through IRSA's OIDC provider or a Pod Identity association — or a user) and
the permissions that let it assume exactly its accounts' service roles."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import adoption, policies
from ..changes import MANAGED_TAG, Plan
from .common import ChangeList, managed_arn, managed_policy_pattern, tagged

if TYPE_CHECKING:
    from accounts.models import AgentIdentity

    from ..live import LiveAgent, LivePolicy


RUNTIME_LABELS = {
    "ec2": "EC2 trust",
    "ecs": "ECS task trust",
    "eks-irsa": "IRSA trust",
    "eks-pod-identity": "Pod Identity trust",
}
MANAGED_TAGS_EKS = {MANAGED_TAG["Key"]: MANAGED_TAG["Value"]}  # EKS takes tags as a map


def runtime_of(agent: AgentIdentity) -> policies.Runtime:
    return policies.Runtime(
        agent.runtime,
        agent.account_id,
        agent.cluster_arn,
        agent.oidc_issuer,
        agent.namespace,
        agent.service_account,
    )


def needs_oidc_provider(agent: AgentIdentity) -> bool:
    return agent.kind == "role" and agent.runtime == "eks-irsa" and bool(agent.oidc_issuer)


def association_cluster(agent: AgentIdentity) -> tuple[str, str] | None:
    """(region, cluster name) whose Pod Identity association of the agent's service account matters:
    a Pod Identity agent's, or an EKS agent's that may still have one from before."""
    if agent.kind != "role" or not (agent.cluster_arn and agent.namespace and agent.service_account):
        return None
    _, _, service, region, _, resource = agent.cluster_arn.split(":", 5)
    return (region, resource.split("/", 1)[1]) if service == "eks" else None


def agent_identity_changes(agent: AgentIdentity, live: LiveAgent) -> Plan:
    """Role + the trust of its runtime (+ instance profile on EC2, OIDC provider and association on
    EKS), or user; the permissions are compared separately."""
    plan = Plan()
    add = ChangeList(plan, agent)
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
    _oidc_provider(plan, add, agent, live)
    _role_trust(plan, add, agent, live)
    if agent.runtime == "ec2":
        _instance_profile(add, agent, live)
    else:
        _leave_instance_profile(add, agent, live)
    _association(add, agent, live)
    return plan


def _role_trust(plan: Plan, add: ChangeList, agent: AgentIdentity, live: LiveAgent) -> None:
    name, label = agent.iam_name, RUNTIME_LABELS[agent.runtime]
    trust = policies.agent_trust_policy(runtime_of(agent))
    if live.identity is None:
        add.add(
            "create",
            "iam:CreateRole",
            agent.arn,
            f"Create agent role {name} ({label})",
            after=trust,
            RoleName=name,
            AssumeRolePolicyDocument=trust,
            Tags=[MANAGED_TAG],
        )
        return
    current = live.identity.get("AssumeRolePolicyDocument")
    if policies.same_document(current, trust):
        return
    plan.notes.extend(
        f"The trust of {name} {weakness.message}" for weakness in adoption.agent_trust_weaknesses(current)
    )
    add.add(
        "update",
        "iam:UpdateAssumeRolePolicy",
        agent.arn,
        f"Set the {label} of {name}",
        before=current,
        after=trust,
        RoleName=name,
        PolicyDocument=trust,
    )


def _instance_profile(add: ChangeList, agent: AgentIdentity, live: LiveAgent) -> None:
    name = agent.iam_name
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


def _leave_instance_profile(add: ChangeList, agent: AgentIdentity, live: LiveAgent) -> None:
    """Off EC2 the role leaves its instance profile, so no instance can still run as the agent (the
    empty profile stays: deleting it is no one's loss of access, and it may not be the portal's)."""
    name, profile = agent.iam_name, live.instance_profile
    if profile is not None and name in {r["RoleName"] for r in profile.get("Roles", [])}:
        add.add(
            "detach",
            "iam:RemoveRoleFromInstanceProfile",
            f"arn:aws:iam::{agent.account_id}:instance-profile/{name}",
            f"Remove role {name} from instance profile {name} (the agent no longer runs on EC2)",
            InstanceProfileName=name,
            RoleName=name,
        )


def _oidc_provider(plan: Plan, add: ChangeList, agent: AgentIdentity, live: LiveAgent) -> None:
    """IRSA needs the cluster's OIDC provider in the agent account: created only when the operator
    gave the issuer's thumbprint, otherwise the plan is refused (a trust naming no provider admits
    no one, and IAM refuses it)."""
    if not needs_oidc_provider(agent) or not live.runtime.oidc_read or live.runtime.oidc_provider is not None:
        return
    arn = policies.oidc_provider_arn(agent.account_id, agent.oidc_issuer)
    if not agent.oidc_thumbprint:
        raise policies.LayoutError(
            f"The OIDC provider {arn} does not exist in account {agent.account_id}: create it for the "
            f"cluster (eksctl utils associate-iam-oidc-provider), or give the issuer's thumbprint "
            "(--oidc-thumbprint) for the portal to create it."
        )
    add.add(
        "create",
        "iam:CreateOpenIDConnectProvider",
        arn,
        f"Create the OIDC provider of {agent.oidc_issuer} (audience {policies.IRSA_AUDIENCE})",
        Url=agent.oidc_issuer,
        ClientIDList=[policies.IRSA_AUDIENCE],
        ThumbprintList=[agent.oidc_thumbprint.lower()],
        Tags=[MANAGED_TAG],
    )


def _association(add: ChangeList, agent: AgentIdentity, live: LiveAgent) -> None:
    """Pod Identity: the service account's association names the agent role; any other runtime: an
    association that still gives the agent role to that service account goes."""
    cluster = association_cluster(agent)
    if cluster is None or not live.runtime.association_read:
        return
    region, cluster_name = cluster
    current = live.runtime.association
    where = f"{agent.namespace}/{agent.service_account} in cluster {cluster_name}"
    if agent.runtime == "eks-pod-identity":
        wanted = {"roleArn": agent.arn}
        if current is None:
            add.add(
                "create",
                "eks:CreatePodIdentityAssociation",
                agent.cluster_arn,
                f"Associate {where} with role {agent.iam_name}",
                after=wanted,
                region=region,
                clusterName=cluster_name,
                namespace=agent.namespace,
                serviceAccount=agent.service_account,
                roleArn=agent.arn,
                tags=MANAGED_TAGS_EKS,
            )
        elif current.get("roleArn") != agent.arn:
            add.add(
                "update",
                "eks:UpdatePodIdentityAssociation",
                current.get("associationArn", agent.cluster_arn),
                f"Associate {where} with role {agent.iam_name} instead of {current.get('roleArn')}",
                before={"roleArn": current.get("roleArn")},
                after=wanted,
                region=region,
                clusterName=cluster_name,
                associationId=current["associationId"],
                roleArn=agent.arn,
            )
    elif current is not None and current.get("roleArn") == agent.arn:
        add.add(
            "delete",
            "eks:DeletePodIdentityAssociation",
            current.get("associationArn", agent.cluster_arn),
            f"Remove the Pod Identity association of {where} (the agent no longer uses Pod Identity)",
            before={"roleArn": agent.arn},
            region=region,
            clusterName=cluster_name,
            associationId=current["associationId"],
        )


# --- the agent's permissions ----------------------------------------------------------------------


MAX_ACCESS_KEYS = 2  # IAM's quota per user


def access_key_changes(agent: AgentIdentity, keys: list[dict[str, Any]]) -> Plan:
    """One new access key for a user agent, if IAM's two-key quota leaves room."""
    if len(keys) >= MAX_ACCESS_KEYS:
        raise policies.LayoutError(
            f"IAM allows {MAX_ACCESS_KEYS} access keys per user and this user has {len(keys)}: "
            "delete one in IAM first."
        )
    plan = Plan()
    ChangeList(plan, agent).add(
        "create",
        "iam:CreateAccessKey",
        agent.arn,
        f"Create an access key for {agent.iam_name}",
        UserName=agent.iam_name,
    )
    plan.changes[-1].keeps_answer = True
    return plan


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
    add = ChangeList(plan, agent)
    _managed_policies(add, agent, desired, live, cap, ident)
    _inline_policy(add, agent, len(role_arns), desired, live, cap, ident)
    _stale_managed(plan, add, agent, desired, live, cap, ident)
    for change in plan.changes:
        change.shared = True
    return plan


def _managed_policies(
    add: ChangeList,
    agent: AgentIdentity,
    desired: policies.AgentPermissions,
    live: LiveAgent,
    cap: str,
    ident: dict[str, str],
) -> None:
    """Each managed policy of the layout exists with its document and is attached."""
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


def _inline_policy(
    add: ChangeList,
    agent: AgentIdentity,
    accounts: int,
    desired: policies.AgentPermissions,
    live: LiveAgent,
    cap: str,
    ident: dict[str, str],
) -> None:
    """The inline policy holds the layout's document, or is removed when the layout has none."""
    if desired.inline is not None and not policies.same_document(live.inline, desired.inline):
        add.add(
            "update" if live.inline else "create",
            f"iam:Put{cap}Policy",
            agent.arn,
            f"Write {agent.policy_name} on {agent.iam_name} ({_count(accounts, 'account')})",
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
    add: ChangeList,
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

"""Every IAM document of the guide, as pure functions: the single source of truth for desired state.

No database, no boto3: inputs are plain values, outputs are dicts ready for json.dumps. Sizes are
measured as IAM measures them (whitespace not counted), and the agent's permissions switch layout
when one statement per account no longer fits the inline quota.
"""

import json
import re
from dataclasses import dataclass, field
from typing import Any

VERSION = "2012-10-17"

READ_POLICY_ACTIONS = (
    "ecr:GetLifecyclePolicyPreview",
    "ecr:GetDownloadUrlForLayer",
    "ecr:BatchGetImage",
    "ecr:DescribeImages",
    "ecr:GetAuthorizationToken",
    "ecr:DescribeRepositories",
    "ecr:ListTagsForResource",
    "ecr:ListImages",
    "ecr:BatchCheckLayerAvailability",
    "ecr:GetRepositoryPolicy",
    "ecr:GetLifecyclePolicy",
)
READ_POLICY_DESCRIPTION = (
    "Provides Container Registry Agent with read-only access to Amazon EC2 Container Registry repositories"
)

# IAM quotas (characters, whitespace not counted).
INLINE_QUOTA = {"user": 2048, "role": 10240}
MANAGED_POLICY_QUOTA = 6144
TRUST_POLICY_QUOTA = 2048
MANAGED_POLICIES_PER_IDENTITY = 10  # default attached-policies quota for a role or user
MAX_POLICY_VERSIONS = 5


class LayoutError(ValueError):
    """The desired documents cannot fit IAM's quotas."""


def policy_size(document: dict[str, Any] | list[Any]) -> int:
    """Characters IAM counts against a quota: the JSON with all whitespace removed."""
    return len(re.sub(r"\s+", "", json.dumps(document, separators=(",", ":"))))


def sid_for(policy_name: str, account_id: str) -> str:
    # Sids are alphanumeric: a custom policy name may hold characters a Sid may not.
    return re.sub(r"[^A-Za-z0-9]", "", policy_name) + account_id


def read_only_policy() -> dict[str, Any]:
    """AmazonEC2ContainerRegistryReadOnlyForSnyk: exactly the 11 read actions, on every repository."""
    return {
        "Version": VERSION,
        "Statement": [{"Effect": "Allow", "Action": list(READ_POLICY_ACTIONS), "Resource": "*"}],
    }


def agent_role_trust_policy() -> dict[str, Any]:
    """Trust of an agent role: EC2 instances (through the instance profile) may assume it."""
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ec2.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }


# --- where a role agent runs: whom its role trusts ---------------------------------------------------
# Shapes from AWS's guides: ECS task roles (confused-deputy conditions), EKS IRSA (the cluster's IAM
# OIDC provider) and EKS Pod Identity (the documented Sid, AssumeRole and TagSession, and the session
# tags Pod Identity sets, naming the cluster, namespace and service account).

ECS_TASKS_PRINCIPAL = "ecs-tasks.amazonaws.com"
POD_IDENTITY_PRINCIPAL = "pods.eks.amazonaws.com"
POD_IDENTITY_SID = "AllowEksAuthToAssumeRoleForPodIdentity"
POD_IDENTITY_ACTIONS = ["sts:AssumeRole", "sts:TagSession"]
IRSA_AUDIENCE = "sts.amazonaws.com"
WEB_IDENTITY_ACTION = "sts:AssumeRoleWithWebIdentity"


def ecs_task_trust_policy(account_id: str, cluster_arn: str = "") -> dict[str, Any]:
    """Trust of an ECS task role: ECS tasks of this account only (aws:SourceAccount) and, when the
    cluster is known, of its region and account (aws:SourceArn as AWS's task-role guide writes it)."""
    condition: dict[str, Any] = {"StringEquals": {"aws:SourceAccount": account_id}}
    if cluster_arn:
        region = cluster_arn.split(":")[3]
        condition["ArnLike"] = {"aws:SourceArn": f"arn:aws:ecs:{region}:{account_id}:*"}
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": ECS_TASKS_PRINCIPAL},
                "Action": "sts:AssumeRole",
                "Condition": condition,
            }
        ],
    }


def oidc_provider_id(issuer: str) -> str:
    """IAM names an OIDC provider, and its condition keys, by the issuer URL without https://."""
    return issuer.removeprefix("https://")


def oidc_provider_arn(account_id: str, issuer: str) -> str:
    return f"arn:aws:iam::{account_id}:oidc-provider/{oidc_provider_id(issuer)}"


def service_account_subject(namespace: str, service_account: str) -> str:
    return f"system:serviceaccount:{namespace}:{service_account}"


def irsa_trust_policy(account_id: str, issuer: str, namespace: str, service_account: str) -> dict[str, Any]:
    """Trust of an IRSA role: tokens of the cluster's OIDC provider, for exactly one service account
    (sub) and meant for STS (aud)."""
    provider = oidc_provider_id(issuer)
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": oidc_provider_arn(account_id, issuer)},
                "Action": WEB_IDENTITY_ACTION,
                "Condition": {
                    "StringEquals": {
                        f"{provider}:sub": service_account_subject(namespace, service_account),
                        f"{provider}:aud": IRSA_AUDIENCE,
                    }
                },
            }
        ],
    }


def pod_identity_trust_policy(cluster_arn: str, namespace: str, service_account: str) -> dict[str, Any]:
    """Trust of a Pod Identity role: the EKS Auth service, with TagSession (it tags the session), for
    pods of this cluster, namespace and service account only."""
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": POD_IDENTITY_SID,
                "Effect": "Allow",
                "Principal": {"Service": POD_IDENTITY_PRINCIPAL},
                "Action": list(POD_IDENTITY_ACTIONS),
                "Condition": {
                    "StringEquals": {
                        "aws:RequestTag/eks-cluster-arn": cluster_arn,
                        "aws:RequestTag/kubernetes-namespace": namespace,
                        "aws:RequestTag/kubernetes-service-account": service_account,
                    }
                },
            }
        ],
    }


@dataclass(frozen=True)
class Runtime:
    """Where a role agent runs, as plain values (the inventory's AgentIdentity fields)."""

    name: str = "ec2"
    account_id: str = ""
    cluster_arn: str = ""
    oidc_issuer: str = ""
    namespace: str = ""
    service_account: str = ""


def agent_trust_policy(runtime: Runtime) -> dict[str, Any]:
    """The trust of a role agent for its runtime."""
    if runtime.name == "ecs":
        return ecs_task_trust_policy(runtime.account_id, runtime.cluster_arn)
    if runtime.name == "eks-irsa":
        return irsa_trust_policy(
            runtime.account_id, runtime.oidc_issuer, runtime.namespace, runtime.service_account
        )
    if runtime.name == "eks-pod-identity":
        return pod_identity_trust_policy(runtime.cluster_arn, runtime.namespace, runtime.service_account)
    return agent_role_trust_policy()


def service_role_trust_policy(agent_arn: str, external_ids: list[str]) -> dict[str, Any]:
    """SnykEcrServiceRole's trust: only the agent, only with one of the ExternalIds.

    One id is written as a string (as the guide shows); several (during rotation) as a list.
    """
    if not external_ids:
        raise LayoutError("A service role trust needs at least one ExternalId.")
    ids: str | list[str] = external_ids[0] if len(external_ids) == 1 else list(external_ids)
    document = {
        "Version": VERSION,
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": agent_arn},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"sts:ExternalId": ids}},
            }
        ],
    }
    size = policy_size(document)
    if size > TRUST_POLICY_QUOTA:
        raise LayoutError(
            f"The trust policy would be {size} characters; IAM allows {TRUST_POLICY_QUOTA}. "
            "Use fewer or shorter ExternalIds."
        )
    return document


def _assume_statement(resources: list[str], sid: str | None = None) -> dict[str, Any]:
    statement: dict[str, Any] = {"Effect": "Allow", "Action": "sts:AssumeRole"}
    if sid:
        statement["Sid"] = sid
    statement["Resource"] = resources[0] if len(resources) == 1 else resources
    return statement


def agent_assume_policy_per_account(policy_name: str, role_arns: dict[str, str]) -> dict[str, Any]:
    """The guide's layout: one statement per ECR account (Sid <PolicyName><AccountId>)."""
    return {
        "Version": VERSION,
        "Statement": [
            _assume_statement([arn], sid_for(policy_name, account_id))
            for account_id, arn in sorted(role_arns.items())
        ],
    }


def agent_assume_policy_combined(role_arns: list[str]) -> dict[str, Any]:
    """One statement listing many service-role ARNs."""
    return {"Version": VERSION, "Statement": [_assume_statement(sorted(role_arns))]}


LAYOUT_NONE = "none"
LAYOUT_PER_ACCOUNT = "inline-per-account"
LAYOUT_COMBINED = "inline-combined"
LAYOUT_MANAGED = "managed"
LAYOUT_LABELS = {
    LAYOUT_NONE: "None written",
    LAYOUT_PER_ACCOUNT: "Inline, one statement per account",
    LAYOUT_COMBINED: "Inline, one statement for all accounts",
    LAYOUT_MANAGED: "Managed policies",
}


@dataclass
class AgentPermissions:
    """Desired permissions of an agent: one inline document and/or numbered managed policies."""

    layout: str
    inline: dict[str, Any] | None
    managed: dict[str, dict[str, Any]] = field(default_factory=dict)  # policy name -> document
    note: str = ""
    sizes: dict[str, int] = field(default_factory=dict)
    quota: int = 0

    @property
    def headroom(self) -> float:
        """Fraction of the binding quota still free (inline layouts) or of the last managed policy."""
        if not self.sizes or not self.quota:
            return 1.0
        return 1 - max(self.sizes.values()) / self.quota


def managed_policy_name(policy_name: str, index: int) -> str:
    return f"{policy_name}-{index}"


def agent_permissions(kind: str, policy_name: str, role_arns: dict[str, str]) -> AgentPermissions:
    """Choose the smallest layout that fits IAM's quotas for this agent kind.

    role_arns maps ECR account id -> service role ARN, for every active account of the agent.
    """
    quota = INLINE_QUOTA[kind]
    if not role_arns:
        return AgentPermissions(LAYOUT_NONE, None, note="No active accounts: no assume permissions.")

    per_account = agent_assume_policy_per_account(policy_name, role_arns)
    size = policy_size(per_account)
    if size <= quota:
        return AgentPermissions(LAYOUT_PER_ACCOUNT, per_account, sizes={policy_name: size}, quota=quota)

    combined = agent_assume_policy_combined(list(role_arns.values()))
    combined_size = policy_size(combined)
    if combined_size <= quota:
        return AgentPermissions(
            LAYOUT_COMBINED,
            combined,
            note=(
                f"One statement per account would be {size} characters, over the {kind}'s inline "
                f"quota of {quota}: the agent's inline policy lists all {len(role_arns)} "
                "service-role ARNs in one statement."
            ),
            sizes={policy_name: combined_size},
            quota=quota,
        )

    chunks = _chunk_arns(sorted(role_arns.values()))
    if len(chunks) > MANAGED_POLICIES_PER_IDENTITY:
        raise LayoutError(
            f"{len(role_arns)} accounts need {len(chunks)} managed policies; an IAM {kind} may "
            f"have {MANAGED_POLICIES_PER_IDENTITY} attached. Split the accounts over more agents."
        )
    managed = {
        managed_policy_name(policy_name, i): agent_assume_policy_combined(chunk)
        for i, chunk in enumerate(chunks, start=1)
    }
    return AgentPermissions(
        LAYOUT_MANAGED,
        None,
        managed=managed,
        note=(
            f"{len(role_arns)} accounts do not fit the {kind}'s inline quota of {quota} characters "
            f"even in one statement ({combined_size}): the ARNs are split over {len(managed)} "
            f"customer-managed policies of at most {MANAGED_POLICY_QUOTA} characters each, "
            "attached to the agent."
        ),
        sizes={name: policy_size(doc) for name, doc in managed.items()},
        quota=MANAGED_POLICY_QUOTA,
    )


def _chunk_arns(arns: list[str]) -> list[list[str]]:
    """Greedily fill managed policies up to the managed-policy quota."""
    chunks: list[list[str]] = []
    current: list[str] = []
    for arn in arns:
        candidate = [*current, arn]
        if current and policy_size(agent_assume_policy_combined(candidate)) > MANAGED_POLICY_QUOTA:
            chunks.append(current)
            current = [arn]
        else:
            current = candidate
    if current:
        chunks.append(current)
    return chunks


def normalize(document: Any) -> Any:
    """Canonical form for semantic comparison: key order, one-element lists vs strings, list order."""
    if isinstance(document, str):
        try:
            parsed = json.loads(document)
        except ValueError:
            return document
        return normalize(parsed) if isinstance(parsed, (dict, list)) else document
    if isinstance(document, dict):
        return {k: normalize(v) for k, v in sorted(document.items())}
    if isinstance(document, list):
        items = [normalize(v) for v in document]
        if len(items) == 1:
            return items[0]
        return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
    return document


def same_document(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    return normalize(a) == normalize(b)

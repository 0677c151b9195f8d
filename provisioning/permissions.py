"""The portal's own least privilege: exactly the IAM actions the engine calls, each only on the
resources it calls it on, scoped to the names the portal manages.

`manage.py iam_policy` prints these; a test runs every engine flow and checks each call it made
against the printed policy (and that every grant was needed), so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from accounts.choices import (
    DEFAULT_AGENT_POLICY_NAME,
    DEFAULT_READ_POLICY_NAME,
    DEFAULT_ROLE_AGENT_NAME,
    DEFAULT_SERVICE_ROLE_NAME,
    DEFAULT_USER_AGENT_NAME,
)
from accounts.models import AgentIdentity, EcrAccount, Organization

from .policies import VERSION

# An ECR account's service role: created, trusted, adopted, and on removal emptied and deleted.
SERVICE_ROLE_ACTIONS = [
    "iam:GetRole",
    "iam:CreateRole",
    "iam:TagRole",
    "iam:UpdateAssumeRolePolicy",
    "iam:DeleteRole",
    "iam:ListAttachedRolePolicies",
    "iam:DetachRolePolicy",
    "iam:ListRolePolicies",
    "iam:GetRolePolicy",  # the audit reads every inline policy of a service role
    "iam:DeleteRolePolicy",
]
# A role agent: created with its EC2 trust, never deleted; its assume permissions are written here.
AGENT_ROLE_ACTIONS = [
    "iam:GetRole",
    "iam:CreateRole",
    "iam:TagRole",
    "iam:UpdateAssumeRolePolicy",
    "iam:ListAttachedRolePolicies",
    "iam:DetachRolePolicy",
    "iam:ListRolePolicies",
    "iam:GetRolePolicy",
    "iam:PutRolePolicy",
    "iam:DeleteRolePolicy",
]
AGENT_USER_ACTIONS = [
    "iam:GetUser",
    "iam:CreateUser",
    "iam:TagUser",
    "iam:ListAttachedUserPolicies",
    "iam:DetachUserPolicy",
    "iam:GetUserPolicy",
    "iam:ListUserPolicies",  # the audit reads every inline policy of a user agent
    "iam:PutUserPolicy",
    "iam:DeleteUserPolicy",
    "iam:ListAccessKeys",
    "iam:CreateAccessKey",
]
# Attaching is granted only for the portal's own policies (iam:PolicyARN): never AdministratorAccess.
ATTACH_READ_POLICY = ["iam:AttachRolePolicy"]
ATTACH_AGENT_POLICIES = ["iam:AttachRolePolicy", "iam:AttachUserPolicy"]
POLICY_ACTIONS = [
    "iam:GetPolicy",
    "iam:GetPolicyVersion",
    "iam:ListPolicyVersions",
    "iam:CreatePolicy",
    "iam:TagPolicy",
    "iam:CreatePolicyVersion",
    "iam:DeletePolicyVersion",
    "iam:DeletePolicy",
]
INSTANCE_PROFILE_ACTIONS = [
    "iam:GetInstanceProfile",
    "iam:CreateInstanceProfile",
    "iam:AddRoleToInstanceProfile",
    "iam:RemoveRoleFromInstanceProfile",  # an agent moved off EC2 leaves its profile
]
# IRSA: the cluster's OIDC provider is read, and created only when the operator gave its thumbprint.
OIDC_PROVIDER_ACTIONS = [
    "iam:GetOpenIDConnectProvider",
    "iam:CreateOpenIDConnectProvider",
    "iam:TagOpenIDConnectProvider",
]
# EKS Pod Identity: the association of the agent's service account, on the agent's clusters only.
CLUSTER_ACTIONS = ["eks:ListPodIdentityAssociations", "eks:CreatePodIdentityAssociation", "eks:TagResource"]
ASSOCIATION_ACTIONS = [
    "eks:DescribePodIdentityAssociation",
    "eks:UpdatePodIdentityAssociation",
    "eks:DeletePodIdentityAssociation",
]
# Adding a role to an instance profile requires passing that role.
PASS_ROLE = ["iam:PassRole"]
# Permissions checked by IAM inside another call, never called themselves.
IMPLIED_PERMISSIONS = {
    "iam:PassRole": "iam:AddRoleToInstanceProfile and eks:Create/UpdatePodIdentityAssociation pass the "
    "agent role",
    "iam:TagUser": "iam:CreateUser with Tags",
    "iam:TagOpenIDConnectProvider": "iam:CreateOpenIDConnectProvider with Tags",
    "eks:TagResource": "eks:CreatePodIdentityAssociation with tags",
}
# One call answers an ECR account's role and policy with every document (live.read_account); IAM
# grants it only on "*": it reads every role and local policy of the account, and changes nothing.
ACCOUNT_READ_ACTIONS = ["iam:GetAccountAuthorizationDetails"]
STS_ACTIONS = ["sts:GetCallerIdentity", "sts:AssumeRole"]
# Discovery, in the management account (or a delegated administrator's): reads only. Organizations
# grants these on "*" (DescribeOrganization, ListRoots and ListAccounts have no resource type).
ORGANIZATION_ACTIONS = [
    "organizations:DescribeOrganization",
    "organizations:ListAccounts",
    "organizations:ListChildren",
    "organizations:ListOrganizationalUnitsForParent",
    "organizations:ListRoots",
    "organizations:ListTagsForResource",
]

ENGINE_ACTIONS = frozenset(
    SERVICE_ROLE_ACTIONS
    + AGENT_ROLE_ACTIONS
    + AGENT_USER_ACTIONS
    + ATTACH_AGENT_POLICIES
    + POLICY_ACTIONS
    + INSTANCE_PROFILE_ACTIONS
    + OIDC_PROVIDER_ACTIONS
    + CLUSTER_ACTIONS
    + ASSOCIATION_ACTIONS
    + ACCOUNT_READ_ACTIONS
    + STS_ACTIONS
    + ORGANIZATION_ACTIONS
)


def managed_names() -> dict[str, set[str]]:
    """Names the portal manages, by what it does with them: the guide's defaults plus every custom
    name in the inventory."""

    names: dict[str, set[str]] = {
        "service_roles": {DEFAULT_SERVICE_ROLE_NAME},
        "agent_roles": {DEFAULT_ROLE_AGENT_NAME},
        "agent_users": {DEFAULT_USER_AGENT_NAME},
        "read_policies": {DEFAULT_READ_POLICY_NAME},
        "agent_policies": {f"{DEFAULT_AGENT_POLICY_NAME}-*"},  # the managed layout's `<name>-<n>`
        "management_roles": set(),
        "oidc_providers": set(),  # issuer host/path of IRSA agents
        "clusters": set(),  # EKS cluster ARNs of agents whose service account may have an association
    }
    for kind, iam_name, policy_name, mgmt, issuer, cluster in AgentIdentity.objects.values_list(
        "kind", "iam_name", "policy_name", "management_role_arn", "oidc_issuer", "cluster_arn"
    ):
        names["agent_roles" if kind == "role" else "agent_users"].add(iam_name)
        if issuer:
            names["oidc_providers"].add(issuer.removeprefix("https://"))
        if cluster.startswith("arn:aws:eks:"):
            names["clusters"].add(cluster)
        names["agent_policies"].add(f"{policy_name}-*")
        if mgmt:
            names["management_roles"].add(mgmt.split(":role/", 1)[1])
    for mgmt in Organization.objects.exclude(management_role_arn="").values_list(
        "management_role_arn", flat=True
    ):
        names["management_roles"].add(mgmt.split(":role/", 1)[1])
    for role, policy, mgmt in EcrAccount.objects.values_list(
        "service_role_name", "read_policy_name", "management_role_arn"
    ):
        names["service_roles"].add(role)
        names["read_policies"].add(policy)
        if mgmt:
            names["management_roles"].add(mgmt.split(":role/", 1)[1])
    return names


def _arns(kind: str, names: set[str]) -> list[str]:
    return sorted(f"arn:aws:iam::*:{kind}/{name}" for name in names)


def management_policy(names: dict[str, set[str]] | None = None) -> dict[str, Any]:
    """What the portal needs inside one account (the management role's, or the base identity's)."""
    names = names or managed_names()
    service_roles = _arns("role", names["service_roles"])
    agent_roles = _arns("role", names["agent_roles"])
    agent_users = _arns("user", names["agent_users"])
    read_policies = _arns("policy", names["read_policies"])
    agent_policies = _arns("policy", names["agent_policies"])
    return {
        "Version": VERSION,
        "Statement": [
            _statement("ServiceRoles", SERVICE_ROLE_ACTIONS, service_roles),
            _statement("AttachReadPolicy", ATTACH_READ_POLICY, service_roles, policy_arns=read_policies),
            _statement("AgentRoles", AGENT_ROLE_ACTIONS, agent_roles),
            _statement("AgentUsers", AGENT_USER_ACTIONS, agent_users),
            _statement(
                "AttachAgentPolicies",
                ATTACH_AGENT_POLICIES,
                agent_roles + agent_users,
                policy_arns=agent_policies,
            ),
            _statement("Policies", POLICY_ACTIONS, read_policies + agent_policies),
            _statement(
                "InstanceProfiles", INSTANCE_PROFILE_ACTIONS, _arns("instance-profile", names["agent_roles"])
            ),
            _statement("PassAgentRole", PASS_ROLE, agent_roles),
            *_runtime_statements(names),
            _statement("ReadAccountAtOnce", ACCOUNT_READ_ACTIONS, "*"),
            _statement("WhoAmI", ["sts:GetCallerIdentity"], "*"),
        ],
    }


def _runtime_statements(names: dict[str, set[str]]) -> list[dict[str, Any]]:
    """Only when an agent runs on EKS: its OIDC provider (IRSA) and its clusters' associations."""
    statements = []
    if names.get("oidc_providers"):
        statements.append(
            _statement(
                "OidcProviders", OIDC_PROVIDER_ACTIONS, _arns("oidc-provider", names["oidc_providers"])
            )
        )
    clusters = sorted(names.get("clusters", ()))
    if clusters:
        associations = [f"{arn.replace(':cluster/', ':podidentityassociation/', 1)}/*" for arn in clusters]
        statements.append(_statement("PodIdentityClusters", CLUSTER_ACTIONS, clusters))
        statements.append(_statement("PodIdentityAssociations", ASSOCIATION_ACTIONS, associations))
    return statements


def _statement(
    sid: str, actions: list[str], resources: list[str] | str, *, policy_arns: list[str] | None = None
) -> dict[str, Any]:
    statement: dict[str, Any] = {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources}
    if policy_arns is not None:
        statement["Condition"] = {"ArnLike": {"iam:PolicyARN": policy_arns}}
    return statement


def base_policy(names: dict[str, set[str]] | None = None) -> dict[str, Any]:
    """The portal's own identity: assume the management roles, or act directly where there is none."""
    names = names or managed_names()
    management = sorted(names["management_roles"]) or ["PortalManagement"]
    statements = [_statement("AssumeManagementRoles", ["sts:AssumeRole"], _arns("role", set(management)))]
    statements.extend(management_policy(names)["Statement"])
    return {"Version": VERSION, "Statement": statements}


def cloudformation_template(names: dict[str, set[str]] | None = None) -> dict[str, Any]:
    """A template creating the management role in an account, trusting the portal with an ExternalId."""
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "Management role the ECR Broker Portal assumes to set up Snyk's brokered ECR access.",
        "Parameters": {
            "PortalPrincipalArn": {"Type": "String", "Description": "ARN of the portal's base role or user."},
            "ExternalId": {"Type": "String", "MinLength": 2, "MaxLength": 1224},
            "RoleName": {"Type": "String", "Default": "PortalManagement"},
        },
        "Resources": {
            "ManagementRole": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "RoleName": {"Ref": "RoleName"},
                    "MaxSessionDuration": 3600,
                    "AssumeRolePolicyDocument": {
                        "Version": VERSION,
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Principal": {"AWS": {"Ref": "PortalPrincipalArn"}},
                                "Action": "sts:AssumeRole",
                                "Condition": {"StringEquals": {"sts:ExternalId": {"Ref": "ExternalId"}}},
                            }
                        ],
                    },
                    "Policies": [
                        {
                            "PolicyName": "EcrBrokerPortalManagement",
                            "PolicyDocument": management_policy(names),
                        }
                    ],
                },
            }
        },
        "Outputs": {"RoleArn": {"Value": {"Fn::GetAtt": ["ManagementRole", "Arn"]}}},
    }


def base_cloudformation_template(names: dict[str, set[str]] | None = None) -> dict[str, Any]:
    """A template with the base policy as a managed policy, attached to the portal's role when named."""
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "The ECR Broker Portal's own permissions, for the role or user it runs as.",
        "Parameters": {
            "PortalRoleName": {
                "Type": "String",
                "Default": "",
                "Description": "The role the portal runs as (empty: attach the policy yourself).",
            },
        },
        "Conditions": {"AttachToRole": {"Fn::Not": [{"Fn::Equals": [{"Ref": "PortalRoleName"}, ""]}]}},
        "Resources": {
            "BasePolicy": {
                "Type": "AWS::IAM::ManagedPolicy",
                "Properties": {
                    "Description": "Assume the management roles; act directly where an account has none.",
                    "PolicyDocument": base_policy(names),
                    "Roles": {
                        "Fn::If": ["AttachToRole", [{"Ref": "PortalRoleName"}], {"Ref": "AWS::NoValue"}]
                    },
                },
            }
        },
        "Outputs": {"PolicyArn": {"Value": {"Ref": "BasePolicy"}}},
    }


def actions_of(document: dict[str, Any]) -> set[str]:
    return {action for st in document["Statement"] for action in st["Action"]}


def organization_policy(names: dict[str, set[str]] | None = None) -> dict[str, Any]:
    """What the organization's management role needs: Organizations' read-only calls, nothing else."""
    return {"Version": VERSION, "Statement": [_statement("DiscoverOrganization", ORGANIZATION_ACTIONS, "*")]}

"""The portal's own least privilege: exactly the IAM actions the engine calls, scoped to its names.

`manage.py iam_policy` prints these; a test runs every engine flow and compares the calls made
with ENGINE_ACTIONS, so the printed policy and the engine cannot drift apart.
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
from accounts.models import AgentIdentity, EcrAccount

from .policies import VERSION

ROLE_ACTIONS = [
    "iam:GetRole",
    "iam:CreateRole",
    "iam:TagRole",
    "iam:UpdateAssumeRolePolicy",
    "iam:DeleteRole",
    "iam:ListAttachedRolePolicies",
    "iam:AttachRolePolicy",
    "iam:DetachRolePolicy",
    "iam:ListRolePolicies",
    "iam:GetRolePolicy",
    "iam:PutRolePolicy",
    "iam:DeleteRolePolicy",
]
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
]
USER_ACTIONS = [
    "iam:GetUser",
    "iam:CreateUser",
    "iam:TagUser",
    "iam:ListAttachedUserPolicies",
    "iam:AttachUserPolicy",
    "iam:DetachUserPolicy",
    "iam:GetUserPolicy",
    "iam:ListUserPolicies",  # the audit reads every inline policy of a user agent
    "iam:PutUserPolicy",
    "iam:DeleteUserPolicy",
    "iam:ListAccessKeys",
    "iam:CreateAccessKey",
]
# Adding a role to an instance profile requires passing that role.
PASS_ROLE = ["iam:PassRole"]
# Permissions checked by IAM inside another call, never called themselves.
IMPLIED_PERMISSIONS = {
    "iam:PassRole": "iam:AddRoleToInstanceProfile passes the agent role",
    "iam:TagUser": "iam:CreateUser with Tags",
}
STS_ACTIONS = ["sts:GetCallerIdentity", "sts:AssumeRole"]

ENGINE_ACTIONS = frozenset(
    ROLE_ACTIONS + POLICY_ACTIONS + INSTANCE_PROFILE_ACTIONS + USER_ACTIONS + STS_ACTIONS
)


def managed_names() -> dict[str, set[str]]:
    """Names the portal manages: the guide's defaults plus every custom name in the inventory."""

    names = {
        "roles": {DEFAULT_SERVICE_ROLE_NAME, DEFAULT_ROLE_AGENT_NAME},
        "users": {DEFAULT_USER_AGENT_NAME},
        "policies": {DEFAULT_READ_POLICY_NAME, f"{DEFAULT_AGENT_POLICY_NAME}-*"},
        "management_roles": set(),
    }
    for kind, iam_name, policy_name, mgmt in AgentIdentity.objects.values_list(
        "kind", "iam_name", "policy_name", "management_role_arn"
    ):
        names["roles" if kind == "role" else "users"].add(iam_name)
        names["policies"].add(f"{policy_name}-*")
        if mgmt:
            names["management_roles"].add(mgmt.split(":role/", 1)[1])
    for role, policy, mgmt in EcrAccount.objects.values_list(
        "service_role_name", "read_policy_name", "management_role_arn"
    ):
        names["roles"].add(role)
        names["policies"].add(policy)
        if mgmt:
            names["management_roles"].add(mgmt.split(":role/", 1)[1])
    return names


def _arns(kind: str, names: set[str]) -> list[str]:
    return sorted(f"arn:aws:iam::*:{kind}/{name}" for name in names)


def management_policy(names: dict[str, set[str]] | None = None) -> dict[str, Any]:
    """What the portal needs inside one account (the management role's, or the base identity's)."""
    names = names or managed_names()
    agent_roles = names["roles"]
    return {
        "Version": VERSION,
        "Statement": [
            _statement("Roles", ROLE_ACTIONS, _arns("role", agent_roles)),
            _statement("Policies", POLICY_ACTIONS, _arns("policy", names["policies"])),
            _statement("InstanceProfiles", INSTANCE_PROFILE_ACTIONS, _arns("instance-profile", agent_roles)),
            _statement("PassAgentRole", PASS_ROLE, _arns("role", agent_roles)),
            _statement("Users", USER_ACTIONS, _arns("user", names["users"])),
            _statement("WhoAmI", ["sts:GetCallerIdentity"], "*"),
        ],
    }


def _statement(sid: str, actions: list[str], resources: list[str] | str) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources}


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


def actions_of(document: dict[str, Any]) -> set[str]:
    return {action for st in document["Statement"] for action in st["Action"]}

"""The sequential baseline: the boto3 script a user would write instead of using the portal.

It follows the guide's steps one account after another: assume the account's management role,
create the read-only policy, create `SnykEcrServiceRole` trusting the agent with the ExternalId,
attach the policy; then, once at the end, write the agent's `SnykCraAssumeRolePolicy` listing every
service role. It is deliberately generous to itself: no reads before writes (so it is not
idempotent, unlike the portal), and the agent's policy is written once for the whole batch (the
guide's one-statement-per-account layout would need a write per account and stop fitting IAM's
inline quota at about 76 accounts; one statement listing all ARNs fits about 220).

Plain boto3 with the same retry settings as the portal, through the same endpoint (the proxy).
"""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
from botocore.config import Config

READ_POLICY = "AmazonEC2ContainerRegistryReadOnlyForSnyk"
SERVICE_ROLE = "SnykEcrServiceRole"
AGENT_POLICY = "SnykCraAssumeRolePolicy"
ECR_READ_ACTIONS = [
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
]
CONFIG = Config(retries={"mode": "standard", "max_attempts": 8}, connect_timeout=5, read_timeout=30)


def _iam_in(account_id: str, endpoint: str, role: str = "PortalManagement") -> Any:
    sts = boto3.client("sts", endpoint_url=endpoint, config=CONFIG)
    creds = sts.assume_role(RoleArn=f"arn:aws:iam::{account_id}:role/{role}", RoleSessionName="baseline")[
        "Credentials"
    ]
    return boto3.client(
        "iam",
        endpoint_url=endpoint,
        config=CONFIG,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )


def create_agent_role(endpoint: str, agent_account: str, agent_role: str) -> str:
    """The guide's first step (not timed): the agent's role with its EC2 trust."""
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
    iam = _iam_in(agent_account, endpoint)
    iam.create_role(RoleName=agent_role, AssumeRolePolicyDocument=json.dumps(trust))
    return f"arn:aws:iam::{agent_account}:role/{agent_role}"


def onboard_one(endpoint: str, account_id: str, agent_arn: str, external_id: str) -> str:
    iam = _iam_in(account_id, endpoint)
    policy = iam.create_policy(
        PolicyName=READ_POLICY,
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": ECR_READ_ACTIONS, "Resource": "*"}],
            }
        ),
        Description="Provides Container Registry Agent with read-only access to Amazon EC2 Container "
        "Registry repositories",
    )["Policy"]
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": agent_arn},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"sts:ExternalId": external_id}},
            }
        ],
    }
    role = iam.create_role(RoleName=SERVICE_ROLE, AssumeRolePolicyDocument=json.dumps(trust))["Role"]
    iam.attach_role_policy(RoleName=SERVICE_ROLE, PolicyArn=policy["Arn"])
    return role["Arn"]


def onboard(endpoint: str, *, agent_account: str, agent_role: str, account_ids: list[str]) -> dict[str, Any]:
    """Onboard the accounts one after another; returns wall time and the role ARNs."""
    agent_arn = f"arn:aws:iam::{agent_account}:role/{agent_role}"
    started = time.monotonic()
    role_arns = [onboard_one(endpoint, a, agent_arn, f"baseline-{a}") for a in account_ids]
    agent = _iam_in(agent_account, endpoint)
    agent.put_role_policy(
        RoleName=agent_role,
        PolicyName=AGENT_POLICY,
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": role_arns}],
            }
        ),
    )
    return {"seconds": time.monotonic() - started, "role_arns": role_arns}

"""The baselines: the boto3 scripts a user would write instead of using the portal.

Two of them. The sequential script follows the guide's steps one account after another: assume the
account's management role, create the read-only policy, create `SnykEcrServiceRole` trusting the
agent with the ExternalId, attach the policy; then, once at the end, write the agent's
`SnykCraAssumeRolePolicy` listing every service role. It is deliberately generous to itself: no
reads before writes (so it is not idempotent, unlike the portal), and the agent's policy is written
once for the whole batch (the guide's one-statement-per-account layout would need a write per
account and stop fitting IAM's inline quota at about 76 accounts; one statement listing all ARNs
fits about 220, and moto does not hold it to the quota at 1,000).

The 32-thread script is what a skilled user writes when the sequential one is too slow: one boto3
session, a thread pool, and in each thread the account's `AssumeRole`, then an IAM client built from
those credentials for `CreatePolicy`, `CreateRole` (tags in the create call) and `AttachRolePolicy`;
the agent's permissions written once at the end. The connection pool of the shared STS client is
sized to the threads (botocore's default of 10 would queue the 32 threads' `AssumeRole` calls).

`capacity` measures the fake AWS itself: the same four calls in throwaway accounts by 32 concurrent
callers, for a fixed number of accounts; calls per second is what the floor of every scenario is
computed from (bench/criteria.py).

Plain boto3 with the same retry settings as the portal, through the same endpoint (the proxy). The
threaded script and the capacity probe run in a process of their own (`python -m bench.baseline`),
as a user's script would: in the bench's process they would share one interpreter lock with the
proxy and the moto server.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
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
ROLE_TAGS = [{"Key": "managed-by", "Value": "snyk-ecr-onboarding-script"}]
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


def _service_trust(agent_arn: str, external_id: str) -> str:
    return json.dumps(
        {
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
    )


def _create_in(iam: Any, agent_arn: str, external_id: str, *, tags: bool) -> str:
    """The three IAM writes of one account; returns the service role's ARN."""
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
    extra = {"Tags": ROLE_TAGS} if tags else {}
    role = iam.create_role(
        RoleName=SERVICE_ROLE, AssumeRolePolicyDocument=_service_trust(agent_arn, external_id), **extra
    )["Role"]
    iam.attach_role_policy(RoleName=SERVICE_ROLE, PolicyArn=policy["Arn"])
    return role["Arn"]


def onboard_one(endpoint: str, account_id: str, agent_arn: str, external_id: str) -> str:
    return _create_in(_iam_in(account_id, endpoint), agent_arn, external_id, tags=False)


def onboard(endpoint: str, *, agent_account: str, agent_role: str, account_ids: list[str]) -> dict[str, Any]:
    """Onboard the accounts one after another; returns wall time and the role ARNs."""
    agent_arn = f"arn:aws:iam::{agent_account}:role/{agent_role}"
    started = time.monotonic()
    role_arns = [onboard_one(endpoint, a, agent_arn, f"baseline-{a}") for a in account_ids]
    _write_agent_permissions(_iam_in(agent_account, endpoint), agent_role, role_arns)
    return {"seconds": time.monotonic() - started, "role_arns": role_arns}


def _write_agent_permissions(iam: Any, agent_role: str, role_arns: list[str]) -> None:
    iam.put_role_policy(
        RoleName=agent_role,
        PolicyName=AGENT_POLICY,
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": role_arns}],
            }
        ),
    )


class ThreadedScript:
    """The skilled user's script: one session, `threads` threads, clients per account in the threads."""

    def __init__(self, endpoint: str, threads: int = 32):
        self.endpoint = endpoint
        self.threads = threads
        self.session = boto3.Session()
        self.sts = self.session.client(
            "sts", endpoint_url=endpoint, config=CONFIG.merge(Config(max_pool_connections=threads))
        )

    def iam_in(self, account_id: str, role: str = "PortalManagement") -> Any:
        creds = self.sts.assume_role(
            RoleArn=f"arn:aws:iam::{account_id}:role/{role}", RoleSessionName="script"
        )["Credentials"]
        return self.session.client(
            "iam",
            endpoint_url=self.endpoint,
            config=CONFIG,
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
        )

    def onboard(self, *, agent_account: str, agent_role: str, account_ids: list[str]) -> dict[str, Any]:
        agent_arn = f"arn:aws:iam::{agent_account}:role/{agent_role}"

        def one(account_id: str) -> str:
            return _create_in(self.iam_in(account_id), agent_arn, f"script-{account_id}", tags=True)

        started = time.monotonic()
        with ThreadPoolExecutor(self.threads) as pool:
            role_arns = list(pool.map(one, account_ids))
        _write_agent_permissions(self.iam_in(agent_account), agent_role, role_arns)
        return {"seconds": time.monotonic() - started, "role_arns": role_arns, "threads": self.threads}

    def capacity(self, account_ids: list[str]) -> dict[str, Any]:
        """The four onboarding calls per throwaway account, `threads` at a time: calls per second."""
        calls = 0
        lock = threading.Lock()
        agent_arn = "arn:aws:iam::000000000000:role/capacity-probe"

        def one(account_id: str) -> None:
            nonlocal calls
            _create_in(self.iam_in(account_id), agent_arn, "probe", tags=True)
            with lock:
                calls += 4

        started = time.monotonic()
        with ThreadPoolExecutor(self.threads) as pool:
            list(pool.map(one, account_ids))
        seconds = time.monotonic() - started
        return {"calls": calls, "seconds": seconds, "threads": self.threads}


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.baseline {threaded,capacity} ...`: one JSON object on stdout."""
    parser = argparse.ArgumentParser(prog="python -m bench.baseline")
    parser.add_argument("what", choices=("threaded", "capacity"))
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--accounts", required=True, help="comma separated account ids")
    parser.add_argument("--agent-account", default="")
    parser.add_argument("--agent-role", default="")
    args = parser.parse_args(argv)
    script = ThreadedScript(args.endpoint, args.threads)
    ids = args.accounts.split(",")
    if args.what == "capacity":
        result = script.capacity(ids)
    else:
        result = script.onboard(agent_account=args.agent_account, agent_role=args.agent_role, account_ids=ids)
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

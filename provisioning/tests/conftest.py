import pytest

from accounts import services as account_services
from provisioning import aws as aws_module

AGENT_ACCOUNT = "111111111111"
ECR_ACCOUNTS = ["222222222222", "333333333333"]
BASE_ACCOUNT = "123456789012"  # moto's default account for the base credentials


def make_management_role(account_id: str, name: str = "PortalManagement", external_id: str = "") -> str:
    """A role in `account_id` the base identity may assume (moto: created with assumed credentials)."""
    import json

    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{BASE_ACCOUNT}:root"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    # moto lets the base credentials assume any role ARN: the session lands in that account.
    access = aws_module.Access(account_id, f"arn:aws:iam::{account_id}:role/{name}", external_id)
    aws_module.call(access, "iam", "create_role", RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
    return access.role_arn


def create_inventory(account_ids=ECR_ACCOUNTS, *, region: str = "us-east-1"):
    """A role agent in the agent account and draft ECR accounts, each with a management role."""

    agent = account_services.agent_create(
        name="cra",
        kind="role",
        account_id=AGENT_ACCOUNT,
        management_role_arn=make_management_role(AGENT_ACCOUNT),
    )
    accounts = [
        account_services.account_create(
            agent=agent,
            account_id=account_id,
            regions=[region],
            alias=f"team-{i}",
            external_id=f"ext-{account_id}",
            management_role_arn=make_management_role(account_id),
        )
        for i, account_id in enumerate(account_ids)
    ]
    return agent, accounts


@pytest.fixture
def inventory(db, aws):
    return create_inventory()


@pytest.fixture
def moto_endpoint(monkeypatch):
    """A moto server for worker processes; AWS_ENDPOINT_URL points this process and its children at it."""
    from portal.testing import moto_server, purge_broker

    with moto_server() as url:
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        aws_module.sessions.clear()
        purge_broker()
        yield url
        aws_module.sessions.clear()


def iam_in(account_id: str) -> aws_module.Iam:
    return aws_module.Iam(aws_module.Access(account_id, f"arn:aws:iam::{account_id}:role/PortalManagement"))


@pytest.fixture
def snyk_fake(settings):
    """The fake Snyk API on a loopback port (threaded, in this process), with one tenant and its
    Tenant Admin's token; retries back off at once so fault tests stay quick."""
    from portal.snyk_fake import FakeSnyk

    fake = FakeSnyk(page_size=3)
    tenant_id = fake.add_tenant(name="Tests")
    token = "tok-" + tenant_id[:8]
    fake.add_user(token=token, admin_of=tenant_id)
    with fake.serve() as url:
        fake.url, fake.tenant_id, fake.token = url, tenant_id, token
        yield fake

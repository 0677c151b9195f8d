"""Inventory fixtures for the accounts app: saved rows only, nothing sent to AWS."""

import pytest

from accounts import services as account_services
from accounts.choices import Lifecycle
from accounts.models import EcrAccount

TOKEN = "1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b"
AGENT_ACCOUNT = "111111111111"


def management_role(account_id: str) -> str:
    """In moto the base credentials may assume any role ARN: the session lands in that account."""
    return f"arn:aws:iam::{account_id}:role/PortalManagement"


def access(account_id: str):
    from provisioning import aws

    return aws.Access(account_id, management_role(account_id))


@pytest.fixture
def role_agent(db):

    return account_services.agent_create(
        name="cra", kind="role", account_id=AGENT_ACCOUNT, management_role_arn=management_role(AGENT_ACCOUNT)
    )


@pytest.fixture
def user_agent(db):

    return account_services.agent_create(
        name="cra-user",
        kind="user",
        account_id=AGENT_ACCOUNT,
        management_role_arn=management_role(AGENT_ACCOUNT),
    )


@pytest.fixture
def make_account(db, role_agent):
    """A saved draft account with one broker per region and complete broker URLs."""

    def make(account_id="222222222222", *, agent=None, regions=("us-east-1",), **fields):
        values = {
            "alias": "team-a",
            "external_id": f"ext-{account_id}",
            "broker_client_url": "http://broker.internal:8000",
            "cr_agent_url": "http://cra.internal:8081",
            "broker_token": TOKEN,
            "management_role_arn": management_role(account_id),
        }
        values.update(fields)
        return account_services.account_create(
            agent=agent or role_agent, account_id=account_id, regions=list(regions), **values
        )

    return make


def onboarded(account):
    """The account as a successful onboarding leaves it: active, its brokers' files ready."""
    EcrAccount.objects.filter(pk=account.pk).update(status=Lifecycle.ACTIVE)
    account.status = Lifecycle.ACTIVE
    return account


@pytest.fixture
def make_onboarded_account(make_account):
    """make_account, onboarded: for tests of the broker files (a draft's brokers are pending)."""

    def make(*args, **fields):
        return onboarded(make_account(*args, **fields))

    return make


@pytest.fixture
def account(make_account):
    return make_account()


@pytest.fixture
def broker(account):
    return account.brokers.get()


@pytest.fixture(autouse=True)
def _plain_http(settings):
    """The test client speaks http; production settings redirect it to https."""
    settings.SECURE_SSL_REDIRECT = False

"""Inventory fixtures for the accounts app: saved rows only, nothing sent to AWS."""

import pytest

TOKEN = "1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b"


@pytest.fixture
def role_agent(db):
    from provisioning import services

    return services.agent_create(name="cra", kind="role", account_id="111111111111")


@pytest.fixture
def user_agent(db):
    from provisioning import services

    return services.agent_create(name="cra-user", kind="user", account_id="111111111111")


@pytest.fixture
def make_account(db, role_agent):
    """A saved draft account with one broker per region and complete broker URLs."""
    from provisioning import services

    def make(account_id="222222222222", *, agent=None, regions=("us-east-1",), **fields):
        values = {
            "alias": "team-a",
            "external_id": f"ext-{account_id}",
            "broker_client_url": "http://broker.internal:8000",
            "cr_agent_url": "http://cra.internal:8081",
            "broker_token": TOKEN,
        }
        values.update(fields)
        return services.account_create(
            agent=agent or role_agent, account_id=account_id, regions=list(regions), **values
        )

    return make


@pytest.fixture
def account(make_account):
    return make_account()


@pytest.fixture
def broker(account):
    return account.brokers.get()

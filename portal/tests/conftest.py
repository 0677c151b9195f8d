"""Fixtures for the portal's security tests: one of every inventory row, for the URL sweep."""

import pytest

BROKER_TOKEN = "6d1f7a8e-3c2b-4e5f-9a0b-1c2d3e4f5a6b"


@pytest.fixture
def sweep_inventory(db, aws, admin_user):
    """An agent, an account with an ExternalId and a broker, a run with an operation and a log line,
    audit entries, users and groups: every kind of row a URL parameter may name."""
    from django.contrib.auth.models import Group
    from django.contrib.contenttypes.models import ContentType

    from accounts import renderers
    from accounts import services as account_services
    from accounts.models import EcrAccount, Organization
    from portal.api import tokens
    from portal.models import AuditEntry
    from provisioning import services
    from provisioning.choices import OperationStatus
    from provisioning.models import Operation

    from .urlsweep import Inventory

    agent = account_services.agent_create(user=admin_user, name="cra", kind="role", account_id="111111111111")
    account = account_services.account_create(
        user=admin_user,
        agent=agent,
        account_id="222222222222",
        alias="team-a",
        regions=["us-east-1"],
        external_id="ext-sweep-0001",
        broker_client_url="http://broker.internal:8000",
        cr_agent_url="http://cra.internal:8081",
        broker_token=BROKER_TOKEN,
    )
    run = services.account_onboard(account=account, user=admin_user, enqueue=False)
    operation = Operation.objects.create(
        run=run,
        sequence=1,
        account_id=account.account_id,
        action="iam:CreateRole",
        resource_arn=account.service_role_arn,
        status=OperationStatus.SUCCEEDED,
    )
    run.log("sweep fixture")
    organization = Organization.objects.create(name="acme", account_id="123456789012")
    api_token, _ = tokens.api_token_create(user=admin_user, name="sweep")
    from accounts.models import SnykDeployment, SnykTenant

    tenant = SnykTenant.objects.create(
        tenant_id="0d7a9c3e-5b1f-4e8a-9c2d-7f6e5a4b3c21", api_url="https://api.snyk.io", token="sweep-snyk-token",
        app_install_id="i", app_client_id="c", app_client_secret="sweep-client-secret",
    )  # fmt: skip
    deployment = SnykDeployment.objects.create(
        tenant=tenant, agent=agent, ordinal=1, deployment_id="5e2b8f14-9a3c-4d7e-8b6f-1a2c3d4e5f60"
    )
    inventory = Inventory(
        objects={
            "accounts.agentidentity": agent,
            "accounts.ecraccount": account,
            "accounts.externalid": account.external_ids.get(),
            "accounts.brokerinstance": account.brokers.get(),
            "provisioning.run": run,
            "provisioning.operation": operation,
            "provisioning.runlogentry": run.log_entries.get(),
            "portal.auditentry": AuditEntry.objects.first(),
            "auth.user": admin_user,
            "auth.group": Group.objects.get(name="viewer"),
            "portal.apitoken": api_token,
            "accounts.snykdeployment": deployment,
        },
        params={
            "account_id": account.account_id,
            "region": "us-east-1",
            "app_label": "accounts",
            "content_type_id": lambda: ContentType.objects.get_for_model(EcrAccount).pk,
            "url": "no-such-page/",  # the admin's catch-all
            "fmt": lambda: list(renderers.FORMATS),  # every broker file format
            "name": organization.name,  # organizations are named in their URLs
        },
    )
    aws.calls.clear()
    return inventory


@pytest.fixture
def https_client():
    """A test client whose requests arrive as production's do: HTTPS behind the proxy
    (SECURE_SSL_REDIRECT is on whenever DEBUG is off, so plain-HTTP requests only get a 301)."""
    from django.test import Client

    return Client(headers={"X-Forwarded-Proto": "https"})

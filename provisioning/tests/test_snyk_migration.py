"""Switching an existing classic agent to universal migrates its accounts: `agent_set --broker-mode
universal` starts the same Snyk sync the agent page starts, and each account's classic brokers are
marked retired once that account's integration exists (never before); a retired classic broker's
files are no longer offered. Switching back offers them again."""

import io

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from accounts import renderers
from accounts import services as account_services
from accounts.models import AgentIdentity, BrokerInstance, SnykConnection
from portal.models import AuditEntry
from provisioning.choices import RunKind, RunStatus
from provisioning.models import Run

from .test_snyk_flows import onboard, tenant, universal_inventory  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("tenant")


def cli(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def classic_agent_with_onboarded_accounts(account_ids, regions=("eu-west-1",)):
    """A universal inventory put back to classic before onboarding: brokers deployed from files."""
    agent, accounts = universal_inventory(account_ids, regions=regions)
    AgentIdentity.objects.filter(pk=agent.pk).update(broker_mode="classic")
    agent.refresh_from_db()
    for account in accounts:
        onboard(account)
    return agent, accounts


def classic_file(broker):
    return account_services.broker_file_download(broker=broker, fmt="env")


def test_agent_set_universal_starts_the_sync_and_retires_classic_brokers_once_integrated(aws, snyk_fake):
    agent, (account,) = classic_agent_with_onboarded_accounts(
        ["222222222222"], regions=("eu-west-1", "us-east-1")
    )
    brokers = list(account.brokers.all())
    assert all(classic_file(b).content for b in brokers)  # classic: its files are offered
    assert snyk_fake.connections == {}

    out = cli("agent_set", agent.name, "--broker-mode", "universal", "--inline")
    run = Run.objects.latest("pk")
    assert run.kind == RunKind.RECONCILE and run.status == RunStatus.SUCCEEDED, run.explanation
    assert list(run.accounts.all()) == [account] and "succeeded" in out
    assert len(snyk_fake.integrations) == 2
    for broker in BrokerInstance.objects.filter(account=account):
        assert broker.classic_retired_at is not None
        assert SnykConnection.objects.get(broker=broker).integration_id
        with pytest.raises(renderers.BrokerFileError, match="Universal Broker"):
            classic_file(broker)
    retired = AuditEntry.objects.filter(action="broker.classic_retired")
    assert sorted(e.details["region"] for e in retired) == ["eu-west-1", "us-east-1"]

    # broker_env refuses it too; a re-run retires nothing twice.
    with pytest.raises(CommandError, match="Universal Broker"):
        cli("broker_env", account.account_id, "--region", "eu-west-1")
    cli("snyk_sync", "--agent", agent.name, "--inline")
    assert AuditEntry.objects.filter(action="broker.classic_retired").count() == 2


def test_classic_brokers_stay_offered_while_the_integration_is_missing(aws, snyk_fake, settings):
    settings.SNYK_RETRIES = 0
    agent, (account,) = classic_agent_with_onboarded_accounts(["222222222222"])
    snyk_fake.faults.append((f"POST /rest/tenants/{snyk_fake.tenant_id}/brokers/connections/", 500, ""))
    with pytest.raises(CommandError, match="failed"):
        cli("agent_set", agent.name, "--broker-mode", "universal", "--inline")
    run = Run.objects.latest("pk")
    assert run.status == RunStatus.FAILED and "snyk:CreateIntegration" in run.explanation
    broker = account.brokers.get()
    assert snyk_fake.connections and not snyk_fake.integrations  # the connection exists, no tunnel yet
    assert broker.classic_retired_at is None
    assert classic_file(broker).content  # the classic broker still serves the account

    cli("snyk_sync", "--agent", agent.name, "--inline")  # the integration is made: now it retires
    broker.refresh_from_db()
    assert broker.classic_retired_at is not None


def test_the_page_and_the_command_start_the_same_migration(client, admin_user, aws, snyk_fake, settings):
    settings.SECURE_SSL_REDIRECT = False
    agent, (account,) = classic_agent_with_onboarded_accounts(["222222222222"])
    client.force_login(admin_user)
    response = client.post(
        reverse("provisioning:agent_broker_mode", args=[agent.pk]), {"broker_mode": "universal"}
    )
    run = Run.objects.latest("pk")
    assert response["Location"] == run.get_absolute_url()
    from .test_engine import run_inline

    assert run_inline(run).status == RunStatus.SUCCEEDED
    broker = account.brokers.get()
    assert broker.classic_retired_at is not None
    page = client.get(account.get_absolute_url()).content.decode()
    assert reverse("accounts:broker_download", args=[broker.pk, "env"]) not in page
    assert "Universal Broker connection" in page


def test_switching_back_to_classic_offers_the_classic_files_again(aws, snyk_fake):
    agent, (account,) = classic_agent_with_onboarded_accounts(["222222222222"])
    cli("agent_set", agent.name, "--broker-mode", "universal", "--inline")
    out = cli("agent_set", agent.name, "--broker-mode", "classic")
    assert "classic" in out
    broker = account.brokers.get()
    assert broker.classic_retired_at is None and classic_file(broker).content


def test_agent_set_without_onboarded_accounts_starts_no_run(db, aws):
    agent, _ = universal_inventory([])
    AgentIdentity.objects.filter(pk=agent.pk).update(broker_mode="classic")
    runs = Run.objects.count()
    out = cli("agent_set", agent.name, "--broker-mode", "universal")
    assert "now in universal mode" in out and Run.objects.count() == runs

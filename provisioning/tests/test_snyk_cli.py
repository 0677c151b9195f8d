"""The Snyk side on the command line: broker mode per agent, the Snyk connection, snyk_sync."""

import io

import pytest
from django.core.management import CommandError, call_command

from accounts.choices import BrokerMode
from accounts.models import AgentIdentity
from portal.models import AuditEntry

from .conftest import AGENT_ACCOUNT, make_management_role


def cli(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def exit_code(*args) -> int:
    with pytest.raises(CommandError) as caught:
        cli(*args)
    return caught.value.returncode


def test_agents_are_classic_unless_told_otherwise(db, aws):
    role = make_management_role(AGENT_ACCOUNT)
    cli("agent_add", "cra", "--kind", "role", "--account-id", AGENT_ACCOUNT, "--management-role-arn", role,
        "--inline")  # fmt: skip
    cli("agent_add", "ub", "--kind", "role", "--account-id", AGENT_ACCOUNT, "--iam-name", "UbCra",
        "--management-role-arn", role, "--broker-mode", "universal", "--inline")  # fmt: skip
    modes = dict(AgentIdentity.objects.values_list("name", "broker_mode"))
    assert modes == {"cra": BrokerMode.CLASSIC, "ub": BrokerMode.UNIVERSAL}


def test_agent_set_switches_the_mode_once_and_audits_it(db):
    AgentIdentity.objects.create(name="cra", kind="role", account_id=AGENT_ACCOUNT, iam_name="SnykCraEc2Role")
    out = cli("agent_set", "cra", "--broker-mode", "universal")
    assert "now in universal mode" in out and "no account onboarded yet" in out
    assert AgentIdentity.objects.get(name="cra").is_universal
    assert "already in universal mode" in cli("agent_set", "cra", "--broker-mode", "universal")
    entries = AuditEntry.objects.filter(action="agent.broker_mode")
    assert [(e.details["before"], e.details["after"]) for e in entries] == [("classic", "universal")]


def test_agent_set_refuses_unknown_agents_and_modes(db):
    assert exit_code("agent_set", "nobody", "--broker-mode", "universal") == 2
    AgentIdentity.objects.create(name="cra", kind="role", account_id=AGENT_ACCOUNT, iam_name="SnykCraEc2Role")
    with pytest.raises(CommandError):  # argparse refuses the choice
        cli("agent_set", "cra", "--broker-mode", "hybrid")
    assert AgentIdentity.objects.get(name="cra").broker_mode == BrokerMode.CLASSIC


def test_snyk_connect_tests_the_token_then_stores_it_encrypted(db, snyk_fake, tmp_path):
    from django.db import connection

    from accounts.models import SnykTenant

    token_file = tmp_path / "token"
    token_file.write_text(snyk_fake.token + "\n")
    out = cli("snyk_connect", "--tenant-id", snyk_fake.tenant_id, "--token-file", str(token_file),
              "--api-url", snyk_fake.url)  # fmt: skip
    assert "as Tenant Admin (Tenant Admin)" in out and snyk_fake.token not in out
    tenant = SnykTenant.objects.get()
    assert tenant.token == snyk_fake.token and tenant.verified_at is not None
    with connection.cursor() as cursor:
        cursor.execute("SELECT token FROM accounts_snyktenant")
        (stored,) = cursor.fetchone()
    assert snyk_fake.token not in stored
    entry = AuditEntry.objects.get(action="snyk.connect")
    assert snyk_fake.token not in str(entry.details)


def test_snyk_connect_refuses_bad_input_without_calling_snyk(db, snyk_fake, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(snyk_fake.token)
    assert exit_code("snyk_connect", "--tenant-id", "not-a-uuid", "--token-file", str(token_file),
                     "--api-url", snyk_fake.url) == 2  # fmt: skip
    assert exit_code("snyk_connect", "--tenant-id", snyk_fake.tenant_id, "--token-file", str(tmp_path / "none"),
                     "--api-url", snyk_fake.url) == 2  # fmt: skip
    assert exit_code("snyk_connect", "--tenant-id", snyk_fake.tenant_id, "--token-file", str(token_file),
                     "--api-url", "ftp://x") == 2  # fmt: skip
    assert snyk_fake.log == []


def test_snyk_connect_refuses_a_token_that_is_not_a_tenant_admins(db, snyk_fake, tmp_path):
    from accounts.models import SnykTenant

    snyk_fake.add_user(token="tok-member")
    token_file = tmp_path / "token"
    token_file.write_text("tok-member")
    assert exit_code("snyk_connect", "--tenant-id", snyk_fake.tenant_id, "--token-file", str(token_file),
                     "--api-url", snyk_fake.url) == 1  # fmt: skip
    assert not SnykTenant.objects.exists()


def test_switching_then_snyk_sync_inline_then_plan_shows_nothing(db, aws, snyk_fake):
    from provisioning import snyk_services

    from .test_snyk_flows import onboard, universal_inventory

    snyk_services.snyk_connect(
        tenant_id=snyk_fake.tenant_id, token=snyk_fake.token, api_url=snyk_fake.url,
        app_org_id=snyk_fake.org_of(snyk_fake.tenant_id), group_id=snyk_fake.group_of(snyk_fake.tenant_id),
    )  # fmt: skip
    agent, (account,) = universal_inventory(["222222222222"])
    AgentIdentity.objects.filter(pk=agent.pk).update(broker_mode="classic")
    onboard(account)
    assert exit_code("snyk_sync", "--agent", "ub", "--plan") == 2  # classic: nothing to sync
    # agent_set starts the sync itself (the page's switch does the same).
    out = cli("agent_set", "ub", "--broker-mode", "universal", "--inline")
    assert "[succeeded] snyk:CreateConnection" in out and "[succeeded] snyk:CreateIntegration" in out
    assert cli("snyk_sync", "--plan").strip().endswith("No changes: AWS already matches.")

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
    assert "now in universal mode" in out and "snyk_sync --agent cra" in out
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

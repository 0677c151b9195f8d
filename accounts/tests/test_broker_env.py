"""`manage.py broker_env`: prints the file, records the download, exits 2 naming the problem."""

import io

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts.choices import BrokerStatus
from portal.models import AuditEntry

from .conftest import TOKEN


@pytest.fixture
def make_account(make_onboarded_account):
    """Broker files exist only for onboarded accounts."""
    return make_onboarded_account


def run(*args):
    out = io.StringIO()
    call_command("broker_env", *args, stdout=out)
    return out.getvalue()


def test_prints_the_env_and_records_the_download(account):
    out = run(account.account_id)
    assert f"BROKER_TOKEN={TOKEN}\n" in out
    assert "CR_ROLE_ARN=arn:aws:iam::222222222222:role/SnykEcrServiceRole\n" in out
    entry = AuditEntry.objects.get(action="broker.download")
    assert entry.account_id == account.account_id
    assert entry.user_name == "system"
    assert entry.details["format"] == "env"
    assert TOKEN not in str(entry.details)


def test_helm_and_docker_formats(account):
    assert yaml.safe_load(run(account.account_id, "--format", "helm"))["crType"] == "ecr"
    assert "docker run" in run(account.account_id, "--format", "docker")


def test_a_host_script_records_a_download_for_every_broker_it_holds(make_account):
    """Rotation reads these entries: each broker of the host took a file holding its ExternalId."""
    first = make_account("222222222222", broker_client_url="http://broker-a:8000")
    make_account("333333333333", regions=("eu-west-1",), broker_client_url="http://broker-b:8001")
    make_account("555555555555", broker_client_url="http://broker-c:8000", cr_agent_url="http://cra-2:8081")
    script = run(first.account_id, "--format", "docker")
    assert "--name broker-a" in script and "--name broker-b" in script and "broker-c" not in script
    entries = AuditEntry.objects.filter(action="broker.download").order_by("account_id")
    assert [(e.account_id, e.details["region"], e.details["external_id"]) for e in entries] == [
        ("222222222222", "us-east-1", "ext-222222222222"),
        ("333333333333", "eu-west-1", "ext-333333333333"),
    ]
    assert {e.details["filename"] for e in entries} == {"cra-cra.internal-8081-docker-run.sh"}
    assert TOKEN not in str([e.details for e in entries])


def test_a_helm_file_for_a_stored_numeric_external_id_exits_2(account):
    account.external_ids.update(value="12345678")  # saved before the rule; the chart writes it unquoted
    assert "rotate the account's ExternalId" in _fails(account.account_id, "--format", "helm")
    assert "CR_EXTERNAL_ID=12345678\n" in run(account.account_id)


def test_region_chooses_among_several_brokers(make_account):
    account = make_account(regions=("us-east-1", "eu-west-1"))
    assert "CR_REGION=eu-west-1\n" in run(account.account_id, "--region", "eu-west-1")


def _fails(*args) -> str:
    with pytest.raises(CommandError) as info:
        run(*args)
    assert info.value.returncode == 2
    assert not AuditEntry.objects.filter(action="broker.download").exists()
    return str(info.value)


def test_unknown_account_exits_2(db):
    assert "no ECR account '999999999999'" in _fails("999999999999")


def test_unknown_region_exits_2(account):
    message = _fails(account.account_id, "--region", "eu-west-3")
    assert "no broker in 'eu-west-3'" in message and "us-east-1" in message


def test_ambiguous_region_exits_2(make_account):
    account = make_account(regions=("us-east-1", "eu-west-1"))
    assert "choose one with --region" in _fails(account.account_id)


def test_missing_urls_exit_2_instead_of_placeholders(make_account):
    account = make_account(broker_client_url="", cr_agent_url="")
    assert "BROKER_CLIENT_URL is not set" in _fails(account.account_id)


def test_retired_broker_exits_2(account):
    account.brokers.update(status=BrokerStatus.RETIRED)
    assert "retired" in _fails(account.account_id)


def test_bad_format_exits_2(account):
    with pytest.raises(CommandError) as info:
        run(account.account_id, "--format", "xml")
    assert "invalid choice" in str(info.value)

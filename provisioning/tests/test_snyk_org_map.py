"""The operator maps an ECR account (one registry: account and region) to an existing Snyk Org:
`snyk_org_map` and the account page's form check the Org with Snyk (it exists, is in the tenant's
group, holds no other ECR integration) and save nothing on a bad id; the plan then integrates into
that Org and never creates one."""

import io

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from accounts.models import BrokerInstance, SnykConnection
from portal.models import AuditEntry

from .test_snyk_flows import onboard, tenant, universal_inventory  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("tenant")

ACCOUNT = "222222222222"


def cli(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def refused(*args) -> str:
    with pytest.raises(CommandError) as caught:
        cli(*args)
    assert caught.value.returncode == 2
    return str(caught.value)


def test_a_mapped_account_is_integrated_into_its_org_and_no_org_is_created(aws, snyk_fake):
    _, (account,) = universal_inventory([ACCOUNT])
    org_id = snyk_fake.add_org("Payments scans", group_id=snyk_fake.group_of(snyk_fake.tenant_id))
    out = cli("snyk_org_map", ACCOUNT, "--org-id", org_id)
    assert "Payments scans" in out
    assert BrokerInstance.objects.get(account=account).snyk_org_id == org_id
    orgs_before = set(snyk_fake.orgs)

    run = onboard(account)
    done = list(run.operations.values_list("action", flat=True))
    assert "snyk:CreateOrg" not in done and "snyk:CreateIntegration" in done
    assert set(snyk_fake.orgs) == orgs_before
    row = SnykConnection.objects.get()
    assert (row.org_id, row.org_mapped) == (org_id, True)
    assert [i["org_id"] for i in snyk_fake.integrations.values()] == [org_id]
    entry = AuditEntry.objects.get(action="snyk.org_map")
    assert entry.details["org_id"] == org_id and entry.details["region"] == "eu-west-1"


def test_bad_org_ids_are_refused_and_nothing_is_saved(aws, snyk_fake):
    _, (account,) = universal_inventory([ACCOUNT])
    calls = len(snyk_fake.log)
    assert "org_id" in refused("snyk_org_map", ACCOUNT, "--org-id", "not-a-uuid")
    assert len(snyk_fake.log) == calls  # refused before asking Snyk
    assert "no Org" in refused("snyk_org_map", ACCOUNT, "--org-id", "7e0c1c57-6a4f-4b8e-9d2a-1f3e5c7a9b0d")
    other_tenant = snyk_fake.add_tenant(name="Elsewhere")
    elsewhere = snyk_fake.add_org("Not ours", group_id=snyk_fake.group_of(other_tenant))
    assert "another tenant" in refused("snyk_org_map", ACCOUNT, "--org-id", elsewhere)
    snyk_fake.groups["4c1d2e3f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"] = {
        "name": "Other group",
        "tenant": snyk_fake.tenant_id,
    }
    other_group = snyk_fake.add_org("Other group's", group_id="4c1d2e3f-5a6b-4c7d-8e9f-0a1b2c3d4e5f")
    assert "not the tenant's group" in refused("snyk_org_map", ACCOUNT, "--org-id", other_group)
    personal = snyk_fake.add_org("Someone's own")
    assert "personal" in refused("snyk_org_map", ACCOUNT, "--org-id", personal)
    assert BrokerInstance.objects.get(account=account).snyk_org_id == ""
    assert not AuditEntry.objects.filter(action="snyk.org_map").exists()


def test_an_org_holds_one_ecr_integration_and_an_account_with_regions_names_one(aws, snyk_fake):
    _, (_, second) = universal_inventory([ACCOUNT, "333333333333"], regions=("eu-west-1", "us-east-1"))
    org_id = snyk_fake.add_org("Shared", group_id=snyk_fake.group_of(snyk_fake.tenant_id))
    assert "--region" in refused("snyk_org_map", ACCOUNT, "--org-id", org_id)
    cli("snyk_org_map", ACCOUNT, "--region", "eu-west-1", "--org-id", org_id)
    message = refused("snyk_org_map", "333333333333", "--region", "us-east-1", "--org-id", org_id)
    assert f"{ACCOUNT}-eu-west-1" in message
    assert not BrokerInstance.objects.filter(account=second).exclude(snyk_org_id="").exists()


def test_an_integrated_connection_keeps_its_org(aws, snyk_fake):
    _, (account,) = universal_inventory([ACCOUNT])
    onboard(account)
    org_id = snyk_fake.add_org("Later", group_id=snyk_fake.group_of(snyk_fake.tenant_id))
    assert "integrated" in refused("snyk_org_map", ACCOUNT, "--org-id", org_id)
    assert SnykConnection.objects.get().org_id != org_id


def test_the_account_page_maps_an_org_with_the_same_checks(
    client, operator, viewer, aws, snyk_fake, settings
):
    settings.SECURE_SSL_REDIRECT = False
    _, (account,) = universal_inventory([ACCOUNT])
    broker = account.brokers.get()
    url = reverse("provisioning:snyk_org_map", args=[broker.pk])
    client.force_login(viewer)
    assert url not in client.get(account.get_absolute_url()).content.decode()
    assert client.post(url, {"org_id": snyk_fake.org_of(snyk_fake.tenant_id)}).status_code == 403

    client.force_login(operator)
    assert url in client.get(account.get_absolute_url()).content.decode()
    response = client.post(url, {"org_id": "7e0c1c57-6a4f-4b8e-9d2a-1f3e5c7a9b0d"}, follow=True)
    assert "no Org" in response.content.decode()
    broker.refresh_from_db()
    assert broker.snyk_org_id == ""
    org_id = snyk_fake.add_org("Payments", group_id=snyk_fake.group_of(snyk_fake.tenant_id))
    response = client.post(url, {"org_id": org_id})
    assert response.status_code == 302 and response["Location"] == account.get_absolute_url()
    broker.refresh_from_db()
    assert broker.snyk_org_id == org_id
    assert f"{org_id}" in client.get(account.get_absolute_url()).content.decode()

"""The Snyk page: every role reads it; admins connect and switch agents; operators download a
deployment's files (audited) and sync; viewers may not download."""

import pytest
from django.urls import reverse

from accounts.models import AgentIdentity, SnykDeployment, SnykTenant
from portal.models import AuditEntry
from provisioning.choices import RunKind
from provisioning.models import Run

from .test_snyk_flows import onboard, tenant, universal_inventory  # noqa: F401  (fixture)


@pytest.fixture(autouse=True)
def plain_http(settings):
    settings.SECURE_SSL_REDIRECT = False


@pytest.fixture
def deployed(aws, tenant, snyk_fake):  # noqa: F811
    _, (account,) = universal_inventory(["222222222222"])
    onboard(account)
    return SnykDeployment.objects.get()


def test_every_role_reads_the_page_and_the_secret_never_shows(client, viewer, deployed):
    client.force_login(viewer)
    page = client.get(reverse("provisioning:snyk_overview"))
    assert page.status_code == 200
    html = page.content.decode()
    assert deployed.deployment_id in html and "222222222222-eu-west-1" in html
    stored = SnykTenant.objects.get()
    assert stored.app_client_secret not in html and stored.token not in html
    assert 'id="snyk-connect"' not in html  # admins only
    url = reverse("provisioning:deployment_download", args=[deployed.pk, "env"])
    assert url not in html
    assert client.get(url).status_code == 403
    assert not AuditEntry.objects.filter(action="deployment.download").exists()


def test_operators_download_deployment_files_audited(client, operator, deployed):
    client.force_login(operator)
    response = client.get(reverse("provisioning:deployment_download", args=[deployed.pk, "env"]))
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    assert f"DEPLOYMENT_ID={deployed.deployment_id}" in response.content.decode()
    entry = AuditEntry.objects.get(action="deployment.download")
    assert entry.user == operator and entry.details["format"] == "env"
    assert client.post(reverse("provisioning:agent_broker_mode", args=[deployed.agent.pk])).status_code == 403


def test_admins_connect_in_the_browser_with_the_token_tested(client, admin_user, snyk_fake, settings):
    from accounts.choices import SnykApiHost

    client.force_login(admin_user)
    settings.SNYK_API_URL = snyk_fake.url  # as `make run` sets it: the form offers it beside Snyk's regions
    form = client.get(reverse("provisioning:snyk_overview")).content.decode()
    assert SnykApiHost.EU_01.value in form and snyk_fake.url in form
    data = {"tenant_id": snyk_fake.tenant_id, "api_url": snyk_fake.url, "token": "tok-wrong"}
    response = client.post(reverse("provisioning:snyk_overview"), data)
    assert "Snyk refused the connection" in response.content.decode() and not SnykTenant.objects.exists()
    response = client.post(reverse("provisioning:snyk_overview"), {**data, "token": snyk_fake.token})
    assert response.status_code == 302
    assert SnykTenant.objects.get().token == snyk_fake.token
    assert snyk_fake.token not in client.get(reverse("provisioning:snyk_overview")).content.decode()


def test_switching_an_agent_to_universal_starts_its_sync(client, admin_user, aws, tenant, snyk_fake):  # noqa: F811
    agent, (account,) = universal_inventory(["222222222222"])
    AgentIdentity.objects.filter(pk=agent.pk).update(broker_mode="classic")
    onboard(account)
    assert snyk_fake.connections == {}
    client.force_login(admin_user)
    response = client.post(
        reverse("provisioning:agent_broker_mode", args=[agent.pk]), {"broker_mode": "universal"}
    )
    run = Run.objects.latest("pk")
    assert response.status_code == 302 and response["Location"] == run.get_absolute_url()
    assert run.kind == RunKind.RECONCILE and list(run.accounts.all()) == [account]
    assert AgentIdentity.objects.get(pk=agent.pk).is_universal

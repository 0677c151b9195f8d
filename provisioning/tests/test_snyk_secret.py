"""The Broker App install's client secret is rotated (POST /orgs/{org}/apps/installs/{install}/secrets,
mode replace: Snyk revokes the old one at once): the new one is stored encrypted, shown once (the
command's output, the page right after the button), audited without it; admins only."""

import io
import json

import pytest
import requests
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse

from accounts.models import SnykTenant
from portal.models import AuditEntry
from provisioning.choices import RunKind
from provisioning.models import Operation, Run

from .test_snyk_flows import onboard, tenant, universal_inventory  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("tenant")


def cli(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def token_for(snyk_fake, client_id: str, secret: str) -> int:
    """What the broker client's OAuth call gets with these credentials (the status)."""
    data = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    return requests.post(f"{snyk_fake.url}/oauth2/token", data=data, timeout=10).status_code


@pytest.fixture
def installed(aws, snyk_fake):
    _, (account,) = universal_inventory(["222222222222"])
    onboard(account)
    return SnykTenant.objects.get()


def test_the_command_rotates_stores_encrypted_and_shows_the_secret_once(installed, snyk_fake):
    old = installed.app_client_secret
    out = cli("snyk_app_secret_rotate")
    stored = SnykTenant.objects.get()
    new = stored.app_client_secret
    assert new and new != old and new == snyk_fake.installs[stored.app_install_id]["client_secret"]
    assert out.count(new) == 1
    assert token_for(snyk_fake, stored.app_client_id, old) == 401  # Snyk revoked the old one
    assert token_for(snyk_fake, stored.app_client_id, new) == 200
    with connection.cursor() as cursor:
        cursor.execute("SELECT app_client_secret FROM accounts_snyktenant")
        (raw,) = cursor.fetchone()
    assert new not in raw  # encrypted at rest
    entry = AuditEntry.objects.get(action="snyk.app_secret_rotate")
    assert entry.details["install_id"] == stored.app_install_id and entry.details["request_id"]
    assert new not in json.dumps(list(AuditEntry.objects.values("details")))
    # The write is an Operation of its own run, like every Snyk write; it never holds the secret.
    run = Run.objects.get(kind=RunKind.APP_SECRET)
    (operation,) = run.operations.all()
    assert (operation.action, operation.status) == ("snyk:RotateAppSecret", "succeeded")
    assert operation.request_id == entry.details["request_id"]
    assert new not in json.dumps(
        list(Operation.objects.values("request", "before", "after", "error_message"))
    )
    assert new not in json.dumps(list(run.log_entries.values("message"))) and new not in run.explanation


def test_nothing_to_rotate_before_the_app_is_installed(snyk_fake):
    calls = len(snyk_fake.log)
    with pytest.raises(CommandError, match="not installed"):
        cli("snyk_app_secret_rotate")
    assert len(snyk_fake.log) == calls


def test_a_refused_rotation_keeps_the_stored_secret(installed, snyk_fake):
    snyk_fake.faults.append(("POST /rest/orgs/", 403, ""))
    with pytest.raises(CommandError, match="Tenant Admin"):
        cli("snyk_app_secret_rotate")
    assert SnykTenant.objects.get().app_client_secret == installed.app_client_secret
    assert not AuditEntry.objects.filter(action="snyk.app_secret_rotate").exists()


def test_admins_rotate_on_the_page_and_see_it_once(
    client, admin_user, operator, installed, snyk_fake, settings
):
    settings.SECURE_SSL_REDIRECT = False
    url = reverse("provisioning:snyk_app_secret_rotate")
    client.force_login(operator)
    assert url not in client.get(reverse("provisioning:snyk_overview")).content.decode()
    assert client.post(url).status_code == 403
    assert SnykTenant.objects.get().app_client_secret == installed.app_client_secret

    client.force_login(admin_user)
    assert url in client.get(reverse("provisioning:snyk_overview")).content.decode()
    response = client.post(url)
    new = SnykTenant.objects.get().app_client_secret
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    assert new != installed.app_client_secret and new in response.content.decode()
    assert new not in client.get(reverse("provisioning:snyk_overview")).content.decode()
    assert AuditEntry.objects.get(action="snyk.app_secret_rotate").user == admin_user


def test_the_rotation_writes_exactly_what_its_preview_showed(installed, snyk_fake):
    """flows.APP_SECRET keeps the flows' guarantee (test_flows covers the AWS kinds): its preview's
    Snyk calls are the calls Snyk then receives, in order."""
    from provisioning import flows, snyk_services
    from provisioning.flows.kinds import APP_SECRET

    preview = APP_SECRET.preview(flows.Scope()).changes
    previewed = [f"{change.http} {change.path}" for change in preview]
    before = len(snyk_fake.writes())
    snyk_services.app_secret_rotate()
    install = f"/rest/orgs/{installed.app_org_id}/apps/installs/{installed.app_install_id}/secrets"
    assert snyk_fake.writes()[before:] == previewed == [f"POST {install}"]

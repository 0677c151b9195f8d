"""API tokens: made once, stored hashed, checked on every request, revocable; the page and the
command that make them; admins see and revoke everyone's."""

import hashlib
import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from portal.api import tokens
from portal.models import ApiToken, AuditEntry

from .api_helpers import problem

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _plain_http(settings):
    settings.SECURE_SSL_REDIRECT = False


def test_a_token_is_stored_only_as_its_hash(viewer):
    token, secret = tokens.api_token_create(user=viewer, name="ci", scope="read")
    assert secret.startswith("ecrp_") and len(secret) > 40
    row = ApiToken.objects.get(pk=token.pk)
    assert row.digest == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in str(row.__dict__)
    assert row.prefix == secret[:12]


def test_bearer_token_authenticates_and_records_last_use(client, viewer):
    token, secret = tokens.api_token_create(user=viewer, name="ci")
    response = client.get("/api/v1/agents/", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None


@pytest.mark.parametrize("how", ["unknown", "revoked", "expired", "inactive-user"])
def test_a_dead_token_gets_401_with_a_problem(client, viewer, how):
    token, secret = tokens.api_token_create(user=viewer, name="ci")
    if how == "unknown":
        secret = secret[:-4] + "AAAA"
    elif how == "revoked":
        tokens.api_token_revoke(token=token)
    elif how == "expired":
        ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    else:
        viewer.is_active = False
        viewer.save()
    response = client.get("/api/v1/agents/", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    body = problem(response)
    assert body["detail"] == "The token is unknown, expired or revoked."


def test_no_credentials_get_401_not_the_login_page(client, db):
    response = client.get("/api/v1/accounts/")
    assert response.status_code == 401
    assert problem(response)["type"] == "urn:ecr-portal:problem:not-authenticated"


def test_a_read_token_may_not_write_whatever_its_role(client, operator):
    _, secret = tokens.api_token_create(user=operator, name="reader", scope="read")
    response = client.post(
        "/api/v1/audit/refresh/",
        headers={"Authorization": f"Bearer {secret}"},
        content_type="application/json",
    )
    assert response.status_code == 403
    assert "read scope" in problem(response)["detail"]


def test_token_names_are_unique_per_user_among_live_tokens(viewer):
    token, _ = tokens.api_token_create(user=viewer, name="ci")
    with pytest.raises(Exception, match="already has a token named"):
        tokens.api_token_create(user=viewer, name="ci")
    tokens.api_token_revoke(token=token)
    tokens.api_token_create(user=viewer, name="ci")  # a revoked token's name is free again


def test_command_prints_the_token_alone(operator):
    out = io.StringIO()
    call_command("api_token_create", operator.username, "--name", "pipeline", "--scope", "write",
                 "--expires-days", "30", stdout=out)  # fmt: skip
    secret = out.getvalue().strip()
    assert secret.startswith("ecrp_") and "\n" not in secret
    token = tokens.api_token_check(secret)
    assert token is not None and token.scope == "write" and token.user == operator
    assert timedelta(days=29) < token.expires_at - timezone.now() <= timedelta(days=30)


@pytest.mark.parametrize(
    "args, message",
    [
        (["nobody", "--name", "x"], "No user 'nobody'"),
        (["otto-operator", "--name", "bad name"], "name:"),
        (["otto-operator", "--name", "x", "--expires-days", "0"], "expires_days:"),
    ],
)
def test_command_refuses_bad_input_with_exit_2_and_saves_nothing(operator, args, message):
    with pytest.raises(CommandError, match=message) as raised:
        call_command("api_token_create", *args, stdout=io.StringIO())
    assert raised.value.returncode == 2
    assert not ApiToken.objects.exists()


def test_page_shows_a_new_token_once_and_revokes_it(client, operator):
    client.force_login(operator)
    response = client.post("/tokens/", {"name": "bot", "scope": "write", "expires_days": "7"})
    assert response.status_code == 200
    secret = response.context["secret"]
    assert secret.encode() in response.content
    assert "no-store" in response["Cache-Control"]
    again = client.get("/tokens/")
    assert secret.encode() not in again.content and b"bot" in again.content
    token = ApiToken.objects.get(name="bot")
    assert client.post(f"/tokens/{token.pk}/revoke/").status_code == 302
    assert tokens.api_token_check(secret) is None
    actions = list(AuditEntry.objects.order_by("pk").values_list("action", flat=True))
    assert actions == ["api_token.create", "api_token.revoke"]


def test_users_see_and_revoke_only_their_own_tokens_admins_all(client, viewer, operator, admin_user):
    theirs, _ = tokens.api_token_create(user=operator, name="op-token")
    client.force_login(viewer)
    assert b"op-token" not in client.get("/tokens/").content
    assert client.post(f"/tokens/{theirs.pk}/revoke/").status_code == 404
    client.force_login(admin_user)
    assert b"op-token" in client.get("/tokens/").content
    assert client.post(f"/tokens/{theirs.pk}/revoke/").status_code == 302
    theirs.refresh_from_db()
    assert theirs.revoked_at is not None

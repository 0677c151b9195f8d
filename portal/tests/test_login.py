"""Local password sign-in: lockout after repeated failures, idle sessions expire, and
PASSWORD_LOGIN=false leaves no password form and no password sign-in over HTTP."""

from datetime import timedelta

import pytest
from django.contrib.auth import authenticate
from django.contrib.sessions.models import Session
from django.utils import timezone

pytestmark = pytest.mark.django_db
PASSWORD = "pw-otto-operator"


@pytest.fixture(autouse=True)
def _plain_http(settings):
    settings.SECURE_SSL_REDIRECT = False


def log_in(client, password, username="otto-operator"):
    return client.post("/login/", {"username": username, "password": password})


def signed_in(client) -> bool:
    return client.get("/accounts/").status_code == 200


def test_repeated_failures_lock_the_username_out_even_with_the_right_password(client, operator, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert log_in(client, "wrong").status_code == 200  # the form again, with its error
    locked = log_in(client, "wrong")
    assert locked.status_code == 429
    assert b"Too many failed logins" in locked.content
    assert log_in(client, PASSWORD).status_code == 429
    assert not signed_in(client)


def test_a_success_before_the_limit_resets_the_count(client, operator, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        log_in(client, "wrong")
    assert log_in(client, PASSWORD).status_code == 302
    client.logout()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        log_in(client, "wrong")
    assert log_in(client, PASSWORD).status_code == 302


def test_lockout_is_per_username(client, operator, viewer, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        log_in(client, "wrong")
    assert log_in(client, "pw-vera-viewer", username="vera-viewer").status_code == 302


def test_sessions_expire_after_the_idle_time_and_each_request_extends_them(
    client, operator, settings, monkeypatch
):
    from portal import middleware

    assert log_in(client, PASSWORD).status_code == 302
    before = Session.objects.get().session_data
    assert signed_in(client)
    assert Session.objects.get().session_data == before  # a request right after: no session write
    monkeypatch.setattr(middleware, "IDLE_REFRESH", 0)  # as if a minute had passed
    session = Session.objects.get()
    idle = timedelta(seconds=settings.SESSION_IDLE_TIMEOUT)
    assert session.expire_date - timezone.now() == pytest.approx(idle, abs=timedelta(seconds=5))
    Session.objects.update(expire_date=timezone.now() + timedelta(seconds=30))
    assert signed_in(client)
    assert Session.objects.get().expire_date - timezone.now() > idle - timedelta(seconds=5)  # pushed back
    Session.objects.update(expire_date=timezone.now() - timedelta(seconds=1))  # idle too long
    response = client.get("/accounts/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_password_login_off_hides_the_form_and_refuses_passwords(client, operator, settings):
    settings.PASSWORD_LOGIN = False
    page = client.get("/login/")
    assert b'name="password"' not in page.content
    assert b"an administrator signs in from the command line" in page.content
    assert log_in(client, PASSWORD).status_code == 405
    admin = client.post("/admin/login/", {"username": "otto-operator", "password": PASSWORD})
    assert admin.status_code == 200 and not signed_in(client)  # the admin's form again
    # The break-glass account still checks its password on the server (no request: no HTTP login).
    assert authenticate(username="otto-operator", password=PASSWORD) == operator


def test_login_page_offers_single_sign_on_when_set_up(client, db, settings):
    settings.OIDC_ENABLED = True
    page = client.get("/login/")
    assert b'id="sso-login"' in page.content and b'name="password"' in page.content

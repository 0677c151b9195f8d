"""Single sign-on against a real OpenID provider (the npm package `oidc-provider`, started here):
sign-in with PKCE, groups mapped to roles and recomputed at every sign-in, a tampered state or
nonce refused, logout ending both sessions. Skips only when node/npm are missing."""

import json
import re
from html import unescape
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
import requests
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore

from portal.models import AuditEntry
from portal.testing import NodeMissing, oidc_provider, plain_http_server

CLIENT_ID, CLIENT_SECRET = "ecr-portal", "test-only-client-secret"
ROLE_MAP = {"platform": "operator", "engineering": "viewer", "platform-admins": "admin"}
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sso(settings, tmp_path):
    """The portal on plain HTTP with single sign-on set up against a provider started for the test.
    Yields (portal URL, groups file: {user: [group, ...]})."""
    settings.SECURE_SSL_REDIRECT = False
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False
    groups = tmp_path / "groups.json"
    groups.write_text("{}")
    with plain_http_server() as portal:
        try:
            provider = oidc_provider(
                client_id=CLIENT_ID,
                client_secret=CLIENT_SECRET,
                redirect_uri=f"{portal}/oidc/callback/",
                post_logout_uri=f"{portal}/login/",
                groups_file=groups,
            )
            issuer = provider.__enter__()
        except NodeMissing as exc:
            pytest.skip(str(exc))
        try:
            settings.OIDC_ENABLED = True
            settings.OIDC_ISSUER = issuer
            settings.OIDC_RP_CLIENT_ID = CLIENT_ID
            settings.OIDC_RP_CLIENT_SECRET = CLIENT_SECRET
            settings.OIDC_OP_AUTHORIZATION_ENDPOINT = f"{issuer}/auth"
            settings.OIDC_OP_TOKEN_ENDPOINT = f"{issuer}/token"
            settings.OIDC_OP_USER_ENDPOINT = f"{issuer}/me"
            settings.OIDC_OP_JWKS_ENDPOINT = f"{issuer}/jwks"
            settings.OIDC_OP_LOGOUT_ENDPOINT = f"{issuer}/session/end"
            settings.OIDC_STORE_ID_TOKEN = True
            settings.OIDC_ROLE_MAP = ROLE_MAP
            settings.AUTHENTICATION_BACKENDS = [
                *settings.AUTHENTICATION_BACKENDS,
                "portal.sso.RoleMappingBackend",
            ]
            yield portal, groups
        finally:
            provider.__exit__(None, None, None)


def submit(session: requests.Session, page: requests.Response, **fields) -> requests.Response:
    """Post the page's (first) form with its hidden inputs plus `fields`, as a browser would."""
    html = page.text
    action = unescape(re.search(r'<form[^>]*action="([^"]+)"', html)[1])
    hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html))
    url = requests.compat.urljoin(page.url, action)
    return session.post(url, data={**hidden, **fields}, allow_redirects=False)


def follow(session: requests.Session, response: requests.Response, *, stop_at: str = "") -> requests.Response:
    """Follow redirects by hand, stopping before any URL starting with `stop_at`."""
    while response.is_redirect:
        location = requests.compat.urljoin(response.url, response.headers["Location"])
        if stop_at and location.startswith(stop_at):
            response.stop_location = location
            return response
        response = session.get(location, allow_redirects=False)
    return response


def to_callback(portal: str, username: str) -> tuple[requests.Session, str]:
    """Sign in at the provider (its login and consent pages); the callback URL it sends back."""
    session = requests.Session()
    page = follow(session, session.get(f"{portal}/oidc/authenticate/", allow_redirects=False))
    assert 'name="login"' in page.text, page.text[:500]
    page = follow(session, submit(session, page, login=username, password="any"), stop_at=f"{portal}/")
    if not hasattr(page, "stop_location"):  # the consent page (first sign-in of this session)
        page = follow(session, submit(session, page), stop_at=f"{portal}/")
    return session, page.stop_location


def sign_in(portal: str, username: str) -> requests.Session:
    session, callback = to_callback(portal, username)
    landed = follow(session, session.get(callback, allow_redirects=False))
    assert landed.url.startswith(portal), landed.url
    return session


def role_groups(username: str) -> set[str]:
    return set(User.objects.get(username=username).groups.values_list("name", flat=True))


def test_sign_in_maps_groups_to_a_role_and_recomputes_it_every_time(sso):
    portal, groups = sso
    groups.write_text(json.dumps({"pia": ["platform", "unrelated"]}))
    session = sign_in(portal, "pia")
    assert role_groups("pia") == {"operator"}
    assert session.get(f"{portal}/accounts/onboard/").status_code == 200  # an operator's page
    assert not User.objects.get(username="pia").has_usable_password()

    groups.write_text(json.dumps({"pia": ["engineering"]}))  # platform removed at the provider
    session = sign_in(portal, "pia")
    assert role_groups("pia") == {"viewer"}
    assert session.get(f"{portal}/accounts/onboard/").status_code == 403
    assert session.get(f"{portal}/accounts/").status_code == 200

    groups.write_text(json.dumps({"pia": []}))
    session = sign_in(portal, "pia")
    assert role_groups("pia") == set()
    assert session.get(f"{portal}/accounts/").status_code == 403
    roles = [e.details["role"] for e in AuditEntry.objects.filter(action="user.sso_login").order_by("pk")]
    assert roles == ["operator", "viewer", "none"]


def test_the_highest_mapped_group_wins(sso):
    portal, groups = sso
    groups.write_text(json.dumps({"ada": ["engineering", "platform-admins", "platform"]}))
    sign_in(portal, "ada")
    assert role_groups("ada") == {"admin"}


def test_a_tampered_state_is_refused(sso):
    portal, groups = sso
    groups.write_text(json.dumps({"eve": ["platform"]}))
    session, callback = to_callback(portal, "eve")
    parts = urlsplit(callback)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query["state"] = query["state"][:-1] + ("A" if query["state"][-1] != "A" else "B")
    response = session.get(urlunsplit(parts._replace(query=urlencode(query))), allow_redirects=False)
    assert response.status_code == 400
    assert not User.objects.filter(username="eve").exists()
    assert session.get(f"{portal}/accounts/", allow_redirects=False).status_code == 302  # to the login


def test_a_tampered_nonce_is_refused(sso):
    portal, groups = sso
    groups.write_text(json.dumps({"eve": ["platform"]}))
    session, callback = to_callback(portal, "eve")
    # The nonce the portal sent lives in its session: change it, as if the ID token were replayed
    # from another sign-in. The provider's ID token then carries a nonce the portal never sent.
    store = SessionStore(session_key=session.cookies["sessionid"])
    states = store["oidc_states"]
    for state in states.values():
        state["nonce"] = "not-the-nonce-that-was-sent"
    store["oidc_states"] = states
    store.save()
    response = session.get(callback, allow_redirects=False)
    assert response.status_code == 400
    assert not User.objects.filter(username="eve").exists()


def test_logout_ends_the_portal_and_the_provider_sessions(sso):
    portal, groups = sso
    groups.write_text(json.dumps({"lou": ["engineering"]}))
    session = sign_in(portal, "lou")
    page = session.get(f"{portal}/accounts/")
    csrf = session.cookies["csrftoken"]
    out = session.post(f"{portal}/logout/", headers={"X-CSRFToken": csrf}, allow_redirects=False)
    assert out.status_code == 302 and "/session/end?" in out.headers["Location"]
    assert "id_token_hint=" in out.headers["Location"]
    confirm = follow(session, session.get(out.headers["Location"], allow_redirects=False))
    landed = follow(session, submit(session, confirm, logout="yes"))
    assert landed.url.startswith(f"{portal}/login/")
    assert session.get(f"{portal}/accounts/", allow_redirects=False).status_code == 302
    # The provider forgot the sign-in too: starting again asks for the user name.
    again = follow(session, session.get(f"{portal}/oidc/authenticate/", allow_redirects=False))
    assert 'name="login"' in again.text
    assert page.status_code == 200


def test_a_provider_user_never_takes_a_local_account(sso, django_user_model):
    portal, groups = sso
    django_user_model.objects.create_user(username="admin", password="a-long-Passphrase-9271")
    groups.write_text(json.dumps({"admin": ["platform-admins"]}))
    session, callback = to_callback(portal, "admin")
    refused = session.get(callback, allow_redirects=False)
    assert refused.status_code == 302 and refused.headers["Location"] == "/login/"
    assert session.get(f"{portal}/accounts/", allow_redirects=False).status_code == 302  # not signed in
    assert role_groups("admin") == set()

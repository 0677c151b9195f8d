"""URL sweep: every page the project serves needs a login; viewers cannot change anything or
download secrets. URLs are found by walking the resolver, so pages added later are covered
without touching this file, unless the classification below cannot place them."""

import re

import pytest
from django.urls import reverse

from accounts.models import AgentIdentity, BrokerInstance, EcrAccount, ExternalId
from provisioning.models import Operation, Run, RunLogEntry

from .conftest import BROKER_TOKEN
from .urlsweep import Inventory, SweptUrl, Unfillable, sweep

# --- The classification: one table -------------------------------------------------------------
#
#   public     anonymous users may open it                    -> answers 200 to anyone
#   self       only touches the caller's own session or token -> any logged-in user
#   staff      the Django admin site (staff accounts only)    -> viewers are sent to the admin's login
#   secret     hands out a secret (broker file, token, key)   -> viewers get 403 on GET and POST
#   mutating   changes inventory, starts runs, touches AWS    -> viewers get 403 on POST
#   read       everything else                                -> the admin role gets 200 on GET,
#                                                                viewers 200 or 403 (never 404/500)
#
# Anonymous users are sent to a login page from every non-public URL. A URL is `secret` or
# `mutating` when a word of its name (without namespace, split on _ - .) is listed below, or when
# its view refuses GET (405). Everything outside the admin needs a name, so it can be placed.
PUBLIC = {"login", "healthz", "admin:login", "api:schema"}
# Single sign-on's own URLs: open to anyone while it is set up, 404 for everyone while it is not
# (here); portal/tests/test_sso.py drives them against a real OpenID provider.
SSO = {"oidc_authentication_init", "oidc_authentication_callback"}
SELF_SERVICE = {"logout", "admin:logout", "api_token_revoke"}
# The REST API answers a request without credentials with 401 (a problem), not a login redirect;
# its docs page is a page like the others.
API_NAMESPACE, API_PAGES = "api", {"api:docs"}
STAFF_NAMESPACES = {"admin"}
LOGIN_PAGES = {"admin": {"admin:login", "login"}}  # by first namespace; every other: {"login"}
SECRET_WORDS = {"download", "env", "helm", "docker", "token", "secret", "key", "keys", "credentials"}
MUTATING_WORDS = {
    "onboard", "run", "rotate", "offboard", "fix", "reconcile", "retire", "cancel", "retry", "setup",
    "apply", "create", "add", "new", "edit", "update", "delete", "remove", "import", "upload", "refresh",
    "confirm", "start", "connect", "discover",
}  # fmt: skip
# "run" is a verb at the end of a name (audit_run) but the subject at its start (run_detail,
# run_progress: pages about a run), where only the other words count.
NOUN_FIRST = {"run"}
# Reading pages whose names the word rules would misplace.
READ_ONLY: set[str] = set()


def classify(url: SweptUrl) -> str:
    if url.name in PUBLIC:
        return "public"
    if url.name in SSO:
        return "sso"
    if url.name in SELF_SERVICE:
        return "self"
    if url.namespace.split(":")[0] in STAFF_NAMESPACES:
        return "staff"
    if url.url_name is None:
        raise AssertionError(f"{url}: give the pattern a name so the access table can place it")
    if url.name in READ_ONLY:
        return "read"
    words = re.split(r"[_\-.]", url.name.split(":")[-1])
    words = set(words[1:] if words[0] in NOUN_FIRST else words)
    if words & SECRET_WORDS:
        return "secret"
    if words & MUTATING_WORDS or _refuses_get(url):
        return "mutating"
    return "read"


def _refuses_get(url: SweptUrl) -> bool:
    """Class-based views say so; function views (require_POST) are probed: see `kinds`."""
    view_class = getattr(url.callback, "view_class", None)
    return view_class is not None and (
        "get" not in view_class.http_method_names or not hasattr(view_class, "get")
    )


@pytest.fixture
def kinds(urls, admin_user, aws):
    """URL -> its class, with function views that answer GET with 405 counted as mutating."""
    from django.test import Client

    # A page that crashes is reported by the tests below (as a 500), not here.
    probe = Client(raise_request_exception=False, headers={"X-Forwarded-Proto": "https"})
    probe.force_login(admin_user)
    result = {}
    for url in urls:
        kind = classify(url)
        if kind == "read" and probe.get(url.path).status_code == 405:
            kind = "mutating"
        result[url] = kind
    aws.calls.clear()  # reading pages may read AWS (live trust, plans); the tests count from here
    return result


def _snapshot() -> dict:
    """Every inventory row with every column: a refused request must leave all of it as it was."""
    models = [AgentIdentity, EcrAccount, ExternalId, BrokerInstance, Run, Operation, RunLogEntry]
    return {m._meta.label: list(m.objects.order_by("pk").values()) for m in models}


@pytest.fixture
def urls(sweep_inventory):
    return sweep(sweep_inventory)


# --- the sweep itself ---------------------------------------------------------------------------


def test_sweep_finds_every_kind_of_page(urls):
    names = {u.name for u in urls}
    expected = {
        "login",
        "logout",
        "healthz",
        "dashboard",
        "accounts:agent_detail",
        "accounts:account_detail",
        "provisioning:run_detail",
        "admin:index",
        "admin:accounts_brokerinstance_change",
        "admin:app_list",
        "admin:view_on_site",
    }
    assert expected <= names
    assert not PUBLIC - names, "a public page in the table no longer exists"
    paths = {u.name: u.path for u in urls}
    assert paths["accounts:account_detail"] == "/accounts/222222222222/"
    assert paths["admin:app_list"] == "/admin/accounts/"


def test_sweep_fails_on_a_url_it_cannot_fill(sweep_inventory):
    from types import SimpleNamespace

    from django.http import HttpResponse
    from django.urls import path
    from django.urls.resolvers import RegexPattern, URLResolver

    def view(request, **kwargs):
        return HttpResponse()

    urlconf = SimpleNamespace(
        urlpatterns=[
            path("agents/<int:pk>/", view, name="agent_detail"),
            path("widgets/<slug:widget_slug>/", view, name="widget_detail"),
        ]
    )
    resolver = URLResolver(RegexPattern(r"^/"), urlconf)
    with pytest.raises(Unfillable, match="widget_slug") as exc:
        sweep(sweep_inventory, resolver)
    assert "agent_detail" not in str(exc.value)


def test_sweep_fails_when_the_inventory_lacks_a_row(sweep_inventory):
    partial = Inventory(
        objects={k: v for k, v in sweep_inventory.objects.items() if k != "provisioning.run"},
        params=sweep_inventory.params,
    )
    with pytest.raises(Unfillable, match="provisioning:run_detail"):
        sweep(partial)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("accounts:broker_download", "secret"),
        ("accounts:broker_env", "secret"),
        ("accounts:agent_access_key", "secret"),
        ("accounts:account_onboard", "mutating"),
        ("accounts:external_id_rotate", "mutating"),
        ("accounts:account_offboard", "mutating"),
        ("accounts:account_fix", "mutating"),
        ("provisioning:audit_run", "mutating"),
        ("provisioning:run_cancel", "mutating"),
        ("provisioning:run_list", "read"),
        ("accounts:account_list", "read"),
        ("admin:accounts_ecraccount_delete", "staff"),
        ("healthz", "public"),
    ],
)
def test_classification_table(name, expected):
    namespace, _, url_name = name.rpartition(":")

    def view(request):
        raise AssertionError("never called")

    url = SweptUrl(name, url_name, namespace, "x/", "/x/", view)
    assert classify(url) == expected


def test_a_view_that_refuses_get_is_mutating():
    from django.views import View

    class Confirm(View):
        def post(self, request):
            raise AssertionError("never called")

    url = SweptUrl("accounts:account_status", "account_status", "accounts", "x/", "/x/", Confirm.as_view())
    assert classify(url) == "mutating"


# --- anonymous users ----------------------------------------------------------------------------


def anonymous_problems(client, kinds) -> tuple[list[str], int]:
    """(what is wrong, how many requests were checked) for anonymous GET and POST on every URL."""
    problems, checked = [], 0
    for url, kind in kinds.items():
        if kind == "public":
            continue
        if kind == "sso":
            for method in ("get", "post"):
                if (status := getattr(client, method)(url.path).status_code) != 404:
                    problems.append(f"{method.upper()} {url}: {status}, expected 404 (single sign-on is off)")
            continue
        pages = LOGIN_PAGES.get(url.namespace.split(":")[0], {"login"})
        logins = tuple(f"{reverse(name)}?next=" for name in pages)
        api = url.namespace == API_NAMESPACE and url.name not in API_PAGES
        for method in ("get", "post"):
            response = getattr(client, method)(url.path)
            location = response.get("Location", "")
            if api:
                if response.status_code != 401 or response["Content-Type"] != "application/problem+json":
                    problems.append(f"{method.upper()} {url}: {response.status_code}, expected a 401 problem")
            elif response.status_code != 302 or not location.startswith(logins):
                problems.append(f"{method.upper()} {url}: {response.status_code} {location}")
            checked += 1
    return problems, checked


def test_anonymous_users_are_sent_to_the_login_page(https_client, kinds, aws):
    problems, checked = anonymous_problems(https_client, kinds)
    assert not problems, "\n".join(problems)
    assert checked >= 2 * 20  # the admin alone has more pages than that
    assert sum(aws.calls.values()) == 0


def test_public_pages_answer_anonymous_users(https_client, kinds):
    public = [url for url, kind in kinds.items() if kind == "public"]
    assert {url.name for url in public} == PUBLIC
    for url in public:
        assert https_client.get(url.path).status_code == 200, url


# --- security headers on every URL ------------------------------------------------------------------


def header_problems(url, response, *, logged_in: bool) -> list[str]:
    """What is missing from a response: the CSP (no inline code), Permissions-Policy, and no-store
    for signed-in users (a shared or back-button cache must never hold their pages)."""
    problems = []
    csp = response.get("Content-Security-Policy", "")
    directives = {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}
    if directives.get("default-src") != ["'self'"] or "unsafe-" in csp:
        problems.append(f"{url}: Content-Security-Policy {csp!r}")
    for fallback in ("script-src", "style-src", "script-src-attr", "style-src-attr"):
        if fallback in directives:
            problems.append(f"{url}: {fallback} loosens default-src: {csp!r}")
    policy = response.get("Permissions-Policy", "")
    if "camera=()" not in policy or "geolocation=()" not in policy:
        problems.append(f"{url}: Permissions-Policy {policy!r}")
    if logged_in and "no-store" not in response.get("Cache-Control", ""):
        problems.append(f"{url}: Cache-Control {response.get('Cache-Control')!r} ({response.status_code})")
    return problems


@pytest.mark.parametrize("persona", ["admin_user", "viewer"])
def test_every_url_sends_the_security_headers_to_signed_in_users(request, https_client, kinds, persona):
    https_client.force_login(request.getfixturevalue(persona))
    problems = []
    for url in kinds:
        problems += header_problems(url, https_client.get(url.path), logged_in=True)
    assert not problems, "\n".join(problems)
    assert len(kinds) >= 20


def test_every_url_sends_the_security_headers_to_anonymous_users(https_client, kinds):
    problems = []
    for url in kinds:
        problems += header_problems(url, https_client.get(url.path), logged_in=False)
    assert not problems, "\n".join(problems)


# --- logged-in users ----------------------------------------------------------------------------


@pytest.mark.parametrize(("persona", "allowed"), [("admin_user", {200}), ("viewer", {200, 403})])
def test_reading_pages_answer(request, https_client, kinds, persona, allowed):
    """Every reading page works with the inventory's values (so the sweep's fills are real rows)."""
    https_client.force_login(request.getfixturevalue(persona))
    reads = [url for url, kind in kinds.items() if kind == "read"]
    assert len(reads) >= 5
    for url in reads:
        response = https_client.get(url.path)
        assert response.status_code in allowed, f"GET {url} as {persona}: {response.status_code}"
        assert BROKER_TOKEN.encode() not in response.content, f"{url} shows the broker token"


def refusal_problems(client, kinds) -> tuple[list[str], int]:
    """(what is wrong, how many URLs were checked) for a logged-in user without write permissions."""
    problems, checked = [], 0

    def expect(method, url, statuses, **data):
        response = getattr(client, method)(url.path, data)
        if response.status_code not in statuses:
            problems.append(f"{method.upper()} {url}: {response.status_code}, expected {sorted(statuses)}")
        if BROKER_TOKEN.encode() in response.content:
            problems.append(f"{method.upper()} {url}: the response holds the broker token")
        return response

    for url, kind in kinds.items():
        if kind == "mutating":
            expect("post", url, {403}, confirm="yes")
        elif kind == "secret":
            expect("get", url, {403})
            expect("post", url, {403, 405}, confirm="yes")
        elif kind == "staff":
            for method in ("get", "post"):
                response = expect(method, url, {302})
                if not response.get("Location", "").startswith(reverse("admin:login")):
                    problems.append(f"{method.upper()} {url}: not sent to the admin's login")
        else:
            continue
        checked += 1
    return problems, checked


@pytest.mark.parametrize("persona", ["viewer", "outsider"])
def test_viewers_cannot_change_anything_or_download_secrets(request, https_client, kinds, aws, persona):
    https_client.force_login(request.getfixturevalue(persona))
    before = _snapshot()
    problems, checked = refusal_problems(https_client, kinds)
    assert not problems, "\n".join(problems)
    assert checked >= 5, "too few mutating or secret URLs found: is the sweep still classifying?"
    assert _snapshot() == before
    assert sum(aws.calls.values()) == 0


def test_the_checks_catch_a_page_without_login_and_a_write_without_permission(
    settings, https_client, sweep_inventory, viewer
):
    """The sweep's own control: a deliberately leaky URLconf must be reported."""
    import types

    from django.contrib.auth.decorators import login_not_required
    from django.contrib.auth.views import LoginView
    from django.http import HttpResponse
    from django.urls import path

    def page(request, **kwargs):
        return HttpResponse("ok")

    @login_not_required
    def public_page(request, **kwargs):
        return HttpResponse("ok")

    leaky = types.ModuleType("leaky_urls")
    leaky.urlpatterns = [
        path("login/", LoginView.as_view(), name="login"),
        path("agents/<int:pk>/", public_page, name="agent_detail"),
        path("accounts/<str:account_id>/onboard/", page, name="account_onboard"),
        path("accounts/<str:account_id>/notes/", page, name="account_notes"),
    ]
    settings.ROOT_URLCONF = leaky
    kinds = {url: classify(url) for url in sweep(sweep_inventory)}

    problems, _ = anonymous_problems(https_client, kinds)
    assert [p.split(" (")[0] for p in problems] == ["GET agent_detail", "POST agent_detail"]

    https_client.force_login(viewer)
    problems, checked = refusal_problems(https_client, kinds)
    assert checked == 1
    assert problems == ["POST account_onboard (/accounts/222222222222/onboard/): 200, expected [403]"]

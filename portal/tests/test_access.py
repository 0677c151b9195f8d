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
#   self       only touches the caller's own session          -> any logged-in user
#   staff      the Django admin site (staff accounts only)    -> viewers are sent to the admin's login
#   secret     hands out a secret (broker file, token, key)   -> viewers get 403 on GET and POST
#   mutating   changes inventory, starts runs, touches AWS    -> viewers get 403 on POST
#   read       everything else                                -> the admin role gets 200 on GET,
#                                                                viewers 200 or 403 (never 404/500)
#
# Anonymous users are sent to LOGIN_PAGES[first namespace] from every non-public URL. A URL is
# `secret` or `mutating` when a word of its name (split on _ - . :) is listed below, or when its
# view refuses GET (405). Everything outside the admin needs a name, so it can be placed.
PUBLIC = {"login", "healthz", "admin:login"}
SELF_SERVICE = {"logout", "admin:logout"}
STAFF_NAMESPACES = {"admin"}
LOGIN_PAGES = {
    "": {"login"},
    "accounts": {"login"},
    "provisioning": {"login"},
    "admin": {"admin:login", "login"},
}
SECRET_WORDS = {"download", "env", "helm", "docker", "token", "secret", "key", "keys", "credentials"}
MUTATING_WORDS = {
    "onboard", "run", "rotate", "offboard", "fix", "reconcile", "retire", "cancel", "retry", "setup",
    "apply", "create", "add", "new", "edit", "update", "delete", "remove", "import", "upload", "refresh",
    "confirm", "start",
}  # fmt: skip
# "run" is a verb at the end of a name (audit_run) but the subject at its start (run_detail,
# run_progress: pages about a run), where only the other words count.
NOUN_FIRST = {"run"}
# Reading pages whose names the word rules would misplace.
READ_ONLY: set[str] = set()


def classify(url: SweptUrl) -> str:
    if url.name in PUBLIC:
        return "public"
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


def test_anonymous_users_are_sent_to_the_login_page(https_client, kinds, aws):
    checked = 0
    for url, kind in kinds.items():
        if kind == "public":
            continue
        namespace = url.namespace.split(":")[0]
        assert namespace in LOGIN_PAGES, f"{url}: which login page does namespace {namespace!r} use?"
        logins = tuple(f"{reverse(name)}?next=" for name in LOGIN_PAGES[namespace])
        for method in (https_client.get, https_client.post):
            response = method(url.path)
            assert response.status_code == 302, f"{method.__name__.upper()} {url}: {response.status_code}"
            assert response["Location"].startswith(logins), f"{url}: {response['Location']}"
            checked += 1
    assert checked >= 2 * 20  # the admin alone has more pages than that
    assert sum(aws.calls.values()) == 0


def test_public_pages_answer_anonymous_users(https_client, kinds):
    public = [url for url, kind in kinds.items() if kind == "public"]
    assert {url.name for url in public} == PUBLIC
    for url in public:
        assert https_client.get(url.path).status_code == 200, url


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


@pytest.mark.parametrize("persona", ["viewer", "outsider"])
def test_viewers_cannot_change_anything_or_download_secrets(request, https_client, kinds, aws, persona):
    https_client.force_login(request.getfixturevalue(persona))
    before = _snapshot()
    checked = 0
    for url, kind in kinds.items():
        if kind == "mutating":
            response = https_client.post(url.path, {"confirm": "yes"})
            assert response.status_code == 403, f"POST {url} as {persona}: {response.status_code}"
            checked += 1
        elif kind == "secret":
            response = https_client.get(url.path)
            assert response.status_code == 403, f"GET {url} as {persona}: {response.status_code}"
            assert BROKER_TOKEN.encode() not in response.content
            response = https_client.post(url.path, {"confirm": "yes"})
            assert response.status_code in (403, 405), f"POST {url} as {persona}: {response.status_code}"
            assert BROKER_TOKEN.encode() not in response.content
            checked += 1
        elif kind == "staff":
            admin_login = reverse("admin:login")
            for method in (https_client.get, https_client.post):
                response = method(url.path)
                assert response.status_code == 302, f"{url} as {persona}: {response.status_code}"
                assert response["Location"].startswith(admin_login), f"{url}: {response['Location']}"
    assert checked, "no mutating or secret URL found: is the sweep still classifying?"
    assert _snapshot() == before
    assert sum(aws.calls.values()) == 0

"""Every page: who may open it (403 otherwise, server-side), CSRF on every form, constant query counts."""

import pytest
from django.test import Client
from django.urls import reverse

from accounts.choices import Lifecycle
from accounts.models import EcrAccount
from portal.models import AuditEntry
from provisioning import services
from provisioning.choices import OperationStatus, RunStatus
from provisioning.models import Operation, Run

from .conftest import TOKEN

VIEWER, OPERATOR, ADMIN = "viewer", "operator", "admin"
EVERYONE = {VIEWER, OPERATOR, ADMIN}


@pytest.fixture
def personas(viewer, operator, admin_user, outsider):
    return {VIEWER: viewer, OPERATOR: operator, ADMIN: admin_user, "outsider": outsider}


@pytest.fixture
def world(aws, account, user_agent, broker):
    run = services.account_onboard(account=account, enqueue=False)
    return {"account": account, "agent": user_agent, "broker": broker, "run": run}


def _pages(w):
    a, agent, b, run = w["account"].account_id, w["agent"].pk, w["broker"].pk, w["run"].pk
    return [
        # (method, url, roles allowed)
        ("get", reverse("dashboard"), EVERYONE),
        ("get", reverse("accounts:agent_list"), EVERYONE),
        ("get", reverse("accounts:agent_detail", args=[agent]), EVERYONE),
        ("get", reverse("accounts:agent_add"), {ADMIN}),
        ("post", reverse("accounts:agent_add"), {ADMIN}),
        ("get", reverse("accounts:agent_plan", args=[agent]), {ADMIN}),
        ("post", reverse("accounts:agent_setup", args=[agent]), {ADMIN}),
        ("post", reverse("accounts:agent_access_key", args=[agent]), {ADMIN}),
        ("get", reverse("accounts:account_list"), EVERYONE),
        ("get", reverse("accounts:account_detail", args=[a]), EVERYONE),
        ("get", reverse("accounts:account_live_trust", args=[a]), EVERYONE),
        ("get", reverse("accounts:account_onboard"), {OPERATOR, ADMIN}),
        ("post", reverse("accounts:account_onboard"), {OPERATOR, ADMIN}),
        ("post", reverse("accounts:account_onboard_validate"), {OPERATOR, ADMIN}),
        ("get", reverse("accounts:account_plan", args=[a]), {OPERATOR, ADMIN}),
        ("post", reverse("accounts:account_apply", args=[a]), {OPERATOR, ADMIN}),
        ("get", reverse("accounts:broker_download", args=[b, "env"]), {OPERATOR, ADMIN}),
        ("get", reverse("accounts:broker_download", args=[b, "helm"]), {OPERATOR, ADMIN}),
        ("get", reverse("accounts:broker_download", args=[b, "docker"]), {OPERATOR, ADMIN}),
        ("get", reverse("provisioning:run_list"), EVERYONE),
        ("get", reverse("provisioning:run_detail", args=[run]), EVERYONE),
        ("get", reverse("provisioning:run_progress", args=[run]), EVERYONE),
    ]


def test_every_page_enforces_its_role_server_side(world, personas, client):
    runs_before = Run.objects.count()
    for method, url, allowed in _pages(world):
        for role, user in personas.items():
            client.force_login(user)
            response = getattr(client, method)(url)
            if role in allowed:
                assert response.status_code != 403, (role, method, url)
            else:
                assert response.status_code == 403, (role, method, url, response.status_code)
    # Forbidden posts changed nothing; allowed ones here had no valid form or digest.
    assert Run.objects.count() == runs_before
    assert EcrAccount.objects.count() == 1


def test_viewer_sees_no_mutating_buttons(world, client, viewer):
    client.force_login(viewer)
    for url in (reverse("dashboard"), reverse("accounts:account_list"), world["account"].get_absolute_url()):
        body = client.get(url).content.decode()
        assert reverse("accounts:account_onboard") not in body, url
        assert reverse("accounts:account_plan", args=[world["account"].account_id]) not in body
    body = client.get(world["agent"].get_absolute_url()).content.decode()
    assert "create-access-key" not in body


def test_outsider_gets_a_page_that_says_why(client, outsider):
    client.force_login(outsider)
    response = client.get(reverse("dashboard"))
    assert response.status_code == 403
    assert "no role yet" in response.content.decode()


def test_anonymous_is_sent_to_login(client, world):
    response = client.get(reverse("accounts:account_list"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_every_form_needs_the_csrf_token(world, admin_user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    posts = [url for method, url, _ in _pages(world) if method == "post"]
    for url in posts:
        assert client.post(url, {}).status_code == 403, url
    # With the token (as the page's form sends it) the same post is accepted.
    client.get(reverse("accounts:account_onboard"))
    token = client.cookies["csrftoken"].value
    response = client.post(reverse("accounts:account_onboard"), {"csrfmiddlewaretoken": token})
    assert response.status_code == 200  # the form, with its field errors
    # htmx requests send the token as a header (base.html sets hx-headers).
    response = client.post(
        reverse("accounts:account_onboard_validate"), {"_field": "account_id"}, headers={"X-CSRFToken": token}
    )
    assert response.status_code == 200


def test_viewer_posting_to_the_wizard_gets_403_and_nothing_is_created(client, viewer, role_agent):
    client.force_login(viewer)
    data = {
        "account_id": "999999999999",
        "agent": role_agent.pk,
        "regions": ["us-east-1"],
        "broker_server_url": "https://broker.snyk.io",
    }
    assert client.post(reverse("accounts:account_onboard"), data).status_code == 403
    assert not EcrAccount.objects.exists()
    assert not AuditEntry.objects.filter(action="account.create").exists()


# --- run pages -------------------------------------------------------------------------------


def _operation(run, sequence, status=OperationStatus.SUCCEEDED, **fields):
    return Operation.objects.create(
        run=run,
        sequence=sequence,
        account_id="222222222222",
        action=fields.pop("action", "iam:CreateRole"),
        resource_arn="arn:aws:iam::222222222222:role/SnykEcrServiceRole",
        summary="Create role",
        status=status,
        **fields,
    )


def test_progress_partial_polls_while_active_and_stops_when_done(client, viewer, account):
    client.force_login(viewer)
    run = services.account_onboard(account=account, enqueue=False)
    url = reverse("provisioning:run_progress", args=[run.pk])
    body = client.get(url).content.decode()
    assert 'hx-trigger="every 1s"' in body and "Waiting for a worker" in body
    Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, progress_total=4, progress_done=1)
    _operation(run, 1, after={"Version": "2012-10-17"})
    body = client.get(url).content.decode()
    assert 'aria-valuenow="25"' in body and 'id="op-1"' in body and "every 1s" in body
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.SUCCEEDED, progress_done=4, explanation="1 account in sync (4 writes)."
    )
    body = client.get(url).content.decode()
    assert "hx-trigger" not in body
    assert 'id="run-success"' in body and "Broker files for" in body
    assert reverse("accounts:broker_download", args=[account.brokers.get().pk, "env"]) not in body  # viewer


def test_success_offers_operators_the_broker_downloads(client, operator, account):
    client.force_login(operator)
    run = services.account_onboard(account=account, enqueue=False)
    Run.objects.filter(pk=run.pk).update(status=RunStatus.SUCCEEDED)
    EcrAccount.objects.filter(pk=account.pk).update(status=Lifecycle.ACTIVE)  # as the run leaves it
    body = client.get(reverse("provisioning:run_progress", args=[run.pk])).content.decode()
    assert reverse("accounts:broker_download", args=[account.brokers.get().pk, "env"]) in body


def test_failure_shows_the_failing_call_in_plain_words_and_a_retry(client, operator, account):
    client.force_login(operator)
    run = services.account_onboard(account=account, enqueue=False)
    _operation(run, 1)
    _operation(
        run,
        2,
        status=OperationStatus.FAILED,
        action="iam:CreatePolicy",
        error_code="AccessDenied",
        error_message="User is not authorized to perform iam:CreatePolicy",
        request_id="4f1c-req",
    )
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.FAILED,
        explanation="iam:CreatePolicy failed: AccessDenied — the portal's credentials may not do this",
    )
    EcrAccount.objects.filter(pk=account.pk).update(status=Lifecycle.FAILED)
    body = client.get(reverse("provisioning:run_detail", args=[run.pk])).content.decode()
    assert 'id="run-failure"' in body
    assert "AccessDenied</b>: User is not authorized to perform iam:CreatePolicy" in body
    assert "4f1c-req" in body
    assert "the portal&#x27;s credentials may not do this" in body
    assert f'href="{reverse("accounts:account_plan", args=[account.account_id])}"' in body  # retry


TRACEBACK = """Traceback (most recent call last):
  File "/app/provisioning/engine.py", line 44, in execute
    status, explanation = handler(run)
  File "<frozen runpy>", line 1, in <module>
RuntimeError: the portal tripped over itself
"""


def test_an_errored_run_shows_its_traceback_and_says_it_is_not_an_aws_refusal(client, viewer, account):
    client.force_login(viewer)
    run = services.account_onboard(account=account, enqueue=False)
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.ERRORED,
        explanation="Unexpected error: the portal tripped over itself",
        error=TRACEBACK,
    )
    body = client.get(reverse("provisioning:run_detail", args=[run.pk])).content.decode()
    assert '<span class="badge errored" id="run-status">Errored</span>' in body
    assert (
        "<b>Errored:</b> an unexpected error in the portal, not an AWS refusal: the traceback is below."
        in body
    )
    assert "Unexpected error: the portal tripped over itself" in body
    shown = body.split('<pre class="traceback" id="run-traceback">', 1)[1].split("</pre>", 1)[0]
    assert shown == TRACEBACK.replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    assert body.count("RuntimeError: the portal tripped over itself") == 1  # not again under the log
    assert "AWS said" not in body


def test_run_detail_shows_diffs_and_log_lines(client, viewer, account):
    client.force_login(viewer)
    run = services.account_onboard(account=account, enqueue=False)
    _operation(
        run,
        1,
        action="iam:UpdateAssumeRolePolicy",
        before={"Statement": [{"Principal": {"AWS": "*"}}]},
        after={"Statement": [{"Principal": {"AWS": "arn:aws:iam::111111111111:role/SnykCraEc2Role"}}]},
        request_id="req-42",
    )
    run.log("account 222222222222: applying 1 change")
    body = client.get(reverse("provisioning:run_detail", args=[run.pk])).content.decode()
    assert '<span class="del">        &quot;AWS&quot;: &quot;*&quot;</span>' in body
    assert (
        '<span class="add">        &quot;AWS&quot;: &quot;arn:aws:iam::111111111111:role/SnykCraEc2Role'
        in body
    )
    assert "req-42" in body
    assert "applying 1 change" in body


def test_run_list_filters(client, viewer, account, role_agent):
    client.force_login(viewer)
    services.account_onboard(account=account, enqueue=False)
    services.agent_setup(agent=role_agent, enqueue=False)
    body = client.get(reverse("provisioning:run_list"), {"kind": "agent"}).content.decode()
    assert "<td>Agent setup</td>" in body and "<td>Onboard</td>" not in body


# --- constant query counts -------------------------------------------------------------------


def _grow(make_account, user_agent, start, count):
    for i in range(start, start + count):
        account = make_account(
            f"6000000{i:05d}", agent=user_agent if i % 2 else None, regions=("us-east-1", "eu-west-1")
        )
        run = services.account_onboard(account=account, enqueue=False)
        _operation(run, 1)
        run.log("x")


@pytest.mark.parametrize(
    "url_name",
    ["dashboard", "accounts:account_list", "accounts:agent_list", "provisioning:run_list"],
)
def test_list_pages_cost_the_same_queries_for_3_or_40_rows(
    client, viewer, make_account, user_agent, url_name, django_assert_num_queries
):
    client.force_login(viewer)
    url = reverse(url_name)
    _grow(make_account, user_agent, 0, 3)
    client.get(url)  # warm the session
    with django_assert_num_queries(QUERY_BUDGET[url_name]):
        client.get(url)
    _grow(make_account, user_agent, 3, 37)
    with django_assert_num_queries(QUERY_BUDGET[url_name]):
        response = client.get(url)
    assert response.status_code == 200


def test_filtered_account_list_is_constant_too(
    client, viewer, make_account, user_agent, django_assert_num_queries
):
    client.force_login(viewer)
    url = reverse("accounts:account_list") + "?region=eu-west-1&agent=cra-user&q=6000&status=pending&page=1"
    _grow(make_account, user_agent, 0, 3)
    client.get(url)
    with django_assert_num_queries(QUERY_BUDGET["accounts:account_list"]):
        client.get(url)
    _grow(make_account, user_agent, 3, 37)
    with django_assert_num_queries(QUERY_BUDGET["accounts:account_list"]):
        client.get(url)


def test_detail_pages_are_constant(client, viewer, make_account, user_agent, django_assert_num_queries):
    client.force_login(viewer)
    _grow(make_account, user_agent, 0, 3)
    account = EcrAccount.objects.get(account_id="600000000001")
    run = account.runs.get()
    done = EcrAccount.objects.get(account_id="600000000002").runs.get()
    Run.objects.filter(pk=done.pk).update(status=RunStatus.SUCCEEDED)
    pages = {
        "account_detail": account.get_absolute_url(),
        "agent_detail": user_agent.get_absolute_url(),
        "run_detail": run.get_absolute_url(),
        "run_progress": reverse("provisioning:run_progress", args=[run.pk]),
        "run_progress_succeeded": reverse("provisioning:run_progress", args=[done.pk]),
    }
    for url in pages.values():
        client.get(url)
    for name, url in pages.items():
        with django_assert_num_queries(QUERY_BUDGET[name]):
            client.get(url)
    # More accounts for the agent, more operations and log lines for the run: same counts.
    _grow(make_account, user_agent, 3, 20)
    for i in range(2, 40):
        _operation(run, i)
        _operation(done, i)
        run.log(f"line {i}")
    from accounts.models import BrokerInstance

    for region in ("eu-central-1", "ap-south-1", "us-west-2"):
        BrokerInstance.objects.create(account=done.accounts.get(), region=region, broker_token=TOKEN)
    for name, url in pages.items():
        with django_assert_num_queries(QUERY_BUDGET[name]):
            assert client.get(url).status_code == 200


# Measured; a change here is a regression to explain, not a number to bump.
QUERY_BUDGET = {
    # 5 of each: session, user, the user's and the groups' permissions, the role's group.
    "dashboard": 15,  # + status aggregate, attention list, agents, brokers, active runs, latest runs, audit
    # + the last completed audit and the finding counts of the latest audit snapshots, the latest
    # organization syncs (one query, however many organizations and accounts)
    "accounts:account_list": 10,  # + COUNT, accounts⋈agent, brokers (prefetch), filter agents, filter regions
    "accounts:agent_list": 6,  # + agents with member counts (one GROUP BY)
    "provisioning:run_list": 7,  # + COUNT, runs⋈agent
    "account_detail": 11,  # + account⋈agent, ExternalIds, brokers, runs, active run, audit entries
    "agent_detail": 9,  # + agent, accounts, runs, active brokers
    "run_detail": 9,  # + run⋈agent, operation count, operations, log lines
    "run_progress": 9,  # the same: the page's live part is this partial
    "run_progress_succeeded": 12,  # + the run's accounts, their brokers and ExternalIds (download links)
}

"""The run's operations page: every operation of a run, in order, a page at a time, filtered."""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from provisioning.choices import OperationStatus, RunKind, RunStatus
from provisioning.models import Operation, Run
from provisioning.selectors import PAGE_SIZE, PROGRESS_OPERATION_LIMIT

ACCOUNTS = ["222222222222", "333333333333"]
SECRET = "sentinel-secret-value-1234"  # as if a request parameter had escaped redaction


def _run(**fields) -> Run:
    fields = {"kind": RunKind.BULK, "status": RunStatus.PARTIAL, "targets": ACCOUNTS, **fields}
    return Run.objects.create(**fields)


def _grow(run: Run, start: int, count: int, *, failed_every: int = 0) -> None:
    """Operations `start`..`start+count-1`; every `failed_every`th one failed, accounts alternating."""
    Operation.objects.bulk_create(
        Operation(
            run=run,
            sequence=i,
            account_id=ACCOUNTS[i % 2],
            action="iam:CreateRole",
            resource_arn=f"arn:aws:iam::{ACCOUNTS[i % 2]}:role/Role{i}",
            summary=f"Create role {i}",
            request={"RoleName": f"Role{i}", "Token": SECRET},
            after={"Version": "2012-10-17"},
            status=OperationStatus.FAILED
            if failed_every and i % failed_every == 0
            else OperationStatus.SUCCEEDED,
            error_code="AccessDenied" if failed_every and i % failed_every == 0 else "",
        )
        for i in range(start, start + count)
    )


def _sequences(body: str) -> list[int]:
    return [int(n) for n in re.findall(r'<li class="\w+" id="op-(\d+)">', body)]


def _url(run: Run) -> str:
    return reverse("provisioning:run_operations", args=[run.pk])


@pytest.fixture
def client():
    """Requests arriving as production's do: HTTPS behind the proxy (plain HTTP only gets a 301)."""
    from django.test import Client

    return Client(headers={"X-Forwarded-Proto": "https"})


@pytest.fixture
def big_run(db):
    run = _run()
    _grow(run, 1, PROGRESS_OPERATION_LIMIT + 60, failed_every=50)
    return run


def test_the_first_operation_of_a_big_run_is_reachable_here_and_not_on_the_run_page(client, viewer, big_run):
    client.force_login(viewer)
    total = PROGRESS_OPERATION_LIMIT + 60
    run_page = client.get(big_run.get_absolute_url()).content.decode()
    assert 'id="op-1"' not in run_page and f'id="op-{total}"' in run_page
    assert "60 earlier operations not shown here" in run_page
    assert f'<a href="{_url(big_run)}">see all {total}</a>' in run_page  # the notice links here
    assert f'href="{_url(big_run)}" id="all-operations">All operations</a>' in run_page

    body = client.get(_url(big_run)).content.decode()
    assert _sequences(body) == list(range(1, PAGE_SIZE + 1))  # the oldest first, in sequence order
    assert f"{total} found" in body and f"page 1 of {-(-total // PAGE_SIZE)}" in body

    last = -(-total // PAGE_SIZE)
    assert f'href="?page={last}" rel="last">last »</a>' in body and 'rel="first"' not in body
    body = client.get(_url(big_run), {"page": last}).content.decode()
    assert _sequences(body) == list(range((last - 1) * PAGE_SIZE + 1, total + 1))
    assert 'href="?page=1" rel="first">« first</a>' in body and 'rel="last"' not in body


def test_every_operation_appears_on_exactly_one_page(client, viewer, big_run):
    client.force_login(viewer)
    seen = []
    for page in range(1, -(-(PROGRESS_OPERATION_LIMIT + 60) // PAGE_SIZE) + 1):
        seen += _sequences(client.get(_url(big_run), {"page": page}).content.decode())
    assert seen == list(range(1, PROGRESS_OPERATION_LIMIT + 61))


def test_the_failed_filter_shows_only_failed_operations(client, viewer, big_run):
    client.force_login(viewer)
    body = client.get(_url(big_run), {"status": "failed"}).content.decode()
    assert _sequences(body) == [50, 100, 150, 200, 250]
    assert 'class="succeeded"' not in body and "AccessDenied" in body
    assert '<option value="failed" selected>' in body


def test_the_account_filter_shows_only_that_accounts_operations_and_pages_keep_the_filters(
    client, viewer, big_run
):
    client.force_login(viewer)
    body = client.get(_url(big_run), {"account_id": ACCOUNTS[1]}).content.decode()
    assert _sequences(body) == list(range(1, 2 * PAGE_SIZE, 2))  # the odd ones
    assert f"{(PROGRESS_OPERATION_LIMIT + 60) // 2} found" in body
    assert f'href="?account_id={ACCOUNTS[1]}&amp;page=2"' in body

    body = client.get(_url(big_run), {"account_id": ACCOUNTS[0], "status": "failed"}).content.decode()
    assert _sequences(body) == [50, 100, 150, 200, 250]  # all even
    body = client.get(_url(big_run), {"account_id": ACCOUNTS[1], "status": "failed"}).content.decode()
    assert _sequences(body) == [] and "No operation matches these filters." in body


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"status": "exploded"},
            "Status filter ignored: “exploded” is not one of started, succeeded, failed, applied, not_applied.",
        ),
        ({"account_id": "22222222222x"}, "Account filter ignored: “22222222222x”. An AWS account id is"),
        ({"account_id": "١٢٣٤٥٦٧٨٩٠١٢"}, "An AWS account id is exactly 12 digits."),  # Unicode digits
        ({"account_id": "<b>x</b>"}, "“&lt;b&gt;x&lt;/b&gt;”"),
    ],
)
def test_invalid_filters_are_ignored_with_a_message(client, viewer, big_run, params, message):
    client.force_login(viewer)
    response = client.get(_url(big_run), params)
    assert response.status_code == 200
    body = response.content.decode()
    assert 'id="filter-problems"' in body and message in body
    assert _sequences(body) == list(range(1, PAGE_SIZE + 1))  # as if unfiltered
    assert "<b>x</b>" not in body


@pytest.mark.parametrize(("page", "first"), [("abc", 1), ("", 1), ("0", 241), ("-3", 241), ("999", 241)])
def test_a_bad_page_number_lands_on_the_first_or_last_page_as_the_run_list_does(
    client, viewer, big_run, page, first
):
    client.force_login(viewer)
    response = client.get(_url(big_run), {"page": page})
    assert response.status_code == 200
    assert _sequences(response.content.decode())[0] == first


def test_an_unknown_run_is_404(client, viewer, db):
    client.force_login(viewer)
    assert client.get(reverse("provisioning:run_operations", args=[999_999])).status_code == 404


def test_a_run_without_operations_has_no_link_and_an_empty_page(client, viewer, db):
    client.force_login(viewer)
    run = _run(status=RunStatus.QUEUED)
    assert "All operations" not in client.get(run.get_absolute_url()).content.decode()
    body = client.get(_url(run)).content.decode()
    assert "No AWS write yet." in body and "0 found" in body and "still going" in body
    _grow(run, 1, 1)
    run_page = client.get(run.get_absolute_url()).content.decode()
    assert "All operations" in run_page and "earlier operation" not in run_page


def test_request_parameters_are_never_shown(client, admin_user, big_run):
    client.force_login(admin_user)
    for params in ({}, {"status": "failed"}, {"page": 9}):
        body = client.get(_url(big_run), params).content.decode()
        assert SECRET not in body and "RoleName" not in body


def test_who_may_open_it(client, viewer, operator, admin_user, outsider, big_run):
    url = _url(big_run)
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    client.force_login(outsider)
    assert client.get(url).status_code == 403
    for user in (viewer, operator, admin_user):
        client.force_login(user)
        assert client.get(url).status_code == 200
    assert client.post(url).status_code == 405


# session, user, the user's and the groups' permissions, the role's group
# + run⋈agent, COUNT, the page of operations
QUERY_BUDGET = 8


@pytest.mark.parametrize("params", [{}, {"status": "failed", "account_id": ACCOUNTS[0]}, {"page": "last"}])
def test_the_page_costs_the_same_queries_for_3_or_3000_operations(
    client, viewer, db, params, django_assert_num_queries
):
    client.force_login(viewer)
    run = _run()
    _grow(run, 1, 3, failed_every=2)
    client.get(_url(run), params)  # warm the session
    with django_assert_num_queries(QUERY_BUDGET):
        client.get(_url(run), params)
    _grow(run, 4, 2997, failed_every=2)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(_url(run), params)
    assert response.status_code == 200 and len(_sequences(response.content.decode())) == PAGE_SIZE
    assert len(queries) == QUERY_BUDGET, [q["sql"] for q in queries.captured_queries]


def test_the_run_page_counts_every_operation_it_shows(client, viewer):
    """The worker records an operation, then counts it: a page polled in between still counts it."""
    run = _run(status=RunStatus.RUNNING, progress_total=5, progress_done=0)
    _grow(run, 1, 2)
    client.force_login(viewer)
    body = client.get(reverse("provisioning:run_detail", args=[run.pk])).content.decode()
    assert "2 of 5 changes applied" in body
    assert 'aria-valuenow="40"' in body

"""The REST API: reads for viewers, the pages' flows for operators through the same services,
problem details for every refusal, every write audited with the token's name."""

import json

import pytest

from accounts.forms import OnboardForm
from accounts.models import EcrAccount
from portal.models import AuditEntry
from provisioning import services
from provisioning.choices import RunStatus
from provisioning.models import Run
from provisioning.tests.conftest import create_inventory, make_management_role
from provisioning.tests.test_engine import run_inline

from .api_helpers import bearer, problem

TOKEN = "0f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"


@pytest.fixture(autouse=True)
def _plain_http(settings):
    settings.SECURE_SSL_REDIRECT = False


@pytest.fixture
def world(db, aws):
    agent, accounts = create_inventory()
    assert run_inline(services.agent_setup(agent=agent, enqueue=False)).status == RunStatus.SUCCEEDED
    return agent, accounts


def post(client, path, headers, body=None):
    return client.post(path, json.dumps(body or {}), content_type="application/json", headers=headers)


# --- reads -----------------------------------------------------------------------------------


def test_viewer_reads_every_collection_paginated(client, world, viewer):
    headers = bearer(viewer, "read")
    for path in ("agents", "accounts", "brokers", "runs", "audit"):
        response = client.get(f"/api/v1/{path}/?page_size=1", headers=headers)
        assert response.status_code == 200, path
        body = response.json()
        assert set(body) == {"count", "next", "previous", "results"}, path
        assert len(body["results"]) <= 1
    accounts = client.get("/api/v1/accounts/", headers=headers).json()
    assert [a["account_id"] for a in accounts["results"]] == ["222222222222", "333333333333"]
    assert accounts["next"] is None


def test_no_read_shows_a_broker_token(client, world, viewer):
    _, accounts = world
    headers = bearer(viewer, "read")
    for path in ("accounts/", "brokers/", f"accounts/{accounts[0].account_id}/"):
        response = client.get(f"/api/v1/{path}", headers=headers)
        for broker in accounts[0].brokers.all():
            assert broker.broker_token.encode() not in response.content


def test_run_operations_are_paginated_and_filtered(client, world, viewer):
    run = Run.objects.get(kind="agent")
    headers = bearer(viewer, "read")
    everything = client.get(f"/api/v1/runs/{run.pk}/operations/", headers=headers).json()
    assert everything["count"] == run.operations.count() > 1
    first = client.get(f"/api/v1/runs/{run.pk}/operations/?page_size=1", headers=headers).json()
    assert [op["sequence"] for op in first["results"]] == [1] and first["next"]
    none = client.get(f"/api/v1/runs/{run.pk}/operations/?status=failed", headers=headers).json()
    assert none["count"] == 0


def test_unknown_rows_are_404_problems(client, db, viewer):
    headers = bearer(viewer, "read")
    for path in (
        "accounts/999999999999/",
        "runs/999/",
        "runs/999/operations/",
        "brokers/999/",
        "agents/999/",
    ):
        response = client.get(f"/api/v1/{path}", headers=headers)
        assert response.status_code == 404, path
        assert problem(response)["type"] == "urn:ecr-portal:problem:not-found"


def test_request_ids_are_echoed_in_header_and_body(client, db, viewer):
    response = client.get(
        "/api/v1/runs/999/", headers={**bearer(viewer, "read"), "X-Request-ID": "pipeline-42"}
    )
    assert response["X-Request-ID"] == "pipeline-42"
    assert problem(response)["request_id"] == "pipeline-42"


def test_too_many_requests_get_429_with_retry_after(client, db, viewer, settings):
    from django.core.cache import cache
    from rest_framework.settings import api_settings
    from rest_framework.throttling import UserRateThrottle

    cache.clear()
    rates = {**api_settings.DEFAULT_THROTTLE_RATES, "user": "2/minute"}
    original = UserRateThrottle.THROTTLE_RATES
    UserRateThrottle.THROTTLE_RATES = rates
    try:
        headers = bearer(viewer, "read")
        statuses = [client.get("/api/v1/agents/", headers=headers).status_code for _ in range(3)]
        response = client.get("/api/v1/agents/", headers=headers)
    finally:
        UserRateThrottle.THROTTLE_RATES = original
        cache.clear()
    assert statuses == [200, 200, 429]
    assert response.status_code == 429 and int(response["Retry-After"]) > 0
    assert problem(response)["type"] == "urn:ecr-portal:problem:throttled"


# --- the onboarding flow -----------------------------------------------------------------------


def test_operator_previews_then_applies_an_onboarding_recorded_with_the_token_name(client, world, operator):
    _, accounts = world
    headers = bearer(operator, "write", name="vending-machine")
    account_id = accounts[0].account_id
    preview = post(client, f"/api/v1/accounts/{account_id}/preview/", headers)
    assert preview.status_code == 200
    body = preview.json()
    assert body["action"] == "onboard" and body["target"] == account_id
    assert {c["action"] for c in body["plan"]["changes"]} >= {"iam:CreatePolicy", "iam:CreateRole"}
    assert Run.objects.filter(kind="onboard").count() == 0  # a preview starts nothing

    applied = post(
        client, f"/api/v1/accounts/{account_id}/apply/", headers, {"digest": body["plan"]["digest"]}
    )
    assert applied.status_code == 202
    run = Run.objects.get(pk=applied.json()["id"])
    assert applied["Location"] == f"/api/v1/runs/{run.pk}/"
    assert run.kind == "onboard" and run.requested_by == operator
    assert run.options["previewed_plan"] == body["plan"]["digest"]
    entry = AuditEntry.objects.get(action="run.request.onboard")
    assert entry.details["api_token"] == "vending-machine" and entry.user == operator

    again = post(client, f"/api/v1/accounts/{account_id}/apply/", headers, {"digest": body["plan"]["digest"]})
    assert again.status_code == 409
    busy = problem(again)
    assert busy["type"] == "urn:ecr-portal:problem:run-in-progress" and busy["run"] == run.pk


def test_a_stale_digest_is_refused_with_the_new_plan(client, world, operator):
    _, accounts = world
    headers = bearer(operator)
    account_id = accounts[0].account_id
    response = post(client, f"/api/v1/accounts/{account_id}/apply/", headers, {"digest": "0" * 64})
    assert response.status_code == 409
    body = problem(response)
    assert body["type"] == "urn:ecr-portal:problem:stale-plan"
    assert "review the new plan" in body["detail"]
    fresh = post(client, f"/api/v1/accounts/{account_id}/preview/", headers).json()
    assert body["plan"]["digest"] == fresh["plan"]["digest"]
    assert not Run.objects.filter(kind="onboard").exists()


def test_the_run_lock_answers_409_naming_the_winning_run(client, world, operator):
    _, accounts = world
    headers = bearer(operator)
    account = accounts[0]
    digest = post(client, f"/api/v1/accounts/{account.account_id}/preview/", headers).json()["plan"]["digest"]
    # Another channel (a page, a command) took the account's run lock after the preview.
    winner = services.account_onboard(account=account, enqueue=False)
    response = post(client, f"/api/v1/accounts/{account.account_id}/apply/", headers, {"digest": digest})
    assert response.status_code == 409
    assert problem(response)["run"] == winner.pk


def test_apply_without_a_digest_is_a_field_error(client, world, operator):
    response = post(client, f"/api/v1/accounts/{world[1][0].account_id}/apply/", bearer(operator), {})
    assert response.status_code == 400
    assert problem(response)["errors"] == {"digest": ["This field is required."]}


def test_create_draft_refuses_bad_input_with_the_forms_messages(client, world, operator):
    agent, _ = world
    bad = {
        "account_id": "12345",
        "agent": agent.pk,
        "regions": ["cn-north-1"],
        "cr_agent_url": " http://cra:8081",
        "broker_client_url": "http://broker:8000",
    }
    response = post(client, "/api/v1/accounts/", bearer(operator), bad)
    assert response.status_code == 400
    errors = problem(response)["errors"]
    form = OnboardForm(data={**bad, "broker_server_url": "https://broker.snyk.io"})
    assert not form.is_valid()
    assert errors == {field: list(messages) for field, messages in form.errors.items()}
    assert {"account_id", "regions", "cr_agent_url"} <= set(errors)
    assert not EcrAccount.objects.filter(account_id="12345").exists()


def test_create_draft_then_onboard_it(client, world, operator):
    agent, _ = world
    account_id = "444444444444"
    body = {
        "account_id": account_id,
        "agent": agent.pk,
        "regions": ["eu-west-1"],
        "management_role_arn": make_management_role(account_id),
        "broker_client_url": "http://broker:8000",
        "cr_agent_url": "http://cra:8081",
        "broker_token": TOKEN,
    }
    response = post(client, "/api/v1/accounts/", bearer(operator), body)
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "draft"
    assert TOKEN.encode() not in response.content
    assert EcrAccount.objects.get(account_id=account_id).brokers.get().broker_token == TOKEN


def test_viewer_token_gets_403_on_every_write(client, world, viewer):
    agent, accounts = world
    headers = bearer(viewer, "write")
    run = Run.objects.first()
    broker = accounts[0].brokers.get()
    writes = [
        "/api/v1/accounts/",
        f"/api/v1/accounts/{accounts[0].account_id}/preview/",
        f"/api/v1/accounts/{accounts[0].account_id}/apply/",
        f"/api/v1/agents/{agent.pk}/preview/",
        f"/api/v1/agents/{agent.pk}/apply/",
        f"/api/v1/runs/{run.pk}/cancel/",
        "/api/v1/audit/refresh/",
    ]
    for path in writes:
        response = post(client, path, headers, {"digest": "x"})
        assert response.status_code == 403, path
        assert "Your role may not do this" in problem(response)["detail"]
    response = client.get(f"/api/v1/brokers/{broker.pk}/files/env/", headers=headers)
    assert response.status_code == 403
    assert not AuditEntry.objects.filter(action__startswith="run.request.onboard").exists()


def test_cancel_and_long_poll(client, world, operator, settings):
    settings.API_LONG_POLL_MAX = 1
    headers = bearer(operator)
    run = services.account_reconcile(accounts=[world[1][0]], enqueue=False)
    waited = client.get(f"/api/v1/runs/{run.pk}/?wait=1", headers=headers)
    assert waited.status_code == 200 and waited.json()["status"] == "queued"
    cancelled = post(client, f"/api/v1/runs/{run.pk}/cancel/", headers)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert AuditEntry.objects.get(action="run.cancel").details["api_token"] == f"{operator.username}-write"
    twice = post(client, f"/api/v1/runs/{run.pk}/cancel/", headers)
    assert twice.status_code == 409
    assert problem(twice)["detail"] == f"Run {run.pk} is cancelled: there is nothing to cancel."
    bad = client.get(f"/api/v1/runs/{run.pk}/?wait=soon", headers=headers)
    assert bad.status_code == 400 and "wait" in problem(bad)["errors"]


# --- broker files ------------------------------------------------------------------------------


def test_broker_file_downloads_are_the_pages_and_audited_with_the_token(client, world, operator):
    from accounts import services as account_services
    from accounts.tests.conftest import onboarded

    account = account_services.account_create(
        agent=world[0],
        account_id="555555555555",
        regions=["us-east-1"],
        broker_client_url="http://broker:8000",
        cr_agent_url="http://cra:8081",
        broker_token=TOKEN,
    )
    broker = onboarded(account).brokers.get()
    headers = bearer(operator, "write", name="deployer")
    response = client.get(f"/api/v1/brokers/{broker.pk}/files/env/", headers=headers)
    assert response.status_code == 200
    assert f"BROKER_TOKEN={broker.broker_token}" in response.content.decode()
    assert "no-store" in response["Cache-Control"]
    assert response["Content-Disposition"].startswith("attachment; filename=")
    entry = AuditEntry.objects.get(action="broker.download")
    assert entry.details["api_token"] == "deployer" and entry.details["format"] == "env"
    page = client.get(f"/api/v1/brokers/{broker.pk}/files/pdf/", headers=headers)
    assert page.status_code == 400


def test_a_pending_broker_file_is_a_409_with_the_pages_reason(client, world, operator):
    broker = world[1][0].brokers.get()  # a draft's broker is pending
    response = client.get(f"/api/v1/brokers/{broker.pk}/files/env/", headers=bearer(operator))
    assert response.status_code == 409
    assert problem(response)["detail"].startswith("No file for this broker: ")
    assert not AuditEntry.objects.filter(action="broker.download").exists()

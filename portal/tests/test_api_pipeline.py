"""The issue's "done when", as a pipeline does it: plain HTTP requests to a live portal with real
worker processes and a moto server. An operator's token saves a draft, previews and applies its
onboarding, polls the run to success and downloads the broker's .env; a viewer's token gets 403
from every write the schema lists."""

import pytest
import requests

from portal.testing import celery_workers, plain_http_server
from provisioning.tests.conftest import create_inventory, make_management_role, moto_endpoint  # noqa: F401

from .api_helpers import bearer

pytestmark = [pytest.mark.reliability, pytest.mark.django_db(transaction=True)]
BROKER_TOKEN = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"


@pytest.fixture
def portal(settings, moto_endpoint):  # noqa: F811
    settings.SECURE_SSL_REDIRECT = False
    with plain_http_server() as url, celery_workers(count=1, concurrency=1):
        yield url


def wait_for_run(api, run_url: str) -> dict:
    for _ in range(20):  # long polls of up to 30 s each
        run = api.get(f"{run_url}?wait=30").json()
        if not run["is_active"]:
            return run
    raise AssertionError(f"{run_url} still active")


def test_a_pipeline_onboards_an_account_with_an_operator_token(portal, operator, admin_user, viewer):
    agent, _ = create_inventory([])
    admin = requests.Session()
    admin.headers.update(bearer(admin_user, "write", name="bootstrap"))
    plan = admin.post(f"{portal}/api/v1/agents/{agent.pk}/preview/").json()["plan"]
    started = admin.post(f"{portal}/api/v1/agents/{agent.pk}/apply/", json={"digest": plan["digest"]})
    assert started.status_code == 202, started.text
    assert wait_for_run(admin, portal + started.headers["Location"])["status"] == "succeeded"

    api = requests.Session()
    api.headers.update(bearer(operator, "write", name="vending-machine"))
    account_id = "666666666666"
    draft = api.post(
        f"{portal}/api/v1/accounts/",
        json={
            "account_id": account_id,
            "agent": agent.pk,
            "regions": ["eu-west-1"],
            "management_role_arn": make_management_role(account_id),
            "broker_client_url": "http://broker:8000",
            "cr_agent_url": "http://cra:8081",
            "broker_token": BROKER_TOKEN,
        },
    )
    assert draft.status_code == 201, draft.text
    preview = api.post(f"{portal}/api/v1/accounts/{account_id}/preview/")
    assert preview.status_code == 200 and preview.json()["action"] == "onboard"
    digest = preview.json()["plan"]["digest"]
    applied = api.post(f"{portal}/api/v1/accounts/{account_id}/apply/", json={"digest": digest})
    assert applied.status_code == 202, applied.text
    run = wait_for_run(api, portal + applied.headers["Location"])
    assert run["status"] == "succeeded", run["explanation"]
    operations = api.get(portal + run["operations"]).json()
    assert {"iam:CreateRole", "iam:CreatePolicy"} <= {op["action"] for op in operations["results"]}

    account = api.get(f"{portal}/api/v1/accounts/{account_id}/").json()
    assert account["status"] == "active"
    env_url = portal + account["brokers"][0]["files"]["env"]
    env = api.get(env_url)
    assert env.status_code == 200
    assert f"BROKER_TOKEN={BROKER_TOKEN}" in env.text
    assert f"CR_ROLE_ARN=arn:aws:iam::{account_id}:role/SnykEcrServiceRole" in env.text

    reader = requests.Session()
    reader.headers.update(bearer(viewer, "write", name="viewer-pipeline"))
    assert reader.get(env_url).status_code == 403
    schema = requests.get(f"{portal}/api/schema/?format=json").json()
    writes = [path for path, item in schema["paths"].items() if "post" in item]
    assert len(writes) >= 7
    for path in writes:
        filled = path.replace("{account_id}", account_id).replace("{id}", str(agent.pk))
        filled = filled.replace("/runs/" + str(agent.pk), "/runs/" + str(run["id"]))
        refused = reader.post(portal + filled, json={"digest": digest})
        assert refused.status_code == 403, f"POST {filled}: {refused.status_code}"
        assert refused.headers["Content-Type"] == "application/problem+json"

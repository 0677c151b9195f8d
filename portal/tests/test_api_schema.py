"""The schema is the contract: the committed file is what the code generates, and schemathesis
drives the live API from it with a viewer's and an operator's token: no 5xx, no answer outside
the schema, no secret in any answer but a broker file's."""

from pathlib import Path

import pytest
import schemathesis
import yaml
from django.conf import settings
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings

from .api_helpers import bearer

SCHEMA_FILE = Path(settings.BASE_DIR) / "portal" / "api" / "openapi.yaml"
REGENERATE = "DEBUG=true python manage.py spectacular --validate --file portal/api/openapi.yaml"


def test_committed_schema_is_the_generated_one(db):
    generated = SchemaGenerator().get_schema(request=None, public=True)
    committed = yaml.safe_load(SCHEMA_FILE.read_text())
    # Through YAML and back, as the file was written: the same types on both sides.
    assert committed == yaml.safe_load(yaml.safe_dump(generated)), f"the API changed: run {REGENERATE}"


def test_schema_is_openapi_3_1_and_served_without_login(client, db, settings):
    settings.SECURE_SSL_REDIRECT = False
    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200
    body = response.json()
    assert body["openapi"] == "3.1.0"
    assert body["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token (the API tokens page).",
    }
    assert "Problem" in body["components"]["schemas"]


def test_docs_page_lists_every_operation(client, viewer, settings):
    settings.SECURE_SSL_REDIRECT = False
    client.force_login(viewer)
    response = client.get("/api/docs/")
    assert response.status_code == 200
    schema = yaml.safe_load(SCHEMA_FILE.read_text())
    for path in schema["paths"]:
        assert path.encode() in response.content


# --- schemathesis against the live server ---------------------------------------------------------


EXAMPLES = 6  # per operation and persona: bounded, so it runs in every `make test`
# The live server's middleware read SECURE_SSL_REDIRECT at its start: requests arrive as behind the
# TLS-terminating proxy of production.
BEHIND_TLS = {"X-Forwarded-Proto": "https"}
BROKER_TOKEN = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


@pytest.fixture
def api_world(transactional_db, aws):
    """An agent set up, a draft and an onboarded account with a broker, runs with operations."""
    from accounts import services as account_services
    from accounts.tests.conftest import onboarded
    from provisioning import services
    from provisioning.tests.conftest import create_inventory
    from provisioning.tests.test_engine import run_inline

    agent, _ = create_inventory()
    run_inline(services.agent_setup(agent=agent, enqueue=False))
    account = account_services.account_create(
        agent=agent,
        account_id="555555555555",
        regions=["us-east-1"],
        broker_client_url="http://broker:8000",
        cr_agent_url="http://cra:8081",
        broker_token=BROKER_TOKEN,
    )
    onboarded(account)


def _headers(user, request):
    headers = {**bearer(user, "write"), **BEHIND_TLS}
    request.node.secrets = [headers["Authorization"].split()[1], settings.SECRET_KEY]
    return headers


@pytest.fixture
def viewer_headers(request, viewer, api_world):
    return _headers(viewer, request)


@pytest.fixture
def operator_headers(request, operator, api_world):
    return _headers(operator, request)


@pytest.fixture
def api_schema(live_server, api_world, settings):
    settings.API_LONG_POLL_MAX = 0
    return schemathesis.openapi.from_url(f"{live_server.url}/api/schema/?format=json", headers=BEHIND_TLS)


def no_secret_leaked(secrets: list[str]):
    def no_secret_in_the_answer(ctx, response, case):
        body = response.content
        for secret in secrets:
            assert secret.encode() not in body, f"{case.method} {case.formatted_path} leaks a secret"
        if "/files/" not in case.path:  # only a broker file holds its broker's token
            assert BROKER_TOKEN.encode() not in body, (
                f"{case.method} {case.formatted_path} leaks a broker token"
            )

    return no_secret_in_the_answer


FUZZ = hypothesis_settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    database=None,
)


# A request the schema allows may still break a rule only the forms and services know (an agent
# that exists, an account id not taken): refusing it is right. Every other check runs, the
# refusal of schema-invalid requests included.
EXCLUDED = [schemathesis.checks.positive_data_acceptance]


def fuzz(schema, headers: dict[str, str], secrets: list[str]) -> list[str]:
    """Every operation, EXAMPLES cases each (schemathesis' pytest plugin is not yet for pytest 9:
    its strategies are driven by hypothesis here); what failed, one line per operation."""
    failures = []
    checks = [no_secret_leaked(secrets)]
    for result in schema.get_all_operations():
        operation = result.ok()

        @FUZZ
        @given(case=operation.as_strategy())
        def run(case):
            response = case.call(headers=headers)
            case.validate_response(response, additional_checks=checks, excluded_checks=EXCLUDED)

        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:  # one operation's failure must not hide the others'
            failures.append(f"{operation.label}: {str(exc)[:1500]}")
    return failures


def test_api_answers_a_viewer_within_its_schema(api_schema, request, viewer_headers):
    failures = fuzz(api_schema, viewer_headers, request.node.secrets)
    assert not failures, "\n\n".join(failures)


def test_api_answers_an_operator_within_its_schema(api_schema, request, operator_headers):
    failures = fuzz(api_schema, operator_headers, request.node.secrets)
    assert not failures, "\n\n".join(failures)

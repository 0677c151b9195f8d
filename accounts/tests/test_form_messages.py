"""What the wizard's fields say when refused (issue 11, item 21): each URL field its own example, and
a valid value pasted with spaces around it only that the spaces must go."""

import pytest

from accounts.forms import AgentForm, OnboardForm
from accounts.validators import SURROUNDING_WHITESPACE

from .conftest import management_role

VALID_ARN = management_role("222222222222")


def onboard_form(role_agent, **fields) -> OnboardForm:
    data = {"account_id": "222222222222", "agent": role_agent.pk, "regions": ["us-east-1"]}
    return OnboardForm(data={**data, **fields})


AGENT_EXAMPLE = "http://cra:8081 for the CR agent"
BROKER_EXAMPLE = "http://broker:8000 for the broker client"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cr_agent_url", "cra:8081"),
        ("cr_agent_url", "http://cra"),
        ("cr_agent_url", "ftp://cra:8081"),
        ("broker_client_url", "broker.internal:8000"),
        ("broker_client_url", "http://broker"),
    ],
)
def test_each_url_field_error_shows_an_example_of_its_own(role_agent, field, value):
    """The agent URL's error once suggested a broker URL (and the broker's a CR agent URL)."""
    form = onboard_form(role_agent, **{field: value})
    assert not form.is_valid()
    (message,) = form.errors[field]
    assert (AGENT_EXAMPLE if field == "cr_agent_url" else BROKER_EXAMPLE) in message, message
    assert "e.g." not in message


@pytest.mark.parametrize("padded", [VALID_ARN + " ", " " + VALID_ARN, VALID_ARN + "\n"])
def test_a_valid_arn_with_spaces_around_it_is_told_only_about_the_spaces(role_agent, padded):
    form = onboard_form(role_agent, management_role_arn=padded)
    assert not form.is_valid()
    assert form.errors["management_role_arn"] == [SURROUNDING_WHITESPACE]


def test_an_invalid_arn_with_spaces_around_it_is_told_both(role_agent):
    form = onboard_form(role_agent, management_role_arn="arn:aws:iam::1:role/x ")
    assert not form.is_valid()
    errors = form.errors["management_role_arn"]
    assert len(errors) == 2 and "Enter an IAM role ARN" in errors[0] and errors[1] == SURROUNDING_WHITESPACE


def test_a_value_of_spaces_only_is_checked_as_typed(role_agent):
    """Not trimmed to blank (which would mean "the portal's own credentials"): the rule refuses it."""
    form = onboard_form(role_agent, management_role_arn="   ")
    assert not form.is_valid()
    assert "Enter an IAM role ARN" in form.errors["management_role_arn"][0]


def test_the_agent_form_checks_inside_the_spaces_too(db):
    form = AgentForm(data={"name": "cra ", "kind": "role", "account_id": "111111111111"})
    assert not form.is_valid()
    assert form.errors["name"] == [SURROUNDING_WHITESPACE]

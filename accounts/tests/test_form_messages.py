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


@pytest.mark.parametrize("value", ["cra:8081", "http://cra", "ftp://cra:8081"])
def test_the_agent_url_error_shows_an_agent_url(role_agent, value):
    form = onboard_form(role_agent, cr_agent_url=value)
    assert not form.is_valid()
    (message,) = form.errors["cr_agent_url"]
    assert "http://cra:8081 for the CR agent" in message, message
    assert "e.g. http://broker" not in message


@pytest.mark.parametrize("value", ["broker.internal:8000", "http://broker"])
def test_the_broker_url_error_shows_a_broker_url(role_agent, value):
    form = onboard_form(role_agent, broker_client_url=value)
    assert not form.is_valid()
    (message,) = form.errors["broker_client_url"]
    assert "http://broker:8000 for the broker client" in message, message
    assert "e.g. http://cra" not in message


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

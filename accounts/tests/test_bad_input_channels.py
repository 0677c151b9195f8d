"""The bad-input corpus (bad_inputs.yaml) through every way in: the browser forms, the command line
and file uploads (CLI `account_onboard --from-file` and the upload page). Every case must be refused
with its message under its field, with zero AWS calls and zero rows written.

The services' own test (test_validators.py) is the reference; here only the channel differs. Where
a channel's own field validation speaks first (Django's form fields, argparse), its message is
listed below with the reason, so that every deviation from the corpus is explicit.
"""

from __future__ import annotations

import html
import io
import re

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from accounts.forms import AgentForm, OnboardForm
from accounts.models import EcrAccount
from accounts.tests.bad_inputs import (
    VALID_INPUTS,
    BadInput,
    as_params,
    inventory_counts,
    load_bad_inputs,
    make_existing_inventory,
)
from accounts.validators import SURROUNDING_WHITESPACE, has_surrounding_whitespace
from provisioning import bulkfile

ACCOUNT_CASES = load_bad_inputs(targets={"account"})
AGENT_CASES = load_bad_inputs(targets={"agent"})
UPLOAD_CASES = load_bad_inputs(targets={"upload"})

# --- what each channel says instead of the service's message ---------------------------------------

# The forms' own fields validate first (their error stands; the service's is not repeated): a value
# longer than the field's max_length gets Django's "Ensure this value has at most N characters",
# and these get the form field's message.
FORM_EXPECT = {
    "account-id-blank": "This field is required.",
    "agent-name-blank": "This field is required.",
    "server-url-not-snyk": "Select a valid choice.",  # ChoiceField
    "agent-kind-group": "Select a valid choice.",
}
FORM_EXPECT.update(
    {case.id: "Select a valid choice." for case in ACCOUNT_CASES if case.field == "regions"}
)  # MultipleChoiceField over botocore's ECR regions
FORMS = {"account": OnboardForm, "agent": AgentForm}


def form_expect(case: BadInput) -> str:
    if case.id in PADDED:
        return SURROUNDING_WHITESPACE  # the value inside the spaces is valid: only the spaces are wrong
    max_length = getattr(FORMS[case.target].base_fields[case.field], "max_length", None)
    if max_length is not None and len(case.value) > max_length:
        return f"Ensure this value has at most {max_length} characters"
    return FORM_EXPECT.get(case.id, case.expect)


CLI_EXPECT = {
    "account-id-blank": "give ACCOUNT_ID",  # the positional argument is optional only for --from-file
    "account-id-duplicate": "already in the portal",  # checked before the build
    "agent-kind-group": "invalid choice: 'group'",  # argparse choices
}
# argparse errors: call_command raises CommandError with returncode 1; `manage.py` itself exits 2.
CLI_ARGPARSE = {"agent-kind-group"}

# Cases whose value is a valid one with spaces or a line break around it: nothing is trimmed. Forms and
# uploads check the rules on what is inside the spaces and say only to remove them; the command line
# checks the value as given (the rule it breaks).
PADDED = {case.id for case in ACCOUNT_CASES + AGENT_CASES if has_surrounding_whitespace(case.value)}


def form_cases(cases: list[BadInput]) -> list:
    return as_params(cases)


@pytest.fixture
def existing(db, aws):
    """The corpus's inventory (agent cra-existing, account 111122223333); AWS counter at zero."""
    agent = make_existing_inventory()
    aws.calls.clear()
    return agent


def assert_untouched(aws, before):
    assert inventory_counts() == before, "rows were written"
    assert sum(aws.calls.values()) == 0, f"AWS was called: {dict(aws.calls)}"


# --- forms --------------------------------------------------------------------------------------


def _form_data(case: BadInput, **extra) -> dict:
    data = {key: value for key, value in case.kwargs().items() if value is not None}
    return {**data, **extra}


def _assert_form_refused(response, case: BadInput, expect: str) -> None:
    assert response.status_code == 200, f"{case.id}: status {response.status_code} (not re-rendered)"
    errors = response.context["form"].errors
    assert case.field in errors, f"{case.id}: errors under {sorted(errors)}"
    assert any(expect in message for message in errors[case.field]), (
        f"{case.id}: {expect!r} not in {errors[case.field]}"
    )
    shown = re.search(
        rf'<ul class="errorlist" id="errors-{case.field}">(.*?)</ul>', response.content.decode()
    )
    assert shown, f"{case.id}: no error list under {case.field} on the page"
    assert html.escape(expect) in shown.group(1), f"{case.id}: {expect!r} not shown in {shown.group(1)!r}"


@pytest.mark.parametrize("case", form_cases(ACCOUNT_CASES))
def test_onboarding_wizard_refuses(client, operator, existing, aws, case):
    client.force_login(operator)
    before = inventory_counts()
    response = client.post(reverse("accounts:account_onboard"), _form_data(case, agent=existing.pk))
    _assert_form_refused(response, case, form_expect(case))
    assert_untouched(aws, before)


@pytest.mark.parametrize("case", form_cases(AGENT_CASES))
def test_add_agent_form_refuses(client, admin_user, existing, aws, case):
    client.force_login(admin_user)
    before = inventory_counts()
    response = client.post(reverse("accounts:agent_add"), _form_data(case))
    _assert_form_refused(response, case, form_expect(case))
    assert_untouched(aws, before)


def test_the_corpus_has_padded_values():
    assert len(PADDED) >= 5, PADDED


@pytest.mark.parametrize("case", as_params(case for case in ACCOUNT_CASES if case.id in PADDED))
def test_the_wizard_says_why_a_padded_value_is_refused(client, operator, existing, aws, case):
    client.force_login(operator)
    response = client.post(reverse("accounts:account_onboard"), _form_data(case, agent=existing.pk))
    # Only the hint: the value inside the spaces is valid, so no rule's error beside it.
    assert response.context["form"].errors[case.field] == [SURROUNDING_WHITESPACE]
    assert not EcrAccount.objects.filter(account_id=case.kwargs()["account_id"].strip()).exists()


# --- command line -------------------------------------------------------------------------------

ACCOUNT_FLAGS = {
    "alias": "--alias",
    "external_id": "--external-id",
    "management_role_arn": "--management-role-arn",
    "management_external_id": "--management-external-id",
    "broker_client_url": "--broker-client-url",
    "cr_agent_url": "--cr-agent-url",
    "broker_token": "--broker-token",
    "broker_server_url": "--broker-server-url",
}
AGENT_FLAGS = {
    "kind": "--kind",
    "account_id": "--account-id",
    "iam_name": "--iam-name",
    "policy_name": "--policy-name",
    "management_role_arn": "--management-role-arn",
    "management_external_id": "--management-external-id",
}


def account_onboard_args(case: BadInput, agent_name: str) -> list[str]:
    values = case.kwargs()
    args = ["--agent", agent_name, "--inline"]
    args += [f"--region={region}" for region in values["regions"]]
    args += [f"{flag}={values[field]}" for field, flag in ACCOUNT_FLAGS.items()]
    return [*args, "--", values["account_id"]]


def agent_add_args(case: BadInput) -> list[str]:
    values = case.kwargs()
    args = ["--inline", *(f"{flag}={values[field]}" for field, flag in AGENT_FLAGS.items())]
    return [*args, "--", values["name"]]


def _assert_cli_refused(exc: CommandError, case: BadInput) -> None:
    message = str(exc)
    expect = CLI_EXPECT.get(case.id, case.expect)
    assert exc.returncode == (1 if case.id in CLI_ARGPARSE else 2), f"{case.id}: exit {exc.returncode}"
    assert case.field in message.lower().replace("-", "_"), f"{case.id}: field not named in {message!r}"
    assert expect in message, f"{case.id}: {expect!r} not in {message!r}"


@pytest.mark.parametrize("case", as_params(ACCOUNT_CASES))
def test_account_onboard_command_refuses(existing, aws, case):
    before = inventory_counts()
    with pytest.raises(CommandError) as exc:
        call_command("account_onboard", *account_onboard_args(case, existing.name), stdout=io.StringIO())
    _assert_cli_refused(exc.value, case)
    assert_untouched(aws, before)


@pytest.mark.parametrize("case", as_params(AGENT_CASES))
def test_agent_add_command_refuses(existing, aws, case):
    before = inventory_counts()
    with pytest.raises(CommandError) as exc:
        call_command("agent_add", *agent_add_args(case), stdout=io.StringIO(), stderr=io.StringIO())
    _assert_cli_refused(exc.value, case)
    assert_untouched(aws, before)


# --- uploads: one account case as one CSV row ---------------------------------------------------

UPLOADABLE = [case for case in ACCOUNT_CASES if case.field in bulkfile.COLUMNS]
# The row number of the bad row: line 3 (line 2 is a good account, so the report must pick the row).
GOOD_ROW = {**VALID_INPUTS["account"], "account_id": "300000000001", "management_role_arn": ""}


def _cells(values: dict) -> dict[str, str]:
    cells = {column: values.get(column, "") for column in bulkfile.COLUMNS}
    if isinstance(cells["regions"], list):
        cells["regions"] = " ".join(cells["regions"])
    return cells


def csv_for(case: BadInput) -> bytes:
    import csv

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(bulkfile.COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerow(_cells(GOOD_ROW))
    writer.writerow(_cells(case.kwargs()))
    return out.getvalue().encode()


def onboard_file(tmp_path, content: bytes, filename: str, agent_name: str) -> str:
    path = tmp_path / filename
    path.write_bytes(content)
    out = io.StringIO()
    call_command("account_onboard", "--from-file", str(path), "--agent", agent_name, "--plan", stdout=out)
    return out.getvalue()


def upload(client, agent, content: bytes, filename: str):
    file = io.BytesIO(content)
    file.name = filename
    return client.post(
        reverse("accounts:account_onboard_file"), {"agent": agent.pk, "max_concurrency": 2, "file": file}
    )


def problems_shown(body: str) -> list[tuple[str, str, str]]:
    """(row, field, message) of every line of the page's report table."""
    rows = re.findall(
        r"<tr><td>([^<]*)</td><td class=\"mono\">[^<]*</td><td class=\"mono\">([^<]*)</td><td>(.*?)</td></tr>",
        body,
        flags=re.S,
    )
    return [(row, field, html.unescape(message)) for row, field, message in rows]


# What the file check says instead of the service's message (it checks these before the build).
UPLOAD_EXPECT = {
    "account-id-blank": "This field is required.",
    "account-id-duplicate": "already in the portal (status draft)",
}


def upload_expect(case: BadInput) -> str:
    if case.id in PADDED:
        return SURROUNDING_WHITESPACE
    return UPLOAD_EXPECT.get(case.id, case.expect)


@pytest.mark.parametrize("case", as_params(UPLOADABLE))
def test_account_onboard_from_file_refuses_the_row(tmp_path, existing, aws, case):
    before = inventory_counts()
    with pytest.raises(CommandError) as exc:
        onboard_file(tmp_path, csv_for(case), "accounts.csv", existing.name)
    report = str(exc.value)
    assert exc.value.returncode == 2
    assert "1 of 2 rows is invalid; nothing was saved or sent to AWS" in report
    lines = re.findall(r"^  row (\d+)[^:]*: (\w+): (.*)$", report, flags=re.M)
    assert {(row, field) for row, field, _ in lines} >= {("3", case.field)}, report
    assert {row for row, _, _ in lines} == {"3"}, report
    assert any(field == case.field and upload_expect(case) in message for _, field, message in lines), report
    assert_untouched(aws, before)


@pytest.mark.parametrize("case", as_params(UPLOADABLE))
def test_upload_page_refuses_the_row(client, operator, existing, aws, case):
    client.force_login(operator)
    before = inventory_counts()
    response = upload(client, existing, csv_for(case), "accounts.csv")
    assert response.status_code == 400
    shown = problems_shown(response.content.decode())
    assert {row for row, _, _ in shown} == {"3"}, shown
    assert any(field == case.field and upload_expect(case) in message for _, field, message in shown), shown
    assert_untouched(aws, before)


@pytest.mark.parametrize("case", as_params(c for c in UPLOADABLE if c.id in PADDED))
def test_an_upload_says_why_a_padded_cell_is_refused(existing, aws, case):
    report = bulkfile.load(existing, csv_for(case), "accounts.csv")
    assert [(p.row, p.message) for p in report.problems if p.field == case.field] == [
        (3, SURROUNDING_WHITESPACE)
    ]  # only the hint: the value inside the spaces is valid
    assert sum(aws.calls.values()) == 0


# --- uploads: whole files (the corpus's `upload` target) --------------------------------------------

# The upload form itself refuses these before the file is read (its message, same meaning).
PAGE_EXPECT = {"upload-empty-file": "The submitted file is empty.", "upload-huge-file": "at most 524,288"}


def _file_problem(case: BadInput) -> str:
    return "file: " if case.field == "file" else f": {case.field}: "


@pytest.mark.parametrize("case", as_params(UPLOAD_CASES))
def test_account_onboard_from_file_refuses_the_file(tmp_path, existing, aws, case):
    before = inventory_counts()
    with pytest.raises(CommandError) as exc:
        onboard_file(tmp_path, case.content(), case.filename, existing.name)
    report = str(exc.value)
    assert exc.value.returncode == 2, report
    assert "nothing was saved or sent to AWS" in report
    line = next((line for line in report.splitlines() if _file_problem(case) in line), "")
    assert case.expect in line, f"{case.id}: {case.expect!r} not reported under {case.field}: {report}"
    assert_untouched(aws, before)


@pytest.mark.parametrize("case", as_params(UPLOAD_CASES))
def test_upload_page_refuses_the_file(client, operator, existing, aws, case):
    client.force_login(operator)
    before = inventory_counts()
    response = upload(client, existing, case.content(), case.filename)
    body = response.content.decode()
    if case.id in PAGE_EXPECT:
        assert response.status_code == 200
        (error,) = response.context["form"].errors["file"]
        assert PAGE_EXPECT[case.id] in error and html.escape(error) in body
    else:
        assert response.status_code == 400
        shown = problems_shown(body)
        want_field = "" if case.field == "file" else case.field
        assert any(field == want_field and case.expect in message for _, field, message in shown), shown
    assert 'id="confirm-plan"' not in body
    assert_untouched(aws, before)


# A confirm page posts its rows back as JSON (BulkReport.records()): nested past any row's shape.
NESTED_RECORDS = {
    "lists": "[" * 5000,
    "in-a-row": '[[2,{"alias":' + "[" * 5000 + '"x"' + "]" * 5000 + "}]]",
    "mappings": '{"a":' * 5000 + "1" + "}" * 5000,
}


@pytest.mark.parametrize("records", [pytest.param(v, id=k) for k, v in NESTED_RECORDS.items()])
def test_the_confirm_step_refuses_nested_records(client, operator, existing, aws, records):
    client.force_login(operator)
    before = inventory_counts()
    response = client.post(
        reverse("accounts:account_onboard_file"),
        {"agent": existing.pk, "max_concurrency": 2, "records": records, "plan_digest": "0" * 64},
    )
    assert response.status_code == 400
    shown = problems_shown(response.content.decode())
    assert any(field == "" and "too deeply nested" in message for _, field, message in shown), shown
    assert 'id="confirm-plan"' not in response.content.decode()
    assert_untouched(aws, before)


def test_the_upload_corpus_covers_the_issue():
    ids = {case.id for case in UPLOAD_CASES}
    for needed in ("wrong-columns", "missing", "duplicate-account-ids", "huge-file", "latin-1", "empty-file"):
        assert any(needed in case_id for case_id in ids), needed
    formulas = "".join(case.value for case in UPLOAD_CASES if "formula" in case.id)
    for start in ("=cmd|' /C calc'!A0", ",+1,", "@SUM(1)", ",-2,"):
        assert start in formulas
    assert any("yaml-alias" in i for i in ids) and any("yaml-python-tag" in i for i in ids)
    assert {"upload-nested-lists-json", "upload-nested-mapping-400", "upload-nested-cell"} <= ids

"""Bulk onboarding from a file: every row checked first, one plan, one run, coalesced agent writes."""

import csv
import io
import json
import re
import threading
import time

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from accounts import services as account_services
from accounts.choices import Lifecycle
from accounts.models import AgentIdentity, BrokerInstance, EcrAccount, ExternalId
from portal.models import AuditEntry
from provisioning import bulkfile, lifecycle, services
from provisioning.choices import RunKind, RunStatus
from provisioning.models import Operation, Run, RunLogEntry

from .conftest import AGENT_ACCOUNT, iam_in, make_management_role
from .test_lifecycle import hand_made_setup

HEADER = list(bulkfile.COLUMNS)


def row(account_id, **overrides):
    values = {
        "account_id": account_id,
        "alias": f"team-{account_id[-3:]}",
        "regions": "us-east-1 eu-west-1",
        "management_role_arn": f"arn:aws:iam::{account_id}:role/PortalManagement",
        "management_external_id": "",
        "external_id": "",
        "broker_client_url": "http://broker.internal:8000",
        "cr_agent_url": "http://cra.internal:8081",
    }
    values.update(overrides)
    return values


def csv_file(tmp_path, rows, name="accounts.csv", header=None):
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header or HEADER, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path = tmp_path / name
    path.write_text(out.getvalue())
    return path


def ids(count, first=300000000000):
    return [str(first + i) for i in range(count)]


@pytest.fixture
def agent(db, aws):
    return account_services.agent_create(
        name="cra",
        kind="role",
        account_id=AGENT_ACCOUNT,
        management_role_arn=make_management_role(AGENT_ACCOUNT),
    )


def counts():
    models = (EcrAccount, ExternalId, BrokerInstance, Run, Operation, RunLogEntry, AuditEntry)
    return {m.__name__: m.objects.count() for m in models}


def onboard_file(path, *args):
    out = io.StringIO()
    call_command("account_onboard", "--from-file", str(path), "--agent", "cra", *args, stdout=out)
    return out.getvalue()


def test_fifty_rows_with_three_bad_are_refused_whole_then_the_fixed_file_is_onboarded_in_one_run(
    transactional_db, agent, aws, tmp_path
):
    accounts = ids(50)
    rows = [row(a) for a in accounts]
    rows[4] = row("12345")  # line 6
    rows[17] = row(accounts[17], alias='=HYPERLINK("http://evil")')  # line 19
    rows[30] = row(accounts[2])  # line 32: the same account as line 4
    before = counts()
    aws.calls.clear()
    with pytest.raises(CommandError) as exc:
        onboard_file(csv_file(tmp_path, rows), "--inline")
    report = str(exc.value)
    assert exc.value.returncode == 2
    assert "3 of 50 rows are invalid; nothing was saved or sent to AWS" in report
    assert "row 6 (12345): account_id: An AWS account id is exactly 12 digits." in report
    assert f"row 19 ({accounts[17]}): alias: starts with '='" in report
    assert f"row 32 ({accounts[2]}): account_id: duplicate of row 4" in report
    # Every problem is listed (row 6's management role ARN names the bad id too), all on 3 rows.
    assert set(re.findall(r"\n  row (\d+) ", report)) == {"6", "19", "32"}
    assert sum(aws.calls.values()) == 0  # not even a read
    assert counts() == before  # not one row

    # The fixed file: one plan, then one bulk run.
    rows[4], rows[17], rows[30] = row(accounts[4]), row(accounts[17]), row(accounts[30])
    path = csv_file(tmp_path, rows)
    plan_text = onboard_file(path, "--plan")
    assert aws.write_calls() == 0 and counts() == before
    # 50 service roles and the draft agent's own role, which the run creates first.
    assert plan_text.count("iam:CreateRole") == 51 and plan_text.count("iam:PutRolePolicy") == 1

    text = onboard_file(path, "--inline", "--max-concurrency", "8")
    run = Run.objects.get(kind=RunKind.BULK)
    assert run.status == RunStatus.SUCCEEDED, run.explanation
    assert f"Run {run.pk} succeeded: 50 of 50 accounts onboarded." in text
    assert run.options == {"max_concurrency": 8, "failure_tolerance": 50}
    assert set(EcrAccount.objects.values_list("status", flat=True)) == {Lifecycle.ACTIVE}
    assert BrokerInstance.objects.count() == 100  # two regions each
    assert run.result["accounts"] == dict.fromkeys(accounts, "succeeded")
    # Coalesced: the agent's permissions were written once, for all fifty.
    agent_writes = Operation.objects.filter(run=run, resource_arn=agent.arn, action="iam:PutRolePolicy")
    assert agent_writes.count() == 1
    policy = iam_in(AGENT_ACCOUNT).get_inline_policy("role", "SnykCraEc2Role", "SnykCraAssumeRolePolicy")
    assert sorted(s["Resource"] for s in policy["Statement"]) == [
        f"arn:aws:iam::{a}:role/SnykEcrServiceRole" for a in accounts
    ]
    for account_id in (accounts[0], accounts[17], accounts[49]):
        assert iam_in(account_id).get_role("SnykEcrServiceRole") is not None
    per_account = Operation.objects.filter(run=run).exclude(account_id=AGENT_ACCOUNT)
    assert per_account.count() == 150  # policy, role, attachment in each account
    assert Operation.objects.filter(run=run).count() == aws.write_calls()
    steps = [step["label"] for step in run.plan["steps"]]
    assert sorted(s for s in steps if s.startswith("account ")) == [f"account {a}" for a in accounts]
    progress = [e.message for e in run.log_entries.filter(message__contains=" done)")]
    assert len(progress) == 50 and progress[-1].endswith("(50 of 50 done)")


def _fail_create_role_for(monkeypatch, aws, failing):
    real_write = aws.Iam.write

    def write(self, method, **params):
        if method == "create_role" and self.access.account_id in failing:
            raise aws.AwsError("AccessDenied", "not allowed here")
        return real_write(self, method, **params)

    monkeypatch.setattr(aws.Iam, "write", write)


def _request(agent, rows, tmp_path, spread=False, **options):
    report = lifecycle.bulk_validate(
        agent=agent, content=csv_file(tmp_path, rows).read_bytes(), filename="a.csv"
    )
    assert report.ok, report.as_text()
    run = lifecycle.accounts_bulk_onboard(report=report, enqueue=False, **options)
    assert run.claim()
    from provisioning import runner

    return runner.execute(run, spread=spread)


def test_failure_tolerance_stops_starting_new_accounts(
    transactional_db, agent, aws, tmp_path, monkeypatch, client, django_user_model
):
    accounts = ids(10)
    _fail_create_role_for(monkeypatch, aws, set(accounts[:3]))
    run = _request(agent, [row(a) for a in accounts], tmp_path, max_concurrency=1, failure_tolerance=1)
    assert run.status == RunStatus.FAILED
    assert "0 of 10 accounts onboarded; 8 not started, after 2 failures (tolerance 1)" in run.explanation
    assert run.result["accounts"] == {
        **dict.fromkeys(accounts[:2], "failed"),
        **dict.fromkeys(accounts[2:], "not started"),
    }
    touched = set(Operation.objects.filter(run=run).values_list("account_id", flat=True))
    assert touched == {accounts[0], accounts[1], AGENT_ACCOUNT}  # nothing started after the second failure
    assert set(EcrAccount.objects.values_list("status", flat=True)) == {Lifecycle.FAILED}
    # The run page says it per account.
    # (a superuser: transactional tests flush the role groups the migrations made)
    client.force_login(django_user_model.objects.create_superuser("root", password="pw-root"))
    body = client.get(reverse("provisioning:run_progress", args=[run.pk]), secure=True).content.decode()
    assert "<b>0</b> of 10 accounts done, <b>2</b> failed, 8 not started." in body
    assert "failure tolerance 1" in body and f'href="/accounts/{accounts[1]}/"' in body


def test_strict_failure_tolerance_bounds_failures_to_tolerance_plus_one(
    transactional_db, agent, aws, tmp_path, monkeypatch
):
    """As StackSets' default: concurrency never exceeds the failures still tolerated."""
    accounts = ids(12)
    _fail_create_role_for(monkeypatch, aws, set(accounts))
    run = _request(agent, [row(a) for a in accounts], tmp_path, max_concurrency=8, failure_tolerance=2)
    outcome = run.result["accounts"]
    assert sorted(outcome.values()).count("failed") == 3  # K + 1, not the 8 running at once
    assert sorted(outcome.values()).count("not started") == 9


def test_concurrency_is_bounded_by_max_concurrency(transactional_db, agent, aws, tmp_path, monkeypatch):
    real_write = aws.Iam.write
    state = {"now": 0, "peak": 0}
    lock = threading.Lock()

    def slow(self, method, **params):
        if method != "create_policy":
            return real_write(self, method, **params)
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.05)
        try:
            return real_write(self, method, **params)
        finally:
            with lock:
                state["now"] -= 1

    monkeypatch.setattr(aws.Iam, "write", slow)
    run = _request(agent, [row(a) for a in ids(12)], tmp_path, max_concurrency=4)
    assert run.status == RunStatus.SUCCEEDED, run.explanation
    assert 1 < state["peak"] <= 4


def test_chunks_smaller_than_the_concurrency_are_taken_several_at_once(
    transactional_db, agent, aws, tmp_path, monkeypatch, settings
):
    """Spread in chunks of 2 at max_concurrency 4 (no other worker here: eager, so this one takes
    them all): two chunks at a time, so as many accounts in flight as without chunks, never more."""
    from portal.celery import app
    from provisioning.models import RunChunk

    settings.RUN_CHUNK_SIZE = 2
    real_write = aws.Iam.write
    state = {"now": 0, "peak": 0}
    lock = threading.Lock()

    def slow(self, method, **params):
        if method != "create_policy":
            return real_write(self, method, **params)
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.1)
        try:
            return real_write(self, method, **params)
        finally:
            with lock:
                state["now"] -= 1

    monkeypatch.setattr(aws.Iam, "write", slow)
    eager, app.conf.task_always_eager = app.conf.task_always_eager, True
    try:
        run = _request(agent, [row(a) for a in ids(12)], tmp_path, spread=True, max_concurrency=4)
    finally:
        app.conf.task_always_eager = eager
    assert run.status == RunStatus.SUCCEEDED, run.explanation
    chunks = list(RunChunk.objects.filter(run=run).order_by("index"))
    assert [len(c.steps) for c in chunks] == [2] * 6
    assert {c.status for c in chunks} == {"done"}
    assert 2 < state["peak"] <= 4  # one chunk alone holds at most 2 (its size)
    assert run.result["accounts"] == dict.fromkeys(ids(12), "succeeded")
    assert Operation.objects.filter(run=run, action="iam:PutRolePolicy").count() == 1  # the agent's, once


def test_a_yaml_file_with_a_hand_made_account_plans_its_adoption(agent, aws, tmp_path):
    services.agent_setup(agent=agent, enqueue=False)
    hand = "310000000001"
    hand_made_setup(hand, agent.arn, extra_actions=("ecr:PutImage",), extra_policy=False)
    path = tmp_path / "accounts.yaml"
    path.write_text(
        "accounts:\n"
        f"  - account_id: '{hand}'\n"
        "    regions: [us-east-1, eu-west-1]\n"
        f"    management_role_arn: arn:aws:iam::{hand}:role/PortalManagement\n"
        "  - account_id: 310000000002\n"  # a 12-digit number is unambiguous
        "    regions: us-east-1\n"
        "    management_role_arn: arn:aws:iam::310000000002:role/PortalManagement\n"
    )
    aws.calls.clear()
    text = onboard_file(path, "--plan")
    assert aws.write_calls() == 0
    assert "2 accounts from the file, 1 with existing resources to adopt (310000000001)" in text
    assert (
        f"Adopt policy arn:aws:iam::{hand}:policy/AmazonEC2ContainerRegistryReadOnlyForSnyk, which " in text
    )
    assert "no sts:ExternalId condition" in text
    assert not EcrAccount.objects.exists()


# --- whole-file refusals -------------------------------------------------------------------------


def _csv(*lines):
    return ("\n".join(lines) + "\n").encode()


GOOD = "300000000001,a,us-east-1,,,,,"


@pytest.mark.parametrize(
    ("content", "filename", "message"),
    [
        (
            _csv("account_id,alias,regions,colour", "300000000001,a,us-east-1,red"),
            "a.csv",
            "unknown column 'colour'",
        ),
        (_csv("alias,regions", "a,us-east-1"), "a.csv", "missing column account_id"),
        (
            _csv("account_id,regions,regions", "300000000001,x,y"),
            "a.csv",
            "column 'regions' appears more than once",
        ),
        (_csv("=cmd,regions", "1,2"), "a.csv", "starts like a spreadsheet formula"),
        (b"account_id,regions\n" + b"300000000001,us-east-1\n" * 30000, "a.csv", "at most 524,288 are read"),
        (
            _csv(
                ",".join(bulkfile.COLUMNS),
                *[f"3{i:011d},,us-east-1,,,,," for i in range(bulkfile.MAX_ROWS + 1)],
            ),
            "a.csv",
            f"more than {bulkfile.MAX_ROWS} rows",
        ),
        ("account_id,regions\n3000000000\xe9,x\n".encode("latin-1"), "a.csv", "not UTF-8"),
        (b"account_id,regions\n\x00\x01", "a.csv", "binary content"),
        (b"", "a.csv", "the file is empty"),
        (_csv(",".join(bulkfile.COLUMNS)), "a.csv", "no rows"),
        (
            b"- &a {account_id: '300000000001', regions: us-east-1}\n- *a\n",
            "a.yaml",
            "aliases (*name) are not",
        ),
        (b"- {account_id: '300000000001', account_id: '300000000002'}\n", "a.yaml", "duplicate key"),
        (b"- !!python/object:os.system {}\n", "a.yaml", "not a readable YAML file"),
        (b"accounts: 3\n", "a.yaml", "expected a list of accounts"),
        (
            b"- {account_id: '300000000001', regions: x, colour: red}\n",
            "a.yaml",
            "unknown column 'colour'",
        ),
        # Nested by indentation: 400 mappings, no bracket in sight.
        ("".join("  " * i + "a:\n" for i in range(400)).encode(), "a.yaml", "too deeply nested"),
        (
            b"[" * (bulkfile.MAX_NESTING + 1) + b"]" * (bulkfile.MAX_NESTING + 1),
            "a.json",
            "too deeply nested",
        ),
    ],
)
def test_files_refused_as_a_whole(agent, content, filename, message):
    report = bulkfile.load(agent, content, filename)
    assert not report.ok and not report.rows
    assert message in report.as_text()


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        ("300000000001,+SUM(A1),us-east-1,,,,,", "alias", "starts with '+'"),
        ("300000000001,@x,us-east-1,,,,,", "alias", "starts with '@'"),
        ("300000000001,a,us-east-1,,,-2+3,,", "external_id", "starts with '-'"),
        ("300000000001,a,,,,,,", "regions", "Choose at least one region."),
        ("300000000001,a,mars-1,,,,,", "regions", "mars-1"),
        ("300000000001,a,us-east-1,arn:aws:iam::1:role/x,,,,", "management_role_arn", ""),
        ("300000000001,a,us-east-1,,,,http://broker,", "broker_client_url", ""),
        ("300000000001,a,us-east-1", "row", "has 3 cells, the header has 8"),
    ],
)
def test_bad_cells_name_their_row_and_field(agent, line, field, message):
    report = bulkfile.load(
        agent, _csv(",".join(bulkfile.COLUMNS), GOOD.replace("01,", "02,", 1), line), "a.csv"
    )
    assert report.bad_rows == [3]
    (problem,) = [p for p in report.problems if p.field == field]
    assert problem.row == 3 and message in problem.message


def test_an_account_already_in_the_portal_is_a_bad_row(agent):
    account_services.account_create(agent=agent, account_id="300000000001", regions=["us-east-1"])
    report = bulkfile.load(agent, _csv(",".join(bulkfile.COLUMNS), GOOD), "a.csv")
    (problem,) = report.problems
    assert (problem.row, problem.field) == (2, "account_id")
    assert "already in the portal (status draft)" in problem.message


def test_a_yaml_account_id_written_as_a_short_number_is_refused(agent):
    report = bulkfile.load(agent, b"- {account_id: 12345678901, regions: us-east-1}\n", "a.yaml")
    (problem,) = report.problems
    assert "write account ids in quotes" in problem.message


def test_an_agent_that_cannot_hold_the_file_is_refused_before_anything_is_saved(db, aws):
    user_agent = account_services.agent_create(name="small", kind="user", account_id=AGENT_ACCOUNT)
    # 900 accounts already served: with the file's 400 they need more than 10 managed policies.
    EcrAccount.objects.bulk_create(
        EcrAccount(account_id=f"4{i:011d}", agent=user_agent, status=Lifecycle.ACTIVE) for i in range(900)
    )
    lines = [f"3{i:011d},,us-east-1,,,,," for i in range(400)]
    report = bulkfile.load(user_agent, _csv(",".join(bulkfile.COLUMNS), *lines), "a.csv")
    assert not report.ok
    assert (
        "managed policies" in report.as_text() and "Split the accounts over more agents" in report.as_text()
    )
    assert not EcrAccount.objects.filter(account_id__startswith="3").exists()


def test_confirmed_records_round_trip_with_the_generated_external_ids(agent, tmp_path):
    report = bulkfile.load(agent, csv_file(tmp_path, [row(a) for a in ids(3)]).read_bytes(), "a.csv")
    generated = [r.values["external_id"] for r in report.rows]
    assert all(generated) and len(set(generated)) == 3
    again = bulkfile.load_records(agent, report.records())
    assert again.ok
    assert [r.values for r in again.rows] == [r.values for r in report.rows]
    assert [r.row for r in again.rows] == [2, 3, 4]
    assert not bulkfile.load_records(agent, '[[2, {"account_id": "1", "colour": "red"}]]').ok
    assert AgentIdentity.objects.count() == 1


def test_brackets_inside_confirmed_values_are_not_nesting(agent):
    values = {"account_id": "300000000001", "regions": "us-east-1", "alias": '[{"' * 30 + "\\"}
    assert bulkfile.load_records(agent, json.dumps([[2, values]])).ok
    nested: list = []
    for _ in range(bulkfile.MAX_NESTING):
        nested = [nested]
    deep = json.dumps([[2, values, nested]])
    assert "too deeply nested" in bulkfile.load_records(agent, deep).as_text()


def test_an_unreadable_account_in_the_file_is_named_in_the_plan_error(agent, aws, tmp_path):
    accounts = ids(3)
    rows = [row(a) for a in accounts]
    rows[1]["management_role_arn"] = "arn:aws:iam::999999999999:role/PortalManagement"  # lands elsewhere
    report = lifecycle.bulk_validate(
        agent=agent, content=csv_file(tmp_path, rows).read_bytes(), filename="a.csv"
    )
    assert report.ok
    aws.calls.clear()
    with pytest.raises(aws.AwsError) as exc:
        lifecycle.plan_bulk(report)
    assert exc.value.code == "WrongAccount"
    assert exc.value.message.startswith(f"row 3, account {accounts[1]}: ")
    assert aws.write_calls() == 0


def test_when_aws_becomes_unreachable_mid_run_each_account_says_how_far_it_got(
    transactional_db, agent, aws, tmp_path, monkeypatch
):
    """Issue 11, item 5: not "6 of 6 failed" after two accounts were done."""
    accounts = ids(6)
    real_write, state = aws.Iam.write, {"attached": 0}
    real_client_for = aws.sessions.client_for

    def write(self, method, **params):
        request_id = real_write(self, method, **params)
        if method == "attach_role_policy":
            state["attached"] += 1
        return request_id

    def client_for(access, service):  # fault injection: the network goes after the second account
        if state["attached"] >= 2:
            raise aws.AwsError("EndpointConnectionError", "Could not connect to the endpoint URL")
        return real_client_for(access, service)

    monkeypatch.setattr(aws.Iam, "write", write)
    monkeypatch.setattr(aws.sessions, "client_for", client_for)
    run = _request(agent, [row(a) for a in accounts], tmp_path, max_concurrency=1)
    assert run.status == RunStatus.FAILED
    assert run.result["accounts"] == {
        **dict.fromkeys(accounts[:2], "succeeded"),
        **dict.fromkeys(accounts[2:], "failed"),
    }
    assert "EndpointConnectionError" in run.result["errors"][accounts[2]]
    # The agent's permissions could not be written either: the run says so, and how far each got.
    assert "EndpointConnectionError" in run.explanation
    assert "Accounts: 2 succeeded, 4 failed (of 6)." in run.explanation

"""The write path under concurrency: accounts applied on many threads never wait for each other's
AWS calls or bookkeeping, operations stay numbered uniquely and in order, and a run's database
work grows by a constant per account."""

import json
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts import services as account_services
from provisioning import applier, lifecycle, runner, services
from provisioning.changes import Change
from provisioning.choices import OperationStatus, RunKind, RunStatus
from provisioning.models import Run

from .conftest import AGENT_ACCOUNT, BASE_ACCOUNT, make_management_role

THREADS = 32
DELAY = 0.05  # what the bench's proxy adds to every AWS call


class InFlight:
    """Counts the calls inside a block at once (the most seen), each taking DELAY."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = self.most = 0

    def __enter__(self) -> None:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def __exit__(self, *exc: object) -> None:
        time.sleep(DELAY)
        with self._lock:
            self.now -= 1


def account_id(i: int) -> str:
    return f"{400000000000 + i}"


def role_access(i: int):
    from provisioning import aws

    return aws.Access(account_id(i), f"arn:aws:iam::{account_id(i)}:role/PortalManagement")


def roles_in(account: str) -> set[str]:
    """The role names in one account, read with a plain boto3 client of its own (not the portal's)."""
    creds = boto3.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/PortalManagement", RoleSessionName="check"
    )["Credentials"]
    iam = boto3.client(
        "iam",
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )
    return {role["RoleName"] for role in iam.list_roles()["Roles"]}


def test_accounts_share_one_client_and_each_call_lands_in_its_own_account(aws, monkeypatch):
    """Building a boto3 client takes milliseconds of CPU (half a bulk run's CPU when every account
    had its own): 16 accounts on 16 threads build one IAM client, and each account's write still
    lands in that account alone."""
    built: Counter[str] = Counter()
    real_client = boto3.session.Session.client

    def counting_client(self, service, *args, **kwargs):
        built[service] += 1
        return real_client(self, service, *args, **kwargs)

    aws.sessions.client_for(aws.Access(BASE_ACCOUNT), "sts")  # the base STS client, built once
    monkeypatch.setattr(boto3.session.Session, "client", counting_client)
    trust = {"Version": "2012-10-17", "Statement": []}

    def create_role(i: int) -> None:
        aws.Iam(role_access(i)).write(
            "create_role", RoleName=f"made-in-{i}", AssumeRolePolicyDocument=json.dumps(trust)
        )

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(create_role, range(16)))
    assert built == {"iam": 1}
    monkeypatch.undo()
    for i in range(16):
        assert {name for name in roles_in(account_id(i)) if name.startswith("made-in-")} == {f"made-in-{i}"}


def test_the_shared_client_refuses_a_call_made_outside_an_account(aws):
    """The shared client holds no credentials that could act: a call not made through one
    account's handle is refused before anything is sent."""
    aws.Iam(role_access(1))
    shared = aws.sessions._client("iam", "", acting=True)
    aws.calls.clear()
    with pytest.raises(aws.AwsError, match="NoCredentials"):
        shared.list_roles()
    assert not aws.calls
    with pytest.raises(AttributeError):
        aws.Iam(role_access(1)).client.get_paginator("list_roles")


def claimed_run() -> Run:
    run = Run.objects.create(kind=RunKind.BULK)
    assert run.claim()
    return run


def policy_change(i: int) -> Change:
    document = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "ecr:List*", "Resource": "*"}],
    }
    return Change(
        account_id(i),
        role_access(i),
        "create",
        "iam:CreatePolicy",
        "create_policy",
        {"PolicyName": "ReadOnly", "PolicyDocument": document},
        f"arn:aws:iam::{account_id(i)}:policy/ReadOnly",
        "create the read-only policy",
        after=document,
    )


def test_thirty_two_threads_write_at_once_numbered_uniquely_in_order(transactional_db, aws, monkeypatch):
    run = claimed_run()
    changes = [policy_change(i) for i in range(THREADS)]
    for change in changes:  # the clients (and sessions) first: this measures the recording
        aws.client_for_change(change.access, change.action)
    calls = InFlight()
    writes: list[float] = []

    def slow_write(self, method, **params):  # AWS 50 ms away (moto in this process would hold the GIL)
        with calls:
            return f"req-{params['PolicyName']}-{self.access.account_id}"

    def timed_apply(change: Change) -> None:
        started = time.monotonic()
        try:
            applier.apply_change(run, change, f"account {change.account_id}")
        finally:
            connection.close()
        writes.append(time.monotonic() - started)

    monkeypatch.setattr(aws.Iam, "write", slow_write)
    barrier = threading.Barrier(THREADS)

    def together(change: Change) -> None:
        barrier.wait()
        timed_apply(change)

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        list(pool.map(together, changes))

    # Bounded by SQLite's one writer and this process's CPU (each start is a short transaction), not
    # by any lock held across a call: that would keep it at 1.
    assert calls.most >= 4, f"at most {calls.most} of {THREADS} writes were in flight at once"
    operations = list(run.operations.order_by("sequence"))
    assert [op.sequence for op in operations] == list(range(1, THREADS + 1))
    # Not "numbered as inserted": the number is taken and the row inserted in two statements, so on
    # PostgreSQL a later number may commit first (a transaction around both would make every write
    # wait for the run's row lock again). Numbers are unique and gapless here; order is by number.
    assert {op.status for op in operations} == {OperationStatus.SUCCEEDED}
    assert {op.account_id for op in operations} == {c.account_id for c in changes}
    run.write_progress()
    run.refresh_from_db()
    assert (run.progress_done, run.last_sequence) == (THREADS, THREADS)
    print(f"median write {statistics.median(writes) / DELAY:.2f}x the call's {DELAY * 1000:.0f} ms")


def test_the_counter_continues_after_a_take_over_and_refuses_the_old_holder(transactional_db, aws):
    run = claimed_run()
    applier.apply_change(run, policy_change(1), "account 1")
    stale = Run.objects.get(pk=run.pk)
    Run.objects.filter(pk=run.pk).update(status=RunStatus.QUEUED)  # (as if its lease had run out)
    assert run.claim()  # the new holder
    applier.apply_change(run, policy_change(2), "account 2")
    with pytest.raises(applier.RunLost):
        applier.apply_change(stale, policy_change(3), "account 3")
    assert list(run.operations.order_by("sequence").values_list("sequence", "account_id")) == [
        (1, account_id(1)),
        (2, account_id(2)),
    ]


# --- a run's queries grow by a constant per account ------------------------------------------------


def bulk_file(ids: list[str]) -> bytes:
    lines = ["account_id,regions,management_role_arn"]
    lines += [f"{i},us-east-1,arn:aws:iam::{i}:role/PortalManagement" for i in ids]
    return ("\n".join(lines) + "\n").encode()


def bulk_run_queries(agent, ids: list[str]) -> tuple[int, list[str]]:
    for i in ids:
        make_management_role(i)
    report = lifecycle.bulk_validate(agent=agent, content=bulk_file(ids), filename="accounts.csv")
    assert report.ok, report.as_text()
    run = lifecycle.accounts_bulk_onboard(report=report, max_concurrency=1, enqueue=False)
    assert run.claim()
    with CaptureQueriesContext(connection) as queries:
        runner.execute(run)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.explanation
    assert run.progress_done == run.operations.count() == run.progress_total
    return len(queries), [q["sql"] for q in queries.captured_queries]


def test_a_bulk_run_makes_a_constant_number_of_queries_per_account(transactional_db, aws):
    agent = account_services.agent_create(
        name="cra",
        kind="role",
        account_id=AGENT_ACCOUNT,
        management_role_arn=make_management_role(AGENT_ACCOUNT),
    )
    setup = services.agent_setup(agent=agent, enqueue=False)
    assert setup.claim()
    runner.execute(setup)
    agent.refresh_from_db()
    few, _ = bulk_run_queries(agent, [f"50000000000{i}" for i in range(2)])
    many, sql = bulk_run_queries(agent, [f"51000000000{i}" for i in range(8)])
    per_account = (many - few) / 6
    # Three writes each (policy, role, attachment): per write a start (the counter's update and read,
    # the insert) and a settle; the rest is the account's plan reads and its inventory bookkeeping.
    print(f"{per_account:.1f} queries per account")
    assert per_account <= 14, f"{per_account:.1f} queries per account:\n" + "\n".join(sql)


# --- Run.result is merged, not rewritten ------------------------------------------------------------


def test_outcomes_are_merged_into_the_result_a_few_accounts_at_a_time(db):
    run = Run.objects.create(kind=RunKind.BULK, result={"decisions": {"x": 1}})
    run.merge_result({"1": "succeeded", "2": "failed"}, {"2": "AccessDenied"})
    run.merge_result({"3": "not started"}, {"3": "cancelled before it started"})
    run.merge_result({"2": "succeeded"}, {}, cleared=["2"])  # a later attempt got it through
    run.refresh_from_db()
    assert run.result == {
        "decisions": {"x": 1},  # what others keep there stays
        "accounts": {"1": "succeeded", "2": "succeeded", "3": "not started"},
        "errors": {"3": "cancelled before it started"},
    }
    with CaptureQueriesContext(connection) as queries:
        run.merge_result({"4": "unchanged"}, {})
    assert len(queries) == 1 and "decisions" not in queries[0]["sql"]  # only what changed travels

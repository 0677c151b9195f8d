"""Audit runs: history across audits, the JSON report, 200 accounts read concurrently, new-finding
notification (a real local HTTP webhook), the command line's exit codes, the schedule."""

import io
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts import services as account_services
from accounts.models import EcrAccount
from provisioning import runner, services, tasks
from provisioning.audit import run as audit_run
from provisioning.audit.catalogue import CHECKS
from provisioning.audit.services import audit_request
from provisioning.choices import AuditStatus, RunKind, RunStatus
from provisioning.models import AuditSnapshot, Run

from .conftest import AGENT_ACCOUNT, ECR_ACCOUNTS, make_management_role
from .test_audit_findings import ACCT, audit_now, extra_policy, set_condition, set_principal
from .test_engine import run_inline, setup_agent_and_onboard


@pytest.fixture
def onboarded(inventory):
    agent, accounts = inventory
    setup_agent_and_onboard(agent, accounts)
    return agent, accounts


# --- history -------------------------------------------------------------------------------------


def test_history_shows_when_drift_began_and_ended(onboarded, aws):
    _agent, accounts = onboarded
    account = accounts[0]

    first = audit_now()
    second = audit_now()  # nothing changed: the same snapshot, confirmed again
    history = list(AuditSnapshot.objects.filter(account_id=ACCT))
    assert len(history) == 1
    in_sync = history[0]
    assert in_sync.status == AuditStatus.IN_SYNC and in_sync.run_id == second.pk
    assert in_sync.observed_at < in_sync.confirmed_at
    assert in_sync.observed_at.isoformat() == first.result["observed_at"]

    set_condition(None)  # someone removes the ExternalId condition by hand
    third = audit_now()
    audit_now()  # still drifted: the drifted snapshot is confirmed, its start unchanged
    drifted = AuditSnapshot.objects.get(account_id=ACCT, is_latest=True)
    assert drifted.status == AuditStatus.DRIFTED
    assert drifted.drift_since == drifted.observed_at
    assert drifted.observed_at.isoformat() == third.result["observed_at"]
    assert drifted.observed_at > in_sync.confirmed_at  # drift began between these two audits
    assert {f["code"] for f in drifted.findings} >= {"external-id-missing", "trust-differs"}
    assert EcrAccount.objects.get(account_id=ACCT).drifted is True

    fix = run_inline(services.account_reconcile(accounts=[account], enqueue=False))
    assert fix.status == RunStatus.SUCCEEDED
    last = audit_now()
    history = list(AuditSnapshot.objects.filter(account_id=ACCT).order_by("observed_at"))
    assert [s.status for s in history] == ["in_sync", "drifted", "in_sync"]
    assert [s.is_latest for s in history] == [False, False, True]
    ended = history[2]
    assert ended.run_id == last.pk and ended.drift_since is None
    assert ended.observed_at > history[1].confirmed_at  # drift ended between these two audits
    assert EcrAccount.objects.get(account_id=ACCT).drifted is False
    # The other account never changed: one snapshot across all five audits.
    assert AuditSnapshot.objects.filter(account_id=ECR_ACCOUNTS[1]).count() == 1


def test_history_outlives_the_account_row(onboarded, aws):
    _agent, _accounts = onboarded
    audit_now()
    EcrAccount.objects.filter(account_id=ACCT).delete()
    snapshot = AuditSnapshot.objects.get(account_id=ACCT)
    assert snapshot.ecr_account is None and snapshot.status == AuditStatus.IN_SYNC


# --- the report ----------------------------------------------------------------------------------

FINDING_KEYS = {"code", "severity", "message"}
ACCOUNT_KEYS = {"account_id", "alias", "role_arn", "status", "trusted_principals", "external_ids", "findings"}


def assert_report_shape(document):
    assert set(document) == {"generated_at", "agents", "accounts"}
    assert isinstance(document["generated_at"], str) and "T" in document["generated_at"]
    for agent in document["agents"]:
        assert set(agent) == {"name", "arn", "layout", "findings"}
        assert all(set(f) == FINDING_KEYS for f in agent["findings"])
    for account in document["accounts"]:
        assert set(account) == ACCOUNT_KEYS
        assert account["status"] in ("in_sync", "drifted", "missing", "unreachable")
        assert all(isinstance(p, str) for p in account["trusted_principals"] + account["external_ids"])
        assert all(set(f) == FINDING_KEYS for f in account["findings"])


def test_json_report_has_the_issue_shape(onboarded, aws):
    set_principal({"AWS": "*"})
    out = io.StringIO()
    with pytest.raises(CommandError) as exc:
        call_command("audit", "--inline", "--json", stdout=out, stderr=io.StringIO())
    assert exc.value.returncode == 3
    document = json.loads(out.getvalue())
    assert_report_shape(document)
    assert document["agents"] == [
        {
            "name": "cra",
            "arn": f"arn:aws:iam::{AGENT_ACCOUNT}:role/SnykCraEc2Role",
            "layout": "inline-per-account",
            "findings": [],
        }
    ]
    first, second = document["accounts"]
    assert first["account_id"] == ACCT and first["alias"] == "team-0"
    assert first["role_arn"] == f"arn:aws:iam::{ACCT}:role/SnykEcrServiceRole"
    assert first["status"] == "drifted"
    assert first["trusted_principals"] == ["*"]
    assert first["external_ids"] == [f"ext-{ACCT}"]
    assert {"code": "principal-wildcard", "severity": "critical"} in [
        {"code": f["code"], "severity": f["severity"]} for f in first["findings"]
    ]
    assert second["status"] == "in_sync" and second["findings"] == []


# --- the command line -------------------------------------------------------------------------------


def test_cli_exits_0_when_everything_is_in_sync(onboarded, aws):
    aws.calls.clear()
    out = io.StringIO()
    call_command("audit", "--inline", stdout=out)  # no CommandError: exit status 0
    text = out.getvalue()
    assert f"{ACCT} (team-0) in_sync" in text
    assert "no AWS write made" in text
    assert aws.write_calls() == 0


def test_cli_exits_3_on_drift_without_finding_text_on_stdout_in_json_mode(onboarded, aws):
    # Drift alone (the read-only policy detached) is enough for 3.
    agent, accounts = onboarded
    from .test_audit_findings import attachment_missing

    attachment_missing(agent, accounts)
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError) as exc:
        call_command("audit", "--inline", "--json", "--account", ACCT, stdout=out, stderr=err)
    assert exc.value.returncode == 3
    document = json.loads(out.getvalue())  # stdout is the document alone
    assert [a["account_id"] for a in document["accounts"]] == [ACCT]
    assert document["accounts"][0]["status"] == "drifted"


def test_cli_exits_2_for_an_account_it_does_not_manage(onboarded, aws):
    with pytest.raises(CommandError) as exc:
        call_command("audit", "--inline", "--account", "999999999999")
    assert exc.value.returncode == 2
    assert not Run.objects.filter(kind=RunKind.AUDIT).exists()


def test_cli_exits_1_when_no_worker_finishes_the_audit(onboarded, aws):
    with pytest.raises(CommandError) as exc:
        call_command("audit", "--timeout", "0.5", stdout=io.StringIO())
    assert exc.value.returncode == 1
    assert "still queued" in str(exc.value)


def test_cli_exits_1_when_the_audit_itself_fails(onboarded, aws, monkeypatch):
    def broken(*args, **kwargs):  # fault injection: the snapshot store fails
        raise RuntimeError("disk full")

    monkeypatch.setattr(audit_run, "store_results", broken)
    with pytest.raises(CommandError) as exc:
        call_command("audit", "--inline", stdout=io.StringIO())
    assert exc.value.returncode == 1
    run = Run.objects.get(kind=RunKind.AUDIT)
    assert run.status == RunStatus.ERRORED and "disk full" in run.explanation


# --- 200 accounts, concurrently ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # the bulk onboarding writes from its worker threads
def test_two_hundred_accounts_are_read_concurrently_and_one_unreachable_stops_nobody(aws, settings):
    settings.AUDIT_CONCURRENCY = 16
    agent = account_services.agent_create(
        name="cra",
        kind="role",
        account_id=AGENT_ACCOUNT,
        management_role_arn=make_management_role(AGENT_ACCOUNT),
    )
    ids = [f"{700000000000 + i}" for i in range(200)]
    accounts = [
        account_services.account_create(
            agent=agent, account_id=i, regions=["eu-west-1"], management_role_arn=make_management_role(i)
        )
        for i in ids
    ]
    bulk = services.run_request(
        kind=RunKind.BULK, accounts=accounts, options={"max_concurrency": 16}, enqueue=False
    )
    assert run_inline(bulk).status == RunStatus.SUCCEEDED, bulk.explanation
    broken = ids[57]
    EcrAccount.objects.filter(account_id=broken).update(
        management_role_arn="arn:aws:iam::999999999999:role/PortalManagement"
    )
    aws.calls.clear()

    started = time.monotonic()
    run = audit_now()
    elapsed = time.monotonic() - started

    assert run.status == RunStatus.PARTIAL, run.explanation
    statuses = dict(AuditSnapshot.objects.filter(run=run).values_list("account_id", "status"))
    assert len(statuses) == 200
    assert statuses.pop(broken) == AuditStatus.UNREACHABLE
    assert set(statuses.values()) == {AuditStatus.IN_SYNC}
    # Read concurrently, never more than the configured bound.
    assert 1 < run.result["max_concurrent_reads"] <= 16, run.result["max_concurrent_reads"]
    assert run.progress_done == run.progress_total == 201
    agent_result = run.result["agents"][0]
    assert agent_result["layout"] == "managed"  # 200 ARNs do not fit a role's inline quota
    assert agent_result["findings"] == []
    assert aws.write_calls() == 0, aws.calls
    assert aws.calls["iam:GetAccountAuthorizationDetails"] >= 199  # every reachable account read
    print(f"\n200-account audit: {elapsed:.1f}s, {sum(aws.calls.values())} AWS calls, "
          f"peak {run.result['max_concurrent_reads']} concurrent reads")  # fmt: skip


def test_the_pool_never_exceeds_its_bound(onboarded, aws, settings):
    settings.AUDIT_CONCURRENCY = 1
    run = audit_now()
    assert run.result["max_concurrent_reads"] == 1 and run.result["concurrency"] == 1
    assert run.status == RunStatus.SUCCEEDED


# --- new high findings: WARNING log and webhook ------------------------------------------------------


class Hook:
    def __init__(self):
        self.posts: list[dict] = []
        self.status = 204
        self.lock = threading.Lock()

    def codes(self):
        return sorted(p["code"] for p in self.posts)


@pytest.fixture
def webhook(settings):
    """A real HTTP endpoint on loopback; Celery tasks run eagerly (in this process) for the test."""
    from portal.celery import app

    hook = Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with hook.lock:
                hook.posts.append(body)
            self.send_response(hook.status)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.AUDIT_WEBHOOK_URL = f"http://127.0.0.1:{server.server_address[1]}/hooks/audit"
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = True
    try:
        yield hook
    finally:
        app.conf.task_always_eager = eager
        server.shutdown()
        server.server_close()


class Records(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def warnings_logged():
    handler = Records()
    logger = logging.getLogger("provisioning.audit")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


def test_each_new_high_finding_is_posted_once_and_logged(onboarded, aws, webhook, warnings_logged):
    agent, accounts = onboarded
    set_principal({"AWS": "*"})
    set_condition(None)

    first = audit_now()
    assert first.status == RunStatus.SUCCEEDED
    # critical + high only: trust-differs (medium) is not posted.
    assert webhook.codes() == ["external-id-missing", "principal-wildcard"]
    post = next(p for p in webhook.posts if p["code"] == "principal-wildcard")
    assert post == {
        "event": "audit.finding",
        "run_id": first.pk,
        "observed_at": first.result["observed_at"],
        "account_id": ACCT,
        "agent": "",
        "code": "principal-wildcard",
        "severity": "critical",
        "title": CHECKS["principal-wildcard"].title,
        "message": post["message"],
    }
    warned = [r.getMessage() for r in warnings_logged if r.levelno == logging.WARNING]
    assert len(warned) == 2 and all(ACCT in m for m in warned)

    audit_now()  # the same findings again: nothing new, nothing posted
    assert len(webhook.posts) == 2

    extra_policy(agent, accounts)  # one more high finding (managed + inline: two distinct ones)
    audit_now()
    assert webhook.codes() == [
        "external-id-missing",
        "extra-policy-attached",
        "extra-policy-attached",
        "principal-wildcard",
    ]


def test_new_agent_findings_are_posted_too(onboarded, aws, webhook):
    from .test_audit_findings import agent_wildcard

    agent, accounts = onboarded
    audit_now()
    assert webhook.posts == []
    agent_wildcard(agent, accounts)
    audit_now()
    assert [(p["code"], p["agent"], p["account_id"]) for p in webhook.posts] == [
        ("agent-resource-wildcard", "cra", "")
    ]
    audit_now()
    assert len(webhook.posts) == 1


def test_a_failing_webhook_is_retried_and_never_fails_the_audit(onboarded, aws, webhook):
    webhook.status = 500
    set_principal({"AWS": "*"})
    run = audit_now()
    assert run.status == RunStatus.SUCCEEDED
    assert AuditSnapshot.objects.get(run=run, account_id=ACCT).status == AuditStatus.DRIFTED
    # One finding, first attempt plus every retry.
    assert [p["code"] for p in webhook.posts] == ["principal-wildcard"] * (
        tasks.post_audit_webhook.max_retries + 1
    )


def test_an_unreachable_webhook_never_fails_the_audit(onboarded, aws, webhook, settings):
    from portal.testing import free_port

    settings.AUDIT_WEBHOOK_URL = f"http://127.0.0.1:{free_port()}/nobody-listens"
    set_principal({"AWS": "*"})
    run = audit_now()
    assert run.status == RunStatus.SUCCEEDED
    assert "1 new high-severity finding" in run.explanation


# --- schedule ----------------------------------------------------------------------------------------


def test_the_scheduled_task_queues_one_full_audit_at_a_time(db):
    first = tasks.scheduled_audit()
    second = tasks.scheduled_audit()  # the first is still queued: not a second one
    assert first == second
    run = Run.objects.get(pk=first)
    assert run.kind == RunKind.AUDIT and run.options == {"scope": "all"} and run.requested_by_name == "cli"
    Run.objects.filter(pk=first).update(status=RunStatus.SUCCEEDED)
    assert tasks.scheduled_audit() != first


def test_the_beat_schedule_runs_the_audit_on_the_configured_interval(settings):
    from portal.celery import app

    entry = app.conf.beat_schedule["scheduled-audit"]
    assert entry["task"] == "provisioning.tasks.scheduled_audit"
    assert entry["schedule"] == float(settings.AUDIT_INTERVAL) == 3600.0


# --- cancel --------------------------------------------------------------------------------------


def test_a_cancelled_running_audit_stops_and_keeps_the_last_complete_one(onboarded, aws):
    complete = audit_now()
    latest = set(AuditSnapshot.objects.filter(is_latest=True).values_list("pk", flat=True))
    run = audit_request(enqueue=False)
    assert run.claim()
    services.run_cancel(run=run)  # while it runs: a queued one would simply never start
    runner.execute(run)
    assert run.status == RunStatus.CANCELLED
    assert run.explanation.startswith("Cancelled after reading 1 of ")
    assert set(AuditSnapshot.objects.filter(is_latest=True).values_list("pk", flat=True)) == latest
    assert not AuditSnapshot.objects.filter(run=run).exists()
    assert complete.status == RunStatus.SUCCEEDED


def test_an_operator_cancels_a_running_audit_from_its_page(onboarded, aws, client, operator, settings):
    from django.urls import reverse

    settings.SECURE_SSL_REDIRECT = False
    run = audit_request(enqueue=False)
    assert run.claim()
    client.force_login(operator)
    page = client.get(reverse("provisioning:run_detail", args=[run.pk])).content.decode()
    assert 'id="cancel-run"' in page
    client.post(reverse("provisioning:run_cancel", args=[run.pk]))
    page = client.get(reverse("provisioning:run_detail", args=[run.pk])).content.decode()
    assert "the run stops before its next read" in page
    assert runner.execute(run).status == RunStatus.CANCELLED

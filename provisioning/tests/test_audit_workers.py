"""The scheduled audit on a real Celery worker and `manage.py audit` as a real process (moto server)."""

import json
import subprocess
import sys

import pytest

from provisioning import services, tasks
from provisioning.choices import TERMINAL_RUN_STATUSES, AuditStatus, RunKind, RunStatus
from provisioning.models import AuditSnapshot, Run

from .conftest import create_inventory
from .test_audit_findings import ACCT, set_principal
from .test_engine import run_inline, setup_agent_and_onboard

pytestmark = [pytest.mark.reliability, pytest.mark.django_db(transaction=True)]


def manage_audit(*args):
    from portal.testing import ROOT, worker_env

    return subprocess.run(
        # --skip-checks: the deploy checks refuse the development SECRET_KEY this test database uses.
        [sys.executable, "manage.py", "audit", "--skip-checks", *args],
        cwd=ROOT,
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_beat_task_audits_on_a_worker_and_the_command_exits_by_outcome(moto_endpoint):
    from portal.testing import celery_workers, wait_for

    agent, accounts = create_inventory([ACCT, "333333333333"])
    setup_agent_and_onboard(agent, accounts)
    set_principal({"AWS": "*"})

    with celery_workers(count=1, concurrency=1):
        tasks.scheduled_audit.apply_async()  # what celery beat sends every AUDIT_INTERVAL
        wait_for(
            lambda: Run.objects.filter(kind=RunKind.AUDIT, status__in=TERMINAL_RUN_STATUSES).exists(),
            timeout=120,
            message="the scheduled audit",
        )
        run = Run.objects.get(kind=RunKind.AUDIT)
        assert run.status == RunStatus.SUCCEEDED, run.explanation
        assert run.requested_by_name == "cli" and run.attempts == 1
        statuses = dict(AuditSnapshot.objects.filter(run=run).values_list("account_id", "status"))
        assert statuses == {ACCT: AuditStatus.DRIFTED, "333333333333": AuditStatus.IN_SYNC}

        waited = manage_audit("--json", "--timeout", "120")  # queued, executed by the worker
    assert waited.returncode == 3, waited.stderr
    document = json.loads(waited.stdout)
    assert [a["status"] for a in document["accounts"]] == ["drifted", "in_sync"]
    assert "principal-wildcard" in {f["code"] for f in document["accounts"][0]["findings"]}

    fix = services.account_reconcile(accounts=[accounts[0]], enqueue=False)
    assert run_inline(fix).status == RunStatus.SUCCEEDED
    clean = manage_audit("--inline")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert f"{ACCT} (team-0) in_sync" in clean.stdout

    unknown = manage_audit("--inline", "--account", "999999999999")
    assert unknown.returncode == 2 and "999999999999" in unknown.stderr

"""The embedded mode (`make run`: SQLite, filesystem broker, one worker) under concurrent writes from
the web and the worker at once, with the real processes `run_embedded` starts.

Browser sessions go through the onboarding wizard in parallel threads (login, draft, plan, confirm:
every step writes rows) while the worker applies the runs they queue (operations, log lines,
heartbeats, statuses). Nothing may answer 500, no process may log "database is locked", and every
run must succeed. It uses its own SQLite file whatever DATABASE_URL says, so it also runs in CI.

portal/tests/test_sqlite_concurrency.py covers the settings themselves with synthetic writer
processes (and a DEFERRED-mode control); this test covers the real web and worker paths.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from portal import emulator

ROOT = Path(__file__).resolve().parents[2]
SESSIONS = 4
ACCOUNTS_PER_SESSION = 5
TERMINAL = ("succeeded", "failed", "errored", "partial", "cancelled")

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.skipif(not Path("/proc").is_dir(), reason="process groups (Linux)"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def embedded(tmp_path):
    """`manage.py run_embedded` (with its demo agent) on its own SQLite file; yields (web URL, var dir, log)."""
    var_dir = tmp_path / "var"
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_QUEUE_DIR", "AWS_ENDPOINT_URL")
    }
    env.update(PORTAL_VAR_DIR=str(var_dir), PORTAL_WORKER_CONCURRENCY="2")
    log = tmp_path / "embedded.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "run_embedded",
                "--port",
                str(port),
                "--aws-port",
                str(free_port()),
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while "Press Ctrl-C to stop." not in log.read_text(errors="replace"):
            assert process.poll() is None, log.read_text(errors="replace")[-4000:]
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-4000:]
            time.sleep(0.3)
        yield f"http://127.0.0.1:{port}", var_dir, log
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def query(var_dir: Path, sql: str, *params) -> list[tuple]:
    with sqlite3.connect(f"file:{var_dir / 'portal.sqlite3'}?mode=ro", uri=True, timeout=30) as db:
        return list(db.execute(sql, params))


def login(web: str, password: str) -> requests.Session:
    session = requests.Session()
    session.get(f"{web}/login/", timeout=30)
    response = session.post(
        f"{web}/login/",
        data={"username": "admin", "password": password, "csrfmiddlewaretoken": session.cookies["csrftoken"]},
        headers={"Referer": f"{web}/login/"},
        timeout=30,
    )
    assert response.status_code == 200 and response.url.rstrip("/") == web, response.status_code
    return session


def onboard_through_the_wizard(web: str, password: str, agent_pk: str, account_ids: list[str]) -> list[int]:
    """One browser session: log in, then draft → plan → confirm for each account. Returns statuses."""
    statuses = []
    session = login(web, password)
    for account_id in account_ids:
        form = session.get(f"{web}/accounts/onboard/", timeout=30)
        statuses.append(form.status_code)
        draft = session.post(
            f"{web}/accounts/onboard/",
            data={
                "csrfmiddlewaretoken": session.cookies["csrftoken"],
                "account_id": account_id,
                "agent": agent_pk,
                "regions": "us-east-1",
                "management_role_arn": emulator.management_role_arn(account_id),
                "broker_server_url": "https://broker.snyk.io",
            },
            headers={"Referer": f"{web}/accounts/onboard/"},
            timeout=60,
        )
        statuses.append(draft.status_code)
        assert draft.url.endswith(f"/accounts/{account_id}/plan/"), draft.text[-2000:]
        page = draft
        for _ in range(10):  # the agent's part of the plan changes as other sessions' runs land:
            digest = re.search(r'name="plan_digest" value="([^"]+)"', page.text)  # review, confirm again
            assert digest, page.text[-2000:]
            confirm = session.post(
                f"{web}/accounts/{account_id}/apply/",
                data={"csrfmiddlewaretoken": session.cookies["csrftoken"], "plan_digest": digest.group(1)},
                headers={"Referer": page.url},
                timeout=60,
            )
            statuses.append(confirm.status_code)
            if "/runs/" in confirm.url:
                break
            page = confirm
        assert "/runs/" in confirm.url, confirm.url
        statuses.append(session.get(confirm.url, timeout=30).status_code)  # the live progress page
    return statuses


def test_web_and_worker_writing_at_once_never_lock_the_database(embedded):
    web, var_dir, log = embedded
    password = re.findall(r"log in as admin / (\S+)", log.read_text(errors="replace"))[0]
    ((agent_pk,),) = query(var_dir, "SELECT id FROM accounts_agentidentity ORDER BY id LIMIT 1")
    account_ids = [f"{620000000000 + i:012d}" for i in range(SESSIONS * ACCOUNTS_PER_SESSION)]
    chunks = [account_ids[i::SESSIONS] for i in range(SESSIONS)]

    with ThreadPoolExecutor(SESSIONS) as pool:
        results = list(
            pool.map(lambda ids: onboard_through_the_wizard(web, password, str(agent_pk), ids), chunks)
        )

    assert all(s < 400 for statuses in results for s in statuses), results
    placeholders = ",".join("?" * len(account_ids))
    deadline = time.monotonic() + 180
    while True:
        runs = query(
            var_dir,
            "SELECT r.id, r.status, r.explanation FROM provisioning_run r "
            "JOIN provisioning_run_accounts ra ON ra.run_id = r.id "
            f"JOIN accounts_ecraccount a ON a.id = ra.ecraccount_id WHERE a.account_id IN ({placeholders})",
            *account_ids,
        )
        if len(runs) == len(account_ids) and all(status in TERMINAL for _, status, _ in runs):
            break
        assert time.monotonic() < deadline, runs
        time.sleep(0.5)

    assert {status for _, status, _ in runs} == {"succeeded"}, runs
    statuses = query(
        var_dir,
        f"SELECT DISTINCT status FROM accounts_ecraccount WHERE account_id IN ({placeholders})",
        *account_ids,
    )
    assert statuses == [("active",)]
    output = log.read_text(errors="replace")
    assert "database is locked" not in output
    assert "Traceback" not in output, output[-4000:]

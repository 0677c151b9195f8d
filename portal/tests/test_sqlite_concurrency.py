"""SQLite shared by web and worker processes: concurrent writers never fail and lose nothing.

The settings give SQLite WAL, a busy timeout and `transaction_mode: IMMEDIATE` (the write lock is
taken when the transaction begins, so writers queue instead of failing mid-transaction). Real
processes write to the test database file at once; a control run with SQLite's default DEFERRED
mode shows that the load is heavy enough to break the naive configuration.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 6
ITERATIONS = 40


@pytest.fixture
def sqlite_db(transactional_db):
    if connection.vendor != "sqlite":
        pytest.skip("SQLite settings only: DATABASE_URL points at PostgreSQL, which needs none of this")
    return connection.settings_dict["NAME"]


@pytest.fixture
def counter_agent(sqlite_db):
    from accounts import services as account_services

    return account_services.agent_create(name="counter", kind="role", account_id="111111111111")


def run_writers(db: str, agent_pk: int, tmp_path: Path, mode: str = "") -> list[dict]:
    go = tmp_path / "go"
    cmd = [
        sys.executable,
        "-m",
        "portal.tests.sqlite_writer",
        "--db",
        db,
        "--agent",
        str(agent_pk),
        "--iterations",
        str(ITERATIONS),
        "--go",
        str(go),
    ]
    if mode:
        cmd += ["--mode", mode]
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) for _ in range(PROCESSES)
    ]
    time.sleep(2)  # all imported Django and wait at the barrier
    go.touch()
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


@pytest.mark.reliability
def test_concurrent_writers_never_see_database_is_locked_and_lose_no_update(counter_agent, tmp_path):
    from portal.models import AuditEntry

    results = run_writers(connection.settings_dict["NAME"], counter_agent.pk, tmp_path)

    assert [r["messages"] for r in results if r["errors"]] == []
    assert sum(r["ok"] for r in results) == PROCESSES * ITERATIONS
    counter_agent.refresh_from_db()
    assert counter_agent.policy_generation == PROCESSES * ITERATIONS  # read-modify-write
    assert counter_agent.synced_generation == PROCESSES * ITERATIONS  # F() update
    assert AuditEntry.objects.filter(action="test.sqlite.write").count() == PROCESSES * ITERATIONS


@pytest.mark.reliability
def test_sqlite_default_deferred_mode_fails_under_the_same_load(counter_agent, tmp_path):
    """The control: without IMMEDIATE, the same writers hit "database is locked"."""
    results = run_writers(connection.settings_dict["NAME"], counter_agent.pk, tmp_path, mode="deferred")

    failures = sum(r["errors"] for r in results)
    counter_agent.refresh_from_db()
    assert failures > 0 or counter_agent.policy_generation < PROCESSES * ITERATIONS
    assert all("database is locked" in m for r in results for m in r["messages"])

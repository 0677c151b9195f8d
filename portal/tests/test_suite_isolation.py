"""What lets `make test` run test sessions side by side (pytest-xdist workers, a second checkout,
`make run`): each session has its own folder, broker and ports, and the two passes split the suite."""

import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings

from portal import testing

ROOT = Path(__file__).resolve().parents[2]


def test_the_session_keeps_its_queue_locks_and_logs_in_a_folder_of_its_own():
    assert settings.VAR_DIR.name == f"test-session-{os.getpid()}"
    assert settings.CELERY_QUEUE_DIR == settings.VAR_DIR / "queue"  # not `make run`'s var/queue
    env = testing.worker_env()
    assert env["PORTAL_VAR_DIR"] == str(settings.VAR_DIR)
    assert env["CELERY_QUEUE_DIR"] == os.environ["CELERY_QUEUE_DIR"] == str(settings.CELERY_QUEUE_DIR)


@pytest.mark.parametrize(
    ("url", "index", "expected"),
    [
        ("redis://127.0.0.1:6379/0", 0, "redis://127.0.0.1:6379/0"),
        ("redis://127.0.0.1:6379/8", 1, "redis://127.0.0.1:6379/9"),
        ("redis://127.0.0.1:6379", 2, "redis://127.0.0.1:6379/2"),
        ("rediss://:secret@redis.internal:6380/3?ssl_cert_reqs=none", 1, "rediss://:secret@redis.internal:6380/4?ssl_cert_reqs=none"),
    ],
)  # fmt: skip
def test_each_xdist_worker_gets_the_redis_database_its_index_above(url, index, expected):
    assert testing.redis_url_for_worker(url, index) == expected


@pytest.mark.parametrize(("worker", "index"), [(None, 0), ("gw0", 0), ("gw1", 1), ("gw12", 12)])
def test_xdist_worker_index(monkeypatch, worker, index):
    if worker is None:
        monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    else:
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    assert testing.xdist_worker_index() == index


def test_this_process_and_its_workers_use_the_sessions_redis_database():
    """The Celery app reads the broker URL when first used, after conftest.py moved it."""
    if not settings.CELERY_BROKER_URL.startswith("redis"):
        pytest.skip("the filesystem broker: no Redis (REDIS_URL unset)")
    from portal.celery import app

    assert testing.worker_env()["CELERY_BROKER_URL"] == settings.CELERY_BROKER_URL
    with app.connection_for_write() as conn:
        database = conn.default_channel.client.connection_pool.connection_kwargs["db"]
    assert f"/{database}" == urlsplit(settings.CELERY_BROKER_URL).path


@pytest.mark.timeout(60)  # moto's server thread never says it failed to bind: start() would wait forever
def test_moto_server_lets_the_kernel_pick_its_port(monkeypatch):
    """A port chosen before binding may be taken by another process by then (an xdist neighbour)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setattr(testing, "free_port", lambda: taken.getsockname()[1])
        with testing.moto_server() as url:
            assert not url.endswith(f":{taken.getsockname()[1]}")


def collect(*args: str) -> subprocess.CompletedProcess:
    # A fresh session, not an xdist worker of this one (it would take the next Redis database).
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def collected(result: subprocess.CompletedProcess) -> set[str]:
    return {line for line in result.stdout.splitlines() if "::" in line}


def test_the_two_passes_split_the_suite_by_mark():
    """test_kombu_fs.py holds `reliability` tests and others: each pass takes one kind, together all."""
    path = "portal/tests/test_kombu_fs.py"
    everything = collected(collect(path))
    parallel = collected(collect(path, "--suite-pass=parallel"))
    serial = collected(collect(path, "--suite-pass=serial"))
    reliability = collected(collect(path, "-m", "reliability"))
    assert serial == reliability and parallel and serial
    assert parallel | serial == everything and not parallel & serial


def test_a_pass_left_with_no_test_by_pytest_args_succeeds():
    """`make test PYTEST_ARGS=some/test_file.py` runs both passes: the one with no test must not fail."""
    here = "portal/tests/test_suite_isolation.py"
    result = collect(here, "--suite-pass=serial")
    assert result.returncode == 0, result.stdout + result.stderr
    assert collected(result) == set()


@pytest.mark.parametrize("suite_pass", ["serial", "parallel"])
def test_pytest_args_that_choose_no_test_at_all_still_fail(suite_pass):
    """As with one pass: neither pass may call a `-k` that matches nothing a success."""
    result = collect(
        "portal/tests/test_suite_isolation.py", "-k", "no_such_test", f"--suite-pass={suite_pass}"
    )
    assert result.returncode == pytest.ExitCode.NO_TESTS_COLLECTED, result.stdout + result.stderr


def test_role_groups_are_back_after_any_transactional_test():
    """Under xdist any test may follow any other: a flush must never leave the next test without them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "portal/tests/flushed_then_roles.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0 and "2 passed" in run.stdout, run.stdout[-3000:]

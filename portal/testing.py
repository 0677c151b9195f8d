"""Real parts for tests and benchmarks: a moto server and Celery worker processes.

Worker processes share the test database (its settings are passed as DATABASE_URL) and the broker
(Redis when REDIS_URL is set, as in CI; else the filesystem broker under var/). Nothing here is
imported by the running portal.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import requests
from django.conf import settings
from django.db import connection

ROOT = Path(settings.BASE_DIR)
_T = TypeVar("_T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def moto_server() -> Iterator[str]:
    """An in-process threaded moto server on loopback; yields its URL."""
    from moto.server import ThreadedMotoServer  # noqa: PLC0415  moto loads only when a test starts a server

    from portal import moto_accounts, moto_eks  # noqa: PLC0415  as above

    moto_eks.install()  # moto has no EKS Pod Identity: the thin fake answers its calls
    moto_accounts.install()  # each call's account found in constant time, however many accounts

    # Port 0: the kernel picks a free port as it binds (a port chosen first could be taken by then).
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    url = "http://{}:{}".format(*server.get_host_and_port())
    # Backends live in this process and outlive a server: start from an empty AWS every time.
    requests.post(f"{url}/moto-api/reset", timeout=10).raise_for_status()
    try:
        yield url
    finally:
        server.stop()


def xdist_worker_index() -> int:
    """This process's place among pytest-xdist's workers (gw1 is 1); 0 without xdist."""
    return int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))


def redis_url_for_worker(url: str, index: int) -> str:
    """`url` moved `index` Redis databases up. A database holds a broker's queues, unacknowledged
    messages and bindings, so xdist workers in databases of their own never take each other's."""
    parts = urlsplit(url)
    database = int(parts.path.strip("/") or 0) + index
    return urlunsplit(parts._replace(path=f"/{database}"))


def isolate_session() -> Path:
    """Give this test session (each xdist worker is one) a folder and a broker of its own.

    The folder under var/ holds the filesystem queue, the agent lock files and the worker logs, which
    other sessions and `make run` would otherwise share; worker processes get it as PORTAL_VAR_DIR.
    Called from conftest.py: pytest-django has read the settings by then, so they are changed here.
    """
    session_dir = Path(settings.VAR_DIR) / f"test-session-{os.getpid()}"
    session_dir.mkdir(parents=True, exist_ok=True)
    settings.VAR_DIR = session_dir
    settings.CELERY_QUEUE_DIR = session_dir / "queue"
    os.environ["CELERY_QUEUE_DIR"] = str(settings.CELERY_QUEUE_DIR)
    index = xdist_worker_index()
    if settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        settings.CELERY_BROKER_URL = redis_url_for_worker(settings.CELERY_BROKER_URL, index)
    for name in ("REDIS_URL", "CELERY_BROKER_URL"):  # for processes started with this environment
        if os.environ.get(name, "").startswith(("redis://", "rediss://")):
            os.environ[name] = redis_url_for_worker(os.environ[name], index)
    if settings.REDIS_URL:
        settings.REDIS_URL = redis_url_for_worker(settings.REDIS_URL, index)
    return session_dir


def database_url() -> str:
    """The database this process is using right now (the test database under pytest-django)."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    if connection.vendor == "postgresql":
        auth = quote(db["USER"] or "")
        if db.get("PASSWORD"):
            auth += ":" + quote(db["PASSWORD"])
        return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    raise RuntimeError(f"no worker support for {connection.vendor}")


def purge_broker() -> None:
    """Drop messages left over from earlier tests (they name runs of another test database)."""
    from portal.celery import app  # noqa: PLC0415  Celery configures from Django settings, set up after import

    if settings.CELERY_BROKER_URL.startswith("portalfs"):
        shutil.rmtree(settings.CELERY_QUEUE_DIR, ignore_errors=True)
    else:
        with app.connection_for_write() as conn:
            # Every transport's channel can purge; the stubs' StdChannel does not declare it.
            conn.default_channel.queue_purge("celery")  # type: ignore[attr-defined]


def worker_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url(),
        DJANGO_SETTINGS_MODULE="portal.settings",
        PORTAL_VAR_DIR=str(settings.VAR_DIR),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        CELERY_QUEUE_DIR=str(settings.CELERY_QUEUE_DIR),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@contextmanager
def celery_workers(
    count: int = 2, *, concurrency: int = 1, env: dict[str, str] | None = None, log_dir: Path | None = None
) -> Iterator[list[subprocess.Popen]]:
    """Start `count` worker processes (prefork, `concurrency` children each) and stop them after."""
    log_dir = log_dir or (Path(settings.VAR_DIR) / "test-workers")
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(count):
        log = open(log_dir / f"worker-{i}.log", "w")  # noqa: SIM115 (closed with the process)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "portal", "worker", "--pool=prefork",
                 f"--concurrency={concurrency}", f"--hostname=test{i}@%h", "--loglevel=INFO",
                 "--without-gossip", "--without-mingle", "--without-heartbeat"],
                cwd=ROOT, env=env or worker_env(), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )  # fmt: skip
    try:
        _wait_ready(log_dir, count)
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()  # warm shutdown: the main process stops its children
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _wait_ready(log_dir: Path, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = sum("ready." in (log_dir / f"worker-{i}.log").read_text() for i in range(count))
        if ready == count:
            return
        time.sleep(0.2)
    logs = "\n".join((log_dir / f"worker-{i}.log").read_text()[-2000:] for i in range(count))
    raise RuntimeError(f"workers did not start within {timeout}s:\n{logs}")


def wait_for(
    predicate: Callable[[], _T], timeout: float = 120, interval: float = 0.2, message: str = "condition"
) -> _T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


@contextmanager
def plain_http_server() -> Iterator[str]:
    """A live server of the portal speaking plain HTTP on loopback (pytest-django's `live_server`
    is made before a test can change settings, and production settings redirect HTTP to HTTPS and
    keep cookies to HTTPS). The caller turns those settings off first; yields the base URL."""
    from django.contrib.staticfiles.handlers import StaticFilesHandler  # noqa: PLC0415
    from django.test.testcases import LiveServerThread  # noqa: PLC0415  test machinery only

    thread = LiveServerThread("127.0.0.1", StaticFilesHandler)
    thread.daemon = True
    thread.start()
    thread.is_ready.wait()
    if thread.error:
        raise thread.error
    try:
        yield f"http://127.0.0.1:{thread.port}"
    finally:
        thread.terminate()


class NodeMissing(RuntimeError):
    """node or npm is not on PATH: the tests that need a real npm package skip."""


def npm_install(folder: Path, *packages: str) -> Path:
    """Install npm packages into `folder` (under var/, not committed) once; later calls reuse them.
    A file lock keeps parallel test processes from installing at the same time."""
    import fcntl  # noqa: PLC0415  POSIX only, as the rest of the test machinery

    if not (shutil.which("node") and shutil.which("npm")):
        raise NodeMissing("node and npm are needed for this test's real npm package")
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        missing = [p for p in packages if not (folder / "node_modules" / p.rsplit("@", 1)[0]).is_dir()]
        if missing:
            (folder / "package.json").write_text('{"private": true}\n')
            subprocess.run(
                ["npm", "install", "--no-audit", "--no-fund", "--no-save", *packages],
                cwd=folder, check=True, capture_output=True, timeout=600,
            )  # fmt: skip
    return folder


@contextmanager
def oidc_provider(*, client_id: str, client_secret: str, redirect_uri: str, post_logout_uri: str,
                  groups_file: Path) -> Iterator[str]:  # fmt: skip
    """The npm package `oidc-provider` (a certified OpenID provider) on a free loopback port,
    configured by portal/tests/oidc/provider.mjs; yields its issuer URL."""
    folder = npm_install(ROOT / "var" / "npm", "oidc-provider@9.13.3")
    script = folder / "provider.mjs"  # beside node_modules: node resolves imports from the script
    shutil.copyfile(ROOT / "portal" / "tests" / "oidc" / "provider.mjs", script)
    port = free_port()
    args = [str(port), client_id, client_secret, redirect_uri, post_logout_uri, str(groups_file)]
    log = open(Path(settings.VAR_DIR) / f"oidc-provider-{port}.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(["node", str(script), *args], cwd=folder, stdout=log, stderr=subprocess.STDOUT)
    issuer = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(f"{issuer}/.well-known/openid-configuration"), timeout=30,
                 message="the OpenID provider")  # fmt: skip
        yield issuer
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.ConnectionError:
        return False

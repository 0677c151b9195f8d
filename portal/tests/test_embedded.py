"""`manage.py run_embedded` (what `make run` starts), started for real as a subprocess.

One launch serves the tests in file order: the web answers, the printed admin password logs in and
shows the demo inventory, the worker applies the agent's setup run and an onboarding queued by
another process through the filesystem broker to the emulator, the emulator answers boto3, and
SIGINT stops every process. A second launch on the same data folder checks the restart path (the
fresh emulator gets the agent and the onboarded account again) and the terminal's Ctrl-C.

The launcher's environment carries AWS settings that would reach real AWS (an access key, a
profile, a per-service endpoint): the run succeeding against the emulator shows they are overridden.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings

from portal import embedded, emulator, fields

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 180
TERMINAL = ("succeeded", "failed", "errored", "partial", "cancelled")

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.skipif(not Path("/proc").is_dir(), reason="process checks read /proc (Linux)"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def group_members(pgid: int) -> list[str]:
    """Processes still in the launcher's process group (it and everything it started)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()  # state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(f"{entry.name} {stat.partition(' ')[2][:60]}")
    return members


@dataclass
class Launch:
    process: subprocess.Popen
    log: Path
    var_dir: Path
    web: str
    aws: str

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while "Press Ctrl-C to stop." not in self.output():
            if self.process.poll() is not None:
                pytest.fail(f"run_embedded exited with {self.process.returncode}:\n{self.output()[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"run_embedded did not start in {STARTUP_TIMEOUT} s:\n{self.output()[-4000:]}")
            time.sleep(0.3)

    def stop(self, sig: int = signal.SIGINT, *, group: bool = False, timeout: float = 90) -> int:
        if group:
            os.killpg(self.process.pid, sig)
        else:
            self.process.send_signal(sig)
        return self.process.wait(timeout)

    def kill_all(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def runs(self, kind: str) -> list[str]:
        with sqlite3.connect(f"file:{self.var_dir / 'portal.sqlite3'}?mode=ro", uri=True, timeout=30) as db:
            rows = db.execute("SELECT status FROM provisioning_run WHERE kind = ? ORDER BY id", (kind,))
            return [status for (status,) in rows]

    def wait_runs(self, kind: str, count: int, timeout: float = 120) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            statuses = self.runs(kind)
            if len(statuses) >= count and all(s in TERMINAL for s in statuses):
                return statuses
            if time.monotonic() > deadline:
                pytest.fail(f"{kind} runs did not finish: {statuses}\n{self.output()[-4000:]}")
            time.sleep(0.3)


def launch(var_dir: Path, name: str) -> Launch:
    web_port, aws_port = free_port(), free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "DATABASE_URL",
            "REDIS_URL",
            "CELERY_BROKER_URL",
            "CELERY_QUEUE_DIR",
            "PORTAL_ADMIN_PASSWORD",
            "ENCRYPTION_KEYS",
            "ENCRYPTION_KEYS_FILE",
        )
    }
    env.update(
        {
            "PORTAL_VAR_DIR": str(var_dir),
            # What a developer's shell may hold: all of it must be overridden by the launcher.
            "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
            "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "AWS_PROFILE": "production-admin",
            "AWS_ENDPOINT_URL_IAM": "https://iam.amazonaws.com",
            "AWS_ENDPOINT_URL": "https://example.invalid",
        }
    )
    log = var_dir.parent / f"{name}.log"
    out = open(log, "wb")  # noqa: SIM115 (the child writes to it until it exits)
    process = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "run_embedded",
            "--port",
            str(web_port),
            "--aws-port",
            str(aws_port),
            "--shutdown-timeout",
            "30",
        ],
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the tests can find (and clean up) every child
    )
    out.close()
    return Launch(process, log, var_dir, f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{aws_port}")


@pytest.fixture(scope="module")
def var_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("embedded") / "var"


@pytest.fixture(scope="module")
def portal(var_dir):
    started = launch(var_dir, "first")
    try:
        started.wait_ready()
        yield started
    finally:
        started.kill_all()  # whatever a failed test left behind


def boto3_client(url: str, service: str, account_id: str | None = None):
    import boto3

    session = boto3.session.Session(
        aws_access_key_id="test-client", aws_secret_access_key="test-client", region_name="us-east-1"
    )
    if account_id:
        sts = session.client("sts", endpoint_url=url)
        creds = sts.assume_role(RoleArn=emulator.management_role_arn(account_id), RoleSessionName="test")[
            "Credentials"
        ]
        session = boto3.session.Session(
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
            region_name="us-east-1",
        )
    return session.client(service, endpoint_url=url)


def test_web_answers_healthz_and_the_login_page(portal):
    health = requests.get(f"{portal.web}/healthz", timeout=10)
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}

    login = requests.get(f"{portal.web}/login/", timeout=10)
    assert login.status_code == 200
    assert 'name="password"' in login.text

    anonymous = requests.get(f"{portal.web}/accounts/", timeout=10, allow_redirects=False)
    assert anonymous.status_code == 302
    assert "/login/" in anonymous.headers["Location"]


def test_the_printed_admin_password_logs_in_and_shows_the_demo_inventory(portal):
    printed = re.findall(r"log in as admin / (\S+)", portal.output())
    assert len(printed) == 1, portal.output()[-3000:]
    session = requests.Session()
    session.get(f"{portal.web}/login/", timeout=10)
    response = session.post(
        f"{portal.web}/login/",
        data={
            "username": "admin",
            "password": printed[0],
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
        },
        headers={"Referer": f"{portal.web}/login/"},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.url.rstrip("/") == portal.web  # the dashboard, not the login form again

    accounts = session.get(f"{portal.web}/accounts/", timeout=10)
    assert accounts.status_code == 200
    for demo in emulator.DEMO.ecr_accounts:
        assert demo.account_id in accounts.text
        assert demo.alias in accounts.text
    agents = session.get(f"{portal.web}/agents/", timeout=10)
    assert emulator.DEMO.agent_name in agents.text


def test_the_demo_organization_is_discovered_and_its_sync_waits_for_confirmation(portal):
    assert portal.wait_runs("org_discover", 1) == ["succeeded"]
    assert portal.wait_runs("org_sync", 1) == ["succeeded"]
    printed = re.findall(r"log in as admin / (\S+)", portal.output())
    session = requests.Session()
    session.get(f"{portal.web}/login/", timeout=10)
    session.post(
        f"{portal.web}/login/",
        data={
            "username": "admin",
            "password": printed[0],
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
        },
        headers={"Referer": f"{portal.web}/login/"},
        timeout=10,
    )
    page = session.get(f"{portal.web}/organizations/{emulator.DEMO_ORGANIZATION.name}/", timeout=10).text
    assert "A sync waits for confirmation" in page and "3 accounts to onboard" in page
    assert "payments-legacy" in page and "Suspended or closed" in page


def test_the_worker_applies_the_agent_setup_run_to_the_emulator(portal):
    assert portal.wait_runs("agent", 1) == ["succeeded"]

    # The worker wrote the agent role into the emulator, in the agent account, with the fake
    # credentials: the real-looking ones in the launcher's environment were overridden.
    iam = boto3_client(portal.aws, "iam", emulator.DEMO.agent_account)
    role = iam.get_role(RoleName="SnykCraEc2Role")["Role"]
    assert role["Arn"] == f"arn:aws:iam::{emulator.DEMO.agent_account}:role/SnykCraEc2Role"
    profile = iam.get_instance_profile(InstanceProfileName="SnykCraEc2Role")["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == ["SnykCraEc2Role"]


def test_an_onboarding_requested_from_another_process_is_applied_by_the_worker(portal):
    """As the browser or the command line would: a separate process queues it, the worker applies it."""
    account = emulator.DEMO.ecr_accounts[0].account_id
    script = (
        "import django; django.setup()\n"
        "from accounts.models import EcrAccount\n"
        "from provisioning import services\n"
        f"services.account_onboard(account=EcrAccount.objects.get(account_id='{account}'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_QUEUE_DIR")}
    env.update({"PORTAL_VAR_DIR": str(portal.var_dir), "DJANGO_SETTINGS_MODULE": "portal.settings"})
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True, timeout=120)

    assert portal.wait_runs("onboard", 1) == ["succeeded"]
    iam = boto3_client(portal.aws, "iam", account)
    trust = iam.get_role(RoleName="SnykEcrServiceRole")["Role"]["AssumeRolePolicyDocument"]
    agent_arn = f"arn:aws:iam::{emulator.DEMO.agent_account}:role/SnykCraEc2Role"
    assert trust["Statement"][0]["Principal"] == {"AWS": agent_arn}


def test_the_emulator_answers_boto3_with_the_demo_accounts(portal):
    assert boto3_client(portal.aws, "sts").get_caller_identity()["Account"] == emulator.BASE_ACCOUNT
    for demo in emulator.DEMO.ecr_accounts:
        ecr = boto3_client(portal.aws, "ecr", demo.account_id)
        repos = ecr.describe_repositories()["repositories"]
        assert sorted(r["repositoryName"] for r in repos) == sorted(demo.repositories)
        assert {r["registryId"] for r in repos} == {demo.account_id}
        iam = boto3_client(portal.aws, "iam", demo.account_id)
        trust = iam.get_role(RoleName=emulator.MANAGEMENT_ROLE_NAME)["Role"]["AssumeRolePolicyDocument"]
        assert trust["Statement"][0]["Principal"] == {"AWS": f"arn:aws:iam::{emulator.BASE_ACCOUNT}:root"}


def stored_tokens(var_dir: Path) -> list[bytes]:
    with sqlite3.connect(f"file:{var_dir / 'portal.sqlite3'}?mode=ro", uri=True, timeout=30) as db:
        return [row[0].encode() for row in db.execute("SELECT broker_token FROM accounts_brokerinstance")]


def assert_tokens_use_the_installs_own_key(var_dir: Path) -> str:
    key = (var_dir / embedded.KEY_FILE).read_text().strip()
    public = Fernet(fields.derived_key(settings.DEFAULT_SECRET_KEY).encode())
    tokens = stored_tokens(var_dir)
    assert tokens, "the demo has brokers"
    for token in tokens:
        Fernet(key.encode()).decrypt(token)
        with pytest.raises(InvalidToken):
            public.decrypt(token)
    return key


def test_var_is_for_its_user_only_and_tokens_use_the_installs_own_key(portal):
    portal.wait_runs("agent", 1)  # the worker has written its queue, beat schedule and locks by now
    assert stat.S_IMODE(portal.var_dir.stat().st_mode) == 0o700
    opened = [
        f"{path.relative_to(portal.var_dir)} {stat.S_IMODE(path.stat().st_mode):o}"
        for path in portal.var_dir.rglob("*")
        if stat.S_IMODE(path.stat().st_mode) & 0o077
    ]
    assert opened == []
    assert (portal.var_dir / "portal.sqlite3").is_file() and (portal.var_dir / "queue").is_dir()
    assert stat.S_IMODE((portal.var_dir / embedded.KEY_FILE).stat().st_mode) == 0o600
    assert_tokens_use_the_installs_own_key(portal.var_dir)


def test_the_web_server_takes_200_concurrent_requests_without_a_reset(portal):
    """Django's development server listened with a backlog of 10 and reset connections beyond it."""
    count = 200
    start = threading.Barrier(count)

    def get(_: int) -> str:
        start.wait()
        try:
            return str(requests.get(f"{portal.web}/login/", timeout=120).status_code)
        except requests.RequestException as exc:
            return type(exc).__name__

    with ThreadPoolExecutor(count) as pool:
        outcomes = Counter(pool.map(get, range(count)))
    assert outcomes == {"200": count}
    # What a burst larger than this machine shows (connections reset) needs: a listen queue for it.
    if shutil.which("ss"):
        port = portal.web.rpartition(":")[2]
        listening = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True)
        backlog = int(listening.stdout.split()[2])  # Send-Q of a listening socket: its backlog
        assert backlog >= count


def test_static_files_are_served_by_the_web_server(portal):
    css = requests.get(f"{portal.web}/static/portal/portal.css", timeout=10)
    assert css.status_code == 200
    assert css.headers["Content-Type"].startswith("text/css")
    login = requests.get(f"{portal.web}/login/", timeout=10).text
    assert "/static/portal/portal.css" in login


def test_sigint_stops_every_process(portal):
    assert len(group_members(portal.process.pid)) >= 5  # launcher, emulator, web, worker (+ pool, beat)

    assert portal.stop(signal.SIGINT) == 0

    assert "Stopped." in portal.output()
    deadline = time.monotonic() + 10
    while group_members(portal.process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)  # children reparented to init are reaped asynchronously
    assert group_members(portal.process.pid) == []
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{portal.web}/healthz", timeout=2)
    with pytest.raises(requests.ConnectionError):
        requests.get(portal.aws, timeout=2)


def test_a_restart_keeps_the_inventory_rebuilds_the_emulator_and_stops_on_ctrl_c(portal, var_dir):
    if portal.process.poll() is None:
        pytest.skip("needs the first launch stopped (runs after test_sigint_stops_every_process)")
    key = (var_dir / embedded.KEY_FILE).read_text()
    again = launch(var_dir, "second")
    try:
        again.wait_ready()
        assert (var_dir / embedded.KEY_FILE).read_text() == key  # reused, not generated again
        assert_tokens_use_the_installs_own_key(var_dir)
        assert "log in as admin /" not in again.output()  # the password was shown once, at creation
        assert "password unchanged" in again.output()
        # A fresh emulator: the agent's setup and the onboarded account are applied again.
        assert again.wait_runs("agent", 2) == ["succeeded", "succeeded"]
        assert again.wait_runs("reconcile", 1) == ["succeeded"]
        iam = boto3_client(again.aws, "iam", emulator.DEMO.agent_account)
        assert iam.get_role(RoleName="SnykCraEc2Role")["Role"]["RoleName"] == "SnykCraEc2Role"
        onboarded = emulator.DEMO.ecr_accounts[0].account_id
        iam = boto3_client(again.aws, "iam", onboarded)
        assert iam.get_role(RoleName="SnykEcrServiceRole")["Role"]["RoleName"] == "SnykEcrServiceRole"

        assert again.stop(signal.SIGINT, group=True) == 0  # what a terminal's Ctrl-C does
        deadline = time.monotonic() + 10
        while group_members(again.process.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert group_members(again.process.pid) == []
    finally:
        again.kill_all()

"""The dashboard and the audit page of the real embedded server (`make run`) under concurrent users.

`run_embedded` is started for real on a scratch var/ (gunicorn, as compose serves the portal),
filled with 1,000 accounts, their audit snapshots and 10,000 operations, then each page is
requested by 50 concurrent users over real HTTP connections (requests, one thread per user, no
pause between requests: the harshest closed loop). Reported per page: p50, p95, the ratio of the
p95 to the 300 ms target, failed requests (connection resets included); and, in the same run on
the same database, Django's development server (what `make run` used before) under the same load.

The fill runs in a child process pointed at the scratch var/ (`python -m bench.served fill ...`),
so this process's Django settings (the bench's own scratch database) are never involved.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
TARGET_P95_MS = 300.0
PAGES = {"dashboard": "/", "audit": "/audit/"}
STARTUP_TIMEOUT = 240


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tree(pid: int) -> list[int]:
    """pid and every process below it (Linux /proc; elsewhere just pid)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = {pid}, {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return sorted(found)


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used (Linux /proc)."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def _web_processes(launcher: int) -> list[int]:
    """The embedded run's web server: the gunicorn master below the launcher, and its workers."""
    for pid in _tree(launcher):
        try:
            if b"gunicorn" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return _tree(pid)
        except OSError:
            continue
    return []


def _env(var_dir: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_QUEUE_DIR", "ENCRYPTION_KEYS")
        and not k.startswith("AWS_")
    }
    env.update({"PORTAL_VAR_DIR": str(var_dir), "DJANGO_SETTINGS_MODULE": "portal.settings"})
    return env


@contextmanager
def embedded(var_dir: Path, password: str):
    """`manage.py run_embedded` on var_dir; yields its web URL; SIGINT (Ctrl-C) at the end."""
    port = _free_port()
    env = {**_env(var_dir), "PORTAL_ADMIN_PASSWORD": password}
    log = var_dir.parent / "run_embedded.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "run_embedded",
                "--no-demo",
                "--port",
                str(port),
                "--concurrency",
                "1",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while "Press Ctrl-C to stop." not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"run_embedded did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.3)
        yield f"http://127.0.0.1:{port}", _web_processes(process.pid)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def dev_server(var_dir: Path):
    """Django's development server on the same database and settings as the embedded web."""
    port = _free_port()
    env = {**_env(var_dir), "DEBUG": "true", "ENCRYPTION_KEYS_FILE": str(var_dir / "encryption.key")}
    env.pop("SECRET_KEY", None)
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the development server did not start")
            time.sleep(0.3)
        yield url, [process.pid]
    finally:
        process.terminate()
        process.wait(30)


def fill_in_child(var_dir: Path, accounts: int, operations: int) -> dict:
    env = {**_env(var_dir), "DEBUG": "true", "ENCRYPTION_KEYS_FILE": str(var_dir / "encryption.key")}
    env.pop("SECRET_KEY", None)
    done = subprocess.run(
        [sys.executable, "-m", "bench.served", "fill", str(accounts), str(operations)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the fill failed:\n{done.stderr[-3000:]}")
    counts = dict(re.findall(r"(\w+)=(\d+)", done.stdout.strip().splitlines()[-1]))
    return {k: int(v) for k, v in counts.items()}


def login(url: str, password: str) -> dict[str, str]:
    session = requests.Session()
    session.get(f"{url}/login/", timeout=30)
    response = session.post(
        f"{url}/login/",
        data={"username": "admin", "password": password, "csrfmiddlewaretoken": session.cookies["csrftoken"]},
        headers={"Referer": f"{url}/login/"},
        timeout=60,
    )
    if response.url.rstrip("/") != url:
        raise RuntimeError(f"login failed: {response.status_code} {response.url}")
    return session.cookies.get_dict()


def load(url: str, cookies: dict[str, str], *, users: int, requests_per_user: int, think: float) -> dict:
    """`users` threads, each its own keep-alive connection, requesting `url` with a pause between.

    The pause (uniform in 0.5 to 1.5 × `think` seconds, 1 s on average by default) is a user reading the
    page; users start spread over one pause, as they would arrive. `think=0`: back-to-back requests.
    """
    times: list[float] = []
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(users)

    def user(seed: int) -> None:
        session = requests.Session()
        session.cookies.update(cookies)
        pause = random.Random(seed)
        start.wait()
        time.sleep(pause.uniform(0, think))
        for n in range(requests_per_user):
            if n:
                time.sleep(pause.uniform(0.5 * think, 1.5 * think))
            t0 = time.perf_counter()
            try:
                response = session.get(url, timeout=120, allow_redirects=False)
                outcome = str(response.status_code)
            except requests.RequestException as exc:
                outcome = type(exc).__name__
            with lock:
                times.append((time.perf_counter() - t0) * 1000)
                outcomes[outcome] += 1

    started = time.monotonic()
    with ThreadPoolExecutor(users) as pool:
        list(pool.map(user, range(users)))
    seconds = time.monotonic() - started
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return {
        "requests": len(times),
        "failed": sum(n for k, n in outcomes.items() if k != "200"),
        "outcomes": dict(outcomes),
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(p95, 1),
        "p95_to_target": round(p95 / TARGET_P95_MS, 2),
        "throughput_per_s": round(len(times) / seconds, 1),
    }


def measure(
    url: str, server: list[int], cookies: dict[str, str], *, users: int, requests_per_user: int, think: float
) -> dict:
    """Each page under the load; with the server's CPU time per request (contention does not change it)."""
    results = {}
    for label, path in PAGES.items():
        for _ in range(3):  # warm every worker's templates and caches
            requests.get(f"{url}{path}", cookies=cookies, timeout=120)
        cpu = _cpu_seconds(server)
        result = load(f"{url}{path}", cookies, users=users, requests_per_user=requests_per_user, think=think)
        used = _cpu_seconds(server) - cpu
        result["server_cpu_ms_per_request"] = round(used * 1000 / result["requests"], 1)
        results[label] = result
    return results


def served_pages(
    *, accounts: int, operations: int, users: int, requests_per_user: int, think: float, dev: bool
) -> dict:
    load_options = {"users": users, "requests_per_user": requests_per_user, "think": think}
    scratch = Path(tempfile.mkdtemp(prefix="ecr-portal-served-"))
    var_dir = scratch / "var"
    password = secrets.token_urlsafe(16)
    try:
        started = time.monotonic()
        with embedded(var_dir, password) as (url, web):
            filled = fill_in_child(var_dir, accounts, operations)
            fill_seconds = time.monotonic() - started
            served = measure(url, web, login(url, password), **load_options)
        baseline = None
        if dev:
            with dev_server(var_dir) as (url, web):
                baseline = measure(url, web, login(url, password), **load_options)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {
        "scenario": "served-pages",
        "accounts": filled["accounts"],
        "operations": filled["operations"],
        "snapshots": filled["snapshots"],
        "users": users,
        "requests_per_user": requests_per_user,
        "think_seconds": think,
        "target_p95_ms": TARGET_P95_MS,
        "setup_seconds": round(fill_seconds, 1),
        "embedded": served,
        "dev_server": baseline,
    }


# --- the fill, in a child process whose Django settings point at the embedded run's var/ -------


def fill(accounts: int, operations: int) -> None:
    import django

    django.setup()
    from django.db import transaction

    with transaction.atomic():
        counts = fill_inventory(accounts, operations)
    print(" ".join(f"{k}={v}" for k, v in counts.items()))


def fill_inventory(
    total: int, operations: int, *, agent_name: str = "bench-agent", first_id: int = 700000000000
) -> dict[str, int]:
    """An agent with `total` accounts (mostly onboarded), their audit snapshots, and finished bulk
    runs holding `operations` operations (the latest ten with their plans), as the engine stores them."""
    from django.utils import timezone

    from accounts import services as inventory
    from accounts.choices import Lifecycle
    from accounts.models import EcrAccount
    from provisioning.choices import OperationStatus, RunKind, RunStatus
    from provisioning.models import Operation, Run

    agent = inventory.agent_create(
        name=agent_name,
        kind="role",
        account_id=f"{first_id - 1:012d}",
        management_role_arn=f"arn:aws:iam::{first_id - 1:012d}:role/PortalManagement",
    )
    ids = [f"{first_id + i:012d}" for i in range(total)]
    for account_id in ids:
        inventory.account_create(
            agent=agent,
            account_id=account_id,
            regions=["us-east-1"],
            alias=f"bench-{account_id[-4:]}",
            management_role_arn=f"arn:aws:iam::{account_id}:role/PortalManagement",
        )
    accounts = list(EcrAccount.objects.filter(account_id__in=ids).order_by("account_id"))
    for i, account in enumerate(accounts):  # 80 % onboarded, 10 % drifted, 10 % failed
        account.status = Lifecycle.FAILED if i % 10 == 0 else Lifecycle.ACTIVE
        account.drifted = i % 10 == 1
    EcrAccount.objects.bulk_update(accounts, ["status", "drifted"])

    now = timezone.now()
    per_run = 100
    count = max(1, operations // per_run)
    runs = Run.objects.bulk_create(
        _run(agent, accounts[(n * per_run) % len(accounts) :][:per_run], now, with_plan=n >= count - 10)
        for n in range(count)
    )
    through = Run.accounts.through
    through.objects.bulk_create(
        through(run_id=run.pk, ecraccount_id=accounts[(n * per_run + k) % len(accounts)].pk)
        for n, run in enumerate(runs)
        for k in range(min(per_run, len(accounts)))
    )
    Operation.objects.bulk_create(
        (
            Operation(
                run=run,
                sequence=k,
                account_id=accounts[(n * per_run + k) % len(accounts)].account_id,
                action="iam:UpdateAssumeRolePolicy",
                resource_arn=accounts[(n * per_run + k) % len(accounts)].service_role_arn,
                summary="trust: the agent with its ExternalId",
                request={"RoleName": "SnykEcrServiceRole"},
                status=OperationStatus.SUCCEEDED,
                duration_ms=40,
            )
            for n, run in enumerate(runs)
            for k in range(per_run)
        ),
        batch_size=1000,
    )
    audit = Run.objects.create(
        kind=RunKind.AUDIT,
        status=RunStatus.SUCCEEDED,
        targets=ids,
        result={"observed_at": now.isoformat(), "account_count": len(ids), "agents": []},
        started_at=now,
        finished_at=now,
    )
    snapshots = _snapshots(accounts, now, audit)
    return {"accounts": len(accounts), "operations": len(runs) * per_run, "snapshots": snapshots}


def _run(agent, accounts: list, now, *, with_plan: bool):
    """A finished bulk run as the engine stores it: targets, outcomes and (the latest) its plan."""
    from provisioning import policies
    from provisioning.choices import RunKind, RunStatus
    from provisioning.models import Run

    ids = [a.account_id for a in accounts]
    changes = [
        {
            "account_id": a.account_id,
            "action": "iam:CreateRole",
            "resource": a.service_role_arn,
            "document": policies.service_role_trust_policy(agent.arn, ["a" * 36]),
        }
        for a in accounts
        for _ in range(4)  # role, trust, read-only policy, attachment: a document each
    ]
    return Run(
        kind=RunKind.BULK,
        status=RunStatus.SUCCEEDED,
        agent=agent,
        targets=ids,
        plan={"changes": changes} if with_plan else {},
        result={"accounts": dict.fromkeys(ids, "succeeded"), "errors": {}},
        progress_total=len(changes),
        progress_done=len(changes),
        started_at=now,
        finished_at=now,
    )


def _snapshots(accounts: list, now, run) -> int:
    """Every account's latest audit snapshot: a tenth drifted with a finding, the rest in sync."""
    from provisioning.audit import catalogue
    from provisioning.choices import SEVERITY_RANK, AuditStatus
    from provisioning.models import AuditSnapshot

    rows = []
    for i, account in enumerate(accounts):
        message = "Agent may not assume this role"
        finding = catalogue.Finding("agent-permission-missing", message, account.account_id)
        findings = [finding.to_dict()] if i % 10 == 1 else []
        rows.append(
            AuditSnapshot(
                run=run,
                ecr_account=account,
                account_id=account.account_id,
                observed_at=now,
                confirmed_at=now,
                status=AuditStatus.DRIFTED if findings else AuditStatus.IN_SYNC,
                drift_since=now if findings else None,
                live={"trusted_principals": [account.agent.arn], "external_ids": []},
                findings=findings,
                severity_rank=max((SEVERITY_RANK[f["severity"]] for f in findings), default=0),
                finding_codes="".join(f" {f['code']} " for f in findings),
                medium_count=len(findings),
                digest=f"{i:064d}",
            )
        )
    return len(AuditSnapshot.objects.bulk_create(rows, batch_size=500))


if __name__ == "__main__":
    if sys.argv[1:2] == ["fill"]:
        fill(int(sys.argv[2]), int(sys.argv[3]))

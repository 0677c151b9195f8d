"""The benchmark scenarios. Each returns a JSON-ready dict; bench/report.py prints it as a table.

Accounts are created through the portal's services (the same validation and rows as the wizard);
runs are executed by the real worker processes of the stack; AWS calls are counted by the proxy,
so the portal and the baseline are measured by the same meter.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from . import baseline, criteria
from .harness import AGENT_ROLE, Stack, wait_for_runs

RUN_TIMEOUT = 1800.0
ROOT = Path(__file__).resolve().parent.parent
# Account ids of the baselines: the portal's plus these (12 digits, never overlapping).
THREADED_OFFSET = 100000000000
REPEAT_OFFSET = 3000  # a repeat's accounts, after the last one's (sizes are 10,000 ids apart)
SEQUENTIAL_OFFSET = 500000000000
LATENCY_AGENT = 111111130000


def management_role(account_id: str) -> str:
    # moto lets the base credentials assume any role ARN: the session lands in that account.
    return f"arn:aws:iam::{account_id}:role/PortalManagement"


def account_ids(first: int, count: int) -> list[str]:
    return [f"{first + i:012d}" for i in range(count)]


def _per_account(counts: dict[str, Counter], accounts: list[str]) -> dict[str, float]:
    total: Counter[str] = Counter()
    for account in accounts:
        total.update(counts.get(account, Counter()))
    return {action: round(n / len(accounts), 2) for action, n in sorted(total.items())}


def _calls_in(counts: dict[str, Counter], accounts: list[str]) -> float:
    """Calls made in the accounts themselves (not the agent's), per account."""
    return round(sum(sum(counts.get(a, Counter()).values()) for a in accounts) / len(accounts), 2)


def _run_seconds(run) -> float | None:
    if run.finished_at is None or run.started_at is None:
        return None
    return round((run.finished_at - run.started_at).total_seconds(), 2)


def _snapshot(stack: Stack) -> dict[str, Counter]:
    return {account: Counter(c) for account, c in stack.proxy.by_account.items()}


def make_agent(name: str, account_id: str):
    from accounts import services as account_services
    from provisioning import services
    from provisioning.choices import RunStatus
    from provisioning.models import Run

    agent = account_services.agent_create(
        name=name, kind="role", account_id=account_id, management_role_arn=management_role(account_id)
    )
    run = services.agent_setup(agent=agent)
    wait_for_runs([run.pk], timeout=120)
    run = Run.objects.get(pk=run.pk)
    if run.status != RunStatus.SUCCEEDED:
        raise RuntimeError(f"agent setup {run.status}: {run.explanation}")
    agent.refresh_from_db()
    return agent


def create_accounts(agent, ids: list[str]) -> list:
    from accounts import services as account_services

    return [
        account_services.account_create(
            agent=agent, account_id=i, regions=["us-east-1"], management_role_arn=management_role(i)
        )
        for i in ids
    ]


def bulk_file(ids: list[str]) -> bytes:
    """The CSV a user uploads for bulk onboarding: one account per row."""
    lines = ["account_id,regions,management_role_arn"]
    lines += [f"{i},us-east-1,{management_role(i)}" for i in ids]
    return ("\n".join(lines) + "\n").encode()


def validate_bulk(agent, ids: list[str]):
    from provisioning import lifecycle

    report = lifecycle.bulk_validate(agent=agent, content=bulk_file(ids), filename="accounts.csv")
    if not report.ok:
        raise RuntimeError(report.as_text())
    return report


def agent_permission_arns(agent) -> list[str]:
    """Every service-role ARN the agent may assume, whatever the layout (read through the portal)."""
    from provisioning import aws, compare

    iam = aws.Iam(compare.access_of(agent))
    documents = []
    inline = iam.get_inline_policy("role", agent.iam_name, agent.policy_name)
    if inline:
        documents.append(inline)
    for arn in iam.list_attached_policies("role", agent.iam_name):
        policy = iam.get_policy(arn)
        documents.append(iam.get_policy_document(arn, policy["DefaultVersionId"]))
    arns: list[str] = []
    for document in documents:
        statements = document["Statement"]
        for statement in statements if isinstance(statements, list) else [statements]:
            resource = statement["Resource"]
            arns.extend([resource] if isinstance(resource, str) else resource)
    return arns


# --- 0. the fake AWS's own capacity -----------------------------------------------------------------


def run_script(stack: Stack, what: str, ids: list[str], *, threads: int, **extra: str) -> dict:
    """bench/baseline.py's threaded script or capacity probe, in a process of its own."""
    args = [sys.executable, "-m", "bench.baseline", what, "--endpoint", stack.proxy.url]
    args += ["--threads", str(threads), "--accounts", ",".join(ids)]
    for key, value in extra.items():
        args += [f"--{key.replace('_', '-')}", value]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    if done.returncode:
        raise RuntimeError(f"{what} script failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def capacity(stack: Stack, *, accounts: int, threads: int, first_id: int, rounds: int = 2) -> dict:
    """Calls per second the fake AWS answers (behind the proxy and its delay) to `threads` callers
    making the onboarding calls in throwaway accounts: the best of `rounds`, after one untimed
    round that warms the emulator up (its first calls load moto's IAM and STS)."""
    run_script(stack, "capacity", account_ids(first_id, threads), threads=threads)
    measured = []
    for i in range(rounds):
        ids = account_ids(first_id + (i + 1) * 10000, accounts)
        stack.proxy.reset_counts()
        probe = run_script(stack, "capacity", ids, threads=threads)
        counted = sum(stack.proxy.counts.values())
        measured.append({"calls": counted, "seconds": round(probe["seconds"], 2)})
    best = max(measured, key=lambda m: m["calls"] / m["seconds"])
    return {
        "scenario": f"capacity-{round(stack.proxy.delay * 1000)}ms",
        "delay_ms": round(stack.proxy.delay * 1000),
        "threads": threads,
        "accounts": accounts,
        "rounds": [round(m["calls"] / m["seconds"], 1) for m in measured],
        **best,
        "calls_per_second": round(best["calls"] / best["seconds"], 1),
    }


# --- 1. bulk onboarding vs the baselines ------------------------------------------------------------


def onboard_portal(stack: Stack, ids: list[str], *, agent_account: str, name: str, options: dict) -> dict:
    """Bulk onboarding from the confirmed upload to the end, measured by the proxy and the meter.
    More accounts than a file may hold (bulkfile.MAX_ROWS) are uploaded as several files, as a user
    must: their runs are confirmed one after another and run side by side."""
    from provisioning import bulkfile, lifecycle
    from provisioning.models import Operation, Run

    agent = make_agent(name, agent_account)
    files = [ids[i : i + bulkfile.MAX_ROWS] for i in range(0, len(ids), bulkfile.MAX_ROWS)]
    reports = [validate_bulk(agent, chunk) for chunk in files]  # the upload: checked, nothing saved
    stack.proxy.reset_counts()
    meter = stack.meter()
    started = time.monotonic()  # from the user's confirm: rows saved, one bulk run per file, until the end
    confirmed_at = time.time()
    run_ids = [lifecycle.accounts_bulk_onboard(report=report, **options).pk for report in reports]
    wait_for_runs(run_ids, timeout=RUN_TIMEOUT)
    seconds = time.monotonic() - started
    workers = meter.stop()
    counts = _snapshot(stack)
    runs = list(Run.objects.filter(pk__in=run_ids).order_by("pk"))
    start_share, finish_share = _start_and_finish(stack, set(ids), confirmed_at, runs)
    per_account_totals = [sum(counts.get(a, Counter()).values()) for a in ids]
    agent_calls = counts.get(agent_account, Counter())
    calls_on_path = statistics.median(per_account_totals) + sum(agent_calls.values())
    granted = sorted(agent_permission_arns(agent))
    expected = sorted(a.service_role_arn for run in runs for a in run.accounts.all())
    statuses = sorted({run.status for run in runs})
    return {
        "seconds": round(seconds, 2),
        "runs": len(runs),
        "run_seconds": max((_run_seconds(run) or 0 for run in runs), default=None),
        "status": statuses[0] if len(statuses) == 1 else "/".join(statuses),
        "explanation": " | ".join(run.explanation[:300] for run in runs if run.explanation),
        "calls_per_account": _per_account(counts, ids),
        "calls_per_account_total": _calls_in(counts, ids),
        "agent_account_calls": dict(sorted(agent_calls.items())),
        "agent_permission_writes": sum(n for action, n in agent_calls.items() if _is_write(action)),
        "operations": Operation.objects.filter(run__in=run_ids).count(),
        "total_calls": sum(sum(c.values()) for c in counts.values()),
        "calls_on_one_path": calls_on_path,
        "critical_path_floor_seconds": round(calls_on_path * stack.proxy.delay, 2),
        "agent_lists_exactly_the_accounts": granted == expected,
        "start_share": start_share,
        "finish_share": finish_share,
        "workers": workers,
    }


def _start_and_finish(stack: Stack, accounts: set[str], confirmed_at: float, runs: list) -> tuple[float, ...]:
    """The shares of the onboarding (confirm to the last run's end) before the first account's first
    AWS call (rows saved, the run queued, claimed, planned) and after the last account's last one
    (the agent's permissions, the bookkeeping)."""
    at = [call.at for call in stack.proxy.log if call.account in accounts]
    finished = max((run.finished_at.timestamp() for run in runs if run.finished_at), default=time.time())
    whole = max(1e-9, finished - confirmed_at)
    if not at:
        return 0.0, 0.0
    return round((min(at) - confirmed_at) / whole, 3), round((finished - max(at)) / whole, 3)


def onboard_threaded(stack: Stack, ids: list[str], *, agent_account: str, threads: int) -> dict:
    baseline.create_agent_role(stack.proxy.url, agent_account, AGENT_ROLE)  # the guide's step 1, untimed
    stack.proxy.reset_counts()
    script = run_script(
        stack, "threaded", ids, threads=threads, agent_account=agent_account, agent_role=AGENT_ROLE
    )
    counts = _snapshot(stack)
    total = sum(sum(c.values()) for c in counts.values())
    return {
        "seconds": round(script["seconds"], 2),
        "threads": threads,
        "calls_per_account": _per_account(counts, ids),
        "calls_per_account_total": _calls_in(counts, ids),
        "agent_account_calls": dict(sorted(counts.get(agent_account, Counter()).items())),
        "total_calls": total,
    }


def onboard_sequential(stack: Stack, ids: list[str], *, agent_account: str) -> dict:
    baseline.create_agent_role(stack.proxy.url, agent_account, AGENT_ROLE)
    stack.proxy.reset_counts()
    base = baseline.onboard(
        stack.proxy.url, agent_account=agent_account, agent_role=AGENT_ROLE, account_ids=ids
    )
    counts = _snapshot(stack)
    total = sum(sum(c.values()) for c in counts.values())
    return {
        "seconds": round(base["seconds"], 2),
        "calls_per_account": _per_account(counts, ids),
        "calls_per_account_total": _calls_in(counts, ids),
        "agent_permission_writes": 1,
        "total_calls": total,
        "aws_time_floor_seconds": round(total * stack.proxy.delay, 2),
    }


def bulk_onboarding(
    stack: Stack,
    count: int,
    *,
    first_id: int,
    agent_account: str,
    options: dict,
    capacity: float,
    threads: int = 32,
    sequential: bool = True,
    repeats: int = 1,
    name: str = "",
) -> dict:
    """The portal, then the 32-thread script, `repeats` times in turn (each time in accounts and an
    agent account of its own; this machine is shared and noisy, so the median of each is kept), then
    (if asked) the sequential one once; the ratios against the script and the floor. The batch the
    later scenarios re-apply and audit is the first repeat's (the agent account `agent_account`)."""
    delay = stack.proxy.delay
    portals, scripts = [], []
    for r in range(repeats):
        first = first_id + r * REPEAT_OFFSET
        portals.append(
            onboard_portal(
                stack,
                account_ids(first, count),
                agent_account=f"{int(agent_account) + r:012d}",
                name=f"cra-{count}" + (f"-{r + 1}" if r else ""),
                options=options,
            )
        )
        scripts.append(
            onboard_threaded(
                stack,
                account_ids(first + THREADED_OFFSET, count),
                agent_account=f"{int(agent_account) + r + THREADED_OFFSET:012d}",
                threads=threads,
            )
        )
    portal, threaded = median_run(portals), median_run(scripts)
    seq = (
        onboard_sequential(
            stack,
            account_ids(first_id + SEQUENTIAL_OFFSET, count),
            agent_account=f"{int(agent_account) + SEQUENTIAL_OFFSET:012d}",
        )
        if sequential
        else None
    )
    floor = criteria.floor_seconds(kind="onboard", accounts=count, delay=delay, capacity=capacity)
    return {
        "scenario": name or f"bulk-{count}",
        "accounts": count,
        "delay_ms": round(delay * 1000),
        "options": options,
        "capacity_calls_per_second": capacity,
        "portal": portal,
        "threadpool": threaded,
        "baseline": seq,
        "floor": floor,
        "portal_to_threadpool": criteria.ratio(portal["seconds"], threaded["seconds"]),
        "portal_to_floor": criteria.ratio(portal["seconds"], floor["seconds"]),
        "threadpool_to_floor": criteria.ratio(threaded["seconds"], floor["seconds"]),
        "speedup": criteria.ratio(seq["seconds"], portal["seconds"]) if seq else None,
    }


def median_run(runs: list[dict]) -> dict:
    """The run of median seconds (the lower of the middle two), with every run's seconds."""
    ordered = sorted(runs, key=lambda run: run["seconds"])
    return {**ordered[(len(ordered) - 1) // 2], "repeats_seconds": [run["seconds"] for run in runs]}


def _is_write(action: str) -> bool:
    from .proxy import is_write

    return is_write(action)


# --- 2. re-apply with nothing changed ----------------------------------------------------------


def _active_accounts(agent_account: str) -> list:
    from accounts.choices import Lifecycle
    from accounts.models import EcrAccount

    return list(
        EcrAccount.objects.filter(status=Lifecycle.ACTIVE, agent__account_id=agent_account)
        .select_related("agent")
        .order_by("pk")
    )


def _engine_run(stack: Stack, kind: str, accounts: list, start) -> dict:
    """Start a run over the accounts, wait for it; the common measurements of re-apply and audit."""
    from provisioning.models import Run

    ids = [a.account_id for a in accounts]
    stack.proxy.reset_counts()
    meter = stack.meter()
    started = time.monotonic()
    run = start(accounts)
    wait_for_runs([run.pk], timeout=RUN_TIMEOUT)
    seconds = time.monotonic() - started
    workers = meter.stop()
    counts = _snapshot(stack)
    run = Run.objects.get(pk=run.pk)
    total = sum(sum(c.values()) for c in counts.values())
    floor = criteria.floor_seconds(
        kind=kind, accounts=len(accounts), delay=stack.proxy.delay, capacity=stack.capacity
    )
    return {
        "accounts": len(accounts),
        "delay_ms": round(stack.proxy.delay * 1000),
        "seconds": round(seconds, 2),
        "status": run.status,
        "explanation": run.explanation[:300],
        "writes": stack.proxy.writes(),
        "operations": run.operations.count(),
        "calls_per_account": _per_account(counts, ids),
        "total_calls": total,
        "calls_per_account_total": round(total / max(1, len(accounts)), 2),
        "floor": floor,
        "portal_to_floor": criteria.ratio(seconds, floor["seconds"]),
        "workers": workers,
        "counts": counts,
    }


def reapply(stack: Stack, agent_account: str, size: int) -> dict:
    """Reconcile every account of one bulk batch again, nothing changed: reads only."""
    from provisioning import services

    accounts = _active_accounts(agent_account)
    result = _engine_run(stack, "reapply", accounts, lambda a: services.account_reconcile(accounts=a))
    counts = result.pop("counts")
    agent_calls = counts.get(agent_account, Counter())
    return {
        "scenario": f"reapply-{size}",
        **result,
        "agent_calls_per_account": {
            k: round(v / max(1, len(accounts)), 2) for k, v in sorted(agent_calls.items())
        },
    }


# --- 3. audit ---------------------------------------------------------------------------------------


def audit(stack: Stack, agent_account: str, size: int) -> dict:
    from provisioning.audit.services import audit_request

    accounts = _active_accounts(agent_account)
    result = _engine_run(stack, "audit", accounts, lambda a: audit_request(user=None, accounts=a))
    result.pop("counts")
    return {"scenario": f"audit-{size}", "available": True, **result}


# --- 5. real AWS latency, 1, 2 and 4 worker processes ----------------------------------------------


def latency(
    stack: Stack,
    count: int,
    *,
    delay: float,
    workers: list[int],
    concurrency: int,
    options: dict,
    threads: int,
    first_id: int,
    capacity_accounts: int,
    restore: bool = True,
) -> dict:
    """Bulk onboarding at `delay` per call with each worker count: does throughput grow with workers?
    The 32-thread script and the capacity probe run once at the same delay. restore=False leaves the
    last worker count running (saves a restart when nothing follows)."""
    before = stack.proxy.delay, stack.workers, stack.concurrency
    stack.proxy.delay = delay
    try:
        cap = capacity(stack, accounts=capacity_accounts, threads=threads, first_id=first_id + 500000)
        threaded = onboard_threaded(
            stack,
            account_ids(first_id + THREADED_OFFSET, count),
            agent_account=f"{LATENCY_AGENT + THREADED_OFFSET:012d}",
            threads=threads,
        )
        floor = criteria.floor_seconds(
            kind="onboard", accounts=count, delay=delay, capacity=cap["calls_per_second"]
        )
        rows = []
        for i, n in enumerate(workers):
            stack.start_workers(n, concurrency)
            portal = onboard_portal(
                stack,
                account_ids(first_id + (i + 1) * 10000, count),
                agent_account=f"{LATENCY_AGENT + i + 1:012d}",
                name=f"cra-latency-{n}",
                options=options,
            )
            rows.append(
                {
                    "workers": n,
                    "concurrency": concurrency,
                    "portal": portal,
                    "portal_to_threadpool": criteria.ratio(portal["seconds"], threaded["seconds"]),
                    "portal_to_floor": criteria.ratio(portal["seconds"], floor["seconds"]),
                }
            )
        for row in rows:
            row["speedup_vs_first"] = criteria.ratio(rows[0]["portal"]["seconds"], row["portal"]["seconds"])
    finally:
        stack.proxy.delay = before[0]
        if restore and (stack.workers, stack.concurrency) != before[1:]:
            stack.start_workers(before[1], before[2])
    return {
        "scenario": f"latency-{round(delay * 1000)}ms",
        "accounts": count,
        "delay_ms": round(delay * 1000),
        "options": options,
        "capacity": cap,
        "threadpool": threaded,
        "floor": floor,
        "threadpool_to_floor": criteria.ratio(threaded["seconds"], floor["seconds"]),
        "runs": rows,
    }


# --- 4. web pages with many accounts -------------------------------------------------------------


def fill_inventory(total: int) -> int:
    """Add draft accounts (and some failed/drifted ones) until the inventory holds `total`."""
    from accounts.choices import Lifecycle
    from accounts.models import AgentIdentity, EcrAccount

    agent = AgentIdentity.objects.order_by("pk").first()
    have = EcrAccount.objects.count()
    ids = account_ids(700000000000 + have, max(0, total - have))
    created = create_accounts(agent, ids)
    for i, account in enumerate(created):
        if i % 10 == 0:
            EcrAccount.objects.filter(pk=account.pk).update(status=Lifecycle.FAILED)
        elif i % 10 == 1:
            EcrAccount.objects.filter(pk=account.pk).update(status=Lifecycle.ACTIVE, drifted=True)
    return EcrAccount.objects.count()


def page_urls() -> dict[str, str]:
    from django.urls import NoReverseMatch, reverse

    from provisioning.choices import RunKind
    from provisioning.models import Run

    urls = {"dashboard": reverse("dashboard"), "account list": reverse("accounts:account_list")}
    urls["run list"] = reverse("provisioning:run_list")
    biggest = Run.objects.filter(kind=RunKind.BULK).order_by("-progress_total").first()
    if biggest is not None:
        urls[f"run detail ({biggest.operations.count()} operations)"] = reverse(
            "provisioning:run_detail", args=[biggest.pk]
        )
    with contextlib.suppress(NoReverseMatch):
        urls["audit"] = reverse("provisioning:audit_list")
    return urls


class QueryCounter:
    """A database execute wrapper that counts the queries of one request."""

    def __init__(self) -> None:
        self.sql: list[str] = []

    def __call__(self, execute, sql, params, many, context):
        self.sql.append(sql)
        return execute(sql, params, many, context)

    def __len__(self) -> int:
        return len(self.sql)


def pages(stack: Stack, *, accounts: int, repeats: int) -> dict:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.db import connection
    from django.test import Client

    from portal.roles import VIEWER

    started = time.monotonic()
    total = fill_inventory(accounts)
    fill_seconds = time.monotonic() - started
    user, _ = get_user_model().objects.get_or_create(username="bench-viewer")
    user.groups.add(Group.objects.get(name=VIEWER))
    client = Client()
    client.force_login(user)
    results = {}
    for label, url in page_urls().items():
        client.get(url, secure=True)  # warm templates and caches
        queries = QueryCounter()
        with connection.execute_wrapper(queries):
            response = client.get(url, secure=True)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            client.get(url, secure=True)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        results[label] = {
            "url": url,
            "status": response.status_code,
            "queries": len(queries),
            "p50_ms": round(statistics.median(times), 1),
            "p95_ms": round(times[min(len(times) - 1, round(0.95 * (len(times) - 1)))], 1),
            "bytes": len(response.content),
        }
    return {
        "scenario": "pages",
        "accounts": total,
        "repeats": repeats,
        "fill_seconds": round(fill_seconds, 1),
        "pages": results,
    }

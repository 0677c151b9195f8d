"""The benchmark scenarios. Each returns a JSON-ready dict; bench/report.py prints it as a table.

Accounts are created through the portal's services (the same validation and rows as the wizard);
runs are executed by the real worker processes of the stack; AWS calls are counted by the proxy,
so the portal and the baseline are measured by the same meter.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections import Counter

from . import baseline
from .harness import AGENT_ROLE, Stack, wait_for_runs

RUN_TIMEOUT = 900.0


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


# --- 1. bulk onboarding vs the sequential baseline -------------------------------------------------


def bulk_onboarding(stack: Stack, count: int, *, first_id: int, agent_account: str, options: dict) -> dict:
    from provisioning.models import Operation, Run

    delay = stack.proxy.delay
    agent = make_agent(f"cra-{count}", agent_account)
    from provisioning import lifecycle

    ids = account_ids(first_id, count)
    report = validate_bulk(agent, ids)  # the upload step: every row checked, nothing saved

    stack.proxy.reset_counts()
    started = time.monotonic()  # from the user's confirm: rows saved, one bulk run, until it ends
    confirmed_at = time.time()
    run = lifecycle.accounts_bulk_onboard(report=report, **options)
    wait_for_runs([run.pk], timeout=RUN_TIMEOUT)
    portal_seconds = time.monotonic() - started
    counts = _snapshot(stack)
    run = Run.objects.get(pk=run.pk)
    start_share, finish_share = _start_and_finish(stack, set(ids), confirmed_at, run)
    accounts = list(run.accounts.all())

    per_account_totals = [sum(counts.get(a, Counter()).values()) for a in ids]
    agent_calls = counts.get(agent_account, Counter())
    agent_writes = sum(n for action, n in agent_calls.items() if _is_write(action))
    calls_on_path = statistics.median(per_account_totals) + sum(agent_calls.values())
    granted = sorted(agent_permission_arns(agent))
    expected = sorted(a.service_role_arn for a in accounts)
    operations = Operation.objects.filter(run=run)

    # The baseline: the same number of accounts, in other account ids, one after another.
    base_agent_account = f"{int(agent_account) + 500000000000:012d}"
    base_ids = account_ids(first_id + 500000000000, count)
    baseline.create_agent_role(stack.proxy.url, base_agent_account, AGENT_ROLE)
    stack.proxy.reset_counts()
    base = baseline.onboard(
        stack.proxy.url, agent_account=base_agent_account, agent_role=AGENT_ROLE, account_ids=base_ids
    )
    base_counts = _snapshot(stack)
    base_total = sum(sum(c.values()) for c in base_counts.values())

    return {
        "scenario": f"bulk-{count}",
        "accounts": count,
        "delay_ms": round(delay * 1000),
        "options": options,
        "portal": {
            "seconds": round(portal_seconds, 2),
            "run_seconds": round((run.finished_at - run.started_at).total_seconds(), 2),
            "status": run.status,
            "explanation": run.explanation[:300],
            "calls_per_account": _per_account(counts, ids),
            "calls_per_account_total": round(sum(per_account_totals) / count, 2),
            "agent_account_calls": dict(sorted(agent_calls.items())),
            "agent_permission_writes": agent_writes,
            "operations": operations.count(),
            "total_calls": sum(sum(c.values()) for c in counts.values()),
            "calls_on_one_path": calls_on_path,
            "critical_path_floor_seconds": round(calls_on_path * delay, 2),
            "agent_lists_exactly_the_accounts": granted == expected,
            "start_share": start_share,
            "finish_share": finish_share,
        },
        "baseline": {
            "seconds": round(base["seconds"], 2),
            "calls_per_account": _per_account(base_counts, base_ids),
            "agent_permission_writes": 1,
            "total_calls": base_total,
            "aws_time_floor_seconds": round(base_total * delay, 2),
        },
        "speedup": round(base["seconds"] / portal_seconds, 2),
    }


def _start_and_finish(stack: Stack, accounts: set[str], confirmed_at: float, run) -> tuple[float, float]:
    """The shares of the run (confirm to finish) before its first account's first AWS call (rows
    saved, the run queued, claimed, planned) and after its last account's last one (the agent's
    permissions, the bookkeeping)."""
    at = [call.at for call in stack.proxy.log if call.account in accounts]
    finished = run.finished_at.timestamp()
    whole = max(1e-9, finished - confirmed_at)
    if not at:
        return 0.0, 0.0
    return round((min(at) - confirmed_at) / whole, 3), round((finished - max(at)) / whole, 3)


def _is_write(action: str) -> bool:
    from .proxy import is_write

    return is_write(action)


# --- 2. re-apply with nothing changed ----------------------------------------------------------


def reapply(stack: Stack) -> dict:
    from accounts.choices import Lifecycle
    from accounts.models import EcrAccount
    from provisioning import services
    from provisioning.models import Run

    accounts = list(EcrAccount.objects.filter(status=Lifecycle.ACTIVE).select_related("agent"))
    ids = [a.account_id for a in accounts]
    agents = {a.agent.account_id for a in accounts}
    stack.proxy.reset_counts()
    started = time.monotonic()
    run = services.account_reconcile(accounts=accounts)
    wait_for_runs([run.pk], timeout=RUN_TIMEOUT)
    seconds = time.monotonic() - started
    counts = _snapshot(stack)
    run = Run.objects.get(pk=run.pk)
    agent_calls: Counter[str] = Counter()
    for agent_account in agents:
        agent_calls.update(counts.get(agent_account, Counter()))
    return {
        "scenario": "reapply",
        "accounts": len(accounts),
        "agents": len(agents),
        "seconds": round(seconds, 2),
        "status": run.status,
        "writes": stack.proxy.writes(),
        "operations": run.operations.count(),
        "calls_per_account": _per_account(counts, ids),
        "agent_calls_per_account": {k: round(v / len(accounts), 2) for k, v in sorted(agent_calls.items())},
        "total_calls": sum(sum(c.values()) for c in counts.values()),
    }


# --- 3. audit ---------------------------------------------------------------------------------------


def audit(stack: Stack, count: int) -> dict:
    from accounts.choices import Lifecycle
    from accounts.models import EcrAccount
    from provisioning.audit.services import audit_request
    from provisioning.models import Run

    accounts = list(EcrAccount.objects.filter(status=Lifecycle.ACTIVE).order_by("-pk")[:count])
    ids = [a.account_id for a in accounts]
    stack.proxy.reset_counts()
    started = time.monotonic()
    run = audit_request(user=None, accounts=accounts)
    wait_for_runs([run.pk], timeout=RUN_TIMEOUT)
    seconds = time.monotonic() - started
    counts = _snapshot(stack)
    run = Run.objects.get(pk=run.pk)
    total = sum(sum(c.values()) for c in counts.values())
    return {
        "scenario": "audit",
        "available": True,
        "accounts": len(accounts),
        "seconds": round(seconds, 2),
        "status": run.status,
        "explanation": run.explanation[:300],
        "writes": stack.proxy.writes(),
        "calls_per_account": _per_account(counts, ids),
        "total_calls": total,
        "calls_per_account_total": round(total / max(1, len(accounts)), 2),
        "sequential_floor_seconds": round(total * stack.proxy.delay, 2),
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

"""Reads for the run pages and the plan previews (constant query counts; no writes, no AWS calls)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.core.exceptions import ValidationError
from django.core.paginator import Page, Paginator
from django.db.models import Count, Q, QuerySet
from django.shortcuts import get_object_or_404

from accounts.models import EcrAccount
from accounts.selectors import broker_views
from accounts.validators import account_id_validator
from portal.redact import redact

from . import adoption
from .changes import Plan
from .choices import OperationStatus, RunKind, RunStatus
from .models import Operation, Run

PAGE_SIZE = 30
# A live page re-renders every operation on each poll; huge bulk runs show the latest ones.
PROGRESS_OPERATION_LIMIT = 200
LOG_LIMIT = 300
DOCUMENT_PARAMS = ("PolicyDocument", "AssumeRolePolicyDocument")
# Runs that leave accounts with broker files to download (success) or a plan to retry (failure).
ACCOUNT_RUN_KINDS = (RunKind.ONBOARD, RunKind.RECONCILE, RunKind.ROTATE, RunKind.BULK)


# --- plans -----------------------------------------------------------------------------------


def previewed_options(plan: Plan, digest: str) -> dict[str, Any]:
    """What a run confirmed from this preview remembers of it: its digest, its size, and the
    accounts whose role and policy it saw absent (the run creates those without reading first)."""
    options: dict[str, Any] = {"previewed_plan": digest, "previewed_changes": len(plan.changes)}
    creates = {(c.account_id, c.action) for c in plan.changes if c.kind == "create"}
    absent = sorted(
        a for a, action in creates if action == "iam:CreateRole" and (a, "iam:CreatePolicy") in creates
    )
    if absent:
        options["previewed_absent"] = absent
    return options


def plan_digest(plan: Plan, revokes: list[str] | None = None) -> str:
    """A fingerprint of what confirming would do: confirming a plan that changed since is refused.

    An account's confirmation covers the account's own changes exactly. The agent's shared permission
    documents are rebuilt from the whole inventory when the run applies, so other accounts' runs change
    them between preview and confirmation; only what they would take away from roles the portal does
    not know (a hand-made grant) is pinned. The agent's own page pins its documents exactly.
    `revokes`: revokes_outside_inventory(plan), when the caller has it already.
    """
    if revokes is None and not plan.about_agent:
        revokes = revokes_outside_inventory(plan)
    pinned = [c.to_dict() for c in plan.changes if plan.about_agent or not c.shared]
    body = json.dumps(
        {
            "changes": pinned,
            "adopted": plan.adopted,
            "layout": plan.layout if plan.about_agent else "",
            "revokes_outside_inventory": [] if plan.about_agent else revokes,
        },
        sort_keys=True,
        default=str,
        separators=(",", ":"),
    )
    return hashlib.sha256(body.encode()).hexdigest()


def revokes_outside_inventory(plan: Plan) -> list[str]:
    """Grants the plan's shared changes remove that name no account of the portal (or "*")."""
    shared = [change for change in plan.changes if change.shared]
    before = set().union(*(adoption.allowed_resources(change.before) for change in shared))
    after = set().union(*(adoption.allowed_resources(change.after) for change in shared))
    revoked = before - after  # over all the changes: a grant moving to another managed policy stays
    if not revoked:
        return []
    known = {a.service_role_arn for a in EcrAccount.objects.only("account_id", "service_role_name")}
    return sorted(revoked - known)


@dataclass
class PreviewChange:
    number: int
    account_id: str
    kind: str
    action: str
    arn: str
    summary: str
    before: Any
    after: Any
    request: dict[str, str]
    shared: bool = False

    @property
    def has_document(self) -> bool:
        return self.before is not None or self.after is not None


def _display_params(params: dict[str, Any]) -> dict[str, str]:
    """Call parameters as the page shows them: documents appear in full below, secrets never."""

    shown = redact({k: v for k, v in params.items() if k not in DOCUMENT_PARAMS})
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in shown.items()}


def plan_preview(plan: Plan) -> dict[str, Any]:
    """What the preview page shows: every change with its documents, the AWS calls, notes, digest."""
    revokes = revokes_outside_inventory(plan)
    changes = [
        PreviewChange(
            number=i,
            account_id=c.account_id,
            kind=c.kind,
            action=c.action,
            arn=c.arn,
            summary=c.summary,
            before=c.before,
            after=c.after,
            request=_display_params(c.params),
            shared=c.shared and not plan.about_agent,
        )
        for i, c in enumerate(plan.changes, 1)
    ]
    return {
        "changes": changes,
        "notes": plan.notes,
        "adopted": plan.adopted,
        "layout": plan.layout,
        "digest": plan_digest(plan, revokes),
        "write_count": len(changes),
        "accounts_touched": sorted({c.account_id for c in changes}),
        **_revokes(revokes),
    }


def _revokes(arns: list[str]) -> dict[str, Any]:
    return {"revokes_everything": "*" in arns, "revokes_roles": [arn for arn in arns if arn != "*"]}


# --- runs ------------------------------------------------------------------------------------


@dataclass
class RunFilters:
    kind: str = ""
    status: str = ""

    @classmethod
    def from_query(cls, params: Any) -> RunFilters:
        kind, status = params.get("kind", ""), params.get("status", "")
        return cls(
            kind=kind if kind in RunKind.values else "",
            status=status if status in RunStatus.values else "",
        )

    def as_query(self) -> str:
        return urlencode({k: v for k, v in vars(self).items() if v})


def run_queryset(filters: RunFilters) -> QuerySet[Run]:
    # The run table never reads a run's plan or result (megabytes for a large bulk run).
    runs = Run.objects.select_related("agent").defer("plan", "result").order_by("-created_at", "-pk")
    if filters.kind:
        runs = runs.filter(kind=filters.kind)
    if filters.status:
        runs = runs.filter(status=filters.status)
    return runs


def run_page(filters: RunFilters, page_number: Any) -> Page:
    return Paginator(run_queryset(filters), PAGE_SIZE).get_page(page_number)


def run_get(pk: int) -> Run:
    return get_object_or_404(Run.objects.select_related("agent"), pk=pk)


def run_progress(run: Run) -> dict[str, Any]:
    """The live part of a run page: operations so far, the failure, and (on success) the brokers."""
    # A write in flight is not done yet; one a crash kept from AWS is made again, and counted then.
    uncounted = (OperationStatus.STARTED, OperationStatus.NOT_APPLIED)
    counts = run.operations.aggregate(total=Count("pk"), done=Count("pk", filter=~Q(status__in=uncounted)))
    total_operations = counts["total"]
    operations = list(run.operations.order_by("-sequence")[:PROGRESS_OPERATION_LIMIT])[::-1]
    if run.kind != RunKind.AUDIT:
        # One applied change = one settled operation; the worker counts it a statement later, and the
        # run row was read before the operations: never show an operation the bar does not count yet.
        run.progress_done = max(run.progress_done, counts["done"])
    failed = next((op for op in reversed(operations) if op.status == OperationStatus.FAILED), None)
    if failed is None and run.status in (RunStatus.FAILED, RunStatus.ERRORED, RunStatus.PARTIAL):
        failed = run.operations.filter(status=OperationStatus.FAILED).order_by("-sequence").first()
    accounts: list[EcrAccount] = []
    if not run.is_active and run.kind in ACCOUNT_RUN_KINDS:
        accounts = list(
            run.accounts.select_related("agent")
            .prefetch_related("brokers", "external_ids")
            .order_by("account_id")
        )
    log_entries = list(run.log_entries.order_by("-created_at", "-pk")[:LOG_LIMIT])[::-1]
    return {
        "run": run,
        "steps": (run.plan or {}).get("steps", []),
        "log_entries": log_entries,
        "operations": operations,
        "total_operations": total_operations,
        "hidden_operations": max(0, total_operations - len(operations)),
        "failed_operation": failed,
        "accounts": accounts,
        "account_brokers": [(account, broker_views(list(account.brokers.all()))) for account in accounts]
        if run.status == RunStatus.SUCCEEDED
        else [],
    }


def run_detail(run: Run) -> dict[str, Any]:
    return run_progress(run)


@dataclass
class OperationFilters:
    """Filters of a run's operations page; values the page cannot use are dropped and named in `problems`."""

    status: str = ""
    account_id: str = ""
    problems: tuple[str, ...] = ()

    @classmethod
    def from_query(cls, params: Any) -> OperationFilters:
        status, account_id = params.get("status", "").strip(), params.get("account_id", "").strip()
        problems = []
        if status and status not in OperationStatus.values:
            choices = ", ".join(OperationStatus.values)
            problems.append(f"Status filter ignored: “{status[:40]}” is not one of {choices}.")
            status = ""
        if account_id:
            try:
                account_id_validator(account_id)
            except ValidationError as exc:
                problems.append(f"Account filter ignored: “{account_id[:40]}”. {' '.join(exc.messages)}")
                account_id = ""
        return cls(status=status, account_id=account_id, problems=tuple(problems))

    def as_query(self) -> str:
        return urlencode({k: v for k, v in (("status", self.status), ("account_id", self.account_id)) if v})


def operation_queryset(run: Run, filters: OperationFilters) -> QuerySet[Operation]:
    """A run's operations in sequence order. The stored (redacted) request parameters are never shown."""
    operations = run.operations.defer("request").order_by("sequence", "pk")
    if filters.status:
        operations = operations.filter(status=filters.status)
    if filters.account_id:
        operations = operations.filter(account_id=filters.account_id)
    return operations


def run_operations(run: Run, filters: OperationFilters, page_number: Any) -> dict[str, Any]:
    """Every operation of a run, a page at a time (the run page shows only the latest ones)."""
    return {
        "run": run,
        "page": Paginator(operation_queryset(run, filters), PAGE_SIZE).get_page(page_number),
        "filters": filters,
        "filter_query": filters.as_query(),
        "statuses": OperationStatus.choices,
    }

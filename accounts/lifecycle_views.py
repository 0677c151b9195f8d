"""Lifecycle pages: rotate and retire ExternalIds, mark brokers redeployed, offboard, onboard a file.

Thin, as the other inventory views: permission → form → one service call → redirect. Every write
is previewed first (the plan the run applies, each AWS call and document) and confirmed with that
plan's digest; when AWS or the inventory changed in between, the new plan is shown instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from portal.middleware import PortalRequest
from portal.roles import CAN_MANAGE_AGENTS, CAN_OFFBOARD, CAN_ONBOARD, permission_required
from provisioning import aws, bulkfile, lifecycle, policies, services, snyk
from provisioning import selectors as run_selectors
from provisioning.changes import Plan

from . import selectors
from .lifecycle_forms import BulkConfirmForm, BulkUploadForm, OffboardForm, RotateForm
from .models import ExternalId

PLAN_ERRORS = (aws.AwsError, snyk.SnykError, policies.LayoutError)
CHANGED = "AWS or the inventory changed since this plan was shown: review the new plan and confirm again."


# --- ExternalId rotation ---------------------------------------------------------------------------


@permission_required(CAN_ONBOARD)
def external_id_rotate(request: PortalRequest, account_id: str) -> HttpResponse:
    """GET: preview adding a new id (the trust lists both). POST: confirm that exact plan."""
    account = selectors.account_get(account_id)
    source = request.POST if request.method == "POST" else request.GET
    form = RotateForm(source if source.get("external_id") else {"external_id": ExternalId.generate()})
    context = {"account": account, "form": form, "active_run": services.active_run_for(account)}
    if not form.is_valid():
        return render(request, "accounts/ecraccount_rotate.html", context)
    value = form.cleaned_data["external_id"]
    if request.method == "POST":
        if plan := _confirmed(request, lambda: lifecycle.plan_rotation(account, value)):
            try:
                run = lifecycle.external_id_rotate(account=account, value=value, **_run_fields(request, plan))
            except ValidationError as exc:
                messages.error(request, _text(exc))
                return redirect(account)
            messages.success(
                request,
                f"New ExternalId {value}: broker files hold it now. Redeploy each broker, mark it "
                "redeployed, then retire the old id.",
            )
            return redirect(run.get_absolute_url())
        return redirect(_with_query("accounts:external_id_rotate", account.account_id, external_id=value))
    context["external_id"] = value
    return _preview(
        request, "accounts/ecraccount_rotate.html", context, lambda: lifecycle.plan_rotation(account, value)
    )


@permission_required(CAN_ONBOARD)
def external_id_retire(request: PortalRequest, account_id: str, external_id_pk: int) -> HttpResponse:
    """GET: preview removing an id from the trust, with every warning. POST: confirm."""
    account = selectors.account_get(account_id)
    ext = get_object_or_404(ExternalId, pk=external_id_pk, account=account)
    if request.method == "POST":
        if plan := _confirmed(request, lambda: lifecycle.plan_retirement(account, ext.value)):
            try:
                run, warnings = lifecycle.external_id_retire(
                    account=account, value=ext.value, **_run_fields(request, plan)
                )
            except ValidationError as exc:
                messages.error(request, _text(exc))
                return redirect(account)
            for warning in warnings:
                messages.warning(request, warning)
            return redirect(run.get_absolute_url())
        return redirect("accounts:external_id_retire", account_id=account.account_id, external_id_pk=ext.pk)
    context = {
        "account": account,
        "external_id": ext,
        "warnings": lifecycle.retirement_warnings(account, ext),
        "active_run": services.active_run_for(account),
    }
    return _preview(
        request,
        "accounts/ecraccount_retire.html",
        context,
        lambda: lifecycle.plan_retirement(account, ext.value),
    )


@permission_required(CAN_ONBOARD)
@require_POST
def broker_redeployed_confirm(request: PortalRequest, pk: int) -> HttpResponseRedirect:
    broker = selectors.broker_get(pk)
    try:
        entry = lifecycle.broker_mark_redeployed(broker=broker, user=request.user)
    except ValidationError as exc:
        messages.error(request, _text(exc))
    else:
        messages.success(
            request,
            f"Broker {broker.region} marked redeployed with ExternalId {entry.details['external_id']}.",
        )
    return redirect(broker.account.get_absolute_url() + "#lifecycle")


# --- offboarding ---------------------------------------------------------------------------------


@permission_required(CAN_OFFBOARD)
def account_offboard(request: PortalRequest, account_id: str) -> HttpResponse:
    """GET: preview (the agent's statement first, then the role and policy). POST: confirm."""
    account = selectors.account_get(account_id)
    form = OffboardForm(request.POST if request.method == "POST" else request.GET)
    form.is_valid()
    confirm = bool(form.cleaned_data.get("confirm_adopted"))
    if request.method == "POST":
        if plan := _confirmed(request, lambda: lifecycle.plan_offboarding(account, confirm_adopted=confirm)):
            try:
                run = lifecycle.account_offboard(
                    account=account, confirm_adopted=confirm, **_run_fields(request, plan)
                )
            except ValidationError as exc:
                messages.error(request, _text(exc))
                return redirect(account)
            return redirect(run.get_absolute_url())
        query = {"confirm_adopted": "on"} if confirm else {}
        return redirect(_with_query("accounts:account_offboard", account.account_id, **query))
    context = {
        "account": account,
        "form": form,
        "confirm_adopted": confirm,
        "adopted": account.role_adopted or account.policy_adopted,
        "active_run": services.active_run_for(account),
    }
    return _preview(
        request,
        "accounts/ecraccount_offboard.html",
        context,
        lambda: lifecycle.plan_offboarding(account, confirm_adopted=confirm),
    )


@permission_required(CAN_MANAGE_AGENTS)
def agent_offboard(request: PortalRequest, pk: int) -> HttpResponse:
    """Refused while the agent serves accounts; otherwise preview, then confirm."""
    agent = selectors.agent_get(pk)
    if request.method == "POST":
        if plan := _confirmed(request, lambda: lifecycle.plan_agent_offboarding(agent)):
            try:
                run = lifecycle.agent_offboard(agent=agent, **_run_fields(request, plan))
            except ValidationError as exc:
                messages.error(request, _text(exc))
                return redirect(agent)
            return redirect(run.get_absolute_url())
        return redirect("accounts:agent_offboard", pk=agent.pk)
    return _preview(
        request,
        "accounts/agentidentity_offboard.html",
        {"agent": agent},
        lambda: lifecycle.plan_agent_offboarding(agent),
    )


# --- bulk onboarding -----------------------------------------------------------------------------


@permission_required(CAN_ONBOARD)
def account_onboard_file(request: PortalRequest) -> HttpResponse:
    """Upload → every row validated (one report) → one plan for all → confirm → one bulk run."""
    template = "accounts/ecraccount_bulk.html"
    if request.method == "POST" and "records" in request.POST:
        return _bulk_confirm(request, template)
    form = BulkUploadForm(request.POST or None, request.FILES or None)
    context: dict[str, Any] = {"form": form}
    if request.method != "POST" or not form.is_valid():
        return render(request, template, context)
    upload = form.cleaned_data["file"]
    report = lifecycle.bulk_validate(
        agent=form.cleaned_data["agent"],
        content=upload.read(bulkfile.MAX_BYTES + 1),
        filename=upload.name,
    )
    context["report"] = report
    if not report.ok:
        return render(request, template, context, status=400)
    options = {k: form.cleaned_data[k] for k in ("max_concurrency", "failure_tolerance")}
    return _bulk_preview(request, template, context, report, options)


def _bulk_preview(
    request: PortalRequest,
    template: str,
    context: dict[str, Any],
    report: bulkfile.BulkReport,
    options: dict[str, int | None],  # failure_tolerance: None, no limit
) -> HttpResponse:
    try:
        plan = lifecycle.plan_bulk(report)
    except PLAN_ERRORS as exc:
        context["plan_error"] = _plain(exc)
        return render(request, template, context)
    preview = run_selectors.plan_preview(plan)
    context.update(
        preview=preview,
        confirm=BulkConfirmForm(
            initial={
                "agent": report.agent,
                "records": report.records(),
                "plan_digest": preview["digest"],
                **options,
            }
        ),
    )
    return render(request, template, context)


def _bulk_confirm(request: PortalRequest, template: str) -> HttpResponse:
    form = BulkConfirmForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The confirmation was incomplete: upload the file again.")
        return redirect("accounts:account_onboard_file")
    data = form.cleaned_data
    report = bulkfile.load_records(data["agent"], data["records"])
    options = {"max_concurrency": data["max_concurrency"], "failure_tolerance": data["failure_tolerance"]}
    context = {"form": BulkUploadForm(initial={"agent": data["agent"], **options}), "report": report}
    if not report.ok:
        return render(request, template, context, status=400)
    try:
        plan = lifecycle.plan_bulk(report)
    except PLAN_ERRORS as exc:
        context["plan_error"] = _plain(exc)
        return render(request, template, context)
    digest = run_selectors.plan_digest(plan)
    if digest != data["plan_digest"]:
        messages.warning(request, CHANGED)
        return _bulk_preview(request, template, context, report, options)
    try:
        run = lifecycle.accounts_bulk_onboard(report=report, **options, **_run_fields(request, plan, digest))
    except ValidationError as exc:
        messages.error(request, _text(exc))
        return render(request, template, context, status=400)
    return redirect(run.get_absolute_url())


# --- helpers -------------------------------------------------------------------------------------


def _preview(
    request: PortalRequest, template: str, context: dict[str, Any], make_plan: Callable[[], Plan]
) -> HttpResponse:
    """Render a plan preview; a refusal or an AWS error is shown on the page, never a 500."""
    try:
        plan = make_plan()
    except ValidationError as exc:
        context["refusal"] = _text(exc)
    except PLAN_ERRORS as exc:
        context["plan_error"] = _plain(exc)
    else:
        context["preview"] = run_selectors.plan_preview(plan)
    return render(request, template, context)


def _confirmed(request: PortalRequest, make_plan: Callable[[], Plan]) -> Plan | None:
    """The plan again, if it is still the one the user confirmed (its digest); None otherwise."""
    try:
        plan = make_plan()
    except ValidationError as exc:
        messages.error(request, _text(exc))
        return None
    except PLAN_ERRORS as exc:
        messages.error(request, _plain(exc))
        return None
    if run_selectors.plan_digest(plan) != request.POST.get("plan_digest", ""):
        messages.warning(request, CHANGED)
        return None
    return plan


def _run_fields(request: PortalRequest, plan: Plan, digest: str | None = None) -> dict[str, Any]:
    previewed = digest if digest is not None else request.POST.get("plan_digest", "")
    options = run_selectors.previewed_options(plan, previewed)
    return {"user": request.user, "request_id": request.request_id, "options": options}


def _with_query(name: str, account_id: str, **query: str) -> str:
    url = reverse(name, args=[account_id])
    return f"{url}?{urlencode(query)}" if query else url


def _text(exc: ValidationError) -> str:
    return " ".join(exc.messages)


def _plain(exc: Exception) -> str:
    if isinstance(exc, aws.AwsError):
        return f"AWS answered {exc.code}: {exc.message}" + (
            f" (request id {exc.request_id})" if exc.request_id else ""
        )
    return str(exc)

"""Inventory pages and the onboarding wizard. Thin: permission → form → one service call → redirect.

Every mutating view is POST-only, CSRF-protected (Django's middleware) and checks the role's
permission server-side; templates only hide buttons for convenience.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from portal.middleware import PortalRequest
from portal.roles import CAN_DOWNLOAD, CAN_MANAGE_AGENTS, CAN_ONBOARD, permission_required
from provisioning import aws, policies, services, snyk
from provisioning import selectors as run_selectors
from provisioning.changes import Plan

from . import renderers, selectors
from . import services as account_services
from .choices import AgentKind
from .forms import AgentForm, AgentRuntimeForm, OnboardForm
from .models import AgentIdentity, EcrAccount

CAN_VIEW = "accounts.view_ecraccount"
CAN_VIEW_AGENTS = "accounts.view_agentidentity"
PLAN_ERRORS = (aws.AwsError, snyk.SnykError, policies.LayoutError)
# What a plan preview is of: an account (onboarding, reconcile) or an agent (its setup).
_Target = TypeVar("_Target", EcrAccount, AgentIdentity)


# --- agents ----------------------------------------------------------------------------------


@permission_required(CAN_VIEW_AGENTS)
def agent_list(request: PortalRequest) -> HttpResponse:
    return render(request, "accounts/agentidentity_list.html", {"agents": selectors.agent_list()})


@permission_required(CAN_VIEW_AGENTS)
def agent_detail(
    request: PortalRequest, pk: int, runtime_form: AgentRuntimeForm | None = None
) -> HttpResponse:
    context = selectors.agent_detail(pk)
    agent = context["agent"]
    if agent.kind == AgentKind.ROLE and request.user.has_perm(CAN_MANAGE_AGENTS):
        context["runtime_form"] = runtime_form or AgentRuntimeForm(agent=agent)
    return render(request, "accounts/agentidentity_detail.html", context)


@permission_required(CAN_MANAGE_AGENTS)
@require_POST
def agent_runtime(request: PortalRequest, pk: int) -> HttpResponse:
    """Move a role agent to another runtime, then preview the trust change its setup makes."""
    agent = selectors.agent_get(pk)
    form = AgentRuntimeForm(request.POST, agent=agent)
    if not form.is_valid():
        return agent_detail(request, pk, runtime_form=form)
    if not account_services.agent_set_runtime(agent=agent, runtime=form.runtime_fields(), user=request.user):
        messages.info(request, f"Agent {agent.name} already runs so: nothing changed.")
        return redirect(agent)
    messages.info(request, f"Agent {agent.name} now runs on {agent.runtime}: review the trust change.")
    return redirect("accounts:agent_plan", pk=agent.pk)


@permission_required(CAN_MANAGE_AGENTS)
def agent_add(request: PortalRequest) -> HttpResponse:
    form = AgentForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            agent = account_services.agent_create(user=request.user, **form.cleaned_data)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.info(request, f"Agent {agent.name} saved as a draft: review what will be created.")
            return redirect("accounts:agent_plan", pk=agent.pk)
    return render(request, "accounts/agentidentity_form.html", {"form": form})


@permission_required(CAN_MANAGE_AGENTS)
@require_GET
def agent_plan(request: PortalRequest, pk: int) -> HttpResponse:
    agent = selectors.agent_get(pk)
    return _render_plan(
        request, "accounts/agentidentity_plan.html", {"agent": agent}, services.plan_agent, agent
    )


@permission_required(CAN_MANAGE_AGENTS)
@require_POST
def agent_setup(request: PortalRequest, pk: int) -> HttpResponseRedirect:
    agent = selectors.agent_get(pk)
    plan = _confirmed_plan(request, services.plan_agent, agent)
    if plan is None:
        return redirect("accounts:agent_plan", pk=agent.pk)
    run = services.agent_setup(
        agent=agent, user=request.user, request_id=request.request_id, options=_preview_options(request, plan)
    )
    return redirect(run.get_absolute_url())


@never_cache
@permission_required(CAN_MANAGE_AGENTS)
@require_POST
def agent_access_key(request: PortalRequest, pk: int) -> HttpResponse:
    """Create an access key for a user agent and show it once: the response is the only copy."""
    agent = selectors.agent_get(pk)
    if agent.kind != AgentKind.USER:
        messages.error(
            request, "Access keys exist only for user agents; a role agent uses its instance profile."
        )
        return redirect(agent)
    try:
        key = services.agent_create_access_key(agent=agent, user=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect(agent)
    except aws.AwsError as exc:
        messages.error(request, f"AWS refused to create the key: {exc.code}: {exc.message}")
        return redirect(agent)
    cra_env = renderers.render_cra_env(
        access_key_id=key["AccessKeyId"], secret_access_key=key["SecretAccessKey"]
    )
    response = render(
        request,
        "accounts/agentidentity_access_key.html",
        {"agent": agent, "key": key, "cra_env": cra_env, "cra_filename": f"cra-{agent.name}.env"},
    )
    response["Cache-Control"] = "no-store"
    return response


# --- accounts --------------------------------------------------------------------------------


@permission_required(CAN_VIEW)
def account_list(request: PortalRequest) -> HttpResponse:
    filters = selectors.AccountFilters.from_query(request.GET)
    context = {
        "page": selectors.account_page(filters, request.GET.get("page")),
        "filters": filters,
        "filter_query": filters.as_query(),
        **selectors.account_filter_choices(),
    }
    return render(request, "accounts/ecraccount_list.html", context)


@permission_required(CAN_VIEW)
def account_detail(request: PortalRequest, account_id: str) -> HttpResponse:
    return render(request, "accounts/ecraccount_detail.html", selectors.account_detail(account_id))


@permission_required(CAN_VIEW)
@require_GET
def account_live_trust(request: PortalRequest, account_id: str) -> HttpResponse:
    """htmx partial: the live trust read from IAM now, diffed against the desired one."""
    account = selectors.account_get(account_id)
    return render(
        request,
        "accounts/_live_trust.html",
        {"account": account, "trust": selectors.account_live_trust(account)},
    )


# --- the onboarding wizard -------------------------------------------------------------------


@permission_required(CAN_ONBOARD)
def account_onboard(request: PortalRequest) -> HttpResponse:
    """Step 1: inputs. A valid form saves a draft (nothing sent to AWS) and opens its plan."""
    form = OnboardForm(request.POST or None, initial={"regions": [aws_default_region()]})
    if request.method == "POST" and form.is_valid():
        try:
            account = account_services.account_create(user=request.user, **form.service_fields())
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            return redirect("accounts:account_plan", account_id=account.account_id)
    return render(
        request,
        "accounts/ecraccount_form.html",
        # The agent field is a ModelChoiceField (with a queryset); form.fields types it as a Field.
        {"form": form, "has_agents": form.fields["agent"].queryset.exists()},  # type: ignore[attr-defined]
    )


@permission_required(CAN_ONBOARD)
@require_POST
def account_onboard_validate(request: PortalRequest) -> HttpResponse:
    """htmx: validate the whole form, return one field's partial with its errors (inline validation)."""
    form = OnboardForm(request.POST)
    name = request.POST.get("_field", "")
    if name not in form.fields:
        return HttpResponse(status=400)
    form.is_valid()
    context = {
        "field": form[name],
        "validated": True,
        "validate_url": reverse("accounts:account_onboard_validate"),
    }
    return render(request, "accounts/_field.html", context)


@permission_required(CAN_ONBOARD)
@require_GET
def account_plan(request: PortalRequest, account_id: str) -> HttpResponse:
    """Step 2: the plan preview — every document, its diff against live, every AWS call."""
    account = selectors.account_get(account_id)
    context = {
        "account": account,
        "onboarding": selectors.account_is_onboarding(account),
        "active_run": services.active_run_for(account),
    }
    return _render_plan(request, "accounts/ecraccount_plan.html", context, selectors.account_plan, account)


@permission_required(CAN_ONBOARD)
@require_POST
def account_apply(request: PortalRequest, account_id: str) -> HttpResponseRedirect:
    """Step 3: confirm. Starts the run only if the plan is still the one the user saw."""
    account = selectors.account_get(account_id)
    active = services.active_run_for(account)
    if active is not None:
        messages.info(request, f"Run #{active.pk} is already working on this account.")
        return redirect(active.get_absolute_url())
    plan = _confirmed_plan(request, selectors.account_plan, account)
    if plan is None:
        return redirect("accounts:account_plan", account_id=account.account_id)
    fields: dict[str, Any] = {
        "user": request.user,
        "request_id": request.request_id,
        "options": _preview_options(request, plan),
    }
    try:
        if selectors.account_is_onboarding(account):
            run = services.account_onboard(account=account, **fields)
        else:
            run = services.account_reconcile(accounts=[account], **fields)
    except services.RunInProgress as busy:  # a second confirmation of the same preview lost the race
        messages.info(request, f"Run #{busy.run.pk} is already working on this account.")
        return redirect(busy.run.get_absolute_url())
    return redirect(run.get_absolute_url())


# --- broker files ----------------------------------------------------------------------------


@permission_required(CAN_DOWNLOAD)
@require_GET
def broker_download(request: PortalRequest, pk: int, fmt: str) -> HttpResponse:
    broker = selectors.broker_get(pk)
    if fmt not in renderers.FORMATS:
        return HttpResponse(status=404)
    try:
        broker_file = account_services.broker_file_download(broker=broker, fmt=fmt, user=request.user)
    except renderers.BrokerFileError as exc:
        messages.error(request, f"No file for this broker: {exc}")
        return redirect(broker.account)
    response = HttpResponse(broker_file.content, content_type=broker_file.content_type)
    response["Content-Disposition"] = f'attachment; filename="{broker_file.filename}"'
    response["Cache-Control"] = "no-store"
    return response


# --- helpers ---------------------------------------------------------------------------------


def aws_default_region() -> str:

    return settings.AWS_DEFAULT_REGION


def _render_plan(
    request: PortalRequest,
    template: str,
    context: dict[str, Any],
    plan_function: Callable[[_Target], Plan],
    target: _Target,
) -> HttpResponse:
    """Render a plan preview; AWS or quota errors become a readable message, not a 500."""
    try:
        plan = plan_function(target)
    except PLAN_ERRORS as exc:
        context["plan_error"] = _plain(exc)
    else:
        context["preview"] = run_selectors.plan_preview(plan)
    return render(request, template, context)


def _confirmed_plan(
    request: PortalRequest, plan_function: Callable[[_Target], Plan], target: _Target
) -> Plan | None:
    """Re-plan and compare with the digest of the preview the user confirmed; None: not confirmed."""
    try:
        plan = plan_function(target)
    except PLAN_ERRORS as exc:
        messages.error(request, _plain(exc))
        return None
    if run_selectors.plan_digest(plan) != request.POST.get("plan_digest", ""):
        messages.warning(
            request,
            "AWS or the inventory changed since this plan was shown: review the new plan and confirm again.",
        )
        return None
    return plan


def _preview_options(request: PortalRequest, plan: Plan) -> dict[str, Any]:
    return run_selectors.previewed_options(plan, request.POST.get("plan_digest", ""))


def _plain(exc: Exception) -> str:
    if isinstance(exc, aws.AwsError):
        return f"AWS answered {exc.code}: {exc.message}" + (
            f" (request id {exc.request_id})" if exc.request_id else ""
        )
    return str(exc)

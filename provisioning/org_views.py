"""Organization pages: the tree with each account's status, connecting, rules, discovery and syncs.

Thin, as every page: permission, form, one service call, redirect. A sync is confirmed like any
plan: the preview's digest, and the accounts and ExternalIds it showed, come back with the POST;
when the organization or AWS changed in between, the new preview is shown instead.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from accounts import organizations as org_inventory
from accounts.forms import OnboardingRuleForm, OrganizationForm
from portal.middleware import PortalRequest
from portal.roles import CAN_MANAGE_AGENTS, CAN_ONBOARD, permission_required

from . import aws, org_selectors, org_services, policies
from . import selectors as run_selectors

CAN_VIEW = "accounts.view_ecraccount"
PLAN_ERRORS = (aws.AwsError, policies.LayoutError)
MAX_PINS_CHARS = 200_000
CHANGED = "The organization or AWS changed since this plan was shown: review the new plan and confirm again."


@permission_required(CAN_VIEW)
def organization_list(request: PortalRequest) -> HttpResponse:
    return render(
        request, "accounts/organization_list.html", {"organizations": org_selectors.organization_list()}
    )


@permission_required(CAN_VIEW)
def organization_detail(request: PortalRequest, name: str) -> HttpResponse:
    return render(request, "accounts/organization_detail.html", org_selectors.organization_detail(name))


@permission_required(CAN_MANAGE_AGENTS)
def organization_connect(request: PortalRequest) -> HttpResponse:
    form = OrganizationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            organization = org_services.organization_connect(user=request.user, **form.cleaned_data)
        except ValidationError as exc:
            form.add_error(None, exc)
        except aws.AwsError as exc:
            form.add_error(None, f"AWS refused: {exc.code}: {exc.message} (nothing was saved)")
        else:
            messages.info(
                request, f"Organization {organization.name} connected: discover it, then add a rule."
            )
            return redirect(organization)
    return render(request, "accounts/organization_form.html", {"form": form})


@permission_required(CAN_MANAGE_AGENTS)
def rule_add(request: PortalRequest, name: str) -> HttpResponse:
    organization = org_selectors.organization_get(name)
    form = OnboardingRuleForm(request.POST or None, organization=organization)
    if request.method == "POST" and form.is_valid():
        rule = org_inventory.rule_create(user=request.user, organization=organization, **form.rule_fields())
        messages.info(request, f"Rule {rule.position}: {org_inventory.describe_rule(rule)}")
        return redirect(organization)
    return render(
        request, "accounts/organization_rule_form.html", {"form": form, "organization": organization}
    )


@permission_required(CAN_ONBOARD)
@require_POST
def organization_discover(request: PortalRequest, name: str) -> HttpResponseRedirect:
    organization = org_selectors.organization_get(name)
    run = org_services.discover_request(organization=organization, user=request.user)
    return redirect(run.get_absolute_url())


def _pins(request: PortalRequest) -> dict[str, Any] | None:
    text = request.POST.get("pins", "")
    if len(text) > MAX_PINS_CHARS:
        return None
    try:
        pins = json.loads(text)
    except ValueError:
        return None
    ok = isinstance(pins, dict) and all(isinstance(pins.get(k), list) for k in ("onboard", "offboard"))
    return pins if ok and isinstance(pins.get("external_ids"), dict) else None


def _sync_page(
    request: PortalRequest, organization: Any, pinned: dict[str, Any] | None = None
) -> HttpResponse:
    context: dict[str, Any] = {"organization": organization}
    try:
        preview = org_services.plan_sync(organization, pinned=pinned)
    except ValidationError as exc:
        context["refusal"] = " ".join(exc.messages)
    except PLAN_ERRORS as exc:
        context["plan_error"] = str(exc)
    else:
        context.update(
            sync=preview.sync,
            decisions=preview.sync.decisions_dict(),
            preview=run_selectors.plan_preview(preview.plan),
            pins=json.dumps(preview.sync.pins(), separators=(",", ":")),
        )
    return render(request, "accounts/organization_sync.html", context)


@permission_required(CAN_ONBOARD)
@require_GET
def organization_sync(request: PortalRequest, name: str) -> HttpResponse:
    """The dry run: each account's rule and decision, every change; the form confirms it."""
    return _sync_page(request, org_selectors.organization_get(name))


@permission_required(CAN_ONBOARD)
@require_POST
def organization_sync_confirm(request: PortalRequest, name: str) -> HttpResponse:
    organization = org_selectors.organization_get(name)
    pins = _pins(request)
    if pins is None:
        messages.error(request, "The confirmation was incomplete: review the plan again.")
        return redirect("provisioning:organization_sync", name=name)
    try:
        preview = org_services.plan_sync(organization, pinned=pins)
    except (ValidationError, *PLAN_ERRORS) as exc:
        messages.error(request, str(exc))
        return redirect(organization)
    digest = run_selectors.plan_digest(preview.plan)
    if digest != request.POST.get("plan_digest", ""):
        messages.warning(request, CHANGED)
        return _sync_page(request, organization)
    try:
        run = org_services.sync_confirm(
            organization=organization,
            preview=preview,
            user=request.user,
            request_id=request.request_id,
            options={"previewed_plan": digest, "previewed_changes": len(preview.plan.changes)},
        )
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect(organization)
    return redirect(run.get_absolute_url())

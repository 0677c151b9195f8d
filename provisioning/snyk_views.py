"""The Snyk page: the connection (and connecting it), deployments with their files, every
connection's Org and integration; switching an agent's broker mode; a sync. Thin, as every view."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from accounts import renderers, universal_renderers
from accounts import services as inventory
from accounts.choices import BrokerMode, SnykApiHost
from accounts.models import AgentIdentity, BrokerInstance, SnykConnection, SnykDeployment, SnykTenant
from portal.middleware import PortalRequest
from portal.roles import CAN_DOWNLOAD_DEPLOYMENT, CAN_MANAGE_AGENTS, CAN_ONBOARD, permission_required

from . import snyk, snyk_services

CAN_VIEW_SNYK = "accounts.view_snyktenant"


class SnykConnectForm(forms.Form):
    tenant_id = forms.CharField(max_length=36, label="Tenant id")
    api_url = forms.ChoiceField(choices=SnykApiHost.choices, label="Region")
    token = forms.CharField(
        widget=forms.PasswordInput(render_value=False),
        strip=False,
        help_text="A Tenant Admin's personal API token.",
    )
    app_org_id = forms.CharField(max_length=36, required=False, label="Broker App Org id")
    group_id = forms.CharField(max_length=36, required=False, label="Group for new Orgs")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Snyk's regions, and SNYK_API_URL when it names another host (the fake API of `make run`).
        field = self.fields["api_url"]
        assert isinstance(field, forms.ChoiceField)
        if settings.SNYK_API_URL not in SnykApiHost.values:
            field.choices = [
                *SnykApiHost.choices,
                (settings.SNYK_API_URL, f"{settings.SNYK_API_URL} (SNYK_API_URL)"),
            ]
        field.initial = settings.SNYK_API_URL


@permission_required(CAN_VIEW_SNYK)
def snyk_overview(request: PortalRequest) -> HttpResponse:
    form = SnykConnectForm(request.POST or None)
    if request.method == "POST":
        if not request.user.has_perm(CAN_MANAGE_AGENTS):
            return HttpResponse(status=403)
        if form.is_valid():
            try:
                snyk_services.snyk_connect(user=request.user, **form.cleaned_data)
            except ValidationError as exc:
                form.add_error(None, " ".join(exc.messages))
            except snyk.SnykError as exc:
                form.add_error(None, f"Snyk refused the connection: {exc.message}")
            else:
                messages.info(request, "Connected: the token was tested and is stored encrypted.")
                return redirect("provisioning:snyk_overview")
    context = {
        "tenant": SnykTenant.current(),
        "form": form,
        "deployments": SnykDeployment.objects.select_related("agent").order_by("agent__name", "ordinal"),
        "connections": SnykConnection.objects.select_related("broker__account", "deployment__agent").order_by(
            "deployment__agent__name", "deployment__ordinal", "broker__account__account_id", "broker__region"
        ),
        "universal_agents": AgentIdentity.objects.filter(broker_mode=BrokerMode.UNIVERSAL),
        "formats": universal_renderers.FORMATS,
    }
    return render(request, "provisioning/snyk.html", context)


@permission_required(CAN_ONBOARD)
@require_POST
def snyk_sync(request: PortalRequest) -> HttpResponseRedirect:
    run = snyk_services.snyk_sync(user=request.user)
    if run is None:
        messages.info(request, "No onboarded account of a universal agent: nothing to sync.")
        return redirect("provisioning:snyk_overview")
    return redirect(run.get_absolute_url())


@permission_required(CAN_MANAGE_AGENTS)
@require_POST
def agent_broker_mode(request: PortalRequest, pk: int) -> HttpResponseRedirect:
    agent = get_object_or_404(AgentIdentity, pk=pk)
    try:
        _, run = snyk_services.broker_mode_switch(
            agent=agent, broker_mode=request.POST.get("broker_mode", ""), user=request.user
        )
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect(agent)
    if run is not None:
        messages.info(
            request,
            f"{agent.name} is in universal mode: this run creates its Snyk side; each account's classic "
            "brokers retire once its integration exists.",
        )
        return redirect(run.get_absolute_url())
    messages.info(request, f"{agent.name} is in {agent.get_broker_mode_display()} mode.")
    return redirect(agent)


@permission_required(CAN_DOWNLOAD_DEPLOYMENT)
def deployment_download(request: PortalRequest, pk: int, fmt: str) -> HttpResponse:
    deployment = get_object_or_404(SnykDeployment.objects.select_related("agent", "tenant"), pk=pk)
    if fmt not in universal_renderers.FORMATS:
        return HttpResponse(status=404)
    try:
        file = inventory.deployment_file_download(deployment=deployment, fmt=fmt, user=request.user)
    except renderers.BrokerFileError as exc:
        messages.error(request, f"No file for this deployment: {exc}")
        return redirect("provisioning:snyk_overview")
    response = HttpResponse(file.content, content_type=file.content_type)
    response["Content-Disposition"] = f'attachment; filename="{file.filename}"'
    response["Cache-Control"] = "no-store"
    return response


@permission_required(CAN_ONBOARD)
@require_POST
def snyk_org_map(request: PortalRequest, pk: int) -> HttpResponseRedirect:
    """The account page's form: integrate this registry into an existing Org (checked with Snyk)."""
    broker = get_object_or_404(BrokerInstance.objects.select_related("account"), pk=pk)
    try:
        name = snyk_services.snyk_org_map(
            broker=broker, org_id=request.POST.get("org_id", ""), user=request.user
        )
    except ValidationError as exc:
        messages.error(request, f"Org not mapped: {' '.join(exc.messages)}")
    except snyk.SnykError as exc:
        messages.error(request, f"Org not mapped, Snyk answered: {exc.message}")
    else:
        messages.info(
            request, f"{broker}: integrated into Snyk Org {name!r} from the next sync on (no Org is created)."
        )
    return redirect(broker.account)


@permission_required(CAN_MANAGE_AGENTS)
@require_POST
def snyk_app_secret_rotate(request: PortalRequest) -> HttpResponse:
    """The new client secret, on this answer only (never stored in the page's session or a message)."""
    try:
        secret = snyk_services.app_secret_rotate(user=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("provisioning:snyk_overview")
    except snyk.SnykError as exc:
        messages.error(request, f"Not rotated (the stored secret still holds): {exc.message}")
        return redirect("provisioning:snyk_overview")
    context = {
        "tenant": SnykTenant.current(),
        "secret": secret,
        "deployments": SnykDeployment.objects.select_related("agent").order_by("agent__name", "ordinal"),
    }
    response = render(request, "provisioning/snyk_secret.html", context)
    response["Cache-Control"] = "no-store"
    return response

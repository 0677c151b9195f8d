"""API tokens page: make one (shown once), see and revoke one's own; admins see and revoke all."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from .api import tokens
from .middleware import PortalRequest
from .models import ApiTokenScope
from .roles import permission_required

CAN_VIEW = "provisioning.view_run"  # every role: a token acts with its user's role, never more


class ApiTokenForm(forms.Form):
    name = forms.SlugField(max_length=64, help_text="What will use it, e.g. account-vending-pipeline.")
    scope = forms.ChoiceField(
        choices=ApiTokenScope.choices,
        initial=ApiTokenScope.READ,
        help_text="Read and write acts with your role; read only reads, whatever your role.",
    )
    expires_days = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=tokens.MAX_EXPIRES_DAYS,
        initial=90,
        label="Expires after (days)",
        help_text="Blank: never.",
    )


@never_cache
@permission_required(CAN_VIEW)
def api_token_list(request: PortalRequest) -> HttpResponse:
    form = ApiTokenForm(request.POST or None)
    secret = ""
    if request.method == "POST" and form.is_valid():
        try:
            token, secret = tokens.api_token_create(
                user=request.user, actor=request.user, **form.cleaned_data
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, f"Token {token.name} made: copy it now, it is not shown again.")
            form = ApiTokenForm()
    context = {"form": form, "secret": secret, "tokens": tokens.api_tokens_visible(request.user)}
    return render(request, "portal/apitoken_list.html", context)


@permission_required(CAN_VIEW)
@require_POST
def api_token_revoke(request: PortalRequest, pk: int) -> HttpResponseRedirect:
    token = tokens.api_token_for(request.user, pk)
    if token is None:
        raise Http404("No such token.")
    tokens.api_token_revoke(token=token, actor=request.user)
    messages.info(request, f"Token {token.name} of {token.user.get_username()} revoked.")
    return redirect("api_tokens")

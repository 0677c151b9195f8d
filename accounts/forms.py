"""Forms validate and normalise; the services' own validation (full_clean of the rows they would
save) runs in clean(), so the browser shows exactly the errors the command line prints."""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from accounts.choices import AgentKind, AgentRuntime, BrokerServer, Lifecycle, OnLeave

from . import organizations as org_inventory
from . import regions, services
from . import validators as v
from .models import RUNTIME_PARAMETERS, AgentIdentity, OnboardingRule, Organization


def _regions() -> list[tuple[str, str]]:
    return [(r, r) for r in sorted(regions.ECR_REGIONS)]


def _attach_errors(form: forms.Form, error: ValidationError) -> None:
    """Put a service's ValidationError on the form fields it names (others on the form itself)."""
    if not hasattr(error, "error_dict"):
        form.add_error(None, error)
        return
    for field, messages in error.message_dict.items():
        target = field if field in form.fields else None
        if target is not None and form.has_error(target):
            continue  # the field's own error says it already
        for message in dict.fromkeys(messages):
            form.add_error(target, message if target else f"{field}: {message}")


class ExactTextForm(forms.Form):
    """Refuses text with spaces or line breaks around it rather than trimming it (Django would), as
    uploads and the command line do. The rules check what is inside the spaces: a valid ARN with a
    trailing space is told only to drop the space, an invalid one also what is wrong with it."""

    free_text = ("alias",)  # labels for people: trimming them changes nothing that matters

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.padded = {
            name
            for name, field in self.fields.items()
            if isinstance(field, forms.CharField)
            and name not in self.free_text
            and v.has_surrounding_whitespace(self.data.get(name))
        }
        for name, field in self.fields.items():
            if isinstance(field, forms.CharField) and name not in self.free_text:
                field.strip = name in self.padded  # the rest exactly as typed (blank-only too: refused)

    def _post_clean(self) -> None:  # Django's hook after clean(): the rule's own message comes first
        super()._post_clean()  # type: ignore[misc]  # BaseForm has it; the stubs leave the private hook out
        for name in sorted(self.padded):
            self.add_error(name, v.SURROUNDING_WHITESPACE)


class AgentForm(ExactTextForm):
    name = forms.SlugField(max_length=64, help_text="The portal's name for this agent, e.g. cra-prod.")
    kind = forms.ChoiceField(choices=AgentKind.choices, initial=AgentKind.ROLE)
    account_id = forms.CharField(max_length=12, label="Agent AWS account id")
    iam_name = forms.CharField(
        max_length=64, required=False, label="IAM name", help_text="Default: SnykCraEc2Role or SnykCraUser."
    )
    policy_name = forms.CharField(
        max_length=128, required=False, help_text="Default: SnykCraAssumeRolePolicy."
    )
    management_role_arn = forms.CharField(
        max_length=2048, required=False, help_text="Role the portal assumes in the agent account (optional)."
    )
    management_external_id = forms.CharField(max_length=1224, required=False)
    runtime = forms.ChoiceField(
        choices=AgentRuntime.choices,
        initial=AgentRuntime.EC2,
        required=False,
        help_text="Where a role agent runs: whom its role trusts. A user agent has none.",
    )
    cluster_arn = forms.CharField(
        max_length=2048, required=False, label="Cluster ARN", help_text="ECS (optional) or EKS Pod Identity."
    )
    oidc_issuer = forms.CharField(
        max_length=255, required=False, label="OIDC issuer", help_text="EKS IRSA: the cluster's issuer URL."
    )
    oidc_thumbprint = forms.CharField(
        max_length=40,
        required=False,
        label="OIDC thumbprint",
        help_text="EKS IRSA: the portal creates the OIDC provider when missing, with this thumbprint.",
    )
    namespace = forms.CharField(
        max_length=63, required=False, label="Kubernetes namespace", help_text="EKS. Default: snyk-broker."
    )
    service_account = forms.CharField(
        max_length=253, required=False, label="Service account", help_text="EKS. Default: snyk-broker."
    )

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data  # what Form.clean() returns (its stubs allow None)
        if "kind" not in data:
            return data
        try:
            services.agent_build(**{name: data.get(name, "") for name in self.fields})
        except ValidationError as exc:
            _attach_errors(self, exc)
        return data


class AgentRuntimeForm(ExactTextForm):
    """Move a role agent to another runtime: the setup plan then previews the trust change."""

    runtime = AgentForm.base_fields["runtime"]
    cluster_arn = AgentForm.base_fields["cluster_arn"]
    oidc_issuer = AgentForm.base_fields["oidc_issuer"]
    oidc_thumbprint = AgentForm.base_fields["oidc_thumbprint"]
    namespace = AgentForm.base_fields["namespace"]
    service_account = AgentForm.base_fields["service_account"]

    def __init__(self, *args: Any, agent: AgentIdentity, **kwargs: Any) -> None:
        initial = {name: getattr(agent, name) for name in services.RUNTIME_FIELDS}
        super().__init__(*args, initial=initial, **kwargs)
        self.agent = agent

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        try:  # validated on the agent the way it would be saved, which stays as it is here
            before = services.agent_preview_runtime(agent=self.agent, runtime=self.runtime_fields())
        except ValidationError as exc:
            _attach_errors(self, exc)
        else:
            for name, value in before.items():
                setattr(self.agent, name, value)
        return data

    def runtime_fields(self) -> dict[str, str]:
        """The chosen runtime and the parameters it takes (the page posts every field, the old
        runtime's still filled in)."""
        runtime = self.cleaned_data.get("runtime") or AgentRuntime.EC2
        takes = RUNTIME_PARAMETERS.get(AgentRuntime(runtime), ()) if runtime in AgentRuntime.values else ()
        return {"runtime": runtime, **{name: self.cleaned_data.get(name) or "" for name in takes}}


class OnboardForm(ExactTextForm):
    """Step 1 of the wizard: everything `account_create` takes."""

    account_id = forms.CharField(
        max_length=12, label="AWS account id", help_text="The 12-digit account holding the ECR repositories."
    )
    alias = forms.CharField(max_length=100, required=False)
    agent = forms.ModelChoiceField(
        queryset=AgentIdentity.objects.exclude(status=Lifecycle.REMOVED),
        empty_label=None,
        help_text="The identity the Container Registry Agent runs as.",
    )
    regions = forms.MultipleChoiceField(
        choices=_regions,
        help_text="One broker per region (Ctrl/Cmd-click for several).",
        widget=forms.SelectMultiple(attrs={"size": 6}),
    )
    management_role_arn = forms.CharField(
        max_length=2048,
        required=False,
        label="Management role ARN",
        help_text="Role the portal assumes in this account; blank = the portal's own credentials.",
    )
    management_external_id = forms.CharField(max_length=1224, required=False)
    external_id = forms.CharField(
        max_length=1224,
        required=False,
        label="ExternalId",
        help_text="Blank: a UUID4 is generated (recommended).",
    )
    broker_client_url = forms.CharField(
        max_length=255,
        required=False,
        label="Broker client URL",
        help_text="How the CRA reaches the broker client, e.g. http://broker:8000.",
    )
    cr_agent_url = forms.CharField(
        max_length=255,
        required=False,
        label="CR agent URL",
        help_text="How the broker reaches the Container Registry Agent, e.g. http://cra:8081.",
    )
    broker_token = forms.CharField(
        max_length=36,
        required=False,
        widget=forms.PasswordInput(render_value=True, attrs={"autocomplete": "off"}),
        help_text="The UUID from Snyk's broker integration settings; blank: generate one.",
    )
    broker_server_url = forms.ChoiceField(
        choices=BrokerServer.choices,
        initial=BrokerServer.DEFAULT,
        label="Broker server",
        help_text="Snyk's regional broker server for your Snyk organisation.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in ("account_id", "management_role_arn", "external_id", "broker_client_url", "cr_agent_url"):
            self.fields[name].widget.attrs.setdefault("autocomplete", "off")
        self.fields["account_id"].widget.attrs.update({"inputmode": "numeric", "placeholder": "123456789012"})
        self.fields["management_role_arn"].widget.attrs["placeholder"] = "arn:aws:iam::123456789012:role/NAME"
        self.fields["broker_client_url"].widget.attrs["placeholder"] = "http://broker:8000"
        self.fields["cr_agent_url"].widget.attrs["placeholder"] = "http://cra:8081"

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data  # what Form.clean() returns (its stubs allow None)
        if "agent" not in data:
            return data
        try:
            services.account_build(**self.service_fields(data))
        except ValidationError as exc:
            _attach_errors(self, exc)
        return data

    def service_fields(self, data: dict[str, Any] | None = None) -> dict[str, Any]:
        data = self.cleaned_data if data is None else data
        fields = {name: data.get(name, "") for name in self.fields}
        fields["regions"] = data.get("regions") or []
        return fields


# --- organizations -------------------------------------------------------------------------------

_LIST_SEPARATORS = re.compile(r"[\s,;]+")


def split_list(value: str) -> list[str]:
    return [item for item in _LIST_SEPARATORS.split(value or "") if item]


class OrganizationForm(ExactTextForm):
    name = forms.SlugField(max_length=64, help_text="The portal's name for this organization, e.g. acme.")
    account_id = forms.CharField(
        max_length=12, label="Management account id", help_text="Or a delegated administrator's account."
    )
    management_role_arn = forms.CharField(
        max_length=2048,
        required=False,
        help_text="The role discovery assumes there (manage.py iam_policy --role organization).",
    )
    management_external_id = forms.CharField(max_length=1224, required=False)
    auto_apply = forms.BooleanField(
        required=False,
        help_text="Off: a scheduled sync only proposes its changes; an operator confirms the plan here.",
    )

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if "name" in data:
            try:
                fields = {name: data.get(name, "") for name in self.fields}
                org_inventory.organization_build(**{**fields, "auto_apply": bool(fields["auto_apply"])})
            except ValidationError as exc:
                _attach_errors(self, exc)
        return data


class OnboardingRuleForm(ExactTextForm):
    """An onboarding rule. Field names are rule_build's, so its errors land on the right field."""

    agent = forms.ModelChoiceField(queryset=AgentIdentity.objects.exclude(status=Lifecycle.REMOVED))
    regions = forms.MultipleChoiceField(choices=_regions, initial=["us-east-1"])
    ou_ids = forms.CharField(
        required=False, label="OU ids", help_text="ou-… or r-… (the whole organization), separated by spaces."
    )
    include_children = forms.BooleanField(required=False, label="Include the OUs below them")
    account_ids = forms.CharField(required=False, label="Account ids", help_text="Separated by spaces.")
    name_glob = forms.CharField(required=False, label="Account name pattern", help_text="e.g. prod-*")
    email_glob = forms.CharField(
        required=False, label="E-mail pattern", help_text="e.g. *@payments.example.com"
    )
    tag = forms.CharField(required=False, help_text="KEY=VALUE, e.g. snyk=yes")
    exclude = forms.CharField(
        required=False, label="Never onboard", help_text="Account ids, separated by spaces."
    )
    member_role_name = forms.CharField(
        required=False,
        label="Role to assume in each account",
        help_text="Default: OrganizationAccountAccessRole.",
    )
    broker_client_url_template = forms.CharField(
        required=False, label="Broker client URL", help_text="e.g. http://broker-{account_id}-{region}:8000"
    )
    cr_agent_url_template = forms.CharField(required=False, label="Container Registry Agent URL")
    on_leave = forms.ChoiceField(
        choices=OnLeave.choices, initial=OnLeave.OFFBOARD, label="When an account leaves"
    )

    def __init__(self, *args: Any, organization: Organization, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.organization = organization
        self.rule: OnboardingRule | None = None

    def rule_fields(self) -> dict[str, Any]:
        data = self.cleaned_data
        fields = {name: data.get(name) for name in self.fields}
        for name in ("ou_ids", "account_ids", "exclude"):
            fields[name] = split_list(data.get(name) or "")
        fields["regions"] = list(data.get("regions") or [])
        fields["include_children"] = bool(data.get("include_children"))
        return {k: ("" if v is None else v) for k, v in fields.items()}

    def clean(self) -> dict[str, Any]:
        super().clean()
        if "agent" in self.cleaned_data and not self.errors:
            try:
                self.rule = org_inventory.rule_build(organization=self.organization, **self.rule_fields())
            except ValidationError as exc:
                _attach_errors(self, exc)
        return self.cleaned_data

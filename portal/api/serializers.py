"""What the API returns (read-only views of the models, no secret: broker tokens only masked) and
the shapes of its request bodies. Input rules are the forms' and services', not repeated here."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.choices import BrokerServer
from accounts.models import AgentIdentity, BrokerInstance, EcrAccount, ExternalId
from accounts.renderers import FORMATS
from provisioning.models import Operation, Run


def _text(**kwargs: Any) -> serializers.CharField:
    # Exactly as sent: the forms refuse surrounding whitespace with their own message.
    return serializers.CharField(trim_whitespace=False, allow_blank=True, required=False, **kwargs)


class AgentSerializer(serializers.ModelSerializer[AgentIdentity]):
    arn = serializers.CharField(read_only=True)

    class Meta:
        model = AgentIdentity
        fields = [
            "id", "name", "kind", "account_id", "iam_name", "policy_name", "arn", "status", "layout",
            "management_role_arn", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = fields


class ExternalIdSerializer(serializers.ModelSerializer[ExternalId]):
    class Meta:
        model = ExternalId
        fields = ["id", "value", "state", "created_at", "retiring_since", "applied_at"]
        read_only_fields = fields


class BrokerSerializer(serializers.ModelSerializer[BrokerInstance]):
    account_id = serializers.CharField(source="account.account_id", read_only=True)
    state = serializers.CharField(read_only=True)
    pending_reason = serializers.CharField(read_only=True)
    token_readable = serializers.BooleanField(read_only=True)
    masked_token = serializers.CharField(read_only=True)
    files = serializers.SerializerMethodField()

    class Meta:
        model = BrokerInstance
        fields = [
            "id", "account_id", "region", "broker_client_url", "cr_agent_url", "broker_server_url", "port",
            "state", "pending_reason", "token_readable", "masked_token", "files", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = fields

    @extend_schema_field({"type": "object", "additionalProperties": {"type": "string"}})
    def get_files(self, broker: BrokerInstance) -> dict[str, str]:
        return {fmt: reverse("api:broker_download", args=[broker.pk, fmt]) for fmt in FORMATS}


class AccountSerializer(serializers.ModelSerializer[EcrAccount]):
    agent_name = serializers.CharField(source="agent.name", read_only=True)
    service_role_arn = serializers.CharField(read_only=True)
    read_policy_arn = serializers.CharField(read_only=True)
    external_ids = ExternalIdSerializer(many=True, read_only=True)
    brokers = BrokerSerializer(many=True, read_only=True)

    class Meta:
        model = EcrAccount
        fields = [
            "account_id", "alias", "agent", "agent_name", "status", "service_role_arn", "read_policy_arn",
            "management_role_arn", "role_adopted", "policy_adopted", "drifted", "last_audit_at",
            "external_ids", "brokers", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = fields


class AccountCreateSerializer(serializers.Serializer[dict[str, Any]]):
    """The onboarding wizard's first step (a draft: nothing is sent to AWS)."""

    account_id = serializers.CharField(trim_whitespace=False)
    agent = serializers.IntegerField(help_text="The agent's id (GET /api/v1/agents/).")
    regions = serializers.ListField(child=serializers.CharField(trim_whitespace=False), allow_empty=True)
    alias = _text()
    management_role_arn = _text()
    management_external_id = _text()
    external_id = _text(help_text="Blank: a UUID4 is generated (recommended).")
    broker_client_url = _text()
    cr_agent_url = _text()
    broker_token = _text(help_text="Blank: one is generated.", write_only=True)
    broker_server_url = serializers.ChoiceField(choices=BrokerServer.choices, default=BrokerServer.DEFAULT)


class ApplySerializer(serializers.Serializer[dict[str, Any]]):
    digest = serializers.CharField(help_text="The digest of the preview this confirms.")


class PlanChangeSerializer(serializers.Serializer[dict[str, Any]]):
    number = serializers.IntegerField()
    account_id = serializers.CharField()
    kind = serializers.CharField()
    action = serializers.CharField()
    arn = serializers.CharField()
    summary = serializers.CharField()
    before = serializers.JSONField(allow_null=True)
    after = serializers.JSONField(allow_null=True)
    request = serializers.DictField(child=serializers.CharField())
    shared = serializers.BooleanField()


class PlanSerializer(serializers.Serializer[dict[str, Any]]):
    digest = serializers.CharField(help_text="Send it to .../apply to start exactly this plan.")
    changes = PlanChangeSerializer(many=True)
    write_count = serializers.IntegerField()
    accounts_touched = serializers.ListField(child=serializers.CharField())
    notes = serializers.ListField(child=serializers.CharField())
    adopted = serializers.ListField(child=serializers.CharField())
    layout = serializers.CharField()
    revokes_everything = serializers.BooleanField()
    revokes_roles = serializers.ListField(child=serializers.CharField())


class PreviewSerializer(serializers.Serializer[dict[str, Any]]):
    target = serializers.CharField(help_text="The account id or agent name planned.")
    action = serializers.ChoiceField(choices=["onboard", "reconcile", "agent_setup"])
    plan = PlanSerializer()


class RunSerializer(serializers.ModelSerializer[Run]):
    agent_name = serializers.SerializerMethodField()
    is_active = serializers.BooleanField(read_only=True)
    page = serializers.SerializerMethodField()
    operations = serializers.SerializerMethodField()

    class Meta:
        model = Run
        fields = [
            "id", "kind", "status", "is_active", "agent", "agent_name", "targets", "options",
            "requested_by_name", "explanation", "error", "cancel_requested", "progress_total",
            "progress_done", "plan", "result", "created_at", "started_at", "finished_at", "page",
            "operations",
        ]  # fmt: skip
        read_only_fields = fields

    def get_agent_name(self, run: Run) -> str:
        return run.agent.name if run.agent else ""

    def get_page(self, run: Run) -> str:
        return run.get_absolute_url()

    def get_operations(self, run: Run) -> str:
        return reverse("api:run_operations", args=[run.pk])


class OperationSerializer(serializers.ModelSerializer[Operation]):
    class Meta:
        model = Operation
        fields = [
            "sequence", "account_id", "action", "resource_arn", "summary", "before", "after", "status",
            "error_code", "error_message", "request_id", "duration_ms", "attempts", "created_at",
        ]  # fmt: skip
        read_only_fields = fields


class FindingSerializer(serializers.Serializer[dict[str, Any]]):
    code = serializers.CharField()
    severity = serializers.CharField()
    message = serializers.CharField()


class AuditRowSerializer(serializers.Serializer[dict[str, Any]]):
    account_id = serializers.CharField()
    alias = serializers.CharField()
    agent = serializers.CharField()
    role_arn = serializers.CharField()
    status = serializers.CharField(help_text="in_sync, drifted, missing, unreachable or not_audited.")
    drift_since = serializers.DateTimeField(allow_null=True)
    observed_at = serializers.DateTimeField(allow_null=True)
    confirmed_at = serializers.DateTimeField(allow_null=True)
    trusted_principals = serializers.ListField(child=serializers.CharField())
    external_ids = serializers.ListField(child=serializers.CharField())
    findings = FindingSerializer(many=True)

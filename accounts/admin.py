from django.contrib import admin

from .models import AgentIdentity, BrokerInstance, EcrAccount, ExternalId


class ExternalIdInline(admin.TabularInline):
    model = ExternalId
    extra = 0


class BrokerInline(admin.TabularInline):
    model = BrokerInstance
    extra = 0
    exclude = ["broker_token"]  # never shown; set through the portal's forms


@admin.register(AgentIdentity)
class AgentIdentityAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "account_id", "iam_name", "policy_name", "layout", "status"]
    list_filter = ["kind", "status", "layout"]
    search_fields = ["name", "account_id", "iam_name"]


@admin.register(EcrAccount)
class EcrAccountAdmin(admin.ModelAdmin):
    list_display = ["account_id", "alias", "agent", "status", "drifted", "last_audit_at"]
    list_filter = ["status", "drifted", "agent", "role_adopted"]
    search_fields = ["account_id", "alias"]
    list_select_related = ["agent"]
    inlines = [ExternalIdInline, BrokerInline]


@admin.register(ExternalId)
class ExternalIdAdmin(admin.ModelAdmin):
    list_display = ["account", "value", "state", "created_at", "retiring_since"]
    list_filter = ["state"]
    search_fields = ["account__account_id", "value"]
    list_select_related = ["account"]


@admin.register(BrokerInstance)
class BrokerInstanceAdmin(admin.ModelAdmin):
    list_display = ["account", "region", "broker_server_url", "broker_client_url", "status"]
    list_filter = ["status", "region", "broker_server_url"]
    search_fields = ["account__account_id", "account__alias"]
    list_select_related = ["account"]
    exclude = ["broker_token"]

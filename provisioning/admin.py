from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest

from .models import Operation, Run, RunLogEntry


class ReadOnlyAdmin(admin.ModelAdmin):
    """Runs and operations are records: visible in the admin, never edited there."""

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


class OperationInline(admin.TabularInline):
    model = Operation
    # A tuple: the stubs type `fields` as a list of field groups, and a list[str] is not one.
    fields = ("sequence", "action", "resource_arn", "status", "error_code", "duration_ms")
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Run)
class RunAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "status", "requested_by_name", "created_at", "finished_at", "attempts"]
    list_filter = ["kind", "status"]
    search_fields = ["targets", "requested_by_name", "explanation"]
    inlines = [OperationInline]


@admin.register(Operation)
class OperationAdmin(ReadOnlyAdmin):
    list_display = ["run", "sequence", "account_id", "action", "status", "error_code", "created_at"]
    list_filter = ["status", "action"]
    search_fields = ["account_id", "resource_arn", "request_id"]


@admin.register(RunLogEntry)
class RunLogEntryAdmin(ReadOnlyAdmin):
    list_display = ["run", "created_at", "level", "message"]
    list_filter = ["level"]

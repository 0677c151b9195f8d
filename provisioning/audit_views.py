"""Audit pages: every trust relationship in one table, one relationship's documents, refresh, exports.

Thin: permission -> filters -> one selector or service call. Pages read stored snapshots only;
"refresh" queues an audit run (operators), "fix" is a link to the account's reconcile plan preview,
where nothing changes until the operator confirms the plan shown.
"""

import json

from django.contrib import messages
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from portal.middleware import PortalRequest
from portal.roles import CAN_AUDIT, permission_required

from . import audit_selectors
from .audit.services import audit_request

CAN_VIEW = "accounts.view_ecraccount"


@permission_required(CAN_VIEW)
@require_GET
def audit_list(request: PortalRequest) -> HttpResponse:
    filters = audit_selectors.AuditFilters.from_query(request.GET)
    context = audit_selectors.audit_page(filters, request.GET.get("page"))
    return render(request, "provisioning/audit_list.html", context)


@permission_required(CAN_VIEW)
@require_GET
def audit_detail(request: PortalRequest, account_id: str) -> HttpResponse:
    return render(request, "provisioning/audit_detail.html", audit_selectors.audit_detail(account_id))


@permission_required(CAN_AUDIT)
@require_POST
def audit_refresh(request: PortalRequest) -> HttpResponseRedirect:
    run = audit_request(user=request.user, request_id=request.request_id)
    messages.info(
        request,
        f"Audit run #{run.pk} is {run.get_status_display().lower()}: it reads AWS and changes nothing.",
    )
    return redirect("provisioning:audit_list")


def _stamp() -> str:
    return timezone.now().strftime("%Y%m%dT%H%M%SZ")


@permission_required(CAN_VIEW)
@require_GET
def audit_csv(request: PortalRequest) -> HttpResponse:
    filters = audit_selectors.AuditFilters.from_query(request.GET)
    response = HttpResponse(audit_selectors.export_csv(filters), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="audit-{_stamp()}.csv"'
    return response


@permission_required(CAN_VIEW)
@require_GET
def audit_json(request: PortalRequest) -> HttpResponse:
    filters = audit_selectors.AuditFilters.from_query(request.GET)
    body = json.dumps(audit_selectors.export_json(filters), indent=2)
    response = HttpResponse(body, content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="audit-{_stamp()}.json"'
    return response

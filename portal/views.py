from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from . import selectors
from .middleware import PortalRequest
from .roles import permission_required


@permission_required("accounts.view_ecraccount")
def dashboard(request: PortalRequest) -> HttpResponse:
    return render(request, "portal/dashboard.html", selectors.dashboard_summary())


@login_not_required
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers and the embedded launcher: the database answers."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})

from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import render
from django.views import defaults

from . import selectors
from .api.problems import CONTENT_TYPE, not_found_body
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


def not_found(request: HttpRequest, exception: Exception) -> HttpResponseBase:
    """handler404: API paths answer with a problem (a client reads JSON), pages with the page."""
    if request.path.startswith("/api/"):
        return JsonResponse(not_found_body(request.path), status=404, content_type=CONTENT_TYPE)
    return defaults.page_not_found(request, exception)

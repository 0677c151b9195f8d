"""Run pages: list, detail, the live progress partial that htmx polls while a run is active, and
the paginated list of a run's operations."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from portal.middleware import PortalRequest
from portal.roles import CAN_ONBOARD, permission_required

from . import selectors, services
from .choices import RunKind, RunStatus

CAN_VIEW_RUNS = "provisioning.view_run"
RUN_FINISHED = "run-finished"  # the htmx event a page listens to (hx-trigger="run-finished from:body")


@permission_required(CAN_VIEW_RUNS)
@require_GET
def run_list(request: PortalRequest) -> HttpResponse:
    filters = selectors.RunFilters.from_query(request.GET)
    context = {
        "page": selectors.run_page(filters, request.GET.get("page")),
        "filters": filters,
        "filter_query": filters.as_query(),
        "kinds": RunKind.choices,
        "statuses": RunStatus.choices,
    }
    return render(request, "provisioning/run_list.html", context)


@permission_required(CAN_VIEW_RUNS)
@require_GET
def run_detail(request: PortalRequest, pk: int) -> HttpResponse:
    run = selectors.run_get(pk)
    return render(request, "provisioning/run_detail.html", selectors.run_detail(run))


@permission_required(CAN_VIEW_RUNS)
@require_GET
def run_progress(request: PortalRequest, pk: int) -> HttpResponse:
    """htmx polls this every second while the run is active; the terminal render stops the polling
    and tells the page (the `run-finished` event) so what shows the run's results can reload."""
    run = selectors.run_get(pk)
    response = render(request, "provisioning/_run_progress.html", selectors.run_progress(run))
    if not run.is_active:
        response["HX-Trigger"] = RUN_FINISHED
    return response


@permission_required(CAN_VIEW_RUNS)
@require_GET
def run_operations(request: PortalRequest, pk: int) -> HttpResponse:
    """Every operation of a run, paginated and filtered; the run page shows only the latest ones."""
    run = selectors.run_get(pk)
    filters = selectors.OperationFilters.from_query(request.GET)
    context = selectors.run_operations(run, filters, request.GET.get("page"))
    return render(request, "provisioning/run_operations.html", context)


@permission_required(CAN_ONBOARD)
@require_POST
def run_cancel(request: PortalRequest, pk: int) -> HttpResponseRedirect:
    run = selectors.run_get(pk)
    try:
        run = services.run_cancel(run=run, user=request.user)
        messages.success(request, f"Run {run.pk}: cancel requested ({run.get_status_display().lower()}).")
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect(run.get_absolute_url())

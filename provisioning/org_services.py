"""Organization use cases: connect, discover, preview a sync, request one (on demand, scheduled, confirmed).

A sync previewed here and a sync run walk the same flow (flows.ORG_SYNC). With auto-apply off a
scheduled sync only decides; the operator confirms the preview on the organization page, whose
digest pins the plan and whose account ids pin what the run may onboard and offboard.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError

from accounts import organizations as org_inventory
from accounts.models import Organization
from portal.audit import Actor

from . import aws, flows, lifecycle, services
from . import organizations as orgs
from .changes import Plan
from .choices import ACTIVE_RUN_STATUSES, RunKind, RunStatus
from .models import Run

log = logging.getLogger(__name__)


def organization_connect(*, user: Actor = None, **fields: Any) -> Organization:
    """Check the input, read the organization once (the role lands in its account, may describe
    it), then save the connection. Bad input: ValidationError before any AWS call."""
    organization = org_inventory.organization_build(**fields)
    aws.Organizations(orgs.access_of(organization)).describe_organization()
    return org_inventory.organization_create(user=user, **fields)


def discover_request(*, organization: Organization, user: Actor = None, enqueue: bool = True) -> Run:
    return services.run_request(
        kind=RunKind.ORG_DISCOVER, user=user, options={"organization": organization.pk}, enqueue=enqueue
    )


def sync_options(
    *, max_concurrency: int | None = None, failure_tolerance: int | None = None
) -> dict[str, int]:
    """The bulk flow's operation preferences (default concurrency: RECONCILE_CONCURRENCY)."""
    preferences = lifecycle.bulk_options(
        max_concurrency=settings.RECONCILE_CONCURRENCY if max_concurrency is None else max_concurrency,
        failure_tolerance=failure_tolerance,
        count=0,
    )
    if failure_tolerance is None:
        del preferences["failure_tolerance"]  # the bulk flow's default: tolerate every failure
    return preferences


@dataclass
class SyncPreview:
    sync: orgs.SyncPlan
    plan: Plan


def plan_sync(
    organization: Organization,
    *,
    options: dict[str, Any] | None = None,
    pinned: dict[str, Any] | None = None,
) -> SyncPreview:
    """Dry run: read the tree now, decide per account, preview every change. Saves nothing.

    `pinned`: a preview being confirmed, made again with the accounts and ExternalIds it showed."""
    orgs.check_organization(organization)
    tree = orgs.read_tree(organization)
    sync = orgs.sync_plan(organization, tree, pinned=pinned)
    plan = flows.ORG_SYNC.preview(flows.sync_scope(sync, options or sync_options()))
    return SyncPreview(sync, plan)


def sync_request(
    *,
    organization: Organization,
    apply: bool,
    user: Actor = None,
    pinned: dict[str, Any] | None = None,
    enqueue: bool = True,
    options: dict[str, Any] | None = None,
    **run_fields: Any,
) -> Run:
    """One sync run: with `apply` it onboards and offboards (only `pinned` accounts when given)."""
    orgs.check_organization(organization)
    run_options: dict[str, Any] = {
        **sync_options(),
        **(options or {}),
        "organization": organization.pk,
        "apply": apply,
    }
    if pinned is not None:
        run_options["pinned"] = pinned
    return services.run_request(
        kind=RunKind.ORG_SYNC, user=user, options=run_options, enqueue=enqueue, **run_fields
    )


def sync_scheduled() -> list[int]:
    """Celery beat: a sync of every organization with rules (applied only with auto-apply on)."""
    started = []
    for organization in Organization.objects.filter(rules__isnull=False).distinct():
        try:
            run = sync_request(
                organization=organization, apply=organization.auto_apply, options={"scheduled": True}
            )
        except ValidationError as exc:  # a sync of it still runs: the next beat tries again
            log.info("organization %s: no scheduled sync: %s", organization.name, exc)
            continue
        started.append(run.pk)
    return started


def latest_sync(organization: Organization) -> Run | None:
    return (
        Run.objects.filter(kind=RunKind.ORG_SYNC, options__organization=organization.pk)
        .order_by("-created_at", "-pk")
        .first()
    )


def pending_change(organization: Organization) -> dict[str, list[str]]:
    """What the latest sync left for an operator to confirm (empty when nothing waits)."""
    run = latest_sync(organization)
    if run is None or run.status != RunStatus.SUCCEEDED:
        return {}
    pending: dict[str, list[str]] = (run.result or {}).get("pending") or {}
    return pending


def sync_confirm(
    *, organization: Organization, preview: SyncPreview, user: Actor = None, **run_fields: Any
) -> Run:
    """Apply a previewed sync (its digest already checked): only the accounts it showed."""
    active = Run.objects.filter(
        kind=RunKind.ORG_SYNC, options__organization=organization.pk, status__in=ACTIVE_RUN_STATUSES
    ).first()
    if active is not None:
        raise ValidationError({"run": f"Run #{active.pk} is still {active.status} for {organization.name}."})
    return sync_request(
        organization=organization, apply=True, user=user, pinned=preview.sync.pins(), **run_fields
    )

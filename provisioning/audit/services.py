"""The audit's service: queue an audit run."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from accounts.models import EcrAccount
from portal.audit import Actor

from .. import services
from ..choices import ACTIVE_RUN_STATUSES, RunKind
from ..models import Run


def audit_request(
    *,
    user: Actor = None,
    accounts: Iterable[EcrAccount] | None = None,
    enqueue: bool = True,
    request_id: str = "",
) -> Run:
    """Queue an audit of every account (accounts=None) or of these. Read-only: it changes no AWS state.

    A full audit that is already queued or running is returned instead of starting a second one.
    """
    if accounts is None:
        active = Run.objects.filter(
            kind=RunKind.AUDIT, status__in=ACTIVE_RUN_STATUSES, options__scope="all"
        ).first()
        if active is not None:
            return active
        return services.run_request(
            kind=RunKind.AUDIT, user=user, options={"scope": "all"}, request_id=request_id, enqueue=enqueue
        )
    ids = sorted({a.account_id for a in accounts})
    with transaction.atomic():
        run = services.run_request(
            kind=RunKind.AUDIT,
            user=user,
            options={"scope": "accounts", "account_ids": ids},
            request_id=request_id,
            enqueue=enqueue,
        )
        # Targets as text for the run pages; no account link, so the run page offers no broker files.
        Run.objects.filter(pk=run.pk).update(targets=ids)
        run.targets = ids
    return run

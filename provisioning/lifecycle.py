"""Lifecycle use cases at scale: ExternalId rotation, offboarding, bulk onboarding (HackSoft style).

Each use case has a read-only `plan_*` preview (what the run will do, computed from AWS now) and a
write that validates, changes the inventory in one transaction and requests one Run; the engine
makes AWS match. Refusals raise ValidationError naming the field, before anything is saved.

Rotation, without downtime:
  1. `external_id_rotate`: a new id joins; the old one turns "retiring". The trust lists both (the
     guide's list form), and broker files switch to the new id at once.
  2. The operator downloads the new broker file, redeploys the broker and says so
     (`broker_mark_redeployed`, recorded in the audit log).
  3. `external_id_retire` the old id: the trust lists only the new one. The last id is never
     retired; `retirement_warnings` names every broker that has not taken a file holding the new id
     since the switch (read from the audit log's `broker.download` entries) or not been marked
     redeployed. Retiring the *new* id instead cancels the rotation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import ngettext

from accounts import services as inventory
from accounts.choices import BrokerStatus, ExternalIdState, Lifecycle
from accounts.models import AgentIdentity, BrokerInstance, EcrAccount, ExternalId
from portal import audit
from portal.audit import Actor
from portal.models import AuditEntry
from portal.text import counted

from . import bulkfile, flows, policies, services
from .changes import Plan
from .choices import ACTIVE_RUN_STATUSES, RunKind, RunStatus
from .compare import AccountWanted
from .flows import AccountTarget, Scope
from .models import Run

DOWNLOAD_ACTION = "broker.download"  # recorded by accounts.services.broker_file_download
REDEPLOYED_ACTION = "broker.redeployed"
MAX_CONCURRENCY = 64


def _refuse(field_name: str, message: str) -> ValidationError:
    return ValidationError({field_name: message})


def _require_idle(account: EcrAccount) -> None:
    active = services.active_run_for(account)
    if active is not None:
        raise _refuse(
            "account_id", f"Run #{active.pk} is still {active.status} for {account.account_id}: wait for it."
        )


def _require_active(account: EcrAccount, what: str) -> None:
    if account.status != Lifecycle.ACTIVE:
        raise _refuse(
            "account_id",
            f"{account.account_id} is {account.get_status_display().lower()}: only an active account's "
            f"{what}.",
        )


# --- rotation: reads ------------------------------------------------------------------------------


@dataclass
class BrokerReadiness:
    """Whether one broker runs with the newest ExternalId, as far as the portal can know."""

    broker: BrokerInstance
    downloaded_at: datetime | None = None  # a file holding the new id, after the switch
    redeployed_at: datetime | None = None  # the operator said the broker runs the new file

    @property
    def ready(self) -> bool:
        return self.downloaded_at is not None and self.redeployed_at is not None


@dataclass
class RotationStatus:
    current: ExternalId | None  # what broker files hold now (the newest active id)
    retiring: list[ExternalId] = field(default_factory=list)
    switched_at: datetime | None = None
    brokers: list[BrokerReadiness] = field(default_factory=list)
    trust_run: Run | None = None  # the latest rotation run since the switch: did the trust change?

    @property
    def trust_pending(self) -> bool:
        """The new id is in broker files but maybe not yet in the trust (its run failed or waits)."""
        return self.in_progress and (self.trust_run is None or self.trust_run.status != RunStatus.SUCCEEDED)

    @property
    def in_progress(self) -> bool:
        return bool(self.retiring)

    @property
    def ready(self) -> bool:
        return all(b.ready for b in self.brokers)


def rotation_status(account: EcrAccount) -> RotationStatus:
    """The rotation's state for the account page and the retire preview: two queries while a rotation
    is in progress (its run, the audit log since the switch), none otherwise (ids and brokers are
    read through the account's prefetch when there is one)."""
    ids = list(account.external_ids.all())
    active = [e for e in ids if e.state == ExternalIdState.ACTIVE]
    current = max(active, key=lambda e: (e.created_at, e.pk)) if active else None
    retiring = [e for e in ids if e.state == ExternalIdState.RETIRING]
    switched_at = max((e.retiring_since for e in retiring if e.retiring_since), default=None)
    status = RotationStatus(current=current, retiring=retiring, switched_at=switched_at)
    brokers = [b for b in account.brokers.all() if b.status == BrokerStatus.ACTIVE]
    status.brokers = [BrokerReadiness(b) for b in brokers]
    if switched_at is None or current is None:
        return status
    status.trust_run = (
        account.runs.filter(kind=RunKind.ROTATE, created_at__gte=switched_at)
        .order_by("-created_at", "-pk")
        .first()
    )
    entries = AuditEntry.objects.filter(
        account_id=account.account_id,
        action__in=(DOWNLOAD_ACTION, REDEPLOYED_ACTION),
        created_at__gte=switched_at,
    ).order_by("created_at")
    by_region = {b.broker.region: b for b in status.brokers}
    for entry in entries:
        readiness = by_region.get(str((entry.details or {}).get("region", "")))
        if readiness is None or (entry.details or {}).get("external_id") != current.value:
            continue
        if entry.action == DOWNLOAD_ACTION:
            readiness.downloaded_at = entry.created_at
        else:
            readiness.redeployed_at = entry.created_at
    return status


def retirement_warnings(account: EcrAccount, external_id: ExternalId) -> list[str]:
    """What may stop working when `external_id` leaves the trust (empty: nothing the portal knows of)."""
    status = rotation_status(account)
    warnings: list[str] = []
    if external_id.state == ExternalIdState.RETIRING:
        since = f"{status.switched_at:%Y-%m-%d %H:%M} UTC" if status.switched_at else "the switch"
        if status.trust_pending:
            run = status.trust_run
            warnings.append(
                "The rotation run that adds the new ExternalId to the trust "
                + (f"(#{run.pk}) is {run.get_status_display().lower()}" if run else "is missing")
                + ": brokers redeployed with the new id may be refused until it succeeds (reconcile)."
            )
        for b in status.brokers:
            if b.downloaded_at is None:
                warnings.append(
                    f"Broker {b.broker.region}: no broker file holding the new ExternalId has been "
                    f"downloaded since {since}. It still runs with {external_id.value} and stops working "
                    "when that id is retired."
                )
            elif b.redeployed_at is None:
                warnings.append(
                    f"Broker {b.broker.region}: a file holding the new ExternalId was downloaded at "
                    f"{b.downloaded_at:%Y-%m-%d %H:%M} UTC, but the broker is not marked redeployed."
                )
    elif status.current is not None and external_id.pk == status.current.pk and status.retiring:
        others = ", ".join(e.value for e in status.retiring)
        warnings.append(
            f"{external_id.value} is the newest ExternalId: retiring it cancels the rotation, and broker "
            f"files switch back to {others}."
        )
        taken = [b.broker.region for b in status.brokers if b.downloaded_at or b.redeployed_at]
        if taken:
            warnings.append(
                ngettext(
                    "Broker %(regions)s took a file holding %(id)s: it stops working.",
                    "Brokers %(regions)s took a file holding %(id)s: they stop working.",
                    len(taken),
                )
                % {"regions": ", ".join(taken), "id": external_id.value}
            )
    return warnings


# --- rotation: previews and writes ----------------------------------------------------------------


def _plan_with_ids(account: EcrAccount, ids: list[str]) -> Plan:
    """What a rotate run does: the rotation flow with the trust accepting these ids."""
    return flows.RECONCILE.preview(Scope(accounts=[AccountTarget(account, AccountWanted(ids))]))


def _new_external_id(account: EcrAccount, value: str) -> ExternalId:
    ext = ExternalId(account=account, value=value.strip() or ExternalId.generate())
    if ext.value in inventory.desired_external_ids(account):
        raise _refuse("external_id", f"{ext.value} is already an ExternalId of {account.account_id}.")
    try:
        ext.full_clean()
    except ValidationError as exc:
        raise ValidationError({"external_id": exc.messages}) from None
    ids = [*inventory.desired_external_ids(account), ext.value]
    try:
        policies.service_role_trust_policy(account.agent.arn, ids)
    except policies.LayoutError as exc:
        raise _refuse("external_id", str(exc)) from None
    return ext


def _check_rotatable(account: EcrAccount) -> None:
    _require_active(account, "ExternalId can be rotated (onboard or reconcile it first)")
    retiring = account.external_ids.filter(state=ExternalIdState.RETIRING).first()
    if retiring is not None:
        raise _refuse(
            "external_id",
            f"A rotation is in progress: {retiring.value} is retiring since "
            f"{retiring.retiring_since:%Y-%m-%d %H:%M} UTC. Retire it (or the new id) first.",
        )


def plan_rotation(account: EcrAccount, value: str) -> Plan:
    """Preview of adding `value`: the trust lists the current ids and it (nothing saved)."""
    _check_rotatable(account)
    ext = _new_external_id(account, value)
    return _plan_with_ids(account, [*inventory.desired_external_ids(account), ext.value])


def external_id_rotate(
    *, account: EcrAccount, value: str = "", user: Actor = None, enqueue: bool = True, **run_fields: Any
) -> Run:
    """Add a new ExternalId: the old ones start retiring, broker files switch, a run widens the trust."""
    _check_rotatable(account)
    _require_idle(account)
    ext = _new_external_id(account, value)
    now = timezone.now()
    with transaction.atomic():
        retiring = list(
            account.external_ids.filter(state=ExternalIdState.ACTIVE).values_list("value", flat=True)
        )
        account.external_ids.filter(state=ExternalIdState.ACTIVE).update(
            state=ExternalIdState.RETIRING, retiring_since=now
        )
        ext.save()
        audit.record(
            user=user,
            action="external_id.rotate",
            account_id=account.account_id,
            obj=account,
            external_id=ext.value,
            retiring=retiring,
        )
        return services.run_request(
            kind=RunKind.ROTATE, user=user, accounts=[account], enqueue=enqueue, **run_fields
        )


def _retirable(account: EcrAccount, value: str) -> ExternalId:
    _require_active(account, "ExternalIds can be retired")
    ids = list(account.external_ids.all())
    ext = next((e for e in ids if e.value == value), None)
    if ext is None:
        raise _refuse("external_id", f"{account.account_id} has no ExternalId {value!r}.")
    if len(ids) == 1:
        raise _refuse(
            "external_id",
            f"{value} is the account's only ExternalId: the trust would accept none. Rotate first "
            "(add a new id), then retire this one.",
        )
    return ext


def plan_retirement(account: EcrAccount, value: str) -> Plan:
    ext = _retirable(account, value)
    remaining = [e.value for e in account.external_ids.all() if e.pk != ext.pk]
    return _plan_with_ids(account, remaining)


def external_id_retire(
    *, account: EcrAccount, value: str, user: Actor = None, enqueue: bool = True, **run_fields: Any
) -> tuple[Run, list[str]]:
    """Remove an ExternalId from the trust. Returns the run and the warnings it was requested with."""
    ext = _retirable(account, value)
    _require_idle(account)
    warnings = retirement_warnings(account, ext)
    with transaction.atomic():
        ext.delete()
        remaining = account.external_ids.all()
        if not any(e.state == ExternalIdState.ACTIVE for e in remaining):
            # The newest id was retired: the rotation is cancelled, the older ids are current again.
            remaining.update(state=ExternalIdState.ACTIVE, retiring_since=None)
        audit.record(
            user=user,
            action="external_id.retire",
            account_id=account.account_id,
            obj=account,
            external_id=value,
            warnings=warnings,
        )
        run = services.run_request(
            kind=RunKind.ROTATE, user=user, accounts=[account], enqueue=enqueue, **run_fields
        )
    return run, warnings


def broker_mark_redeployed(*, broker: BrokerInstance, user: Actor = None) -> AuditEntry:
    """The operator says the broker now runs the file holding the current ExternalId."""
    if broker.status != BrokerStatus.ACTIVE:
        raise _refuse("broker", f"The broker in {broker.region} is retired.")
    current = rotation_status(broker.account).current
    if current is None:
        raise _refuse("external_id", f"{broker.account.account_id} has no active ExternalId.")
    return audit.record(
        user=user,
        action=REDEPLOYED_ACTION,
        account_id=broker.account.account_id,
        obj=broker,
        region=broker.region,
        external_id=current.value,
    )


# --- offboarding -----------------------------------------------------------------------------------


def plan_offboarding(account: EcrAccount, *, confirm_adopted: bool = False) -> Plan:
    """Preview: the agent loses the account's statement first, then the account's own resources go
    (only those the portal created, and adopted ones only when confirmed)."""
    scope = Scope(
        accounts=[AccountTarget(account, AccountWanted(remove=True, delete_adopted=confirm_adopted))],
        members_removed={account.agent_id: {account.account_id}},
    )
    return flows.OFFBOARD.preview(scope)


def account_offboard(
    *,
    account: EcrAccount,
    confirm_adopted: bool = False,
    user: Actor = None,
    enqueue: bool = True,
    options: dict[str, Any] | None = None,
    **run_fields: Any,
) -> Run:
    """Remove an account: it leaves the agent's permissions, its brokers retire, a run deletes its
    role and policy (adopted ones only with confirm_adopted). Re-offboarding finishes a failed one."""
    _require_idle(account)
    with transaction.atomic():
        was_member = account.status in inventory.MEMBER_STATUSES
        EcrAccount.objects.filter(pk=account.pk).update(status=Lifecycle.REMOVED, updated_at=timezone.now())
        account.status = Lifecycle.REMOVED
        if was_member:  # the agent's permissions must stop listing it
            account.agent.bump_policy_generation()
        retired = account.brokers.filter(status=BrokerStatus.ACTIVE).update(status=BrokerStatus.RETIRED)
        audit.record(
            user=user,
            action="account.offboard",
            account_id=account.account_id,
            obj=account,
            confirm_adopted=confirm_adopted,
            brokers_retired=retired,
        )
        return services.run_request(
            kind=RunKind.OFFBOARD,
            user=user,
            accounts=[account],
            enqueue=enqueue,
            options={**(options or {}), "confirm_adopted": bool(confirm_adopted)},
            **run_fields,
        )


def agent_offboard_refusal(agent: AgentIdentity) -> str:
    """Why the agent cannot be offboarded now ("" when it can): it must serve no account."""
    serving = list(
        agent.accounts.exclude(status=Lifecycle.REMOVED)
        .order_by("account_id")
        .values_list("account_id", flat=True)
    )
    if serving:
        shown = ", ".join(serving[:10]) + (f" and {len(serving) - 10} more" if len(serving) > 10 else "")
        return (
            f"Agent {agent.name} still serves {counted(len(serving), 'account', 'accounts')}: {shown}. "
            + ngettext(
                "Offboard it (or move it to another agent) first.",
                "Offboard them (or move them to another agent) first.",
                len(serving),
            )
        )
    return ""


def plan_agent_offboarding(agent: AgentIdentity) -> Plan:
    """Preview: the agent's assume permissions go; its IAM identity stays (the CRA may still run as it)."""
    refusal = agent_offboard_refusal(agent)
    if refusal:
        raise _refuse("agent", refusal)
    return flows.OFFBOARD.preview(Scope(agent=agent, agent_leaving=True))


def agent_offboard(
    *, agent: AgentIdentity, user: Actor = None, enqueue: bool = True, **run_fields: Any
) -> Run:
    """Offboard an agent that serves no account: it is marked removed and loses every assume permission."""
    refusal = agent_offboard_refusal(agent)
    if refusal:
        raise _refuse("agent", refusal)
    active = Run.objects.filter(agent=agent, status__in=ACTIVE_RUN_STATUSES).first()
    if active is not None:
        raise _refuse(
            "agent", f"Run #{active.pk} is still {active.status} for agent {agent.name}: wait for it."
        )
    with transaction.atomic():
        agent.bump_policy_generation(status=Lifecycle.REMOVED)
        agent.status = Lifecycle.REMOVED
        audit.record(user=user, action="agent.offboard", obj=agent, arn=agent.arn)
        return services.run_request(
            kind=RunKind.OFFBOARD, user=user, agent=agent, enqueue=enqueue, **run_fields
        )


# --- bulk onboarding -------------------------------------------------------------------------------


def bulk_validate(*, agent: AgentIdentity | None, content: bytes, filename: str = "") -> bulkfile.BulkReport:
    """Read and validate a whole file; no row saved, no AWS call."""
    return bulkfile.load(agent, content, filename)


def plan_bulk(report: bulkfile.BulkReport) -> Plan:
    """The bulk flow for every row of a valid file: the accounts' resources (read concurrently),
    then the agent's permissions once, listing the agent's current accounts and all of the file's."""
    if not report.ok or report.agent is None:
        raise ValueError("plan_bulk needs a valid report")
    agent = report.agent
    scope = Scope(
        agent=agent,
        accounts=[
            AccountTarget(r.account, AccountWanted([r.external_id.value]), origin=f"row {r.row}")
            for r in report.rows
        ],
        members_added={agent.pk: {r.account.account_id: r.account.service_role_arn for r in report.rows}},
    )
    return flows.BULK.preview(scope)


def bulk_options(*, max_concurrency: int | None, failure_tolerance: int | None, count: int) -> dict[str, int]:
    """StackSets-style operation preferences, validated."""
    errors: dict[str, str] = {}
    concurrency = 8 if max_concurrency is None else max_concurrency
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        errors["max_concurrency"] = f"Between 1 and {MAX_CONCURRENCY}."
    tolerance = count if failure_tolerance is None else failure_tolerance
    if tolerance < 0:
        errors["failure_tolerance"] = "0 or more (0: stop at the first failure)."
    if errors:
        raise ValidationError(errors)
    return {"max_concurrency": concurrency, "failure_tolerance": tolerance}


def accounts_bulk_onboard(
    *,
    report: bulkfile.BulkReport,
    user: Actor = None,
    max_concurrency: int | None = None,
    failure_tolerance: int | None = None,
    enqueue: bool = True,
    options: dict[str, Any] | None = None,
    **run_fields: Any,
) -> Run:
    """Save every row (all or none) and request one bulk run for them."""
    if not report.ok or report.agent is None:
        raise ValidationError(report.as_text())
    preferences = bulk_options(
        max_concurrency=max_concurrency, failure_tolerance=failure_tolerance, count=len(report.rows)
    )
    agent = report.agent
    with transaction.atomic():
        accounts = inventory.accounts_save_many(
            [(row.account, row.external_id, row.brokers) for row in report.rows],  # built and checked there
            status=Lifecycle.PENDING,
            user=user,
        )
        agent.bump_policy_generation()
        audit.record(
            user=user,
            action="account.bulk_onboard",
            obj=agent,
            accounts=len(accounts),
            max_concurrency=preferences["max_concurrency"],
            failure_tolerance=preferences["failure_tolerance"],
        )
        return services.run_request(
            kind=RunKind.BULK,
            user=user,
            accounts=accounts,
            enqueue=enqueue,
            options={**(options or {}), **preferences},
            **run_fields,
        )

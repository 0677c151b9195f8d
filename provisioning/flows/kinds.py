"""Every run kind, defined once: its scope from a run, its ordered steps, how it ends.

Order, as the guide and IAM require it: an account's role exists before the agent may assume it
(resources, then the agent's permissions); the agent loses sts:AssumeRole on a role before the
role is deleted (permissions, then removal). The agent's permissions are written once per agent
per run, however many accounts it covers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.utils.translation import ngettext

from accounts import services as inventory
from accounts.choices import Lifecycle
from accounts.models import EcrAccount, Organization
from portal.text import counted

from .. import compare
from .. import organizations as orgs
from ..audit.run import handle_audit_run
from ..changes import Plan
from ..choices import RunKind, RunStatus
from ..models import Run
from .base import (
    CANCELLED_BEFORE_START,
    FAILED,
    NOT_STARTED,
    AccountTarget,
    Flow,
    Outcomes,
    RunFailed,
    Scope,
    Step,
    agents_of,
)
from .snyk_steps import AppSecretStep
from .snyk_steps import present_steps as snyk_present_steps
from .snyk_steps import removal_steps as snyk_removal_steps
from .steps import (
    AccessKeyStep,
    AccountStatuses,
    AgentIdentityStep,
    AgentPermissionsStep,
    ForEachAccount,
    ReadAheadStep,
    ReconcileAccountStep,
    RemoveAccountStep,
    SyncInventoryStep,
)

DEFAULT_BULK_CONCURRENCY = 8


def _accounts_of(run: Run) -> list[EcrAccount]:
    return list(run.accounts.select_related("agent").prefetch_related("external_ids").order_by("account_id"))


def _reconcile_target(account: EcrAccount) -> AccountTarget:
    removed = account.status == Lifecycle.REMOVED
    ids = [] if removed else inventory.desired_external_ids(account)
    return AccountTarget(account, compare.AccountWanted(ids, remove=removed))


def accounts_summary(scope: Scope, outcomes: Outcomes, verb: str) -> tuple[str, str]:
    """How a run over accounts ended. A single account's failure ends the run with its own error."""
    total = len(scope.accounts)
    failed, skipped = outcomes.count(FAILED), outcomes.count(NOT_STARTED)
    if not failed and not skipped:
        return RunStatus.SUCCEEDED, (
            f"{counted(total, 'account', 'accounts')} {verb} ({counted(outcomes.writes, 'write', 'writes')})."
        )
    if total == 1 and failed:
        raise next(iter(outcomes.exceptions.values()))
    if total == 1:
        return RunStatus.CANCELLED, "Cancelled: cancelled before it started."
    if not failed:
        return RunStatus.CANCELLED, f"Cancelled after {counted(outcomes.writes, 'write', 'writes')}."
    lines = "\n".join(f"{account_id}: {error}" for account_id, error in sorted(outcomes.errors.items()))
    status = RunStatus.FAILED if failed + skipped == total else RunStatus.PARTIAL
    head = ngettext("%(n)d of %(total)d account failed:", "%(n)d of %(total)d accounts failed:", total)
    return status, head % {"n": failed + skipped, "total": total} + f"\n{lines}"


class AgentSetupFlow(Flow):
    """The agent's identity, then its permissions (listing whatever accounts it serves)."""

    kinds = (RunKind.AGENT,)

    def scope_of(self, run: Run) -> Scope:
        if run.agent is None:
            raise RunFailed("The agent of this run no longer exists.")
        return Scope(agent=run.agent)

    def steps(self, scope: Scope) -> list[Step]:
        agent = scope.agent
        assert agent is not None
        steps: list[Step] = [AgentIdentityStep(agent)]
        if agent.pk:  # an agent not saved yet (agent_add --plan) has no accounts to list
            steps.append(AgentPermissionsStep(agent, check_live=True))
        return steps

    def preview(self, scope: Scope) -> Plan:
        plan = super().preview(scope)
        plan.about_agent = True
        return plan

    def summarize(self, run: Run, scope: Scope, outcomes: Outcomes) -> tuple[str, str]:
        assert scope.agent is not None
        writes = counted(outcomes.writes, "write", "writes")
        return RunStatus.SUCCEEDED, f"Agent {scope.agent.name} is set up ({writes})."


class AccountsFlow(Flow):
    """Onboard, reconcile or rotate: each account's resources match the inventory, then the agents'.

    Removed accounts go first and the other way round. For present accounts, an agent not set up
    yet is created first. Reconcile and rotation compare the agent's permissions with IAM;
    onboarding relies on the generation counter (another run may have written them already).
    """

    check_live: bool = True
    spreads = True

    def scope_of(self, run: Run) -> Scope:
        accounts = _accounts_of(run)
        if not accounts:
            raise RunFailed("This run has no accounts (they may have been deleted).")
        return Scope(accounts=[_reconcile_target(a) for a in accounts], options=run.options or {})

    def steps(self, scope: Scope) -> list[Step]:
        removed, present = scope.removed, scope.present
        check_live = self.check_live
        concurrency = settings.RECONCILE_CONCURRENCY
        steps: list[Step] = snyk_removal_steps(removed)
        steps += [AgentPermissionsStep(agent, check_live=check_live) for agent in agents_of(removed)]
        if removed:
            steps.append(ForEachAccount([RemoveAccountStep(t) for t in removed], concurrency=concurrency))
        steps += [AgentIdentityStep(a) for a in agents_of(present) if a.status != Lifecycle.ACTIVE]
        if present:
            steps.append(ForEachAccount([ReconcileAccountStep(t) for t in present], concurrency=concurrency))
            steps.append(AccountStatuses(present, failed=True))
        for agent in agents_of(present):
            serves = [t.account_id for t in present if t.account.agent_id == agent.pk]
            steps.append(AgentPermissionsStep(agent, check_live=check_live, serves=serves))
        steps += snyk_present_steps(present)
        if present:
            steps.append(AccountStatuses(present, failed=True, active=True))
        return steps

    def summarize(self, run: Run, scope: Scope, outcomes: Outcomes) -> tuple[str, str]:
        return accounts_summary(scope, outcomes, "in sync")


class OnboardFlow(AccountsFlow):
    kinds = (RunKind.ONBOARD,)
    check_live = False


class ReconcileFlow(AccountsFlow):
    kinds = (RunKind.RECONCILE, RunKind.ROTATE)


class OffboardFlow(Flow):
    """The agent loses sts:AssumeRole on the accounts' roles first, then their resources go.

    With no account and the agent itself offboarded: the agent loses every assume permission.
    """

    kinds = (RunKind.OFFBOARD,)
    spreads = True

    def scope_of(self, run: Run) -> Scope:
        confirm = bool((run.options or {}).get("confirm_adopted"))
        targets = [
            AccountTarget(a, compare.AccountWanted(remove=True, delete_adopted=confirm))
            for a in _accounts_of(run)
        ]
        leaving = not targets and run.agent is not None and run.agent.status == Lifecycle.REMOVED
        return Scope(accounts=targets, agent=run.agent, agent_leaving=leaving, options=run.options or {})

    def steps(self, scope: Scope) -> list[Step]:
        if scope.agent_leaving:
            assert scope.agent is not None
            return [AgentPermissionsStep(scope.agent, check_live=True)]
        steps: list[Step] = snyk_removal_steps(scope.accounts)
        steps += [AgentPermissionsStep(a, check_live=False) for a in agents_of(scope.accounts)]
        removals = [RemoveAccountStep(t, retire_brokers=True) for t in scope.accounts]
        if removals:
            steps.append(ForEachAccount(removals, concurrency=settings.RECONCILE_CONCURRENCY))
        return steps

    def preview(self, scope: Scope) -> Plan:
        plan = super().preview(scope)
        if scope.agent_leaving and scope.agent is not None:
            plan.about_agent = True
            plan.notes.append(
                f"The agent's IAM {scope.agent.kind} {scope.agent.arn} itself is left in place: delete it in "
                "IAM once no Container Registry Agent runs as it."
            )
        return plan

    def summarize(self, run: Run, scope: Scope, outcomes: Outcomes) -> tuple[str, str]:
        if scope.agent_leaving and scope.agent is not None:
            writes = counted(outcomes.writes, "write", "writes")
            return RunStatus.SUCCEEDED, f"Agent {scope.agent.name} offboarded ({writes})."
        return accounts_summary(scope, outcomes, "offboarded")


class BulkFlow(Flow):
    """Many accounts, as a StackSets operation: resources concurrently, the agent's permissions once.

    At most `max_concurrency` accounts at a time within `failure_tolerance` (see ForEachAccount).
    """

    kinds = (RunKind.BULK,)
    spreads = True

    def scope_of(self, run: Run) -> Scope:
        accounts = _accounts_of(run)
        agent = accounts[0].agent if accounts else run.agent
        return Scope(
            accounts=[_reconcile_target(a) for a in accounts], agent=agent, options=run.options or {}
        )

    def steps(self, scope: Scope) -> list[Step]:
        agent, targets = scope.agent, scope.accounts
        if agent is None or not targets:
            return []
        options = scope.options
        permissions = AgentPermissionsStep(agent, check_live=False, bump=True)
        steps: list[Step] = [AgentIdentityStep(agent)] if agent.status != Lifecycle.ACTIVE else []
        steps.append(ReadAheadStep(permissions))
        steps.append(
            ForEachAccount(
                [ReconcileAccountStep(t) for t in targets],
                concurrency=max(1, int(options.get("max_concurrency", DEFAULT_BULK_CONCURRENCY))),
                tolerance=max(0, int(options.get("failure_tolerance", len(targets)))),
                preview_concurrency=8,
                log_each=True,
            )
        )
        steps.append(AccountStatuses(targets, failed=True, active=True))
        steps.append(permissions)
        return steps + snyk_present_steps(targets)

    def preview(self, scope: Scope) -> Plan:
        plan = super().preview(scope)
        adopting = sorted({c.account_id for c in plan.changes if c.kind == "adopt"})
        plan.notes.insert(
            0,
            f"{counted(len(scope.accounts), 'account', 'accounts')} from the file"
            + (
                f", {len(adopting)} with existing resources to adopt ({', '.join(adopting)})"
                if adopting
                else ""
            )
            + ": the agent's permissions are written once, after the accounts' resources.",
        )
        return plan

    def summarize(self, run: Run, scope: Scope, outcomes: Outcomes) -> tuple[str, str]:
        total = len(scope.accounts)
        failed = {a: outcomes.errors[a] for a, s in outcomes.status.items() if s == FAILED}
        skipped = outcomes.count(NOT_STARTED)
        done = total - len(failed) - skipped
        summary = ngettext(
            "%(done)d of %(total)d account onboarded", "%(done)d of %(total)d accounts onboarded", total
        ) % {"done": done, "total": total}
        cancelled = any(
            outcomes.errors.get(a) == CANCELLED_BEFORE_START
            for a, s in outcomes.status.items()
            if s == NOT_STARTED
        )
        if skipped:
            tolerance = scope.options.get("failure_tolerance", total)
            failures = counted(len(failed), "failure", "failures")
            why = "cancelled" if cancelled else f"after {failures} (tolerance {tolerance})"
            summary += f"; {skipped} not started, {why}"
        if failed:
            summary += ":\n" + "\n".join(f"{k}: {v}" for k, v in sorted(failed.items()))
            return (RunStatus.PARTIAL if done else RunStatus.FAILED), summary
        if cancelled and skipped:
            return RunStatus.CANCELLED, summary + "."
        return RunStatus.SUCCEEDED, summary + "."


class AccessKeyFlow(Flow):
    """A user agent's new access key: one write, recorded like every other; shown once to its asker."""

    kinds = (RunKind.ACCESS_KEY,)

    def scope_of(self, run: Run) -> Scope:
        if run.agent is None:
            raise RunFailed("The agent of this run no longer exists.")
        return Scope(agent=run.agent)

    def steps(self, scope: Scope) -> list[Step]:
        assert scope.agent is not None
        return [AccessKeyStep(scope.agent)]

    def summarize(self, run: Run, scope: Scope, outcomes: Outcomes) -> tuple[str, str]:
        key_id = getattr(run, "new_access_key", {}).get("AccessKeyId", "")
        return RunStatus.SUCCEEDED, f"Access key …{key_id[-4:]} created; its secret was shown once."


class AppSecretFlow(Flow):
    """The Broker App install's client secret replaced: one Snyk write; shown once to its asker."""

    kinds = (RunKind.APP_SECRET,)

    def scope_of(self, run: Run) -> Scope:
        return Scope()

    def steps(self, scope: Scope) -> list[Step]:
        return [AppSecretStep()]

    def summarize(self, run: Run, scope: Scope, outcomes: Outcomes) -> tuple[str, str]:
        return RunStatus.SUCCEEDED, "The Broker App's client secret was replaced; the new one was shown once."


class AuditFlow(Flow):
    """Read every account and agent, compare with the inventory, store the findings. It never writes:
    its preview is empty, and its one step is the audit itself (provisioning/audit/run.py)."""

    kinds = (RunKind.AUDIT,)

    def scope_of(self, run: Run) -> Scope:
        return Scope(options=run.options or {})

    def steps(self, scope: Scope) -> list[Step]:
        return []

    def execute(self, run: Run) -> tuple[str, str]:
        return handle_audit_run(run)

    def summarize(self, run: Run, scope: Scope, outcomes: Outcomes) -> tuple[str, str]:
        raise NotImplementedError  # execute() returns the audit's own summary


def organization_of(run: Run) -> Organization:
    organization = Organization.objects.filter(pk=int((run.options or {}).get("organization") or 0)).first()
    if organization is None:
        raise RunFailed("The organization of this run no longer exists.")
    return organization


class OrgDiscoverFlow(Flow):
    """Read the organization's whole tree and store it as a snapshot. Read-only: nothing to preview."""

    kinds = (RunKind.ORG_DISCOVER,)

    def scope_of(self, run: Run) -> Scope:
        return Scope(options=run.options or {})

    def steps(self, scope: Scope) -> list[Step]:
        return []

    def execute(self, run: Run) -> tuple[str, str]:
        organization = organization_of(run)
        tree = orgs.read_tree(organization)
        snapshot = orgs.store_snapshot(organization, tree, run.pk)
        states: dict[str, int] = {}
        for account in tree["accounts"]:
            states[account["state"]] = states.get(account["state"], 0) + 1
        Run.objects.filter(pk=run.pk).update(result={"snapshot": snapshot.pk, "states": states})
        counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
        return RunStatus.SUCCEEDED, (
            f"Organization {tree['organization_id']}: "
            f"{counted(len(tree['accounts']), 'account', 'accounts')} ({counts}) "
            f"in {counted(len(tree['units']), 'OU', 'OUs')}."
        )

    def summarize(self, run: Run, scope: Scope, outcomes: Outcomes) -> tuple[str, str]:
        raise NotImplementedError  # execute() returns the discovery's own summary


def sync_scope(sync: orgs.SyncPlan, options: Mapping[str, Any]) -> Scope:
    """A sync's accounts (new rows to onboard, leaving accounts to offboard) and how the agents'
    members will differ once the inventory step has run."""
    onboard = [
        AccountTarget(
            row.account,
            compare.AccountWanted([row.external_id.value]),
            origin=f"account {row.account.account_id}",
        )
        for rows in sync.onboard.values()
        for row in rows
    ]
    offboard = [AccountTarget(a, compare.AccountWanted(remove=True)) for a in sync.offboard]
    added: dict[int, dict[str, str]] = {}
    for target in onboard:
        added.setdefault(target.account.agent_id, {})[target.account_id] = target.account.service_role_arn
    removed: dict[int, set[str]] = {}
    for target in offboard:
        removed.setdefault(target.account.agent_id, set()).add(target.account_id)
    return Scope(
        accounts=onboard + offboard,
        options={**options, "sync": sync},
        members_added=added,
        members_removed=removed,
    )


class OrgSyncFlow(Flow):
    """Discover, decide per account by the rules, then onboard and offboard as one run.

    New accounts go through the bulk flow's steps (per agent: concurrency, failure tolerance), then
    leaving accounts through the offboarding flow's: roles exist before the agent may assume them,
    and the agent loses a leaving role before it is deleted. Without `apply` (auto-apply off) the
    run only records the decisions: an operator confirms the previewed plan on the organization page.
    """

    kinds = (RunKind.ORG_SYNC,)

    def scope_of(self, run: Run) -> Scope:
        organization = organization_of(run)
        options = dict(run.options or {})
        tree = orgs.read_tree(organization)
        orgs.store_snapshot(organization, tree, run.pk)
        sync = orgs.sync_plan(organization, tree, pinned=options.get("pinned"))
        if not options.get("apply"):
            sync.hold()
        return sync_scope(sync, options)

    def steps(self, scope: Scope) -> list[Step]:
        sync: orgs.SyncPlan = scope.options["sync"]
        if not scope.accounts:
            return []
        preferences: dict[str, Any] = {
            k: scope.options[k] for k in ("max_concurrency", "failure_tolerance") if k in scope.options
        }
        steps: list[Step] = [SyncInventoryStep(sync)]
        for agent_id in sync.onboard:
            targets = [t for t in scope.present if t.account.agent_id == agent_id]
            steps += BULK.steps(Scope(accounts=targets, agent=sync.agents[agent_id], options=preferences))
        removed = scope.removed
        if removed:
            steps += OFFBOARD.steps(Scope(accounts=removed))
        return steps

    def preview(self, scope: Scope) -> Plan:
        plan = super().preview(scope)
        sync: orgs.SyncPlan = scope.options["sync"]
        plan.notes.insert(0, sync.summary())
        return plan

    def execute(self, run: Run) -> tuple[str, str]:
        scope = self.scope_of(run)
        sync: orgs.SyncPlan = scope.options["sync"]
        try:
            return self.execute_scope(run, scope)
        finally:
            result = dict(Run.objects.values_list("result", flat=True).get(pk=run.pk) or {})
            result.update(decisions=sync.decisions_dict(), pending=sync.pending)
            Run.objects.filter(pk=run.pk).update(result=result)

    def summarize(self, run: Run, scope: Scope, outcomes: Outcomes) -> tuple[str, str]:
        sync: orgs.SyncPlan = scope.options["sync"]
        if not scope.accounts:
            return RunStatus.SUCCEEDED, sync.summary()
        status, explanation = accounts_summary(scope, outcomes, "synced")
        by_itself = "Auto-apply is on: applied by the schedule. " if scope.options.get("scheduled") else ""
        return status, f"{by_itself}{sync.summary()} {explanation}"


AGENT_SETUP = AgentSetupFlow()
ONBOARD = OnboardFlow()
RECONCILE = ReconcileFlow()
OFFBOARD = OffboardFlow()
BULK = BulkFlow()
AUDIT = AuditFlow()
ACCESS_KEY = AccessKeyFlow()
APP_SECRET = AppSecretFlow()
ORG_DISCOVER = OrgDiscoverFlow()
ORG_SYNC = OrgSyncFlow()

FLOWS: dict[str, Flow] = {
    kind: flow
    for flow in (
        AGENT_SETUP,
        ONBOARD,
        RECONCILE,
        OFFBOARD,
        BULK,
        AUDIT,
        ACCESS_KEY,
        APP_SECRET,
        ORG_DISCOVER,
        ORG_SYNC,
    )
    for kind in flow.kinds
}

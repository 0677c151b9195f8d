"""Preview, then apply, as the pages do: the same plan functions, the same digest, the same run
services. A stale digest is refused with the new plan (409) so a client can never apply what it
has not seen; a run already working on the target is a 409 naming it (the services' RunLock)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from accounts import selectors as inventory
from accounts.models import AgentIdentity, EcrAccount
from provisioning import aws, policies, services
from provisioning import selectors as run_selectors
from provisioning.changes import Plan
from provisioning.models import Run

from .problems import Problem

STALE = "AWS or the inventory changed since this plan was shown: review the new plan and confirm again."
_Target = TypeVar("_Target", EcrAccount, AgentIdentity)


@dataclass
class Preview:
    target: str
    action: str  # onboard, reconcile or agent_setup
    plan: Plan
    shown: dict[str, Any]  # what the preview page shows, digest included

    @property
    def digest(self) -> str:
        return str(self.shown["digest"])

    def body(self) -> dict[str, Any]:
        plan = {**self.shown, "changes": [asdict(change) for change in self.shown["changes"]]}
        return {"target": self.target, "action": self.action, "plan": plan}


def account_preview(account: EcrAccount) -> Preview:
    action = "onboard" if inventory.account_is_onboarding(account) else "reconcile"
    return _preview(account.account_id, action, _planned(inventory.account_plan, account))


def agent_preview(agent: AgentIdentity) -> Preview:
    return _preview(agent.name, "agent_setup", _planned(services.plan_agent, agent))


def start_confirmed(preview: Preview, digest: str, start: Callable[[dict[str, Any]], Run]) -> Run:
    """Start the run only when `digest` is the preview's (planned again just now)."""
    if digest != preview.digest:
        raise Problem(status=409, code="stale-plan", detail=STALE, **preview.body())
    try:
        return start(run_selectors.previewed_options(preview.plan, digest))
    except services.RunInProgress as busy:  # another confirmation won the race for the run lock
        raise run_in_progress(busy.run) from None


def run_in_progress(run: Run) -> Problem:
    return Problem(
        status=409,
        code="run-in-progress",
        detail=services.RunInProgress(run).messages[0],
        run=run.pk,
        run_url=f"/api/v1/runs/{run.pk}/",
    )


def _preview(target: str, action: str, plan: Plan) -> Preview:
    return Preview(target=target, action=action, plan=plan, shown=run_selectors.plan_preview(plan))


def _planned(plan_function: Callable[[_Target], Plan], target: _Target) -> Plan:
    try:
        return plan_function(target)
    except aws.AwsError as exc:
        detail = f"AWS answered {exc.code}: {exc.message}" + (
            f" (request id {exc.request_id})" if exc.request_id else ""
        )
        raise Problem(status=502, code="aws-error", detail=detail) from None
    except policies.LayoutError as exc:
        raise Problem(status=409, code="plan-refused", detail=str(exc)) from None

"""The runner: takes a claimed Run through its flow and always leaves it in a terminal state.

It knows no flow by name: the run's kind picks one from flows.FLOWS, whose execute() walks the
flow's steps (the same ones its preview showed). Here only the outcome is decided: the flow's own
status, "failed" for an expected refusal (AWS said no, a quota, nothing left to run on), and
"errored", with the traceback kept for the run page, for anything else (a fault of the portal).
While it executes, a heartbeat thread renews the run's lease (a long step must not look dead).
"""

from __future__ import annotations

import logging
import traceback

from . import aws, policies
from .applier import ApplyError, RunLost, flush_plan
from .choices import RunStatus
from .flows import FLOWS, RunFailed, chunks
from .heartbeat import Heartbeat
from .models import Run

log = logging.getLogger(__name__)


def execute(run: Run, *, spread: bool = False) -> Run:
    """Execute a run this process has claimed, its heartbeat beating until it is finished.

    `spread` (a worker): a fan-out over many accounts is split into chunks for the whole pool.
    """
    if spread and FLOWS[run.kind].spreads:
        chunks.spread_here(run)
    with Heartbeat(run):
        return _execute(run)


def help_with_chunks(run_id: int, fanout: str) -> int:
    """Take chunks of a run another worker holds, until none is left; how many were taken.

    The flow's scope and steps are built again from the run, as its own worker built them: the
    same definition, so a chunk's accounts are planned and applied exactly as they would be there.
    """
    run = Run.objects.filter(pk=run_id, status=RunStatus.RUNNING).first()
    if run is None or not FLOWS[run.kind].spreads:
        return 0
    flow = FLOWS[run.kind]
    scope = flow.scope_of(run)
    each = chunks.find_fanout(flow.steps(scope), fanout)
    if each is None:
        return 0
    try:
        return chunks.take_chunks(run, scope, each)
    except RunLost as exc:  # the run was taken over: its new holder takes this chunk over too
        log.warning("%s", exc)
        return 0


def _execute(run: Run) -> Run:
    flow = FLOWS[run.kind]
    try:
        status, explanation = flow.execute(run)
        flush_plan(run)
        run.finish(status, explanation=explanation)
    except RunLost as exc:  # the run belongs to another worker now; it records the outcome
        log.warning("%s", exc)
    except (ApplyError, RunFailed, policies.LayoutError, aws.AwsError) as exc:
        run.log(str(exc), level="ERROR")
        flush_plan(run)
        run.finish(RunStatus.FAILED, explanation=str(exc))
    except Exception as exc:  # errored: keep the traceback for the run page
        log.exception("run %s errored", run.pk)
        flush_plan(run)
        run.finish(RunStatus.ERRORED, explanation=f"Unexpected error: {exc}", error=traceback.format_exc())
    return run

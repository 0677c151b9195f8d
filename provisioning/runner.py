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
from .flows import FLOWS, RunFailed
from .heartbeat import Heartbeat
from .models import Run

log = logging.getLogger(__name__)


def execute(run: Run) -> Run:
    """Execute a run this process has claimed, its heartbeat beating until it is finished."""
    with Heartbeat(run):
        return _execute(run)


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

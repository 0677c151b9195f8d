"""What the mutating commands share: print a plan, run a Run (worker or inline), exit by outcome."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper

from accounts.models import EcrAccount, Organization
from portal.text import counted

from . import aws, policies, runner, snyk
from .changes import Plan
from .choices import OperationStatus, RunStatus
from .models import Run
from .selectors import revokes_outside_inventory

EXIT_FAILED = 1
EXIT_INVALID = 2


def invalid(error: ValidationError | str) -> CommandError:
    """Exit 2 with every field and message, nothing saved, nothing sent to AWS."""
    if isinstance(error, ValidationError) and hasattr(error, "error_dict"):
        lines = [f"{field}: {' '.join(messages)}" for field, messages in error.message_dict.items()]
        text = "invalid input:\n  " + "\n  ".join(lines)
    elif isinstance(error, ValidationError):
        text = "invalid input: " + " ".join(error.messages)
    else:
        text = f"invalid input: {error}"
    return CommandError(text, returncode=EXIT_INVALID)


def add_run_arguments(parser: CommandParser, *, plan: bool = True) -> None:
    if plan:
        parser.add_argument("--plan", action="store_true", help="Print what would change; change nothing.")
    parser.add_argument("--inline", action="store_true", help="Execute in this process instead of a worker.")
    parser.add_argument("--timeout", type=float, default=3600, help="Seconds to wait for a worker.")
    parser.add_argument(
        "--json",
        action="store_true",
        help="Print the run's outcome as JSON on stdout (status, explanation, each account's outcome).",
    )


def print_plan(stdout: OutputWrapper, plan: Plan) -> None:
    for arn in revokes_outside_inventory(plan):
        stdout.write(f"warning: the agent loses sts:AssumeRole on {arn}, which the portal does not manage")
    for note in plan.notes:
        stdout.write(f"note: {note}")
    for arn in plan.adopted:
        stdout.write(f"adopt: {arn} exists and will be adopted as it is (changes, if any, listed below)")
    if plan.is_empty:
        stdout.write("No changes: AWS already matches.")
        return
    stdout.write(f"{counted(len(plan.changes), 'change', 'changes')}:")
    for i, change in enumerate(plan.changes, 1):
        stdout.write(f"{i:3}. {change.action} {change.arn}\n     {change.summary}")
        for label, doc in (("before", change.before), ("after", change.after)):
            if doc is not None:
                body = json.dumps(doc, indent=2, sort_keys=True).replace("\n", "\n       ")
                stdout.write(f"     {label}: {body}")


def execute(
    stdout: OutputWrapper,
    run: Run,
    *,
    inline: bool,
    timeout: float,
    as_json: bool = False,
    stderr: Any = None,
) -> None:
    """Run it (in process, or wait for a worker), print operations as they land, exit by outcome.

    With `as_json` the progress goes to stderr and stdout holds only the outcome document.
    """
    progress = stderr if as_json and stderr is not None else stdout
    if inline:
        if not run.claim():
            raise CommandError(f"Run {run.pk} is already claimed.", returncode=EXIT_FAILED)
        runner.execute(run)
        _print_operations(progress, run, 0)
    else:
        progress.write(f"Run {run.pk} queued; waiting for a worker…")
        printed = 0

        def print_new(current: Run) -> None:
            nonlocal printed
            printed = _print_operations(progress, current, printed)

        wait_until_stopped(run, timeout=timeout, each=print_new)
    if as_json:
        stdout.write(json.dumps(run_outcome(run), indent=2, sort_keys=True))
    else:
        stdout.write(f"Run {run.pk} {run.status}: {run.explanation}")
    if run.status == RunStatus.ERRORED:
        raise CommandError(f"run {run.pk} errored: its traceback is on the run page", returncode=EXIT_FAILED)
    if run.status != RunStatus.SUCCEEDED:
        raise CommandError(f"run {run.pk} {run.status}", returncode=EXIT_FAILED)


def execute_for(command: BaseCommand, run: Run, opts: dict[str, Any]) -> None:
    """`execute` with what `add_run_arguments` put in a command's options."""
    execute(
        command.stdout,
        run,
        inline=opts["inline"],
        timeout=opts["timeout"],
        as_json=opts["json"],
        stderr=command.stderr,
    )


def run_outcome(run: Run) -> dict[str, Any]:
    """A run's outcome for scripts: status, explanation and each account's outcome (with its error)."""
    result = run.result or {}
    return {
        "run": run.pk,
        "kind": run.kind,
        "status": run.status,
        "explanation": run.explanation,
        "accounts": result.get("accounts", {}),
        "errors": result.get("errors", {}),
        "operations": run.operations.count(),
        "url": run.get_absolute_url(),
    }


def wait_until_stopped(run: Run, *, timeout: float, each: Callable[[Run], None] | None = None) -> Run:
    """Poll until the run is no longer queued or running; exit 1 if a worker never gets to it."""
    deadline = time.monotonic() + timeout
    while True:
        run.refresh_from_db()
        if each is not None:
            each(run)
        if not run.is_active:
            return run
        if time.monotonic() > deadline:
            raise CommandError(
                f"Run {run.pk} is still {run.status} after {timeout:.0f}s (is a worker running?).",
                returncode=EXIT_FAILED,
            )
        time.sleep(0.2)


def _print_operations(stdout: OutputWrapper, run: Run, after: int) -> int:
    for op in run.operations.filter(sequence__gt=after).order_by("sequence"):
        if op.status == OperationStatus.STARTED:
            break  # printed once it is settled, in order
        line = f"  [{op.status}] {op.action} {op.resource_arn}"
        if op.error_code:
            line += f" — {op.error_code}: {op.error_message}"
        stdout.write(line)
        after = op.sequence
    return after


def account_or_invalid(account_id: str) -> EcrAccount:
    account = (
        EcrAccount.objects.select_related("agent")
        .prefetch_related("external_ids", "brokers")
        .filter(account_id=account_id)
        .first()
    )
    if account is None:
        message = f"no ECR account {account_id!r} in the portal (see account_onboard)."
        raise invalid(ValidationError({"account_id": message}))
    return account


def plan_or_fail(make: Callable[[], Plan]) -> Plan:
    """Make a preview; bad input exits 2, an AWS or quota error exits 1 with the reason."""
    try:
        return make()
    except ValidationError as exc:
        raise invalid(exc) from None
    except aws.AwsError as exc:
        raise CommandError(f"could not read AWS: {exc.code}: {exc.message}", returncode=EXIT_FAILED) from None
    except policies.LayoutError as exc:
        raise CommandError(str(exc), returncode=EXIT_FAILED) from None
    except snyk.SnykError as exc:
        raise CommandError(f"could not read Snyk: {exc.message}", returncode=EXIT_FAILED) from None


def organization_or_invalid(name: str) -> Organization:
    organization = Organization.objects.filter(name=name).first()
    if organization is None:
        message = f"no organization {name!r} in the portal (see org_connect)."
        raise invalid(ValidationError({"organization": message}))
    return organization


def aws_failed(exc: aws.AwsError) -> CommandError:
    """Exit 1: AWS refused or could not be reached (nothing was saved)."""
    return CommandError(f"AWS refused: {exc.code}: {exc.message}", returncode=EXIT_FAILED)

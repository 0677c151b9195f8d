"""`account_onboard --from-file`: validate every row, plan them all, onboard them in one bulk run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import AgentIdentity
from portal.text import counted
from provisioning import bulkfile, cli, lifecycle

SINGLE_ACCOUNT_OPTIONS = (
    "account_id",
    "regions",
    "alias",
    "external_id",
    "management_role_arn",
    "management_external_id",
    "broker_client_url",
    "cr_agent_url",
    "broker_token",
    "broker_server_url",
)


def add_arguments(parser: CommandParser) -> None:
    parser.add_argument(
        "--from-file",
        default="",
        metavar="FILE",
        help=f"CSV or YAML with the columns {', '.join(bulkfile.COLUMNS)} (one account per row).",
    )
    parser.add_argument(
        "--max-concurrency", type=int, default=None, help="Accounts set up at once (default 8)."
    )
    parser.add_argument(
        "--failure-tolerance",
        type=int,
        default=None,
        help="Failed accounts tolerated before no new account starts (StackSets semantics; "
        "default: all). 0 stops at the first failure.",
    )


def handle(command: BaseCommand, opts: dict[str, Any]) -> None:
    given = [name for name in SINGLE_ACCOUNT_OPTIONS if opts.get(name)]
    if given:
        raise cli.invalid(
            f"--from-file takes every account from the file; do not also give {', '.join(given)}."
        )
    path = Path(opts["from_file"])
    try:
        with path.open("rb") as handle:
            content = handle.read(bulkfile.MAX_BYTES + 1)
    except OSError as exc:
        raise cli.invalid(f"cannot read {path}: {exc.strerror}") from None
    agent = AgentIdentity.objects.filter(name=opts["agent"]).first()
    report = lifecycle.bulk_validate(agent=agent, content=content, filename=path.name)
    if not report.ok or agent is None:  # a missing agent is one of the report's problems
        raise CommandError("invalid input: " + report.as_text(), returncode=cli.EXIT_INVALID)
    try:
        options = lifecycle.bulk_options(
            max_concurrency=opts["max_concurrency"],
            failure_tolerance=opts["failure_tolerance"],
            count=len(report.rows),
        )
    except ValidationError as exc:
        raise cli.invalid(exc) from None
    command.stdout.write(f"{counted(len(report.rows), 'valid row', 'valid rows')} for agent {agent.name}.")
    if opts["plan"]:
        cli.print_plan(command.stdout, cli.plan_or_fail(lambda: lifecycle.plan_bulk(report)))
        return
    try:
        run = lifecycle.accounts_bulk_onboard(
            report=report,
            enqueue=not opts["inline"],
            max_concurrency=options["max_concurrency"],
            failure_tolerance=options["failure_tolerance"],
        )
    except ValidationError as exc:
        raise cli.invalid(exc) from None
    command.stdout.write(
        f"Bulk run {run.pk}: {counted(len(report.rows), 'account', 'accounts')}, "
        f"at most {options['max_concurrency']} at a time, "
        f"failure tolerance {options['failure_tolerance']}."
    )
    cli.execute_for(command, run, opts)

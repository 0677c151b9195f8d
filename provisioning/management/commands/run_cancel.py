from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from provisioning import cli, services
from provisioning.choices import RunStatus
from provisioning.models import Run


class Command(BaseCommand):
    help = (
        "Cancel a run: a queued one never starts, a running one stops before its next account "
        "(an audit: before its next read, storing nothing). Operations already made stay recorded."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("run_id", metavar="RUN_ID", type=int)
        parser.add_argument("--wait", action="store_true", help="Wait until the run has stopped.")
        parser.add_argument("--timeout", type=float, default=600, help="Seconds to wait with --wait.")

    def handle(self, *args: Any, **opts: Any) -> None:
        run = Run.objects.filter(pk=opts["run_id"]).first()
        if run is None:
            raise cli.invalid(ValidationError({"run": f"no run {opts['run_id']} in the portal."}))
        try:
            run = services.run_cancel(run=run)
        except ValidationError as exc:
            raise cli.invalid(exc) from None
        if run.is_active:
            self.stdout.write(f"Run {run.pk}: cancel requested; it stops before its next account.")
            if not opts["wait"]:
                return
            run = cli.wait_until_stopped(run, timeout=opts["timeout"])
        self.stdout.write(f"Run {run.pk} {run.status}: {run.explanation}")
        if run.status != RunStatus.CANCELLED:  # it ended on its own before the cancel was seen
            raise CommandError(f"run {run.pk} {run.status}", returncode=cli.EXIT_FAILED)

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandParser

from provisioning import cli, lifecycle


class Command(BaseCommand):
    help = (
        "Offboard an ECR account: the agent loses its statement first, then the service role and the "
        "read-only policy (all versions) are deleted, only those the portal created; its brokers retire."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("account_id", metavar="ACCOUNT_ID")
        parser.add_argument(
            "--confirm-adopted",
            action="store_true",
            help="Also delete the role/policy the portal adopted (they existed before it). Without this "
            "flag they are left in place.",
        )
        cli.add_run_arguments(parser)

    def handle(self, *args: Any, **opts: Any) -> None:
        account = cli.account_or_invalid(opts["account_id"])
        confirm = opts["confirm_adopted"]
        plan = cli.plan_or_fail(lambda: lifecycle.plan_offboarding(account, confirm_adopted=confirm))
        if opts["plan"]:
            cli.print_plan(self.stdout, plan)
            return
        try:
            run = lifecycle.account_offboard(
                account=account, confirm_adopted=confirm, enqueue=not opts["inline"]
            )
        except ValidationError as exc:
            raise cli.invalid(exc) from None
        cli.execute_for(self, run, opts)

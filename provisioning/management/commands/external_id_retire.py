from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandParser

from provisioning import cli, lifecycle


class Command(BaseCommand):
    help = (
        "Rotate an account's ExternalId, last step: retire an id, so the trust lists only the others. "
        "Refuses the last id; warns about brokers not yet redeployed with the new one."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("account_id", metavar="ACCOUNT_ID")
        parser.add_argument("external_id", metavar="EXTERNAL_ID")
        cli.add_run_arguments(parser)

    def handle(self, *args: Any, **opts: Any) -> None:
        account = cli.account_or_invalid(opts["account_id"])
        value = opts["external_id"]
        plan = cli.plan_or_fail(lambda: lifecycle.plan_retirement(account, value))
        if opts["plan"]:
            ext = account.external_ids.get(value=value)
            for warning in lifecycle.retirement_warnings(account, ext):
                self.stderr.write(f"warning: {warning}")
            cli.print_plan(self.stdout, plan)
            return
        try:
            run, warnings = lifecycle.external_id_retire(
                account=account, value=value, enqueue=not opts["inline"]
            )
        except ValidationError as exc:
            raise cli.invalid(exc) from None
        for warning in warnings:
            self.stderr.write(f"warning: {warning}")
        cli.execute_for(self, run, opts)

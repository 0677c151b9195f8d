from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandParser

from accounts.models import ExternalId
from provisioning import cli, lifecycle


class Command(BaseCommand):
    help = (
        "Rotate an account's ExternalId without downtime, step 1: add a new id. The trust lists both "
        "ids and broker files switch to the new one; redeploy the brokers, mark them (broker_redeployed), "
        "then retire the old id (external_id_retire)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("account_id", metavar="ACCOUNT_ID")
        parser.add_argument("--external-id", default="", help="The new id (default: a generated UUID4).")
        cli.add_run_arguments(parser)

    def handle(self, *args: Any, **opts: Any) -> None:
        account = cli.account_or_invalid(opts["account_id"])
        value = opts["external_id"].strip() or ExternalId.generate()
        plan = cli.plan_or_fail(lambda: lifecycle.plan_rotation(account, value))
        if opts["plan"]:
            cli.print_plan(self.stdout, plan)
            return
        try:
            run = lifecycle.external_id_rotate(account=account, value=value, enqueue=not opts["inline"])
        except ValidationError as exc:
            raise cli.invalid(exc) from None
        self.stdout.write(f"New ExternalId {value}: broker files of {account.account_id} now hold it.")
        cli.execute_for(self, run, opts)
        old = ", ".join(e.value for e in lifecycle.rotation_status(account).retiring)
        self.stdout.write(
            "The trust accepts both ids. Next: download each broker's file, redeploy the broker, run "
            f"`manage.py broker_redeployed {account.account_id}`, then "
            f"`manage.py external_id_retire {account.account_id} {old}`."
        )

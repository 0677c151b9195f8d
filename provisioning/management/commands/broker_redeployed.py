from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandParser

from provisioning import cli, lifecycle


class Command(BaseCommand):
    help = (
        "Record that an account's brokers now run the file holding its current ExternalId "
        "(during a rotation, before the old id is retired)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("account_id", metavar="ACCOUNT_ID")
        parser.add_argument(
            "--region", action="append", dest="regions", default=[], help="Only this broker (repeatable)."
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        account = cli.account_or_invalid(opts["account_id"])
        brokers = [b for b in account.brokers.all() if not opts["regions"] or b.region in opts["regions"]]
        missing = set(opts["regions"]) - {b.region for b in brokers}
        if missing or not brokers:
            raise cli.invalid(
                ValidationError(
                    {"region": f"No broker of {account.account_id} in {', '.join(sorted(missing))}."}
                )
                if missing
                else ValidationError({"region": f"{account.account_id} has no broker."})
            )
        for broker in brokers:
            try:
                entry = lifecycle.broker_mark_redeployed(broker=broker)
            except ValidationError as exc:
                raise cli.invalid(exc) from None
            self.stdout.write(
                f"{account.account_id}/{broker.region}: redeployed with {entry.details['external_id']}"
            )

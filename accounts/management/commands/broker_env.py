from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from accounts import renderers, services
from provisioning import cli


class Command(BaseCommand):
    help = (
        "Print a broker client's .env, Helm values or its host's docker run script (the download is audited)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("account_id")
        parser.add_argument("--region", default="", help="Needed when the account has brokers in several.")
        parser.add_argument("--format", choices=renderers.FORMATS, default="env", dest="fmt")

    def handle(self, *args: Any, account_id: str, region: str, fmt: str, **opts: Any) -> None:
        account = cli.account_or_invalid(account_id)
        brokers = {b.region: b for b in account.brokers.all()}
        if not brokers:
            raise cli.invalid(f"account_id: account {account_id} has no broker instance.")
        if region:
            broker = brokers.get(region)
            if broker is None:
                raise cli.invalid(
                    f"region: account {account_id} has no broker in {region!r}; "
                    f"it has: {', '.join(sorted(brokers))}."
                )
        elif len(brokers) == 1:
            broker = next(iter(brokers.values()))
        else:
            raise cli.invalid(
                f"region: account {account_id} has brokers in {', '.join(sorted(brokers))}: "
                "choose one with --region."
            )
        broker.account = account  # reuse the prefetched ExternalIds and agent
        try:
            broker_file = services.broker_file_download(broker=broker, fmt=fmt, user=None)
        except renderers.BrokerFileError as exc:
            raise cli.invalid(str(exc)) from None
        self.stdout.write(broker_file.content, ending="")

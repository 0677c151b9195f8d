from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandParser

from provisioning import cli, snyk, snyk_services


class Command(BaseCommand):
    help = (
        "Integrate an ECR account's registry (account and region) into an existing Snyk Org instead of "
        "one the portal creates. The Org is checked with Snyk (it exists, in the tenant's group); the "
        "next sync integrates into it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("account_id", metavar="ACCOUNT_ID")
        parser.add_argument("--org-id", required=True, help="The Snyk Org's id (a UUID).")
        parser.add_argument("--region", default="", help="Needed when the account has brokers in several.")

    def handle(self, *args: Any, **opts: Any) -> None:
        account = cli.account_or_invalid(opts["account_id"])
        brokers = {b.region: b for b in account.brokers.all()}
        region = opts["region"] or (next(iter(brokers)) if len(brokers) == 1 else "")
        if region not in brokers:
            listed = ", ".join(sorted(brokers))
            message = f"account {account.account_id} has brokers in {listed}: choose one with --region."
            raise cli.invalid(ValidationError({"region": message}))
        broker = brokers[region]
        try:
            name = snyk_services.snyk_org_map(broker=broker, org_id=opts["org_id"])
        except ValidationError as exc:
            raise cli.invalid(exc) from None
        except snyk.SnykError as exc:
            raise cli.invalid(f"Snyk: {exc.message}") from None
        self.stdout.write(
            f"{account.account_id} in {region} is integrated into Snyk Org {name!r} ({broker.snyk_org_id}) "
            "from the next sync on; no Org is created for it."
        )

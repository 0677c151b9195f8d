from django.core.management.base import BaseCommand, CommandError

from accounts import renderers, services
from accounts.models import EcrAccount

EXIT_INVALID = 2


def invalid(message: str) -> CommandError:
    return CommandError(message, returncode=EXIT_INVALID)


class Command(BaseCommand):
    help = "Print a broker client's .env, Helm values or docker run commands (the download is audited)."

    def add_arguments(self, parser):
        parser.add_argument("account_id")
        parser.add_argument("--region", default="", help="Needed when the account has brokers in several.")
        parser.add_argument("--format", choices=renderers.FORMATS, default="env", dest="fmt")

    def handle(self, *args, account_id, region, fmt, **opts):
        account = (
            EcrAccount.objects.select_related("agent")
            .prefetch_related("external_ids", "brokers")
            .filter(account_id=account_id)
            .first()
        )
        if account is None:
            raise invalid(f"account_id: no ECR account {account_id!r} in the portal (see account_onboard).")
        brokers = {b.region: b for b in account.brokers.all()}
        if not brokers:
            raise invalid(f"account_id: account {account_id} has no broker instance.")
        if region:
            broker = brokers.get(region)
            if broker is None:
                raise invalid(
                    f"region: account {account_id} has no broker in {region!r}; "
                    f"it has: {', '.join(sorted(brokers))}."
                )
        elif len(brokers) == 1:
            broker = next(iter(brokers.values()))
        else:
            raise invalid(
                f"region: account {account_id} has brokers in {', '.join(sorted(brokers))}: "
                "choose one with --region."
            )
        broker.account = account  # reuse the prefetched ExternalIds and agent
        try:
            broker_file = services.broker_file_download(broker=broker, fmt=fmt, user=None)
        except renderers.BrokerFileError as exc:
            raise invalid(str(exc)) from None
        self.stdout.write(broker_file.content, ending="")

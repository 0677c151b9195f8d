from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandParser

from accounts.choices import Lifecycle
from accounts.models import AgentIdentity, EcrAccount
from provisioning import cli, services


class Command(BaseCommand):
    help = "Make AWS match the portal for some or all accounts (and their agents' permissions)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("account_ids", nargs="*", metavar="ACCOUNT_ID")
        parser.add_argument("--agent", default="", help="Only accounts of this agent.")
        cli.add_run_arguments(parser)

    def handle(self, *args: Any, **opts: Any) -> None:
        matching = EcrAccount.objects.select_related("agent").exclude(status=Lifecycle.DRAFT)
        if opts["agent"]:
            if not AgentIdentity.objects.filter(name=opts["agent"]).exists():
                raise cli.invalid(ValidationError({"agent": f"No agent named {opts['agent']!r}."}))
            matching = matching.filter(agent__name=opts["agent"])
        if opts["account_ids"]:
            matching = matching.filter(account_id__in=opts["account_ids"])
            missing = set(opts["account_ids"]) - {a.account_id for a in matching}
            if missing:
                raise cli.invalid(
                    ValidationError({"account_id": f"Not onboarded here: {', '.join(sorted(missing))}."})
                )
        accounts = list(matching)
        if not accounts:
            self.stdout.write("No accounts to reconcile.")
            return
        if opts["plan"]:
            cli.print_plan(self.stdout, services.plan_reconcile(accounts))
            return
        run = services.account_reconcile(accounts=accounts, enqueue=not opts["inline"])
        cli.execute_for(self, run, opts)

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandParser

from accounts.models import AgentIdentity
from provisioning import cli, snyk_services


class Command(BaseCommand):
    help = (
        "Bring Snyk to the inventory for universal agents (or one): app install, deployments, a "
        "connection, Org and integration per broker, after each account's IAM side. A second sync "
        "writes nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--agent", default="", help="Only this agent's accounts.")
        cli.add_run_arguments(parser)

    def handle(self, *args: Any, **opts: Any) -> None:
        agent = None
        if opts["agent"]:
            agent = AgentIdentity.objects.filter(name=opts["agent"]).first()
            if agent is None:
                raise cli.invalid(ValidationError({"agent": f"no agent {opts['agent']!r} in the portal."}))
            if not agent.is_universal:
                raise cli.invalid(ValidationError({"agent": f"agent {agent.name} is in classic mode."}))
        if opts["plan"]:
            cli.print_plan(self.stdout, cli.plan_or_fail(lambda: snyk_services.plan_sync(agent)))
            return
        run = snyk_services.snyk_sync(agent=agent, enqueue=not opts["inline"])
        if run is None:
            self.stdout.write("No onboarded account of a universal agent: nothing to sync.")
            return
        cli.execute(
            self.stdout,
            run,
            inline=opts["inline"],
            timeout=opts["timeout"],
            as_json=opts["json"],
            stderr=self.stderr,
        )

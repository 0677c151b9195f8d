from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandParser

from accounts.models import AgentIdentity
from provisioning import cli, lifecycle


class Command(BaseCommand):
    help = (
        "Offboard an agent: refused while it serves accounts; otherwise it is marked removed and its "
        "sts:AssumeRole permissions are deleted (its IAM role or user is left for you to delete)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", metavar="NAME")
        cli.add_run_arguments(parser)

    def handle(self, *args: Any, **opts: Any) -> None:
        agent = AgentIdentity.objects.filter(name=opts["name"]).first()
        if agent is None:
            raise cli.invalid(ValidationError({"agent": f"No agent named {opts['name']!r}."}))
        plan = cli.plan_or_fail(lambda: lifecycle.plan_agent_offboarding(agent))
        if opts["plan"]:
            cli.print_plan(self.stdout, plan)
            return
        try:
            run = lifecycle.agent_offboard(agent=agent, enqueue=not opts["inline"])
        except ValidationError as exc:
            raise cli.invalid(exc) from None
        cli.execute_for(self, run, opts)

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandParser

from accounts import services as inventory
from accounts.choices import BrokerMode
from provisioning import cli, services


class Command(BaseCommand):
    help = "Add an agent identity (the IAM role or user the Container Registry Agent runs as) and set it up."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--kind", choices=["role", "user"], required=True)
        parser.add_argument("--account-id", required=True)
        parser.add_argument("--iam-name", default="")
        parser.add_argument("--policy-name", default="")
        parser.add_argument("--management-role-arn", default="")
        parser.add_argument("--management-external-id", default="")
        parser.add_argument(
            "--broker-mode",
            choices=BrokerMode.values,
            default=BrokerMode.CLASSIC,
            help="classic: a broker per account and region; universal: Universal Broker connections.",
        )
        cli.add_run_arguments(parser)

    def handle(self, *args: Any, **opts: Any) -> None:
        fields = {
            "name": opts["name"],
            "kind": opts["kind"],
            "account_id": opts["account_id"],
            "iam_name": opts["iam_name"],
            "policy_name": opts["policy_name"],
            "management_role_arn": opts["management_role_arn"],
            "management_external_id": opts["management_external_id"],
            "broker_mode": opts["broker_mode"],
        }
        try:
            agent = inventory.agent_build(**fields)
        except ValidationError as exc:
            raise cli.invalid(exc) from None
        if opts["plan"]:
            cli.print_plan(self.stdout, services.plan_agent(agent))
            return
        agent = inventory.agent_create(**fields)
        self.stdout.write(f"Agent {agent.name}: {agent.arn}")
        run = services.agent_setup(agent=agent, enqueue=not opts["inline"])
        cli.execute(
            self.stdout,
            run,
            inline=opts["inline"],
            timeout=opts["timeout"],
            as_json=opts["json"],
            stderr=self.stderr,
        )

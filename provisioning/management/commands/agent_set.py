from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandParser

from accounts import services as inventory
from accounts.choices import BrokerMode
from accounts.models import AgentIdentity
from provisioning import cli


class Command(BaseCommand):
    help = "Change an agent's settings: --broker-mode switches its accounts between classic and universal."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--broker-mode", choices=BrokerMode.values, required=True)

    def handle(self, *args: Any, **opts: Any) -> None:
        agent = AgentIdentity.objects.filter(name=opts["name"]).first()
        if agent is None:
            raise cli.invalid(ValidationError({"name": f"no agent {opts['name']!r} in the portal."}))
        if not inventory.agent_set_broker_mode(agent=agent, broker_mode=opts["broker_mode"]):
            self.stdout.write(f"Agent {agent.name} is already in {agent.broker_mode} mode: nothing changed.")
            return
        self.stdout.write(
            f"Agent {agent.name} is now in {agent.broker_mode} mode. "
            f"Run `manage.py snyk_sync --agent {agent.name}` to bring Snyk to it."
        )

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandParser

from accounts import services as inventory
from accounts.choices import BrokerMode
from accounts.models import AgentIdentity
from provisioning import cli, services, snyk_services

from .agent_add import add_runtime_arguments, runtime_fields


class Command(BaseCommand):
    help = (
        "Change an agent's settings. --broker-mode switches its accounts between classic and universal "
        "(then `snyk_sync --agent NAME` brings Snyk to it). --runtime (and its parameters) moves a role "
        "agent to where it runs: the setup run then changes its trust (and instance profile or Pod "
        "Identity association)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--broker-mode", choices=BrokerMode.values)
        add_runtime_arguments(parser, default=None)
        cli.add_run_arguments(parser)

    def handle(self, *args: Any, **opts: Any) -> None:
        agent = AgentIdentity.objects.filter(name=opts["name"]).first()
        if agent is None:
            raise cli.invalid(ValidationError({"name": f"no agent {opts['name']!r} in the portal."}))
        runtime = runtime_fields(opts)
        if not runtime and not opts["broker_mode"]:
            raise cli.invalid("give a setting to change, e.g. --broker-mode universal or --runtime eks-irsa.")
        if opts["plan"]:
            if opts["broker_mode"]:
                self.stdout.write(f"Agent {agent.name} would switch to {opts['broker_mode']} mode.")
            if runtime:
                self._print_plan(agent, runtime)
            return
        if opts["broker_mode"]:
            self._set_broker_mode(agent, opts["broker_mode"], opts)
        if runtime:
            self._set_runtime(agent, runtime, opts)

    def _set_broker_mode(self, agent: AgentIdentity, broker_mode: str, opts: dict[str, Any]) -> None:
        changed, run = snyk_services.broker_mode_switch(
            agent=agent, broker_mode=broker_mode, enqueue=not opts["inline"]
        )
        if not changed:
            self.stdout.write(f"Agent {agent.name} is already in {agent.broker_mode} mode: nothing changed.")
            return
        if run is None:
            self.stdout.write(
                f"Agent {agent.name} is now in {agent.broker_mode} mode"
                + (
                    ": no account onboarded yet (each gets its Snyk side as it is onboarded)."
                    if agent.is_universal
                    else ": its brokers' classic files are offered again."
                )
            )
            return
        self.stdout.write(
            f"Agent {agent.name} is now in universal mode: this run creates its accounts' Snyk side; each "
            "account's classic brokers retire once its integration exists."
        )
        cli.execute_for(self, run, opts)

    def _set_runtime(self, agent: AgentIdentity, runtime: dict[str, str], opts: dict[str, Any]) -> None:
        try:
            changed = inventory.agent_set_runtime(agent=agent, runtime=runtime)
        except ValidationError as exc:
            raise cli.invalid(exc) from None
        if not changed:
            self.stdout.write(f"Agent {agent.name} already runs on {agent.runtime} so: nothing changed.")
            return
        self.stdout.write(f"Agent {agent.name} now runs on {agent.runtime}: setting up its trust.")
        cli.execute_for(self, services.agent_setup(agent=agent, enqueue=not opts["inline"]), opts)

    def _print_plan(self, agent: AgentIdentity, runtime: dict[str, str]) -> None:
        """The setup the change would run, planned on the changed agent, which is not saved."""
        fields = {name: getattr(agent, name) for name in inventory.RUNTIME_FIELDS}
        try:
            inventory.agent_preview_runtime(agent=agent, runtime=runtime)
            cli.print_plan(self.stdout, services.plan_agent(agent))
        except ValidationError as exc:
            raise cli.invalid(exc) from None
        finally:
            for name, value in fields.items():
                setattr(agent, name, value)

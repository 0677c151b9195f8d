from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandParser

from accounts import services as inventory
from accounts.choices import AgentRuntime, BrokerMode
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
        add_runtime_arguments(parser, default=AgentRuntime.EC2)
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
            **runtime_fields(opts),
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
        cli.execute_for(self, run, opts)


RUNTIME_OPTIONS = ("cluster_arn", "oidc_issuer", "oidc_thumbprint", "namespace", "service_account")


def add_runtime_arguments(parser: CommandParser, *, default: str | None) -> None:
    """Where a role agent runs (agent_add, agent_set): the runtime and its parameters."""
    parser.add_argument(
        "--runtime",
        choices=AgentRuntime.values,
        default=default,
        help="Where the role agent runs, which decides whom its role trusts (default ec2).",
    )
    parser.add_argument(
        "--cluster-arn", help="ECS: the tasks' cluster (optional); Pod Identity: the EKS cluster."
    )
    parser.add_argument("--oidc-issuer", help="IRSA: the cluster's OIDC issuer URL (https://...).")
    parser.add_argument(
        "--oidc-thumbprint", help="IRSA: create the OIDC provider when missing, with this SHA-1 thumbprint."
    )
    parser.add_argument("--namespace", help="EKS: the agent's Kubernetes namespace (default snyk-broker).")
    parser.add_argument("--service-account", help="EKS: the agent's service account (default snyk-broker).")


def runtime_fields(opts: dict[str, Any]) -> dict[str, str]:
    """The runtime options given on the command line (None: not given)."""
    names = ("runtime", *RUNTIME_OPTIONS)
    return {name: opts[name] for name in names if opts.get(name) is not None}

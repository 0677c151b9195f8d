from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandParser

from accounts import services as inventory
from accounts.models import AgentIdentity, EcrAccount
from provisioning import cli, services

from . import _bulk_onboard as bulk


class Command(BaseCommand):
    help = (
        "Onboard an ECR account: service role, read-only policy, trust, agent permissions, brokers. "
        "With --from-file FILE (CSV or YAML, one account per row), onboard many in one bulk run."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("account_id", nargs="?", default="")
        parser.add_argument("--agent", required=True, help="Agent name (see agent_add).")
        parser.add_argument("--region", action="append", default=[], dest="regions")
        parser.add_argument("--alias", default="")
        parser.add_argument("--external-id", default="")
        parser.add_argument("--management-role-arn", default="")
        parser.add_argument("--management-external-id", default="")
        parser.add_argument("--broker-client-url", default="")
        parser.add_argument("--cr-agent-url", default="")
        parser.add_argument("--broker-token", default="")
        parser.add_argument("--broker-server-url", default="")
        bulk.add_arguments(parser)
        cli.add_run_arguments(parser)

    def handle(self, *args: Any, **opts: Any) -> None:
        if opts["from_file"]:
            return bulk.handle(self, opts)
        if not opts["account_id"] or not opts["regions"]:
            raise cli.invalid("give ACCOUNT_ID and at least one --region, or --from-file FILE.")
        agent = AgentIdentity.objects.filter(name=opts["agent"]).first()
        if agent is None:
            raise cli.invalid(
                ValidationError({"agent": f"No agent named {opts['agent']!r} (see agent_add)."})
            )
        if EcrAccount.objects.filter(account_id=opts["account_id"]).exists():
            raise cli.invalid(
                ValidationError({"account_id": "This account is already in the portal: use reconcile."})
            )
        fields = {
            "agent": agent,
            "account_id": opts["account_id"],
            "regions": opts["regions"],
            "alias": opts["alias"],
            "external_id": opts["external_id"],
            "management_role_arn": opts["management_role_arn"],
            "management_external_id": opts["management_external_id"],
            "broker_client_url": opts["broker_client_url"],
            "cr_agent_url": opts["cr_agent_url"],
            "broker_token": opts["broker_token"],
            "broker_server_url": opts["broker_server_url"],
        }
        try:
            account, external_id, _ = inventory.account_build(**fields)
        except ValidationError as exc:
            raise cli.invalid(exc) from None
        if opts["plan"]:
            cli.print_plan(self.stdout, services.plan_onboarding(account, [external_id.value]))
            return
        account = inventory.account_create(**fields)
        run = services.account_onboard(account=account, enqueue=not opts["inline"])
        cli.execute_for(self, run, opts)

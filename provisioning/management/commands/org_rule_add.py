from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandParser

from accounts import organizations as org_inventory
from accounts.choices import OnLeave
from accounts.models import AgentIdentity
from provisioning import cli


class Command(BaseCommand):
    help = (
        "Add an onboarding rule to an organization (after its last: rules apply in order, the first that "
        "matches an account decides). Every matcher given must hold."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="The organization.")
        parser.add_argument("--agent", required=True)
        parser.add_argument("--region", action="append", default=[], required=True, dest="regions")
        parser.add_argument("--ou", action="append", default=[], dest="ou_ids", help="OU (or root) id.")
        parser.add_argument("--include-children", action="store_true", help="Also the OUs below --ou.")
        parser.add_argument("--account", action="append", default=[], dest="account_ids")
        parser.add_argument("--name-glob", default="", help="Account name pattern (fnmatch, any case).")
        parser.add_argument("--email-glob", default="", help="Account e-mail pattern (fnmatch, any case).")
        parser.add_argument("--tag", default="", help="KEY=VALUE: the account's tag (ListTagsForResource).")
        parser.add_argument("--exclude", action="append", default=[], help="Account id never onboarded.")
        parser.add_argument("--member-role-name", default="", help="Default OrganizationAccountAccessRole.")
        parser.add_argument(
            "--broker-client-url", default="", help="e.g. http://broker-{account_id}-{region}:8000"
        )
        parser.add_argument("--cr-agent-url", default="", help="e.g. http://cra:8081")
        parser.add_argument("--on-leave", choices=OnLeave.values, default=OnLeave.OFFBOARD)

    def handle(self, *args: Any, **opts: Any) -> None:
        organization = cli.organization_or_invalid(opts["name"])
        try:
            rule = org_inventory.rule_create(
                organization=organization,
                agent=AgentIdentity.objects.filter(name=opts["agent"]).first(),
                regions=opts["regions"],
                ou_ids=opts["ou_ids"],
                include_children=opts["include_children"],
                account_ids=opts["account_ids"],
                name_glob=opts["name_glob"],
                email_glob=opts["email_glob"],
                tag=opts["tag"],
                exclude=opts["exclude"],
                member_role_name=opts["member_role_name"],
                broker_client_url_template=opts["broker_client_url"],
                cr_agent_url_template=opts["cr_agent_url"],
                on_leave=opts["on_leave"],
            )
        except ValidationError as exc:
            raise cli.invalid(exc) from None
        self.stdout.write(f"Rule {rule.position} of {organization.name}: {org_inventory.describe_rule(rule)}")

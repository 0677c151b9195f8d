from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandParser

from provisioning import aws, cli, org_services


class Command(BaseCommand):
    help = (
        "Connect an AWS organization: its management account (or a delegated administrator), reached "
        "through a management role that may make Organizations' read-only calls."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--account-id", required=True)
        parser.add_argument("--management-role-arn", default="")
        parser.add_argument("--management-external-id", default="")
        parser.add_argument(
            "--auto-apply",
            action="store_true",
            help="Scheduled syncs apply their changes by themselves (default: they wait for confirmation).",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        try:
            organization = org_services.organization_connect(
                name=opts["name"],
                account_id=opts["account_id"],
                management_role_arn=opts["management_role_arn"],
                management_external_id=opts["management_external_id"],
                auto_apply=opts["auto_apply"],
            )
        except ValidationError as exc:
            raise cli.invalid(exc) from None
        except aws.AwsError as exc:
            raise cli.aws_failed(exc) from None
        self.stdout.write(
            f"Organization {organization.name} connected through account {organization.account_id}."
        )

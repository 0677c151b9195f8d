import json
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from provisioning import permissions

DOCUMENTS: dict[tuple[str, str], Callable[[dict[str, set[str]]], dict[str, Any]]] = {
    ("base", "policy"): permissions.base_policy,
    ("base", "cloudformation"): permissions.base_cloudformation_template,
    ("management", "policy"): permissions.management_policy,
    ("management", "cloudformation"): permissions.cloudformation_template,
    ("organization", "policy"): permissions.organization_policy,
}


class Command(BaseCommand):
    help = "Print the least-privilege IAM policy the portal's base identity or management role needs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--role",
            choices=["base", "management", "organization"],
            default="management",
            help="organization: the role discovery assumes in the management account (read-only).",
        )
        parser.add_argument(
            "--format",
            choices=["policy", "cloudformation"],
            default="policy",
            help="cloudformation: a template creating the management role (--role management) or a "
            "managed policy with the base permissions (--role base).",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        if (opts["role"], opts["format"]) not in DOCUMENTS:
            raise CommandError("--role organization prints a policy only (--format policy).", returncode=2)
        document = DOCUMENTS[opts["role"], opts["format"]](permissions.managed_names())
        self.stdout.write(json.dumps(document, indent=2))

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from provisioning import permissions


class Command(BaseCommand):
    help = "Print the least-privilege IAM policy the portal's base identity or management role needs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--role", choices=["base", "management"], default="management")
        parser.add_argument("--format", choices=["policy", "cloudformation"], default="policy")

    def handle(self, *args: Any, **opts: Any) -> None:
        names = permissions.managed_names()
        if opts["format"] == "cloudformation":
            document = permissions.cloudformation_template(names)
        elif opts["role"] == "base":
            document = permissions.base_policy(names)
        else:
            document = permissions.management_policy(names)
        self.stdout.write(json.dumps(document, indent=2))

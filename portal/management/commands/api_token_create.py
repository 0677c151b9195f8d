"""api_token_create USERNAME --name NAME [--scope read|write] [--expires-days N]: prints the token
alone on stdout, once (the portal keeps only its hash). Exit 2 on bad input, nothing saved."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from portal.api import tokens
from portal.models import ApiTokenScope


class Command(BaseCommand):
    help = "Make an API token for a user and print it (once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", required=True, help="What will use it, e.g. ticket-bot.")
        parser.add_argument("--scope", choices=ApiTokenScope.values, default=ApiTokenScope.READ)
        parser.add_argument("--expires-days", type=int, default=None, help="Default: never expires.")

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"No user {options['username']!r}.", returncode=2)
        try:
            _, secret = tokens.api_token_create(
                user=user, name=options["name"], scope=options["scope"], expires_days=options["expires_days"]
            )
        except ValidationError as exc:
            lines = [f"{field}: {msg}" for field, msgs in exc.message_dict.items() for msg in msgs]
            raise CommandError("\n".join(lines), returncode=2) from None
        self.stdout.write(secret)

from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from provisioning import cli, snyk, snyk_services


class Command(BaseCommand):
    help = (
        "Connect the portal to a Snyk tenant with a Tenant Admin's personal token (read from a file, "
        "stored encrypted, never shown again). The token is tested first: GET /rest/self and the "
        "tenant's admin membership."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant-id", required=True)
        parser.add_argument("--token-file", required=True, help="A file holding the token alone.")
        parser.add_argument("--api-url", default="", help="Snyk's API host (default: SNYK_API_URL).")
        parser.add_argument(
            "--app-org-id", default="", help="The Org the Broker App is (or gets) installed in."
        )
        parser.add_argument(
            "--group-id", default="", help="The group new Orgs are created in (one per registry)."
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        try:
            token = Path(opts["token_file"]).read_text().removesuffix("\n")
        except OSError as exc:
            raise cli.invalid(ValidationError({"token_file": f"cannot read it: {exc.strerror}"})) from None
        try:
            tenant = snyk_services.snyk_connect(
                tenant_id=opts["tenant_id"],
                token=token,
                api_url=opts["api_url"],
                app_org_id=opts["app_org_id"],
                group_id=opts["group_id"],
            )
        except ValidationError as exc:
            raise cli.invalid(exc) from None
        except snyk.SnykError as exc:
            raise CommandError(
                f"Snyk refused the connection: {exc.message}", returncode=cli.EXIT_FAILED
            ) from None
        self.stdout.write(
            f"Connected to Snyk tenant {tenant.tenant_id} at {tenant.api_url} as {tenant.user_name} "
            "(Tenant Admin). The token is stored encrypted."
        )

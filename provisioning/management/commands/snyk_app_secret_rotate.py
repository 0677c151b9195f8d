from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand

from accounts.models import SnykTenant
from provisioning import cli, snyk, snyk_services


class Command(BaseCommand):
    help = (
        "Replace the Broker App install's client secret (Snyk revokes the old one at once). The new one "
        "is printed this once and stored encrypted; redeploy every deployment with its new file."
    )

    def handle(self, *args: Any, **opts: Any) -> None:
        try:
            secret = snyk_services.app_secret_rotate()
        except ValidationError as exc:
            raise cli.invalid(exc) from None
        except snyk.SnykError as exc:
            raise cli.invalid(f"not rotated (the stored secret still holds): {exc.message}") from None
        tenant = SnykTenant.current()
        assert tenant is not None
        self.stdout.write(
            f"New client secret of install {tenant.app_install_id} (shown once, stored encrypted):"
        )
        self.stdout.write(secret)
        self.stdout.write(
            "Snyk revoked the previous one: redeploy every deployment with its new file "
            "(`manage.py deployment_env DEPLOYMENT`)."
        )

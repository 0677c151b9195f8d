from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db.models import Q

from accounts import renderers, services, universal_renderers
from accounts.models import SnykDeployment
from provisioning import cli


class Command(BaseCommand):
    help = (
        "Print a Universal Broker deployment's .env, Helm values (both hold the client secret) or the "
        "Container Registry Agent manifest its connections use. The download is audited."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("deployment", help="Its name (<agent>-<n>, see the Snyk page) or Snyk id.")
        parser.add_argument("--format", choices=universal_renderers.FORMATS, default="env", dest="fmt")

    def handle(self, *args: Any, deployment: str, fmt: str, **opts: Any) -> None:
        found = [
            d
            for d in SnykDeployment.objects.select_related("agent", "tenant").filter(
                Q(deployment_id=deployment) | Q(agent__name=deployment.rpartition("-")[0])
            )
            if deployment in (d.name, d.deployment_id)
        ]
        if not found:
            raise cli.invalid(f"deployment: no Universal Broker deployment {deployment!r} in the portal.")
        try:
            broker_file = services.deployment_file_download(deployment=found[0], fmt=fmt, user=None)
        except renderers.BrokerFileError as exc:
            raise cli.invalid(str(exc)) from None
        self.stdout.write(broker_file.content, ending="")

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from provisioning import cli, org_services
from provisioning import organizations as orgs


class Command(BaseCommand):
    help = "Read the organization's whole tree (OUs, accounts, their state and tags) and store a snapshot."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        cli.add_run_arguments(parser, plan=False)

    def handle(self, *args: Any, **opts: Any) -> None:
        organization = cli.organization_or_invalid(opts["name"])
        run = org_services.discover_request(organization=organization, enqueue=not opts["inline"])
        # With --json the outcome document (the tree added) is the only thing on stdout.
        quiet = self.stderr if opts["json"] else self.stdout
        try:
            cli.execute(quiet, run, inline=opts["inline"], timeout=opts["timeout"], stderr=self.stderr)
        finally:
            run.refresh_from_db()
            snapshot = orgs.latest_snapshot(organization)
            if opts["json"]:
                outcome = cli.run_outcome(run)
                outcome["tree"] = snapshot.tree if snapshot and snapshot.run_id == run.pk else None
                self.stdout.write(json.dumps(outcome, indent=2, sort_keys=True))
            elif snapshot is not None and snapshot.run_id == run.pk:
                for line in orgs.tree_lines(snapshot.tree):
                    self.stdout.write(line)

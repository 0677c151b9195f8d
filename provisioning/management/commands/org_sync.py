import json
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandParser

from provisioning import aws, cli, org_services


class Command(BaseCommand):
    help = (
        "Sync an organization: discover it, decide per account by the rules, onboard new matching "
        "accounts and offboard the ones that left (only accounts a sync onboarded). The command is the "
        "operator's confirmation: it applies whatever auto-apply says; --plan changes nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--max-concurrency", type=int, default=None)
        parser.add_argument("--failure-tolerance", type=int, default=None)
        cli.add_run_arguments(parser)

    def handle(self, *args: Any, **opts: Any) -> None:
        organization = cli.organization_or_invalid(opts["name"])
        try:
            options = org_services.sync_options(
                max_concurrency=opts["max_concurrency"], failure_tolerance=opts["failure_tolerance"]
            )
            if opts["plan"]:
                self._plan(organization, options, as_json=opts["json"])
                return
            run = org_services.sync_request(
                organization=organization, apply=True, enqueue=not opts["inline"], options=options
            )
        except ValidationError as exc:
            raise cli.invalid(exc) from None
        out = self.stderr if opts["json"] else self.stdout
        try:
            cli.execute(out, run, inline=opts["inline"], timeout=opts["timeout"], stderr=self.stderr)
        finally:
            run.refresh_from_db()
            decisions = (run.result or {}).get("decisions", {})
            if opts["json"]:
                self.stdout.write(
                    json.dumps({**cli.run_outcome(run), "decisions": decisions}, indent=2, sort_keys=True)
                )
            else:
                _print_decisions(self.stdout, decisions, (run.result or {}).get("accounts", {}))

    def _plan(self, organization: Any, options: dict[str, int], *, as_json: bool) -> None:
        try:
            preview = org_services.plan_sync(organization, options=options)
        except aws.AwsError as exc:
            raise cli.aws_failed(exc) from None
        decisions = preview.sync.decisions_dict()
        if as_json:
            document = {"decisions": decisions, "plan": preview.plan.to_dict()}
            self.stdout.write(json.dumps(document, indent=2, sort_keys=True, default=str))
            return
        _print_decisions(self.stdout, decisions, {})
        cli.print_plan(self.stdout, preview.plan)


def _print_decisions(stdout: Any, decisions: dict[str, dict[str, Any]], outcomes: dict[str, str]) -> None:
    for account_id, decision in decisions.items():
        outcome = f" -> {outcomes[account_id]}" if account_id in outcomes else ""
        stdout.write(f"{account_id}: {decision['action']} ({decision['reason']}){outcome}")

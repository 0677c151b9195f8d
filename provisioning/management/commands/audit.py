"""`manage.py audit`: who can assume what, today, and is it what we intended? Read-only.

Exit status: 0 everything in sync and no finding; 3 findings or drift; 1 the audit itself failed
(it errored, or no worker finished it in time); 2 invalid input.
"""

import json
import time
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.choices import Lifecycle
from accounts.models import EcrAccount
from portal.text import counted
from provisioning import cli, runner
from provisioning.audit.report import has_findings_or_drift, run_report
from provisioning.audit.services import audit_request
from provisioning.choices import RunStatus
from provisioning.models import Run

EXIT_FINDINGS = 3
COMPLETED = (RunStatus.SUCCEEDED, RunStatus.PARTIAL)  # partial: some account unreachable (a finding)


class Command(BaseCommand):
    help = "Audit every account's trust, policies and the agents' permissions; change nothing."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--account",
            action="append",
            default=[],
            metavar="ID",
            help="Audit only this account (repeatable). Default: every onboarded account.",
        )
        parser.add_argument("--json", action="store_true", help="Print the report as JSON on stdout.")
        parser.add_argument(
            "--inline", action="store_true", help="Audit in this process instead of a worker."
        )
        parser.add_argument("--timeout", type=float, default=3600, help="Seconds to wait for a worker.")

    def handle(self, *args: Any, **opts: Any) -> None:
        accounts: list[EcrAccount] | None = None
        if opts["account"]:
            wanted = sorted(set(opts["account"]))
            accounts = list(EcrAccount.objects.filter(account_id__in=wanted).exclude(status=Lifecycle.DRAFT))
            missing = set(wanted) - {a.account_id for a in accounts}
            if missing:
                raise cli.invalid(
                    ValidationError({"account": f"Not onboarded here: {', '.join(sorted(missing))}."})
                )
        # Progress goes to stderr so that --json output is the JSON document alone.
        progress = self.stderr if opts["json"] else self.stdout
        run = audit_request(accounts=accounts, enqueue=not opts["inline"])
        if opts["inline"] and run.claim():
            runner.execute(run)
        else:
            progress.write(f"Audit run {run.pk} {run.status}; waiting for a worker…")
            run = self._wait(run, opts["timeout"])
        if run.status not in COMPLETED:
            raise CommandError(
                f"audit run {run.pk} {run.status}: {run.explanation}", returncode=cli.EXIT_FAILED
            )
        document = run_report(run)
        if opts["json"]:
            self.stdout.write(json.dumps(document, indent=2))
        else:
            self._print(run, document)
        if has_findings_or_drift(document):
            out_of_sync = sum(1 for a in document["accounts"] if a["status"] != "in_sync")
            findings = sum(len(a["findings"]) for a in document["accounts"] + document["agents"])
            raise CommandError(
                f"{counted(out_of_sync, 'account', 'accounts')} not in sync, "
                f"{counted(findings, 'finding', 'findings')}",
                returncode=EXIT_FINDINGS,
            )

    def _wait(self, run: Run, timeout: float) -> Run:
        deadline = time.monotonic() + timeout
        while True:
            run.refresh_from_db()
            if not run.is_active:
                return run
            if time.monotonic() > deadline:
                raise CommandError(
                    f"Audit run {run.pk} is still {run.status} after {timeout:.0f}s (is a worker running?).",
                    returncode=cli.EXIT_FAILED,
                )
            time.sleep(0.2)

    def _print(self, run: Run, document: dict[str, Any]) -> None:
        write = self.stdout.write
        write(f"Audit run {run.pk} {run.status} at {document['generated_at']}")
        for agent in document["agents"]:
            write(f"agent {agent['name']} {agent['arn']} (layout {agent['layout'] or 'unknown'})")
            for finding in agent["findings"]:
                write(f"  [{finding['severity']}] {finding['code']}: {finding['message']}")
        for account in document["accounts"]:
            alias = f" ({account['alias']})" if account["alias"] else ""
            principals = ", ".join(account["trusted_principals"]) or "nobody"
            head = f"{account['account_id']}{alias} {account['status']}"
            write(f"{head}: {account['role_arn']} trusts {principals}")
            for finding in account["findings"]:
                write(f"  [{finding['severity']}] {finding['code']}: {finding['message']}")
        write(run.explanation)

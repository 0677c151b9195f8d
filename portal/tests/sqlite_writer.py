"""One writer process for test_sqlite_concurrency.py, on the portal's own SQLite settings.

    python -m portal.tests.sqlite_writer --db PATH --agent PK --iterations N --go GO [--mode deferred]

Each iteration is one transaction.atomic() doing what web and worker do: a read-modify-write of
a row (select_for_update, then save), an F() update of the same row, and an insert. Prints one
JSON line: {"ok": n, "errors": n, "messages": [...]}. --mode overrides the settings' transaction
mode (the control case: SQLite's default DEFERRED).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--agent", type=int, required=True)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--go", required=True)
    parser.add_argument("--mode", default="", help="override OPTIONS.transaction_mode")
    args = parser.parse_args(argv)

    os.environ["DATABASE_URL"] = f"sqlite:///{args.db}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django
    from django.conf import settings

    if args.mode:
        settings.DATABASES["default"]["OPTIONS"]["transaction_mode"] = args.mode.upper()
    django.setup()

    from django.db import OperationalError, transaction
    from django.db.models import F

    from accounts.models import AgentIdentity
    from portal.models import AuditEntry

    while not os.path.exists(args.go):
        time.sleep(0.005)
    ok, errors, messages = 0, 0, []
    for i in range(args.iterations):
        try:
            with transaction.atomic():
                agent = AgentIdentity.objects.select_for_update().get(pk=args.agent)
                agent.policy_generation += 1  # read-modify-write in Python: the case that loses updates
                agent.save(update_fields=["policy_generation"])
                AgentIdentity.objects.filter(pk=args.agent).update(
                    synced_generation=F("synced_generation") + 1
                )
                AuditEntry.objects.create(action="test.sqlite.write", details={"pid": os.getpid(), "i": i})
            ok += 1
        except OperationalError as exc:
            errors += 1
            if str(exc) not in messages:
                messages.append(str(exc))
    print(json.dumps({"ok": ok, "errors": errors, "messages": messages}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

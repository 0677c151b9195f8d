"""`make bench` / `python -m bench [--quick]`: the portal's engine against a sequential boto3 script.

Full run (about 20 minutes on 2 cores): bulk onboarding of 50 and 200 accounts vs the baseline,
re-apply of everything with nothing changed, an audit of 200 accounts (when the audit run kind
exists), the web pages with 1,000 accounts, and the dashboard and audit page of the real embedded
server (`make run`) under 50 concurrent users (bench/served.py). Quick run (under 4 minutes): 50
accounts, pages with 1,000 accounts, fewer repeats and requests. Results: printed as tables,
written as JSON and Markdown under bench/results/<mode>/. Ratios are the headline: this machine
is shared and noisy.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
AGENT_ACCOUNTS = {50: "111111110050", 200: "111111110200"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 accounts only, fewer page requests")
    parser.add_argument("--delay", type=float, default=50.0, help="added latency per AWS call, ms")
    parser.add_argument("--sizes", default="", help="bulk sizes, comma separated (default 50,200)")
    parser.add_argument("--pages-accounts", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=1, help="prefork children per worker")
    parser.add_argument("--bulk-concurrency", type=int, default=16, help="bulk run max_concurrency")
    parser.add_argument("--only", default="", help="comma list of: bulk,reapply,audit,pages,served")
    parser.add_argument("--users", type=int, default=50, help="served: concurrent users")
    parser.add_argument("--think", type=float, default=1.0, help="served: mean pause between requests, s")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (worker logs)")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from . import report

    mode = "quick" if args.quick else "full"
    sizes = [int(s) for s in args.sizes.split(",") if s] or ([50] if args.quick else [50, 200])
    only = set(filter(None, args.only.split(","))) or {"bulk", "reapply", "audit", "pages", "served"}
    repeats = 10 if args.quick else 30
    audit_size = 50 if args.quick else 200
    started = time.monotonic()
    results: list[dict] = []
    meta = {
        "mode": mode,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "workers": args.workers,
        "concurrency": args.concurrency,
        "database": "sqlite",
        "broker": "filesystem",
        "delay_ms": args.delay,
    }

    def step(name: str, fn, *a, **kw) -> None:
        t0 = time.monotonic()
        print(f"… {name}", end="", flush=True)
        results.append(fn(*a, **kw))
        print(f" done in {time.monotonic() - t0:.0f} s", flush=True)

    if only - {"served"}:
        engine(args, only, sizes, audit_size, repeats, meta, step)
    if "served" in only:
        from . import served

        step(
            f"dashboard and audit page of the embedded server, {args.users} users",
            served.served_pages,
            accounts=args.pages_accounts,
            operations=10 * args.pages_accounts,
            users=args.users,
            requests_per_user=5 if args.quick else 10,
            think=args.think,
            dev=True,
        )
    meta["seconds"] = time.monotonic() - started
    text = report.render(meta, results)
    print()
    print(text)
    report.write(RESULTS / mode, meta, results, text)
    print(f"written to {RESULTS / mode}/")
    failures = [
        r["scenario"]
        for r in results
        if (r["scenario"].startswith("bulk-") and not r["portal"]["agent_lists_exactly_the_accounts"])
        or (r["scenario"] == "reapply" and r["writes"] != 0)
    ]
    if failures:
        print(f"FAILED checks in: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


def engine(args, only: set[str], sizes: list[int], audit_size: int, repeats: int, meta: dict, step) -> None:
    """The scenarios on the bench's own stack: scratch database, moto behind the proxy, workers."""
    from . import scenarios
    from .harness import stack

    with stack(
        delay=args.delay / 1000, workers=args.workers, concurrency=args.concurrency, keep=args.keep
    ) as st:
        meta.update(database=st.database, broker=st.broker)
        print(f"bench {meta['mode']}: scratch {st.scratch}, proxy {st.proxy.url}", flush=True)
        if "bulk" in only:
            for i, size in enumerate(sizes):
                step(
                    f"bulk onboarding of {size} accounts (portal, then sequential script)",
                    scenarios.bulk_onboarding,
                    st,
                    size,
                    first_id=200000000000 + i * 10000,
                    agent_account=AGENT_ACCOUNTS.get(size, f"{111111120000 + size:012d}"),
                    options={"max_concurrency": args.bulk_concurrency},
                )
        if "reapply" in only:
            step("re-apply with nothing changed", scenarios.reapply, st)
        if "audit" in only:
            step(f"audit of {audit_size} accounts", scenarios.audit, st, audit_size)
        if "pages" in only:
            step(
                f"web pages with {args.pages_accounts} accounts",
                scenarios.pages,
                st,
                accounts=args.pages_accounts,
                repeats=repeats,
            )


if __name__ == "__main__":
    sys.exit(main())

"""`make bench` / `python -m bench [--quick]`: the portal's engine against the boto3 scripts a user
would write, and against the floor of the fake AWS it runs on.

Every run first measures the fake AWS's own capacity (calls per second with 32 concurrent callers
through the proxy and its delay). Then, per size (full: 50, 200 and 1,000 accounts; quick: 50):
bulk onboarding by the portal and by a 32-thread boto3 script, in turn, 3 times up to 200 accounts
(the median of each is reported: the machine is noisy), and (up to 200 accounts) by a sequential
one; re-apply of that batch with nothing changed; an audit of it. Then the web pages with 1,000
accounts, a 200 ms-per-call scenario with 1, 2 and 4 worker processes, and the dashboard and audit
page of the real embedded server (`make run`) under 50 concurrent users (bench/served.py). It ends
with issue 15's Done-when criteria, pass or fail (bench/criteria.py). Full run: about 8 minutes on
2 cores (1,000 accounts take 2 of them); quick run: under 5 minutes.
Results: printed as tables, written as JSON and Markdown under bench/results/<mode>/. Ratios are the
headline: this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
AGENT_ACCOUNTS = {50: "111111110050", 200: "111111110200", 1000: "111111111000"}
SCENARIOS = ("bulk", "reapply", "audit", "pages", "latency", "served")


def _pairs(values: list[str]) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep:
            raise SystemExit(f"expected KEY=VALUE, got {value!r}")
        pairs[key] = rest
    return pairs


def _typed(value: str) -> object:
    try:
        return int(value)
    except ValueError:
        return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 accounts, fewer repeats (under 5 minutes)")
    parser.add_argument("--delay", type=float, default=50.0, help="added latency per AWS call, ms")
    parser.add_argument("--sizes", default="", help="bulk sizes, comma separated (default 50,200,1000)")
    parser.add_argument("--sequential-max", type=int, default=200, help="sequential script up to this size")
    parser.add_argument(
        "--repeats", type=int, default=3, help="portal and script runs per size up to 200 (median)"
    )
    parser.add_argument("--threads", type=int, default=32, help="script and capacity probe threads")
    parser.add_argument("--capacity-accounts", type=int, default=0, help="capacity probe accounts")
    parser.add_argument("--pages-accounts", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=1, help="prefork children per worker")
    parser.add_argument("--bulk-concurrency", type=int, default=32, help="bulk run max_concurrency")
    parser.add_argument("--chunk-size", type=int, default=0, help="workers' RUN_CHUNK_SIZE (0: the engine's)")
    parser.add_argument("--run-option", action="append", default=[], metavar="KEY=VALUE", help="run option")
    parser.add_argument("--worker-env", action="append", default=[], metavar="KEY=VALUE", help="worker env")
    parser.add_argument("--latency-delay", type=float, default=200.0, help="latency scenario: ms per call")
    parser.add_argument("--latency-workers", default="1,2,4", help="latency scenario: worker counts")
    parser.add_argument("--latency-accounts", type=int, default=0, help="latency scenario: accounts")
    parser.add_argument("--latency-concurrency", type=int, default=1, help="latency: children per worker")
    parser.add_argument("--only", default="", help=f"comma list of: {','.join(SCENARIOS)}")
    parser.add_argument("--users", type=int, default=50, help="served: concurrent users")
    parser.add_argument("--think", type=float, default=1.0, help="served: mean pause between requests, s")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a Done-when criterion fails")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (worker logs)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from . import criteria, report

    mode = "quick" if args.quick else "full"
    sizes = [int(s) for s in args.sizes.split(",") if s] or ([50] if args.quick else [50, 200, 1000])
    only = set(filter(None, args.only.split(","))) or set(SCENARIOS)
    run_options = {k: _typed(v) for k, v in _pairs(args.run_option).items()}
    options: dict = {"max_concurrency": args.bulk_concurrency}
    if run_options:
        options["options"] = run_options
    started = time.monotonic()
    results: list[dict] = []
    meta = {
        "mode": mode,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "workers": args.workers,
        "concurrency": args.concurrency,
        "threads": args.threads,
        "options": options,
        "worker_env": {
            **_pairs(args.worker_env),
            **({"RUN_CHUNK_SIZE": str(args.chunk_size)} if args.chunk_size else {}),
        },
        "database": "sqlite",
        "broker": "filesystem",
        "delay_ms": args.delay,
    }

    def step(name: str, fn, *a, **kw) -> dict:
        t0 = time.monotonic()
        print(f"… {name}", end="", flush=True)
        result = fn(*a, **kw)
        results.append(result)
        print(f" done in {time.monotonic() - t0:.0f} s", flush=True)
        return result

    if only - {"served"}:
        engine(args, only, sizes, options, meta, step)
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
    checks = criteria.done_when(results)
    text = report.render(meta, results, checks)
    print()
    print(text)
    report.write(RESULTS / mode, meta, results, text)
    print(f"written to {RESULTS / mode}/")
    failures = [
        r["scenario"]
        for r in results
        if (r["scenario"].startswith("bulk-") and not r["portal"]["agent_lists_exactly_the_accounts"])
        or (r["scenario"].startswith("reapply-") and r["writes"] != 0)
    ]
    if failures:
        print(f"FAILED checks in: {', '.join(failures)}", file=sys.stderr)
        return 1
    if args.strict and any(c.passed is not True for c in checks):
        print("Done-when: not met (see the summary)", file=sys.stderr)
        return 1
    return 0


def engine(args, only: set[str], sizes: list[int], options: dict, meta: dict, step) -> None:
    """The scenarios on the bench's own stack: scratch database, moto behind the proxy, workers."""
    from . import scenarios
    from .harness import stack

    quick = args.quick
    with stack(
        delay=args.delay / 1000,
        workers=args.workers,
        concurrency=args.concurrency,
        keep=args.keep,
        worker_env=meta["worker_env"],
    ) as st:
        meta.update(database=st.database, broker=st.broker)
        print(f"bench {meta['mode']}: scratch {st.scratch}, proxy {st.proxy.url}", flush=True)
        capacity_accounts = args.capacity_accounts or (64 if quick else 128)
        cap = step(
            f"fake AWS capacity, {args.threads} callers",
            scenarios.capacity,
            st,
            accounts=capacity_accounts,
            threads=args.threads,
            first_id=900000000000,
        )
        st.capacity = cap["calls_per_second"]
        meta["capacity_calls_per_second"] = st.capacity
        for i, size in enumerate(sizes):
            agent_account = AGENT_ACCOUNTS.get(size, f"{111111120000 + size:012d}")
            if "bulk" not in only:
                continue
            sequential = size <= args.sequential_max
            step(
                f"bulk onboarding of {size} accounts (portal, {args.threads}-thread script"
                + (", sequential script)" if sequential else ")"),
                scenarios.bulk_onboarding,
                st,
                size,
                first_id=200000000000 + i * 10000,
                agent_account=agent_account,
                options=options,
                capacity=st.capacity,
                threads=args.threads,
                sequential=sequential,
                repeats=args.repeats if size <= 200 else 1,
            )
            if "reapply" in only:
                step(f"re-apply of {size} accounts", scenarios.reapply, st, agent_account, size)
            if "audit" in only:
                step(f"audit of {size} accounts", scenarios.audit, st, agent_account, size)
        if "pages" in only:
            step(
                f"web pages with {args.pages_accounts} accounts",
                scenarios.pages,
                st,
                accounts=args.pages_accounts,
                repeats=10 if quick else 30,
            )
        if "latency" in only:
            workers = [int(w) for w in args.latency_workers.split(",") if w]
            count = args.latency_accounts or (50 if quick else 200)
            step(
                f"{args.latency_delay:.0f} ms per call, {count} accounts, workers {workers}",
                scenarios.latency,
                st,
                count,
                delay=args.latency_delay / 1000,
                workers=workers,
                concurrency=args.latency_concurrency,
                options=options,
                threads=args.threads,
                first_id=400000000000,
                capacity_accounts=32 if quick else 64,
                restore=False,  # the last scenario on this stack
            )


if __name__ == "__main__":
    sys.exit(main())

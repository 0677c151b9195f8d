"""`python -m bench.writes`: the median write inside the applier, over the proxy's delay per call
and over the AWS call itself (moto behind the proxy serves ~130 calls/s on 2 cores: at 32 calls at
once a call queues there far longer than the delay).

A bulk onboarding run is executed in this process (not by a worker), so that every
applier.apply_change can be timed from its start to its return: the client, the operation's
"started" row, the AWS call through the proxy, the settle and the progress. With nothing making
accounts wait for each other, a write takes the delay plus a little (target: within ~1.3x).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.writes", description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=32, help="bulk run max_concurrency")
    parser.add_argument("--delay", type=float, default=50.0, help="added latency per AWS call, ms")
    args = parser.parse_args(argv)

    from .harness import stack

    with stack(delay=args.delay / 1000, workers=1, concurrency=1) as st:
        from provisioning import applier, lifecycle, runner

        from . import scenarios

        agent = scenarios.make_agent("cra-writes", "111111119999")
        ids = scenarios.account_ids(260000000000, args.accounts)
        report = scenarios.validate_bulk(agent, ids)
        run = lifecycle.accounts_bulk_onboard(report=report, max_concurrency=args.concurrency, enqueue=False)
        timings: list[float] = []
        lock = threading.Lock()
        real_apply = applier.apply_change

        def timed(*a, **kw):
            started = time.monotonic()
            try:
                return real_apply(*a, **kw)
            finally:
                with lock:
                    timings.append(time.monotonic() - started)

        starts: list[float] = []
        real_start = applier._start

        def timed_start(*a, **kw):
            started = time.monotonic()
            try:
                return real_start(*a, **kw)
            finally:
                with lock:
                    starts.append(time.monotonic() - started)

        applier.apply_change = timed  # type: ignore[assignment]  # the flows call it through the module
        applier._start = timed_start  # type: ignore[assignment]
        try:
            assert run.claim()
            started = time.monotonic()
            runner.execute(run)
            seconds = time.monotonic() - started
        finally:
            applier.apply_change = real_apply  # type: ignore[assignment]
            applier._start = real_start  # type: ignore[assignment]
        from provisioning.models import Operation

        calls = [ms / 1000 for ms in Operation.objects.filter(run=run).values_list("duration_ms", flat=True)]
        delay = st.proxy.delay
        median = statistics.median(timings)
        p90 = statistics.quantiles(timings, n=10)[-1]
        print(
            f"{run.status}: {len(timings)} writes over {args.accounts} accounts at concurrency "
            f"{args.concurrency} in {seconds:.2f} s; median write {median * 1000:.0f} ms = "
            f"{median / delay:.2f}x the {delay * 1000:.0f} ms delay (p90 {p90 / delay:.2f}x); "
            f"recording it started: median {statistics.median(starts) * 1000:.0f} ms; the AWS call alone "
            f"(through the proxy, moto behind it): median {statistics.median(calls) * 1000:.0f} ms, "
            f"so a write is {median / statistics.median(calls):.2f}x its call"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

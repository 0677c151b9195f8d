"""What the bench compares against: the floor of each scenario, and issue 15's Done-when criteria.

The floor is the least time any tool could take on this fake AWS: the larger of
- one account's critical path: the calls one account needs one after another, times the delay per
  call (onboarding: `AssumeRole`, `CreatePolicy`, `CreateRole`, `AttachRolePolicy`, then the agent's
  one permission write: 5 calls), and
- the minimum number of calls for every account (4 per account for onboarding and re-apply, 5 for
  an audit: the issue's targets) divided by the fake AWS's measured capacity (calls per second with
  32 concurrent callers through the same proxy, measured at the start of every run).

The capacity is measured with the onboarding calls (writes); moto answers reads somewhat faster, so
the floor of re-apply and audit is approximate. Pure functions: tested in bench/tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# scenario kind -> (calls on one account's path, minimum calls per account)
MINIMUM_CALLS = {"onboard": (5, 4), "reapply": (4, 4), "audit": (5, 5)}
DONE_WHEN_SIZES = (50, 200)


def floor_seconds(*, kind: str, accounts: int, delay: float, capacity: float) -> dict[str, float]:
    """The floor of one scenario and its two terms (seconds); capacity in calls per second."""
    path_calls, per_account = MINIMUM_CALLS[kind]
    path = path_calls * delay
    throughput = accounts * per_account / capacity if capacity > 0 else 0.0
    return {
        "seconds": round(max(path, throughput), 3),
        "critical_path_seconds": round(path, 3),
        "throughput_seconds": round(throughput, 3),
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 2)


@dataclass(frozen=True)
class Criterion:
    label: str
    scenario: str  # "bulk", "reapply" or "audit": the result the value is read from ("<scenario>-<size>")
    limit: float
    key: tuple[str, ...]  # path to the value in that result


CRITERIA = (
    Criterion("portal / 32-thread script ≤ 0.8", "bulk", 0.8, ("portal_to_threadpool",)),
    Criterion("portal / floor ≤ 1.3", "bulk", 1.3, ("portal_to_floor",)),
    Criterion("new account: calls ≤ 4", "bulk", 4, ("portal", "calls_per_account_total")),
    Criterion("re-apply: calls per account ≤ 4", "reapply", 4, ("calls_per_account_total",)),
    Criterion("re-apply: writes = 0", "reapply", 0, ("writes",)),
    Criterion("audit: calls per account ≤ 5", "audit", 5, ("calls_per_account_total",)),
)


@dataclass(frozen=True)
class Check:
    criterion: Criterion
    size: int
    value: float | None  # None: not measured in this run

    @property
    def passed(self) -> bool | None:
        return None if self.value is None else self.value <= self.criterion.limit


def done_when(results: list[dict[str, Any]], sizes: tuple[int, ...] = DONE_WHEN_SIZES) -> list[Check]:
    """Every criterion at every size, from the results of one run."""
    by_name = {r["scenario"]: r for r in results}
    checks = []
    for criterion in CRITERIA:
        for size in sizes:
            value: Any = by_name.get(f"{criterion.scenario}-{size}")
            for key in criterion.key:
                value = value.get(key) if isinstance(value, dict) else None
            checks.append(Check(criterion, size, None if value is None else float(value)))
    return checks

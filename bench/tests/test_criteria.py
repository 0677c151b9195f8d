"""The floor of a scenario and issue 15's Done-when check, from results shaped as the bench writes them."""

import pytest

from bench import criteria


def test_floor_is_the_throughput_term_when_many_accounts_share_the_fake_aws():
    floor = criteria.floor_seconds(kind="onboard", accounts=200, delay=0.05, capacity=130)
    assert floor["throughput_seconds"] == pytest.approx(200 * 4 / 130, abs=0.001)
    assert floor["critical_path_seconds"] == pytest.approx(5 * 0.05)
    assert floor["seconds"] == floor["throughput_seconds"]


def test_floor_is_one_accounts_critical_path_when_the_fake_aws_has_room():
    floor = criteria.floor_seconds(kind="onboard", accounts=2, delay=0.2, capacity=130)
    assert floor["seconds"] == pytest.approx(5 * 0.2)  # 4 calls in the account, the agent's write


def test_audit_floor_counts_five_calls_per_account():
    floor = criteria.floor_seconds(kind="audit", accounts=100, delay=0.05, capacity=100)
    assert floor["seconds"] == pytest.approx(5.0)
    reapply = criteria.floor_seconds(kind="reapply", accounts=100, delay=0.05, capacity=100)
    assert reapply["seconds"] == pytest.approx(4.0)


def test_ratio_is_none_without_a_measurement():
    assert criteria.ratio(3.0, 2.0) == 1.5
    assert criteria.ratio(None, 2.0) is None
    assert criteria.ratio(3.0, 0) is None


def bulk(size, *, seconds, threadpool, floor, calls):
    return {
        "scenario": f"bulk-{size}",
        "accounts": size,
        "portal": {"seconds": seconds, "calls_per_account_total": calls},
        "portal_to_threadpool": criteria.ratio(seconds, threadpool),
        "portal_to_floor": criteria.ratio(seconds, floor),
    }


def test_done_when_passes_and_fails_per_criterion_and_size():
    results = [
        bulk(50, seconds=2.0, threadpool=2.7, floor=1.6, calls=4),
        {"scenario": "reapply-50", "calls_per_account_total": 4.0, "writes": 0},
        {"scenario": "audit-50", "calls_per_account_total": 5.02},
        bulk(200, seconds=14.5, threadpool=11.0, floor=6.2, calls=6.1),
        {"scenario": "reapply-200", "calls_per_account_total": 5.1, "writes": 2},
    ]
    checks = {(c.criterion.label, c.size): c for c in criteria.done_when(results)}
    assert checks["portal / 32-thread script ≤ 0.8", 50].passed  # 0.74
    assert checks["portal / floor ≤ 1.3", 50].passed  # 1.25
    assert checks["new account: calls ≤ 4", 50].passed
    assert checks["re-apply: calls per account ≤ 4", 50].passed
    assert checks["re-apply: writes = 0", 50].passed
    assert checks["audit: calls per account ≤ 5", 50].passed is False  # 5.02
    assert checks["portal / 32-thread script ≤ 0.8", 200].value == 1.32
    assert checks["portal / 32-thread script ≤ 0.8", 200].passed is False
    assert checks["portal / floor ≤ 1.3", 200].passed is False
    assert checks["new account: calls ≤ 4", 200].passed is False
    assert checks["re-apply: writes = 0", 200].passed is False
    missing = checks["audit: calls per account ≤ 5", 200]
    assert missing.value is None and missing.passed is None  # not run: neither pass nor fail


def test_done_when_has_every_criterion_at_both_sizes():
    checks = criteria.done_when([])
    assert len(checks) == len(criteria.CRITERIA) * 2
    assert {c.size for c in checks} == {50, 200}
    assert all(c.passed is None for c in checks)

"""The bench's tables: the ratios, calls and verdicts they print, from results shaped as written."""

from bench import criteria, report


def workers(used=2, pool=2, rss=180.4):
    return {"processes_used": used, "pool_processes": pool, "peak_rss_mib": rss}


def bulk_result(size=50, portal_seconds=4.8, script_seconds=2.7):
    floor = criteria.floor_seconds(kind="onboard", accounts=size, delay=0.05, capacity=125)
    return {
        "scenario": f"bulk-{size}",
        "accounts": size,
        "delay_ms": 50,
        "capacity_calls_per_second": 125,
        "portal": {
            "seconds": portal_seconds,
            "run_seconds": 4.5,
            "status": "succeeded",
            "explanation": "",
            "calls_per_account": {"iam:CreateRole": 1, "iam:GetRole": 1, "sts:AssumeRole": 1},
            "calls_per_account_total": 3,
            "agent_account_calls": {"iam:PutRolePolicy": 1, "sts:AssumeRole": 1},
            "agent_permission_writes": 1,
            "operations": 151,
            "agent_lists_exactly_the_accounts": True,
            "workers": workers(),
        },
        "threadpool": {
            "seconds": script_seconds,
            "threads": 32,
            "calls_per_account": {"iam:CreateRole": 1, "sts:AssumeRole": 1},
            "calls_per_account_total": 2,
            "agent_account_calls": {"iam:PutRolePolicy": 1, "sts:AssumeRole": 1},
            "total_calls": 102,
        },
        "baseline": None,
        "floor": floor,
        "portal_to_threadpool": criteria.ratio(portal_seconds, script_seconds),
        "portal_to_floor": criteria.ratio(portal_seconds, floor["seconds"]),
        "threadpool_to_floor": criteria.ratio(script_seconds, floor["seconds"]),
        "speedup": None,
    }


def engine_result(kind, size=50, writes=0):
    return {
        "scenario": f"{kind}-{size}",
        "accounts": size,
        "status": "succeeded",
        "seconds": 2.0,
        "writes": writes,
        "operations": 0,
        "calls_per_account": {"iam:GetRole": 1, "sts:AssumeRole": 1},
        "calls_per_account_total": 4.06,
        "floor": criteria.floor_seconds(kind=kind, accounts=size, delay=0.05, capacity=125),
        "portal_to_floor": 1.25,
        "workers": workers(used=1),
    }


def rows_of(text):
    return [
        [c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("|")
    ]


def test_headline_shows_the_ratios_to_the_script_and_the_floor():
    rows = rows_of(report.headline([bulk_result()]))
    header, line = rows[0], rows[2]
    cell = dict(zip(header, line, strict=True))
    assert cell["portal / script"] == "**1.78**"  # 4.8 / 2.7
    assert cell["floor (s)"] == "1.60"  # 50 × 4 calls at 125 calls/s
    assert cell["portal / floor"] == "**3.00**"
    assert cell["script / floor"] == "**1.69**"  # 2.7 / 1.6: how close a good script gets
    assert cell["sequential script (s)"] == "—"  # not run at this size
    assert cell["worker processes used"] == "2 of 2"
    assert cell["peak worker RSS (MiB)"] == "180"


def test_engine_runs_table_flags_writes_on_reapply():
    text = report.engine_runs_table([engine_result("reapply", writes=3), engine_result("audit")])
    rows = rows_of(text)
    cell = [dict(zip(rows[0], row, strict=True)) for row in rows[2:]]
    assert cell[0]["writes"] == "3 (MUST BE 0)"
    assert cell[1]["run"] == "audit, 50 accounts"
    assert cell[1]["floor (s)"] == "2.00"  # 50 × 5 calls at 125 calls/s
    assert cell[1]["worker processes used"] == "1 of 2"


def test_calls_table_has_a_column_per_run_of_the_batch():
    results = [bulk_result(), engine_result("reapply"), engine_result("audit")]
    rows = rows_of(report.calls_table(results, 50))
    assert rows[0] == ["action", "onboard: portal", "32-thread script", "re-apply", "audit"]
    by_action = {row[0]: row[1:] for row in rows[2:]}
    assert by_action["iam:GetRole"] == ["1", "0", "1", "1"]
    assert by_action["total"] == ["3", "2", "2", "2"]
    assert by_action["agent account, whole batch"] == ["2", "2", "—", "—"]


def test_done_when_table_prints_pass_fail_and_not_run():
    results = [bulk_result(portal_seconds=2.0), engine_result("reapply"), engine_result("audit")]
    text = report.done_when_table(criteria.done_when(results))
    rows = {row[0]: row[1:] for row in rows_of(text)[2:]}
    assert rows["portal / 32-thread script ≤ 0.8"] == ["0.74 pass", "not run"]
    assert rows["portal / floor ≤ 1.3"] == ["1.25 pass", "not run"]
    assert rows["re-apply: calls per account ≤ 4"] == ["4.06 FAIL", "not run"]
    assert "Done when (issue 15): 7 of 12 not met" in text


def test_render_puts_every_table_in_one_report():
    meta = {"mode": "quick", "cpus": 2, "workers": 2, "concurrency": 1, "database": "sqlite"}
    meta.update(broker="filesystem", delay_ms=50, seconds=12, options={"max_concurrency": 32})
    capacity = {"scenario": "capacity-50ms", "calls_per_second": 125.4, "threads": 32, "delay_ms": 50}
    capacity.update(calls=256, rounds=[120.1, 125.4])
    results = [capacity, bulk_result(), engine_result("reapply"), engine_result("audit")]
    text = report.render(meta, results, criteria.done_when(results))
    assert "Fake AWS capacity: **125 calls/s** with 32 concurrent callers" in text
    assert "| onboard 50 accounts" in text
    assert "AWS calls per account by action, 50 accounts" in text
    assert "### Done when (issue 15)" in text

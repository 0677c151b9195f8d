"""Tables (Markdown, readable in a terminal and pasteable into the README) and JSON files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".") if value < 100 else f"{value:.0f}"
    return str(value)


def _num(value: Any, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _ratio(value: float | None, limit: float | None = None) -> str:
    """A ratio in bold; with a limit, whether it is met."""
    if value is None:
        return "—"
    text = f"**{value:.2f}**"
    return text if limit is None else f"{text} {'ok' if value <= limit else '(> ' + _cell(limit) + ')'}"


def _workers(w: dict | None) -> str:
    if not w:
        return "—"
    return f"{w['processes_used']} of {w['pool_processes']}"


def _rss(w: dict | None) -> str:
    return "—" if not w or w.get("peak_rss_mib") is None else f"{w['peak_rss_mib']:.0f}"


def capacity_line(r: dict) -> str:
    return (
        f"Fake AWS capacity: **{r['calls_per_second']:.0f} calls/s** with {r['threads']} concurrent callers "
        f"at {r['delay_ms']} ms per call, the best of {len(r['rounds'])} rounds of {r['calls']} onboarding "
        f"calls ({', '.join(_cell(x) for x in r['rounds'])} calls/s)"
    )


def headline(results: list[dict]) -> str:
    """Bulk onboarding: the portal against the 32-thread script, the sequential script and the floor."""
    rows = []
    for r in results:
        if not r["scenario"].startswith("bulk-"):
            continue
        p, t, b = r["portal"], r["threadpool"], r.get("baseline")
        rows.append(
            [
                f"onboard {r['accounts']} accounts",
                _num(p["seconds"], 1),
                _num(t["seconds"], 1),
                _num(b["seconds"], 1) if b else "—",
                _ratio(r["portal_to_threadpool"]),
                _num(r["floor"]["seconds"]),
                _ratio(r["portal_to_floor"]),
                _ratio(r.get("threadpool_to_floor")),
                p["calls_per_account_total"],
                t["calls_per_account_total"],
                p["agent_permission_writes"],
                _workers(p.get("workers")),
                _rss(p.get("workers")),
            ]
        )
    return table(
        [
            "scenario",
            "portal (s)",
            "32-thread script (s)",
            "sequential script (s)",
            "portal / script",
            "floor (s)",
            "portal / floor",
            "script / floor",
            "portal calls/account",
            "script calls/account",
            "agent-account writes",
            "worker processes used",
            "peak worker RSS (MiB)",
        ],
        rows,
    )


def engine_runs_table(results: list[dict]) -> str:
    """Re-apply with nothing changed and audit, per size: time against the floor, calls, writes."""
    rows = []
    for r in results:
        kind = r["scenario"].split("-")[0]
        if kind not in ("reapply", "audit"):
            continue
        label = "re-apply, nothing changed" if kind == "reapply" else "audit"
        writes = r["writes"]
        if kind == "reapply":
            writes = f"{writes} ({'ok' if writes == 0 else 'MUST BE 0'})"
        rows.append(
            [
                f"{label}, {r['accounts']} accounts",
                r["status"],
                _num(r["seconds"], 1),
                _num(r["floor"]["seconds"]),
                _ratio(r["portal_to_floor"]),
                r["calls_per_account_total"],
                writes,
                r["operations"],
                _workers(r.get("workers")),
                _rss(r.get("workers")),
            ]
        )
    return table(
        [
            "run",
            "status",
            "seconds",
            "floor (s)",
            "portal / floor",
            "calls/account",
            "writes",
            "operations",
            "worker processes used",
            "peak worker RSS (MiB)",
        ],
        rows,
    )


def calls_table(results: list[dict], size: int) -> str:
    """AWS calls per account by action, for every run over one batch of `size` accounts."""
    by_name = {r["scenario"]: r for r in results}
    columns: list[tuple[str, dict]] = []
    bulk = by_name.get(f"bulk-{size}")
    if bulk:
        columns.append(("onboard: portal", bulk["portal"]["calls_per_account"]))
        columns.append(("32-thread script", bulk["threadpool"]["calls_per_account"]))
        if bulk.get("baseline"):
            columns.append(("sequential script", bulk["baseline"]["calls_per_account"]))
    for name, label in ((f"reapply-{size}", "re-apply"), (f"audit-{size}", "audit")):
        if name in by_name:
            columns.append((label, by_name[name]["calls_per_account"]))
    actions = sorted({a for _, counts in columns for a in counts})
    rows = [[a] + [counts.get(a, 0) for _, counts in columns] for a in actions]
    rows.append(["total"] + [round(sum(counts.values()), 2) for _, counts in columns])
    if bulk:
        agent = [sum(bulk["portal"]["agent_account_calls"].values())]
        agent.append(sum(bulk["threadpool"]["agent_account_calls"].values()))
        agent += ["—"] * (len(columns) - 2)
        rows.append(["agent account, whole batch", *agent])
    return "\n".join(
        [
            f"AWS calls per account by action, {size} accounts:",
            "",
            table(["action"] + [label for label, _ in columns], rows),
        ]
    )


def _runs(p: dict) -> str:
    runs = p.get("runs", 1)
    return "run" if runs == 1 else f"{runs} runs (one per file)"


def _repeats(portal: dict, script: dict) -> str:
    """Each repeat's seconds, when there were several (the tables show the medians)."""
    if len(portal.get("repeats_seconds", [])) < 2:
        return ""
    return f"medians of {portal['repeats_seconds']} s and {script['repeats_seconds']} s; "


def bulk_detail(r: dict) -> str:
    p, t, b = r["portal"], r["threadpool"], r.get("baseline")
    floor = r["floor"]
    line = (
        f"{r['scenario']}: portal {_runs(p)} {p['status']} in {p['seconds']} s (longest run "
        f"{p['run_seconds']} s), "
        f"{p['operations']} operations, agent lists exactly the accounts: "
        f"{_cell(p['agent_lists_exactly_the_accounts'])}; floor {floor['seconds']} s = max(critical path "
        f"{floor['critical_path_seconds']} s, {r['accounts']} × 4 calls at "
        f"{r['capacity_calls_per_second']:.0f} calls/s = {floor['throughput_seconds']} s); "
        f"{t['threads']}-thread script {t['seconds']} s ({t['total_calls']} calls); "
        f"{_repeats(p, t)}"
        f"before the first account's first call {p.get('start_share', 0):.0%} of the onboarding, "
        f"after the last account's last call {p.get('finish_share', 0):.0%}"
    )
    if b:
        line += f"; sequential script {b['seconds']} s ({b['total_calls']} calls, {r['speedup']}× the portal)"
    if p["status"] != "succeeded":
        line += f"; portal: {p['explanation']}"
    return line


def latency_table(r: dict) -> str:
    t, floor = r["threadpool"], r["floor"]
    rows = [
        [
            f"{row['workers']} × {row['concurrency']}",
            row["portal"]["status"],
            _num(row["portal"]["seconds"], 1),
            _ratio(row["speedup_vs_first"]),
            _ratio(row["portal_to_threadpool"]),
            _ratio(row["portal_to_floor"]),
            row["portal"]["calls_per_account_total"],
            _workers(row["portal"]["workers"]),
            _rss(row["portal"]["workers"]),
        ]
        for row in r["runs"]
    ]
    cap = r["capacity"]
    return "\n".join(
        [
            f"### onboarding {r['accounts']} accounts at {r['delay_ms']} ms per AWS call: "
            f"{t['threads']}-thread script {t['seconds']} s, floor {floor['seconds']} s "
            f"(script / floor {_ratio(r.get('threadpool_to_floor'))}, "
            f"capacity {cap['calls_per_second']:.0f} calls/s with {cap['threads']} callers)",
            "",
            table(
                [
                    "worker processes × children",
                    "status",
                    "portal (s)",
                    "speed-up vs first row",
                    "portal / script",
                    "portal / floor",
                    "calls/account",
                    "worker processes used",
                    "peak worker RSS (MiB)",
                ],
                rows,
            ),
        ]
    )


def done_when_table(checks: list) -> str:
    """Issue 15's Done-when criteria at each size: the measured value and pass / FAIL / not run."""
    sizes = sorted({c.size for c in checks})
    by_label: dict[str, dict[int, Any]] = {}
    for check in checks:
        by_label.setdefault(check.criterion.label, {})[check.size] = check
    rows = []
    for label, per_size in by_label.items():
        row = [label]
        for size in sizes:
            c = per_size[size]
            verdict = "pass" if c.passed else "FAIL"
            row.append("not run" if c.passed is None else f"{_cell(c.value)} {verdict}")
        rows.append(row)
    met = all(c.passed for c in checks)
    verdict = "all met" if met else f"{sum(c.passed is not True for c in checks)} of {len(checks)} not met"
    return "\n".join(
        [
            f"### Done when (issue 15): {verdict}",
            "",
            table(["criterion"] + [f"{s} accounts" for s in sizes], rows),
        ]
    )


def pages_table(r: dict) -> str:
    rows = [
        [label, p["status"], p["queries"], p["p50_ms"], p["p95_ms"], f"{p['bytes'] // 1024} KiB"]
        for label, p in r["pages"].items()
    ]
    return table(
        [
            f"page ({r['accounts']} accounts, {r['repeats']} requests)",
            "status",
            "queries",
            "p50 ms",
            "p95 ms",
            "size",
        ],
        rows,
    )


def served_table(r: dict) -> str:
    rows = []
    for server, label in (("embedded", "gunicorn (make run)"), ("dev_server", "Django dev server (before)")):
        for page, p in (r[server] or {}).items():
            rows.append(
                [
                    f"{page}, {label}",
                    p["requests"],
                    p["failed"],
                    p["p50_ms"],
                    p["p95_ms"],
                    f"**{p['p95_to_target']:.2f}**",
                    p["server_cpu_ms_per_request"],
                    p["throughput_per_s"],
                ]
            )
    heading = (
        f"### served pages: {r['accounts']} accounts, {r['operations']} operations, {r['users']} concurrent "
        f"users (pause {r['think_seconds']} s on average), real HTTP"
    )
    return "\n".join(
        [
            heading,
            "",
            table(
                [
                    "page, server",
                    "requests",
                    "failed",
                    "p50 ms",
                    "p95 ms",
                    f"p95 / {r['target_p95_ms']:.0f} ms target",
                    "server CPU ms/request",
                    "requests/s",
                ],
                rows,
            ),
        ]
    )


def render(meta: dict, results: list[dict], checks: list | None = None) -> str:
    parts = [
        f"Bench ({meta['mode']}): {meta['cpus']} CPUs, {meta['workers']} worker processes × "
        f"{meta['concurrency']}, {meta['database']} database, {meta['broker']} broker, "
        f"{meta['delay_ms']} ms per AWS call, run options {json.dumps(meta.get('options', {}))}, "
        f"total {meta['seconds']:.0f} s",
    ]
    for r in results:
        if r["scenario"].startswith("capacity-"):
            parts += ["", capacity_line(r)]
    if any(r["scenario"].startswith("bulk-") for r in results):
        parts += ["", headline(results)]
    if any(r["scenario"].startswith(("reapply-", "audit-")) for r in results):
        parts += ["", engine_runs_table(results)]
    sizes = [r["accounts"] for r in results if r["scenario"].startswith("bulk-")]
    for size in sizes:
        parts += ["", calls_table(results, size)]
    details = [bulk_detail(r) for r in results if r["scenario"].startswith("bulk-")]
    details += [
        f"{r['scenario']}: {r['explanation']}"
        for r in results
        if r["scenario"].startswith(("reapply-", "audit-")) and r["status"] != "succeeded"
    ]
    if details:
        parts += [""] + [f"- {d}" for d in details]
    for r in results:
        if r["scenario"].startswith("latency-"):
            parts += ["", latency_table(r)]
        elif r["scenario"] == "pages":
            parts += ["", pages_table(r)]
        elif r["scenario"] == "served-pages":
            parts += ["", served_table(r)]
    if checks:
        parts += ["", done_when_table(checks)]
    return "\n".join(parts) + "\n"


def write(folder: Path, meta: dict, results: list[dict], text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for r in results:
        (folder / f"{r['scenario']}.json").write_text(json.dumps({"meta": meta, **r}, indent=2) + "\n")
    (folder / "summary.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    (folder / "summary.md").write_text(text)

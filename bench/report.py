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


def headline(results: list[dict]) -> str:
    rows = []
    for r in results:
        if r["scenario"].startswith("bulk-"):
            p, b = r["portal"], r["baseline"]
            rows.append(
                [
                    f"onboard {r['accounts']} accounts",
                    f"{p['seconds']:.1f}",
                    f"{b['seconds']:.1f}",
                    f"**{r['speedup']:.1f}×**",
                    p["calls_per_account_total"],
                    round(b["total_calls"] / r["accounts"], 2),
                    p["agent_permission_writes"],
                    f"{p['critical_path_floor_seconds']:.2f}",
                ]
            )
    return table(
        [
            "scenario",
            "portal (s)",
            "sequential script (s)",
            "speed-up",
            "portal calls/account",
            "script calls/account",
            "agent-permission writes",
            "critical-path floor (s)",
        ],
        rows,
    )


def bulk_detail(r: dict) -> str:
    p, b = r["portal"], r["baseline"]
    actions = sorted(set(p["calls_per_account"]) | set(b["calls_per_account"]))
    rows = [[a, p["calls_per_account"].get(a, 0), b["calls_per_account"].get(a, 0)] for a in actions]
    rows.append(["agent account, whole batch", sum(p["agent_account_calls"].values()), "—"])
    lines = [
        f"### {r['scenario']}: {r['accounts']} accounts, {r['delay_ms']} ms per AWS call, "
        f"options {json.dumps(r['options'])}",
        "",
        table(["AWS calls per account", "portal", "sequential script"], rows),
        "",
        f"portal run {p['status']} in {p['seconds']} s (run {p['run_seconds']} s), {p['operations']} "
        f"operations, agent lists exactly the accounts: {_cell(p['agent_lists_exactly_the_accounts'])}; "
        f"critical path {p['calls_on_one_path']} calls = {p['critical_path_floor_seconds']} s; "
        f"script {b['seconds']} s ({b['total_calls']} calls, "
        f"AWS-time floor {b['aws_time_floor_seconds']} s); "
        f"before the first account's first call {p.get('start_share', 0):.0%} of the run, "
        f"after the last account's last call {p.get('finish_share', 0):.0%}",
    ]
    return "\n".join(lines)


def reapply_table(r: dict) -> str:
    return table(
        [
            "re-apply, nothing changed",
            "accounts",
            "seconds",
            "status",
            "writes",
            "operations",
            "calls/account",
        ],
        [
            [
                f"reconcile run ({r['agents']} agents)",
                r["accounts"],
                r["seconds"],
                r["status"],
                f"{r['writes']} ({'ok' if r['writes'] == 0 else 'MUST BE 0'})",
                r["operations"],
                round(r["total_calls"] / max(1, r["accounts"]), 2),
            ]
        ],
    )


def audit_table(r: dict) -> str:
    if not r.get("available"):
        return f"audit: not available yet ({r['note']})"
    return table(
        ["audit", "accounts", "seconds", "status", "writes", "calls/account", "one-at-a-time floor (s)"],
        [
            [
                "audit run",
                r["accounts"],
                r["seconds"],
                r["status"],
                r["writes"],
                r["calls_per_account_total"],
                r["sequential_floor_seconds"],
            ]
        ],
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


def render(meta: dict, results: list[dict]) -> str:
    parts = [
        f"Bench ({meta['mode']}): {meta['cpus']} CPUs, {meta['workers']} worker processes × "
        f"{meta['concurrency']}, {meta['database']} database, {meta['broker']} broker, "
        f"{meta['delay_ms']} ms per AWS call, total {meta['seconds']:.0f} s",
    ]
    if any(r["scenario"].startswith("bulk-") for r in results):
        parts += ["", headline(results)]
    for r in results:
        parts.append("")
        if r["scenario"].startswith("bulk-"):
            parts.append(bulk_detail(r))
        elif r["scenario"] == "reapply":
            parts.append(reapply_table(r))
        elif r["scenario"] == "audit":
            parts.append(audit_table(r))
        elif r["scenario"] == "pages":
            parts.append(pages_table(r))
        elif r["scenario"] == "served-pages":
            parts.append(served_table(r))
    return "\n".join(parts) + "\n"


def write(folder: Path, meta: dict, results: list[dict], text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for r in results:
        (folder / f"{r['scenario']}.json").write_text(json.dumps({"meta": meta, **r}, indent=2) + "\n")
    (folder / "summary.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    (folder / "summary.md").write_text(text)

"""Reads for the organization pages: the stored tree with each account's portal status.

A constant number of queries whatever the organization's size: the organization, its latest
snapshot, the portal's rows for the snapshot's accounts, those that left, its rules and its runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count
from django.http import Http404

from accounts.choices import Lifecycle, OrgAccountStatus
from accounts.models import EcrAccount, Organization

from . import org_services
from . import organizations as orgs
from .choices import RunKind
from .models import Run

MAX_DEPTH_CLASS = 8  # the CSS indents this many levels (deeper ones stay at the last)


@dataclass
class TreeRow:
    """One line of the organization page's tree: a root, an OU or an account."""

    kind: str  # "root", "ou" or "account"
    depth: int
    id: str
    name: str
    node: dict[str, Any] = field(default_factory=dict)
    status: str = ""
    account: EcrAccount | None = None

    @property
    def depth_class(self) -> str:
        return f"depth-{min(self.depth, MAX_DEPTH_CLASS)}"

    @property
    def status_label(self) -> str:
        return OrgAccountStatus(self.status).label if self.status else ""


def _rows(tree: dict[str, Any], portal: dict[str, EcrAccount]) -> list[TreeRow]:
    units_of: dict[str, list[dict[str, Any]]] = {}
    for unit in tree.get("units", []):
        units_of.setdefault(unit["parent_id"], []).append(unit)
    accounts_of: dict[str, list[dict[str, Any]]] = {}
    for account in tree.get("accounts", []):
        accounts_of.setdefault(account["parent_id"], []).append(account)
    rows: list[TreeRow] = []

    def walk(parent_id: str, depth: int) -> None:
        for node in sorted(accounts_of.get(parent_id, []), key=lambda a: (a["name"], a["id"])):
            account = portal.get(node["id"])
            rows.append(
                TreeRow(
                    "account",
                    depth,
                    node["id"],
                    node["name"],
                    node,
                    orgs.portal_status(node, account),
                    account,
                )
            )
        for unit in sorted(units_of.get(parent_id, []), key=lambda u: u["name"]):
            rows.append(TreeRow("ou", depth, unit["id"], unit["name"], unit))
            walk(unit["id"], depth + 1)

    for root in tree.get("roots", []):
        rows.append(TreeRow("root", 0, root["id"], root["name"], root))
        walk(root["id"], 1)
    return rows


def organization_list() -> list[Organization]:
    return list(Organization.objects.annotate(rule_count=Count("rules")).order_by("name"))


def organization_get(name: str) -> Organization:
    organization = Organization.objects.filter(name=name).first()
    if organization is None:
        raise Http404("No such organization.")
    return organization


def organization_detail(name: str) -> dict[str, Any]:
    organization = organization_get(name)
    snapshot = orgs.latest_snapshot(organization)
    tree = snapshot.tree if snapshot else {}
    ids = [a["id"] for a in tree.get("accounts", [])]
    portal = {a.account_id: a for a in EcrAccount.objects.filter(account_id__in=ids)}
    left = list(organization.accounts.exclude(account_id__in=ids).exclude(status=Lifecycle.REMOVED))
    runs = list(
        Run.objects.filter(
            kind__in=(RunKind.ORG_DISCOVER, RunKind.ORG_SYNC), options__organization=organization.pk
        ).order_by("-created_at", "-pk")[:10]
    )
    rows = _rows(tree, portal)
    counts: dict[str, int] = {}
    for row in rows:
        if row.status:
            counts[row.status] = counts.get(row.status, 0) + 1
    return {
        "organization": organization,
        "snapshot": snapshot,
        "rows": rows,
        "left": left,
        "counts": [(OrgAccountStatus(s).label, s, n) for s, n in sorted(counts.items())],
        "rules": list(organization.rules.select_related("agent").order_by("position")),
        "runs": runs,
        "pending": org_services.pending_change(organization),
        "latest_sync": next((r for r in runs if r.kind == RunKind.ORG_SYNC), None),
    }

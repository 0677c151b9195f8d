"""Organizations: read the whole tree (discovery), decide per account what a sync does, build its scope.

Discovery makes read-only calls through aws.Organizations (the management role, its ExternalId and
the WrongAccount guard as for any account) and stores what it read as an OrganizationSnapshot.
`decide()` is pure: the stored (or just read) tree, the rules in order and the inventory give each
account one decision. `sync_scope()` turns the decisions into the accounts a sync onboards (unsaved
rows built and checked exactly as a bulk file's) and offboards (only accounts a sync onboarded).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError

from accounts import organizations as org_rules
from accounts import validators as v
from accounts.choices import Lifecycle, OnLeave, OrgAccountStatus
from accounts.models import AgentIdentity, EcrAccount, OnboardingRule, Organization, OrganizationSnapshot
from portal.text import counted

from . import aws, bulkfile
from .bulkfile import BulkRow

ACTIVE = org_rules.ACTIVE_STATE
# Organizations account states that mean "gone or going": suspended, closing, closed.
ENDED_STATES = ("SUSPENDED", "PENDING_CLOSURE", "CLOSED")

# What a sync does with one account.
ONBOARD, OFFBOARD, KEEP, SKIP = "onboard", "offboard", "keep", "skip"


def access_of(organization: Organization) -> aws.Access:
    return aws.Access(
        organization.account_id, organization.management_role_arn, organization.management_external_id
    )


# --- discovery ------------------------------------------------------------------------------------


def _walk(
    orgs: aws.Organizations, organization_id: str, roots: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, str], dict[str, str]]:
    """Every OU under the roots with its path, each account's parent, and each parent's path."""
    units: list[dict[str, Any]] = []
    parent_of: dict[str, str] = {}
    paths: dict[str, str] = {}
    queue = [(root["Id"], f"{organization_id}/{root['Id']}/") for root in roots]
    while queue:
        parent_id, path = queue.pop(0)
        paths[parent_id] = path
        for account_id in orgs.list_child_accounts(parent_id):
            parent_of[account_id] = parent_id
        for unit in orgs.list_units(parent_id):
            unit_path = f"{path}{unit['Id']}/"
            units.append(
                {"id": unit["Id"], "name": unit.get("Name", ""), "parent_id": parent_id, "path": unit_path}
            )
            queue.append((unit["Id"], unit_path))
    return units, parent_of, paths


def read_tree(organization: Organization) -> dict[str, Any]:
    """The organization as it is now: roots, OUs (with paths), every account (state, parent, tags).

    Paths are built by the walk in AWS's `Paths` format (`o-…/r-…/ou-…/<account>/`): moto's
    accounts carry no `Paths`. `State` is read (Organizations retires `Status`), `Status` only when
    an older answer has no `State`.
    """
    orgs = aws.Organizations(access_of(organization))
    described = orgs.describe_organization()
    organization_id = described["Id"]
    roots = orgs.list_roots()
    units, parent_of, paths = _walk(orgs, organization_id, roots)
    accounts = []
    for account in orgs.list_accounts():
        account_id = account["Id"]
        parent = parent_of.get(account_id, "")
        accounts.append(
            {
                "id": account_id,
                "name": account.get("Name", ""),
                "email": account.get("Email", ""),
                "state": account.get("State") or account.get("Status", ""),
                "parent_id": parent,
                "path": f"{paths.get(parent, organization_id + '/')}{account_id}/",
                "tags": orgs.list_tags(account_id),
            }
        )
    return {
        "organization_id": organization_id,
        "management_account_id": described.get("MasterAccountId", ""),
        "roots": [{"id": r["Id"], "name": r.get("Name", "Root")} for r in roots],
        "units": units,
        "accounts": sorted(accounts, key=lambda a: a["id"]),
    }


def store_snapshot(
    organization: Organization, tree: dict[str, Any], run_id: int | None
) -> OrganizationSnapshot:
    if tree["organization_id"] != organization.organization_id:
        Organization.objects.filter(pk=organization.pk).update(organization_id=tree["organization_id"])
        organization.organization_id = tree["organization_id"]
    return OrganizationSnapshot.objects.create(organization=organization, run_id=run_id, tree=tree)


def latest_snapshot(organization: Organization) -> OrganizationSnapshot | None:
    return organization.snapshots.order_by("-taken_at", "-pk").first()


# --- decisions ------------------------------------------------------------------------------------


@dataclass
class Decision:
    """What a sync does with one account, and why (shown per account by the dry run and the run)."""

    account_id: str
    action: str
    reason: str
    rule: int | None = None  # the rule's position
    name: str = ""  # the account's name in the organization

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.action, "reason": self.reason, "rule": self.rule, "name": self.name}


@dataclass
class SyncPlan:
    """Every account's decision; the rows to onboard (per agent) and the accounts to offboard."""

    decisions: dict[str, Decision] = field(default_factory=dict)
    onboard: dict[int, list[BulkRow]] = field(default_factory=dict)  # by agent pk
    agents: dict[int, AgentIdentity] = field(default_factory=dict)
    offboard: list[EcrAccount] = field(default_factory=list)
    # Held (auto-apply off): what would be onboarded and offboarded, waiting for an operator.
    pending: dict[str, list[str]] = field(default_factory=dict)

    def hold(self) -> None:
        """Decide only: the accounts to onboard and offboard wait for a confirmed preview."""
        if self.onboard or self.offboard:
            self.pending = {"onboard": self.onboard_ids, "offboard": self.offboard_ids}
        for account_id in (*self.pending.get("onboard", []), *self.pending.get("offboard", [])):
            decision = self.decisions[account_id]
            decision.reason += " (waits for an operator to confirm)"
        self.onboard, self.offboard = {}, []

    def summary(self) -> str:
        counts = dict.fromkeys((ONBOARD, OFFBOARD, KEEP, SKIP), 0)
        for decision in self.decisions.values():
            counts[decision.action] += 1
        text = (
            f"{counted(len(self.decisions), 'account', 'accounts')}: {counts[ONBOARD]} to onboard, "
            f"{counts[OFFBOARD]} to offboard, {counts[KEEP]} kept, {counts[SKIP]} left alone."
        )
        if self.pending:
            text += " Auto-apply is off: the changes wait for an operator to confirm them."
        elif not (counts[ONBOARD] or counts[OFFBOARD]):
            text += " Nothing to change."
        return text

    @property
    def onboard_ids(self) -> list[str]:
        return sorted(row.account.account_id for rows in self.onboard.values() for row in rows)

    @property
    def offboard_ids(self) -> list[str]:
        return sorted(a.account_id for a in self.offboard)

    def pins(self) -> dict[str, Any]:
        """What a confirmation of this plan pins: the accounts, and the ExternalIds it generated."""
        return {
            "onboard": self.onboard_ids,
            "offboard": self.offboard_ids,
            "external_ids": {
                row.account.account_id: row.external_id.value
                for rows in self.onboard.values()
                for row in rows
            },
        }

    def decisions_dict(self) -> dict[str, dict[str, Any]]:
        return {k: d.as_dict() for k, d in sorted(self.decisions.items())}


def _rules_of(organization: Organization) -> list[OnboardingRule]:
    return list(organization.rules.select_related("agent").order_by("position", "pk"))


def _leaving(account: EcrAccount, why: str) -> Decision:
    rule = account.onboarding_rule
    if rule is None or rule.on_leave == OnLeave.KEEP:
        kept = "kept (its rule says keep)" if rule is not None else "kept (its rule was deleted)"
        return Decision(account.account_id, KEEP, f"{why}: {kept}", rule.position if rule else None)
    return Decision(
        account.account_id, OFFBOARD, f"{why}: offboarded per rule {rule.position}", rule.position
    )


def _decide_managed(
    account: EcrAccount, node: dict[str, Any], match: org_rules.Match, organization: Organization
) -> Decision:
    """An organization account the portal already has."""
    if account.organization_id != organization.pk:
        return Decision(account.account_id, SKIP, "in the portal, not onboarded by this organization's sync")
    if account.status == Lifecycle.REMOVED:
        return Decision(account.account_id, SKIP, "offboarded earlier: onboard it again by hand")
    if node["state"] != ACTIVE:
        return _leaving(account, f"{node['state'].lower()}")
    if match.rule is None:
        return _leaving(account, f"stopped matching ({match.reason})")
    return Decision(
        account.account_id, KEEP, f"in the portal ({account.status}), {match.reason}", match.rule.position
    )


def decide(
    organization: Organization, tree: dict[str, Any]
) -> tuple[dict[str, Decision], dict[str, OnboardingRule]]:
    """(each account's decision, the rule each new account is onboarded by). Pure but for two queries."""
    rules = _rules_of(organization)
    units = {u["id"]: u for u in tree.get("units", [])}
    ids = [a["id"] for a in tree.get("accounts", [])]
    portal = {
        a.account_id: a
        for a in EcrAccount.objects.select_related("onboarding_rule").filter(account_id__in=ids)
    }
    decisions: dict[str, Decision] = {}
    onboarding: dict[str, OnboardingRule] = {}
    for node in tree.get("accounts", []):
        account_id = node["id"]
        match = org_rules.first_match(rules, node, units)
        if account_id in portal:
            decisions[account_id] = _decide_managed(portal[account_id], node, match, organization)
        elif node["state"] != ACTIVE:
            decisions[account_id] = Decision(account_id, SKIP, f"not ACTIVE ({node['state']})")
        elif match.rule is None:
            decisions[account_id] = Decision(account_id, SKIP, match.reason)
        else:
            decisions[account_id] = Decision(account_id, ONBOARD, match.reason, match.rule.position)
            onboarding[account_id] = match.rule
        decisions[account_id].name = node.get("name", "")
    gone = (
        organization.accounts.select_related("onboarding_rule")
        .exclude(status=Lifecycle.REMOVED)
        .exclude(account_id__in=ids)
    )
    for account in gone:
        decisions[account.account_id] = _leaving(account, "left the organization")
        decisions[account.account_id].name = account.alias
    return decisions, onboarding


# --- the sync's rows --------------------------------------------------------------------------------


def _raw_row(node: dict[str, Any], rule: OnboardingRule) -> dict[str, Any]:
    first = org_rules.broker_urls(rule, node["id"], rule.regions[0])
    alias = str(node.get("name", ""))[:100]
    return {
        "account_id": node["id"],
        "alias": "" if v.starts_like_formula(alias) or v.has_surrounding_whitespace(alias) else alias,
        "regions": list(rule.regions),
        "management_role_arn": org_rules.member_role_arn(rule, node["id"]),
        **first,
    }


def _rows_for(
    agent: AgentIdentity, raw: list[tuple[int, dict[str, Any]]]
) -> tuple[list[BulkRow], dict[str, str]]:
    """The rows a bulk file of these accounts would make; the accounts refused, with why."""
    report = bulkfile.validate(agent, raw)
    refused = {p.account_id: f"{p.field}: {p.message}" for p in report.problems if p.account_id}
    if report.problems and not refused:  # a problem of the whole lot (the agent's quota): all refused
        return [], {values["account_id"]: str(report.problems[0]) for _, values in raw}
    if refused:
        report = bulkfile.validate(agent, [r for r in raw if r[1]["account_id"] not in refused])
    return report.rows, refused


def _brokers_per_region(row: BulkRow, rule: OnboardingRule) -> None:
    """A bulk row has one URL for all its brokers; a rule's templates may name the region."""
    for broker in row.brokers:
        urls = org_rules.broker_urls(rule, row.account.account_id, broker.region)
        broker.broker_client_url, broker.cr_agent_url = urls["broker_client_url"], urls["cr_agent_url"]
        broker.full_clean(exclude=["account"])
    row.account.organization = rule.organization
    row.account.onboarding_rule = rule


def sync_plan(
    organization: Organization, tree: dict[str, Any], *, pinned: dict[str, Any] | None = None
) -> SyncPlan:
    """The decisions and the rows they make. `pinned` (a confirmed preview's account ids) limits the
    sync to those accounts: an organization that changed since makes it do less, never more."""
    decisions, onboarding = decide(organization, tree)
    plan = SyncPlan(decisions=decisions)
    nodes = {a["id"]: a for a in tree.get("accounts", [])}
    by_agent: dict[int, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for number, (account_id, rule) in enumerate(sorted(onboarding.items()), start=1):
        if pinned is not None and account_id not in pinned.get("onboard", []):
            decisions[account_id] = Decision(
                account_id, SKIP, "not in the confirmed plan", rule.position, decisions[account_id].name
            )
            continue
        raw = _raw_row(nodes[account_id], rule)
        # A confirmed preview's generated ExternalId is the one the run writes.
        raw["external_id"] = (pinned or {}).get("external_ids", {}).get(account_id, "")
        by_agent[rule.agent_id].append((number, raw))
        plan.agents[rule.agent_id] = rule.agent
    for agent_id, agent_rows in by_agent.items():
        rows, refused = _rows_for(plan.agents[agent_id], agent_rows)
        for account_id, why in refused.items():
            decisions[account_id] = Decision(
                account_id,
                SKIP,
                f"cannot be onboarded: {why}",
                onboarding[account_id].position,
                decisions[account_id].name,
            )
        for row in rows:
            _brokers_per_region(row, onboarding[row.account.account_id])
        if rows:
            plan.onboard[agent_id] = rows
    leaving = [d.account_id for d in decisions.values() if d.action == OFFBOARD]
    if pinned is not None:
        leaving = [a for a in leaving if a in pinned.get("offboard", [])]
    plan.offboard = list(
        EcrAccount.objects.select_related("agent")
        .prefetch_related("brokers", "external_ids")
        .filter(account_id__in=leaving)
    )
    return plan


# --- the organization page's statuses ---------------------------------------------------------------


def portal_status(node: dict[str, Any], account: EcrAccount | None) -> str:
    """An organization account's status as the organization page shows it."""
    if node.get("state") in ENDED_STATES:
        return OrgAccountStatus.SUSPENDED
    if account is None:
        return OrgAccountStatus.NOT_MANAGED
    if account.status == Lifecycle.ACTIVE and account.drifted:
        return OrgAccountStatus.DRIFTED
    return {
        Lifecycle.DRAFT: OrgAccountStatus.DRAFT,
        Lifecycle.PENDING: OrgAccountStatus.PENDING,
        Lifecycle.ACTIVE: OrgAccountStatus.ACTIVE,
        Lifecycle.FAILED: OrgAccountStatus.FAILED,
        Lifecycle.REMOVED: OrgAccountStatus.REMOVED,
    }[Lifecycle(account.status)]


def check_organization(organization: Organization) -> None:
    """Refuse (ValidationError) an organization that cannot be synced: no rule to apply."""
    if not organization.rules.exists():
        raise ValidationError(
            {"rules": f"Organization {organization.name} has no onboarding rule (see org_rule_add)."}
        )


def tree_lines(tree: dict[str, Any]) -> list[str]:
    """The tree as indented text (org_discover): each root, its OUs and their accounts."""
    children: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for unit in tree.get("units", []):
        children[unit["parent_id"]].append(unit)
    accounts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for account in tree.get("accounts", []):
        accounts[account["parent_id"]].append(account)
    lines: list[str] = [f"Organization {tree.get('organization_id', '')}"]

    def walk(parent_id: str, depth: int) -> None:
        for account in accounts.get(parent_id, []):
            lines.append(
                f"{'  ' * depth}{account['id']} {account['name']} <{account['email']}> {account['state']}"
            )
        for unit in sorted(children.get(parent_id, []), key=lambda u: u["name"]):
            lines.append(f"{'  ' * depth}OU {unit['name']} ({unit['id']})")
            walk(unit["id"], depth + 1)

    for root in tree.get("roots", []):
        lines.append(f"  Root {root['name']} ({root['id']})")
        walk(root["id"], 2)
    return lines

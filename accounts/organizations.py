"""Organizations in the inventory: connecting one, its onboarding rules, and which rule an account matches.

Nothing here talks to AWS: discovery (provisioning/organizations.py) reads the tree and stores it as
an OrganizationSnapshot; the rules below are evaluated on that stored tree, so a dry run and a sync
decide the same way. Rules apply in order and the first that matches an account decides.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max

from portal import audit
from portal.audit import Actor

from . import validators as v
from .choices import DEFAULT_MEMBER_ROLE_NAME, Lifecycle, OnLeave
from .models import AgentIdentity, OnboardingRule, Organization

ACTIVE_STATE = "ACTIVE"  # the only Organizations account State whose accounts are onboarded


def organization_build(
    *,
    name: str,
    account_id: str,
    management_role_arn: str = "",
    management_external_id: str = "",
    auto_apply: bool = False,
) -> Organization:
    organization = Organization(
        name=name,
        account_id=account_id,
        management_role_arn=management_role_arn,
        management_external_id=management_external_id,
        auto_apply=auto_apply,
    )
    organization.full_clean()
    return organization


def organization_create(*, user: Actor = None, **fields: Any) -> Organization:
    organization = organization_build(**fields)
    organization.save()
    audit.record(
        user=user, action="organization.create", obj=organization, account_id=organization.account_id
    )
    return organization


def _ids(
    values: Sequence[str], check: Callable[[str], None], field: str, errors: dict[str, list[str]]
) -> list[str]:
    out = list(dict.fromkeys(values))
    for value in out:
        try:
            check(value)
        except ValidationError as exc:
            errors.setdefault(field, []).extend(f"{value!r}: {m}" for m in exc.messages)
    return out


def _check_regions(regions: list[str], errors: dict[str, list[str]]) -> list[str]:
    regions = list(dict.fromkeys(regions))
    if not regions:
        errors.setdefault("regions", []).append("Choose at least one region.")
    for region in regions:
        try:
            v.validate_region(region)
        except ValidationError as exc:
            errors.setdefault("regions", []).extend(exc.messages)
    return regions


def _check_tag(tag: str, errors: dict[str, list[str]]) -> tuple[str, str]:
    if not tag:
        return "", ""
    key, sep, value = tag.partition("=")
    if not sep:
        errors.setdefault("tag", []).append("Write the tag as KEY=VALUE.")
        return "", ""
    try:
        v.validate_tag(key, value)
    except ValidationError as exc:
        errors.setdefault("tag", []).extend(exc.messages)
    return key, value


def _check_templates(rule: OnboardingRule, errors: dict[str, list[str]]) -> None:
    for field in ("broker_client_url_template", "cr_agent_url_template"):
        template = getattr(rule, field)
        if not template:
            continue
        try:
            v.validate_url_template(template, rule.regions)
        except ValidationError as exc:
            errors.setdefault(field, []).extend(exc.messages)


def rule_build(
    *,
    organization: Organization,
    agent: AgentIdentity | None,
    regions: Sequence[str],
    ou_ids: Sequence[str] = (),
    include_children: bool = False,
    account_ids: Sequence[str] = (),
    name_glob: str = "",
    email_glob: str = "",
    tag: str = "",
    exclude: Sequence[str] = (),
    member_role_name: str = "",
    broker_client_url_template: str = "",
    cr_agent_url_template: str = "",
    on_leave: str = OnLeave.OFFBOARD,
) -> OnboardingRule:
    """An unsaved, validated rule (placed after the organization's last). Errors name the fields."""
    errors: dict[str, list[str]] = {}
    if agent is None or agent.status == Lifecycle.REMOVED:
        errors["agent"] = ["No such agent (see agent_add)." if agent is None else "The agent is removed."]
    tag_key, tag_value = _check_tag(tag, errors)
    rule = OnboardingRule(
        organization=organization,
        position=(organization.rules.aggregate(m=Max("position"))["m"] or 0) + 1 if organization.pk else 1,
        agent=agent,
        regions=_check_regions(list(regions), errors),
        ou_ids=_ids(list(ou_ids), v.validate_ou_or_root_id, "ou_ids", errors),
        include_children=include_children,
        account_ids=_ids(list(account_ids), v.validate_account_id, "account_ids", errors),
        name_glob=name_glob,
        email_glob=email_glob,
        tag_key=tag_key,
        tag_value=tag_value,
        exclude=_ids(list(exclude), v.validate_account_id, "exclude", errors),
        member_role_name=member_role_name or DEFAULT_MEMBER_ROLE_NAME,
        broker_client_url_template=broker_client_url_template,
        cr_agent_url_template=cr_agent_url_template,
        on_leave=on_leave,
    )
    if not (rule.ou_ids or rule.account_ids or name_glob or email_glob or tag_key):
        errors.setdefault("__all__", []).append(
            "Give at least one matcher (an OU, account ids, a name or e-mail pattern, or a tag)."
        )
    if include_children and not rule.ou_ids:
        errors.setdefault("include_children", []).append("Only with an OU to include the children of.")
    _check_templates(rule, errors)
    try:
        rule.full_clean(exclude=["agent", "regions", "ou_ids", "account_ids", "exclude", "position"])
    except ValidationError as exc:
        for field, messages in exc.message_dict.items():
            errors.setdefault(field, []).extend(messages)
    if errors:
        raise ValidationError(errors)
    return rule


@transaction.atomic
def rule_create(*, user: Actor = None, **fields: Any) -> OnboardingRule:
    rule = rule_build(**fields)
    rule.save()
    audit.record(user=user, action="organization.rule.create", obj=rule.organization, position=rule.position)
    return rule


# --- matching (pure: on a snapshot's tree) --------------------------------------------------------


@dataclass(frozen=True)
class Match:
    """Which rule (if any) decides an account, and why."""

    rule: OnboardingRule | None
    reason: str


def _in_units(rule: OnboardingRule, account: dict[str, Any], units: dict[str, dict[str, Any]]) -> bool:
    parent = account.get("parent_id", "")
    if parent in rule.ou_ids:
        return True
    if not rule.include_children:
        return False
    # Walk up from the account's parent: an ancestor among the rule's OUs includes it.
    seen: set[str] = set()
    while parent in units and parent not in seen:
        seen.add(parent)
        parent = units[parent].get("parent_id", "")
        if parent in rule.ou_ids:
            return True
    return False


def rule_matches(rule: OnboardingRule, account: dict[str, Any], units: dict[str, dict[str, Any]]) -> bool:
    """Every matcher the rule gives holds for the account (globs compared case-insensitively)."""
    checks = []
    if rule.ou_ids:
        checks.append(_in_units(rule, account, units))
    if rule.account_ids:
        checks.append(account["id"] in rule.account_ids)
    if rule.name_glob:
        checks.append(fnmatch.fnmatchcase(str(account.get("name", "")).lower(), rule.name_glob.lower()))
    if rule.email_glob:
        checks.append(fnmatch.fnmatchcase(str(account.get("email", "")).lower(), rule.email_glob.lower()))
    if rule.tag_key:
        checks.append((account.get("tags") or {}).get(rule.tag_key) == rule.tag_value)
    return bool(checks) and all(checks)


def first_match(
    rules: list[OnboardingRule], account: dict[str, Any], units: dict[str, dict[str, Any]]
) -> Match:
    """The first rule, in order, that matches the account; an exclusion of a rule skips that rule."""
    for rule in rules:
        if account["id"] in rule.exclude:
            if rule_matches(rule, account, units):
                return Match(None, f"excluded by rule {rule.position}")
            continue
        if rule_matches(rule, account, units):
            return Match(rule, f"rule {rule.position}")
    return Match(None, "no rule matches")


def member_role_arn(rule: OnboardingRule, account_id: str) -> str:
    return f"arn:aws:iam::{account_id}:role/{rule.member_role_name}"


def broker_urls(rule: OnboardingRule, account_id: str, region: str) -> dict[str, str]:
    return {
        "broker_client_url": v.render_template(
            rule.broker_client_url_template, account_id=account_id, region=region
        ),
        "cr_agent_url": v.render_template(rule.cr_agent_url_template, account_id=account_id, region=region),
    }


def describe_rule(rule: OnboardingRule) -> str:
    """One line: what the rule matches and what it does."""
    matchers = []
    if rule.ou_ids:
        matchers.append(f"in {', '.join(rule.ou_ids)}" + (" or below" if rule.include_children else ""))
    if rule.account_ids:
        matchers.append(f"account {', '.join(rule.account_ids)}")
    if rule.name_glob:
        matchers.append(f"named {rule.name_glob}")
    if rule.email_glob:
        matchers.append(f"e-mail {rule.email_glob}")
    if rule.tag_key:
        matchers.append(f"tagged {rule.tag_key}={rule.tag_value}")
    text = " and ".join(matchers)
    if rule.exclude:
        text += f", except {', '.join(rule.exclude)}"
    return (
        f"accounts {text} -> agent {rule.agent.name}, {', '.join(rule.regions)}, through role "
        f"{rule.member_role_name}; when they leave: {rule.get_on_leave_display().lower()}"
    )

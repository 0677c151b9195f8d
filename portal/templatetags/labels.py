"""Human labels for the values pages show that are not a model field's choices (those are shown
with `get_FOO_display`): derived states, layouts and roles, all in this one mapping."""

from __future__ import annotations

from django import template

from accounts.choices import ExternalIdState
from portal.roles import ROLE_LABELS
from provisioning.choices import AUDIT_STATE_LABELS, Severity
from provisioning.policies import LAYOUT_LABELS

register = template.Library()

LABELS: dict[str, dict[str, str]] = {
    "audit_state": AUDIT_STATE_LABELS,  # a snapshot's status, or "not audited yet" without one
    "severity": dict(Severity.choices),  # findings are stored as dicts in snapshots and run results
    # An ExternalId the live trust lists that the inventory does not know.
    "external_id_state": {**dict(ExternalIdState.choices), "unknown": "Unknown to the portal"},
    "layout": LAYOUT_LABELS,
    "role": ROLE_LABELS,
}


@register.filter
def label(value: str | None, kind: str) -> str:
    """`{{ row.status|label:"audit_state" }}`: the label of a value of that kind, the value itself if
    it has none (an unknown kind is a template bug: KeyError)."""
    if value is None:
        return ""
    return LABELS[kind].get(value, value)

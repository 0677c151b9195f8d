"""What a plan is made of: Change (one AWS write, with its before/after documents) and Plan.

Pure data: built by compare.py, shown by the pages and `--plan`, applied in order by applier.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import aws, snyk

MANAGED_TAG = {"Key": "managed-by", "Value": "ecr-broker-portal"}


@dataclass
class Change:
    account_id: str  # the AWS account the call is made in
    access: aws.Access
    kind: str  # create | update | attach | detach | delete | adopt
    action: str  # "iam:CreateRole"
    method: str  # boto3 method name
    params: dict[str, Any]
    arn: str
    summary: str
    before: Any = None
    after: Any = None
    adopts: str = ""  # "role" / "policy": mark the account's resource as adopted on success
    # The agent's permission documents list every account of the agent, so other people's runs change
    # them between a preview and its confirmation; the engine rebuilds them from the inventory anyway.
    shared: bool = False
    # A write whose answer the step needs (a new access key): kept in memory, never stored or shown.
    keeps_answer: bool = False
    answer: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    region: str = ""  # a regional service's (EKS) region; IAM is global

    def to_dict(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "kind": self.kind,
            "action": self.action,
            "arn": self.arn,
            "summary": self.summary,
            "before": self.before,
            "after": self.after,
        }


@dataclass
class SnykChange(Change):
    """One Snyk API write, a change of the same plans (made by the applier through snyk.py).

    `path` may name what an earlier change of the same plan creates, as `{name}`: `refs[name]` is
    that change, and its answer's id fills the path when this one is made (an integration of a
    connection created just before). `on_done` records what Snyk made (ids, a client secret shown
    once) in the inventory right after the call, so a later failure loses none of it.
    """

    tenant: snyk.SnykAccess | None = None
    http: str = ""
    path: str = ""
    version: str = ""
    body: dict[str, Any] | None = None
    v1: bool = False
    refs: dict[str, SnykChange] = field(default_factory=dict, repr=False, compare=False)
    on_done: Callable[[snyk.SnykResponse], None] | None = field(default=None, repr=False, compare=False)

    @property
    def answer_id(self) -> str:
        data = (self.answer or {}).get("data")
        return (
            str((data or {}).get("id", ""))
            if isinstance(data, dict)
            else str((self.answer or {}).get("id", ""))
        )

    def resolved_path(self) -> str:
        return (
            self.path.format_map({name: ref.answer_id for name, ref in self.refs.items()})
            if self.refs
            else self.path
        )


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)  # resources taken over as they are
    layout: str = ""
    reads: int = 0
    about_agent: bool = False  # an agent page's plan: its confirmation pins the shared documents too

    def extend(self, other: Plan) -> Plan:
        self.changes.extend(other.changes)
        self.notes.extend(other.notes)
        self.adopted.extend(other.adopted)
        self.layout = other.layout or self.layout
        self.about_agent = self.about_agent or other.about_agent
        return self

    @property
    def is_empty(self) -> bool:
        return not self.changes

    def to_dict(self) -> dict[str, Any]:
        return {
            "changes": [c.to_dict() for c in self.changes],
            "notes": list(self.notes),
            "adopted": list(self.adopted),
            "layout": self.layout,
        }

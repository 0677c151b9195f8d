"""What the comparisons share: the desired state of an account, tags, and the plan builder."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import aws, policies
from ..changes import MANAGED_TAG, Change, Plan

if TYPE_CHECKING:
    from accounts.models import AgentIdentity, EcrAccount


@dataclass(frozen=True)
class AccountWanted:
    """What an account's resources should be: trusting these ExternalIds, or gone."""

    external_ids: list[str] = field(default_factory=list)
    remove: bool = False
    delete_adopted: bool = False  # removal: also what the portal adopted (the operator confirmed)


def tagged(resource: dict[str, Any] | None) -> bool:
    tags = (resource or {}).get("Tags") or []
    return any(t.get("Key") == MANAGED_TAG["Key"] for t in tags)


def access_of(identity: EcrAccount | AgentIdentity) -> aws.Access:
    return aws.Access(identity.account_id, identity.management_role_arn, identity.management_external_id)


def managed_arn(agent: AgentIdentity, name: str) -> str:
    return f"arn:aws:iam::{agent.account_id}:policy/{name}"


def managed_policy_pattern(agent: AgentIdentity) -> re.Pattern[str]:
    """ARNs of the agent's own managed policies (`<policy name>-<n>`)."""
    return re.compile(rf"^arn:aws[\w-]*:iam::{agent.account_id}:policy/{re.escape(agent.policy_name)}-\d+$")


class ChangeList:
    """Appends Changes in one account to a plan (keeps every call site to one line per field)."""

    def __init__(self, plan: Plan, identity: EcrAccount | AgentIdentity):
        self.plan, self.account_id, self.access = plan, identity.account_id, access_of(identity)

    def add(
        self,
        kind: str,
        action: str,
        arn: str,
        summary: str,
        *,
        before: Any = None,
        after: Any = None,
        adopts: str = "",
        region: str = "",
        **params: Any,
    ) -> None:
        method = _method_of(action)
        self.plan.changes.append(
            Change(
                self.account_id,
                self.access,
                kind,
                action,
                method,
                params,
                arn,
                summary,
                before,
                after,
                adopts,
                region=region,
            )
        )

    def new_version(self, arn: str, versions: list[dict[str, Any]], before: Any, after: Any) -> None:
        """A managed policy's content changes by a new default version; IAM keeps at most 5."""
        if len(versions) >= policies.MAX_POLICY_VERSIONS:
            oldest = min((v for v in versions if not v["IsDefaultVersion"]), key=lambda v: v["CreateDate"])
            self.add(
                "delete",
                "iam:DeletePolicyVersion",
                arn,
                f"Delete the oldest version {oldest['VersionId']} (IAM keeps 5)",
                PolicyArn=arn,
                VersionId=oldest["VersionId"],
            )
        self.add(
            "update",
            "iam:CreatePolicyVersion",
            arn,
            f"New default version of {arn.rsplit('/', 1)[-1]}",
            before=before,
            after=after,
            PolicyArn=arn,
            PolicyDocument=after,
            SetAsDefault=True,
        )

    def delete_policy(
        self, arn: str, versions: list[dict[str, Any]], summary: str, version_label: str
    ) -> None:
        """A managed policy goes: its older versions first (IAM refuses otherwise)."""
        for version in versions:
            if not version["IsDefaultVersion"]:
                self.add(
                    "delete",
                    "iam:DeletePolicyVersion",
                    arn,
                    f"Delete version {version['VersionId']}{version_label}",
                    PolicyArn=arn,
                    VersionId=version["VersionId"],
                )
        self.add("delete", "iam:DeletePolicy", arn, summary, PolicyArn=arn)


def _method_of(action: str) -> str:
    """boto3's method for "iam:CreatePolicyVersion": create_policy_version (and for acronyms as
    botocore splits them: CreateOpenIDConnectProvider -> create_open_id_connect_provider)."""
    name = action.split(":", 1)[1]
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()

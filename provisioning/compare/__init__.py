"""Pure comparisons: live state (live.py) and desired documents (policies.py) -> the changes to make.

No AWS call and no database query here. Documents compare semantically, so key order, "x" vs ["x"]
and whitespace never cause a write. The order of a plan's changes is the order to apply them.
The predicates `*_needs_*` tell the readers which extra documents a comparison looks at.

- common.py: AccountWanted (what an account should become), tags, ChangeList (builds Changes);
- account.py: an ECR account's policy, service role (its trust) and attachment, or their removal;
- agent.py: the agent's identity and its sts:AssumeRole permissions.
"""

from .account import account_changes, account_needs_inline_names, account_needs_versions
from .agent import (
    access_key_changes,
    agent_identity_changes,
    agent_permission_changes,
    association_cluster,
    grants_everything,
    managed_needs_versions,
    needs_oidc_provider,
    runtime_of,
)
from .common import AccountWanted, access_of, managed_arn, managed_policy_pattern, tagged

__all__ = [
    "AccountWanted",
    "access_key_changes",
    "access_of",
    "account_changes",
    "account_needs_inline_names",
    "account_needs_versions",
    "agent_identity_changes",
    "agent_permission_changes",
    "association_cluster",
    "grants_everything",
    "managed_arn",
    "managed_needs_versions",
    "managed_policy_pattern",
    "needs_oidc_provider",
    "runtime_of",
    "tagged",
]

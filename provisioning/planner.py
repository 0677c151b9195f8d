"""The planner: read what IAM holds (live.py), compare it with the desired documents (compare.py).

Read-only: it never writes to AWS or the database. Every step of every flow plans through these
functions, and the audit compares the same reads with the same functions. One plans without
reading (plan_new_account): an account new to the portal, whose resources a run creates directly,
falling back to plan_account when one exists after all (applier.apply_expecting_absent).
"""

from __future__ import annotations

from accounts.models import AgentIdentity, EcrAccount

from . import compare, live, policies
from .changes import Plan


def plan_account(
    account: EcrAccount, external_ids: list[str], *, remove: bool = False, delete_adopted: bool = False
) -> Plan:
    """One ECR account's policy, role and attachment made to match (or, removing, absent).

    remove=True deletes only what the portal created (tagged, not adopted); resources it adopted
    are deleted only with delete_adopted=True (the operator's explicit confirmation).
    """
    wanted = compare.AccountWanted(list(external_ids), remove=remove, delete_adopted=delete_adopted)
    return compare.account_changes(account, wanted, live.read_account(account, wanted))


def plan_new_account(account: EcrAccount, external_ids: list[str]) -> Plan:
    """What plan_account plans when neither the role nor the policy exists, with no read: the
    policy and the role created (tags in the create calls) and attached."""
    wanted = compare.AccountWanted(list(external_ids))
    return compare.account_changes(account, wanted, live.LiveAccount(role=None, policy=None))


def plan_agent_identity(agent: AgentIdentity) -> Plan:
    return compare.agent_identity_changes(agent, live.read_agent_identity(agent))


def plan_access_key(agent: AgentIdentity) -> Plan:
    return compare.access_key_changes(agent, live.read_access_keys(agent))


def plan_agent_permissions(agent: AgentIdentity, role_arns: dict[str, str]) -> Plan:
    """The agent's sts:AssumeRole permissions for exactly these service roles."""
    desired = policies.agent_permissions(agent.kind, agent.policy_name, role_arns)
    return compare.agent_permission_changes(
        agent, role_arns, desired, live.read_agent_permissions(agent, desired)
    )

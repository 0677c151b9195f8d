"""Flows: every run kind defined once as an ordered list of steps.

- base.py: Scope (what a flow works on), Step, Flow (preview() and execute() walk the same steps),
  Outcomes (each account's result).
- steps.py: the steps (agent identity, agent permissions, an account's resources or their removal,
  many accounts at once, the inventory's statuses, an organization sync's inventory change).
- kinds.py: the flows themselves, and FLOWS, the registry the runner looks a run's kind up in.
"""

from .base import AccountTarget, Flow, RunFailed, Scope
from .kinds import (
    ACCESS_KEY,
    AGENT_SETUP,
    AUDIT,
    BULK,
    FLOWS,
    OFFBOARD,
    ONBOARD,
    ORG_DISCOVER,
    ORG_SYNC,
    RECONCILE,
    sync_scope,
)

__all__ = [
    "ACCESS_KEY",
    "AGENT_SETUP",
    "AUDIT",
    "BULK",
    "FLOWS",
    "OFFBOARD",
    "ONBOARD",
    "ORG_DISCOVER",
    "ORG_SYNC",
    "RECONCILE",
    "AccountTarget",
    "Flow",
    "RunFailed",
    "Scope",
    "sync_scope",
]

"""How a hand-made setup differs from the guide, in plain sentences for the plan (pure functions).

Onboarding an account whose role or policy already exists adopts it: the planner tags it and
makes it match the guide. Each function here compares one live document with the desired one and
names every difference the plan will change (a trust without ExternalId, extra read actions, the
agent's `Resource: "*"`), so nothing that exists is overwritten without the plan saying so. An
empty list means the resource is adopted as it is.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from typing import Any

from portal.text import counted

from . import policies


def _listed(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def statements(document: Any) -> list[dict[str, Any]]:
    if isinstance(document, str):
        document = policies.normalize(document)
    if not isinstance(document, dict):
        return []
    return [s for s in _listed(document.get("Statement")) if isinstance(s, dict)]


def allowed_resources(document: Any) -> set[str]:
    """Every Resource an Allow statement of this policy names ("*" included)."""
    return {
        str(r)
        for st in statements(document)
        if st.get("Effect") == "Allow"
        for r in _listed(st.get("Resource"))
    }


def _names(values: list[str], limit: int = 8) -> str:
    shown = ", ".join(values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def _covers(pattern: str, action: str) -> bool:
    return fnmatch.fnmatchcase(action.lower(), pattern.lower())


# --- the read-only policy -------------------------------------------------------------------------


def read_policy_deviations(live: Any) -> list[str]:
    """What a live AmazonEC2ContainerRegistryReadOnlyForSnyk does differently from the guide's."""
    wanted = list(policies.READ_POLICY_ACTIONS)
    wanted_lower = {a.lower() for a in wanted}
    allowed: list[str] = []
    found: list[str] = []
    for st in statements(live):
        if st.get("Effect") != "Allow":
            found.append(f"a {st.get('Effect', 'unknown')} statement")
            continue
        if "NotAction" in st or "NotResource" in st:
            found.append("a statement using NotAction/NotResource (it grants more than it names)")
        allowed.extend(str(a) for a in _listed(st.get("Action")))
        resources = [str(r) for r in _listed(st.get("Resource"))]
        if resources and resources != ["*"]:
            found.append(
                f"access limited to {_names(resources, 3)} (the guide grants every repository: "
                "the scan would miss the others)"
            )
        if "Condition" in st:
            found.append("a condition on a statement")
    extra = sorted({a for a in allowed if a.lower() not in wanted_lower})
    if extra:
        wide = [a for a in extra if "*" in a or "?" in a]
        text = f"{counted(len(extra), 'action', 'actions')} beyond the guide's 11: {_names(extra)}"
        if wide:
            text += " (wildcards grant every matching action, writes included)"
        found.insert(0, text)
    missing = [a for a in wanted if not any(_covers(p, a) for p in allowed)]
    if missing:
        found.append(f"{len(missing)} of the guide's 11 actions missing: {_names(missing)}")
    return found


# --- the service role's trust ----------------------------------------------------------------------


def trust_deviations(live: Any, agent_arn: str, external_ids: list[str]) -> list[str]:
    """What a live SnykEcrServiceRole trust does differently from: only the agent, only with the ids."""
    sts = statements(live)
    if not sts:
        return ["no trust statement at all"]
    found: list[str] = []
    live_ids: list[str] = []
    for st in sts:
        deviations, ids = _statement_deviations(st, agent_arn)
        found += deviations
        live_ids += ids
    if not any(agent_arn in _trust_principals(st) for st in sts if st.get("Effect") == "Allow"):
        found.append(f"does not trust the agent {agent_arn}")
    unknown = [i for i in dict.fromkeys(live_ids) if i not in external_ids]
    if unknown:
        found.append(
            f"requires ExternalId {_names(unknown, 3)}, which the portal does not hold: brokers "
            "configured with it stop working once the trust is replaced (to keep them running, "
            "onboard with that ExternalId and rotate it afterwards)"
        )
    return found


def _statement_deviations(st: dict[str, Any], agent_arn: str) -> tuple[list[str], list[str]]:
    """What one trust statement does differently, and the ExternalIds it requires."""
    if st.get("Effect") != "Allow":
        return [f"a {st.get('Effect', 'unknown')} statement"], []
    found: list[str] = []
    others = [a for a in map(str, _listed(st.get("Action"))) if a != "sts:AssumeRole"]
    if others:
        found.append(f"also allows {_names(others)}")
    principals = _trust_principals(st)
    found += [text for p in principals if (text := _principal_deviation(p, agent_arn))]
    ids, other_conditions = _trust_conditions(st)
    if other_conditions:
        found.append(f"other conditions: {_names(other_conditions)}")
    if principals and not ids:
        found.append(
            "no sts:ExternalId condition (anyone holding the agent's credentials may assume the "
            "role, for any Snyk tenant: the confused-deputy guard is missing)"
        )
    return found, ids


def _trust_principals(st: dict[str, Any]) -> list[str]:
    """The trusted principals: "*", AWS ones as they are written, others as "<kind> <value>"."""
    principal = st.get("Principal")
    if principal == "*":
        return ["*"]
    if not isinstance(principal, dict):
        return []
    return [
        str(v) if kind == "AWS" else f"{kind} {v}"
        for kind, values in principal.items()
        for v in _listed(values)
    ]


def _principal_deviation(principal: str, agent_arn: str) -> str:
    """How trusting this principal differs from trusting only the agent ("" for the agent itself)."""
    agent_account = agent_arn.split(":")[4] if agent_arn.count(":") >= 5 else ""
    if principal == agent_arn:
        return ""
    if principal == "*":
        return 'trusts every AWS principal ("*")'
    if principal in (f"arn:aws:iam::{agent_account}:root", agent_account):
        return f"trusts the whole agent account {agent_account} (root), not only the agent {agent_arn}"
    if principal.startswith(("AROA", "AIDA")):
        return f"trusts {principal}, the unique id of a deleted principal (trust is broken)"
    return f"also trusts {principal}"


def _trust_conditions(st: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The ExternalIds a statement requires (StringEquals), and its other conditions ("<operator> <key>")."""
    condition = st.get("Condition") or {}
    ids: list[str] = []
    others: list[str] = []
    for operator, keys in condition.items() if isinstance(condition, dict) else []:
        for key, value in (keys or {}).items() if isinstance(keys, dict) else []:
            if key.lower() == "sts:externalid" and operator == "StringEquals":
                ids.extend(str(v) for v in _listed(value))
            else:
                others.append(f"{operator} {key}")
    return ids, others


def role_extras(attached: list[str], inline: list[str], read_policy_arn: str) -> list[str]:
    """Other policies on the service role: the portal leaves them as they are."""
    found = []
    others = [a for a in attached if a != read_policy_arn]
    if others:
        found.append(f"also has {_names([a.rsplit('/', 1)[-1] for a in others])} attached: left as it is")
    if inline:
        found.append(f"also has inline policy {_names(inline)}: left as it is")
    return found


# --- the agent's permissions ---------------------------------------------------------------------


def agent_policy_deviations(live: Any, desired_arns: list[str]) -> list[str]:
    """What the agent's live assume policy allows that the desired one does not."""
    found: list[str] = []
    desired = set(desired_arns)
    dropped: list[str] = []
    other_actions: list[str] = []
    for st in statements(live):
        if st.get("Effect") != "Allow":
            continue
        actions = [str(a) for a in _listed(st.get("Action"))]
        other_actions.extend(a for a in actions if a != "sts:AssumeRole")
        for resource in (str(r) for r in _listed(st.get("Resource"))):
            if resource != "*" and resource not in desired:
                dropped.append(resource)
    if dropped:
        found.append(
            f"allows sts:AssumeRole on {counted(len(dropped), 'role', 'roles')} the portal will not list, "
            f"which the agent loses: {_names(sorted(set(dropped)))}"
        )
    if other_actions:
        found.append(f"also allows {_names(sorted(set(other_actions)))}, which is removed")
    return found


def describe(label: str, arn: str, deviations: list[str], *, matches: bool, fix: str) -> str:
    """One plan note for an adopted resource: kept as it is, or what differs and what the plan does."""
    if matches:
        return f"Adopt {label} {arn} as it is: it already matches the guide."
    if not deviations:
        return f"Adopt {label} {arn}: it means what the guide's does, in another form. {fix}"
    return f"Adopt {label} {arn}, which differs from the guide: " + "; ".join(deviations) + f". {fix}"


# --- the agent role's trust: what a hand-made ECS/EKS trust lets in ----------------------------------


@dataclass(frozen=True)
class TrustWeakness:
    """A statement of an agent role's trust that admits more than its runtime needs."""

    code: str
    message: str
    statement: str  # the statement, compact JSON: what the finding is about


def _compact(statement: dict[str, Any]) -> str:
    return json.dumps(statement, sort_keys=True, separators=(",", ":"))


def _conditions(statement: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    """(operator, key, values) of every condition, keys as written (IAM compares them case-blind)."""
    found: list[tuple[str, str, list[str]]] = []
    for operator, keys in (statement.get("Condition") or {}).items():
        if isinstance(keys, dict):
            found.extend(
                (str(operator), str(key), [str(v) for v in _listed(value)]) for key, value in keys.items()
            )
    return found


def _principals(statement: dict[str, Any], kind: str) -> list[str]:
    principal = statement.get("Principal")
    return [str(p) for p in _listed(principal.get(kind))] if isinstance(principal, dict) else []


def agent_trust_weaknesses(document: Any) -> list[TrustWeakness]:
    """Every Allow statement of an agent role's trust that lets in more than one service account of
    one cluster (IRSA), skips the audience (IRSA), cannot tag the session (Pod Identity) or lacks
    the confused-deputy conditions (ECS), each in a sentence naming what the statement says."""
    weaknesses: list[TrustWeakness] = []
    for st in statements(document):
        if st.get("Effect") != "Allow":
            continue
        weaknesses.extend(_irsa_weaknesses(st))
        weaknesses.extend(_service_weaknesses(st))
    return weaknesses


def _irsa_weaknesses(st: dict[str, Any]) -> list[TrustWeakness]:
    providers = [p for p in _principals(st, "Federated") if ":oidc-provider/" in p]
    if not providers:
        return []
    provider, text = providers[0], _compact(st)
    conditions = _conditions(st)
    subs = [(op, values) for op, key, values in conditions if key.lower().endswith(":sub")]
    found = []
    if not subs:
        found.append(
            TrustWeakness(
                "agent-trust-any-service-account",
                f"lets tokens of {provider} in without a :sub condition: any service account of the "
                "cluster may assume the agent role.",
                text,
            )
        )
    for operator, values in subs:
        loose = [v for v in values if "Like" in operator and ("*" in v or "?" in v)]
        if loose:
            found.append(
                TrustWeakness(
                    "agent-trust-any-service-account",
                    f"lets tokens of {provider} in for :sub {operator} {', '.join(loose)}: every service "
                    "account matching it may assume the agent role, not only the agent's.",
                    text,
                )
            )
    if not any(key.lower().endswith(":aud") for _, key, _ in conditions):
        found.append(
            TrustWeakness(
                "agent-trust-no-audience",
                f"lets tokens of {provider} in without an :aud condition (sts.amazonaws.com): a token "
                "the cluster issued for any other audience is accepted too.",
                text,
            )
        )
    return found


def _service_weaknesses(st: dict[str, Any]) -> list[TrustWeakness]:
    services = _principals(st, "Service")
    actions = [str(a).lower() for a in _listed(st.get("Action"))]
    text, found = _compact(st), list[TrustWeakness]()
    if policies.POD_IDENTITY_PRINCIPAL in services and not any(_covers(a, "sts:TagSession") for a in actions):
        found.append(
            TrustWeakness(
                "agent-trust-no-tag-session",
                f"trusts {policies.POD_IDENTITY_PRINCIPAL} with {', '.join(_listed(st.get('Action')))} but "
                "not sts:TagSession: EKS Pod Identity tags every session, so pods cannot get the role.",
                text,
            )
        )
    keys = {key.lower() for _, key, _ in _conditions(st)}
    if policies.ECS_TASKS_PRINCIPAL in services and not keys & {"aws:sourceaccount", "aws:sourcearn"}:
        found.append(
            TrustWeakness(
                "agent-trust-no-source-condition",
                f"trusts {policies.ECS_TASKS_PRINCIPAL} without aws:SourceAccount or aws:SourceArn: ECS "
                "acting for another account's task could be made to assume the agent role (confused deputy).",
                text,
            )
        )
    return found

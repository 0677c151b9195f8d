"""Findings across both systems (pure): each universal connection against IAM's live trust and the
inventory, the integrations against the Orgs, the deployments against Snyk's limit and the portal's
records. Account findings go with the account; a deployment's go with its agent."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from portal.text import counted

from .catalogue import Finding
from .reads import AccountRead
from .snyk_reads import ExpectedConnection, SnykFacts, SnykRead
from .trust_rules import _and, _short, ids_accepted_from

SNYK_MAX_CONNECTIONS = 25  # per deployment, as Snyk documents it (the portal fills up to its setting)


@dataclass
class SnykFindings:
    accounts: dict[str, list[Finding]] = field(default_factory=lambda: defaultdict(list))  # by account id
    agents: dict[str, list[Finding]] = field(default_factory=lambda: defaultdict(list))  # by agent name

    @property
    def all(self) -> list[Finding]:
        return [f for fs in self.accounts.values() for f in fs] + [
            f for fs in self.agents.values() for f in fs
        ]


def _required(connection: dict[str, Any]) -> dict[str, str]:
    configuration = (connection.get("attributes") or {}).get("configuration") or {}
    return dict(configuration.get("required") or {})


def _name(connection: dict[str, Any]) -> str:
    return str((connection.get("attributes") or {}).get("name", ""))


class _Index:
    """The read, indexed once: connections by id and by (deployment, name), integrations by Org."""

    def __init__(self, read: SnykRead):
        self.by_id: dict[str, dict[str, Any]] = {}
        self.by_name: dict[tuple[str, str], dict[str, Any]] = {}
        self.deployment_of: dict[str, str] = {}
        for deployment_id, connections in read.connections.items():
            for connection in connections:
                self.by_id[connection["id"]] = connection
                self.by_name[(deployment_id, _name(connection))] = connection
                self.deployment_of[connection["id"]] = deployment_id
        self.integrations = read.integrations
        self.through: dict[str, list[tuple[str, str]]] = defaultdict(list)  # org -> (connection, integration)
        for connection_id, integrations in read.integrations.items():
            for integration in integrations:
                org = str((integration.get("attributes") or {}).get("org_id", ""))
                self.through[org].append((connection_id, integration["id"]))

    def live(self, expected: ExpectedConnection) -> dict[str, Any] | None:
        if expected.connection_id and expected.connection_id in self.by_id:
            return self.by_id[expected.connection_id]
        return self.by_name.get((expected.deployment_id, expected.name))


def snyk_findings(facts: SnykFacts, read: SnykRead, accounts: dict[str, AccountRead]) -> SnykFindings:
    """Every cross-system finding of one audit. `accounts`: the IAM reads of the audited accounts."""
    found = SnykFindings()
    if read.error:
        for agent in facts.agents:
            found.agents[agent].append(
                Finding(
                    "snyk-unreadable",
                    f"The Snyk side of this universal agent could not be read: {read.error}. Its "
                    "connections, integrations and deployments were not audited; the AWS side was.",
                    agent,
                )
            )
        return found
    index = _Index(read)
    names = {c["id"]: _name(c) for c in index.by_id.values()}
    for expected in facts.expected:
        live = index.live(expected)
        subject = found.accounts[expected.account_id]
        if live is None:
            subject.append(_missing(expected, read))
            continue
        subject += _configuration_findings(expected, _required(live), accounts.get(expected.account_id))
        subject += _integration_findings(expected, live["id"], index, names)
    for deployment_id, connections in read.connections.items():
        agent = facts.deployments.get(deployment_id) or facts.agent_arns.get(
            ((read.deployments[deployment_id].get("attributes") or {}).get("metadata") or {}).get(
                "agent", ""
            ),
            "",
        )
        deployment_name = facts.deployment_names.get(deployment_id, deployment_id)
        found.agents[agent] += _deployment_findings(facts, deployment_id, deployment_name, connections, agent)
    return found


def connection_documents(facts: SnykFacts, read: SnykRead) -> dict[str, tuple[dict, dict]]:
    """Per account id: its connections' live and desired parameters, by connection name (for the
    account's live-vs-desired view); none when Snyk was not read."""
    if read.error:
        return {}
    index = _Index(read)
    documents: dict[str, tuple[dict, dict]] = {}
    for expected in facts.expected:
        live = index.live(expected)
        pair = documents.setdefault(expected.account_id, ({}, {}))
        pair[0][expected.name] = _required(live) if live is not None else None
        pair[1][expected.name] = expected.desired
    return documents


def _missing(expected: ExpectedConnection, read: SnykRead) -> Finding:
    if not expected.deployment_id:
        where = "the portal has not placed it in a deployment yet"
    elif expected.deployment_id not in read.deployments:
        where = f"its deployment {expected.deployment_name} ({expected.deployment_id}) is not in Snyk"
    else:
        where = f"deployment {expected.deployment_name} holds none of that name"
    return Finding(
        "snyk-connection-missing",
        f"Snyk has no connection {expected.name} for this registry ({where}): its images are not "
        "scanned through the Universal Broker. A Snyk sync of the agent creates it.",
        expected.account_id,
        expected.name,
    )


def _configuration_findings(
    expected: ExpectedConnection, required: dict[str, str], read: AccountRead | None
) -> list[Finding]:
    """The connection's role, region and ExternalId against the account, its region and IAM's trust."""
    name, acct = expected.name, expected.account_id
    findings = []
    role_arn = required.get("cr_role_arn", "")
    if role_arn != expected.role_arn:
        findings.append(
            Finding(
                "snyk-connection-role-differs",
                f"Connection {name} names the role {role_arn or '(none)'}, not the account's service "
                f"role {expected.role_arn}: the Container Registry Agent assumes a role the portal does "
                "not manage.",
                acct,
                name,
            )
        )
    wrong = [
        f"{key} is {required.get(key) or '(none)'}, not {want}"
        for key, want in (("cr_region", expected.region), ("cr_base", expected.registry))
        if required.get(key) != want
    ]
    if wrong:
        findings.append(
            Finding(
                "snyk-connection-region-differs",
                f"Connection {name} is for the registry of account {acct} in {expected.region}, but its "
                f"{_and(wrong)}: it scans another registry, or none.",
                acct,
                name,
            )
        )
    if role_arn != expected.role_arn or read is None or read.error:
        return findings  # another role's trust is not read; an unreadable account has its own finding
    if read.role is None:
        findings.append(
            Finding(
                "snyk-connection-role-missing",
                f"Connection {name} names the role {role_arn}, which does not exist: every pull of "
                "this registry fails.",
                acct,
                name,
            )
        )
        return findings
    external_id = required.get("cr_external_id", "")
    accepted = ids_accepted_from(read.trust, read.facts.account.service_role_name, expected.agent_arn)
    if external_id not in accepted:
        trusted = (
            " or ".join(_short(v) for v in sorted(accepted)) if accepted else "no ExternalId from the agent"
        )
        findings.append(
            Finding(
                "snyk-connection-external-id-rejected",
                f"Connection {name} sends ExternalId {_short(external_id) or '(none)'}, which the trust of "
                f"{read.facts.account.service_role_name} does not accept (it accepts {trusted}): every "
                "pull of this registry fails with AccessDenied.",
                acct,
                name,
            )
        )
    return findings


def _integration_findings(
    expected: ExpectedConnection, connection_id: str, index: _Index, names: dict[str, str]
) -> list[Finding]:
    """The connection is integrated with its own Org, and that Org through this connection only."""
    name, acct = expected.name, expected.account_id
    integrations = index.integrations.get(connection_id, [])
    findings = []
    if not integrations:
        findings.append(
            Finding(
                "snyk-integration-missing",
                f"Connection {name} has no integration with an Org: it opens no tunnel, so this "
                "registry is not scanned. A Snyk sync of the agent integrates it.",
                acct,
                name,
            )
        )
    if not expected.org_id:
        return findings
    for integration in integrations:
        org = str((integration.get("attributes") or {}).get("org_id", ""))
        if org != expected.org_id:
            findings.append(
                Finding(
                    "snyk-integration-wrong-org",
                    f"Connection {name} is integrated with Org {org}, not its own Org "
                    f"{expected.org_id}: that Org sees this account's images.",
                    acct,
                    f"{name}|{integration['id']}",
                )
            )
    # Its Org (or the integration the portal recorded) reached through another connection.
    elsewhere = {(c, i) for c, i in index.through.get(expected.org_id, []) if c != connection_id}
    elsewhere |= {
        (c, item["id"])
        for c, items in index.integrations.items()
        for item in items
        if c != connection_id and expected.integration_id and item["id"] == expected.integration_id
    }
    for other, integration_id in sorted(elsewhere):
        findings.append(
            Finding(
                "snyk-integration-wrong-connection",
                f"The Org {expected.org_id} of {name} is integrated through connection "
                f"{names.get(other, other)} ({other}) instead of its own: it scans another registry.",
                acct,
                f"{name}|{integration_id}",
            )
        )
    return findings


def _deployment_findings(
    facts: SnykFacts, deployment_id: str, deployment_name: str, connections: list[dict[str, Any]], agent: str
) -> list[Finding]:
    findings = []
    if len(connections) > SNYK_MAX_CONNECTIONS:
        findings.append(
            Finding(
                "snyk-deployment-over-limit",
                f"Deployment {deployment_name} holds "
                f"{counted(len(connections), 'connection', 'connections')}; "
                f"Snyk allows {SNYK_MAX_CONNECTIONS} per deployment, so its broker client may not serve "
                "them all.",
                agent,
                deployment_id,
            )
        )
    for connection in connections:
        if connection["id"] in facts.known_ids or (deployment_id, _name(connection)) in facts.known_names:
            continue
        required = _required(connection)
        findings.append(
            Finding(
                "snyk-connection-unknown",
                f"Deployment {deployment_name} holds connection {_name(connection)} ({connection['id']}) "
                f"that the portal does not know, for role {required.get('cr_role_arn') or '(none)'} in "
                f"{required.get('cr_region') or '(no region)'}: its broker client serves it with the "
                "agent's identity. Remove it in Snyk, or onboard its account in the portal.",
                agent,
                connection["id"],
            )
        )
    return findings

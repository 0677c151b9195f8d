"""The catalogue of findings: each check's stable code, severity and title, and a finding of one."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..choices import SEVERITY_RANK, Severity


@dataclass(frozen=True)
class Check:
    code: str
    severity: str
    title: str


CHECKS: dict[str, Check] = {
    c.code: c
    for c in [
        Check("account-unreachable", Severity.HIGH, "Account cannot be read"),
        Check("role-missing", Severity.HIGH, "Service role missing"),
        Check("policy-missing", Severity.HIGH, "Read-only policy missing"),
        Check("attachment-missing", Severity.HIGH, "Read-only policy not attached"),
        Check("trust-differs", Severity.MEDIUM, "Trust differs from desired"),
        Check("principal-wildcard", Severity.CRITICAL, "Anyone may assume the role"),
        Check("principal-account-root", Severity.HIGH, "A whole account is trusted"),
        Check("principal-unique-id", Severity.HIGH, "Trusted principal was deleted"),
        Check("principal-not-agent", Severity.HIGH, "A principal other than the agent"),
        Check("external-id-missing", Severity.HIGH, "No ExternalId condition"),
        Check("external-id-wildcard", Severity.HIGH, "ExternalId condition accepts any id"),
        Check("external-id-unused", Severity.MEDIUM, "ExternalId no broker uses"),
        Check("external-id-retiring-expired", Severity.MEDIUM, "Retiring ExternalId past its grace period"),
        Check("read-policy-extra-actions", Severity.HIGH, "Read-only policy grants more"),
        Check("read-policy-missing-actions", Severity.MEDIUM, "Read-only policy lacks actions"),
        Check("extra-policy-attached", Severity.HIGH, "Extra policy on the service role"),
        Check("size-near-quota", Severity.MEDIUM, "Document near its IAM size quota"),
        Check("removed-resources-remain", Severity.HIGH, "Removed account still has its role or policy"),
        Check("inventory-invalid", Severity.HIGH, "Desired documents cannot be built"),
        Check("agent-permission-missing", Severity.MEDIUM, "Agent may not assume this role"),
        Check("agent-unreachable", Severity.HIGH, "Agent account cannot be read"),
        Check("agent-missing", Severity.HIGH, "Agent identity missing"),
        Check("agent-resource-wildcard", Severity.HIGH, "Agent may assume any role"),
        Check("agent-unmanaged-account", Severity.HIGH, "Agent may assume a role the portal does not manage"),
        Check("agent-removed-account", Severity.MEDIUM, "Agent may still assume a removed account's role"),
        Check("agent-permissions-differ", Severity.LOW, "Agent identity or permissions differ"),
        Check("agent-trust-any-service-account", Severity.HIGH, "Any service account may assume the agent"),
        Check("agent-trust-no-audience", Severity.MEDIUM, "IRSA trust without an audience condition"),
        Check("agent-trust-no-tag-session", Severity.MEDIUM, "Pod Identity trust without sts:TagSession"),
        Check("agent-trust-no-source-condition", Severity.MEDIUM, "ECS trust without source conditions"),
        Check("agent-oidc-provider-missing", Severity.HIGH, "The agent's OIDC provider does not exist"),
        # Universal Broker: the Snyk side read against IAM and the inventory (snyk_rules).
        Check("snyk-unreadable", Severity.HIGH, "Snyk side could not be read"),
        Check("snyk-connection-missing", Severity.MEDIUM, "No Snyk connection for the registry"),
        Check("snyk-connection-role-differs", Severity.HIGH, "Connection names another role"),
        Check("snyk-connection-role-missing", Severity.HIGH, "Connection's role does not exist"),
        Check("snyk-connection-region-differs", Severity.HIGH, "Connection is for another registry"),
        Check(
            "snyk-connection-external-id-rejected", Severity.HIGH, "Connection's ExternalId is not trusted"
        ),
        Check("snyk-integration-missing", Severity.MEDIUM, "Connection has no integration"),
        Check("snyk-integration-wrong-org", Severity.HIGH, "Connection integrated with another Org"),
        Check(
            "snyk-integration-wrong-connection", Severity.HIGH, "Org integrated through another connection"
        ),
        Check("snyk-deployment-over-limit", Severity.MEDIUM, "Deployment over Snyk's 25 connections"),
        Check("snyk-connection-unknown", Severity.HIGH, "Connection the portal does not know"),
    ]
}
# Findings a Snyk sync (or the reconcile of the account) would fix: the account counts as drifted.
SNYK_DRIFT_CODES = frozenset(
    {
        "snyk-connection-missing",
        "snyk-connection-role-differs",
        "snyk-connection-region-differs",
        "snyk-connection-external-id-rejected",
        "snyk-integration-missing",
        "snyk-integration-wrong-org",
        "snyk-integration-wrong-connection",
    }
)
HIGH_RANK = SEVERITY_RANK[Severity.HIGH]


@dataclass
class Finding:
    code: str
    message: str
    subject: str  # account id or agent name
    detail: str = ""  # what makes this finding distinct from another of the same code

    @property
    def severity(self) -> str:
        return str(CHECKS[self.code].severity)

    @property
    def rank(self) -> int:
        return SEVERITY_RANK[self.severity]

    @property
    def key(self) -> str:
        return f"{self.code}|{self.subject}|{self.detail}"

    def to_dict(self) -> dict[str, str]:
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "subject": self.subject,
            "key": self.key,
        }


def public_finding(finding: dict[str, Any]) -> dict[str, str]:
    """A stored finding as the JSON report shows it."""
    return {"code": finding["code"], "severity": finding["severity"], "message": finding["message"]}


def severity_counts(findings: Iterable[dict[str, Any]]) -> dict[str, int]:
    counts = Counter(f["severity"] for f in findings)
    return {s: counts.get(s, 0) for s in Severity.values}


def worst(findings: list[dict[str, Any]]) -> dict[str, Any] | None:
    return max(findings, key=lambda f: SEVERITY_RANK[f["severity"]], default=None)

"""The audit: the engine's planner run read-only over every account and agent, plus security findings.

For each ECR account the audit reads the live service role, its trust, the policies attached to it
and the default version of the read-only policy; for each agent its permissions in every layout the
engine writes (the inline policy, other inline policies, the numbered managed policies). The
planner's plan for the account *is* its drift; the findings add what a plan alone does not say
("the trust lets anyone assume the role"). Each finding has a stable code, a severity and a plain
message.

Reads run concurrently on a bounded thread pool (settings.AUDIT_CONCURRENCY). The threads only talk
to AWS: the database is read before and written after, in the run's own thread, so one slow or
unreachable account delays nobody and no thread holds a database connection. Nothing is written
to AWS. New findings of high severity are logged at WARNING and, when AUDIT_WEBHOOK_URL is set,
posted by a separate Celery task that retries and never holds up or fails the audit.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import re
import threading
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.db.models import Prefetch
from django.utils import timezone

from accounts.choices import BrokerStatus, ExternalIdState, Lifecycle
from accounts.models import AgentIdentity, BrokerInstance, EcrAccount

from . import aws, planner, policies, services
from .choices import (
    ACTIVE_RUN_STATUSES,
    SEVERITY_RANK,
    AuditStatus,
    RunKind,
    RunStatus,
    Severity,
)
from .models import AuditSnapshot, Run

log = logging.getLogger(__name__)

NEAR_QUOTA = 0.9  # a document within 10 % of its IAM quota is a finding
ASSUME_ACTION = "sts:AssumeRole"
EXTERNAL_ID_KEY = "sts:externalid"
# Unique ids IAM shows in place of a principal that was deleted (roles, users, groups, ...).
UNIQUE_ID = re.compile(r"^(AROA|AIDA|AGPA|ANPA|ANVA|AIPA|ASIA|AKIA)[A-Z0-9]{12,}$")
ACCOUNT_ROOT = re.compile(r"^(?:arn:aws[\w-]*:iam::(\d{12}):root|(\d{12}))$")
ROLE_ARN = re.compile(r"^arn:aws[\w-]*:iam::(\d{12}):role/(.+)$")


# --- the catalogue of findings -----------------------------------------------------------------


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
    ]
}
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


# --- reading IAM documents (pure) -----------------------------------------------------------------


def _document(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def statements(document: Any) -> list[dict[str, Any]]:
    document = _document(document)
    if not isinstance(document, dict):
        return []
    return [s for s in _as_list(document.get("Statement")) if isinstance(s, dict)]


def _pattern_matches(pattern: str, value: str) -> bool:
    """IAM wildcards (* and ?), case-insensitive as action names are."""
    return fnmatch.fnmatchcase(value.lower(), pattern.lower())


def allows_action(statement: dict[str, Any], action: str) -> bool:
    if statement.get("Effect") != "Allow":
        return False
    if "NotAction" in statement:
        return not any(_pattern_matches(p, action) for p in _as_list(statement["NotAction"]))
    return any(_pattern_matches(p, action) for p in _as_list(statement.get("Action")))


def principals_of(statement: dict[str, Any]) -> list[str]:
    """Trusted principals as strings: "*", an AWS ARN / account id / unique id, or "Service:<name>"."""
    if "NotPrincipal" in statement:
        return ["*"]  # Allow + NotPrincipal: everyone but the named ones
    principal = statement.get("Principal")
    if principal == "*":
        return ["*"]
    if not isinstance(principal, dict):
        return []
    found = []
    for kind, values in principal.items():
        for value in _as_list(values):
            found.append(str(value) if kind == "AWS" else f"{kind}:{value}")
    return found


def _is_aws_principal(principal: str) -> bool:
    return not principal.startswith(("Service:", "Federated:", "CanonicalUser:"))


@dataclass
class ExternalIdCondition:
    operator: str
    values: list[str]

    @property
    def negated(self) -> bool:
        return "Not" in self.operator.split(":")[-1]

    @property
    def optional(self) -> bool:
        return self.operator.endswith("IfExists")

    @property
    def pattern(self) -> bool:
        return "Like" in self.operator

    @property
    def null_check(self) -> bool:
        return self.operator.split(":")[-1].startswith("Null")

    @property
    def wild_values(self) -> list[str]:
        return [v for v in self.values if v == "" or (self.pattern and ("*" in v or "?" in v))]

    @property
    def strict(self) -> bool:
        """Only the ids it names pass, and an id must be sent (operators are ANDed: one is enough)."""
        return not (self.null_check or self.negated or self.optional or self.wild_values) and bool(
            self.values
        )

    def accepts_any(self) -> str:
        """Why this condition lets any id through ("" when it does not)."""
        if self.strict:
            return ""
        if self.negated:
            return f"{self.operator} accepts every id but the ones it names"
        if self.wild_values:
            return f"{self.operator} with {self.wild_values!r} accepts any id"
        if self.null_check and "false" in [v.lower() for v in self.values]:
            return f"{self.operator} false only requires that some id is sent"
        return ""


def external_id_conditions(statement: dict[str, Any]) -> list[ExternalIdCondition]:
    """Every condition on sts:ExternalId (condition keys are case-insensitive)."""
    found = []
    for operator, keys in (statement.get("Condition") or {}).items():
        if not isinstance(keys, dict):
            continue
        for key, values in keys.items():
            if key.lower() == EXTERNAL_ID_KEY:
                found.append(ExternalIdCondition(operator, [str(v) for v in _as_list(values)]))
    return found


def _short(value: str, keep: int = 8) -> str:
    return value if len(value) <= keep + 2 else value[:keep] + "…"


# --- inputs and results of the reads ------------------------------------------------------------


@dataclass
class ExternalIdFact:
    value: str
    state: str
    retiring_since: datetime | None


@dataclass
class AccountFacts:
    """What the database says about one account, read before the threads start."""

    account: EcrAccount
    external_ids: list[ExternalIdFact]
    broker_external_id: str  # the id the account's active brokers are configured with ("" if none)

    @classmethod
    def of(cls, account: EcrAccount) -> AccountFacts:
        from accounts.renderers import BrokerFileError, current_external_id

        ids = [ExternalIdFact(e.value, e.state, e.retiring_since) for e in account.external_ids.all()]
        used = ""
        if any(b.status == BrokerStatus.ACTIVE for b in account.brokers.all()):
            try:
                used = current_external_id(account)
            except BrokerFileError:
                used = ""
        return cls(account, ids, used)

    @property
    def removed(self) -> bool:
        return self.account.status == Lifecycle.REMOVED


@dataclass
class AccountRead:
    facts: AccountFacts
    error: str = ""
    role: dict[str, Any] | None = None
    policy: dict[str, Any] | None = None
    read_document: Any = None
    attached: list[str] = field(default_factory=list)
    inline: dict[str, Any] = field(default_factory=dict)
    plan: planner.Plan | None = None
    plan_error: str = ""

    @property
    def trust(self) -> Any:
        return _document(self.role.get("AssumeRolePolicyDocument")) if self.role else None


@dataclass
class Grant:
    """One resource an agent's policy allows sts:AssumeRole on."""

    policy: str  # "inline SnykCraAssumeRolePolicy" / "managed SnykCraAssumeRolePolicy-2"
    sid: str
    resource: str

    def covers(self, arn: str) -> bool:
        return fnmatch.fnmatchcase(arn, self.resource)

    def to_dict(self) -> dict[str, str]:
        return {"policy": self.policy, "sid": self.sid, "resource": self.resource}


def grants_in(documents: dict[str, Any]) -> list[Grant]:
    """Every sts:AssumeRole resource granted by these documents (label -> document)."""
    grants = []
    for label, document in documents.items():
        for st in statements(document):
            if not allows_action(st, ASSUME_ACTION):
                continue
            resources = ["*"] if "NotResource" in st else _as_list(st.get("Resource"))
            grants += [Grant(label, str(st.get("Sid", "")), str(r)) for r in resources]
    return grants


class GrantIndex:
    """Which grants cover a role ARN, without scanning every grant for every account."""

    def __init__(self, grants: list[Grant]):
        self.exact: dict[str, list[Grant]] = {}
        self.patterns: list[Grant] = []
        for grant in grants:
            if "*" in grant.resource or "?" in grant.resource:
                self.patterns.append(grant)
            else:
                self.exact.setdefault(grant.resource, []).append(grant)

    def covering(self, arn: str) -> list[Grant]:
        return self.exact.get(arn, []) + [g for g in self.patterns if g.covers(arn)]


@dataclass
class AgentRead:
    agent: AgentIdentity
    members: dict[str, str]  # account id -> service role ARN the permissions must list
    error: str = ""
    identity: dict[str, Any] | None = None
    inline: dict[str, Any] = field(default_factory=dict)
    managed: dict[str, Any] = field(default_factory=dict)  # policy ARN -> default version document
    plan: planner.Plan | None = None
    plan_error: str = ""
    desired: policies.AgentPermissions | None = None
    findings: list[Finding] = field(default_factory=list)
    _indexes: dict[str, GrantIndex] = field(default_factory=dict, repr=False)

    def grants(self, which: str) -> GrantIndex:
        """ "live" or "desired" grants, indexed once per agent."""
        if which not in self._indexes:
            documents = self.live_documents() if which == "live" else self.desired_documents()
            self._indexes[which] = GrantIndex(grants_in(documents))
        return self._indexes[which]

    def live_documents(self) -> dict[str, Any]:
        docs = {f"inline {name}": doc for name, doc in self.inline.items()}
        docs.update({f"managed {arn.rsplit('/', 1)[-1]}": doc for arn, doc in self.managed.items()})
        return docs

    def desired_documents(self) -> dict[str, Any]:
        if self.desired is None:
            return {}
        docs = {f"inline {self.agent.policy_name}": self.desired.inline} if self.desired.inline else {}
        docs.update({f"managed {name}": doc for name, doc in self.desired.managed.items()})
        return docs

    @property
    def live_layout(self) -> str:
        engine_inline = self.inline.get(self.agent.policy_name)
        if engine_inline is not None and self.managed:
            return "mixed"
        if self.managed:
            return policies.LAYOUT_MANAGED
        if engine_inline is None:
            return policies.LAYOUT_NONE
        per_account = all(
            isinstance(st.get("Resource"), str)
            and (m := ROLE_ARN.match(st["Resource"]))
            and st.get("Sid") == policies.sid_for(self.agent.policy_name, m[1])
            for st in statements(engine_inline)
        )
        return policies.LAYOUT_PER_ACCOUNT if per_account else policies.LAYOUT_COMBINED


# --- reads (run on the pool's threads: AWS only, no database) --------------------------------------


class _Gauge:
    """How many account reads are in flight at once, and the most there ever were."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current = 0
        self.peak = 0

    def __enter__(self) -> _Gauge:
        with self._lock:
            self.current += 1
            self.peak = max(self.peak, self.current)
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.current -= 1


def _close_thread_connections() -> None:
    """A pool thread never needs the database; close anything a library opened on it anyway."""
    for connection in connections.all(initialized_only=True):
        connection.close()


@aws.with_read_cache  # the planner below answers from the reads made here
def read_account(facts: AccountFacts) -> AccountRead:
    account = facts.account
    result = AccountRead(facts)
    try:
        iam = aws.Iam(planner.account_access(account))
        result.role = iam.get_role(account.service_role_name)
        result.policy = iam.get_policy(account.read_policy_arn)
        if result.policy:
            result.read_document = _document(
                iam.get_policy_document(account.read_policy_arn, result.policy["DefaultVersionId"])
            )
        if result.role:
            result.attached = iam.list_attached_policies("role", account.service_role_name)
            result.inline = {
                name: _document(iam.get_inline_policy("role", account.service_role_name, name))
                for name in iam.list_inline_policies("role", account.service_role_name)
            }
        ids = [e.value for e in facts.external_ids]
        try:
            result.plan = planner.plan_account(account, ids, remove=facts.removed)
        except policies.LayoutError as exc:
            result.plan_error = str(exc)
    except aws.AwsError as exc:
        result.error = f"{exc.code}: {exc.message}"
    return result


@aws.with_read_cache
def read_agent(agent: AgentIdentity, members: dict[str, str]) -> AgentRead:
    result = AgentRead(agent, members)
    kind = agent.kind
    try:
        result.desired = policies.agent_permissions(kind, agent.policy_name, members)
    except policies.LayoutError as exc:
        result.plan_error = str(exc)
    try:
        iam = aws.Iam(planner.agent_access(agent))
        result.identity = iam.get_role(agent.iam_name) if kind == "role" else iam.get_user(agent.iam_name)
        if result.identity:
            result.inline = {
                name: _document(iam.get_inline_policy(kind, agent.iam_name, name))
                for name in iam.list_inline_policies(kind, agent.iam_name)
            }
            pattern = re.compile(
                rf"^arn:aws[\w-]*:iam::{agent.account_id}:policy/{re.escape(agent.policy_name)}-\d+$"
            )
            for arn in iam.list_attached_policies(kind, agent.iam_name):
                if pattern.match(arn):
                    policy = iam.get_policy(arn)
                    if policy:
                        result.managed[arn] = _document(
                            iam.get_policy_document(arn, policy["DefaultVersionId"])
                        )
        plan = planner.plan_agent_identity(agent)
        if result.desired is not None:
            plan.extend(planner.plan_agent_permissions(agent, members))
        result.plan = plan
    except aws.AwsError as exc:
        result.error = f"{exc.code}: {exc.message}"
    return result


# --- findings (pure) -------------------------------------------------------------------------------


def trust_findings(read: AccountRead, now: datetime) -> list[Finding]:
    """Who the live trust lets assume the role, and with which ExternalIds."""
    facts, acct = read.facts, read.facts.account.account_id
    agent_arn = facts.account.agent.arn
    findings: list[Finding] = []
    known = {e.value: e for e in facts.external_ids}
    grace = timedelta(days=settings.EXTERNAL_ID_GRACE_DAYS)
    for index, st in enumerate(statements(read.trust)):
        if not allows_action(st, ASSUME_ACTION):
            continue
        principals = principals_of(st)
        for principal in principals:
            root = ACCOUNT_ROOT.match(principal)
            if principal == "*":
                findings.append(
                    Finding(
                        "principal-wildcard",
                        'The trust allows any AWS principal ("*") to assume this role: anyone who knows '
                        "(or guesses) the ExternalId can read every ECR repository in the account.",
                        acct,
                        str(index),
                    )
                )
            elif root:
                findings.append(
                    Finding(
                        "principal-account-root",
                        f"The trust names the whole account {root[1] or root[2]} ({principal}): every "
                        "role and user there with sts:AssumeRole may assume this role, not only the agent.",
                        acct,
                        principal,
                    )
                )
            elif UNIQUE_ID.match(principal):
                findings.append(
                    Finding(
                        "principal-unique-id",
                        f"The trust shows the unique id {principal} instead of an ARN: the principal it "
                        "trusted was deleted, so trust is broken even if a principal of the same name "
                        "exists again. Reconcile to trust the agent by ARN.",
                        acct,
                        principal,
                    )
                )
            elif principal != agent_arn:
                findings.append(
                    Finding(
                        "principal-not-agent",
                        f"The trust allows {principal} to assume this role; only the agent {agent_arn} "
                        "should.",
                        acct,
                        principal,
                    )
                )
        if not any(_is_aws_principal(p) for p in principals):
            continue  # service / federated principals cannot pass an ExternalId
        conditions = external_id_conditions(st)
        strict = [c for c in conditions if c.strict]
        loose = [(c, why) for c in conditions if (why := c.accepts_any())]
        if not strict and loose:
            for condition, why in loose:
                findings.append(
                    Finding(
                        "external-id-wildcard",
                        f"The trust's ExternalId condition is ineffective: {why}.",
                        acct,
                        f"{index}:{condition.operator}",
                    )
                )
        elif not strict:
            how = (
                "only " + ", ".join(c.operator for c in conditions) + ", which pass when no id is sent"
                if conditions
                else "none"
            )
            findings.append(
                Finding(
                    "external-id-missing",
                    f"Statement {index + 1} of the trust has no required sts:ExternalId condition ({how}): "
                    "the agent can be made to assume this role for someone else (confused deputy).",
                    acct,
                    str(index),
                )
            )
        exact = {v for c in strict for v in c.values}
        for value in sorted(exact):
            fact = known.get(value)
            if fact is None:
                findings.append(
                    Finding(
                        "external-id-unused",
                        f"The trust accepts ExternalId {_short(value)}, which the portal does not know "
                        "and no broker uses: whoever holds it can have the agent assume this role.",
                        acct,
                        value,
                    )
                )
            elif fact.state == ExternalIdState.ACTIVE and value != facts.broker_external_id:
                findings.append(
                    Finding(
                        "external-id-unused",
                        f"The trust accepts ExternalId {_short(value)}, which no active broker of this "
                        "account uses.",
                        acct,
                        value,
                    )
                )
    for fact in facts.external_ids:
        if (
            fact.state == ExternalIdState.RETIRING
            and fact.retiring_since
            and now - fact.retiring_since > grace
        ):
            days = (now - fact.retiring_since).days
            findings.append(
                Finding(
                    "external-id-retiring-expired",
                    f"ExternalId {_short(fact.value)} has been retiring for {days} days (grace period "
                    f"{settings.EXTERNAL_ID_GRACE_DAYS} days) and the trust still accepts it: finish "
                    "the rotation so it is removed.",
                    acct,
                    fact.value,
                )
            )
    return findings


def read_policy_findings(read: AccountRead) -> list[Finding]:
    acct = read.facts.account.account_id
    name = read.facts.account.read_policy_name
    findings = []
    allowed = [st for st in statements(read.read_document) if st.get("Effect") == "Allow"]
    wanted = {a.lower() for a in policies.READ_POLICY_ACTIONS}
    extra: list[str] = []
    patterns: list[str] = []
    for st in allowed:
        if "NotAction" in st:
            extra.append(f"every action but {', '.join(map(str, _as_list(st['NotAction'])))}")
            patterns.append("*")
            continue
        for action in map(str, _as_list(st.get("Action"))):
            patterns.append(action)
            if action.lower() not in wanted:
                extra.append(action)
    if extra:
        findings.append(
            Finding(
                "read-policy-extra-actions",
                f"{name} allows more than the 11 ECR read actions: {', '.join(sorted(set(extra)))}.",
                acct,
                ",".join(sorted(set(extra))),
            )
        )
    missing = [a for a in policies.READ_POLICY_ACTIONS if not any(_pattern_matches(p, a) for p in patterns)]
    if missing:
        findings.append(
            Finding(
                "read-policy-missing-actions",
                f"{name} lacks {', '.join(missing)}: scans of this account fail or are incomplete.",
                acct,
                ",".join(missing),
            )
        )
    return findings


def _size_finding(subject: str, what: str, size: int, quota: int) -> Finding | None:
    if size < NEAR_QUOTA * quota:
        return None
    return Finding(
        "size-near-quota",
        f"{what} is {size} characters, {round(100 * size / quota)} % of IAM's quota of {quota}: "
        "the next change may not fit.",
        subject,
        what,
    )


def account_findings(read: AccountRead, now: datetime) -> list[Finding]:
    """Everything about one account that does not need the agent's permissions."""
    account = read.facts.account
    acct = account.account_id
    if read.error:
        reach = account.management_role_arn or "the portal's own credentials"
        return [
            Finding(
                "account-unreachable",
                f"The account could not be read through {reach}: {read.error}",
                acct,
            )
        ]
    findings: list[Finding] = []
    if read.plan_error:
        findings.append(Finding("inventory-invalid", read.plan_error, acct))
    if read.facts.removed:
        if read.plan and not read.plan.is_empty:
            left = ", ".join(
                what for what, live in (("role", read.role), ("read-only policy", read.policy)) if live
            )
            findings.append(
                Finding(
                    "removed-resources-remain",
                    f"The account was removed from the portal but its {left or 'resources'} still exist "
                    "in AWS. Offboard it again to delete them.",
                    acct,
                )
            )
        return findings
    if read.role is None:
        findings.append(
            Finding("role-missing", f"The service role {account.service_role_arn} does not exist.", acct)
        )
    if read.policy is None:
        findings.append(
            Finding("policy-missing", f"The read-only policy {account.read_policy_arn} does not exist.", acct)
        )
    if read.role is not None:
        if account.read_policy_arn not in read.attached:
            findings.append(
                Finding(
                    "attachment-missing",
                    f"{account.read_policy_name} is not attached to {account.service_role_name}: the "
                    "broker can assume the role but cannot read ECR.",
                    acct,
                )
            )
        desired_trust = _desired_trust(read.facts)
        if desired_trust is not None and not policies.same_document(read.trust, desired_trust):
            findings.append(
                Finding(
                    "trust-differs",
                    f"The trust of {account.service_role_name} differs from the desired one (see the diff).",
                    acct,
                )
            )
        findings += trust_findings(read, now)
        for arn in read.attached:
            if arn != account.read_policy_arn:
                findings.append(
                    Finding(
                        "extra-policy-attached",
                        f"{arn} is attached to {account.service_role_name}: whoever assumes the role gets "
                        "its permissions too.",
                        acct,
                        arn,
                    )
                )
        for name in read.inline:
            findings.append(
                Finding(
                    "extra-policy-attached",
                    f"{account.service_role_name} has an inline policy {name}: whoever assumes the role "
                    "gets its permissions too.",
                    acct,
                    f"inline:{name}",
                )
            )
        sizes = [
            _size_finding(acct, f"The trust of {account.service_role_name}", _size(read.trust), 2048),
            _size_finding(
                acct,
                f"The inline policies of {account.service_role_name}",
                sum(_size(d) for d in read.inline.values()),
                policies.INLINE_QUOTA["role"],
            ),
        ]
        findings += [f for f in sizes if f]
    if read.policy is not None:
        findings += read_policy_findings(read)
        size = _size_finding(
            acct, account.read_policy_name, _size(read.read_document), policies.MANAGED_POLICY_QUOTA
        )
        findings += [size] if size else []
    return findings


def _size(document: Any) -> int:
    return policies.policy_size(document) if isinstance(document, (dict, list)) else 0


def _desired_trust(facts: AccountFacts) -> dict[str, Any] | None:
    if facts.removed:
        return None
    try:
        return policies.service_role_trust_policy(
            facts.account.agent.arn, [e.value for e in facts.external_ids]
        )
    except policies.LayoutError:
        return None


def agent_findings(read: AgentRead, account_statuses: dict[str, str]) -> list[Finding]:
    """The agent's permissions: wildcards, roles it should not reach, sizes, drift."""
    agent = read.agent
    name = agent.name
    if read.error:
        reach = agent.management_role_arn or "the portal's own credentials"
        return [
            Finding(
                "agent-unreachable",
                f"The agent's account could not be read through {reach}: {read.error}",
                name,
            )
        ]
    findings: list[Finding] = []
    if read.plan_error:
        findings.append(Finding("inventory-invalid", read.plan_error, name))
    if read.identity is None:
        return findings + [Finding("agent-missing", f"The agent {agent.arn} does not exist.", name)]
    members = set(read.members.values())
    for grant in grants_in(read.live_documents()):
        where = f"{grant.policy}" + (f" (statement {grant.sid})" if grant.sid else "")
        if "*" in grant.resource or "?" in grant.resource:
            findings.append(
                Finding(
                    "agent-resource-wildcard",
                    f'{where} allows sts:AssumeRole on "{grant.resource}": the agent may assume any role '
                    "that trusts it, not only the service roles the portal manages.",
                    name,
                    f"{grant.policy}:{grant.resource}",
                )
            )
            continue
        if grant.resource in members:
            continue
        match = ROLE_ARN.match(grant.resource)
        status = account_statuses.get(match[1]) if match else None
        if status == Lifecycle.REMOVED:
            findings.append(
                Finding(
                    "agent-removed-account",
                    f"{where} still allows sts:AssumeRole on {grant.resource}, but account {match[1]} was "
                    "removed from the portal.",
                    name,
                    grant.resource,
                )
            )
        else:
            why = (
                f"account {match[1]} is only a draft in the portal"
                if status == Lifecycle.DRAFT
                else "it is not the service role of an account the portal manages"
            )
            findings.append(
                Finding(
                    "agent-unmanaged-account",
                    f"{where} allows sts:AssumeRole on {grant.resource}, but {why}.",
                    name,
                    grant.resource,
                )
            )
    inline_size = sum(_size(d) for d in read.inline.values())
    sizes = [
        _size_finding(
            name, f"The inline policies of {agent.iam_name}", inline_size, policies.INLINE_QUOTA[agent.kind]
        )
    ]
    if read.managed:
        # The engine fills each <policy>-N to the brim and then starts another: what can run out is
        # the room of all the managed policies an identity may have attached.
        sizes.append(
            _size_finding(
                name,
                f"The {len(read.managed)} managed {agent.policy_name}-N policies together",
                sum(_size(doc) for doc in read.managed.values()),
                policies.MANAGED_POLICIES_PER_IDENTITY * policies.MANAGED_POLICY_QUOTA,
            )
        )
    findings += [f for f in sizes if f]
    if read.plan is not None and not read.plan.is_empty:
        summaries = [c.summary for c in read.plan.changes]
        more = f" and {len(summaries) - 3} more" if len(summaries) > 3 else ""
        findings.append(
            Finding(
                "agent-permissions-differ",
                f"Reconciling the agent would make {len(summaries)} change(s): "
                f"{'; '.join(summaries[:3])}{more}.",
                name,
            )
        )
    return findings


def agent_grant_findings(read: AccountRead, agent: AgentRead | None) -> tuple[list[Finding], list[Grant]]:
    """Whether the agent's live permissions let it assume this account's role."""
    account = read.facts.account
    if agent is None or agent.error or agent.identity is None:
        return [], []
    arn = account.service_role_arn
    grants = agent.grants("live").covering(arn)
    if grants or read.facts.removed or account.account_id not in agent.members:
        return [], grants
    finding = Finding(
        "agent-permission-missing",
        f"The agent {agent.agent.name}'s permissions do not allow sts:AssumeRole on {arn}: the broker "
        "cannot scan this account.",
        account.account_id,
    )
    return [finding], grants


def account_status(read: AccountRead, findings: list[Finding]) -> str:
    if read.error:
        return AuditStatus.UNREACHABLE
    if read.facts.removed:
        return AuditStatus.DRIFTED if read.plan and not read.plan.is_empty else AuditStatus.IN_SYNC
    if read.role is None or read.policy is None:
        return AuditStatus.MISSING
    drift_codes = {"agent-permission-missing", "inventory-invalid"}
    if (read.plan and not read.plan.is_empty) or any(f.code in drift_codes for f in findings):
        return AuditStatus.DRIFTED
    return AuditStatus.IN_SYNC


def _live_ids(trust: Any) -> list[str]:
    ids = {
        v
        for st in statements(trust)
        if allows_action(st, ASSUME_ACTION)
        for c in external_id_conditions(st)
        if not c.negated
        for v in c.values
    }
    return sorted(ids)


def account_documents(
    read: AccountRead, live_grants: list[Grant], desired_grants: list[Grant]
) -> tuple[dict, dict]:
    account = read.facts.account
    trust = read.trust
    live = {
        "role_arn": account.service_role_arn,
        "role_exists": read.role is not None,
        "trust": trust,
        "trusted_principals": sorted({p for st in statements(trust) for p in principals_of(st)}),
        "external_ids": _live_ids(trust),
        "read_policy": read.read_document,
        "read_policy_version": (read.policy or {}).get("DefaultVersionId", ""),
        "attached_policies": sorted(read.attached),
        "inline_policies": read.inline,
        "agent_grants": [g.to_dict() for g in live_grants],
        "error": read.error,
    }
    if read.facts.removed:
        desired: dict[str, Any] = {
            "trust": None,
            "read_policy": None,
            "attached_policies": [],
            "inline_policies": {},
            "agent_grants": [],
        }
    else:
        desired = {
            "trust": _desired_trust(read.facts),
            "read_policy": policies.read_only_policy(),
            "attached_policies": [account.read_policy_arn],
            "inline_policies": {},
            "agent_grants": [g.to_dict() for g in desired_grants],
        }
    return live, desired


# --- the run ----------------------------------------------------------------------------------------


@dataclass
class AccountOutcome:
    facts: AccountFacts
    status: str
    findings: list[dict[str, Any]]
    live: dict[str, Any]
    desired: dict[str, Any]
    plan: dict[str, Any]


def audit_scope(run: Run) -> tuple[list[EcrAccount], list[AgentIdentity]]:
    """Accounts (every non-draft one, or the run's targets) and the agents they name."""
    accounts = EcrAccount.objects.exclude(status=Lifecycle.DRAFT).select_related("agent")
    account_ids = run.options.get("account_ids")
    if account_ids is not None:
        accounts = accounts.filter(account_id__in=account_ids)
    # Only the brokers' state: the audit never needs (or decrypts) a broker token.
    brokers = Prefetch("brokers", queryset=BrokerInstance.objects.only("pk", "account_id", "status"))
    accounts = list(accounts.prefetch_related("external_ids", brokers).order_by("account_id"))
    agents = {a.agent_id: a.agent for a in accounts}
    if account_ids is None:
        agents.update({a.pk: a for a in AgentIdentity.objects.exclude(status=Lifecycle.DRAFT)})
    return accounts, sorted(agents.values(), key=lambda a: a.name)


def handle_audit_run(run: Run) -> tuple[str, str]:
    """engine.HANDLERS["audit"]: read everything concurrently, store snapshots, report."""
    now = timezone.now()
    accounts, agents = audit_scope(run)
    facts = [AccountFacts.of(a) for a in accounts]
    members = {agent.pk: services.agent_member_arns(agent) for agent in agents}
    statuses = dict(EcrAccount.objects.values_list("account_id", "status"))
    total = len(accounts) + len(agents)
    Run.objects.filter(pk=run.pk).update(progress_total=total)
    run.log(f"auditing {len(accounts)} account(s) and {len(agents)} agent(s), {_concurrency()} at a time")

    writes_before = aws.write_calls()
    gauge = _Gauge()
    account_reads: list[AccountRead] = []
    agent_reads: dict[int, AgentRead] = {}

    def account_job(item: AccountFacts) -> AccountRead:
        try:
            with gauge:
                return read_account(item)
        except Exception as exc:  # one account's surprise never stops the others
            log.exception("audit of account %s failed", item.account.account_id)
            return AccountRead(item, error=f"{type(exc).__name__}: {exc}")
        finally:
            _close_thread_connections()

    def agent_job(agent: AgentIdentity) -> AgentRead:
        try:
            return read_agent(agent, members[agent.pk])
        except Exception as exc:
            log.exception("audit of agent %s failed", agent.name)
            return AgentRead(agent, members[agent.pk], error=f"{type(exc).__name__}: {exc}")
        finally:
            _close_thread_connections()

    with ThreadPoolExecutor(max_workers=_concurrency(), thread_name_prefix="audit") as pool:
        futures: list[Future] = [pool.submit(agent_job, a) for a in agents]
        futures += [pool.submit(account_job, f) for f in facts]
        for done, future in enumerate(as_completed(futures), start=1):
            result = future.result()
            if isinstance(result, AgentRead):
                agent_reads[result.agent.pk] = result
            else:
                account_reads.append(result)
            if not run.beat(progress_done=done):
                pool.shutdown(wait=False, cancel_futures=True)
                raise RuntimeError("Another worker has taken over this audit run.")
            if Run.objects.filter(pk=run.pk, cancel_requested=True).exists():
                pool.shutdown(wait=False, cancel_futures=True)
                # A partial audit would make the unread accounts look gone: keep the last whole one.
                return RunStatus.CANCELLED, (
                    f"Cancelled after reading {done} of {total}; no snapshot stored, "
                    "so the last complete audit stays the current one."
                )

    # The audit only calls the planner and Iam reads. The counter is process-wide, so a write seen
    # here may be another thread's (a threaded worker): report it, never fail the audit on it.
    writes = aws.write_calls() - writes_before
    if writes:
        log.error("AWS write calls were made in this process during audit run %s: %s", run.pk, writes)

    agent_results = []
    for agent in agents:
        read = agent_reads[agent.pk]
        read.findings = agent_findings(read, statuses)
        agent_results.append(read)
    outcomes = [_outcome(read, agent_reads.get(read.facts.account.agent_id), now) for read in account_reads]
    outcomes.sort(key=lambda o: o.facts.account.account_id)
    new_high = store_results(run, outcomes, agent_results, now=now, peak=gauge.peak)

    counts = Counter(o.status for o in outcomes)
    all_findings = [f for o in outcomes for f in o.findings] + [
        f.to_dict() for a in agent_results for f in a.findings
    ]
    by_severity = severity_counts(all_findings)
    unreachable = counts[AuditStatus.UNREACHABLE] + sum(1 for a in agent_results if a.error)
    explanation = (
        f"Audited {len(outcomes)} account(s) and {len(agent_results)} agent(s): "
        + ", ".join(f"{counts[s]} {label.lower()}" for s, label in AuditStatus.choices)
        + "; findings: "
        + ", ".join(f"{by_severity[s]} {s}" for s in Severity.values)
        + (f"; {len(new_high)} new high-severity finding(s)" if new_high else "")
        + f". At most {gauge.peak} account(s) read at once; "
        + (
            f"{writes} AWS write call(s) seen in this process meanwhile (the audit makes none)."
            if writes
            else "no AWS write made."
        )
    )
    notify_new_findings(run, new_high)
    status = RunStatus.PARTIAL if unreachable else RunStatus.SUCCEEDED
    return status, explanation


def _concurrency() -> int:
    return max(1, int(settings.AUDIT_CONCURRENCY))


def _outcome(read: AccountRead, agent: AgentRead | None, now: datetime) -> AccountOutcome:
    findings = account_findings(read, now)
    grant_findings, live_grants = agent_grant_findings(read, agent)
    findings += grant_findings
    desired_grants: list[Grant] = []
    if agent is not None and agent.desired is not None and not read.facts.removed:
        desired_grants = agent.grants("desired").covering(read.facts.account.service_role_arn)
    live, desired = account_documents(read, live_grants, desired_grants)
    plan = read.plan.to_dict() if read.plan else {}
    if read.plan_error:
        plan["error"] = read.plan_error
    return AccountOutcome(
        read.facts,
        account_status(read, findings),
        [f.to_dict() for f in findings],
        live,
        desired,
        plan,
    )


def _digest(outcome: AccountOutcome) -> str:
    body = {
        "status": outcome.status,
        "live": outcome.live,
        "desired": outcome.desired,
        "plan": outcome.plan,
        "findings": sorted(f["key"] for f in outcome.findings),
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _previous_agent_keys(run: Run) -> dict[str, set[str]]:
    previous = (
        Run.objects.filter(kind=RunKind.AUDIT, status__in=(RunStatus.SUCCEEDED, RunStatus.PARTIAL))
        .exclude(pk=run.pk)
        .order_by("-finished_at", "-pk")
        .only("result")
        .first()
    )
    agents = (previous.result or {}).get("agents", []) if previous else []
    return {a["name"]: {f.get("key", "") for f in a.get("findings", [])} for a in agents}


def store_results(
    run: Run, outcomes: list[AccountOutcome], agents: list[AgentRead], *, now: datetime, peak: int
) -> list[dict[str, Any]]:
    """Snapshots (a new row only when something changed), account flags, the run's result.

    Returns the high-severity findings that the previous audit did not have.
    """
    ids = [o.facts.account.account_id for o in outcomes]
    previous = {
        s.account_id: s
        for s in AuditSnapshot.objects.filter(is_latest=True, account_id__in=ids).defer(
            "live", "desired", "plan"
        )
    }
    previous_agent_keys = _previous_agent_keys(run)
    new_high: list[dict[str, Any]] = []
    unchanged: list[int] = []
    superseded: list[int] = []
    created: list[AuditSnapshot] = []
    for outcome in outcomes:
        account = outcome.facts.account
        prev = previous.get(account.account_id)
        old_keys = {f.get("key") for f in prev.findings} if prev else set()
        for finding in outcome.findings:
            if SEVERITY_RANK[finding["severity"]] >= HIGH_RANK and finding["key"] not in old_keys:
                new_high.append({**finding, "account_id": account.account_id})
        digest = _digest(outcome)
        if prev is not None and prev.digest == digest:
            unchanged.append(prev.pk)
            continue
        if prev is not None:
            superseded.append(prev.pk)
        created.append(_snapshot(run, outcome, prev, digest, now))
    for agent in agents:
        old_keys = previous_agent_keys.get(agent.agent.name, set())
        for finding in agent.findings:
            if finding.rank >= HIGH_RANK and finding.key not in old_keys:
                new_high.append({**finding.to_dict(), "agent": agent.agent.name})

    accounts = []
    for outcome in outcomes:
        account = outcome.facts.account
        if outcome.status != AuditStatus.UNREACHABLE:
            account.drifted = outcome.status in (AuditStatus.DRIFTED, AuditStatus.MISSING)
        account.last_audit_at = now
        top = worst(outcome.findings)
        account.last_audit_summary = {
            "run_id": run.pk,
            "status": outcome.status,
            "counts": severity_counts(outcome.findings),
            "worst": public_finding(top) if top else None,
        }
        accounts.append(account)

    result = {
        "observed_at": now.isoformat(),
        "concurrency": _concurrency(),
        "max_concurrent_reads": peak,
        "account_count": len(outcomes),
        "agents": [_agent_result(a) for a in agents],
    }
    with transaction.atomic():
        for chunk in _chunks(unchanged):
            AuditSnapshot.objects.filter(pk__in=chunk).update(confirmed_at=now, run=run)
        for chunk in _chunks(superseded):
            AuditSnapshot.objects.filter(pk__in=chunk).update(is_latest=False)
        AuditSnapshot.objects.bulk_create(created, batch_size=200)
        EcrAccount.objects.bulk_update(
            accounts, ["drifted", "last_audit_at", "last_audit_summary"], batch_size=200
        )
        Run.objects.filter(pk=run.pk).update(result=result)
    run.result = result
    return new_high


def _chunks(items: list[int], size: int = 500) -> Iterable[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _snapshot(
    run: Run, outcome: AccountOutcome, prev: AuditSnapshot | None, digest: str, now: datetime
) -> AuditSnapshot:
    counts = severity_counts(outcome.findings)
    out_of_sync = outcome.status in (AuditStatus.DRIFTED, AuditStatus.MISSING)
    if outcome.status == AuditStatus.UNREACHABLE:
        drift_since = prev.drift_since if prev else None
    elif out_of_sync:
        drift_since = prev.drift_since if prev and prev.drift_since else now
    else:
        drift_since = None
    top = worst(outcome.findings)
    codes = sorted({f["code"] for f in outcome.findings})
    return AuditSnapshot(
        run=run,
        ecr_account=outcome.facts.account,
        account_id=outcome.facts.account.account_id,
        observed_at=now,
        confirmed_at=now,
        status=outcome.status,
        drift_since=drift_since,
        live=outcome.live,
        desired=outcome.desired,
        findings=outcome.findings,
        plan=outcome.plan,
        severity_rank=SEVERITY_RANK[top["severity"]] if top else 0,
        finding_codes=(" " + " ".join(codes) + " ") if codes else "",
        critical_count=counts[Severity.CRITICAL],
        high_count=counts[Severity.HIGH],
        medium_count=counts[Severity.MEDIUM],
        low_count=counts[Severity.LOW],
        digest=digest,
        is_latest=True,
    )


def _agent_result(read: AgentRead) -> dict[str, Any]:
    if read.error:
        status = AuditStatus.UNREACHABLE
    elif read.identity is None:
        status = AuditStatus.MISSING
    elif read.plan is not None and not read.plan.is_empty:
        status = AuditStatus.DRIFTED
    else:
        status = AuditStatus.IN_SYNC
    return {
        "name": read.agent.name,
        "arn": read.agent.arn,
        "kind": read.agent.kind,
        "layout": read.live_layout if not read.error else "",
        "desired_layout": read.desired.layout if read.desired else "",
        "status": status,
        "findings": [f.to_dict() for f in read.findings],
        "changes": [c.summary for c in read.plan.changes] if read.plan else [],
        "sizes": {label: _size(doc) for label, doc in read.live_documents().items()},
    }


# --- notification of new high-severity findings ------------------------------------------------------


class WebhookError(Exception):
    """The webhook answered with an error status: the task retries."""


def webhook_payload(run: Run, finding: dict[str, Any]) -> dict[str, Any]:
    return {
        "event": "audit.finding",
        "run_id": run.pk,
        "observed_at": (run.result or {}).get("observed_at", ""),
        "account_id": finding.get("account_id", ""),
        "agent": finding.get("agent", ""),
        "code": finding["code"],
        "severity": finding["severity"],
        "title": CHECKS[finding["code"]].title,
        "message": finding["message"],
    }


def notify_new_findings(run: Run, new_high: list[dict[str, Any]]) -> None:
    """WARNING log lines, and one webhook task per finding. Never raises: the audit has its result."""
    url = settings.AUDIT_WEBHOOK_URL
    for finding in new_high:
        where = finding.get("account_id") or f"agent {finding.get('agent')}"
        log.warning(
            "new %s audit finding %s on %s: %s",
            finding["severity"],
            finding["code"],
            where,
            finding["message"],
        )
        if not url:
            continue
        try:
            from .tasks import post_audit_webhook

            post_audit_webhook.apply_async(args=[webhook_payload(run, finding)], retry=False)
        except Exception as exc:  # a broker outage must not fail a finished audit
            log.error("could not queue the audit webhook for %s on %s: %s", finding["code"], where, exc)
    if new_high:
        run.log(f"{len(new_high)} new high-severity finding(s)", level="WARNING")


def post_webhook(payload: dict[str, Any]) -> int:
    """POST one finding as JSON; an error status raises WebhookError so the task retries."""
    import requests

    response = requests.post(
        settings.AUDIT_WEBHOOK_URL,
        json=payload,
        timeout=10,
        headers={"User-Agent": "ecr-broker-portal-audit"},
    )
    if response.status_code >= 400:
        raise WebhookError(f"the webhook answered {response.status_code}")
    return response.status_code


# --- the service -------------------------------------------------------------------------------------


def audit_request(
    *,
    user=None,
    accounts: Iterable[EcrAccount] | None = None,
    enqueue: bool = True,
    request_id: str = "",
) -> Run:
    """Queue an audit of every account (accounts=None) or of these. Read-only: it changes no AWS state.

    A full audit that is already queued or running is returned instead of starting a second one.
    """
    if accounts is None:
        active = Run.objects.filter(
            kind=RunKind.AUDIT, status__in=ACTIVE_RUN_STATUSES, options__scope="all"
        ).first()
        if active is not None:
            return active
        return services.run_request(
            kind=RunKind.AUDIT, user=user, options={"scope": "all"}, request_id=request_id, enqueue=enqueue
        )
    ids = sorted({a.account_id for a in accounts})
    with transaction.atomic():
        run = services.run_request(
            kind=RunKind.AUDIT,
            user=user,
            options={"scope": "accounts", "account_ids": ids},
            request_id=request_id,
            enqueue=enqueue,
        )
        # Targets as text for the run pages; no account link, so the run page offers no broker files.
        Run.objects.filter(pk=run.pk).update(targets=ids)
        run.targets = ids
    return run


# --- the report (command line and JSON export) ----------------------------------------------------------


def report(snapshots: Iterable[AuditSnapshot], agents: list[dict[str, Any]], generated_at: datetime) -> dict:
    """The JSON document of the audit issue: agents and accounts with their findings."""
    return {
        "generated_at": generated_at.isoformat(),
        "agents": [
            {
                "name": a["name"],
                "arn": a["arn"],
                "layout": a.get("layout", ""),
                "findings": [public_finding(f) for f in a.get("findings", [])],
            }
            for a in agents
        ],
        "accounts": [
            {
                "account_id": s.account_id,
                "alias": s.ecr_account.alias if s.ecr_account else "",
                "role_arn": s.live.get("role_arn", ""),
                "status": s.status,
                "trusted_principals": s.live.get("trusted_principals", []),
                "external_ids": s.live.get("external_ids", []),
                "findings": [public_finding(f) for f in s.findings],
            }
            for s in snapshots
        ],
    }


def run_report(run: Run) -> dict:
    snapshots = AuditSnapshot.objects.filter(run=run).select_related("ecr_account").order_by("account_id")
    observed = (run.result or {}).get("observed_at")
    generated = datetime.fromisoformat(observed) if observed else (run.finished_at or timezone.now())
    return report(snapshots, (run.result or {}).get("agents", []), generated)


def has_findings_or_drift(document: dict) -> bool:
    return any(a["findings"] for a in document["agents"]) or any(
        a["findings"] or a["status"] != AuditStatus.IN_SYNC for a in document["accounts"]
    )

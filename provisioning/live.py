"""Live reads: what IAM holds now, one function per resource, through aws.py (never a write).

A reader takes what the comparison (compare.py) will need and reads exactly that. An ECR account
is read in one call where IAM answers it whole (GetAccountAuthorizationDetails), else resource by
resource: then what to read beyond the base documents is decided by compare's own predicates, so
the reads and the comparison can never disagree about which resources matter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from accounts.models import AgentIdentity, EcrAccount

from . import aws, compare, policies


@dataclass
class LivePolicy:
    """A customer-managed policy: its metadata (tags, default version), document and versions."""

    policy: dict[str, Any]
    document: Any = None
    versions: list[dict[str, Any]] | None = None  # read only when a change needs them


@dataclass
class LiveAccount:
    """An ECR account's service role, read-only policy and the role's policies."""

    role: dict[str, Any] | None
    policy: dict[str, Any] | None
    read_document: Any = None
    attached: list[str] = field(default_factory=list)
    inline_names: list[str] = field(default_factory=list)
    inline: dict[str, Any] = field(default_factory=dict)  # documents: read by the audit only
    versions: list[dict[str, Any]] | None = None


@dataclass
class LiveAgent:
    """The agent's IAM identity, its instance profile (roles) and its permission policies."""

    identity: dict[str, Any] | None
    instance_profile: dict[str, Any] | None = None
    inline: Any = None  # the portal's inline policy (agent.policy_name)
    attached: list[str] = field(default_factory=list)
    managed: dict[str, LivePolicy] = field(default_factory=dict)  # the portal's managed policies by ARN
    inline_all: dict[str, Any] = field(default_factory=dict)  # every inline document: the audit only
    runtime: LiveRuntime = field(default_factory=lambda: LiveRuntime())


@dataclass
class LiveRuntime:
    """What a role agent's runtime needs besides its role: the cluster's OIDC provider (IRSA), the
    Pod Identity association of its service account (Pod Identity, or one left from it)."""

    oidc_provider: dict[str, Any] | None = None
    oidc_read: bool = False
    association: dict[str, Any] | None = None
    association_read: bool = False


def document(value: Any) -> Any:
    """IAM answers documents as dicts (boto3 decodes them); hand-made fixtures may give strings."""
    return policies.normalize(value) if isinstance(value, str) else value


def read_service_role(account: EcrAccount) -> dict[str, Any] | None:
    """Only the service role (its trust): what the account page's live trust panel shows."""
    return aws.Iam(compare.access_of(account)).get_role(account.service_role_name)


# GetAccountAuthorizationDetails (one call: every role and local managed policy of the account) is
# read when it answers the whole account in one page; accounts where it does not (many roles, or it
# is not granted) are read resource by resource, remembered for the life of the process. A page of
# at most 100 roles and policies: beyond that one answer would weigh more than the four reads it saves.
AUTHORIZATION_DETAILS_FILTER = ["Role", "LocalManagedPolicy"]
AUTHORIZATION_DETAILS_MAX_ITEMS = 100
_read_one_by_one: set[str] = set()


def read_account(account: EcrAccount, wanted: compare.AccountWanted, *, full: bool = False) -> LiveAccount:
    """The account's resources as `wanted` needs them compared; `full` (audit) reads every document.

    Three calls for an account with resources (AssumeRole, the authorization details, GetPolicy
    for the policy's tags, which the details do not list) and two for one without, whatever is
    compared: the details hold every document (trust, inline, every version of the policy)."""
    iam = aws.Iam(compare.access_of(account))
    if account.account_id not in _read_one_by_one:
        at_once = _read_account_at_once(iam, account)
        if at_once is not None:
            return at_once
        _read_one_by_one.add(account.account_id)
    return _read_account_one_by_one(iam, account, wanted, full=full)


def _read_account_at_once(iam: aws.Iam, account: EcrAccount) -> LiveAccount | None:
    """The account from one page of its authorization details; None when that is not the whole account."""
    try:
        page = iam.authorization_details_page(AUTHORIZATION_DETAILS_FILTER, AUTHORIZATION_DETAILS_MAX_ITEMS)
    except aws.AwsError as exc:
        if exc.code != "AccessDenied":
            raise
        return None
    if page is None:
        return None
    role_name, policy_arn = account.service_role_name, account.read_policy_arn
    role = next((r for r in page.get("RoleDetailList", []) if r.get("RoleName") == role_name), None)
    policy = next((p for p in page.get("Policies", []) if p.get("Arn") == policy_arn), None)
    live = LiveAccount(role=None, policy=None)
    if role is not None:
        live.role = {k: v for k, v in role.items() if k not in ROLE_DETAIL_LISTS}
        live.attached = [p["PolicyArn"] for p in role.get("AttachedManagedPolicies") or []]
        live.inline = {
            p["PolicyName"]: document(p["PolicyDocument"]) for p in role.get("RolePolicyList") or []
        }
        live.inline_names = list(live.inline)
    if policy is not None:
        live.policy = iam.get_policy(policy_arn)  # its tags: who made it
    if live.policy is not None and policy is not None:
        versions = policy.get("PolicyVersionList") or []
        live.versions = [{k: v for k, v in version.items() if k != "Document"} for version in versions]
        default = live.policy["DefaultVersionId"]
        live.read_document = next(
            (document(v.get("Document")) for v in versions if v.get("VersionId") == default), None
        )
        if live.read_document is None:  # a version made between the two calls
            live.read_document = document(iam.get_policy_document(policy_arn, default))
    return live


ROLE_DETAIL_LISTS = ("RolePolicyList", "AttachedManagedPolicies", "InstanceProfileList")


def _read_account_one_by_one(
    iam: aws.Iam, account: EcrAccount, wanted: compare.AccountWanted, *, full: bool
) -> LiveAccount:
    """Each resource read on its own (a large account): four reads for a re-apply, more for the audit."""
    role_name, policy_arn = account.service_role_name, account.read_policy_arn
    live = LiveAccount(role=iam.get_role(role_name), policy=iam.get_policy(policy_arn))
    if live.role is not None:
        live.attached = iam.list_attached_policies("role", role_name)
    if live.policy is not None and (full or not wanted.remove):
        live.read_document = document(iam.get_policy_document(policy_arn, live.policy["DefaultVersionId"]))
    if live.role is not None and (full or compare.account_needs_inline_names(account, wanted, live)):
        live.inline_names = iam.list_inline_policies("role", role_name)
    if full:
        live.inline = {
            name: document(iam.get_inline_policy("role", role_name, name)) for name in live.inline_names
        }
    if live.policy is not None and compare.account_needs_versions(account, wanted, live):
        live.versions = iam.list_policy_versions(policy_arn)
    return live


def read_agent_identity(agent: AgentIdentity) -> LiveAgent:
    """The role (with its instance profile and what its runtime needs) or the user."""
    iam = aws.Iam(compare.access_of(agent))
    if agent.kind == "role":
        return LiveAgent(
            identity=iam.get_role(agent.iam_name),
            instance_profile=read_instance_profile(agent),
            runtime=read_runtime(agent),
        )
    return LiveAgent(identity=iam.get_user(agent.iam_name))


def read_runtime(agent: AgentIdentity) -> LiveRuntime:
    """The OIDC provider an IRSA trust names; the association of an EKS agent's service account
    (a Pod Identity agent's own, or one left when it moved to IRSA)."""
    live = LiveRuntime()
    if compare.needs_oidc_provider(agent):
        arn = policies.oidc_provider_arn(agent.account_id, agent.oidc_issuer)
        live.oidc_provider = aws.Iam(compare.access_of(agent)).get_open_id_connect_provider(arn)
        live.oidc_read = True
    cluster = compare.association_cluster(agent)
    if cluster is not None:
        region, name = cluster
        eks = aws.Eks(compare.access_of(agent), region)
        live.association = eks.pod_identity_association(name, agent.namespace, agent.service_account)
        live.association_read = True
    return live


def read_access_keys(agent: AgentIdentity) -> list[dict[str, Any]]:
    """The user agent's access keys (ids and states; IAM never answers a secret twice)."""
    return aws.Iam(compare.access_of(agent)).list_access_keys(agent.iam_name)


def read_instance_profile(agent: AgentIdentity) -> dict[str, Any] | None:
    return aws.Iam(compare.access_of(agent)).get_instance_profile(agent.iam_name)


def read_agent_permissions(
    agent: AgentIdentity, desired: policies.AgentPermissions | None, *, full: bool = False
) -> LiveAgent:
    """The identity and what grants it sts:AssumeRole: the portal's inline and managed policies.

    Managed policies the desired layout names are read whether attached or not (one may exist from an
    earlier layout); attached ones named like the portal's are read to be detached (and deleted
    when the portal made them). `full` (audit) also reads every inline document.
    """
    kind, name = agent.kind, agent.iam_name
    iam = aws.Iam(compare.access_of(agent))
    live = LiveAgent(identity=iam.get_role(name) if kind == "role" else iam.get_user(name))
    if live.identity is None:
        return live
    if full:
        live.inline_all = {
            n: document(iam.get_inline_policy(kind, name, n)) for n in iam.list_inline_policies(kind, name)
        }
        live.inline = live.inline_all.get(agent.policy_name)
    else:
        live.inline = document(iam.get_inline_policy(kind, name, agent.policy_name))
    live.attached = iam.list_attached_policies(kind, name)
    pattern = compare.managed_policy_pattern(agent)
    wanted = {compare.managed_arn(agent, n): doc for n, doc in (desired.managed if desired else {}).items()}
    for arn in [*wanted, *(a for a in live.attached if pattern.match(a) and a not in wanted)]:
        policy = iam.get_policy(arn)
        if policy is None:
            continue
        managed = LivePolicy(policy)
        if arn in wanted or full:
            managed.document = document(iam.get_policy_document(arn, policy["DefaultVersionId"]))
        if compare.managed_needs_versions(arn, wanted.get(arn), managed, desired is not None):
            managed.versions = iam.list_policy_versions(arn)
        live.managed[arn] = managed
    return live

"""The exact text of every finding, rendered from the statement it is about (issue 11, item 19).

Pure: each case builds what the audit read (no AWS, no database) and runs the rules on it. The
crafted live states of test_audit_findings.py check the codes and severities end to end; these
check that each message names the statement's principals, its ExternalId condition or its absence,
and the policy or resource it is in.
"""

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from accounts.choices import Lifecycle
from accounts.models import AgentIdentity, EcrAccount
from provisioning import aws, policies
from provisioning.audit.agent_rules import agent_findings, agent_grant_findings
from provisioning.audit.catalogue import CHECKS, Finding
from provisioning.audit.reads import AccountFacts, AccountRead, AgentRead, ExternalIdFact
from provisioning.audit.rules import account_findings
from provisioning.changes import Change, Plan

NOW = timezone.now()
AGENT_ARN = "arn:aws:iam::111111111111:role/SnykCraEc2Role"
ROLE_ARN = "arn:aws:iam::222222222222:role/SnykEcrServiceRole"
READ_POLICY_ARN = "arn:aws:iam::222222222222:policy/AmazonEC2ContainerRegistryReadOnlyForSnyk"
CONTRACTOR = "arn:aws:iam::444444444444:role/Contractor"
EXT = "ext-222222222222"
STRICT = {"StringEquals": {"sts:ExternalId": EXT}}
NO_CONDITION: dict[str, Any] = {}
WHERE = "Statement 1 of the trust of SnykEcrServiceRole"


def agent_identity(**fields: Any) -> AgentIdentity:
    return AgentIdentity(
        name="cra", kind="role", account_id="111111111111", iam_name="SnykCraEc2Role", **fields
    )


def ecr_account(**fields: Any) -> EcrAccount:
    return EcrAccount(account_id="222222222222", agent=agent_identity(), **fields)


def statement(principal: Any, condition: dict[str, Any] | None = None, **more: Any) -> dict[str, Any]:
    st = {"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole", **more}
    if condition:
        st["Condition"] = condition
    return st


def trust(*sts: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(sts)}


def account_read(
    trust_document: dict[str, Any] | None = None,
    *,
    ids: list[ExternalIdFact] | None = None,
    used: str = EXT,
    account: EcrAccount | None = None,
    **fields: Any,
) -> AccountRead:
    """An account in sync (the desired trust, policy and attachment) but for what the case changes."""
    facts = AccountFacts(
        account or ecr_account(), ids if ids is not None else [ExternalIdFact(EXT, "active", None)], used
    )
    in_sync: dict[str, Any] = {
        "role": {
            "AssumeRolePolicyDocument": trust_document or policies.service_role_trust_policy(AGENT_ARN, [EXT])
        },
        "policy": {"DefaultVersionId": "v1"},
        "read_document": policies.read_only_policy(),
        "attached": [READ_POLICY_ARN],
    }
    return AccountRead(facts, **{**in_sync, **fields})


def findings_of(read: AccountRead) -> list[Finding]:
    return account_findings(read, NOW)


def of_trust(*sts: dict[str, Any], **fields: Any) -> Callable[[], list[Finding]]:
    return lambda: findings_of(account_read(trust(*sts), **fields))


def assume(resource: str, sid: str = "") -> dict[str, Any]:
    return {
        "Effect": "Allow",
        "Action": "sts:AssumeRole",
        "Resource": resource,
        **({"Sid": sid} if sid else {}),
    }


def agent_read(*sts: dict[str, Any], managed: dict[str, Any] | None = None, **fields: Any) -> AgentRead:
    """The agent, its inline policy holding these statements (and the account's own)."""
    inline = {"SnykCraAssumeRolePolicy": {"Version": "2012-10-17", "Statement": [assume(ROLE_ARN), *sts]}}
    values: dict[str, Any] = {"identity": {"Arn": AGENT_ARN}, "inline": inline, "managed": managed or {}}
    return AgentRead(agent_identity(), {"222222222222": ROLE_ARN}, **{**values, **fields})


PROVIDER = "oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
PROVIDER_ARN = f"arn:aws:iam::111111111111:oidc-provider/{PROVIDER}"
WEB_IDENTITY = {
    "Effect": "Allow",
    "Principal": {"Federated": PROVIDER_ARN},
    "Action": "sts:AssumeRoleWithWebIdentity",
}


def trusting(statement: dict[str, Any], **agent: Any) -> AgentRead:
    """A role agent (on this runtime) whose trust is this one statement."""
    identity = {"Arn": AGENT_ARN, "AssumeRolePolicyDocument": trust(statement)}
    return AgentRead(agent_identity(**agent), {}, identity=identity)


def compact(statement: dict[str, Any]) -> str:
    return json.dumps(statement, sort_keys=True, separators=(",", ":"))


SUB_LIKE = {
    **WEB_IDENTITY,
    "Condition": {
        "StringLike": {f"{PROVIDER}:sub": "system:serviceaccount:*:*"},
        "StringEquals": {f"{PROVIDER}:aud": "sts.amazonaws.com"},
    },
}
SUB_ONLY = {**WEB_IDENTITY, "Condition": {"StringEquals": {f"{PROVIDER}:sub": "system:serviceaccount:a:b"}}}
PODS = {"Effect": "Allow", "Principal": {"Service": "pods.eks.amazonaws.com"}, "Action": ["sts:AssumeRole"]}
ECS = {"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}


def coded(read: Callable[[], AgentRead], code: str) -> Callable[[], list[Finding]]:
    return lambda: [f for f in agent_findings(read(), STATUSES) if f.code == code]


def without_provider() -> AgentRead:
    read = trusting(WEB_IDENTITY, runtime="eks-irsa", oidc_issuer=f"https://{PROVIDER}")
    read.runtime.oidc_read = True
    return read


STATUSES = {
    "222222222222": Lifecycle.ACTIVE,
    "666666666666": Lifecycle.REMOVED,
    "777777777777": Lifecycle.DRAFT,
}


def of_agent(read: AgentRead) -> Callable[[], list[Finding]]:
    return lambda: agent_findings(read, STATUSES)


def change(summary: str) -> Change:
    access = aws.Access("111111111111")
    return Change(
        "111111111111", access, "update", "iam:PutRolePolicy", "put_role_policy", {}, AGENT_ARN, summary
    )


def rotation(*, in_trust: bool) -> Callable[[], list[Finding]]:
    """The new id is current; the old one retires since 30 days and is (or no longer is) in the trust."""
    ids = [
        ExternalIdFact("ext-new-333333333333", "active", None),
        ExternalIdFact(EXT, "retiring", NOW - timedelta(days=30)),
    ]
    accepted = ["ext-new-333333333333", EXT] if in_trust else ["ext-new-333333333333"]
    document = policies.service_role_trust_policy(AGENT_ARN, accepted)
    return lambda: findings_of(account_read(document, ids=ids, used="ext-new-333333333333"))


def near_quota_trust() -> dict[str, Any]:
    ids = [f"rotation-id-{n:03d}-xxxxxxxxxxxxxxxxxxxxxxxxxx" for n in range(38)]
    return trust(statement({"AWS": AGENT_ARN}, {"StringEquals": {"sts:ExternalId": ids}}))


def removed_account() -> list[Finding]:
    read = account_read(account=ecr_account(status=Lifecycle.REMOVED), plan=Plan([change("delete the role")]))
    return findings_of(read)


def unreadable_account() -> list[Finding]:
    reach = "arn:aws:iam::222222222222:role/PortalManagement"
    return findings_of(account_read(account=ecr_account(management_role_arn=reach), error="AccessDenied: no"))


def missing_grant() -> list[Finding]:
    agent = agent_read()
    agent.inline = {
        "SnykCraAssumeRolePolicy": trust(assume("arn:aws:iam::333333333333:role/SnykEcrServiceRole"))
    }
    return agent_grant_findings(account_read(), agent)[0]


UNUSED = "leaked-id-from-an-old-broker"
# (code, case name, the findings of the case, every message of that code they hold)
CASES: list[tuple[str, str, Callable[[], list[Finding]], list[str]]] = [
    (
        "account-unreachable",
        "through its management role",
        unreadable_account,
        [
            "The account could not be read through arn:aws:iam::222222222222:role/PortalManagement: "
            "AccessDenied: no"
        ],
    ),
    (
        "role-missing",
        "deleted",
        lambda: findings_of(account_read(role=None, attached=[])),
        [f"The service role {ROLE_ARN} does not exist."],
    ),
    (
        "policy-missing",
        "deleted",
        lambda: findings_of(account_read(policy=None, read_document=None, attached=[])),
        [f"The read-only policy {READ_POLICY_ARN} does not exist."],
    ),
    (
        "attachment-missing",
        "detached",
        lambda: findings_of(account_read(attached=[])),
        [
            "AmazonEC2ContainerRegistryReadOnlyForSnyk is not attached to SnykEcrServiceRole: the broker "
            "can assume the role but cannot read ECR."
        ],
    ),
    (
        "trust-differs",
        "an extra condition",
        of_trust(statement({"AWS": AGENT_ARN}, {**STRICT, "Bool": {"aws:SecureTransport": "true"}})),
        ["The trust of SnykEcrServiceRole differs from the desired one (see the diff)."],
    ),
    (
        "principal-wildcard",
        "no condition",
        of_trust(statement({"AWS": "*"})),
        [
            f'{WHERE} lets any AWS principal ("*") assume the role with no sts:ExternalId condition: '
            "anyone at all can assume it without knowing any ExternalId and read every ECR repository "
            "in the account."
        ],
    ),
    (
        "principal-wildcard",
        "an ExternalId that accepts any id",
        of_trust(statement("*", {"StringLike": {"sts:ExternalId": "*"}})),
        [
            f'{WHERE} lets any AWS principal ("*") assume the role with an sts:ExternalId condition that '
            "accepts any id (StringLike with ['*'] accepts any id): anyone at all can assume it without "
            "knowing any ExternalId and read every ECR repository in the account."
        ],
    ),
    (
        "principal-wildcard",
        "with the ExternalId",
        of_trust(statement({"AWS": "*"}, STRICT)),
        [
            f'{WHERE} lets any AWS principal ("*") assume the role only with ExternalId ext-2222…: '
            "anyone who knows (or guesses) the ExternalId can read every ECR repository in the account."
        ],
    ),
    (
        "principal-wildcard",
        "NotPrincipal",
        lambda: findings_of(
            account_read(
                trust(
                    {
                        "Effect": "Allow",
                        "NotPrincipal": {"AWS": CONTRACTOR},
                        "Action": "sts:AssumeRole",
                        "Condition": STRICT,
                    }
                )
            )
        ),
        [
            f"{WHERE} lets every principal but {CONTRACTOR} (NotPrincipal) assume the role only with "
            f"ExternalId ext-2222…: anyone but {CONTRACTOR} who knows (or guesses) the ExternalId can "
            "read every ECR repository in the account."
        ],
    ),
    (
        "principal-account-root",
        "the agent's account",
        of_trust(statement({"AWS": "arn:aws:iam::111111111111:root"}, STRICT)),
        [
            f"{WHERE} trusts the whole account 111111111111 (arn:aws:iam::111111111111:root) only with "
            "ExternalId ext-2222…: every role and user there with sts:AssumeRole may assume this role, "
            "not only the agent."
        ],
    ),
    (
        "principal-account-root",
        "another account, by its id",
        of_trust(statement({"AWS": [AGENT_ARN, "444444444444"]}, STRICT)),
        [
            f"{WHERE} trusts the whole account 444444444444 only with ExternalId ext-2222…: every role "
            "and user there with sts:AssumeRole may assume this role."
        ],
    ),
    (
        "principal-unique-id",
        "a deleted role",
        of_trust(statement({"AWS": "AROAQWERTYUIOPASDFGHJ"}, STRICT)),
        [
            f"{WHERE} shows the unique id AROAQWERTYUIOPASDFGHJ instead of an ARN: the principal it "
            "trusted was deleted, so trust is broken even if a principal of the same name exists again. "
            "Reconcile to trust the agent by ARN."
        ],
    ),
    (
        "principal-not-agent",
        "beside the agent",
        of_trust(statement({"AWS": [AGENT_ARN, CONTRACTOR]}, STRICT)),
        [
            f"{WHERE} lets {CONTRACTOR} assume the role only with ExternalId ext-2222…; only the agent "
            f"{AGENT_ARN} should."
        ],
    ),
    (
        "external-id-missing",
        "the agent, no condition",
        of_trust(statement({"AWS": AGENT_ARN})),
        [
            f"{WHERE} trusts the agent {AGENT_ARN} with no sts:ExternalId condition: the agent can be "
            "made to assume this role for someone else (confused deputy)."
        ],
    ),
    (
        "external-id-missing",
        "anyone, no condition",
        of_trust(statement({"AWS": "*"})),
        [
            f'{WHERE} trusts any AWS principal ("*") with no sts:ExternalId condition: anyone may assume '
            "this role without an ExternalId."
        ],
    ),
    (
        "external-id-missing",
        "an optional condition",
        of_trust(statement({"AWS": AGENT_ARN}, {"StringEqualsIfExists": {"sts:ExternalId": EXT}})),
        [
            f"{WHERE} trusts the agent {AGENT_ARN} with only StringEqualsIfExists on sts:ExternalId, which "
            "passes when no id is sent: the agent can be made to assume this role for someone else "
            "(confused deputy)."
        ],
    ),
    (
        "external-id-missing",
        "a second statement, another principal",
        of_trust(
            statement({"AWS": AGENT_ARN}, STRICT),
            statement(
                {"AWS": CONTRACTOR}, {"Bool": {"aws:MultiFactorAuthPresent": "true"}}, Sid="Contractor"
            ),
        ),
        [
            f'Statement 2 ("Contractor") of the trust of SnykEcrServiceRole trusts {CONTRACTOR} with no '
            f"sts:ExternalId condition: {CONTRACTOR} may assume this role without an ExternalId."
        ],
    ),
    (
        "external-id-wildcard",
        "any id",
        of_trust(statement({"AWS": AGENT_ARN}, {"StringLike": {"sts:ExternalId": "*"}})),
        [
            f"{WHERE} trusts the agent {AGENT_ARN}, but its sts:ExternalId condition is ineffective: "
            "StringLike with ['*'] accepts any id."
        ],
    ),
    (
        "external-id-unused",
        "an id the portal does not know",
        of_trust(statement({"AWS": AGENT_ARN}, {"StringEquals": {"sts:ExternalId": [EXT, UNUSED]}})),
        [
            f"{WHERE} accepts ExternalId leaked-i…, which the portal does not know and no broker uses: "
            f"whoever holds it can have the agent {AGENT_ARN} assume this role."
        ],
    ),
    (
        "external-id-unused",
        "an unknown id, anyone",
        of_trust(statement({"AWS": "*"}, {"StringEquals": {"sts:ExternalId": [EXT, UNUSED]}})),
        [
            f"{WHERE} accepts ExternalId leaked-i…, which the portal does not know and no broker uses: "
            "whoever holds it can assume this role."
        ],
    ),
    (
        "external-id-unused",
        "an active id no broker uses",
        of_trust(
            statement({"AWS": AGENT_ARN}, {"StringEquals": {"sts:ExternalId": [EXT, "ext-spare-00000"]}}),
            ids=[ExternalIdFact(EXT, "active", None), ExternalIdFact("ext-spare-00000", "active", None)],
        ),
        [f"{WHERE} accepts ExternalId ext-spar…, which no active broker of this account uses."],
    ),
    (
        "external-id-retiring-expired",
        "still in the trust",
        rotation(in_trust=True),
        [
            "ExternalId ext-2222… has been retiring for 30 days (grace period 14 days) and the trust of "
            "SnykEcrServiceRole still accepts it: finish the rotation so it is removed."
        ],
    ),
    (
        "external-id-retiring-expired",
        "no longer in the trust",
        rotation(in_trust=False),
        [
            "ExternalId ext-2222… has been retiring for 30 days (grace period 14 days), but the trust of "
            "SnykEcrServiceRole no longer accepts it: retire it in the portal to finish the rotation."
        ],
    ),
    (
        "read-policy-extra-actions",
        "a write and a wildcard",
        lambda: findings_of(
            account_read(
                read_document=trust(assume("*") | {"Action": ["ecr:BatchGetImage", "ecr:PutImage", "ecr:*"]})
            )
        ),
        [
            "AmazonEC2ContainerRegistryReadOnlyForSnyk allows more than the 11 ECR read actions: ecr:*, ecr:PutImage."
        ],
    ),
    (
        "read-policy-missing-actions",
        "two actions",
        lambda: findings_of(
            account_read(
                read_document=trust(assume("*") | {"Action": ["ecr:GetAuthorizationToken", "ecr:Batch*"]})
            )
        ),
        [
            "AmazonEC2ContainerRegistryReadOnlyForSnyk lacks ecr:GetLifecyclePolicyPreview, "
            "ecr:GetDownloadUrlForLayer, ecr:DescribeImages, ecr:DescribeRepositories, "
            "ecr:ListTagsForResource, ecr:ListImages, ecr:GetRepositoryPolicy, ecr:GetLifecyclePolicy: "
            "scans of this account fail or are incomplete."
        ],
    ),
    (
        "extra-policy-attached",
        "attached and inline",
        lambda: findings_of(
            account_read(
                attached=[READ_POLICY_ARN, "arn:aws:iam::222222222222:policy/Everything"],
                inline={"Handy": trust(assume("*"))},
            )
        ),
        [
            "arn:aws:iam::222222222222:policy/Everything is attached to SnykEcrServiceRole: whoever "
            "assumes the role gets its permissions too.",
            "SnykEcrServiceRole has an inline policy Handy: whoever assumes the role gets its permissions too.",
        ],
    ),
    (
        "size-near-quota",
        "a trust of 38 ids",
        lambda: findings_of(account_read(near_quota_trust())),
        [
            "The trust of SnykEcrServiceRole is 1911 characters, 93 % of IAM's quota of 2048: the next "
            "change may not fit."
        ],
    ),
    (
        "removed-resources-remain",
        "role and policy",
        removed_account,
        [
            "The account was removed from the portal but its role and read-only policy still exist in AWS. "
            "Offboard it again to delete them."
        ],
    ),
    (
        "inventory-invalid",
        "no ExternalId",
        lambda: findings_of(account_read(plan_error="A service role trust needs at least one ExternalId.")),
        ["A service role trust needs at least one ExternalId."],
    ),
    (
        "agent-permission-missing",
        "another account's role only",
        missing_grant,
        [
            f"The agent cra's permissions do not allow sts:AssumeRole on {ROLE_ARN}: the broker cannot "
            "scan this account."
        ],
    ),
    (
        "agent-unreachable",
        "the portal's own credentials",
        of_agent(AgentRead(agent_identity(), {}, error="AccessDenied: no")),
        ["The agent's account could not be read through the portal's own credentials: AccessDenied: no"],
    ),
    (
        "agent-missing",
        "deleted",
        of_agent(AgentRead(agent_identity(), {})),
        [f"The agent {AGENT_ARN} does not exist."],
    ),
    (
        "agent-resource-wildcard",
        "every role, and a pattern",
        of_agent(
            agent_read(
                assume("*", sid="Everything"),
                managed={
                    "arn:aws:iam::111111111111:policy/SnykCraAssumeRolePolicy-1": trust(
                        assume("arn:aws:iam::*:role/SnykEcrServiceRole")
                    )
                },
            )
        ),
        [
            'inline SnykCraAssumeRolePolicy (statement Everything) allows sts:AssumeRole on "*": the agent '
            "may assume any role that trusts it, not only the service roles the portal manages.",
            'managed SnykCraAssumeRolePolicy-1 allows sts:AssumeRole on "arn:aws:iam::*:role/SnykEcrServiceRole": '
            "the agent may assume any role matching it that trusts it, not only the service roles the portal "
            "manages.",
        ],
    ),
    (
        "agent-unmanaged-account",
        "unknown and draft",
        of_agent(
            agent_read(
                assume("arn:aws:iam::555555555555:role/SnykEcrServiceRole"),
                assume("arn:aws:iam::777777777777:role/SnykEcrServiceRole", sid="Draft"),
            )
        ),
        [
            "inline SnykCraAssumeRolePolicy allows sts:AssumeRole on arn:aws:iam::555555555555:role/"
            "SnykEcrServiceRole, but it is not the service role of an account the portal manages.",
            "inline SnykCraAssumeRolePolicy (statement Draft) allows sts:AssumeRole on arn:aws:iam::"
            "777777777777:role/SnykEcrServiceRole, but account 777777777777 is only a draft in the portal.",
        ],
    ),
    (
        "agent-removed-account",
        "a leftover statement",
        of_agent(agent_read(assume("arn:aws:iam::666666666666:role/SnykEcrServiceRole", sid="Leftover"))),
        [
            "inline SnykCraAssumeRolePolicy (statement Leftover) still allows sts:AssumeRole on "
            "arn:aws:iam::666666666666:role/SnykEcrServiceRole, but account 666666666666 was removed from "
            "the portal."
        ],
    ),
    (
        "agent-permissions-differ",
        "four changes",
        of_agent(agent_read(plan=Plan([change(s) for s in ("one", "two", "three", "four")]))),
        ["Reconciling the agent would make 4 changes: one; two; three and 1 more."],
    ),
    (
        "agent-trust-any-service-account",
        "a sub pattern",
        coded(lambda: trusting(SUB_LIKE), "agent-trust-any-service-account"),
        [
            f"The trust of SnykCraEc2Role lets tokens of {PROVIDER_ARN} in for :sub StringLike "
            "system:serviceaccount:*:*: every service account matching it may assume the agent role, not "
            f"only the agent's. Statement: {compact(SUB_LIKE)}"
        ],
    ),
    (
        "agent-trust-no-audience",
        "sub only",
        coded(lambda: trusting(SUB_ONLY), "agent-trust-no-audience"),
        [
            f"The trust of SnykCraEc2Role lets tokens of {PROVIDER_ARN} in without an :aud condition "
            "(sts.amazonaws.com): a token the cluster issued for any other audience is accepted too. "
            f"Statement: {compact(SUB_ONLY)}"
        ],
    ),
    (
        "agent-trust-no-tag-session",
        "AssumeRole only",
        of_agent(
            trusting(
                pods := {
                    "Effect": "Allow",
                    "Principal": {"Service": "pods.eks.amazonaws.com"},
                    "Action": ["sts:AssumeRole"],
                }
            )
        ),
        [
            "The trust of SnykCraEc2Role trusts pods.eks.amazonaws.com with sts:AssumeRole but not "
            "sts:TagSession: EKS Pod Identity tags every session, so pods cannot get the role. "
            f"Statement: {compact(PODS)}"
        ],
    ),
    (
        "agent-trust-no-source-condition",
        "no condition",
        of_agent(
            trusting(
                ecs := {
                    "Effect": "Allow",
                    "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                }
            )
        ),
        [
            "The trust of SnykCraEc2Role trusts ecs-tasks.amazonaws.com without aws:SourceAccount or "
            "aws:SourceArn: ECS acting for another account's task could be made to assume the agent role "
            f"(confused deputy). Statement: {compact(ECS)}"
        ],
    ),
    (
        "agent-oidc-provider-missing",
        "deleted provider",
        lambda: [
            f for f in agent_findings(without_provider(), STATUSES) if f.code == "agent-oidc-provider-missing"
        ],
        [
            f"The OIDC provider {PROVIDER_ARN} that the IRSA trust of SnykCraEc2Role names does not exist in "
            "account 111111111111: no pod can assume the agent role."
        ],
    ),
]


def test_every_finding_code_has_its_text_asserted():
    # The Snyk side's (universal agents): test_audit_snyk.py asserts the words of each.
    assert {code for code, *_ in CASES} == {code for code in CHECKS if not code.startswith("snyk-")}


@pytest.mark.parametrize(
    ("code", "findings", "messages"), [pytest.param(c, f, m, id=f"{c}: {n}") for c, n, f, m in CASES]
)
def test_the_finding_text_is_rendered_from_the_statement(settings, code, findings, messages):
    settings.EXTERNAL_ID_GRACE_DAYS = 14
    assert [f.message for f in findings() if f.code == code] == messages


def test_a_trust_in_sync_has_no_finding():
    assert findings_of(account_read()) == []
    assert agent_findings(agent_read(), STATUSES) == []


def test_a_statement_open_to_anyone_without_a_condition_says_anyone_at_all():
    """Not "anyone who knows the ExternalId", no dangling "(none)", and no agent named for "*"."""
    messages = {f.code: f.message for f in findings_of(account_read(trust(statement({"AWS": "*"}))))}
    assert "anyone at all can assume it" in messages["principal-wildcard"]
    assert "who knows" not in messages["principal-wildcard"]
    assert "(none)" not in messages["external-id-missing"]
    assert "agent" not in messages["external-id-missing"]

"""Every document of the guide, exact; sizes as IAM counts them; the layout switch under quotas."""

import json

import pytest

from provisioning import policies

AGENT = "arn:aws:iam::111111111111:role/SnykCraEc2Role"


def arns(n: int) -> dict[str, str]:
    return {f"{i:012d}": f"arn:aws:iam::{i:012d}:role/SnykEcrServiceRole" for i in range(1, n + 1)}


def test_read_only_policy_is_exactly_the_eleven_actions():
    assert policies.read_only_policy() == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": [
                    "ecr:GetLifecyclePolicyPreview",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchGetImage",
                    "ecr:DescribeImages",
                    "ecr:GetAuthorizationToken",
                    "ecr:DescribeRepositories",
                    "ecr:ListTagsForResource",
                    "ecr:ListImages",
                    "ecr:BatchCheckLayerAvailability",
                    "ecr:GetRepositoryPolicy",
                    "ecr:GetLifecyclePolicy",
                ],
                "Resource": "*",
            }
        ],
    }
    assert policies.READ_POLICY_DESCRIPTION == (
        "Provides Container Registry Agent with read-only access to "
        "Amazon EC2 Container Registry repositories"
    )


def test_agent_role_trust_is_ec2():
    assert policies.agent_role_trust_policy() == {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }


def test_service_role_trust_one_id_is_a_string_several_a_list():
    one = policies.service_role_trust_policy(AGENT, ["abc-1"])
    assert one == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": AGENT},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"sts:ExternalId": "abc-1"}},
            }
        ],
    }
    two = policies.service_role_trust_policy(AGENT, ["old-1", "new-2"])
    assert two["Statement"][0]["Condition"] == {"StringEquals": {"sts:ExternalId": ["old-1", "new-2"]}}
    # Valid JSON, unlike the guide's snippet.
    assert json.loads(json.dumps(two)) == two


def test_trust_policy_over_quota_is_refused_before_any_call():
    with pytest.raises(policies.LayoutError, match="2048"):
        policies.service_role_trust_policy(AGENT, ["x" * 1224, "y" * 1224])
    with pytest.raises(policies.LayoutError):
        policies.service_role_trust_policy(AGENT, [])


def test_agent_policy_one_statement_per_account_with_sids():
    doc = policies.agent_permissions("role", "SnykCraAssumeRolePolicy", arns(2)).inline
    assert doc == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "sts:AssumeRole",
                "Sid": "SnykCraAssumeRolePolicy000000000001",
                "Resource": "arn:aws:iam::000000000001:role/SnykEcrServiceRole",
            },
            {
                "Effect": "Allow",
                "Action": "sts:AssumeRole",
                "Sid": "SnykCraAssumeRolePolicy000000000002",
                "Resource": "arn:aws:iam::000000000002:role/SnykEcrServiceRole",
            },
        ],
    }
    assert "*" not in json.dumps(doc)


def test_sid_drops_characters_iam_refuses():
    assert policies.sid_for("Snyk-Cra.Policy@x", "123456789012") == "SnykCraPolicyx123456789012"


def test_no_accounts_means_no_permissions():
    permissions = policies.agent_permissions("user", "P", {})
    assert permissions.layout == policies.LAYOUT_NONE and permissions.inline is None


def test_size_ignores_whitespace():
    doc = policies.read_only_policy()
    assert policies.policy_size(doc) == len(json.dumps(doc, separators=(",", ":")))
    assert policies.policy_size(doc) < len(json.dumps(doc, indent=4))


def _switch_point(kind: str) -> int:
    n = 1
    while (
        policies.agent_permissions(kind, "SnykCraAssumeRolePolicy", arns(n)).layout
        == policies.LAYOUT_PER_ACCOUNT
    ):
        n += 1
    return n - 1


@pytest.mark.parametrize("kind,low,high", [("user", 12, 16), ("role", 64, 78)])
def test_layout_switches_where_the_inline_quota_ends(kind, low, high):
    last = _switch_point(kind)
    assert low <= last <= high
    fits = policies.agent_permissions(kind, "SnykCraAssumeRolePolicy", arns(last))
    assert fits.sizes["SnykCraAssumeRolePolicy"] <= policies.INLINE_QUOTA[kind]
    switched = policies.agent_permissions(kind, "SnykCraAssumeRolePolicy", arns(last + 1))
    assert switched.layout == policies.LAYOUT_COMBINED
    assert "inline quota" in switched.note
    assert len(switched.inline["Statement"]) == 1
    assert sorted(switched.inline["Statement"][0]["Resource"]) == sorted(arns(last + 1).values())


@pytest.mark.parametrize("kind", ["user", "role"])
def test_one_agent_holds_a_thousand_accounts(kind):
    wanted = arns(1000)
    permissions = policies.agent_permissions(kind, "SnykCraAssumeRolePolicy", wanted)
    assert permissions.layout == policies.LAYOUT_MANAGED
    assert permissions.inline is None
    assert 1 < len(permissions.managed) <= policies.MANAGED_POLICIES_PER_IDENTITY
    listed = []
    for name, doc in permissions.managed.items():
        assert name.startswith("SnykCraAssumeRolePolicy-")
        assert policies.policy_size(doc) <= policies.MANAGED_POLICY_QUOTA
        listed.extend(doc["Statement"][0]["Resource"])
    assert sorted(listed) == sorted(wanted.values())


def test_too_many_accounts_for_one_identity_is_a_clear_error():
    with pytest.raises(policies.LayoutError, match="more agents"):
        policies.agent_permissions("user", "P", arns(1300))


def test_semantic_comparison():
    a = {
        "Version": "2012-10-17",
        "Statement": [{"Action": ["sts:AssumeRole"], "Effect": "Allow", "Resource": "x"}],
    }
    b = {
        "Statement": {"Effect": "Allow", "Resource": ["x"], "Action": "sts:AssumeRole"},
        "Version": "2012-10-17",
    }
    assert policies.same_document(a, b)
    assert policies.same_document(json.dumps(a, indent=2), b)
    c = {
        "Version": "2012-10-17",
        "Statement": [{"Action": "sts:AssumeRole", "Effect": "Allow", "Resource": "y"}],
    }
    assert not policies.same_document(a, c)
    assert not policies.same_document(None, a)

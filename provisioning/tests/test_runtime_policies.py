"""Each runtime's trust, exactly as AWS's guides write it (pure builders, no AWS)."""

from provisioning import adoption, policies

ACCOUNT = "111111111111"
ISSUER = "https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
PROVIDER = "oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
EKS_CLUSTER = f"arn:aws:eks:eu-west-1:{ACCOUNT}:cluster/tools"
ECS_CLUSTER = f"arn:aws:ecs:eu-west-1:{ACCOUNT}:cluster/brokers"


def test_ec2_trust_is_todays():
    assert policies.agent_trust_policy(policies.Runtime("ec2", ACCOUNT)) == {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }


def test_ecs_trust_has_the_confused_deputy_conditions():
    assert policies.agent_trust_policy(policies.Runtime("ecs", ACCOUNT)) == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"aws:SourceAccount": ACCOUNT}},
            }
        ],
    }
    with_cluster = policies.agent_trust_policy(policies.Runtime("ecs", ACCOUNT, cluster_arn=ECS_CLUSTER))
    assert with_cluster["Statement"][0]["Condition"] == {
        "StringEquals": {"aws:SourceAccount": ACCOUNT},
        "ArnLike": {"aws:SourceArn": f"arn:aws:ecs:eu-west-1:{ACCOUNT}:*"},
    }


def test_irsa_trust_names_the_provider_one_service_account_and_the_sts_audience():
    runtime = policies.Runtime(
        "eks-irsa", ACCOUNT, oidc_issuer=ISSUER, namespace="snyk", service_account="cra"
    )
    assert policies.agent_trust_policy(runtime) == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/{PROVIDER}"},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {
                        f"{PROVIDER}:sub": "system:serviceaccount:snyk:cra",
                        f"{PROVIDER}:aud": "sts.amazonaws.com",
                    }
                },
            }
        ],
    }


def test_pod_identity_trust_is_the_documented_one_scoped_by_its_session_tags():
    runtime = policies.Runtime(
        "eks-pod-identity", ACCOUNT, cluster_arn=EKS_CLUSTER, namespace="snyk", service_account="cra"
    )
    assert policies.agent_trust_policy(runtime) == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AllowEksAuthToAssumeRoleForPodIdentity",
                "Effect": "Allow",
                "Principal": {"Service": "pods.eks.amazonaws.com"},
                "Action": ["sts:AssumeRole", "sts:TagSession"],
                "Condition": {
                    "StringEquals": {
                        "aws:RequestTag/eks-cluster-arn": EKS_CLUSTER,
                        "aws:RequestTag/kubernetes-namespace": "snyk",
                        "aws:RequestTag/kubernetes-service-account": "cra",
                    }
                },
            }
        ],
    }


def test_the_portals_own_trusts_have_no_weakness():
    runtimes = [
        policies.Runtime("ec2", ACCOUNT),
        policies.Runtime("ecs", ACCOUNT),
        policies.Runtime("ecs", ACCOUNT, cluster_arn=ECS_CLUSTER),
        policies.Runtime("eks-irsa", ACCOUNT, oidc_issuer=ISSUER, namespace="a", service_account="b"),
        policies.Runtime(
            "eks-pod-identity", ACCOUNT, cluster_arn=EKS_CLUSTER, namespace="a", service_account="b"
        ),
    ]
    assert [adoption.agent_trust_weaknesses(policies.agent_trust_policy(r)) for r in runtimes] == [[]] * 5


def test_weak_trusts_are_named_from_their_statement():
    federated = {"Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/{PROVIDER}"}
    wildcard = {
        "Effect": "Allow",
        "Principal": federated,
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {"StringLike": {f"{PROVIDER}:sub": "system:serviceaccount:snyk:*"}},
    }
    (any_sa, no_aud) = adoption.agent_trust_weaknesses({"Statement": [wildcard]})
    assert any_sa.code == "agent-trust-any-service-account"
    assert "StringLike system:serviceaccount:snyk:*" in any_sa.message
    assert no_aud.code == "agent-trust-no-audience"
    assert f"oidc-provider/{PROVIDER}" in no_aud.message

    no_sub = {**wildcard, "Condition": {"StringEquals": {f"{PROVIDER}:aud": "sts.amazonaws.com"}}}
    assert [w.code for w in adoption.agent_trust_weaknesses({"Statement": [no_sub]})] == [
        "agent-trust-any-service-account"
    ]
    pods = {"Effect": "Allow", "Principal": {"Service": "pods.eks.amazonaws.com"}, "Action": "sts:AssumeRole"}
    (no_tag,) = adoption.agent_trust_weaknesses({"Statement": [pods]})
    assert no_tag.code == "agent-trust-no-tag-session"
    assert "with sts:AssumeRole but not sts:TagSession" in no_tag.message
    ecs = {
        "Effect": "Allow",
        "Principal": {"Service": ["ecs-tasks.amazonaws.com"]},
        "Action": "sts:AssumeRole",
    }
    (no_source,) = adoption.agent_trust_weaknesses({"Statement": [ecs]})
    assert no_source.code == "agent-trust-no-source-condition"
    assert (
        no_source.statement
        == '{"Action":"sts:AssumeRole","Effect":"Allow","Principal":{"Service":["ecs-tasks.amazonaws.com"]}}'
    )

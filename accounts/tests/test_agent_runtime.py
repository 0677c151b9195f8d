"""An agent's runtime and its parameters: validated whole, with field messages, nothing saved."""

import pytest
from django.core.exceptions import ValidationError

from accounts import services
from accounts.models import AgentIdentity

ACCOUNT = "111111111111"
ISSUER = "https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
EKS = f"arn:aws:eks:eu-west-1:{ACCOUNT}:cluster/tools"


def build(**fields):
    return services.agent_build(name="cra", kind="role", account_id=ACCOUNT, **fields)


def errors(**fields):
    with pytest.raises(ValidationError) as caught:
        build(**fields)
    return caught.value.message_dict


def test_ec2_is_the_default_and_takes_no_parameters(db):
    assert build().runtime == "ec2"
    assert errors(namespace="snyk") == {"namespace": ["Only for eks-irsa, eks-pod-identity agents."]}


def test_eks_runtimes_default_to_the_helm_namespace_and_the_charts_service_account(db):
    agent = build(runtime="eks-irsa", oidc_issuer=ISSUER)
    assert (agent.namespace, agent.service_account) == ("snyk-broker", "snyk-broker")
    agent = build(runtime="eks-pod-identity", cluster_arn=EKS, namespace="tools", service_account="cra")
    assert (agent.namespace, agent.service_account) == ("tools", "cra")


@pytest.mark.parametrize(
    ("fields", "field", "code_word"),
    [
        ({"runtime": "eks-irsa"}, "oidc_issuer", "Required"),
        ({"runtime": "eks-irsa", "oidc_issuer": "http://oidc.example.com/id/X"}, "oidc_issuer", "https"),
        ({"runtime": "eks-irsa", "oidc_issuer": ISSUER + "/"}, "oidc_issuer", "trailing slash"),
        ({"runtime": "eks-irsa", "oidc_issuer": ISSUER + "?x=1"}, "oidc_issuer", "query"),
        ({"runtime": "eks-irsa", "oidc_issuer": ISSUER, "namespace": "Snyk"}, "namespace", "DNS-1123 label"),
        ({"runtime": "eks-irsa", "oidc_issuer": ISSUER, "namespace": "a" * 64}, "namespace", "63"),
        (
            {"runtime": "eks-irsa", "oidc_issuer": ISSUER, "service_account": "cra_1"},
            "service_account",
            "DNS-1123",
        ),
        ({"runtime": "eks-irsa", "oidc_issuer": ISSUER, "oidc_thumbprint": "xyz"}, "oidc_thumbprint", "40"),
        ({"runtime": "eks-pod-identity"}, "cluster_arn", "Required"),
        (
            {"runtime": "eks-pod-identity", "cluster_arn": "arn:aws:ecs:eu-west-1:111111111111:cluster/x"},
            "cluster_arn",
            "EKS",
        ),
        (
            {"runtime": "eks-pod-identity", "cluster_arn": "arn:aws:eks:eu-west-1:222222222222:cluster/x"},
            "cluster_arn",
            "111111111111",
        ),
        ({"runtime": "ecs", "cluster_arn": EKS}, "cluster_arn", "ECS"),
        ({"runtime": "ecs", "cluster_arn": "brokers"}, "cluster_arn", "cluster ARN"),
        ({"runtime": "ecs", "oidc_issuer": ISSUER}, "oidc_issuer", "Only for eks-irsa"),
        ({"runtime": "lambda"}, "runtime", "not a valid choice"),
    ],
)
def test_bad_runtime_input_names_the_field(db, fields, field, code_word):
    assert code_word in " ".join(errors(**fields)[field])
    assert not AgentIdentity.objects.exists()


def test_a_user_agent_has_no_runtime(db):
    with pytest.raises(ValidationError) as caught:
        services.agent_build(name="u", kind="user", account_id=ACCOUNT, runtime="ecs")
    assert "use a role" in caught.value.message_dict["runtime"][0]


def test_switching_runtime_keeps_what_the_new_one_takes_and_refuses_bad_input_unchanged(db):
    agent = services.agent_create(
        name="cra", kind="role", account_id=ACCOUNT, runtime="eks-pod-identity", cluster_arn=EKS
    )
    assert services.agent_set_runtime(agent=agent, runtime={"runtime": "eks-irsa", "oidc_issuer": ISSUER})
    agent.refresh_from_db()
    assert (agent.runtime, agent.cluster_arn, agent.namespace) == ("eks-irsa", EKS, "snyk-broker")
    with pytest.raises(ValidationError):
        services.agent_set_runtime(agent=agent, runtime={"runtime": "ecs", "cluster_arn": "nope"})
    assert agent.runtime == "eks-irsa"
    agent.refresh_from_db()
    assert agent.runtime == "eks-irsa"
    assert not services.agent_set_runtime(agent=agent, runtime={"runtime": "eks-irsa"})
    assert services.agent_set_runtime(agent=agent, runtime={"runtime": "ec2"})
    agent.refresh_from_db()
    assert (agent.runtime, agent.cluster_arn, agent.oidc_issuer, agent.namespace) == ("ec2", "", "", "")

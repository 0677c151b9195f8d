"""Issue 16, end to end for each runtime: the command line (and the agent page) create the agent with
its exact trust, onboarding works as today, the audit is clean on the portal's own agent and flags
each weakened variant, and the broker files name the right role, namespace and service account
without a secret.

moto in-process; EKS Pod Identity through the thin fake of portal/moto_eks.py (moto has none).
"""

import io
import json
import re

import boto3
import pytest
import yaml
from botocore.validate import ParamValidator
from django.core.management import CommandError, call_command
from django.urls import reverse

from accounts import renderers
from accounts import services as account_services
from accounts.models import AgentIdentity, EcrAccount
from provisioning import policies, runner
from provisioning.audit.services import audit_request
from provisioning.models import Run

from .conftest import AGENT_ACCOUNT, ECR_ACCOUNTS, iam_in, make_management_role

ISSUER = "https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
PROVIDER = ISSUER.removeprefix("https://")
PROVIDER_ARN = f"arn:aws:iam::{AGENT_ACCOUNT}:oidc-provider/{PROVIDER}"
EKS_CLUSTER = f"arn:aws:eks:eu-west-1:{AGENT_ACCOUNT}:cluster/tools"
ECS_CLUSTER = f"arn:aws:ecs:eu-west-1:{AGENT_ACCOUNT}:cluster/brokers"
ROLE = "SnykCraEc2Role"
AGENT_ARN = f"arn:aws:iam::{AGENT_ACCOUNT}:role/{ROLE}"

# runtime -> (agent_add options, the trust it must write)
RUNTIMES = {
    "ec2": ([], policies.agent_role_trust_policy()),
    "ecs": (
        ["--cluster-arn", ECS_CLUSTER],
        policies.ecs_task_trust_policy(AGENT_ACCOUNT, ECS_CLUSTER),
    ),
    "eks-irsa": (
        [
            "--oidc-issuer",
            ISSUER,
            "--oidc-thumbprint",
            "9e99a48a9960b14926bb7f3b02e22da2b0ab7280",
            "--namespace",
            "scanning",
            "--service-account",
            "cra",
        ],
        policies.irsa_trust_policy(AGENT_ACCOUNT, ISSUER, "scanning", "cra"),
    ),
    "eks-pod-identity": (
        ["--cluster-arn", EKS_CLUSTER, "--namespace", "scanning", "--service-account", "cra"],
        policies.pod_identity_trust_policy(EKS_CLUSTER, "scanning", "cra"),
    ),
}
# runtime -> a weakened trust statement and the finding it must raise
WEAKENED = {
    "ecs": (
        {"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"},
        "agent-trust-no-source-condition",
    ),
    "eks-irsa": (
        {
            "Effect": "Allow",
            "Principal": {"Federated": PROVIDER_ARN},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringLike": {f"{PROVIDER}:sub": "system:serviceaccount:*"}},
        },
        "agent-trust-any-service-account",
    ),
    "eks-pod-identity": (
        {"Effect": "Allow", "Principal": {"Service": "pods.eks.amazonaws.com"}, "Action": "sts:AssumeRole"},
        "agent-trust-no-tag-session",
    ),
}


def cli(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def mgmt(account_id: str) -> str:
    return f"arn:aws:iam::{account_id}:role/PortalManagement"


def eks_client():
    from provisioning import aws

    return aws.sessions.client_for(aws.Access(AGENT_ACCOUNT, mgmt(AGENT_ACCOUNT)), "eks", "eu-west-1")


@pytest.fixture
def roles(aws):
    for account_id in [AGENT_ACCOUNT, *ECR_ACCOUNTS]:
        make_management_role(account_id)
    eks_client().create_cluster(name="tools", roleArn=AGENT_ARN, resourcesVpcConfig={})
    aws.calls.clear()


def audit_agent_findings():
    run = audit_request(enqueue=False)
    assert run.claim()
    runner.execute(run)
    return next(a for a in run.result["agents"] if a["name"] == "cra")["findings"]


def onboard(account_id: str) -> str:
    return cli("account_onboard", account_id, "--agent", "cra", "--region", "eu-west-1",
               "--management-role-arn", mgmt(account_id), "--broker-client-url", "http://broker:8000",
               "--cr-agent-url", "http://cra:8081", "--inline")  # fmt: skip


def assert_agent_in_aws(runtime, trust):
    iam = iam_in(AGENT_ACCOUNT)
    assert iam.get_role(ROLE)["AssumeRolePolicyDocument"] == trust
    profile = iam.get_instance_profile(ROLE)
    assert (profile is not None) == (runtime == "ec2")
    associations = eks_client().list_pod_identity_associations(clusterName="tools")["associations"]
    assert [(a["namespace"], a["serviceAccount"]) for a in associations] == (
        [("scanning", "cra")] if runtime == "eks-pod-identity" else []
    )
    if runtime == "eks-irsa":
        provider = iam.get_open_id_connect_provider(PROVIDER_ARN)
        assert provider["ClientIDList"] == ["sts.amazonaws.com"]


@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
def test_each_runtime_from_the_command_line_to_the_broker_files(db, aws, roles, runtime):
    options, trust = RUNTIMES[runtime]
    plan = cli("agent_add", "cra", "--kind", "role", "--account-id", AGENT_ACCOUNT,
               "--management-role-arn", mgmt(AGENT_ACCOUNT), "--runtime", runtime, *options, "--plan")  # fmt: skip
    printed = "after: " + json.dumps(trust, indent=2, sort_keys=True).replace("\n", "\n       ")
    assert printed in plan  # the exact trust, as --plan prints it
    assert not AgentIdentity.objects.exists() and aws.write_calls() == 0

    out = cli("agent_add", "cra", "--kind", "role", "--account-id", AGENT_ACCOUNT,
              "--management-role-arn", mgmt(AGENT_ACCOUNT), "--runtime", runtime, *options, "--inline")  # fmt: skip
    assert "succeeded" in out
    assert_agent_in_aws(runtime, trust)

    assert "[succeeded] iam:CreateRole" in onboard(ECR_ACCOUNTS[0])
    account = EcrAccount.objects.get(account_id=ECR_ACCOUNTS[0])
    service_trust = iam_in(ECR_ACCOUNTS[0]).get_role("SnykEcrServiceRole")["AssumeRolePolicyDocument"]
    assert service_trust["Statement"][0]["Principal"] == {"AWS": AGENT_ARN}

    assert audit_agent_findings() == []
    aws.calls.clear()
    assert "No changes" in cli("agent_set", "cra", "--runtime", runtime, "--plan")
    assert aws.write_calls() == 0

    assert_broker_files(account, runtime)

    if runtime in WEAKENED:
        statement, code = WEAKENED[runtime]
        weak = {"Version": "2012-10-17", "Statement": [statement]}
        iam_in(AGENT_ACCOUNT).write(
            "update_assume_role_policy", RoleName=ROLE, PolicyDocument=json.dumps(weak)
        )
        assert code in {f["code"] for f in audit_agent_findings()}


def assert_broker_files(account, runtime):
    broker = account.brokers.get()
    token = broker.broker_token
    if runtime == "ecs":
        script = account_services.broker_file_download(broker=broker, fmt="ecs").content
        assert token not in script
        task, service = ecs_documents(script)
        assert task["taskRoleArn"] == AGENT_ARN
        assert [c["name"] for c in task["containerDefinitions"]] == ["broker", "container-registry-agent"]
        (secret,) = task["containerDefinitions"][0]["secrets"]
        assert secret == {
            "name": "BROKER_TOKEN",
            "valueFrom": f"arn:aws:ssm:eu-west-1:{AGENT_ACCOUNT}:parameter/snyk-broker/"
            f"{account.account_id}-eu-west-1/broker-token",
        }
        assert service["cluster"] == ECS_CLUSTER
        with pytest.raises(renderers.BrokerFileError, match="runs as an ECS task"):
            renderers.render(broker, "helm")
        return
    with pytest.raises(renderers.BrokerFileError, match="does not run on ECS"):
        renderers.render(broker, "ecs")
    helm = account_services.broker_file_download(broker=broker, fmt="helm").content
    values = yaml.safe_load(helm)
    if runtime == "ec2":  # today's file: the token inline, the node's instance profile
        assert values["brokerToken"] == token and "instance profile" in helm
        return
    assert token not in helm and "brokerToken" not in values
    release = f"{account.account_id}-eu-west-1"
    assert values["brokerTokenSecret"] == {"name": f"snyk-broker-token-{release}", "key": "BROKER_TOKEN"}
    assert values["serviceAccount"]["name"] == "cra" and values["serviceAccount"]["create"] is False
    assert f"helm install {release} snyk-broker/snyk-broker -n scanning" in helm
    assert "kubectl -n scanning create serviceaccount cra" in helm
    if runtime == "eks-irsa":
        assert values["serviceAccount"]["annotations"] == {"eks.amazonaws.com/role-arn": AGENT_ARN}
        assert f"annotate serviceaccount cra eks.amazonaws.com/role-arn={AGENT_ARN}" in helm
    else:
        assert "annotations" not in values["serviceAccount"]
        assert f"associates scanning/cra with the role in {EKS_CLUSTER}" in helm


def ecs_documents(script):
    """The two --cli-input-json documents, each valid input of its ECS call per botocore's model."""
    documents = [json.loads(d) for d in re.findall(r"--cli-input-json '(.*?)'", script, re.DOTALL)]
    model = boto3.session.Session().client("ecs", region_name="eu-west-1").meta.service_model
    for operation, document in zip(("RegisterTaskDefinition", "CreateService"), documents, strict=True):
        report = ParamValidator().validate(document, model.operation_model(operation).input_shape)
        assert not report.has_errors(), report.generate_report()
    return documents


def test_an_ecs_task_definition_with_a_bad_shape_is_caught_by_the_model():
    model = boto3.session.Session().client("ecs", region_name="eu-west-1").meta.service_model
    shape = model.operation_model("RegisterTaskDefinition").input_shape
    bad = {"family": "x", "containerDefinitions": [{"name": "b", "secrets": [{"name": "T", "value": "x"}]}]}
    assert ParamValidator().validate(bad, shape).has_errors()


def test_switching_runtime_is_a_previewed_trust_change(db, aws, roles):
    cli("agent_add", "cra", "--kind", "role", "--account-id", AGENT_ACCOUNT,
        "--management-role-arn", mgmt(AGENT_ACCOUNT), "--inline")  # fmt: skip
    aws.calls.clear()
    plan = cli("agent_set", "cra", "--runtime", "eks-pod-identity", "--cluster-arn", EKS_CLUSTER, "--plan")
    assert "iam:UpdateAssumeRolePolicy" in plan and "pods.eks.amazonaws.com" in plan
    assert "iam:RemoveRoleFromInstanceProfile" in plan and "eks:CreatePodIdentityAssociation" in plan
    assert AgentIdentity.objects.get().runtime == "ec2" and aws.write_calls() == 0

    assert "succeeded" in cli("agent_set", "cra", "--runtime", "eks-pod-identity", "--cluster-arn", EKS_CLUSTER,
                              "--inline")  # fmt: skip
    trust = iam_in(AGENT_ACCOUNT).get_role(ROLE)["AssumeRolePolicyDocument"]
    assert trust == policies.pod_identity_trust_policy(EKS_CLUSTER, "snyk-broker", "snyk-broker")
    assert iam_in(AGENT_ACCOUNT).get_instance_profile(ROLE)["Roles"] == []
    with pytest.raises(
        CommandError
    ) as caught:  # no OIDC provider and no thumbprint: refused, nothing written
        cli("agent_set", "cra", "--runtime", "eks-irsa", "--oidc-issuer", ISSUER, "--inline")
    assert caught.value.returncode == 1
    assert Run.objects.order_by("-pk").first().status == "failed"


def test_adopting_hand_made_irsa_and_ecs_roles_keeps_an_exact_trust_and_repairs_a_weak_one(db, aws, roles):
    iam = iam_in(AGENT_ACCOUNT)
    iam.write("create_open_id_connect_provider", Url=ISSUER, ClientIDList=["sts.amazonaws.com"],
              ThumbprintList=["a" * 40])  # fmt: skip
    exact = policies.irsa_trust_policy(AGENT_ACCOUNT, ISSUER, "snyk-broker", "snyk-broker")
    reordered = json.loads(json.dumps(exact))
    reordered["Statement"][0]["Condition"]["StringEquals"] = dict(
        reversed(list(exact["Statement"][0]["Condition"]["StringEquals"].items()))
    )
    iam.write("create_role", RoleName=ROLE, AssumeRolePolicyDocument=json.dumps(reordered))
    out = cli("agent_add", "cra", "--kind", "role", "--account-id", AGENT_ACCOUNT, "--management-role-arn",
              mgmt(AGENT_ACCOUNT), "--runtime", "eks-irsa", "--oidc-issuer", ISSUER, "--plan")  # fmt: skip
    assert "iam:UpdateAssumeRolePolicy" not in out and "iam:CreateRole" not in out

    ecs = {"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}
    iam.write("create_role", RoleName="HandMadeEcs", AssumeRolePolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [ecs]}))  # fmt: skip
    ecs_args = ("agent_add", "ecs", "--kind", "role", "--account-id", AGENT_ACCOUNT, "--iam-name", "HandMadeEcs",
                "--management-role-arn", mgmt(AGENT_ACCOUNT), "--runtime", "ecs")  # fmt: skip
    plan = cli(*ecs_args, "--plan")
    assert "note: The trust of HandMadeEcs trusts ecs-tasks.amazonaws.com without aws:SourceAccount" in plan
    out = cli(*ecs_args, "--inline")
    assert "[succeeded] iam:UpdateAssumeRolePolicy" in out and "iam:CreateRole" not in out
    assert iam.get_role("HandMadeEcs")["AssumeRolePolicyDocument"] == policies.ecs_task_trust_policy(
        AGENT_ACCOUNT
    )


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--runtime", "eks-irsa", "--oidc-issuer", "http://not-https.example/id/1"], "oidc_issuer"),
        (["--runtime", "eks-irsa", "--oidc-issuer", ISSUER, "--namespace", "Not_A_Label"], "namespace"),
        (
            ["--runtime", "eks-pod-identity", "--cluster-arn", EKS_CLUSTER, "--service-account=cra."],
            "service_account",
        ),
        (["--runtime", "eks-pod-identity"], "cluster_arn"),
        (["--runtime", "ecs", "--cluster-arn", EKS_CLUSTER], "cluster_arn"),
    ],
)
def test_bad_runtime_input_exits_2_with_the_field_saving_and_sending_nothing(db, aws, roles, args, field):
    with pytest.raises(CommandError) as caught:
        cli("agent_add", "cra", "--kind", "role", "--account-id", AGENT_ACCOUNT, *args, "--inline")
    assert caught.value.returncode == 2 and f"{field}:" in str(caught.value)
    assert not AgentIdentity.objects.exists() and not Run.objects.exists() and aws.write_calls() == 0


def test_the_agent_page_adds_an_irsa_agent_with_its_exact_trust(db, aws, roles, client, admin_user, settings):
    settings.SECURE_SSL_REDIRECT = False  # the test client speaks http
    client.force_login(admin_user)
    bad = client.post(reverse("accounts:agent_add"), {"name": "cra", "kind": "role", "account_id": AGENT_ACCOUNT,
                                                      "runtime": "eks-irsa", "oidc_issuer": "oidc.example"})  # fmt: skip
    assert "Enter the cluster&#x27;s OIDC issuer" in bad.content.decode()
    assert not AgentIdentity.objects.exists()
    response = client.post(
        reverse("accounts:agent_add"),
        {
            "name": "cra",
            "kind": "role",
            "account_id": AGENT_ACCOUNT,
            "management_role_arn": mgmt(AGENT_ACCOUNT),
            "runtime": "eks-irsa",
            "oidc_issuer": ISSUER,
            "oidc_thumbprint": "a" * 40,
        },
    )
    agent = AgentIdentity.objects.get()
    body = client.get(response["Location"]).content.decode()
    assert "iam:CreateOpenIDConnectProvider" in body and "sts:AssumeRoleWithWebIdentity" in body
    digest = re.search(r'name="plan_digest" value="([0-9a-f]{64})"', body).group(1)
    client.post(reverse("accounts:agent_setup", args=[agent.pk]), {"plan_digest": digest})
    run = Run.objects.get()
    assert run.claim()
    runner.execute(run)
    assert run.status == "succeeded", run.explanation
    trust = iam_in(AGENT_ACCOUNT).get_role(ROLE)["AssumeRolePolicyDocument"]
    assert trust == policies.irsa_trust_policy(AGENT_ACCOUNT, ISSUER, "snyk-broker", "snyk-broker")

    page = client.get(agent.get_absolute_url()).content.decode()
    assert "EKS pod (IRSA" in page and "snyk-broker/snyk-broker" in page
    moved = client.post(reverse("accounts:agent_runtime", args=[agent.pk]),
                        {"runtime": "eks-pod-identity", "cluster_arn": "arn:aws:eks:eu-west-1:1:cluster/x"})  # fmt: skip
    assert "Enter a cluster ARN" in moved.content.decode()
    moved = client.post(reverse("accounts:agent_runtime", args=[agent.pk]),
                        {"runtime": "eks-pod-identity", "cluster_arn": EKS_CLUSTER})  # fmt: skip
    assert moved["Location"] == reverse("accounts:agent_plan", args=[agent.pk])
    body = client.get(moved["Location"]).content.decode()
    assert "eks:CreatePodIdentityAssociation" in body and "iam:UpdateAssumeRolePolicy" in body

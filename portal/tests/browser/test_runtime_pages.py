"""An agent that runs on EKS, added and moved in real Chromium: the form's runtime fields with their
messages, the plan naming the OIDC provider and the exact trust, the agent page's runtime card."""

import pytest

from accounts.models import AgentIdentity
from provisioning import aws, policies, runner
from provisioning.models import Run

from .conftest import management_role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ACCOUNT = "111111111111"
ISSUER = "https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"


def _shot(page, directory, name):
    if directory is not None:
        page.screenshot(path=str(directory / f"{name}.png"), full_page=True)


def test_an_irsa_agent_is_added_and_moved_to_pod_identity_in_the_browser(
    page, portal, login, admin_user, moto, screenshots
):
    login(admin_user)
    page.goto(portal + "/agents/add/")
    page.fill("#id_name", "cra-eks")
    page.fill("#id_account_id", ACCOUNT)
    page.fill("#id_management_role_arn", management_role(ACCOUNT))
    page.select_option("#id_runtime", "eks-irsa")
    page.fill("#id_oidc_issuer", "http://oidc.example/id/1")
    page.fill("#id_namespace", "Scanning")
    page.click("form.wizard button[type=submit]")
    assert "https URL" in page.inner_text("#field-oidc_issuer")
    assert "DNS-1123 label" in page.inner_text("#field-namespace")
    _shot(page, screenshots, "agent-form-runtime-errors")
    assert not AgentIdentity.objects.exists()

    page.fill("#id_oidc_issuer", ISSUER)
    page.fill("#id_namespace", "scanning")
    page.fill("#id_oidc_thumbprint", "9e99a48a9960b14926bb7f3b02e22da2b0ab7280")
    page.click("form.wizard button[type=submit]")
    page.wait_for_url("**/plan/")
    body = page.inner_text("main")
    assert "iam:CreateOpenIDConnectProvider" in body and "sts:AssumeRoleWithWebIdentity" in body
    assert "system:serviceaccount:scanning:snyk-broker" in body
    _shot(page, screenshots, "agent-plan-irsa")
    page.click("#confirm-plan")
    page.wait_for_url("**/runs/**")
    run = Run.objects.get()
    assert run.claim()
    runner.execute(run)
    assert run.status == "succeeded", run.explanation

    agent = AgentIdentity.objects.get()
    page.goto(portal + agent.get_absolute_url())
    assert "EKS pod (IRSA" in page.inner_text("#agent-runtime")
    assert page.inner_text("#agent-service-account") == "scanning/snyk-broker"
    _shot(page, screenshots, "agent-detail-runtime")
    access = aws.Access(ACCOUNT, management_role(ACCOUNT))
    eks = aws.sessions.client_for(access, "eks", "eu-west-1")
    eks.create_cluster(name="tools", roleArn=agent.arn, resourcesVpcConfig={})
    page.select_option("#agent-runtime-card #id_runtime", "eks-pod-identity")
    page.fill("#agent-runtime-card #id_cluster_arn", f"arn:aws:eks:eu-west-1:{ACCOUNT}:cluster/tools")
    page.click("#agent-runtime-save")
    page.wait_for_url("**/plan/")
    body = page.inner_text("main")
    assert "pods.eks.amazonaws.com" in body and "eks:CreatePodIdentityAssociation" in body
    assert AgentIdentity.objects.get().runtime == "eks-pod-identity"
    assert policies.oidc_provider_id(ISSUER) in body  # the trust it replaces, diffed
    _shot(page, screenshots, "agent-plan-runtime-switch")

"""The thin Pod Identity fake answers botocore's EKS calls as the model shapes them."""

import boto3
import pytest
from botocore.exceptions import ClientError

ROLE = "arn:aws:iam::123456789012:role/agent"


def test_associations_are_created_listed_described_updated_and_deleted(aws):
    eks = boto3.client("eks", region_name="eu-west-1")
    eks.create_cluster(name="tools", roleArn=ROLE, resourcesVpcConfig={})
    made = eks.create_pod_identity_association(
        clusterName="tools", namespace="ns", serviceAccount="sa", roleArn=ROLE, tags={"k": "v"}
    )["association"]
    assert made["associationArn"] == (
        f"arn:aws:eks:eu-west-1:123456789012:podidentityassociation/tools/{made['associationId']}"
    )
    listed = eks.list_pod_identity_associations(clusterName="tools", namespace="ns", serviceAccount="sa")
    assert [a["associationId"] for a in listed["associations"]] == [made["associationId"]]
    assert eks.list_pod_identity_associations(clusterName="tools", namespace="other")["associations"] == []

    other = "arn:aws:iam::123456789012:role/other"
    eks.update_pod_identity_association(
        clusterName="tools", associationId=made["associationId"], roleArn=other
    )
    described = eks.describe_pod_identity_association(
        clusterName="tools", associationId=made["associationId"]
    )
    assert described["association"]["roleArn"] == other

    eks.delete_pod_identity_association(clusterName="tools", associationId=made["associationId"])
    assert eks.list_pod_identity_associations(clusterName="tools")["associations"] == []


def test_one_association_per_service_account_and_only_in_a_cluster_that_exists(aws):
    eks = boto3.client("eks", region_name="eu-west-1")
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        eks.list_pod_identity_associations(clusterName="missing")
    eks.create_cluster(name="tools", roleArn=ROLE, resourcesVpcConfig={})
    eks.create_pod_identity_association(
        clusterName="tools", namespace="ns", serviceAccount="sa", roleArn=ROLE
    )
    with pytest.raises(ClientError, match="ResourceInUseException"):
        eks.create_pod_identity_association(
            clusterName="tools", namespace="ns", serviceAccount="sa", roleArn=ROLE
        )

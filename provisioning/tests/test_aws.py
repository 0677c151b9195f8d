"""provisioning/aws.py: sessions, the account guard, and the region data the inventory copies."""

import pytest

from accounts import regions

from .conftest import AGENT_ACCOUNT, make_management_role


def test_the_inventorys_region_list_is_botocores(aws):
    """accounts/regions.py is a static copy (the inventory never loads boto3): it must not go stale."""
    assert aws.ecr_regions_by_partition() == regions.ECR_REGIONS_BY_PARTITION


def test_an_assumed_role_is_checked_by_the_account_sts_names_with_no_extra_call(db, aws):
    """STS answers AssumeRole with the assumed role's ARN, account included: no GetCallerIdentity."""
    make_management_role(AGENT_ACCOUNT)
    aws.sessions.clear()  # forget the credentials making the role took
    aws.calls.clear()
    iam = aws.Iam(aws.Access(AGENT_ACCOUNT, f"arn:aws:iam::{AGENT_ACCOUNT}:role/PortalManagement"))
    iam.get_role("PortalManagement")
    iam.get_role("PortalManagement")
    assert dict(aws.calls) == {"sts:AssumeRole": 1, "iam:GetRole": 2}


def test_a_management_role_in_another_account_is_refused_before_any_call_there(db, aws):
    elsewhere = "999999999999"
    make_management_role(elsewhere)
    aws.sessions.clear()
    aws.calls.clear()
    with pytest.raises(aws.AwsError) as refused:
        aws.Iam(aws.Access(AGENT_ACCOUNT, f"arn:aws:iam::{elsewhere}:role/PortalManagement"))
    assert refused.value.code == "WrongAccount" and f"act in account {elsewhere}" in refused.value.message
    assert dict(aws.calls) == {"sts:AssumeRole": 1}


def test_the_base_credentials_are_checked_once_with_get_caller_identity(db, aws):
    from .conftest import BASE_ACCOUNT

    aws.calls.clear()
    iam = aws.Iam(aws.Access(BASE_ACCOUNT))
    iam.get_role("Missing")
    iam.get_role("Missing")
    assert dict(aws.calls) == {"sts:GetCallerIdentity": 1, "iam:GetRole": 2}
    with pytest.raises(aws.AwsError) as refused:
        aws.Iam(aws.Access(AGENT_ACCOUNT)).get_role("Missing")
    assert refused.value.code == "WrongAccount" and refused.value.operation == "GetCallerIdentity"


TRUST = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}'
READ_DOCUMENT = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ecr:ListImages", "Resource": "*"}]}'


def test_a_list_is_read_to_its_last_page_through_the_shared_client(aws):
    """IAM answers a Marker while a list is truncated: every page is read, each one as the account."""
    iam = aws.Iam(aws.Access(AGENT_ACCOUNT, f"arn:aws:iam::{AGENT_ACCOUNT}:role/PortalManagement"))
    iam.write("create_role", RoleName="paged", AssumeRolePolicyDocument=TRUST)
    arns = []
    for i in range(3):
        arn = iam.call("create_policy", PolicyName=f"p{i}", PolicyDocument=READ_DOCUMENT)["Policy"]["Arn"]
        iam.write("attach_role_policy", RoleName="paged", PolicyArn=arn)
        arns.append(arn)
    aws.calls.clear()
    attached = aws._every_page(
        iam.client, "list_attached_role_policies", "AttachedPolicies", "Marker", RoleName="paged", MaxItems=1
    )
    assert sorted(p["PolicyArn"] for p in attached) == sorted(arns)
    # One page per policy, and an empty fourth: moto marks the last full page truncated too.
    assert aws.calls["iam:ListAttachedRolePolicies"] == 4

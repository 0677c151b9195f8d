"""provisioning/aws.py: the read cache an audit uses so the planner does not read the same state twice."""

from .conftest import AGENT_ACCOUNT, make_management_role


def test_reads_inside_a_read_cache_go_to_aws_once_and_a_write_empties_it(db, aws):
    make_management_role(AGENT_ACCOUNT)
    iam = aws.Iam(aws.Access(AGENT_ACCOUNT, f"arn:aws:iam::{AGENT_ACCOUNT}:role/PortalManagement"))
    aws.calls.clear()
    with aws.read_cache():
        first = iam.get_role("PortalManagement")
        first["RoleName"] = "changed by the caller"
        assert iam.get_role("PortalManagement")["RoleName"] == "PortalManagement"  # a copy each time
        assert aws.calls["iam:GetRole"] == 1
        assert iam.get_role("Missing") is None and iam.get_role("Missing") is None
        assert aws.calls["iam:GetRole"] == 2
        iam.write("tag_role", RoleName="PortalManagement", Tags=[{"Key": "k", "Value": "v"}])
        assert iam.get_role("PortalManagement")["Tags"] == [{"Key": "k", "Value": "v"}]
        assert aws.calls["iam:GetRole"] == 3
    iam.get_role("PortalManagement")
    iam.get_role("PortalManagement")
    assert aws.calls["iam:GetRole"] == 5  # no cache outside the block

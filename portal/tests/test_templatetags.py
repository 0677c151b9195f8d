"""The pages' text helpers: ARNs that wrap between their parts, labels from one mapping."""

import pytest
from django.template import Context, Template

from portal.templatetags.labels import LABELS, label
from portal.templatetags.portal_ui import breakable, plain


def test_an_arn_may_wrap_only_after_its_colons_and_slashes():
    arn = "arn:aws:iam::222233334444:role/team/SnykEcrServiceRole"
    assert breakable(arn) == (
        "arn:<wbr>aws:<wbr>iam:<wbr>:<wbr>222233334444:<wbr>role/<wbr>team/<wbr>SnykEcrServiceRole"
    )
    assert breakable(arn).replace("<wbr>", "") == arn  # nothing else added: copying copies the ARN


def test_breakable_escapes_before_it_marks_safe():
    rendered = Template("{% load portal_ui %}{{ value|breakable }}").render(
        Context({"value": "arn:aws:iam::1:role/<script>"})
    )
    assert rendered == "arn:<wbr>aws:<wbr>iam:<wbr>:<wbr>1:<wbr>role/<wbr>&lt;script&gt;"


@pytest.mark.parametrize(
    ("value", "kind", "shown"),
    [
        ("in_sync", "audit_state", "In sync"),
        ("not_audited", "audit_state", "Not audited yet"),
        ("critical", "severity", "Critical"),
        ("retiring", "external_id_state", "Retiring"),
        ("unknown", "external_id_state", "Unknown to the portal"),
        ("inline-per-account", "layout", "Inline, one statement per account"),
        ("admin", "role", "Administrator"),
        ("", "layout", ""),
        (None, "layout", ""),
    ],
)
def test_labels(value, kind, shown):
    assert label(value, kind) == shown


def test_a_label_kind_the_mapping_lacks_is_a_template_bug():
    with pytest.raises(KeyError):
        label("in_sync", "audit-state")
    assert set(LABELS) == {"audit_state", "severity", "external_id_state", "layout", "role"}


def test_audit_details_read_as_written():
    assert plain(["eu-west-1", "us-east-1"]) == "eu-west-1, us-east-1"
    assert plain(7) == "7" and plain("x") == "x"

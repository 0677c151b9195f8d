"""Audit pages through the test client: the relationships table, filters, live vs desired, refresh,
"fix" through the previewed reconcile plan, exports, dashboard counts, constant query counts."""

import csv
import io
import json
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts import services as account_services
from accounts.choices import Lifecycle
from accounts.models import EcrAccount
from provisioning.audit_selectors import PAGE_SIZE
from provisioning.choices import AuditStatus, RunKind, RunStatus
from provisioning.models import AuditSnapshot, Run

from .conftest import ECR_ACCOUNTS, make_management_role
from .test_audit_findings import ACCT, audit_now, set_principal
from .test_audit_runs import assert_report_shape
from .test_engine import run_inline, setup_agent_and_onboard

OTHER = ECR_ACCOUNTS[1]
LIST = reverse("provisioning:audit_list")


@pytest.fixture(autouse=True)
def _plain_http(settings):
    settings.SECURE_SSL_REDIRECT = False


@pytest.fixture
def audited(inventory, aws):
    """Two onboarded accounts; ACCT's trust lets anyone in; one audit has run."""
    agent, accounts = inventory
    setup_agent_and_onboard(agent, accounts)
    set_principal({"AWS": "*"})
    run = audit_now()
    aws.calls.clear()
    return agent, accounts, run


def page(client, user, url=LIST, **params):
    client.force_login(user)
    response = client.get(url, params)
    assert response.status_code == 200
    return response.content.decode()


def row_ids(body):
    import re

    return re.findall(r'id="relationship-(\d{12})"', body)


def test_one_row_per_trust_relationship(client, viewer, audited, aws):
    body = page(client, viewer)
    assert row_ids(body) == [ACCT, OTHER]
    row = body[body.index(f'id="relationship-{ACCT}"') :].split("</tr>")[0]
    assert "team-0" in row and "SnykEcrServiceRole" in row and "agent cra" in row
    assert "<div>*</div>" in row  # the trusted principal
    assert 'title="ext-222222222222"' in row and ">Active<" in row  # the ExternalId and its state
    assert ">Drifted<" in row
    assert ">Critical<" in row and "principal-wildcard" in row  # the worst finding
    other = body[body.index(f'id="relationship-{OTHER}"') :].split("</tr>")[0]
    assert ">In sync<" in other and "arn:aws:iam::111111111111:role/SnykCraEc2Role" in other.replace(
        "<wbr>", ""
    )
    shown = re.sub(r"<[^>]+>", " ", body)  # the text a person reads
    assert "in_sync" not in shown and "not_audited" not in shown  # states read as words
    assert "1 critical" in body  # totals
    # A viewer reads; no refresh button, no fix link.
    assert 'id="audit-refresh"' not in body and f'id="fix-{ACCT}"' not in body
    assert aws.write_calls() == 0 and sum(aws.calls.values()) == 0  # the page reads snapshots only


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, [ACCT, OTHER]),
        ({"severity": "critical"}, [ACCT]),
        ({"severity": "low"}, [ACCT]),
        ({"code": "principal-wildcard"}, [ACCT]),
        ({"code": "role-missing"}, []),
        ({"agent": "cra"}, [ACCT, OTHER]),
        ({"agent": "nobody"}, []),
        ({"status": "in_sync"}, [OTHER]),
        ({"status": "drifted"}, [ACCT]),
        ({"status": "not_audited"}, []),
        ({"q": "team-1"}, [OTHER]),
        ({"severity": "bogus", "code": "bogus"}, [ACCT, OTHER]),  # unknown values are ignored
    ],
)
def test_filters(client, viewer, audited, params, expected):
    assert row_ids(page(client, viewer, **params)) == expected


def test_agent_findings_are_listed_with_the_agent(client, viewer, audited, aws):
    from .test_audit_findings import agent_unmanaged

    agent, accounts, _ = audited
    agent_unmanaged(agent, accounts)
    audit_now()
    body = page(client, viewer)
    section = body[body.index('id="audit-agents"') :].split("</section>")[0]
    assert "agent-unmanaged-account" in section and "555555555555" in section
    assert "Inline, one statement per account" in section


def test_detail_shows_live_and_desired_side_by_side_and_the_history(client, viewer, audited):
    body = page(client, viewer, reverse("provisioning:audit_detail", args=[ACCT]))
    documents = body[body.index('id="documents"') :]
    trust = documents[documents.index('id="document-1"') :].split("</article>")[0]
    assert "Trust policy" in trust and ">differs<" in trust
    live, desired = trust.split("<h3>Desired</h3>")
    assert "&quot;AWS&quot;: &quot;*&quot;" in live
    assert "arn:aws:iam::111111111111:role/SnykCraEc2Role" in desired
    assert 'class="diff"' in trust  # and the line diff
    read_policy = documents[documents.index('id="document-2"') :].split("</article>")[0]
    assert ">matches<" in read_policy
    assert "iam:UpdateAssumeRolePolicy" in body  # what a reconcile would change
    history = body[body.index('id="audit-history"') :]
    assert history.count("<tr>") == 2 and ">Drifted<" in history  # header + one snapshot
    assert 'id="audit-fix"' not in body  # viewers cannot fix


def test_detail_of_an_account_never_audited(client, viewer, inventory):
    body = page(client, viewer, reverse("provisioning:audit_detail", args=[ACCT]))
    assert 'id="not-audited"' in body
    client.force_login(viewer)
    assert client.get(reverse("provisioning:audit_detail", args=["999999999999"])).status_code == 404


def test_fix_goes_through_the_previewed_plan_and_the_next_audit_is_clean(client, operator, audited, aws):
    """Done when: a hand-edited trust shows up as the right finding, and "fix" restores it through a
    previewed plan; nothing changes before the operator confirms."""
    body = page(client, operator, reverse("provisioning:audit_detail", args=[ACCT]))
    plan_url = reverse("accounts:account_plan", args=[ACCT])
    assert f'id="audit-fix" href="{plan_url}"' in body
    list_body = page(client, operator)
    assert f'id="fix-{ACCT}" href="{plan_url}"' in list_body

    preview = client.get(plan_url)
    assert preview.status_code == 200
    assert "iam:UpdateAssumeRolePolicy" in preview.content.decode()
    assert aws.write_calls() == 0  # previewing changed nothing
    digest = preview.context["preview"]["digest"]

    response = client.post(reverse("accounts:account_apply", args=[ACCT]), {"plan_digest": digest})
    assert response.status_code == 302
    fix = Run.objects.get(kind=RunKind.RECONCILE)
    assert run_inline(fix).status == RunStatus.SUCCEEDED
    assert [op.action for op in fix.operations.all()] == ["iam:UpdateAssumeRolePolicy"]

    audit_now()
    snapshot = AuditSnapshot.objects.get(account_id=ACCT, is_latest=True)
    assert snapshot.status == AuditStatus.IN_SYNC and snapshot.findings == []
    assert row_ids(page(client, operator, status="drifted")) == []


def test_refresh_starts_one_audit_run_and_shows_its_progress(client, operator, audited):
    client.force_login(operator)
    response = client.post(reverse("provisioning:audit_refresh"))
    assert response.status_code == 302 and response["Location"] == LIST
    queued = Run.objects.get(kind=RunKind.AUDIT, status=RunStatus.QUEUED)
    assert queued.requested_by == operator and queued.options == {"scope": "all"}
    client.post(reverse("provisioning:audit_refresh"))  # already queued: no second run
    assert Run.objects.filter(kind=RunKind.AUDIT, status=RunStatus.QUEUED).count() == 1
    body = page(client, operator)
    assert 'id="run-progress"' in body
    assert reverse("provisioning:run_progress", args=[queued.pk]) in body
    assert 'id="audit-refresh" disabled' in body
    progress = client.get(reverse("provisioning:run_progress", args=[queued.pk])).content.decode()
    assert "accounts and agents read" in progress


def test_the_audit_page_reloads_its_results_when_the_run_it_shows_ends(client, operator, audited):
    client.force_login(operator)
    client.post(reverse("provisioning:audit_refresh"))
    queued = Run.objects.get(kind=RunKind.AUDIT, status=RunStatus.QUEUED)
    body = page(client, operator, severity="critical")
    results = body[body.index('<div id="audit-results"') :].split(">")[0]
    assert 'hx-trigger="run-finished from:body"' in results
    assert f'hx-get="{LIST}?severity=critical"' in results  # this page, its filters kept
    assert 'hx-select="#audit-results"' in results
    assert 'hx-select-oob="#messages,#audit-summary"' in results  # "run #N is queued" goes too
    assert '<div id="messages">' in body and '<section class="card" id="audit-summary">' in body
    assert "reload</a>" not in body

    progress = reverse("provisioning:run_progress", args=[queued.pk])
    assert "HX-Trigger" not in client.get(progress, headers={"HX-Request": "true"})
    run_inline(queued)
    assert client.get(progress, headers={"HX-Request": "true"})["HX-Trigger"] == "run-finished"
    summary = page(client, operator).split('id="audit-summary"')[1].split("</section>")[0]
    assert f"run #{queued.pk}</a>" in summary  # what the reload brings


def test_viewers_cannot_refresh(client, viewer, audited):
    client.force_login(viewer)
    assert client.post(reverse("provisioning:audit_refresh")).status_code == 403
    assert client.get(reverse("provisioning:audit_refresh")).status_code == 403
    assert not Run.objects.filter(kind=RunKind.AUDIT, status=RunStatus.QUEUED).exists()


def test_csv_export(client, viewer, audited):
    EcrAccount.objects.filter(account_id=OTHER).update(alias="=HYPERLINK(1)")
    client.force_login(viewer)
    response = client.get(reverse("provisioning:audit_csv"))
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith('attachment; filename="audit-')
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [r["account_id"] for r in rows] == [ACCT, OTHER]
    assert rows[0]["status"] == "drifted" and rows[0]["worst_severity"] == "critical"
    assert rows[0]["worst_code"] == "principal-wildcard" and rows[0]["trusted_principals"] == "*"
    assert rows[0]["drift_since"]
    assert rows[1]["alias"] == "'=HYPERLINK(1)"  # never a formula in a spreadsheet
    filtered = client.get(reverse("provisioning:audit_csv"), {"status": "in_sync"}).content.decode()
    assert [r["account_id"] for r in csv.DictReader(io.StringIO(filtered))] == [OTHER]


def test_json_export_has_the_report_shape(client, viewer, audited):
    client.force_login(viewer)
    response = client.get(reverse("provisioning:audit_json"), {"severity": "critical"})
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    document = json.loads(response.content)
    assert_report_shape(document)
    assert [a["account_id"] for a in document["accounts"]] == [ACCT]
    assert document["agents"][0]["name"] == "cra"


def test_dashboard_shows_the_last_audit_and_its_counts(client, viewer, audited):
    body = page(client, viewer, reverse("dashboard"))
    counts = body[body.index('id="audit-counts"') :].split("</p>")[0]
    assert "1 critical" in counts and reverse("provisioning:audit_list") in counts
    assert 'id="nav-audit"' in body


def _grow(count, start):
    agent = EcrAccount.objects.get(account_id=ACCT).agent
    for i in range(start, start + count):
        account_id = f"8000000{i:05d}"
        account = account_services.account_create(
            agent=agent,
            account_id=account_id,
            regions=["us-east-1"],
            alias=f"grown-{i}",
            management_role_arn=make_management_role(account_id),
        )
        EcrAccount.objects.filter(pk=account.pk).update(status=Lifecycle.ACTIVE)
    audit_now()  # these accounts have nothing in AWS: missing, with findings


@pytest.mark.parametrize(
    ("url", "params"),
    [
        (LIST, {}),
        (LIST, {"severity": "medium", "code": "role-missing", "agent": "cra", "status": "missing", "q": "8"}),
        (reverse("provisioning:audit_csv"), {}),
        (reverse("provisioning:audit_json"), {}),
    ],
)
def test_pages_cost_the_same_queries_for_2_or_27_relationships(
    client, viewer, audited, django_assert_num_queries, url, params
):
    client.force_login(viewer)
    _grow(1, 0)
    client.get(url, params)  # warm the session
    with CaptureQueriesContext(connection) as few:
        client.get(url, params)
    _grow(24, 1)
    with django_assert_num_queries(len(few)):
        response = client.get(url, params)
    assert response.status_code == 200
    if url == LIST and not params:
        assert len(row_ids(response.content.decode())) == min(27, PAGE_SIZE)


def test_detail_page_costs_the_same_queries_with_a_long_history(
    client, viewer, audited, django_assert_num_queries
):
    client.force_login(viewer)
    url = reverse("provisioning:audit_detail", args=[ACCT])
    client.get(url)
    with CaptureQueriesContext(connection) as few:
        client.get(url)
    for n in range(6):  # a new state each time: a new snapshot each time
        set_principal({"AWS": f"arn:aws:iam::44444444444{n}:role/Someone"})
        audit_now()
    assert AuditSnapshot.objects.filter(account_id=ACCT).count() == 7
    with django_assert_num_queries(len(few)):
        assert client.get(url).status_code == 200

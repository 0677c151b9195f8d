"""The audit across both systems (issue 13, item 6): universal connections read once per run from the
fake Snyk API and checked against moto's IAM and the inventory. Each finding is provoked by
tampering one side after a clean onboarding; a clean onboarding has none; an ExternalId rotation is
audited after every single write and never shows a mismatch, and the wrong order would."""

import json
import uuid

import pytest

from accounts.models import EcrAccount, SnykConnection, SnykDeployment, SnykTenant
from provisioning import applier, lifecycle, services
from provisioning.audit.catalogue import CHECKS
from provisioning.audit.run import cross_system_findings
from provisioning.choices import AuditStatus, RunKind, RunStatus
from provisioning.models import AuditSnapshot

from .conftest import iam_in
from .test_audit_findings import audit_now
from .test_engine import run_inline, setup_agent_and_onboard
from .test_snyk_flows import onboard, tenant, the_connection, universal_inventory

__all__ = ["tenant"]  # the fixture, used by name

A, B = "222222222222", "333333333333"
ROLE = "SnykEcrServiceRole"
MISMATCH = {
    "snyk-connection-role-differs",
    "snyk-connection-role-missing",
    "snyk-connection-region-differs",
    "snyk-connection-external-id-rejected",
}
SNYK_CODES = {code for code in CHECKS if code.startswith("snyk-")}


@pytest.fixture
def universal(aws, tenant, snyk_fake, settings):
    """Two accounts of a universal agent, onboarded: both sides made by the portal, nothing tampered."""
    settings.RECONCILE_CONCURRENCY = 1  # one SQLite connection in these tests
    agent, accounts = universal_inventory([A, B])
    for account in accounts:
        onboard(account)
    return agent, accounts


def connection_of(snyk_fake, account_id):
    return the_connection(snyk_fake, f"{account_id}-eu-west-1")


def row_of(account_id):
    return SnykConnection.objects.get(broker__account__account_id=account_id)


def snyk_findings_of(run, account_id=None):
    """The run's Snyk findings: an account's (its snapshot), or the agent's (the run's result)."""
    if account_id is None:
        found = next(a for a in run.result["agents"] if a["name"] == "ub")["findings"]
    else:
        found = AuditSnapshot.objects.get(run=run, account_id=account_id).findings
    return [f for f in found if f["code"] in SNYK_CODES]


def codes(findings):
    return sorted({f["code"] for f in findings})


# --- crafting the tampered states --------------------------------------------------------------


def other_role(snyk_fake):
    connection_of(snyk_fake, A)["required"]["cr_role_arn"] = f"arn:aws:iam::{A}:role/SomebodyElse"


def role_gone(snyk_fake):
    iam = iam_in(A)
    policy_arn = f"arn:aws:iam::{A}:policy/AmazonEC2ContainerRegistryReadOnlyForSnyk"
    iam.write("detach_role_policy", RoleName=ROLE, PolicyArn=policy_arn)
    iam.write("delete_role", RoleName=ROLE)


def other_region(snyk_fake):
    connection_of(snyk_fake, A)["required"]["cr_region"] = "us-east-1"


def other_registry(snyk_fake):
    connection_of(snyk_fake, A)["required"]["cr_base"] = f"{B}.dkr.ecr.eu-west-1.amazonaws.com"


def connection_id_changed(snyk_fake):
    connection_of(snyk_fake, A)["required"]["cr_external_id"] = "ext-typed-by-hand"


def trust_id_changed(snyk_fake):
    iam = iam_in(A)
    trust = iam.get_role(ROLE)["AssumeRolePolicyDocument"]
    trust["Statement"][0]["Condition"] = {"StringEquals": {"sts:ExternalId": "ext-someone-else"}}
    iam.write("update_assume_role_policy", RoleName=ROLE, PolicyDocument=json.dumps(trust))


def integration_gone(snyk_fake):
    del snyk_fake.integrations[row_of(A).integration_id]


def integrated_with_other_org(snyk_fake):
    snyk_fake.integrations[row_of(A).integration_id]["org_id"] = row_of(B).org_id
    del snyk_fake.integrations[row_of(B).integration_id]


def org_through_other_connection(snyk_fake):
    """A's Org is integrated through B's connection; A's own connection opens no tunnel."""
    snyk_fake.integrations[row_of(A).integration_id]["connection_id"] = row_of(B).connection_id


def stray_connection(snyk_fake, name="999999999999-eu-west-1"):
    deployment_id = SnykDeployment.objects.get().deployment_id
    required = dict(connection_of(snyk_fake, A)["required"], cr_role_arn="arn:aws:iam::999999999999:role/X")
    snyk_fake.connections[str(uuid.uuid4())] = {
        "deployment_id": deployment_id,
        "name": name,
        "type": "ecr",
        "required": required,
        "identifier": str(uuid.uuid4()),
    }


def deployment_overfull(snyk_fake):
    for n in range(24):  # 2 + 24 = 26 > 25: only possible by hand (the fake refuses the 26th POST)
        stray_connection(snyk_fake, f"by-hand-{n}")


def connection_gone(snyk_fake):
    del snyk_fake.integrations[row_of(A).integration_id]
    del snyk_fake.connections[row_of(A).connection_id]


# code -> (tamper, subject: an account id or None for the agent, words the message must hold)
CASES = {
    "snyk-connection-role-differs": (other_role, A, ["SomebodyElse", f"arn:aws:iam::{A}:role/{ROLE}"]),
    "snyk-connection-role-missing": (role_gone, A, [f"arn:aws:iam::{A}:role/{ROLE}", "does not exist"]),
    "snyk-connection-region-differs": (other_region, A, ["cr_region is us-east-1, not eu-west-1"]),
    "snyk-connection-external-id-rejected": (connection_id_changed, A, ["ext-type…", "ext-2222…"]),
    "snyk-integration-missing": (integration_gone, A, ["opens no tunnel"]),
    "snyk-integration-wrong-org": (integrated_with_other_org, A, [row_of, "not its own Org"]),
    "snyk-integration-wrong-connection": (org_through_other_connection, A, [f"{B}-eu-west-1"]),
    "snyk-deployment-over-limit": (deployment_overfull, None, ["ub-1 holds 26 connections", "25"]),
    "snyk-connection-unknown": (stray_connection, None, ["999999999999-eu-west-1", "does not know"]),
    "snyk-connection-missing": (connection_gone, A, [f"no connection {A}-eu-west-1"]),
}


def test_every_snyk_finding_code_has_a_crafted_case():
    assert set(CASES) | {"snyk-unreadable"} == SNYK_CODES


def test_a_clean_onboarding_has_no_cross_system_finding(universal, snyk_fake):
    writes = len(snyk_fake.writes())
    run = audit_now()
    assert run.status == RunStatus.SUCCEEDED, run.explanation
    for account_id in (A, B):
        snapshot = AuditSnapshot.objects.get(run=run, account_id=account_id)
        assert snapshot.status == AuditStatus.IN_SYNC, snapshot.findings
        assert snapshot.findings == []
        name = f"{account_id}-eu-west-1"
        assert snapshot.live["snyk_connections"] == snapshot.desired["snyk_connections"]
        assert snapshot.live["snyk_connections"][name]["cr_external_id"] == f"ext-{account_id}"
    assert snyk_findings_of(run) == []
    assert run.result["snyk"]["status"] == "read" and run.result["snyk"]["connections"] == 2
    assert "Snyk side read once: 1 deployment, 2 connections" in run.explanation
    assert len(snyk_fake.writes()) == writes  # the audit writes nothing to Snyk either
    assert cross_system_findings(list(EcrAccount.objects.all())) == []


@pytest.mark.parametrize("code", sorted(CASES))
def test_tampering_one_side_gives_the_finding(universal, snyk_fake, code):
    tamper, subject, words = CASES[code]
    tamper(snyk_fake)
    run = audit_now()
    assert run.status in (RunStatus.SUCCEEDED, RunStatus.PARTIAL), run.explanation
    found = [f for f in snyk_findings_of(run, subject) if f["code"] == code]
    assert found, (code, snyk_findings_of(run, subject))
    assert {f["severity"] for f in found} == {CHECKS[code].severity}
    for word in words:
        text = row_of(B).org_id if word is row_of else word
        assert any(text in f["message"] for f in found), (text, found)
    if subject is not None:
        snapshot = AuditSnapshot.objects.get(run=run, account_id=subject)
        assert snapshot.status in (AuditStatus.DRIFTED, AuditStatus.MISSING)
        # The other account is not blamed for this one's connection (unless it shares the Org).
        if code not in ("snyk-integration-wrong-org", "snyk-integration-wrong-connection"):
            assert snyk_findings_of(run, B) == []


def test_the_trust_changed_in_iam_rejects_the_connections_id(universal, snyk_fake):
    trust_id_changed(snyk_fake)
    found = snyk_findings_of(audit_now(), A)
    assert codes(found) == ["snyk-connection-external-id-rejected"]
    assert "it accepts ext-some…" in found[0]["message"]


def test_a_registry_of_another_account_is_named(universal, snyk_fake):
    other_registry(snyk_fake)
    (finding,) = snyk_findings_of(audit_now(), A)
    assert finding["code"] == "snyk-connection-region-differs"
    assert f"cr_base is {B}.dkr.ecr.eu-west-1.amazonaws.com, not {A}.dkr.ecr.eu-west-1" in finding["message"]


def test_snyk_is_read_once_per_run_never_per_account(aws, tenant, snyk_fake, settings):
    settings.RECONCILE_CONCURRENCY = 1
    _, accounts = universal_inventory([A, B, "444444444444"], regions=("eu-west-1", "us-east-1"))
    for account in accounts:
        onboard(account)
    snyk_fake.log.clear()
    run = audit_now()
    assert run.status == RunStatus.SUCCEEDED, run.explanation
    # One listing of the install's deployments, one of its deployment's connections (6: two pages of
    # 3), one of each connection's integrations: Snyk lists integrations per connection only.
    assert run.result["snyk"] == {
        "status": "read",
        "deployments": 1,
        "connections": 6,
        "listings": 8,
        "message": run.result["snyk"]["message"],
    }
    paths = list(snyk_fake.log)
    assert len(paths) == len(set(paths)) + 1  # every path once, the connections list twice (pages)
    assert all(line.startswith("GET ") for line in paths)


def test_snyk_unreadable_the_aws_side_is_still_audited(universal, snyk_fake, settings):
    settings.SNYK_RETRIES = 0
    snyk_fake.faults.append((f"GET /rest/tenants/{snyk_fake.tenant_id}/brokers/installs/", 503, ""))
    run = audit_now()
    assert run.status == RunStatus.PARTIAL, run.explanation
    assert AuditSnapshot.objects.filter(run=run, status=AuditStatus.IN_SYNC).count() == 2  # AWS side read
    (finding,) = snyk_findings_of(run)
    assert finding["code"] == "snyk-unreadable" and "HTTP 503" in finding["message"]
    assert "the AWS side was" in finding["message"]
    assert run.result["snyk"]["status"] == "unreadable"
    assert "The Snyk side could not be read (HTTP 503" in run.explanation


def test_a_refused_token_is_a_finding_not_a_crash(universal, snyk_fake):
    SnykTenant.objects.update(token="not-the-token")
    run = audit_now()
    (finding,) = snyk_findings_of(run)
    assert finding["code"] == "snyk-unreadable" and "HTTP 401" in finding["message"]
    assert AuditSnapshot.objects.filter(run=run).count() == 2


def test_no_snyk_connection_at_all_says_so(db, aws, snyk_fake):
    universal_inventory([A])  # the agent is set up; no tenant was ever connected
    run = audit_now()
    (finding,) = snyk_findings_of(run)
    assert "no Snyk connection is set up" in finding["message"]
    assert snyk_fake.log == []


def test_classic_agents_are_audited_without_calling_snyk(aws, tenant, snyk_fake, inventory):
    agent, accounts = inventory
    setup_agent_and_onboard(agent, accounts)
    snyk_fake.log.clear()
    run = audit_now()
    assert run.status == RunStatus.SUCCEEDED, run.explanation
    assert snyk_fake.log == [] and "snyk" not in run.result


# --- rotation, audited after every single write ------------------------------------------------


def audited_writes(monkeypatch, account):
    """Wrap the applier: after each write (AWS or Snyk) the cross-system checks run against the live
    fake and moto. Returns the list of (action, findings) it fills."""
    seen = []
    original = applier.apply_change

    def apply_then_audit(run, change, step=""):
        operation = original(run, change, step)
        seen.append((change.action, cross_system_findings(list(EcrAccount.objects.filter(pk=account.pk)))))
        return operation

    monkeypatch.setattr(applier, "apply_change", apply_then_audit)
    return seen


def test_rotating_the_external_id_never_shows_a_mismatch(universal, snyk_fake, monkeypatch):
    _, (account, _) = universal
    seen = audited_writes(monkeypatch, account)
    run = run_inline(lifecycle.external_id_rotate(account=account, value="ext-rotated-1", enqueue=False))
    assert run.status == RunStatus.SUCCEEDED, run.explanation
    account.refresh_from_db()
    retire, _ = lifecycle.external_id_retire(account=account, value=f"ext-{A}", enqueue=False)
    assert run_inline(retire).status == RunStatus.SUCCEEDED

    # No finding after any write (checked first: a wrong order fails here, naming the write).
    assert [(action, [f.code for f in found]) for action, found in seen] == [
        (action, []) for action, _ in seen
    ]
    assert [action for action, _ in seen] == [
        "iam:UpdateAssumeRolePolicy",  # the new id joins the trust
        "snyk:UpdateConnection",  # the connection moves to it
        "iam:UpdateAssumeRolePolicy",  # the old id leaves the trust
    ]
    assert connection_of(snyk_fake, A)["required"]["cr_external_id"] == "ext-rotated-1"


def rotate_by_hand(account, value, *, connection_first):
    """The rotation's two writes (the preview's changes) applied in the order given, each audited."""
    plan = lifecycle.plan_rotation(account, value)
    changes = sorted(plan.changes, key=lambda c: c.action.startswith("iam:") == connection_first)
    run = services.run_request(kind=RunKind.ROTATE, accounts=[account], enqueue=False)
    assert run.claim()
    seen = []
    for change in changes:
        applier.apply_change(run, change)
        seen.append((change.action, {f.code for f in cross_system_findings([account])}))
    return seen


def test_the_wrong_order_shows_the_mismatch(universal, snyk_fake):
    _, (account, other) = universal
    assert rotate_by_hand(other, "ext-rotated-b", connection_first=False) == [
        ("iam:UpdateAssumeRolePolicy", set()),
        ("snyk:UpdateConnection", set()),
    ]
    # PATCH before the trust update: for that moment the connection sends an id IAM refuses.
    assert rotate_by_hand(account, "ext-rotated-a", connection_first=True) == [
        ("snyk:UpdateConnection", {"snyk-connection-external-id-rejected"}),
        ("iam:UpdateAssumeRolePolicy", set()),
    ]


def test_the_reconcile_preview_plans_the_fix_the_audit_page_points_to(universal, snyk_fake):
    """The audit page says a reconcile preview shows the Snyk calls: it does, and then the finding goes."""
    _, (account, _) = universal
    connection_id_changed(snyk_fake)
    plan = services.plan_reconcile([account])
    assert [c.action for c in plan.changes] == ["snyk:UpdateConnection"]
    assert (
        run_inline(services.account_reconcile(accounts=[account], enqueue=False)).status
        == RunStatus.SUCCEEDED
    )
    assert cross_system_findings([account]) == []


def test_the_finding_reaches_the_command_the_json_export_and_the_api(universal, snyk_fake, client, operator):
    import io

    from django.core.management import call_command
    from django.core.management.base import CommandError
    from django.urls import reverse

    from portal.tests.api_helpers import bearer

    integration_gone(snyk_fake)
    out = io.StringIO()
    with pytest.raises(CommandError):  # findings: exit status 1
        call_command("audit", "--inline", stdout=out)
    text = out.getvalue()
    assert f"[medium] snyk-integration-missing: Connection {A}-eu-west-1 has no integration" in text
    assert "Snyk side read once: 1 deployment, 2 connections" in text

    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("audit", "--inline", "--json", stdout=out, stderr=io.StringIO())
    document = json.loads(out.getvalue())
    (account,) = [a for a in document["accounts"] if a["account_id"] == A]
    assert [f["code"] for f in account["findings"]] == ["snyk-integration-missing"]
    assert document["snyk"]["status"] == "read"

    client.force_login(operator)
    response = client.get(reverse("provisioning:audit_json"), secure=True)
    assert response.status_code == 200, (response.status_code, response.content[:500])
    exported = json.loads(response.content)
    (account,) = [a for a in exported["accounts"] if a["account_id"] == A]
    assert [f["code"] for f in account["findings"]] == ["snyk-integration-missing"]
    assert exported["snyk"]["status"] == "read"

    api = client.get("/api/v1/audit/", headers=bearer(operator, "read"), secure=True).json()
    rows = api["results"] if isinstance(api, dict) else api
    (row,) = [r for r in rows if r["account_id"] == A]
    assert row["status"] == "drifted"
    assert [f["code"] for f in row["findings"]] == ["snyk-integration-missing"]

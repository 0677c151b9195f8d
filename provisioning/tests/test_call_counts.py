"""What each account costs in AWS calls, by action, against moto: a new account 4 calls (the
script's minimum), an unchanged one re-applied at most 4, an audited one at most 5. A resource that
exists after all (made by hand between preview and run) is read, compared and adopted."""

import json
from collections import Counter

import pytest

from accounts.models import EcrAccount
from provisioning import lifecycle, live, services
from provisioning.audit.services import audit_request
from provisioning.choices import OperationStatus, RunStatus

from .conftest import AGENT_ACCOUNT, ECR_ACCOUNTS, iam_in
from .test_bulk import csv_file, ids, row
from .test_engine import run_inline

NEW_ACCOUNT = {"sts:AssumeRole": 1, "iam:CreatePolicy": 1, "iam:CreateRole": 1, "iam:AttachRolePolicy": 1}


@pytest.fixture
def by_account(aws, monkeypatch):
    """Every botocore call by the account it lands in and its action, counted from a before-call
    hook on each client the portal builds (AssumeRole: the account of the role assumed)."""
    counted: dict[str, Counter[str]] = {}
    order: list[tuple[str, str]] = []  # (account, action), as made
    real_count = aws._count

    def count(event_name, **kwargs):
        real_count(event_name, **kwargs)
        _, service, operation = event_name.split(".", 2)
        body = kwargs["params"].get("body") or {}
        if operation == "AssumeRole":
            account = body["RoleArn"].split(":")[4]
        else:
            # An account's calls are signed with its credentials per request (aws._sign_as_acting).
            signing = kwargs["context"].get("signing", {})
            credentials = signing.get("request_credentials") or kwargs["request_signer"]._credentials
            key = credentials.get_frozen_credentials().access_key
            landed = {c.access_key: acct for c, _, acct in aws.sessions._assumed.values()}
            account = landed.get(key, "base")
        counted.setdefault(account, Counter())[f"{service}:{operation}"] += 1
        order.append((account, f"{service}:{operation}"))

    monkeypatch.setattr(aws, "_count", count)
    getattr(live, "_read_one_by_one", set()).clear()

    def fresh():
        """Forget clients and sessions (a worker that never saw these accounts) and the counts."""
        aws.sessions.clear()
        counted.clear()
        order.clear()
        return counted

    fresh.order = order
    return fresh


def test_each_new_account_of_a_bulk_run_costs_four_calls(transactional_db, aws, by_account, tmp_path):
    agent = _make_agent()
    accounts = ids(3)
    report = lifecycle.bulk_validate(
        agent=agent, content=csv_file(tmp_path, [row(a) for a in accounts]).read_bytes(), filename="a.csv"
    )
    run = lifecycle.accounts_bulk_onboard(report=report, enqueue=False, max_concurrency=2)
    counted = by_account()
    run = run_inline(run)
    assert run.status == RunStatus.SUCCEEDED, run.explanation
    for account_id in accounts:
        assert counted[account_id] == NEW_ACCOUNT, account_id
    assert iam_in(accounts[0]).get_role("SnykEcrServiceRole")["Tags"][0]["Key"] == "managed-by"


def test_a_bulk_run_reads_the_agents_permissions_at_its_start_and_only_writes_them_at_its_end(
    transactional_db, aws, by_account, tmp_path
):
    agent = _make_agent()
    assert run_inline(services.agent_setup(agent=agent, enqueue=False)).status == RunStatus.SUCCEEDED
    accounts = ids(6)
    report = lifecycle.bulk_validate(
        agent=agent, content=csv_file(tmp_path, [row(a) for a in accounts]).read_bytes(), filename="a.csv"
    )
    run = lifecycle.accounts_bulk_onboard(report=report, enqueue=False, max_concurrency=1)
    by_account()
    run = run_inline(run)
    assert run.status == RunStatus.SUCCEEDED, run.explanation
    order = by_account.order
    last_account_call = max(i for i, (account, _) in enumerate(order) if account in accounts)
    after = [action for account, action in order[last_account_call + 1 :]]
    assert after == ["iam:PutRolePolicy"]  # the agent's session and reads were made while accounts ran
    reads = [a for acct, a in order if acct == AGENT_ACCOUNT and a != "iam:PutRolePolicy"]
    assert "iam:GetRolePolicy" in reads and "sts:AssumeRole" in reads
    policy = iam_in(AGENT_ACCOUNT).get_inline_policy("role", agent.iam_name, agent.policy_name)
    assert sorted(s["Resource"] for s in policy["Statement"]) == [
        f"arn:aws:iam::{a}:role/SnykEcrServiceRole" for a in accounts
    ]


def _make_agent():
    from accounts import services as account_services

    from .conftest import make_management_role

    return account_services.agent_create(
        name="cra",
        kind="role",
        account_id=AGENT_ACCOUNT,
        management_role_arn=make_management_role(AGENT_ACCOUNT),
    )


def onboard_all(agent, accounts):
    assert run_inline(services.agent_setup(agent=agent, enqueue=False)).status == RunStatus.SUCCEEDED
    for account in accounts:
        run = run_inline(services.account_onboard(account=account, enqueue=False))
        assert run.status == RunStatus.SUCCEEDED, run.explanation


def test_a_new_account_onboarded_alone_costs_four_calls(inventory, by_account):
    agent, accounts = inventory
    assert run_inline(services.agent_setup(agent=agent, enqueue=False)).status == RunStatus.SUCCEEDED
    counted = by_account()
    run = run_inline(services.account_onboard(account=accounts[0], enqueue=False))
    assert run.status == RunStatus.SUCCEEDED, run.explanation
    assert counted[accounts[0].account_id] == NEW_ACCOUNT


def test_an_unchanged_account_re_applied_costs_at_most_four_calls_and_no_write(inventory, by_account):
    agent, accounts = inventory
    onboard_all(agent, accounts)
    counted = by_account()
    run = run_inline(services.account_reconcile(accounts=accounts, enqueue=False))
    assert run.status == RunStatus.SUCCEEDED and run.operations.count() == 0
    for account_id in ECR_ACCOUNTS:
        assert sum(counted[account_id].values()) <= 4, counted[account_id]
        assert "sts:AssumeRole" in counted[account_id]  # the session is part of the cost
        assert not [a for a in counted[account_id] if a.split(":")[1].startswith(("Create", "Put", "Tag"))]


def test_an_audited_account_costs_at_most_five_calls(inventory, by_account):
    agent, accounts = inventory
    onboard_all(agent, accounts)
    # An inline policy on the role: the audit reads its document too, within the same calls.
    iam_in(ECR_ACCOUNTS[0]).write(
        "put_role_policy",
        RoleName="SnykEcrServiceRole",
        PolicyName="TeamExtra",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        ),
    )
    counted = by_account()
    run = run_inline(audit_request(user=None, accounts=accounts, enqueue=False))
    assert run.status == RunStatus.SUCCEEDED, run.explanation
    for account_id in ECR_ACCOUNTS:
        assert sum(counted[account_id].values()) <= 5, counted[account_id]
    snapshot = EcrAccount.objects.get(account_id=ECR_ACCOUNTS[0]).audit_snapshots.get()
    assert "TeamExtra" in json.dumps(snapshot.live)  # the inline document was read


@pytest.mark.parametrize("answer", ["truncated", "AccessDenied"])
def test_a_large_account_or_one_withholding_the_details_is_read_resource_by_resource(
    inventory, by_account, aws, monkeypatch, answer
):
    """Authorization details in more than one page, or not granted: the reads of before, once per process."""
    agent, accounts = inventory
    onboard_all(agent, accounts)

    def details(self, filters, max_items):
        if answer == "AccessDenied":
            raise aws.AwsError("AccessDenied", "not authorized to perform iam:GetAccountAuthorizationDetails")
        return None

    monkeypatch.setattr(aws.Iam, "authorization_details_page", details)
    counted = by_account()
    assert services.plan_reconcile(accounts).is_empty
    assert counted[ECR_ACCOUNTS[0]]["iam:GetRole"] == 1
    assert ECR_ACCOUNTS[0] in live._read_one_by_one


def _hand_made_role(account_id, agent_arn, *, condition):
    statement = {"Effect": "Allow", "Principal": {"AWS": agent_arn}, "Action": "sts:AssumeRole"}
    if condition:
        statement["Condition"] = condition
    trust = {"Version": "2012-10-17", "Statement": [statement]}
    iam_in(account_id).write(
        "create_role", RoleName="SnykEcrServiceRole", AssumeRolePolicyDocument=json.dumps(trust)
    )


def _preview_then_hand_made(inventory, *, condition):
    agent, accounts = inventory
    assert run_inline(services.agent_setup(agent=agent, enqueue=False)).status == RunStatus.SUCCEEDED
    account = accounts[0]
    preview = services.plan_onboarding(account)
    assert [c.action for c in preview.changes if c.account_id == account.account_id] == [
        "iam:CreatePolicy",
        "iam:CreateRole",
        "iam:AttachRolePolicy",
    ]
    agent.refresh_from_db()
    _hand_made_role(account.account_id, agent.arn, condition=condition)
    run = run_inline(services.account_onboard(account=account, enqueue=False))
    return account, run


def test_a_role_made_by_hand_between_preview_and_run_is_adopted(inventory, by_account):
    account, run = _preview_then_hand_made(
        inventory, condition={"StringEquals": {"sts:ExternalId": f"ext-{ECR_ACCOUNTS[0]}"}}
    )
    assert run.status == RunStatus.SUCCEEDED, run.explanation
    ops = list(
        run.operations.filter(account_id=account.account_id).values_list("action", "status", "error_code")
    )
    assert ops == [
        ("iam:CreatePolicy", OperationStatus.SUCCEEDED, ""),
        ("iam:CreateRole", OperationStatus.FAILED, "EntityAlreadyExists"),
        ("iam:TagRole", OperationStatus.SUCCEEDED, ""),
        ("iam:AttachRolePolicy", OperationStatus.SUCCEEDED, ""),
    ]
    account.refresh_from_db()
    assert account.role_adopted and not account.policy_adopted
    log = "\n".join(run.log_entries.values_list("message", flat=True))
    assert "exists after all (EntityAlreadyExists): read, compared and adopted" in log
    assert "already matches the guide" in log
    adopted = [s for s in run.plan["steps"] if s["label"].endswith("(what exists, adopted)")]
    assert adopted and adopted[0]["adopted"] == [account.service_role_arn]
    assert run.progress_total == run.progress_done  # the creates not made left the total


def test_a_hand_made_role_that_differs_is_adopted_with_the_difference_shown(inventory, by_account):
    account, run = _preview_then_hand_made(inventory, condition=None)
    assert run.status == RunStatus.SUCCEEDED, run.explanation
    actions = list(run.operations.filter(account_id=account.account_id).values_list("action", flat=True))
    assert actions[1:] == [
        "iam:CreateRole",
        "iam:TagRole",
        "iam:UpdateAssumeRolePolicy",
        "iam:AttachRolePolicy",
    ]
    log = "\n".join(run.log_entries.values_list("message", flat=True))
    assert "which differs from the guide: no sts:ExternalId condition" in log
    update = run.operations.get(action="iam:UpdateAssumeRolePolicy")
    assert "Condition" not in json.dumps(update.before)  # what it was, recorded before the change


def _saved_with_queries(agent, tmp_path, accounts):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    report = lifecycle.bulk_validate(
        agent=agent, content=csv_file(tmp_path, [row(a) for a in accounts]).read_bytes(), filename="a.csv"
    )
    with CaptureQueriesContext(connection) as queries:
        run = lifecycle.accounts_bulk_onboard(report=report, enqueue=False)
    return run, len(queries)


def test_a_bulk_files_rows_are_saved_in_a_constant_number_of_queries(db, aws, tmp_path):
    agent = _make_agent()
    _, small = _saved_with_queries(agent, tmp_path, ids(3))
    large_run, large = _saved_with_queries(agent, tmp_path, ids(40, first=310000000000))
    assert large == small, (small, large)
    assert large_run.accounts.count() == 40 and set(large_run.accounts.values_list("status", flat=True)) == {
        "pending"
    }
    saved = EcrAccount.objects.get(account_id="310000000039")
    assert saved.external_ids.count() == 1 and saved.brokers.count() == 2  # two regions a row
    from portal.models import AuditEntry

    assert AuditEntry.objects.filter(action="account.create", account_id="310000000039").count() == 1


def test_a_run_confirmed_from_a_preview_that_saw_the_resources_reads_first(inventory, by_account):
    """The preview showed an adoption: the run plans it from live reads, never trying a create."""
    from provisioning import selectors

    agent, accounts = inventory
    assert run_inline(services.agent_setup(agent=agent, enqueue=False)).status == RunStatus.SUCCEEDED
    agent.refresh_from_db()
    hand_made, new = accounts
    _hand_made_role(hand_made.account_id, agent.arn, condition=None)
    preview = services.plan_reconcile([hand_made, new])
    options = selectors.previewed_options(preview, "digest")
    assert options["previewed_absent"] == [new.account_id]
    counted = by_account()
    run = run_inline(services.account_onboard(account=hand_made, enqueue=False, options=options))
    assert run.status == RunStatus.SUCCEEDED, run.explanation
    assert not run.operations.filter(error_code="EntityAlreadyExists").exists()
    assert counted[hand_made.account_id]["iam:GetAccountAuthorizationDetails"] == 1
    run = run_inline(services.account_onboard(account=new, enqueue=False, options=options))
    assert counted[new.account_id] == NEW_ACCOUNT


def test_checking_a_bulk_file_makes_a_constant_number_of_queries(db, aws, tmp_path):
    """Every row checked as the wizard checks its form, with the account ids looked up at once."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    agent = _make_agent()
    EcrAccount.objects.create(agent=agent, account_id="300000000005")  # already in the portal
    made = []
    for count in (3, 60):
        rows = [row(a) for a in ids(count, first=400000000000)] + [row("300000000005")]
        content = csv_file(tmp_path, rows).read_bytes()
        with CaptureQueriesContext(connection) as queries:
            report = lifecycle.bulk_validate(agent=agent, content=content, filename="a.csv")
        made.append(len(queries))
        assert [str(p) for p in report.problems] == [
            f"row {count + 2} (300000000005): account_id: already in the portal (status draft): use "
            "reconcile, or offboard it first"
        ]
    assert made[0] == made[1], made

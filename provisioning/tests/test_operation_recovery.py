"""Operations through a crash, in-process (moto): recorded started before the call, settled once
after it, and settled from the live state by the attempt that takes over a dead worker's run.

The same with real worker processes killed mid-call: test_recovery.py.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts import services as inventory_services
from provisioning import applier, aws, planner, runner, services, tasks
from provisioning.changes import Change, Plan
from provisioning.choices import OperationStatus, RunStatus
from provisioning.models import Operation, Run

ROLE_ARN = "arn:aws:iam::222222222222:role/SnykEcrServiceRole"
TRUST = {"Version": "2012-10-17", "Statement": []}


def run_inline(run):
    assert run.claim()
    return runner.execute(run)


def die_in_create_role(run: Run, account, *, made: bool) -> Operation:
    """Attempt 1 of `run`: it writes the account's policy, starts its CreateRole and dies in the call
    (made: AWS made the role, the answer never came back; not made: the call never reached AWS)."""
    assert run.claim()
    step = f"account {account.account_id}"
    plan = planner.plan_account(account, inventory_services.desired_external_ids(account))
    create_policy, create_role = plan.changes[:2]
    assert (create_policy.action, create_role.action) == ("iam:CreatePolicy", "iam:CreateRole")
    applier.apply_change(run, create_policy, step)
    operation = applier._start(run, create_role, step)
    if made:
        aws.Iam(create_role.access).write(create_role.method, **applier._wire_params(create_role.params))
    # The worker is gone: no heartbeat since a lease ago.
    Run.objects.filter(pk=run.pk).update(
        heartbeat_at=timezone.now() - timedelta(seconds=Run.lease_seconds() + 1)
    )
    return operation


@pytest.mark.parametrize(
    ("made", "settled"), [(True, OperationStatus.APPLIED), (False, OperationStatus.NOT_APPLIED)]
)
def test_a_write_a_dead_worker_left_started_is_settled_from_aws(inventory, aws, made, settled):
    agent, (account, _) = inventory
    assert run_inline(services.agent_setup(agent=agent, enqueue=False)).status == RunStatus.SUCCEEDED
    run = services.account_onboard(account=account, enqueue=False)
    in_flight = die_in_create_role(run, account, made=made)

    assert tasks.execute_run(run.pk) == RunStatus.SUCCEEDED  # the redelivered message takes it over
    in_flight.refresh_from_db()
    assert in_flight.status == settled
    assert "attempt 2 found its result" in in_flight.error_message
    actions = list(run.operations.order_by("sequence").values_list("action", "status"))
    expected_retry = [] if made else [("iam:CreateRole", OperationStatus.SUCCEEDED)]
    assert actions == [
        ("iam:CreatePolicy", OperationStatus.SUCCEEDED),
        ("iam:CreateRole", settled),
        *expected_retry,
        ("iam:AttachRolePolicy", OperationStatus.SUCCEEDED),
        ("iam:PutRolePolicy", OperationStatus.SUCCEEDED),
    ]
    assert any("in flight when the worker stopped" in e.message for e in run.log_entries.all())


def test_an_operation_is_settled_once_and_nothing_else_ever_changes(inventory):
    agent, _ = inventory
    run = services.agent_setup(agent=agent, enqueue=False)
    operation = Operation.objects.create(
        run=run, sequence=1, account_id="222222222222", action="iam:CreateRole", resource_arn=ROLE_ARN,
        status=OperationStatus.STARTED,
    )  # fmt: skip
    with pytest.raises(ValueError, match="Only the outcome"):
        operation.settle(OperationStatus.SUCCEEDED, resource_arn="arn:aws:iam::222222222222:role/Other")
    with pytest.raises(ValueError, match="not started again"):
        operation.settle(OperationStatus.STARTED)
    assert operation.settle(OperationStatus.SUCCEEDED, request_id="r-1", duration_ms=12)
    assert not operation.settle(OperationStatus.FAILED, error_code="AccessDenied")  # once
    stored = Operation.objects.get(pk=operation.pk)
    assert (stored.status, stored.request_id, stored.error_code) == (OperationStatus.SUCCEEDED, "r-1", "")
    with pytest.raises(ValueError, match="append-only"):
        Operation.objects.filter(pk=operation.pk).update(status=OperationStatus.FAILED)
    with pytest.raises(ValueError, match="append-only"):
        stored.save()


def _change(action: str, *, before=None, after=None) -> Change:
    access = aws.Access("222222222222")
    return Change("222222222222", access, "update", action, "x", {}, ROLE_ARN, "", before=before, after=after)


NEW_TRUST = {"Version": "2012-10-17", "Statement": [{"Sid": "new"}]}


@pytest.mark.parametrize(
    ("action", "after", "replanned", "settled"),
    [
        # Nothing left to do for it: it took effect.
        ("iam:CreateRole", TRUST, [], OperationStatus.APPLIED),
        # Still to create, from nothing: it did not.
        ("iam:CreateRole", TRUST, [_change("iam:CreateRole", after=TRUST)], OperationStatus.NOT_APPLIED),
        # Still to attach (no document either side): it did not.
        ("iam:AttachRolePolicy", None, [_change("iam:AttachRolePolicy")], OperationStatus.NOT_APPLIED),
        # Wanted again only because the desired document moved on: live is what it wrote.
        (
            "iam:UpdateAssumeRolePolicy",
            TRUST,
            [_change("iam:UpdateAssumeRolePolicy", before=TRUST, after=NEW_TRUST)],
            OperationStatus.APPLIED,
        ),
        # Wanted again from a live document that is not its result: it did not.
        (
            "iam:UpdateAssumeRolePolicy",
            NEW_TRUST,
            [_change("iam:UpdateAssumeRolePolicy", before=TRUST, after=NEW_TRUST)],
            OperationStatus.NOT_APPLIED,
        ),
    ],
)
def test_applied_or_not_is_read_from_a_fresh_plan_of_the_step(inventory, action, after, replanned, settled):
    agent, _ = inventory
    run = services.agent_setup(agent=agent, enqueue=False)
    operation = Operation.objects.create(
        run=run, sequence=1, account_id="222222222222", action=action, resource_arn=ROLE_ARN, after=after,
        status=OperationStatus.STARTED,
    )  # fmt: skip
    assert applier.settle_recovered(operation, Plan(changes=replanned), attempt=2) == settled
    assert Operation.objects.get(pk=operation.pk).status == settled

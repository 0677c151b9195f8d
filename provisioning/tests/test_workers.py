"""Real worker processes against a moto server: concurrent onboardings lose nothing."""

import pytest

from provisioning import services
from provisioning.choices import TERMINAL_RUN_STATUSES, RunStatus
from provisioning.models import Operation, Run

from .conftest import AGENT_ACCOUNT, create_inventory, iam_in

pytestmark = [pytest.mark.reliability, pytest.mark.django_db(transaction=True)]


def test_forty_concurrent_onboardings_leave_exactly_forty_arns(moto_endpoint):
    from portal.testing import celery_workers, wait_for

    ids = [f"{400000000000 + i}" for i in range(40)]
    agent, accounts = create_inventory(ids, region="eu-west-1")
    with celery_workers(count=2, concurrency=2):
        setup = services.agent_setup(agent=agent)
        wait_for(lambda: Run.objects.get(pk=setup.pk).status in TERMINAL_RUN_STATUSES, message="agent setup")
        runs = [services.account_onboard(account=a) for a in accounts]
        wait_for(
            lambda: (
                Run.objects.filter(pk__in=[r.pk for r in runs], status__in=TERMINAL_RUN_STATUSES).count()
                == len(runs)
            ),
            timeout=300,
            message="40 onboarding runs",
        )
    statuses = list(
        Run.objects.filter(pk__in=[r.pk for r in runs]).values_list("pk", "status", "explanation")
    )
    assert set(Run.objects.filter(pk__in=[r.pk for r in runs]).values_list("status", flat=True)) == {
        RunStatus.SUCCEEDED
    }, statuses
    # No run executed twice.
    assert set(Run.objects.filter(pk__in=[r.pk for r in runs]).values_list("attempts", flat=True)) == {1}

    policy = iam_in(AGENT_ACCOUNT).get_inline_policy("role", "SnykCraEc2Role", "SnykCraAssumeRolePolicy")
    resources = sorted(s["Resource"] for s in policy["Statement"])
    assert resources == sorted(f"arn:aws:iam::{i}:role/SnykEcrServiceRole" for i in ids)
    # Every account's role was created exactly once.
    assert (
        Operation.objects.filter(action="iam:CreateRole", resource_arn__contains="SnykEcrServiceRole").count()
        == 40
    )
    # Concurrent requests coalesce: far fewer agent-policy writes than onboardings.
    agent_writes = Operation.objects.filter(action="iam:PutRolePolicy").count()
    assert 1 <= agent_writes < 40

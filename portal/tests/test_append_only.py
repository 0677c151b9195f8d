import pytest

from portal.audit import record
from portal.models import AuditEntry
from provisioning.models import Operation, Run


@pytest.mark.django_db
def test_records_refuse_bulk_update_and_delete_but_follow_their_run():
    record(user=None, action="run.request.onboard", obj="x")
    run = Run.objects.create(kind="onboard")
    Operation.objects.create(run=run, sequence=1, account_id="222222222222", action="iam:CreateRole",
                             resource_arn="arn:aws:iam::222222222222:role/SnykEcrServiceRole", status="succeeded")  # fmt: skip
    for model in (AuditEntry, Operation):
        with pytest.raises(ValueError, match="append-only"):
            model.objects.update(created_at=None)
        with pytest.raises(ValueError, match="append-only"):
            model.objects.all().delete()
    run.delete()
    assert not Operation.objects.exists()
    assert AuditEntry.objects.count() == 1

"""Data migrations, called with the current models (the fields they touch have not changed since)."""

import importlib

from django.apps import apps

from provisioning.models import Run

errored = importlib.import_module("provisioning.migrations.0004_run_status_errored")


def test_runs_that_failed_with_a_traceback_become_errored_and_back(db):
    crashed = Run.objects.create(kind="agent", status="failed", error="Traceback (most recent call last):")
    refused = Run.objects.create(kind="agent", status="failed", explanation="AccessDenied")
    done = Run.objects.create(kind="agent", status="succeeded")

    errored.failed_with_a_traceback_is_errored(apps, None)
    statuses = dict(Run.objects.values_list("pk", "status"))
    assert statuses == {crashed.pk: "errored", refused.pk: "failed", done.pk: "succeeded"}

    errored.errored_is_failed(apps, None)
    statuses = dict(Run.objects.values_list("pk", "status"))
    assert statuses == {crashed.pk: "failed", refused.pk: "failed", done.pk: "succeeded"}

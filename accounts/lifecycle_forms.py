"""Forms of the lifecycle pages: they validate and normalise; the services decide."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile

from accounts.choices import Lifecycle
from provisioning import bulkfile, lifecycle

from . import validators as v
from .forms import ExactTextForm
from .models import AgentIdentity


class RotateForm(ExactTextForm):
    external_id = forms.CharField(
        max_length=1224,
        label="New ExternalId",
        validators=[v.validate_broker_external_id],
        help_text="Generated (UUID4) unless you need a given value.",
    )


class OffboardForm(forms.Form):
    confirm_adopted = forms.BooleanField(
        required=False,
        label="Also delete the role and policy the portal adopted (they existed before it)",
    )


class _BulkOptions(forms.Form):
    agent = forms.ModelChoiceField(
        queryset=AgentIdentity.objects.exclude(status=Lifecycle.REMOVED),
        empty_label=None,
        help_text="Every account of the file is trusted by this agent.",
    )
    max_concurrency = forms.IntegerField(
        min_value=1,
        max_value=lifecycle.MAX_CONCURRENCY,
        initial=8,
        help_text="Accounts set up at the same time.",
    )
    failure_tolerance = forms.IntegerField(
        min_value=0,
        required=False,
        help_text="Failed accounts tolerated before no new one starts (blank: no limit; 0: stop at the "
        "first failure). As in StackSets, fewer run at once than failures still tolerated.",
    )


class BulkUploadForm(_BulkOptions):
    file = forms.FileField(
        help_text=f"CSV or YAML, one account per row. Columns: {', '.join(bulkfile.COLUMNS)}. "
        f"At most {bulkfile.MAX_ROWS} rows."
    )

    def clean_file(self) -> UploadedFile:
        upload = self.cleaned_data["file"]
        if upload.size > bulkfile.MAX_BYTES:
            raise ValidationError(
                f"The file is {upload.size:,} bytes; at most {bulkfile.MAX_BYTES:,} are accepted."
            )
        return upload


class BulkConfirmForm(_BulkOptions):
    records = forms.CharField(widget=forms.HiddenInput)
    plan_digest = forms.CharField(widget=forms.HiddenInput)

"""The audit trail: append-only rows, user names that outlive users, one redact() for secrets,
and the request id from the middleware on every response and audit row."""

import json
import logging
import re

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.http import HttpResponse, JsonResponse
from django.test import RequestFactory
from django.urls import path

from portal import audit
from portal.middleware import RequestIdFilter, RequestIdMiddleware, current_request_id
from portal.models import AuditEntry
from portal.redact import CENSOR, redact

TOKEN = "1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b"
ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SESSION_KEY_ID = "ASIAIOSFODNN7EXAMPL2"
SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "FwoGZXIvYXdzEJr//////////wEaDExampleSessionToken"
SECRETS = [TOKEN, ACCESS_KEY_ID, SESSION_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN, "hunter2-pass"]


def _record_view(request):
    entry = audit.record(user=request.user, action="test.record", account_id="222222222222", note="hi")
    return JsonResponse({"pk": entry.pk})


urlpatterns = [path("record/", _record_view)]


# --- AuditEntry is append-only, and outlives its user -------------------------------------------


def test_audit_entry_cannot_be_changed(operator):
    entry = audit.record(user=operator, action="account.create", account_id="222222222222")
    entry.action = "account.delete"
    with pytest.raises(ValueError, match="append-only"):
        entry.save()
    assert AuditEntry.objects.get(pk=entry.pk).action == "account.create"


def test_record_copies_the_user_name_and_survives_deletion(operator):
    entry = audit.record(user=operator, action="broker.download", account_id="222222222222")
    assert (entry.user, entry.user_name) == (operator, "otto-operator")
    operator.delete()
    entry = AuditEntry.objects.get(pk=entry.pk)
    assert entry.user is None
    assert entry.user_name == "otto-operator"
    assert str(entry).startswith("otto-operator broker.download")


@pytest.mark.django_db
@pytest.mark.parametrize("user", [None, AnonymousUser()], ids=["cli", "anonymous"])
def test_record_without_a_logged_in_user_says_system(user):
    entry = audit.record(user=user, action="run.request.audit")
    assert entry.user is None and entry.user_name == "system"
    assert entry.request_id == ""  # no request around this call


def test_record_stores_details_redacted(operator):
    entry = audit.record(
        user=operator,
        action="agent.access_key.create",
        broker_token=TOKEN,
        response={"AccessKey": {"AccessKeyId": ACCESS_KEY_ID, "SecretAccessKey": SECRET_ACCESS_KEY}},
        assumed=[{"Credentials": {"SessionToken": SESSION_TOKEN}}],
        message=f"created {ACCESS_KEY_ID} for SnykCraUser",
        password="hunter2-pass",
        regions=["us-east-1"],
    )
    stored = json.dumps(AuditEntry.objects.get(pk=entry.pk).details)
    for secret in SECRETS:
        assert secret not in stored
    details = AuditEntry.objects.get(pk=entry.pk).details
    assert details["regions"] == ["us-east-1"]
    assert details["message"] == f"created {CENSOR} for SnykCraUser"


# --- redact() -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "broker_token",
        "BROKER_TOKEN",
        "brokerToken",
        "SessionToken",
        "SecretAccessKey",
        "aws_secret_access_key",
        "AccessKeyId",
        "password",
        "DJANGO_SUPERUSER_PASSWORD",
        "Credentials",
        "session",
        "PrivateKey",
        "Authorization",
        "api_key",
    ],
)
def test_redact_censors_secret_keys_at_any_depth(key):
    value = {"outer": [{"inner": {key: "s3cr3t-value"}}], key: "s3cr3t-value"}
    redacted = redact(value)
    assert redacted["outer"][0]["inner"][key] == CENSOR
    assert redacted[key] == CENSOR


def test_redact_censors_whole_credential_structures():
    value = {"Credentials": {"AccessKeyId": ACCESS_KEY_ID, "SecretAccessKey": SECRET_ACCESS_KEY}}
    assert redact(value) == {"Credentials": CENSOR}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"key {ACCESS_KEY_ID} was used", f"key {CENSOR} was used"),
        (f"temporary {SESSION_KEY_ID}.", f"temporary {CENSOR}."),
        (f"BROKER_TOKEN={TOKEN}", f"BROKER_TOKEN={CENSOR}"),
        (f"AWS_SECRET_ACCESS_KEY = {SECRET_ACCESS_KEY} rest", f"AWS_SECRET_ACCESS_KEY = {CENSOR} rest"),
        (f'{{"SessionToken": "{SESSION_TOKEN}", "a": 1}}', f'{{"SessionToken": "{CENSOR}", "a": 1}}'),
        (f"brokerToken: {TOKEN}", f"brokerToken: {CENSOR}"),
        ("stored gAAAAABl" + "x" * 60 + "==", f"stored {CENSOR}"),
    ],
)
def test_redact_censors_secrets_inside_text(text, expected):
    assert redact(text) == expected
    assert redact([text]) == [expected]
    assert redact({"message": text}) == {"message": expected}


@pytest.mark.parametrize(
    "value",
    [
        "arn:aws:iam::123456789012:role/SnykEcrServiceRole",
        "ExpiredToken: The security token included in the request is expired",
        '{"Action": ["ecr:GetAuthorizationToken", "ecr:BatchGetImage"], "Resource": "*"}',
        "AKIA is how access key ids start",
        "ext-222222222222",
        {"account_id": "222222222222", "regions": ["us-east-1"], "count": 3, "ok": True, "none": None},
    ],
)
def test_redact_leaves_ordinary_values_alone(value):
    assert redact(value) == value


def test_redact_keeps_empty_secret_fields_visible():
    assert redact({"broker_token": "", "password": None}) == {"broker_token": "", "password": None}


# --- request ids ----------------------------------------------------------------------------------

HEX32 = re.compile(r"^[0-9a-f]{32}$")


@pytest.mark.django_db
def test_responses_carry_a_generated_request_id(https_client):
    first = https_client.get("/healthz")["X-Request-ID"]
    second = https_client.get("/healthz")["X-Request-ID"]
    assert HEX32.match(first) and HEX32.match(second) and first != second


@pytest.mark.django_db
def test_a_sane_incoming_request_id_is_kept(https_client):
    response = https_client.get("/healthz", headers={"X-Request-ID": "lb-7f3a.9_c-1"})
    assert response["X-Request-ID"] == "lb-7f3a.9_c-1"


@pytest.mark.parametrize(
    "incoming",
    ["abc\n", "abc\r\nSet-Cookie: x=1", "a" * 65, "has space", "<script>", "id;drop", "caf\u00e9", ""],
    ids=[
        "trailing-newline",
        "header-injection",
        "too-long",
        "space",
        "markup",
        "semicolon",
        "unicode",
        "empty",
    ],
)
def test_an_unsafe_incoming_request_id_is_replaced(incoming):
    # Through the middleware directly: the test client itself refuses some of these headers.
    request = RequestFactory().get("/healthz", HTTP_X_REQUEST_ID=incoming)
    response = RequestIdMiddleware(lambda r: HttpResponse(r.request_id))(request)
    assert HEX32.match(response["X-Request-ID"]), repr(response["X-Request-ID"])
    assert response.content.decode() == response["X-Request-ID"]


def test_the_request_id_lives_only_as_long_as_the_request():
    seen = {}

    def view(request):
        seen["inside"] = current_request_id()
        return HttpResponse()

    RequestIdMiddleware(view)(RequestFactory().get("/", HTTP_X_REQUEST_ID="req-42"))
    assert seen["inside"] == "req-42"
    assert current_request_id() == "-"


def test_log_lines_carry_the_request_id():
    records = []

    class Capture(logging.Handler):
        def emit(self, record):
            records.append(record)

    logger = logging.getLogger("portal.tests.request_id")
    logger.setLevel(logging.INFO)  # whatever LOG_LEVEL the root logger has
    logger.propagate = False
    handler = Capture()
    handler.addFilter(RequestIdFilter())
    logger.addHandler(handler)
    try:

        def view(request):
            logger.warning("inside")
            return HttpResponse()

        RequestIdMiddleware(view)(RequestFactory().get("/", HTTP_X_REQUEST_ID="req-log-1"))
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)
    assert [r.request_id for r in records] == ["req-log-1", "-"]


@pytest.mark.urls(__name__)
@pytest.mark.parametrize("incoming", [None, "req-from-proxy-1"], ids=["generated", "incoming"])
def test_the_request_id_reaches_the_audit_entry(https_client, operator, incoming):
    https_client.force_login(operator)
    headers = {"X-Request-ID": incoming} if incoming else {}
    response = https_client.post("/record/", headers=headers)
    assert response.status_code == 200
    entry = AuditEntry.objects.get(pk=response.json()["pk"])
    assert entry.request_id == response["X-Request-ID"]
    if incoming:
        assert entry.request_id == incoming
    else:
        assert HEX32.match(entry.request_id)
    assert entry.user_name == "otto-operator" and entry.details == {"note": "hi"}


def test_deleting_a_user_keeps_every_audit_row(operator, viewer):
    for user in (operator, viewer):
        audit.record(user=user, action="run.request.audit")
    get_user_model().objects.filter(pk__in=[operator.pk, viewer.pk]).delete()
    assert sorted(AuditEntry.objects.values_list("user_name", flat=True)) == ["otto-operator", "vera-viewer"]


def test_operations_are_append_only_too(sweep_inventory):
    from provisioning.models import Operation

    operation = sweep_inventory.objects["provisioning.operation"]
    operation.status = "failed"
    with pytest.raises(ValueError, match="append-only"):
        operation.save()
    assert Operation.objects.get(pk=operation.pk).status == "succeeded"

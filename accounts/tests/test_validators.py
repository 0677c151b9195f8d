"""Every IAM and broker-file rule of DESIGN §1, with good and bad values, at three levels:
the validator itself, the model's full_clean(), and the services the browser and command line use
(where the error must name the field, nothing is written and AWS is never called)."""

import uuid

import boto3
import pytest
from django.core.exceptions import ValidationError

from accounts import services as account_services
from accounts import validators as v
from accounts.models import AgentIdentity, BrokerInstance, EcrAccount, ExternalId
from accounts.tests.bad_inputs import (
    CORPUS,
    EXISTING_ACCOUNT_ID,
    VALID_INPUTS,
    CorpusError,
    as_params,
    call_service,
    inventory_counts,
    load_bad_inputs,
    make_existing_inventory,
)

V4 = "1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b"

ACCOUNT_IDS = {
    "good": ["123456789012", "000000000000"],
    "bad": [
        "",
        "12345678901",
        "1234567890123",
        "12345678901a",
        "1234 5678 9012",
        "123456789012\n",
        "\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669\u0660\u0661\u0662",  # Arabic-Indic digits
        "\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19\uff10\uff11\uff12",  # fullwidth digits
    ],
}
IAM_NAMES = {
    "good": ["SnykCraEc2Role", "a", "r" * 64, "A_b+c=d,e.f@g-h9"],
    "bad": [
        "",
        "r" * 65,
        "Snyk Cra",
        "Snyk/Cra",
        "Snyk*",
        "Snyk$Cra",
        "Snyk\nCra",
        "R\u00f4le",
        "\u540d\u524d",
    ],
}
POLICY_NAMES = {
    "good": ["AmazonEC2ContainerRegistryReadOnlyForSnyk", "p", "p" * 128, "A_b+c=d,e.f@g-h"],
    "bad": ["", "p" * 129, "Snyk Policy", "Policy#1", "a/b", "P\u00f6licy", "Policy\n"],
}
EXTERNAL_IDS = {
    "good": ["ab", "a" * 1224, str(uuid.UUID(V4)), "a+b=c,d.e@f:g/h-i_j"],
    "bad": [
        "a",
        "a" * 1225,
        'ext"id',
        "ext'id",
        "ext id",
        "ext\nid",
        "ext\tid",
        "ext$id",
        "ext#id",
        "ext`id",
        "ext\\id",
        "ext;id",
        "\u00ebxt-\u00efd",
        "\u5916\u90e8ID",
    ],
}
# The ExternalIds of broker files: IAM's rule, and YAML must read them back as the same string
# (Snyk's Helm chart writes them unquoted). Bad: what PyYAML or Go's YAML read as numbers, booleans,
# null or dates, and what breaks the document.
BROKER_EXTERNAL_IDS = {
    "good": [
        *EXTERNAL_IDS["good"],
        "12345678-1234-4123-8123-123456789012",
        "123-456",
        "-ab",
        ":ab",
        "NaN",
        "0x",
        "e5",
    ],
    "bad": [
        *EXTERNAL_IDS["bad"],
        "12345678",
        "+1",
        "08",
        "1_000",
        "1.5",
        "-.5",
        "1e5",
        "1.5e5",
        "0x1F",
        "0o17",
        "0b101",
        "1:30",
        ".inf",
        ".nan",
        "true",
        "True",
        "on",
        "OFF",
        "yes",
        "no",
        "null",
        "NULL",
        "2001-12-14",
        "@ext",
        ",ext",
        "ext:",
    ],
}
ROLE_ARNS = {
    "good": [
        "arn:aws:iam::123456789012:role/SnykEcrServiceRole",
        "arn:aws:iam::123456789012:role/service-role/path/Name",
        "arn:aws:iam::123456789012:role/" + "r" * 64,
    ],
    "bad": [
        "arn:aws:iam::123456789012:user/SnykCraUser",
        "arn:aws:iam::12345678901:role/Admin",
        "arn:aws:iam::123456789012:role/",
        "arn:aws:iam::123456789012:role/" + "r" * 65,
        "arn:aws:s3:::bucket",
        "arn:aws:iam::123456789012:role/Admin ",
        "arn:aws:iam::123456789012:role/Ad min",
        "arn:aws:iam::123456789012:role/Admin*",
        "arn:aws:iam::123456789012:role/\u00c4dmin",
        "arn:aws:iam::123456789012:role/Admin\n",
        "arn:aws:iam::\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669\u0660\u0661\u0662:role/Admin",
        "SnykEcrServiceRole",
        "*",
    ],
}
PRINCIPAL_ARNS = {
    "good": [
        "arn:aws:iam::123456789012:role/SnykCraEc2Role",
        "arn:aws:iam::123456789012:user/SnykCraUser",
        "arn:aws:iam::123456789012:user/team/SnykCraUser",
    ],
    "bad": [
        "*",
        "arn:aws:iam::123456789012:root",
        "arn:aws:iam::123456789012:group/Snyk",
        "arn:aws:sts::123456789012:assumed-role/SnykCraEc2Role/i-0123",
        "AROAEXAMPLEUNIQUEID12",  # the unique id AWS shows once a trusted principal is deleted
        "arn:aws:iam::123456789012:user/",
        "arn:aws:iam::123456789012:user/Sn\u00fck",
        "arn:aws:iam::123456789012:user/Snyk Cra",
    ],
}
REGIONS = {
    "good": ["us-east-1", "eu-west-1", "ap-southeast-2"],
    "bad": ["", "us-east-9", "US-EAST-1", "moon-1", "us-east-1 ", "us-east-1a", "us_east_1", "global"],
}
TOKENS = {
    "good": [V4, "00000000-0000-4000-8000-000000000000", str(uuid.uuid4())],
    "bad": [
        "",
        "not-a-token",
        str(uuid.uuid1()),
        str(uuid.uuid3(uuid.NAMESPACE_DNS, "snyk.io")),
        str(uuid.uuid5(uuid.NAMESPACE_DNS, "snyk.io")),
        V4.upper(),  # the broker's preflight check is case-sensitive
        "{" + V4 + "}",
        V4.replace("-", ""),
        "urn:uuid:" + V4,
        V4 + "\n",
        " " + V4,
        '"' + V4 + '"',
        "00000000-0000-0000-0000-000000000000",
        "1b4e28ba-2fa1-4d3b-73f5-ef19b5a7633b",  # version 4 nibble, but not the RFC 4122 variant
    ],
}
SERVICE_URLS = {
    "good": [
        "http://broker:8000",
        "https://broker.internal.example:443",
        "http://10.0.0.5:8000",
        "http://[::1]:8081",
        "http://cra_agent:8081",
        "https://cra.example:65535",
    ],
    "bad": [
        "broker:8000",
        "broker.internal",
        "ftp://broker:8000",
        "http://:8000",
        "http://broker",
        "http://broker:",
        "http://broker:0",
        "http://broker:70000",
        "http://broker:8000/",
        "http://broker:8000/path",
        "http://broker:8000?",
        "http://broker:8000?x=1",
        "http://user:pw@broker:8000",
        "http://:pw@broker:8000",
        'http://"broker":8000',
        "http://'broker':8000",
        "http://broker :8000",
        "http://broker:8000#frag",
        "http://$HOST:8000",
        "http://broker:8000\n",
        "http://broker\\:8000",
        "http://br\u00f6ker:8000",
        "http://cra%20x:8081",
        "http://-cra:8081",
    ],
}

RULES = [
    (v.validate_account_id, ACCOUNT_IDS),
    (v.validate_iam_name, IAM_NAMES),
    (v.validate_policy_name, POLICY_NAMES),
    (v.validate_external_id, EXTERNAL_IDS),
    (v.validate_broker_external_id, BROKER_EXTERNAL_IDS),
    (v.validate_role_arn, ROLE_ARNS),
    (v.validate_principal_arn, PRINCIPAL_ARNS),
    (v.validate_region, REGIONS),
    (v.validate_uuid4, TOKENS),
    (v.validate_service_url, SERVICE_URLS),
]


def _params(kind):
    return [
        pytest.param(validator, value, id=f"{validator.__name__}-{i}")
        for validator, values in RULES
        for i, value in enumerate(values[kind])
    ]


# --- the validators themselves ------------------------------------------------------------------


@pytest.mark.parametrize(("validator", "value"), _params("good"))
def test_validator_accepts_good_value(validator, value):
    validator(value)


@pytest.mark.parametrize(("validator", "value"), _params("bad"))
def test_validator_refuses_bad_value(validator, value):
    with pytest.raises(ValidationError) as exc:
        validator(value)
    assert exc.value.messages and all(m.strip() for m in exc.value.messages)


def test_every_botocore_ecr_region_is_accepted():
    regions = boto3.session.Session().get_available_regions("ecr")
    assert "us-east-1" in regions
    for region in regions:
        v.validate_region(region)


@pytest.mark.parametrize("kind", ["role", "user"])
def test_agent_arn_is_a_valid_principal_arn(kind):
    agent = AgentIdentity(name="cra", kind=kind, account_id="123456789012", iam_name="SnykCra")
    v.validate_principal_arn(agent.arn)
    if kind == "role":
        v.validate_role_arn(agent.arn)
    else:
        with pytest.raises(ValidationError):
            v.validate_role_arn(agent.arn)


def test_broker_file_values_refuse_every_unsafe_character():
    for char in ['"', "'", "`", "#", "$", "\\", " ", "\t", "\n", "\r", "\u00a0", "\u2028"]:
        with pytest.raises(ValidationError):
            v.validate_broker_safe(f"value{char}value")
    v.validate_broker_safe("arn:aws:iam::123456789012:role/SnykEcrServiceRole")


# --- through the models' full_clean() -----------------------------------------------------------


@pytest.fixture
def saved_agent(db):
    return AgentIdentity.objects.create(name="cra", kind="role", account_id="111111111111", iam_name="Cra")


@pytest.fixture
def saved_account(saved_agent):
    return EcrAccount.objects.create(account_id="222222222222", agent=saved_agent)


def _agent(saved_agent, saved_account, **values):
    fields = {"name": "cra-2", "kind": "role", "account_id": "333333333333", "iam_name": "Cra2"}
    return AgentIdentity(**{**fields, **values})


def _account(saved_agent, saved_account, **values):
    return EcrAccount(**{"account_id": "444444444444", "agent": saved_agent, **values})


def _external_id(saved_agent, saved_account, **values):
    return ExternalId(**{"account": saved_account, "value": "ext-valid", **values})


def _broker(saved_agent, saved_account, **values):
    fields = {
        "account": saved_account,
        "region": "us-east-1",
        "broker_token": V4,
        "broker_client_url": "http://broker:8000",
        "cr_agent_url": "http://cra:8081",
    }
    return BrokerInstance(**{**fields, **values})


# The model fields of free text and ExternalIds also refuse a value a spreadsheet would run as a
# formula (the validator functions above are IAM's and YAML's rules only).
FORMULAS = ["=HYPERLINK(1)", "+a", "-ab", "@a", " =ab", "\uff1dab", "\uff20ab"]


def _no_formulas(values: dict[str, list[str]]) -> dict[str, list[str]]:
    return {
        "good": [value for value in values["good"] if not v.starts_like_formula(value)],
        "bad": [*values["bad"], *FORMULAS],
    }


ALIASES = {"good": ["", "team a", "a" * 100, "Team (prod) = payments", "a-b", "a@b"], "bad": ["a" * 101]}

MODEL_FIELDS = [
    (_agent, "account_id", ACCOUNT_IDS),
    (_agent, "iam_name", IAM_NAMES),
    (_agent, "policy_name", POLICY_NAMES),
    (_agent, "management_role_arn", ROLE_ARNS),
    (_agent, "management_external_id", _no_formulas(EXTERNAL_IDS)),
    (_account, "account_id", ACCOUNT_IDS),
    (_account, "service_role_name", IAM_NAMES),
    (_account, "read_policy_name", POLICY_NAMES),
    (_account, "management_role_arn", ROLE_ARNS),
    (_account, "management_external_id", _no_formulas(EXTERNAL_IDS)),
    (_account, "alias", _no_formulas(ALIASES)),
    (_external_id, "value", _no_formulas(BROKER_EXTERNAL_IDS)),
    (_broker, "region", REGIONS),
    (_broker, "broker_token", TOKENS),
    (_broker, "broker_client_url", SERVICE_URLS),
    (_broker, "cr_agent_url", SERVICE_URLS),
]
# Blank means "not set" for these optional fields, so "" is a good value there.
OPTIONAL = {"alias", "management_role_arn", "management_external_id", "broker_client_url", "cr_agent_url"}


def _model_params(kind):
    params = []
    for build, field, values in MODEL_FIELDS:
        for i, value in enumerate(values[kind]):
            if value == "" and field in OPTIONAL:
                continue
            params.append(pytest.param(build, field, value, id=f"{build.__name__[1:]}.{field}-{i}"))
    return params


@pytest.mark.parametrize(("build", "field", "value"), _model_params("good"))
def test_model_full_clean_accepts_good_value(saved_agent, saved_account, build, field, value):
    build(saved_agent, saved_account, **{field: value}).full_clean()


@pytest.mark.parametrize(("build", "field", "value"), _model_params("bad"))
def test_model_full_clean_refuses_bad_value_under_its_field(saved_agent, saved_account, build, field, value):
    instance = build(saved_agent, saved_account, **{field: value})
    with pytest.raises(ValidationError) as exc:
        instance.full_clean()
    assert set(exc.value.message_dict) == {field}


@pytest.mark.parametrize("field", sorted(OPTIONAL & {"broker_client_url", "cr_agent_url"}))
def test_broker_urls_may_be_left_blank(saved_agent, saved_account, field):
    _broker(saved_agent, saved_account, **{field: ""}).full_clean()


def test_broker_port_range_is_enforced(saved_agent, saved_account):
    for port in (0, 65536):
        with pytest.raises(ValidationError) as exc:
            _broker(saved_agent, saved_account, port=port).full_clean()
        assert set(exc.value.message_dict) == {"port"}


def test_one_broker_per_account_and_region(saved_agent, saved_account):
    _broker(saved_agent, saved_account).save()
    with pytest.raises(ValidationError) as exc:
        _broker(saved_agent, saved_account).full_clean()
    assert "already exists" in str(exc.value)


# --- through the services: valid input passes, each bad value names its field -------------------


@pytest.mark.django_db
def test_valid_inputs_pass_both_services_without_writing(aws):
    agent = make_existing_inventory()
    before = inventory_counts()
    account, ext, brokers = account_services.account_build(agent=agent, **VALID_INPUTS["account"])
    built_agent = account_services.agent_build(**VALID_INPUTS["agent"])
    assert account.pk is None and ext.pk is None and built_agent.pk is None
    assert [b.region for b in brokers] == ["us-east-1"]
    assert brokers[0].broker_token == VALID_INPUTS["account"]["broker_token"]
    assert ext.value == VALID_INPUTS["account"]["external_id"]
    assert inventory_counts() == before
    assert sum(aws.calls.values()) == 0


@pytest.mark.django_db
def test_services_generate_an_external_id_and_token_when_left_blank():
    agent = make_existing_inventory()
    values = {**VALID_INPUTS["account"], "external_id": "", "broker_token": ""}
    _, ext, brokers = account_services.account_build(agent=agent, **values)
    v.validate_external_id(ext.value)
    v.validate_uuid4(brokers[0].broker_token)


@pytest.mark.django_db
def test_account_build_reports_every_bad_field_at_once():
    agent = make_existing_inventory()
    values = {
        **VALID_INPUTS["account"],
        "account_id": "1234",
        "external_id": "a b",
        "regions": ["moon-1"],
        "broker_token": V4.upper(),
        "cr_agent_url": "http://cra",
    }
    with pytest.raises(ValidationError) as exc:
        account_services.account_build(agent=agent, **values)
    assert set(exc.value.message_dict) == {
        "account_id",
        "external_id",
        "regions",
        "broker_token",
        "cr_agent_url",
    }


@pytest.mark.django_db
def test_account_build_needs_a_region():
    agent = make_existing_inventory()
    with pytest.raises(ValidationError) as exc:
        account_services.account_build(agent=agent, **{**VALID_INPUTS["account"], "regions": [" ", ""]})
    assert set(exc.value.message_dict) == {"regions"}


# --- the bad-input corpus -----------------------------------------------------------------------

CASES = load_bad_inputs(targets={"account", "agent"})


def test_corpus_is_large_and_covers_every_field():
    assert len(CASES) >= 60
    covered = {(case.target, case.field) for case in CASES}
    for target, values in VALID_INPUTS.items():
        missing = {(target, field) for field in values} - covered
        assert not missing, f"no bad-input case for {sorted(missing)}"


@pytest.mark.django_db
@pytest.mark.parametrize("case", as_params(CASES))
def test_bad_input_is_refused_before_any_write_or_aws_call(aws, case):
    agent = make_existing_inventory()
    aws.calls.clear()
    before = inventory_counts()

    with pytest.raises(ValidationError) as exc:
        call_service(case, agent=agent)

    errors = exc.value.message_dict
    assert set(errors) == {case.field}, f"{case.id}: errors under {sorted(errors)}"
    assert any(case.expect in message for message in errors[case.field]), (
        f"{case.id}: {case.expect!r} not in {errors[case.field]}"
    )
    assert inventory_counts() == before
    assert sum(aws.calls.values()) == 0


@pytest.mark.django_db
def test_aws_call_counter_sees_calls(aws):
    """Control for the zero-calls assertion above: a real call through provisioning.aws is counted."""
    aws.Iam(aws.Access("123456789012")).call("list_roles")
    assert aws.calls["iam:ListRoles"] == 1


@pytest.mark.django_db
def test_duplicate_cases_refer_to_existing_rows():
    make_existing_inventory()
    assert EcrAccount.objects.filter(account_id=EXISTING_ACCOUNT_ID).exists()
    duplicate_values = {case.value for case in CASES if case.expect == "already exists"}
    assert EXISTING_ACCOUNT_ID in duplicate_values


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("- {target: account, field: account_id, value: '1'}\n", "missing"),
        ("- {target: form, field: account_id, value: '1', expect: x}\n", "unknown target"),
        ("- {target: agent, field: regions, value: '1', expect: x}\n", "has no field"),
        ("- {target: agent, field: name, value: 1, expect: x}\n", "must be a string"),
        ("- {target: agent, field: name, value: 'a', expect: x, colour: red}\n", "unknown keys"),
        ("- {target: agent, field: name, value: 'a', expect: x, id: a}\n" * 2, "duplicate id"),
    ],
)
def test_corpus_loader_rejects_malformed_cases(tmp_path, text, error):
    path = tmp_path / "corpus.yaml"
    path.write_text(text)
    with pytest.raises(CorpusError, match=error):
        load_bad_inputs(path)


def test_corpus_loader_builds_repeated_values(tmp_path):
    path = tmp_path / "corpus.yaml"
    path.write_text(
        "- {target: agent, field: iam_name, value: ab, repeat: 3, prefix: '<', suffix: '>', expect: x}\n"
    )
    (case,) = load_bad_inputs(path)
    assert case.value == "<ababab>"
    assert case.kwargs()["iam_name"] == "<ababab>"
    assert case.kwargs()["name"] == VALID_INPUTS["agent"]["name"]
    assert CORPUS.is_file()

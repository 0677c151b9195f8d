"""Field validators carrying IAM's rules (botocore models, IAM quotas) and the broker file's.

moto enforces almost none of these, so the portal must: every value is checked before it is
saved or sent to AWS. Messages name the rule so a form or the command line can show them as is.
"""

import re
import uuid
from urllib.parse import urlsplit

import yaml
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator

from . import regions

# Characters that break a broker .env (docker --env-file keeps quotes) or the JSON the broker
# interpolates CR_* values into. Refused, never escaped.
BROKER_UNSAFE = re.compile(r"[\s\"'`#$\\]")

# [0-9], not \d: \d also matches Arabic-Indic, fullwidth and other Unicode digits.
account_id_validator = RegexValidator(
    r"^[0-9]{12}\Z", "An AWS account id is exactly 12 digits.", code="account_id"
)
iam_name_validator = RegexValidator(
    r"^[\w+=,.@-]{1,64}\Z",
    "IAM role and user names are 1-64 characters of letters, digits and +=,.@_-",
    code="iam_name",
)
policy_name_validator = RegexValidator(
    r"^[\w+=,.@-]{1,128}\Z",
    "IAM policy names are 1-128 characters of letters, digits and +=,.@_-",
    code="policy_name",
)
external_id_validator = RegexValidator(
    r"^[\w+=,.@:/-]{2,1224}\Z",
    "An ExternalId is 2-1224 characters of letters, digits and +=,.@:/_-",
    code="external_id",
)
role_arn_validator = RegexValidator(
    r"^arn:aws:iam::\d{12}:role/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,64}\Z",
    "Enter an IAM role ARN: arn:aws:iam::<12-digit account>:role/<name>",
    code="role_arn",
)
principal_arn_validator = RegexValidator(
    r"^arn:aws:iam::\d{12}:(?:role|user)/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,64}\Z",
    "Enter an IAM role or user ARN: arn:aws:iam::<12-digit account>:role/<name> or :user/<name>",
    code="principal_arn",
)


# Forms, the command line and uploads refuse a value with spaces or line breaks around it rather than
# trimming it: the value a user pasted is the value checked, and every channel agrees.
SURROUNDING_WHITESPACE = "Remove the spaces or line breaks around the value: nothing is trimmed for you."


def has_surrounding_whitespace(value: object) -> bool:
    return isinstance(value, str) and value.strip() != "" and value != value.strip()


# OWASP "CSV injection": a value starting with one of these is a formula to a spreadsheet, and the
# inventory ends up in spreadsheets (audit exports, bulk reports). Fullwidth forms included.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def starts_like_formula(value: str) -> bool:
    return value.startswith(FORMULA_START) or value.lstrip().startswith(FORMULA_START)


def validate_not_formula(value: str) -> None:
    """On the model fields of free text and ExternalIds, so the wizard, the command line and uploads
    refuse the same values (an upload checks every cell with the same rule)."""
    if starts_like_formula(value):
        raise ValidationError(
            "Starts with %(start)r: values that look like spreadsheet formulas are refused.",
            code="formula",
            params={"start": value[:1]},
        )


def _ascii_only(value: str) -> None:
    # \w in Python matches non-ASCII letters; IAM's [\w] does not.
    if not value.isascii():
        raise ValidationError("Only ASCII characters are allowed.", code="ascii")


def validate_account_id(value: str) -> None:
    account_id_validator(value)


def validate_iam_name(value: str) -> None:
    _ascii_only(value)
    iam_name_validator(value)


def validate_policy_name(value: str) -> None:
    _ascii_only(value)
    policy_name_validator(value)


def validate_external_id(value: str) -> None:
    _ascii_only(value)
    external_id_validator(value)


# Number forms of Go's YAML (Helm's and Kubernetes'), once "_" is dropped, that PyYAML reads as
# strings: 1e5, -.5, 0o17 (strconv.ParseInt with base 0, and yaml.v2's float pattern).
_GO_YAML_NUMBER = re.compile(
    r"[-+]?(?:0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?)"
)


def reads_as_yaml_string(value: str) -> bool:
    """Whether `key: value`, written unquoted, is read back as this very string by YAML.

    Not for 12345678, 1e5, true, on, null, 2001-12-14, 1:30 (YAML 1.1), nor for @x, ,x or x:,
    which break the document.
    """
    if _GO_YAML_NUMBER.fullmatch(value.replace("_", "")):
        return False
    try:
        return yaml.safe_load(f"v: {value}\n") == {"v": value}
    except yaml.YAMLError:
        return False


def validate_broker_external_id(value: str) -> None:
    """An ExternalId that goes into broker files: IAM's rule, and it must stay a string in YAML.

    Snyk's Helm chart writes CR_EXTERNAL_ID into the broker's Deployment unquoted
    (`value: {{ .Values.crExternalId }}`): Kubernetes refuses an env value YAML reads as a number
    or boolean, and quoting it in the values file does not help.
    """
    validate_external_id(value)
    if not reads_as_yaml_string(value):
        raise ValidationError(
            "%(value)s reads as a number, boolean, date or null in YAML (or breaks it), and Snyk's "
            "Helm chart writes the ExternalId into Kubernetes unquoted: use another one, e.g. a "
            "generated UUID.",
            code="external_id_yaml",
            params={"value": value},
        )


def validate_role_arn(value: str) -> None:
    _ascii_only(value)
    role_arn_validator(value)


def validate_principal_arn(value: str) -> None:
    _ascii_only(value)
    principal_arn_validator(value)


def validate_region(value: str) -> None:
    if value not in regions.ECR_REGIONS:
        partition = regions.partition_of_region(value)
        if partition:
            raise ValidationError(
                "%(value)s is in the %(partition)s partition: the portal manages accounts of the "
                "aws partition only (its ARNs, credentials and Snyk brokers are separate).",
                code="region_partition",
                params={"value": value, "partition": partition},
            )
        raise ValidationError(
            "%(value)s is not an AWS region with ECR (from botocore's endpoint list).",
            code="region",
            params={"value": value},
        )


def validate_uuid4(value: str) -> None:
    """The broker client's preflight check accepts only the canonical lower-case UUID form
    (`^[0-9a-f]{8}-[0-9a-f]{4}-...$`, case-sensitive); the portal also insists on version 4."""
    try:
        parsed = uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        parsed = None
    if parsed is None or parsed.version != 4 or str(parsed) != value:
        raise ValidationError(
            "A broker token is a lower-case UUIDv4 such as 1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b.",
            code="uuid4",
        )


def validate_broker_safe(value: str) -> None:
    if BROKER_UNSAFE.search(value or ""):
        raise ValidationError(
            "Must not contain quotes, whitespace, newlines, backslashes, # or $ "
            "(the broker .env and its JSON take values verbatim).",
            code="broker_unsafe",
        )


# A DNS name or docker service name (letters, digits, _ . -), or a bracketed IPv6 address.
_URL_HOST = re.compile(r"^(?:[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?|\[[0-9A-Fa-f:.]+\])\Z")


def validate_service_url(value: str) -> None:
    """scheme://host:port with nothing after it: the broker appends its own paths."""
    validate_broker_safe(value)
    if not value.isascii():
        raise ValidationError("Only ASCII characters are allowed.", code="ascii")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(
            "Enter an http(s) URL with a host and a port, e.g. http://broker.internal:8000",
            code="url",
        )
    if "@" in parts.netloc:
        raise ValidationError(
            "Give only scheme, host and port: no path, query, fragment or credentials.",
            code="url_extra",
        )
    if port is None:
        raise ValidationError("The URL needs an explicit port, e.g. http://cra:8081", code="url_port")
    # Anything after the port, even a bare "/" or "?", ends up in the broker's paths ("//systemcheck").
    if value[len(parts.scheme) + 3 :] != parts.netloc:
        raise ValidationError(
            "Give only scheme, host and port: no path, query, fragment or credentials.",
            code="url_extra",
        )
    if not 1 <= port <= 65535:
        raise ValidationError("The port must be between 1 and 65535.", code="url_port")
    if not _URL_HOST.match(parts.netloc.rpartition(":")[0]):
        raise ValidationError(
            "The host must be a DNS name, a service name or an [IPv6] address.", code="url_host"
        )


def validate_snyk_api_url(value: str) -> None:
    """scheme://host[:port] of Snyk's REST API (a regional host, or a stand-in such as the fake)."""
    parts = urlsplit(value or "")
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or value.rstrip("/") != (f"{parts.scheme}://{parts.netloc}")
    ):
        raise ValidationError(
            "Enter the API's scheme and host only, e.g. https://api.eu.snyk.io", code="snyk_api_url"
        )


def validate_snyk_id(value: str) -> None:
    """Snyk's ids (tenants, orgs, groups, deployments, connections) are UUIDs."""
    try:
        uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        raise ValidationError(
            "%(value)s is not a Snyk id (a UUID).", code="snyk_id", params={"value": value}
        ) from None


# Universal Broker connection names (snyk-broker-config base-command.ts).
SNYK_CONNECTION_NAME = re.compile(r"^[\w-]+\Z", re.ASCII)

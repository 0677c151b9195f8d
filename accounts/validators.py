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


# Both URL fields share the rule, so its messages show an example for each (not one for both).
URL_EXAMPLES = "http://broker:8000 for the broker client, http://cra:8081 for the CR agent"


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
            f"Enter an http(s) URL with a host and a port: {URL_EXAMPLES}.",
            code="url",
        )
    if "@" in parts.netloc:
        raise ValidationError(
            "Give only scheme, host and port: no path, query, fragment or credentials.",
            code="url_extra",
        )
    if port is None:
        raise ValidationError(f"The URL needs an explicit port: {URL_EXAMPLES}.", code="url_port")
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


# --- AWS Organizations (botocore `organizations` model patterns) ---------------------------------

ou_id_validator = RegexValidator(
    r"^ou-[0-9a-z]{4,32}-[a-z0-9]{8,32}\Z",
    "An organizational unit id is ou-<4-32 characters>-<8-32 characters>, e.g. ou-ab12-cd34ef56",
    code="ou_id",
)
_ROOT_ID = re.compile(r"^r-[0-9a-z]{4,32}\Z")
# Tag keys 1-128 and values 0-256 characters of letters, digits, spaces and _.:/=+-@ (IAM/Organizations).
_TAG_TEXT = re.compile(r"^[\w .:/=+@-]*\Z")
GLOB_MAX = 256
# What a template may hold: {account_id} and {region}, nothing else in braces.
TEMPLATE_PLACEHOLDERS = ("account_id", "region")
SAMPLE_ACCOUNT_ID = "123456789012"


def validate_ou_or_root_id(value: str) -> None:
    """Rules match an OU (or the root: the whole organization)."""
    if not _ROOT_ID.match(value):
        ou_id_validator(value)


def validate_glob(value: str) -> None:
    """An fnmatch pattern of names or e-mail addresses: printable, bounded, no unclosed bracket."""
    if len(value) > GLOB_MAX or not value.isprintable():
        raise ValidationError(f"A pattern is at most {GLOB_MAX} printable characters.", code="glob")
    if value.count("[") != value.count("]"):
        raise ValidationError("The pattern has an unclosed [ ]: write [[] for a literal [.", code="glob")


def validate_tag(key: str, value: str) -> None:
    if not 1 <= len(key) <= 128 or not _TAG_TEXT.match(key) or key.startswith("aws:"):
        raise ValidationError(
            "A tag key is 1-128 letters, digits, spaces or _.:/=+-@ (not starting with aws:).",
            code="tag_key",
        )
    if len(value) > 256 or not _TAG_TEXT.match(value):
        raise ValidationError("A tag value is 0-256 letters, digits, spaces or _.:/=+-@.", code="tag_value")


def render_template(template: str, *, account_id: str, region: str) -> str:
    """`http://broker-{account_id}-{region}:8000` for one account and region."""
    return template.replace("{account_id}", account_id).replace("{region}", region)


def validate_url_template(template: str, regions_: list[str] | None = None) -> None:
    """A broker URL template: only the known placeholders, and every rendering a valid service URL."""
    names = re.findall(r"\{([^{}]*)\}", template)
    unknown = [n for n in names if n not in TEMPLATE_PLACEHOLDERS]
    if unknown or template.count("{") != len(names) or template.count("}") != len(names):
        raise ValidationError(
            "Only the placeholders {account_id} and {region} may appear in braces.", code="template"
        )
    for region in regions_ or ["us-east-1"]:
        validate_service_url(render_template(template, account_id=SAMPLE_ACCOUNT_ID, region=region))


# --- where a role agent runs (ECS, EKS) -------------------------------------------------------------

# ECS cluster names: up to 255 letters, digits, hyphens and underscores; EKS: 1-100, starting with a
# letter or digit (the services' CreateCluster rules).
_CLUSTER_ARN = {
    "ecs": re.compile(r"^arn:aws:ecs:([a-z0-9-]+):([0-9]{12}):cluster/[A-Za-z0-9_-]{1,255}\Z"),
    "eks": re.compile(r"^arn:aws:eks:([a-z0-9-]+):([0-9]{12}):cluster/[A-Za-z0-9][A-Za-z0-9_-]{0,99}\Z"),
}
# Kubernetes names (apimachinery's IsDNS1123Label / IsDNS1123Subdomain).
_DNS1123_LABEL = re.compile(r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?\Z")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*\Z")
_THUMBPRINT = re.compile(r"^[0-9A-Fa-f]{40}\Z")


def validate_cluster_arn(value: str) -> None:
    """An ECS or EKS cluster ARN of the aws partition (which one a runtime needs is the model's rule)."""
    if not any(pattern.match(value) for pattern in _CLUSTER_ARN.values()):
        raise ValidationError(
            "Enter a cluster ARN: arn:aws:ecs:<region>:<12-digit account>:cluster/<name> (ECS) or "
            "arn:aws:eks:<region>:<12-digit account>:cluster/<name> (EKS).",
            code="cluster_arn",
        )


def cluster_arn_parts(value: str) -> tuple[str, str, str, str]:
    """(service, region, account id, cluster name) of a valid cluster ARN."""
    _, _, service, region, account_id, resource = value.split(":", 5)
    return service, region, account_id, resource.split("/", 1)[1]


def validate_oidc_issuer(value: str) -> None:
    """The cluster's OIDC issuer URL, as `aws eks describe-cluster` answers it: https, a host, a path
    and nothing else (IAM names the provider and the trust's condition keys after host and path)."""
    parts = urlsplit(value) if value.isascii() else None
    host = parts.hostname if parts else None
    if (
        parts is None
        or parts.scheme != "https"
        or not host
        or parts.query
        or parts.fragment
        or "@" in parts.netloc
        or BROKER_UNSAFE.search(value)
        or value.endswith("/")
    ):
        raise ValidationError(
            "Enter the cluster's OIDC issuer: an https URL without query, fragment or trailing slash, "
            "e.g. https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE",
            code="oidc_issuer",
        )


def validate_k8s_namespace(value: str) -> None:
    if len(value) > 63 or not _DNS1123_LABEL.match(value):
        raise ValidationError(
            "A Kubernetes namespace is a DNS-1123 label: at most 63 lower-case letters, digits and "
            "'-', starting and ending with a letter or digit.",
            code="k8s_namespace",
        )


def validate_k8s_service_account(value: str) -> None:
    if len(value) > 253 or not _DNS1123_SUBDOMAIN.match(value):
        raise ValidationError(
            "A Kubernetes service account name is a DNS-1123 subdomain: at most 253 lower-case "
            "letters, digits, '-' and '.', each part starting and ending with a letter or digit.",
            code="k8s_service_account",
        )


def validate_thumbprint(value: str) -> None:
    if not _THUMBPRINT.match(value):
        raise ValidationError(
            "An OIDC thumbprint is the 40 hexadecimal characters of the issuer certificate's SHA-1.",
            code="thumbprint",
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

"""Broker files as pure functions of a BrokerInstance: `.env`, Helm values, `docker run` commands.

Nothing here writes rows or calls AWS. Values are validated, never escaped: the broker builds a
JSON document from CR_* by plain string interpolation and `docker run --env-file` keeps quotes,
so a value that would need quoting is refused (BrokerFileError) instead of rendered. A broker
that is retired, or lacks the URLs the broker client needs, raises BrokerFileError naming what is
missing; no placeholder is ever rendered into a file someone will deploy.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import yaml
from django.core.exceptions import ValidationError

from . import validators as v
from .choices import AgentKind, BrokerStatus, ExternalIdState

if TYPE_CHECKING:
    from .models import AgentIdentity, BrokerInstance, EcrAccount

BROKER_IMAGE = "snyk/broker:container-registry-agent"
CRA_IMAGE = "snyk/container-registry-agent:latest"
DEFAULT_CRA_PORT = 8081
MASK = "********-****-****-****-************"

FORMATS = ("env", "helm", "docker")


class BrokerFileError(ValueError):
    """The broker's settings cannot make a file the broker client would accept."""


@dataclass(frozen=True)
class BrokerFile:
    filename: str
    content: str
    content_type: str


def current_external_id(account: EcrAccount) -> str:
    """The newest active ExternalId the trust already accepts (during rotation it lists both).

    A new id is used only once a run has put it into the trust, so a broker redeployed early never
    holds an id AWS still refuses. Before the first run (nothing applied yet) the one id is used.
    Reads `account.external_ids.all()`, so a prefetch makes this free.
    """
    ids = list(account.external_ids.all())
    active = [e for e in ids if e.state == ExternalIdState.ACTIVE]
    if not active:
        raise BrokerFileError(f"Account {account.account_id} has no active ExternalId.")
    applied_active = [e for e in active if e.applied_at is not None]
    # Mid-rotation, before the run that adds the new id: the retiring id is still the one in trust.
    applied_retiring = [e for e in ids if e.state == ExternalIdState.RETIRING and e.applied_at is not None]
    newest = max(applied_active or applied_retiring or active, key=lambda e: (e.created_at, e.pk or 0))
    return newest.value


def _check(name: str, value: str, *validators) -> str:
    if not value:
        raise BrokerFileError(f"{name} is not set for this broker: set it before deploying the broker.")
    try:
        for validator in validators:
            validator(value)
    except ValidationError as exc:
        raise BrokerFileError(f"{name}: {' '.join(exc.messages)}") from None
    return value


def broker_settings(broker: BrokerInstance, *, masked: bool = False) -> dict[str, str]:
    """The broker client's environment, in the order the docs list it.

    masked=True replaces the token for pages shown to people who may not download it.
    """
    if broker.status == BrokerStatus.RETIRED:
        raise BrokerFileError(
            f"The broker for {broker.account.account_id} in {broker.region} is retired: "
            "its files are no longer served."
        )
    account = broker.account
    client_url = _check("BROKER_CLIENT_URL", broker.broker_client_url, v.validate_service_url)
    agent_url = _check("CR_AGENT_URL", broker.cr_agent_url, v.validate_service_url).rstrip("/")
    token = MASK if masked else _check("BROKER_TOKEN", broker.broker_token, v.validate_uuid4)
    external_id = _check(
        "CR_EXTERNAL_ID", current_external_id(account), v.validate_external_id, v.validate_broker_safe
    )
    role_arn = _check("CR_ROLE_ARN", account.service_role_arn, v.validate_role_arn, v.validate_broker_safe)
    region = _check("CR_REGION", broker.region, v.validate_broker_safe)
    server_url = _check("BROKER_SERVER_URL", broker.broker_server_url, v.validate_broker_safe)
    values = {
        "BROKER_TOKEN": token,
        "BROKER_CLIENT_URL": client_url.rstrip("/"),
        "CR_AGENT_URL": agent_url,
        "CR_TYPE": "ecr",
        "CR_ROLE_ARN": role_arn,
        "CR_REGION": region,
        "CR_EXTERNAL_ID": external_id,
        "PORT": str(int(broker.port)),
        "BROKER_SERVER_URL": server_url,
        "BROKER_CLIENT_VALIDATION_URL": f"{agent_url}/systemcheck",
    }
    if client_url.startswith("https://"):
        # The portal holds no TLS certificate for the broker (HTTPS_CERT/HTTPS_KEY): an https
        # client URL means TLS ends upstream (load balancer, ingress). Without this flag the
        # broker client probes the URL at start-up and fails its preflight when it cannot reach it.
        values["BROKER_CLIENT_URL_TLS_TERMINATED"] = "true"
    return values


def _header(broker: BrokerInstance, comment: str = "#") -> str:
    return (
        f"{comment} Snyk Broker client for ECR account {broker.account.account_id}, region {broker.region}.\n"
        f"{comment} Generated by the ECR Broker Portal; it holds the broker token: keep it secret.\n"
    )


def render_env(broker: BrokerInstance, *, masked: bool = False) -> str:
    """KEY=value lines for `docker run --env-file` / the broker's own dotenv (no quotes, ever)."""
    values = broker_settings(broker, masked=masked)
    return _header(broker) + "".join(f"{key}={value}\n" for key, value in values.items())


# --- Helm: Snyk's snyk-broker chart in container-registry-agent mode --------------------------------
# Facts from its templates (cra_deployment.yaml, _scmConfig.tpl, _helpers.tpl, values.yaml).

HELM_CHART = "snyk-broker/snyk-broker"
HELM_NAMESPACE = "snyk-broker"
CHART_SCM_TYPE = "container-registry-agent"
CHART_BROKER_PORT = 8000  # service.port
CHART_CRA_PORT = 8081  # deployment.container.crSnykPort
# The chart labels its agent `<release>-cr-<release>`, and a label value holds at most 63 characters.
HELM_RELEASE_MAX = 29
_RELEASE_NAME = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?")
CRA_AWS_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


@dataclass(frozen=True)
class HelmRelease:
    """One account and region's release, and the names the chart derives from it."""

    name: str
    namespace: str = HELM_NAMESPACE

    @property
    def agent_deployment(self) -> str:
        return f"{CHART_SCM_TYPE}-cra-{self.name}"

    @property
    def agent_container(self) -> str:
        return f"{CHART_SCM_TYPE}-{self.name}"

    @property
    def agent_url(self) -> str:
        """CR_AGENT_URL as the chart sets it: its own agent's service."""
        return f"http://cra-service-{self.name}:{CHART_CRA_PORT}"

    @property
    def broker_client_url(self) -> str:
        """BROKER_CLIENT_URL as the chart forces it (snyk-broker.brokerServiceName cuts the scmType
        so that the service name fits 63 characters)."""
        suffix = f"-broker-service-{self.name}"
        return f"http://{CHART_SCM_TYPE[: 63 - len(suffix)]}{suffix}:{CHART_BROKER_PORT}"


def helm_release(broker: BrokerInstance) -> HelmRelease:
    """A release per account and region, so that the releases of one namespace never collide."""
    name = f"{broker.account.account_id}-{broker.region}"
    if len(name) > HELM_RELEASE_MAX or not _RELEASE_NAME.fullmatch(name):
        raise BrokerFileError(
            f"Helm release {name!r} is not a DNS label of at most {HELM_RELEASE_MAX} characters "
            "(the chart labels its agent <release>-cr-<release>, at most 63)."
        )
    return HelmRelease(name)


def agent_secret_name(agent: AgentIdentity) -> str:
    """The Kubernetes Secret holding a user agent's access key (a DNS name, one per namespace)."""
    return f"{re.sub(r'[^a-z0-9]+', '-', agent.name.lower()).strip('-') or 'cra'}-aws-keys"


def dispatcher_url(server_url: str) -> str:
    """The regional API for a broker server, as the broker client derives it (//broker. -> //api.).

    The chart always sets BROKER_DISPATCHER_BASE_URL (default https://api.snyk.io), so a broker
    outside the default region needs it set."""
    return server_url.replace("//broker.", "//api.", 1)


class _ValuesDumper(yaml.SafeDumper):
    """Every string value double-quoted, keys plain: Go's YAML, which Helm uses, reads 12345678,
    1e5 or 0o17 unquoted as numbers, and PyYAML would leave the last two unquoted."""

    def represent_mapping(self, tag, mapping, flow_style=None):
        node = super().represent_mapping(tag, mapping, flow_style)
        for key, _ in node.value:
            key.style = None
        return node


_ValuesDumper.add_representer(
    str, lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"')
)


def yaml_document(values: dict[str, Any]) -> str:
    return yaml.dump(values, Dumper=_ValuesDumper, sort_keys=False, default_flow_style=False, width=1 << 16)


def _agent_identity_helm(agent: AgentIdentity, release: HelmRelease) -> str:
    if agent.kind != AgentKind.USER:
        return (
            f"# The agent runs as IAM role {agent.iam_name} through the instance profile of its node:\n"
            f"# schedule it on nodes whose instance profile is {agent.iam_name}\n"
            "# (extraPodSpecsCr.nodeSelector) with an IMDSv2 hop limit of 2, so that pods reach the\n"
            "# instance metadata. IRSA (an eks.amazonaws.com/role-arn annotation on the chart's service\n"
            "# account) would need the role to trust the cluster's OIDC provider: the portal keeps its\n"
            "# trust at EC2, and a reconcile resets it.\n"
        )
    secret = agent_secret_name(agent)
    ns = release.namespace
    env = [{"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}} for key in CRA_AWS_KEYS]
    patch = {"spec": {"template": {"spec": {"containers": [{"name": release.agent_container, "env": env}]}}}}
    compact = functools.partial(json.dumps, separators=(",", ":"))
    literals = " ".join(f'--from-literal={key}="${key}"' for key in CRA_AWS_KEYS)
    return (
        f"# The agent runs as IAM user {agent.iam_name}, with its access key from Secret {secret},\n"
        f"# keys {' and '.join(CRA_AWS_KEYS)} (one Secret in {ns} serves every release of this agent).\n"
        "# The chart hands the agent's container no Secret, so create it once, from the key the portal\n"
        "# showed exported in your shell, and point the agent at it after every install or upgrade:\n"
        f"#   kubectl -n {ns} create secret generic {secret} {literals}\n"
        f"#   kubectl -n {ns} patch deployment {release.agent_deployment} -p '{compact(patch)}'\n"
    )


def render_helm_values(broker: BrokerInstance, *, masked: bool = False) -> str:
    """values.yaml for Snyk's `snyk-broker` chart in container-registry-agent mode.

    Only values the chart reads: it runs the release's own agent and sets CR_AGENT_URL and
    BROKER_CLIENT_URL itself, which the header says instead of the portal's URLs.
    """
    s = broker_settings(broker, masked=masked)
    external_id = s["CR_EXTERNAL_ID"]
    if not v.reads_as_yaml_string(external_id):
        raise BrokerFileError(
            f"CR_EXTERNAL_ID {external_id} reads as a number, boolean, date or null in YAML, and Snyk's "
            "chart writes it into the Deployment unquoted, where Kubernetes refuses it: rotate the "
            "account's ExternalId to make a Helm file (its .env and docker script work as they are)."
        )
    release = helm_release(broker)
    values = {
        "scmType": CHART_SCM_TYPE,
        "brokerToken": s["BROKER_TOKEN"],
        "brokerServerUrl": s["BROKER_SERVER_URL"],
        "brokerDispatcherUrl": dispatcher_url(s["BROKER_SERVER_URL"]),
        "crType": "ecr",
        "crRoleArn": s["CR_ROLE_ARN"],
        "crRegion": s["CR_REGION"],
        "crExternalId": external_id,
    }
    return (
        _header(broker)
        + f"#\n# Release {release.name} (one per account and region) in namespace {release.namespace}, with\n"
        + "# Snyk's chart repository added as snyk-broker:\n"
        + f"#   helm install {release.name} {HELM_CHART} -n {release.namespace} --create-namespace"
        + f" -f {filename_for(broker, 'helm')}\n"
        + "#\n# The chart runs the release's own Container Registry Agent and sets both URLs itself (the\n"
        + "# portal's broker client and agent URLs are for the .env and docker files):\n"
        + f"#   CR_AGENT_URL={release.agent_url}\n"
        + f"#   BROKER_CLIENT_URL={release.broker_client_url}\n#\n"
        + _agent_identity_helm(broker.account.agent, release)
        + yaml_document(values)
    )


def render_docker_run(broker: BrokerInstance, *, masked: bool = False) -> str:
    """Shell commands starting the Container Registry Agent and the broker client."""
    s = broker_settings(broker, masked=masked)
    port = s["PORT"]
    agent_port = _url_port(s["CR_AGENT_URL"])
    agent = broker.account.agent
    cra = [
        "docker run --restart=always --name snyk-cra",
        f"-p {agent_port}:{agent_port}",
        f"-e SNYK_PORT={agent_port}",
    ]
    if agent.kind == "user":
        # Taken from the shell's environment: the access key is never written into this file.
        cra += ["-e AWS_ACCESS_KEY_ID", "-e AWS_SECRET_ACCESS_KEY"]
    cra.append(CRA_IMAGE)
    broker_cmd = ["docker run --restart=always --name snyk-broker", f"-p {port}:{port}"]
    broker_cmd += [f"-e {shlex.quote(f'{key}={value}')}" for key, value in s.items()]
    broker_cmd.append(BROKER_IMAGE)
    identity = (
        "the EC2 instance profile of role " + agent.iam_name
        if agent.kind == "role"
        else f"the access key of IAM user {agent.iam_name} (export it first)"
    )
    return (
        "#!/bin/sh\n"
        + _header(broker)
        + f"# 1. The Container Registry Agent, running as {identity}.\n"
        + " \\\n  ".join(cra)
        + "\n\n# 2. The broker client.\n"
        + " \\\n  ".join(broker_cmd)
        + "\n"
    )


def _url_port(url: str) -> int:

    return urlsplit(url).port or DEFAULT_CRA_PORT


def render_cra_env(*, access_key_id: str, secret_access_key: str, port: int = DEFAULT_CRA_PORT) -> str:
    """The Container Registry Agent's .env for a user agent (shown once, never stored)."""
    for name, value in (("AWS_ACCESS_KEY_ID", access_key_id), ("AWS_SECRET_ACCESS_KEY", secret_access_key)):
        _check(name, value, v.validate_broker_safe)
    return (
        "# Container Registry Agent credentials. Shown once by the ECR Broker Portal: keep it secret.\n"
        f"AWS_ACCESS_KEY_ID={access_key_id}\n"
        f"AWS_SECRET_ACCESS_KEY={secret_access_key}\n"
        f"SNYK_PORT={int(port)}\n"
    )


_RENDERERS = {
    "env": (render_env, "env", "text/plain; charset=utf-8"),
    "helm": (render_helm_values, "values.yaml", "application/yaml; charset=utf-8"),
    "docker": (render_docker_run, "docker-run.sh", "text/x-shellscript; charset=utf-8"),
}


def filename_for(broker: BrokerInstance, fmt: str) -> str:
    suffix = _RENDERERS[fmt][1]
    separator = "." if fmt == "env" else "-"
    return f"broker-{broker.account.account_id}-{broker.region}{separator}{suffix}"


def render(broker: BrokerInstance, fmt: str, *, masked: bool = False) -> BrokerFile:
    if fmt not in _RENDERERS:
        raise BrokerFileError(f"Unknown format {fmt!r}: choose one of {', '.join(FORMATS)}.")
    function, _, content_type = _RENDERERS[fmt]
    return BrokerFile(filename_for(broker, fmt), function(broker, masked=masked), content_type)

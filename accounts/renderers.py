"""Broker files as pure functions of a BrokerInstance: `.env`, Helm values, `docker run` commands.

Nothing here writes rows or calls AWS. Values are validated, never escaped: the broker builds a
JSON document from CR_* by plain string interpolation and `docker run --env-file` keeps quotes,
so a value that would need quoting is refused (BrokerFileError) instead of rendered. A broker
that is retired, or lacks the URLs the broker client needs, raises BrokerFileError naming what is
missing; no placeholder is ever rendered into a file someone will deploy.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import yaml
from django.core.exceptions import ValidationError

from . import validators as v
from .choices import BrokerStatus, ExternalIdState

if TYPE_CHECKING:
    from .models import BrokerInstance, EcrAccount

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


def _check(name: str, value: str, *validators: Callable[[str], None]) -> str:
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


def render_helm_values(broker: BrokerInstance, *, masked: bool = False) -> str:
    """values.yaml for the `snyk-broker` Helm chart in container-registry-agent mode."""
    s = broker_settings(broker, masked=masked)
    values = {
        "scmType": "container-registry-agent",
        "brokerToken": s["BROKER_TOKEN"],
        "brokerServerUrl": s["BROKER_SERVER_URL"],
        "brokerClientUrl": s["BROKER_CLIENT_URL"],
        "crType": "ecr",
        "crRoleArn": s["CR_ROLE_ARN"],
        "crRegion": s["CR_REGION"],
        "crExternalId": s["CR_EXTERNAL_ID"],
        "crAgentUrl": s["CR_AGENT_URL"],
    }
    body = yaml.safe_dump(values, sort_keys=False, default_flow_style=False)
    return (
        _header(broker) + "# helm install snyk-broker-chart snyk-broker/snyk-broker -f values.yaml "
        "-n snyk-broker --create-namespace\n" + body
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
    from urllib.parse import urlsplit

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

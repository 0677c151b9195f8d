"""Broker files as pure functions of BrokerInstances: `.env`, Helm values, a `docker run` script.

Nothing here writes rows or calls AWS. Values are validated, never escaped: the broker builds a
JSON document from CR_* by plain string interpolation and `docker run --env-file` keeps quotes,
so a value that would need quoting is refused (BrokerFileError) instead of rendered. A broker
that is retired, pending (its account is not onboarded: the role its file names does not exist), or
lacks the URLs the broker client needs, raises BrokerFileError naming what is missing; no
placeholder is ever rendered into a file someone will deploy.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import yaml
from django.core.exceptions import ValidationError

from portal.fields import UnreadableSecret

from . import validators as v
from .choices import AgentKind, AgentRuntime, BrokerStatus, ExternalIdState

if TYPE_CHECKING:
    from .models import AgentIdentity, BrokerInstance, EcrAccount

BROKER_IMAGE = "snyk/broker:container-registry-agent"
CRA_IMAGE = "snyk/container-registry-agent:latest"
DEFAULT_CRA_PORT = 8081
MASK = "********-****-****-****-************"

FORMATS = ("env", "helm", "docker", "ecs")


def formats_for(agent: AgentIdentity) -> tuple[str, ...]:
    """The files a broker of this agent is run from: an ECS agent's brokers run as ECS tasks, the
    others from Helm (their role trusts no ECS task)."""
    ecs = agent.kind == AgentKind.ROLE and agent.runtime == AgentRuntime.ECS
    return ("env", "ecs", "docker") if ecs else ("env", "helm", "docker")


class BrokerFileError(ValueError):
    """The broker's settings cannot make a file the broker client would accept."""


@dataclass(frozen=True)
class BrokerFile:
    filename: str
    content: str
    content_type: str
    brokers: tuple[BrokerInstance, ...] = ()  # whose tokens and ExternalIds it holds


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


def _readable_token(broker: BrokerInstance) -> str:
    try:
        return broker.broker_token
    except UnreadableSecret:
        raise BrokerFileError(
            f"BROKER_TOKEN: {broker.TOKEN_UNREADABLE}. No key of ENCRYPTION_KEYS decrypts it: put back "
            "the key it was stored with, or enter its token again."
        ) from None


def broker_settings(broker: BrokerInstance, *, masked: bool = False) -> dict[str, str]:
    """The broker client's environment, in the order the docs list it.

    masked=True replaces the token for pages shown to people who may not download it.
    """
    if broker.status == BrokerStatus.RETIRED:
        raise BrokerFileError(
            f"The broker for {broker.account.account_id} in {broker.region} is retired: "
            "its files are no longer served."
        )
    if broker.classic_retired_at is not None:
        raise BrokerFileError(
            f"{broker.account.account_id} in {broker.region} is served by its Universal Broker connection "
            f"since {broker.classic_retired_at:%Y-%m-%d %H:%M}: the classic broker is retired and its "
            "files are no longer offered (the deployment's files are on the Snyk page)."
        )
    account = broker.account
    if broker.pending_reason:
        raise BrokerFileError(
            f"The broker for {account.account_id} in {broker.region} is pending: {broker.pending_reason}"
        )
    client_url = _check("BROKER_CLIENT_URL", broker.broker_client_url, v.validate_service_url)
    agent_url = _check("CR_AGENT_URL", broker.cr_agent_url, v.validate_service_url).rstrip("/")
    token = _readable_token(broker)
    token = MASK if masked else _check("BROKER_TOKEN", token, v.validate_uuid4)
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
    """A release per account and region, so that the releases of one namespace never collide; in the
    agent's namespace when it runs on EKS (the one its trust names)."""
    name = f"{broker.account.account_id}-{broker.region}"
    if len(name) > HELM_RELEASE_MAX or not _RELEASE_NAME.fullmatch(name):
        raise BrokerFileError(
            f"Helm release {name!r} is not a DNS label of at most {HELM_RELEASE_MAX} characters "
            "(the chart labels its agent <release>-cr-<release>, at most 63)."
        )
    agent = broker.account.agent
    return HelmRelease(name, agent.namespace) if agent.on_eks else HelmRelease(name)


def broker_token_secret(release: HelmRelease) -> tuple[str, str]:
    """(Secret, key) holding an EKS release's broker token: its values name it, never the token."""
    return f"snyk-broker-token-{release.name}", "BROKER_TOKEN"


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

    def represent_mapping(self, tag: str, mapping: Any, flow_style: bool | None = None) -> yaml.MappingNode:
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
    if agent.on_eks:
        return _eks_identity_helm(agent, release)
    if agent.kind != AgentKind.USER and agent.runtime == AgentRuntime.ECS:
        raise BrokerFileError(
            f"The agent {agent.name} runs as an ECS task (its role trusts ECS tasks only, not pods): use "
            "the ECS task definition (format ecs), or move the agent to EKS first."
        )
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


def _eks_identity_helm(agent: AgentIdentity, release: HelmRelease) -> str:
    """The chart's pods run as the service account the agent's trust names. Every release of the
    agent in the namespace shares it, so it is made once, not by the chart (a second release
    creating it would fail: Helm refuses a resource another release owns)."""
    ns, sa = release.namespace, agent.service_account
    secret, key = broker_token_secret(release)
    lines = [
        f"# The agent runs as IAM role {agent.iam_name} through service account {ns}/{sa}, the one its",
        f"# trust names; every release of this agent in {ns} uses it. Create it once:",
        f"#   kubectl -n {ns} create serviceaccount {sa}",
    ]
    if agent.runtime == AgentRuntime.EKS_IRSA:
        lines += [
            f"#   kubectl -n {ns} annotate serviceaccount {sa} {IRSA_ANNOTATION}={agent.arn}",
            f"# (IRSA: the role trusts the cluster's OIDC provider for system:serviceaccount:{ns}:{sa}).",
        ]
    else:
        lines.append(
            f"# (EKS Pod Identity: the portal associates {ns}/{sa} with the role in {agent.cluster_arn}.)"
        )
    lines += [
        f"# The broker token is not in this file: the chart reads it from Secret {secret}, key {key}.",
        "# Create it from the BROKER_TOKEN of this broker's .env, exported in your shell:",
        f'#   kubectl -n {ns} create secret generic {secret} --from-literal={key}="$BROKER_TOKEN"',
    ]
    return "\n".join(lines) + "\n"


IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"


def _eks_values(agent: AgentIdentity, release: HelmRelease) -> dict[str, Any]:
    secret, key = broker_token_secret(release)
    service_account: dict[str, Any] = {"create": False, "name": agent.service_account}
    if agent.runtime == AgentRuntime.EKS_IRSA:
        service_account["annotations"] = {IRSA_ANNOTATION: agent.arn}  # what the SA must carry
    return {"brokerTokenSecret": {"name": secret, "key": key}, "serviceAccount": service_account}


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
    agent = broker.account.agent
    values: dict[str, Any] = {
        "scmType": CHART_SCM_TYPE,
        "brokerToken": s["BROKER_TOKEN"],
        "brokerServerUrl": s["BROKER_SERVER_URL"],
        "brokerDispatcherUrl": dispatcher_url(s["BROKER_SERVER_URL"]),
        "crType": "ecr",
        "crRoleArn": s["CR_ROLE_ARN"],
        "crRegion": s["CR_REGION"],
        "crExternalId": external_id,
    }
    header = _header(broker)
    if agent.on_eks:  # the token comes from a Secret: this file holds none
        del values["brokerToken"]
        values.update(_eks_values(agent, release))
        header = header.replace("it holds the broker token: keep it secret", "it holds no secret")
    return (
        header
        + f"#\n# Release {release.name} (one per account and region) in namespace {release.namespace}, with\n"
        + "# Snyk's chart repository added as snyk-broker:\n"
        + f"#   helm install {release.name} {HELM_CHART} -n {release.namespace} --create-namespace"
        + f" -f {filename_for(broker, 'helm')}\n"
        + "#\n# The chart runs the release's own Container Registry Agent and sets both URLs itself (the\n"
        + "# portal's broker client and agent URLs are for the .env and docker files):\n"
        + f"#   CR_AGENT_URL={release.agent_url}\n"
        + f"#   BROKER_CLIENT_URL={release.broker_client_url}\n#\n"
        + _agent_identity_helm(agent, release)
        + yaml_document(values)
    )


# --- docker: one script per host -------------------------------------------------------------------

# A container name Docker's DNS resolves on a user-defined network (lower case, as DNS compares).
_CONTAINER_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*[a-z0-9]")


@dataclass(frozen=True)
class _Container:
    name: str
    port: int


def _container_of(setting: str, url: str) -> _Container:
    """The container a URL names on the script's network: http://<container name>:<port>."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition(":")[0]
    if parts.scheme != "http":
        raise BrokerFileError(
            f"{setting} {url}: the docker script wires the containers over http on one Docker network; "
            "an https URL means TLS ends at a proxy in front of them, so run them from the .env files."
        )
    if not _CONTAINER_NAME.fullmatch(host) or host == "localhost" or re.fullmatch(r"[0-9.]+", host):
        raise BrokerFileError(
            f"{setting} {url}: the docker script names each container after its URL's host, so the host "
            "must be a container name (lower-case letters, digits, . _ -; not localhost or an address), "
            "e.g. http://broker-a:8000."
        )
    return _Container(host, int(parts.port or 0))


@dataclass(frozen=True)
class _HostBroker:
    broker: BrokerInstance
    settings: dict[str, str]
    container: _Container


def _label(broker: BrokerInstance) -> str:
    return f"{broker.account.account_id}/{broker.region}"


def _host_members(
    broker: BrokerInstance, host_brokers: Sequence[BrokerInstance], masked: bool
) -> tuple[list[_HostBroker], list[str]]:
    """The brokers of the script and why others sharing its agent are not (`broker` must be in it)."""
    settings = broker_settings(broker, masked=masked)
    members = [
        _HostBroker(broker, settings, _container_of("BROKER_CLIENT_URL", settings["BROKER_CLIENT_URL"]))
    ]
    left_out = []
    for other in host_brokers:
        if other.pk == broker.pk:
            continue
        try:
            other_settings = broker_settings(other, masked=masked)
            container = _container_of("BROKER_CLIENT_URL", other_settings["BROKER_CLIENT_URL"])
        except BrokerFileError as exc:
            left_out.append(f"{_label(other)}: {exc}")
            continue
        members.append(_HostBroker(other, other_settings, container))
    members.sort(key=lambda member: (member.broker.account.account_id, member.broker.region))
    return members, left_out


def _refuse_collisions(agent: _Container, members: list[_HostBroker]) -> None:
    """Each container needs its own name, each broker its own published port."""
    names: dict[str, str] = {agent.name: "the Container Registry Agent"}
    ports: dict[int, str] = {}
    for member in members:
        label = _label(member.broker)
        name, port = member.container.name, member.container.port
        if name in names:
            raise BrokerFileError(
                f"Broker {label} and {names[name]} share the agent URL {agent.name}:{agent.port} and the "
                f"container name {name}: on one Docker host each container is named after its URL's host, "
                f"so give broker {label} its own BROKER_CLIENT_URL, e.g. "
                f"http://broker-{label.replace('/', '-')}:{port}."
            )
        if port in ports:
            raise BrokerFileError(
                f"Brokers {ports[port]} and {label} share the agent URL {agent.name}:{agent.port} and the "
                f"port {port}: each broker of a host publishes its own port, so give broker {label} "
                "another port in its BROKER_CLIENT_URL."
            )
        names[name] = f"broker {label}"
        ports[port] = label


def render_docker_run(
    broker: BrokerInstance, *, masked: bool = False, host_brokers: Sequence[BrokerInstance] = ()
) -> str:
    """A shell script for the host of `broker`: its Container Registry Agent and every broker using it.

    `host_brokers` are the brokers of the same agent with the same agent URL (services.host_brokers).
    On a user-defined network each container is named after its URL's host, so CR_AGENT_URL and every
    BROKER_CLIENT_URL resolve; a broker listens on (and publishes to 127.0.0.1) its URL's port.
    """
    return _docker_script(broker, host_brokers, masked)[0]


def _docker_script(
    broker: BrokerInstance, host_brokers: Sequence[BrokerInstance], masked: bool
) -> tuple[str, list[_HostBroker]]:
    members, left_out = _host_members(broker, host_brokers, masked)
    agent_url = broker_settings(broker, masked=masked)["CR_AGENT_URL"]
    cra = _container_of("CR_AGENT_URL", agent_url)
    _refuse_collisions(cra, members)
    agent = broker.account.agent
    network = f"snyk-{cra.name}"
    lines = [
        "#!/bin/sh",
        f"# Snyk Broker clients and their Container Registry Agent {agent_url} on one Docker host.",
        "# Generated by the ECR Broker Portal; it holds the broker tokens: keep it secret.",
        f"# Each container is named after its URL's host on the Docker network {network}, where",
        "# those names resolve. Running it again replaces them (after a rotation, for example).",
        "set -eu",
    ]
    cra_cmd = [
        f"docker run -d --restart=always --name {cra.name} --network {network}",
        f"-e SNYK_PORT={cra.port}",
    ]
    if agent.kind == AgentKind.USER:
        # Taken from the shell's environment: the access key is never written into this file.
        lines += [
            f': "${{{key}:?export the access key of IAM user {agent.iam_name} first}}"'
            for key in CRA_AWS_KEYS
        ]
        cra_cmd += [f"-e {key}" for key in CRA_AWS_KEYS]
        identity = [
            f"# The Container Registry Agent, running as the access key of IAM user {agent.iam_name}."
        ]
    else:
        identity = [
            f"# The Container Registry Agent, running as the EC2 instance profile of role {agent.iam_name}",
            "# (the instance's IMDSv2 hop limit must be 2 for a container to reach the metadata).",
        ]
    cra_cmd.append(CRA_IMAGE)
    lines += [
        f"docker network inspect {network} >/dev/null 2>&1 || docker network create {network}",
        "",
        *identity,
        "# Not published: only the brokers reach it.",
        f"docker rm -f {cra.name} >/dev/null 2>&1 || true",
        " \\\n  ".join(cra_cmd),
    ]
    for member in members:
        container = member.container
        # On the network the agent calls the broker on its URL's port: the broker listens there.
        env = {**member.settings, "PORT": str(container.port)}
        broker_cmd = [
            f"docker run -d --restart=always --name {container.name} --network {network}",
            f"-p 127.0.0.1:{container.port}:{container.port}",
            *(f"-e {shlex.quote(f'{key}={value}')}" for key, value in env.items()),
            BROKER_IMAGE,
        ]
        lines += [
            "",
            f"# Broker client for ECR account {member.broker.account.account_id}, "
            f"region {member.broker.region}; /healthcheck on 127.0.0.1:{container.port}.",
            f"docker rm -f {container.name} >/dev/null 2>&1 || true",
            " \\\n  ".join(broker_cmd),
        ]
    if left_out:
        lines += ["", "# Not in this script, although they use the same agent:"]
        lines += [f"#   {reason}" for reason in left_out]
    return "\n".join(lines) + "\n", members


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


# --- ECS: a task definition (broker + agent, the task role = the agent role) and its service --------

ECS_EXECUTION_ROLE = "ecsTaskExecutionRole"  # AWS's usual name; it pulls images and reads the token


def ssm_token_parameter(broker: BrokerInstance, region: str) -> str:
    """The SecureString parameter an ECS broker's token is read from (by the execution role)."""
    agent = broker.account.agent
    return (
        f"arn:aws:ssm:{region}:{agent.account_id}:parameter/snyk-broker/"
        f"{broker.account.account_id}-{broker.region}/broker-token"
    )


def ecs_task_definition(broker: BrokerInstance) -> dict[str, Any]:
    """RegisterTaskDefinition's input: the broker and its agent in one Fargate task, talking over the
    task's localhost; the task role is the agent role; the token only by reference (SSM)."""
    agent = broker.account.agent
    s = broker_settings(broker, masked=True)
    region = _ecs_region(broker)
    port, agent_url = int(s["PORT"]), f"http://localhost:{DEFAULT_CRA_PORT}"
    environment = {
        **{k: val for k, val in s.items() if k != "BROKER_TOKEN"},
        "BROKER_CLIENT_URL": f"http://localhost:{port}",
        "CR_AGENT_URL": agent_url,
        "BROKER_CLIENT_VALIDATION_URL": f"{agent_url}/systemcheck",
    }
    environment.pop("BROKER_CLIENT_URL_TLS_TERMINATED", None)
    return {
        "family": f"snyk-broker-{broker.account.account_id}-{broker.region}",
        "taskRoleArn": agent.arn,
        "executionRoleArn": f"arn:aws:iam::{agent.account_id}:role/{ECS_EXECUTION_ROLE}",
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "1024",
        "memory": "3072",
        "containerDefinitions": [
            {
                "name": "broker",
                "image": BROKER_IMAGE,
                "essential": True,
                "portMappings": [{"containerPort": port, "protocol": "tcp"}],
                "environment": [{"name": k, "value": val} for k, val in environment.items()],
                "secrets": [{"name": "BROKER_TOKEN", "valueFrom": ssm_token_parameter(broker, region)}],
                "dependsOn": [{"containerName": "container-registry-agent", "condition": "START"}],
            },
            {
                "name": "container-registry-agent",
                "image": CRA_IMAGE,
                "essential": True,
                "memoryReservation": 2048,
                "portMappings": [{"containerPort": DEFAULT_CRA_PORT, "protocol": "tcp"}],
                "environment": [{"name": "SNYK_PORT", "value": str(DEFAULT_CRA_PORT)}],
            },
        ],
        "tags": [{"key": "managed-by", "value": "ecr-broker-portal"}],
    }


def ecs_service(broker: BrokerInstance) -> dict[str, Any]:
    """CreateService's input, but for the network (the script passes the operator's subnets)."""
    agent = broker.account.agent
    task = ecs_task_definition(broker)
    service: dict[str, Any] = {
        "serviceName": task["family"],
        "taskDefinition": task["family"],
        "desiredCount": 1,
        "launchType": "FARGATE",
    }
    if agent.cluster_arn:
        service = {"cluster": agent.cluster_arn, **service}
    return service


def _ecs_region(broker: BrokerInstance) -> str:
    cluster = broker.account.agent.cluster_arn
    return cluster.split(":")[3] if cluster else broker.region


def render_ecs(broker: BrokerInstance) -> str:
    """A script registering the task definition and creating its service, for an ECS agent."""
    agent = broker.account.agent
    broker_settings(broker, masked=True)  # what is missing or unsafe is said first, as for every file
    if agent.kind != AgentKind.ROLE or agent.runtime != AgentRuntime.ECS:
        raise BrokerFileError(
            f"The agent {agent.name} does not run on ECS (its role trusts "
            f"{'no task' if agent.kind == AgentKind.ROLE else 'nothing: it is a user'}): move it to the ecs "
            "runtime first (agent_set --runtime ecs)."
        )
    task, service = ecs_task_definition(broker), ecs_service(broker)
    region = _ecs_region(broker)
    parameter = ssm_token_parameter(broker, region).split(":parameter", 1)[1]
    compact = functools.partial(json.dumps, indent=2)
    return (
        "#!/bin/sh\n"
        f"# Snyk Broker client for ECR account {broker.account.account_id}, region {broker.region},\n"
        "# as an ECS service: the broker and its Container Registry Agent in one Fargate task,\n"
        f"# talking over its localhost. The task role is the agent role {agent.arn},\n"
        "# which trusts ECS tasks of its account only. Generated by the ECR Broker Portal; it holds no\n"
        "# secret: the broker token is read from SSM by the execution role. Before running it, put the\n"
        "# BROKER_TOKEN of this broker's .env there (exported in your shell), and give the execution role\n"
        f"# {ECS_EXECUTION_ROLE} ssm:GetParameters on it:\n"
        f"#   aws ssm put-parameter --region {region} --type SecureString --name {parameter} \\\n"
        '#     --value "$BROKER_TOKEN"\n'
        "# SUBNETS and SECURITY_GROUPS: comma-separated ids the task's network interface gets.\n"
        "set -eu\n"
        f"aws ecs register-task-definition --region {region} --cli-input-json '{compact(task)}'\n"
        f"aws ecs create-service --region {region} --cli-input-json '{compact(service)}' \\\n"
        '  --network-configuration "awsvpcConfiguration={subnets=[$SUBNETS],'
        'securityGroups=[$SECURITY_GROUPS]}"\n'
    )


_CONTENT_TYPES = {
    "env": "text/plain; charset=utf-8",
    "helm": "application/yaml; charset=utf-8",
    "docker": "text/x-shellscript; charset=utf-8",
    "ecs": "text/x-shellscript; charset=utf-8",
}


def filename_for(broker: BrokerInstance, fmt: str) -> str:
    if fmt == "docker":
        agent_url = urlsplit(broker.cr_agent_url)
        return (
            f"{broker.account.agent.name}-{agent_url.hostname or 'cra'}-{agent_url.port or ''}-docker-run.sh"
        )
    if fmt == "ecs":
        return f"broker-{broker.account.account_id}-{broker.region}-ecs.sh"
    separator, suffix = (".", "env") if fmt == "env" else ("-", "values.yaml")
    return f"broker-{broker.account.account_id}-{broker.region}{separator}{suffix}"


def render(
    broker: BrokerInstance,
    fmt: str,
    *,
    masked: bool = False,
    host_brokers: Sequence[BrokerInstance] = (),
) -> BrokerFile:
    """The file, and the brokers whose settings it holds (a docker script holds its host's)."""
    if fmt == "env":
        brokers: tuple[BrokerInstance, ...]
        content, brokers = render_env(broker, masked=masked), (broker,)
    elif fmt == "helm":
        content, brokers = render_helm_values(broker, masked=masked), (broker,)
    elif fmt == "docker":
        content, members = _docker_script(broker, host_brokers, masked)
        brokers = tuple(member.broker for member in members)
    elif fmt == "ecs":
        content, brokers = render_ecs(broker), ()
    else:
        raise BrokerFileError(f"Unknown format {fmt!r}: choose one of {', '.join(FORMATS)}.")
    return BrokerFile(filename_for(broker, fmt), content, _CONTENT_TYPES[fmt], brokers)

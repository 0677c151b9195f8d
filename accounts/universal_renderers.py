"""Files for a Universal Broker deployment, as pure functions of the inventory: the client's `.env`
(docker compose / `docker run --env-file`), values for Snyk's `snyk-universal-broker` Helm chart, and
one Container Registry Agent Deployment + Service (the universal chart runs none) shared by every
connection of the agent.

The `.env` and the values hold the Broker App's client secret; the agent manifest holds no AWS key
(a user agent's key is a Secret reference). Values are validated, never quoted or escaped, as the
classic files (renderers.py): what the client would read differently is refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from portal.fields import UnreadableSecret

from .choices import AgentKind, SnykApiHost
from .renderers import CRA_AWS_KEYS, CRA_IMAGE, BrokerFile, BrokerFileError, agent_secret_name, yaml_document

if TYPE_CHECKING:
    from .models import SnykDeployment

FORMATS = ("env", "helm", "cra-manifest")
UNIVERSAL_IMAGE = "snyk/broker:universal"
CLIENT_PORT = 8000
HA_REPLICAS = 2
_HELM_REGIONS = {
    SnykApiHost.US_01: "",
    SnykApiHost.US_02: "us",
    SnykApiHost.EU_01: "eu",
    SnykApiHost.AU_01: "au",
}


def _connections(deployment: SnykDeployment) -> list:
    rows = list(
        deployment.connections.select_related("broker__account").order_by("broker__account__account_id")
    )
    if not deployment.deployment_id:
        raise BrokerFileError(f"Deployment {deployment.name} does not exist in Snyk yet: sync it first.")
    return rows


def _one(deployment: SnykDeployment, field: str) -> str:
    """A URL every connection of the deployment shares (one client, one agent)."""
    values = sorted({getattr(row.broker, field) for row in _connections(deployment)})
    if len(values) != 1:
        shown = ", ".join(values) or "none"
        raise BrokerFileError(
            f"The connections of {deployment.name} must share one {field} (they have: {shown})."
        )
    return values[0]


def _secret(deployment: SnykDeployment) -> tuple[str, str]:
    tenant = deployment.tenant
    try:
        secret = tenant.app_client_secret
    except UnreadableSecret:
        raise BrokerFileError(
            "The Broker App's client secret is unreadable: check ENCRYPTION_KEYS."
        ) from None
    if not tenant.app_client_id or not secret:
        raise BrokerFileError("No Broker App client id and secret yet: sync the agent first.")
    return tenant.app_client_id, secret


def deployment_settings(deployment: SnykDeployment) -> dict[str, str]:
    """The client's environment (running-your-universal-broker-client: the compose file's)."""
    client_id, secret = _secret(deployment)
    tenant = deployment.tenant
    return {
        "DEPLOYMENT_ID": deployment.deployment_id,
        "CLIENT_ID": client_id,
        "CLIENT_SECRET": secret,
        "BROKER_SERVER_URL": tenant.broker_server_url,
        "BROKER_DISPATCHER_BASE_URL": tenant.api_url,
        "PORT": str(CLIENT_PORT),
        "BROKER_HA_MODE_ENABLED": "true",
        "BROKER_CLIENT_URL": _one(deployment, "broker_client_url"),
        # As the snyk/broker:universal image sets them (a client started otherwise needs them too).
        "UNIVERSAL_BROKER_ENABLED": "true",
        "UNIVERSAL_BROKER_GA": "true",
    }


def _header(deployment: SnykDeployment, comment: str = "#") -> str:
    count = deployment.connections.count()
    return (
        f"{comment} Universal Broker deployment {deployment.name} ({count} connection(s)),"
        f" image {UNIVERSAL_IMAGE}.\n"
        f"{comment} Holds the Broker App's client secret: keep it out of version control.\n"
    )


def render_env(deployment: SnykDeployment) -> str:
    lines = [f"{key}={value}" for key, value in deployment_settings(deployment).items()]
    return _header(deployment) + "\n".join(lines) + "\n"


def render_helm_values(deployment: SnykDeployment) -> str:
    """Values for snyk-universal-broker (helm pull oci://registry-1.docker.io/snyk/snyk-universal-broker)."""
    env = deployment_settings(deployment)
    if deployment.tenant.api_url not in SnykApiHost.values:
        raise BrokerFileError(
            f"{deployment.tenant.api_url} is not one of Snyk's regions: the chart cannot reach it."
        )
    region = _HELM_REGIONS[SnykApiHost(deployment.tenant.api_url)]
    values = {
        "deploymentId": env["DEPLOYMENT_ID"],
        "clientId": env["CLIENT_ID"],
        "clientSecret": env["CLIENT_SECRET"],
        "region": region,
        "brokerClientUrl": env["BROKER_CLIENT_URL"],
        "highAvailabilityMode": {"enabled": True},
        "replicaCount": HA_REPLICAS,
    }
    note = (
        "# To keep the secret out of this file, create a Secret with DEPLOYMENT_ID, CLIENT_ID and\n"
        "# CLIENT_SECRET and set platformAuthSecret.name instead of the three ids.\n"
    )
    return _header(deployment) + note + yaml_document(values)


def _agent_service(deployment: SnykDeployment) -> tuple[str, int]:
    url = _one(deployment, "cr_agent_url")
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 0
    if (
        not host.replace("-", "a").isalnum()
        or not host[0].isalpha()
        or len(host) > 63
        or host != host.lower()
    ):
        raise BrokerFileError(
            f"cr_agent_url {url}: its host must be a Kubernetes Service name (lower-case letters, digits, -)."
        )
    return host, port


def render_cra_manifest(deployment: SnykDeployment) -> str:
    agent = deployment.agent
    name, port = _agent_service(deployment)
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "snyk-universal-broker"}
    container: dict = {
        "name": "container-registry-agent",
        "image": CRA_IMAGE,
        "env": [{"name": "SNYK_PORT", "value": str(port)}],
        "ports": [{"containerPort": port}],
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}},
    }
    pod: dict = {"containers": [container]}
    documents: list[dict] = []
    if agent.kind == AgentKind.USER:
        secret = agent_secret_name(agent)
        container["env"] += [
            {"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}} for key in CRA_AWS_KEYS
        ]
        identity = (
            f"# The agent runs as IAM user {agent.iam_name}: its access key comes from Secret {secret}\n"
            f"# (keys {' and '.join(CRA_AWS_KEYS)}), never from this file.\n"
        )
    else:
        pod["serviceAccountName"] = name
        documents.append(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": name, "annotations": {"eks.amazonaws.com/role-arn": agent.arn}},
            }
        )
        identity = (
            f"# The agent runs as IAM role {agent.arn} through IRSA (the service account's annotation):\n"
            "# the role must also trust the cluster's OIDC provider, which the portal does not manage.\n"
        )
    documents.append(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": pod},
            },
        }
    )
    service_spec = {"selector": labels, "ports": [{"port": port, "targetPort": port}]}
    documents.append(
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": service_spec}
    )
    header = (
        f"# The Container Registry Agent every connection of {deployment.name} reaches at http://{name}:{port}.\n"
        + identity
    )
    return header + "---\n".join(yaml_document(d) for d in documents)


def render(deployment: SnykDeployment, fmt: str) -> BrokerFile:
    renderers = {"env": render_env, "helm": render_helm_values, "cra-manifest": render_cra_manifest}
    if fmt not in renderers:
        raise BrokerFileError(f"Unknown format {fmt!r}: one of {', '.join(FORMATS)}.")
    content = renderers[fmt](deployment)
    suffix = {"env": "env", "helm": "values.yaml", "cra-manifest": "cra.yaml"}[fmt]
    content_type = "text/plain" if fmt == "env" else "application/yaml"
    return BrokerFile(f"{deployment.name}.{suffix}", content, content_type)

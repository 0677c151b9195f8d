"""Broker files: exact content, refusal instead of placeholders, and the real broker client's preflight."""

import json
import os
import re
import shlex
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from django.utils import timezone

from accounts import renderers
from accounts.choices import (
    BROKER_PENDING_REASONS,
    BrokerServer,
    BrokerState,
    BrokerStatus,
    ExternalIdState,
    Lifecycle,
)
from accounts.models import BrokerInstance, EcrAccount, ExternalId

from .conftest import TOKEN


@pytest.fixture
def make_account(make_onboarded_account):
    """Broker files exist only for onboarded accounts."""
    return make_onboarded_account


PREFLIGHT = Path(__file__).resolve().parents[3] / "shared" / "tools" / "broker-preflight"


def parse_env(text: str) -> dict[str, str]:
    pairs = [line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")]
    return dict(pairs)


def test_env_has_every_setting_the_broker_client_needs(broker):
    env = parse_env(renderers.render_env(broker))
    assert env == {
        "BROKER_TOKEN": TOKEN,
        "BROKER_CLIENT_URL": "http://broker.internal:8000",
        "CR_AGENT_URL": "http://cra.internal:8081",
        "CR_TYPE": "ecr",
        "CR_ROLE_ARN": "arn:aws:iam::222222222222:role/SnykEcrServiceRole",
        "CR_REGION": "us-east-1",
        "CR_EXTERNAL_ID": "ext-222222222222",
        "PORT": "8000",
        "BROKER_SERVER_URL": "https://broker.snyk.io",
        "BROKER_CLIENT_VALIDATION_URL": "http://cra.internal:8081/systemcheck",
    }


def test_env_values_are_never_quoted(broker):
    for line in renderers.render_env(broker).splitlines():
        if not line.startswith("#"):
            assert not any(c in line for c in "\"' $#"), line


def test_env_uses_the_newest_active_external_id(broker):
    account = broker.account
    old = account.external_ids.get()
    ExternalId.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=3))
    ExternalId.objects.create(account=account, value="rotated-new-id")
    ExternalId.objects.create(
        account=account, value="retiring-id", state=ExternalIdState.RETIRING, retiring_since=timezone.now()
    )
    broker = BrokerInstance.objects.get(pk=broker.pk)
    assert parse_env(renderers.render_env(broker))["CR_EXTERNAL_ID"] == "rotated-new-id"


def test_masked_files_never_hold_the_token(broker):
    for fmt in renderers.formats_for(broker.account.agent):
        content = renderers.render(broker, fmt, masked=True).content
        assert TOKEN not in content
        assert renderers.MASK in content


def test_https_client_url_declares_tls_terminated_upstream(make_account):
    account = make_account(broker_client_url="https://broker.example.com:8443")
    env = parse_env(renderers.render_env(account.brokers.get()))
    assert env["BROKER_CLIENT_URL"] == "https://broker.example.com:8443"
    assert env["BROKER_CLIENT_URL_TLS_TERMINATED"] == "true"


@pytest.mark.parametrize(
    "field, name", [("broker_client_url", "BROKER_CLIENT_URL"), ("cr_agent_url", "CR_AGENT_URL")]
)
def test_missing_url_raises_naming_the_setting(broker, field, name):
    setattr(broker, field, "")
    for fmt in renderers.FORMATS:
        with pytest.raises(renderers.BrokerFileError, match=name):
            renderers.render(broker, fmt)


@pytest.mark.parametrize("status", [Lifecycle.DRAFT, Lifecycle.PENDING, Lifecycle.FAILED])
def test_a_broker_of_an_account_not_onboarded_is_pending_and_refused(broker, status):
    broker.account.status = status
    assert broker.state == BrokerState.PENDING and broker.get_state_display() == "Pending"
    for fmt in renderers.FORMATS:
        with pytest.raises(renderers.BrokerFileError) as refused:
            renderers.render(broker, fmt, masked=True)
        assert str(refused.value) == (
            f"The broker for 222222222222 in us-east-1 is pending: {BROKER_PENDING_REASONS[status]}"
        )
    broker.account.status = Lifecycle.ACTIVE
    assert broker.state == BrokerState.ACTIVE and broker.pending_reason == ""


def test_retired_broker_is_refused(broker):
    broker.status = BrokerStatus.RETIRED
    with pytest.raises(renderers.BrokerFileError, match="retired"):
        renderers.render_env(broker)


def test_account_without_active_external_id_is_refused(broker):
    broker.account.external_ids.update(state=ExternalIdState.RETIRING)
    broker = BrokerInstance.objects.get(pk=broker.pk)
    with pytest.raises(renderers.BrokerFileError, match="no active ExternalId"):
        renderers.render_env(broker)


def test_unsafe_value_is_refused_not_escaped(broker):
    broker.broker_client_url = "http://broker internal:8000"
    with pytest.raises(renderers.BrokerFileError, match="BROKER_CLIENT_URL"):
        renderers.render_env(broker)


def test_unknown_format_is_refused(broker):
    with pytest.raises(renderers.BrokerFileError, match="Unknown format"):
        renderers.render(broker, "xml")


# --- Helm values: what Snyk's snyk-broker chart reads (real chart: test_helm_chart.py) ---------------


def helm_values(text: str) -> dict:
    return yaml.safe_load(text)


def comment_lines(text: str) -> list[str]:
    return [line.removeprefix("#").strip() for line in text.splitlines() if line.startswith("#")]


def test_helm_values_hold_only_what_the_chart_reads(broker):
    """No crAgentUrl (not a value of the chart) nor brokerClientUrl (the chart forces it for the agent)."""
    assert helm_values(renderers.render_helm_values(broker)) == {
        "scmType": "container-registry-agent",
        "brokerToken": TOKEN,
        "brokerServerUrl": "https://broker.snyk.io",
        "brokerDispatcherUrl": "https://api.snyk.io",
        "crType": "ecr",
        "crRoleArn": "arn:aws:iam::222222222222:role/SnykEcrServiceRole",
        "crRegion": "us-east-1",
        "crExternalId": "ext-222222222222",
    }


def test_helm_header_says_which_urls_the_chart_sets_instead(broker):
    comments = comment_lines(renderers.render_helm_values(broker))
    assert "CR_AGENT_URL=http://cra-service-222222222222-us-east-1:8081" in comments
    assert (
        "BROKER_CLIENT_URL=http://container-registry-agent-broker-service-222222222222-us-east-1:8000"
        in comments
    )
    assert not any("broker.internal" in line or "cra.internal" in line for line in comments)


def test_helm_dispatcher_is_the_broker_servers_region(make_account):
    """The chart always sets BROKER_DISPATCHER_BASE_URL (default: the US API)."""
    for number, (server, api) in enumerate(
        [
            (BrokerServer.EU, "https://api.eu.snyk.io"),
            (BrokerServer.AU, "https://api.au.snyk.io"),
            (BrokerServer.US, "https://api.us.snyk.io"),
        ]
    ):
        account = make_account(f"33333333333{number}", broker_server_url=server)
        assert helm_values(renderers.render_helm_values(account.brokers.get()))["brokerDispatcherUrl"] == api


def _install_line(text: str) -> list[str]:
    line = next(line for line in comment_lines(text) if line.startswith("helm install "))
    return line.split()


def test_helm_release_is_unique_per_account_and_region_with_its_namespace(make_account):
    first = make_account("222222222222", regions=("us-east-1", "eu-west-1"))
    second = make_account("333333333333", regions=("us-east-1",))
    installs = {
        (b.account.account_id, b.region): _install_line(renderers.render_helm_values(b))
        for account in (first, second)
        for b in account.brokers.all()
    }
    releases = {key: words[2] for key, words in installs.items()}
    assert releases == {
        ("222222222222", "eu-west-1"): "222222222222-eu-west-1",
        ("222222222222", "us-east-1"): "222222222222-us-east-1",
        ("333333333333", "us-east-1"): "333333333333-us-east-1",
    }
    for (account_id, region), words in installs.items():
        assert words[3] == "snyk-broker/snyk-broker"
        assert words[words.index("-n") + 1] == renderers.HELM_NAMESPACE == "snyk-broker"
        assert words[words.index("-f") + 1] == f"broker-{account_id}-{region}-values.yaml"


def test_every_release_name_fits_the_charts_names(make_account):
    """A DNS label, and the chart's `<release>-cr-<release>` label stays within 63 characters."""
    from accounts.regions import ECR_REGIONS

    longest = max(sorted(ECR_REGIONS), key=len)
    broker = make_account(regions=(longest,)).brokers.get()
    release = renderers.helm_release(broker)
    assert release.name == f"222222222222-{longest}"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", release.name)
    assert len(f"{release.name}-cr-{release.name}") <= 63
    assert len(urlsplit(release.broker_client_url).hostname) <= 63
    assert len(release.agent_container) <= 63


def test_helm_for_a_user_agent_reads_its_key_from_a_secret(make_account, user_agent):
    """The chart's agent container only gets SNYK_PORT: the file says how to give it the key."""
    broker = make_account("444444444444", agent=user_agent).brokers.get()
    text = renderers.render_helm_values(broker)
    secret = renderers.agent_secret_name(user_agent)
    assert secret == "cra-user-aws-keys"
    comments = comment_lines(text)
    create = next(line for line in comments if " create secret generic " in line).split()
    assert create[:6] == ["kubectl", "-n", "snyk-broker", "create", "secret", "generic"]
    assert create[6:] == [
        secret,
        '--from-literal=AWS_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID"',
        '--from-literal=AWS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY"',
    ]
    patch_line = next(line for line in comments if " patch deployment " in line)
    command, _, patch = patch_line.partition(" -p ")
    assert command.split() == [
        "kubectl", "-n", "snyk-broker", "patch", "deployment",
        "container-registry-agent-cra-444444444444-us-east-1",
    ]  # fmt: skip
    (container,) = json.loads(shlex.split(patch)[0])["spec"]["template"]["spec"]["containers"]
    assert container == {
        "name": "container-registry-agent-444444444444-us-east-1",
        "env": [
            {"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        ],
    }
    assert "env" not in helm_values(text)  # the chart's env goes to both containers, in plain text


def test_helm_for_a_role_agent_says_how_the_pod_gets_the_role(broker):
    text = " ".join(comment_lines(renderers.render_helm_values(broker)))
    assert "runs as IAM role SnykCraEc2Role through the instance profile of its node" in text
    assert "IMDSv2 hop limit of 2" in text
    assert "eks.amazonaws.com/role-arn" in text and "OIDC provider" in text
    assert "secret" not in text.lower().replace("keep it secret", "")


def test_helm_values_quote_every_string(broker):
    """Go's YAML (Helm) reads 12345678, 1e5 or 0o17 unquoted as numbers; PyYAML leaves 1e5 unquoted."""
    text = renderers.render_helm_values(broker)
    for line in text.splitlines():
        if not line.startswith("#"):
            key, _, value = line.partition(": ")
            assert re.fullmatch(r"[a-zA-Z]+", key) and value.startswith('"') and value.endswith('"'), line
    tricky = {"a": "12345678", "b": "1e5", "c": "0o17", "d": "true", "e": "null", "f": "2001-12-14"}
    document = renderers.yaml_document(tricky)
    assert yaml.safe_load(document) == tricky
    assert all(f'{key}: "{value}"' in document.splitlines() for key, value in tricky.items())


def test_helm_refuses_a_stored_external_id_yaml_reads_as_a_number(broker):
    """The chart writes `value: {{ .Values.crExternalId }}` unquoted: Kubernetes refuses an integer."""
    ExternalId.objects.filter(account=broker.account).update(value="12345678")  # saved before the rule
    broker = BrokerInstance.objects.get(pk=broker.pk)
    with pytest.raises(renderers.BrokerFileError, match="rotate the account's ExternalId"):
        renderers.render_helm_values(broker)
    assert parse_env(renderers.render_env(broker))["CR_EXTERNAL_ID"] == "12345678"


# --- docker: one script per host -----------------------------------------------------------------


def docker_runs(script: str) -> list[list[str]]:
    """The words of each `docker run` of the script (continuation lines joined)."""
    joined = script.replace("\\\n", " ")
    return [shlex.split(line) for line in joined.splitlines() if line.startswith("docker run ")]


def option(words: list[str], name: str) -> list[str]:
    return [words[i + 1] for i, word in enumerate(words) if word == name]


def env_of(words: list[str]) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in option(words, "-e") if "=" in pair)


def host_script(broker: BrokerInstance) -> renderers.BrokerFile:
    from accounts import services as account_services

    return renderers.render(broker, "docker", host_brokers=account_services.host_brokers(broker))


@pytest.fixture
def host(make_account):
    """Two accounts of one agent on one host (one agent URL), a third broker on another host."""
    first = make_account("222222222222", broker_client_url="http://broker-a:8000")
    second = make_account("333333333333", regions=("eu-west-1",), broker_client_url="http://broker-b:8001")
    make_account("555555555555", broker_client_url="http://broker-c:8000", cr_agent_url="http://cra-2:8081")
    return first.brokers.get(), second.brokers.get()


def test_docker_script_runs_a_host_on_one_network_named_after_the_urls(host):
    broker_file = host_script(host[0])
    cra, broker_a, broker_b = docker_runs(broker_file.content)
    assert {b.pk for b in broker_file.brokers} == {b.pk for b in host}
    for words in (cra, broker_a, broker_b):
        assert option(words, "--network") == ["snyk-cra.internal"] and "-d" in words
    assert option(cra, "--name") == ["cra.internal"] and cra[-1] == renderers.CRA_IMAGE
    assert env_of(cra) == {"SNYK_PORT": "8081"} and option(cra, "-p") == []  # reached on the network only
    for words, name, port in ((broker_a, "broker-a", "8000"), (broker_b, "broker-b", "8001")):
        env = env_of(words)
        assert option(words, "--name") == [name] and words[-1] == renderers.BROKER_IMAGE
        assert env["BROKER_CLIENT_URL"] == f"http://{name}:{port}" and env["PORT"] == port
        assert env["CR_AGENT_URL"] == "http://cra.internal:8081"
        assert option(words, "-p") == [f"127.0.0.1:{port}:{port}"]
    assert env_of(broker_b)["CR_REGION"] == "eu-west-1" and "broker-c" not in broker_file.content
    assert host_script(host[1]).content == broker_file.content
    assert broker_file.filename == "cra-cra.internal-8081-docker-run.sh"


def test_docker_script_runs_under_sh(host, tmp_path):
    """Run with a stand-in `docker` that records its arguments: the real order, nothing in the foreground."""
    script = tmp_path / "docker-run.sh"
    script.write_text(host_script(host[0]).content)
    log = tmp_path / "calls"
    fake = tmp_path / "bin" / "docker"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$*" >> {log}\n[ "$1 $2" != "network inspect" ]\n')
    fake.chmod(0o755)
    env = {"PATH": f"{fake.parent}:{os.environ['PATH']}"}
    subprocess.run(["/bin/sh", str(script)], check=True, env=env, timeout=30)
    calls = [line.split()[:2] for line in log.read_text().splitlines()]
    assert calls == [
        ["network", "inspect"], ["network", "create"],
        ["rm", "-f"], ["run", "-d"], ["rm", "-f"], ["run", "-d"], ["rm", "-f"], ["run", "-d"],
    ]  # fmt: skip


def test_docker_script_for_a_user_agent_takes_the_key_from_the_shell(make_account, user_agent, tmp_path):
    broker = make_account("444444444444", agent=user_agent).brokers.get()
    script = renderers.render_docker_run(broker)
    (cra, _) = docker_runs(script)
    assert option(cra, "-e") == ["SNYK_PORT=8081", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
    assert "AWS_ACCESS_KEY_ID=" not in script
    path = tmp_path / "run.sh"
    path.write_text(script)
    result = subprocess.run(
        ["/bin/sh", str(path)], capture_output=True, text=True, env={"PATH": "/nonexistent"}
    )
    assert result.returncode != 0 and "export the access key of IAM user SnykCraUser first" in result.stderr


def test_docker_script_for_a_role_agent_names_its_instance_profile(broker):
    script = renderers.render_docker_run(broker)
    assert "running as the EC2 instance profile of role SnykCraEc2Role" in script
    assert "AWS_ACCESS_KEY_ID" not in script


def test_docker_script_refuses_two_brokers_with_one_container_name(make_account):
    first = make_account("222222222222", broker_client_url="http://broker:8000").brokers.get()
    make_account("333333333333", broker_client_url="http://broker:8001")
    with pytest.raises(renderers.BrokerFileError, match="container name broker") as exc:
        host_script(first)
    assert "333333333333/us-east-1" in str(exc.value) and "222222222222/us-east-1" in str(exc.value)


def test_docker_script_refuses_two_brokers_with_one_port(make_account):
    first = make_account("222222222222", broker_client_url="http://broker-a:8000").brokers.get()
    make_account("333333333333", broker_client_url="http://broker-b:8000")
    with pytest.raises(renderers.BrokerFileError, match="port 8000"):
        host_script(first)


def test_docker_script_refuses_a_broker_named_like_its_agent(make_account):
    broker = make_account(broker_client_url="http://cra.internal:8000").brokers.get()
    with pytest.raises(renderers.BrokerFileError, match="the Container Registry Agent"):
        host_script(broker)


@pytest.mark.parametrize(
    "field, url, expect",
    [
        ("broker_client_url", "https://broker.example.com:8443", "https URL"),
        ("broker_client_url", "http://10.0.0.5:8000", "must be a container name"),
        ("broker_client_url", "http://localhost:8000", "must be a container name"),
        ("broker_client_url", "http://Broker:8000", "must be a container name"),
        ("cr_agent_url", "http://[::1]:8081", "must be a container name"),
        ("cr_agent_url", "https://cra.example.com:9443", "https URL"),
    ],
)
def test_docker_script_refuses_urls_no_container_answers(make_account, field, url, expect):
    broker = make_account(**{field: url}).brokers.get()
    with pytest.raises(renderers.BrokerFileError, match=expect):
        host_script(broker)


def test_docker_script_says_which_brokers_of_the_host_it_leaves_out(make_account):
    first = make_account("222222222222", broker_client_url="http://broker-a:8000").brokers.get()
    make_account("333333333333", broker_client_url="https://broker-b.example.com:8443")
    retired = make_account("555555555555", broker_client_url="http://broker-c:8002").brokers.get()
    BrokerInstance.objects.filter(pk=retired.pk).update(status=BrokerStatus.RETIRED)
    draft = make_account("666666666666", broker_client_url="http://broker-d:8003")
    EcrAccount.objects.filter(pk=draft.pk).update(status=Lifecycle.DRAFT)
    broker_file = host_script(first)
    assert [b.account.account_id for b in broker_file.brokers] == ["222222222222"]
    assert (
        "#   333333333333/us-east-1: BROKER_CLIENT_URL https://broker-b.example.com:8443"
        in broker_file.content
    )
    assert (
        "#   666666666666/us-east-1: The broker for 666666666666 in us-east-1 is pending: "
        in broker_file.content
    )
    assert "555555555555" not in broker_file.content


def test_filenames(make_account):
    account = make_account(regions=("eu-west-1",))
    broker = account.brokers.get()
    assert renderers.filename_for(broker, "env") == "broker-222222222222-eu-west-1.env"
    assert renderers.filename_for(broker, "helm") == "broker-222222222222-eu-west-1-values.yaml"
    assert renderers.filename_for(broker, "docker") == "cra-cra.internal-8081-docker-run.sh"


def test_cra_env():
    text = renderers.render_cra_env(access_key_id="AKIAEXAMPLE123456789", secret_access_key="abc/def+ghi")
    assert parse_env(text) == {
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE123456789",
        "AWS_SECRET_ACCESS_KEY": "abc/def+ghi",
        "SNYK_PORT": "8081",
    }


# --- the real broker client ------------------------------------------------------------------


def _preflight_unavailable() -> str:
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node/npm are not installed: broker-preflight runs the real snyk-broker client on node"
    if not PREFLIGHT.exists():
        return f"{PREFLIGHT} is missing"
    return ""


def run_preflight(files: dict[str, Path]) -> dict[str, tuple[int, str]]:
    """broker-preflight on each file, side by side (each waits out the client's start-up).

    Exit status 2 means the tool saw no preflight table at all (the client did not start in
    time, e.g. on a loaded machine): that file is tried once more, alone, with more time.
    """
    env = {**os.environ, "BROKER_PREFLIGHT_SECONDS": os.environ.get("BROKER_PREFLIGHT_SECONDS", "20")}

    def start(path, environ):
        return subprocess.Popen(
            [str(PREFLIGHT), str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=environ
        )

    procs = {name: start(path, env) for name, path in files.items()}
    results = {name: (proc.wait(timeout=300), proc.stdout.read().decode()) for name, proc in procs.items()}
    for name, (code, _) in list(results.items()):
        if code == 2:
            proc = start(files[name], {**env, "BROKER_PREFLIGHT_SECONDS": "45"})
            results[name] = (proc.wait(timeout=300), proc.stdout.read().decode())
    return results


@pytest.mark.skipif(bool(_preflight_unavailable()), reason=_preflight_unavailable() or "available")
def test_every_env_variant_passes_broker_preflight(make_account, user_agent, tmp_path):
    """Each .env the renderer makes is accepted by the broker client; a broken one is not (control)."""
    variants = {
        "default": make_account("222222222222").brokers.get(),
        "eu-https-custom-port": make_account(
            "333333333333",
            regions=("eu-central-1",),
            broker_server_url=BrokerServer.EU,
            broker_client_url="https://broker.example.com:8443",
            cr_agent_url="https://cra.example.com:9443",
            external_id="arn:aws:custom/ext-id_with.chars=+@",
        ).brokers.get(),
        "user-agent-us": make_account(
            "444444444444", agent=user_agent, regions=("us-west-2",), broker_server_url=BrokerServer.US
        ).brokers.get(),
    }
    BrokerInstance.objects.filter(pk=variants["eu-https-custom-port"].pk).update(port=8443)
    files = {}
    for name, broker in variants.items():
        broker = BrokerInstance.objects.select_related("account__agent").get(pk=broker.pk)
        path = tmp_path / f"{name}.env"
        path.write_text(renderers.render_env(broker))
        files[name] = path
    control = tmp_path / "control-bad-token.env"
    control.write_text(files["default"].read_text().replace(TOKEN, "not-a-uuid"))
    files["control"] = control

    results = run_preflight(files)
    for name in variants:
        code, output = results[name]
        assert code == 0, f"{name}:\n{output}"
        assert "broker-preflight: no check in error" in output
        assert "cr-credentials-format: passing" in output
    code, output = results["control"]
    assert code != 0, output
    assert "'broker-token-validation'" in output

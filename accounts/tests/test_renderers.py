"""Broker files: exact content, refusal instead of placeholders, and the real broker client's preflight."""

import os
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from django.utils import timezone

from accounts import renderers
from accounts.choices import BrokerServer, BrokerStatus, ExternalIdState
from accounts.models import BrokerInstance, ExternalId

from .conftest import TOKEN

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
    for fmt in renderers.FORMATS:
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


def test_helm_values_for_the_snyk_broker_chart(broker):
    text = renderers.render_helm_values(broker)
    values = yaml.safe_load(text)
    assert values == {
        "scmType": "container-registry-agent",
        "brokerToken": TOKEN,
        "brokerServerUrl": "https://broker.snyk.io",
        "brokerClientUrl": "http://broker.internal:8000",
        "crType": "ecr",
        "crRoleArn": "arn:aws:iam::222222222222:role/SnykEcrServiceRole",
        "crRegion": "us-east-1",
        "crExternalId": "ext-222222222222",
        "crAgentUrl": "http://cra.internal:8081",
    }


def test_docker_run_for_a_role_agent(broker):
    text = renderers.render_docker_run(broker)
    assert "docker run --restart=always --name snyk-cra" in text
    assert "-p 8081:8081" in text and "-e SNYK_PORT=8081" in text
    assert "AWS_ACCESS_KEY_ID" not in text  # a role agent uses its instance profile
    assert f"-e BROKER_TOKEN={TOKEN}" in text
    assert "-e CR_TYPE=ecr" in text
    assert "-e BROKER_CLIENT_VALIDATION_URL=http://cra.internal:8081/systemcheck" in text
    assert text.rstrip().endswith(renderers.BROKER_IMAGE)
    assert renderers.CRA_IMAGE in text


def test_docker_run_for_a_user_agent_passes_keys_from_the_shell(make_account, user_agent):
    account = make_account("444444444444", agent=user_agent)
    text = renderers.render_docker_run(account.brokers.get())
    assert "-e AWS_ACCESS_KEY_ID \\" in text
    assert "-e AWS_SECRET_ACCESS_KEY \\" in text
    assert "AWS_ACCESS_KEY_ID=" not in text


def test_filenames(make_account):
    account = make_account(regions=("eu-west-1",))
    broker = account.brokers.get()
    assert renderers.filename_for(broker, "env") == "broker-222222222222-eu-west-1.env"
    assert renderers.filename_for(broker, "helm") == "broker-222222222222-eu-west-1-values.yaml"
    assert renderers.filename_for(broker, "docker") == "broker-222222222222-eu-west-1-docker-run.sh"


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

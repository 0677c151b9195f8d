"""The real broker client (npm snyk-broker) in universal mode, on a deployment .env the portal
rendered, against the fake Snyk API: it fetches an OAuth token with the deployment's client id and
secret, lists the deployment's connections, loads every one of them, and the broker's own
container-registry credentials plugin accepts each.

The npm package ships neither config.default.json nor the defaultFilters/ accept rules the
snyk/broker:universal image carries: the test gives it the vendored config.default.json
(../shared/vendor-data) with the filter list cut to `ecr`, whose rules are the package's own
container-registry-agent template (`broker init container-registry-agent`). The client runs from a
folder of its own (node --preserve-symlinks), where it writes config.universal.json.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from accounts import services as account_services
from accounts.models import SnykDeployment

from .test_snyk_flows import onboard, tenant, universal_inventory  # noqa: F401  (fixture)

# ../shared beside the checkout (a worktree sits one folder deeper than the main checkout).
SHARED = next(
    (p / "shared" for p in Path(__file__).resolve().parents if (p / "shared" / "tools").is_dir()), Path()
)
HOME = Path(os.environ.get("BROKER_PREFLIGHT_HOME", Path.home() / ".cache" / "broker-preflight"))
CLIENT = HOME / "node_modules" / "snyk-broker" / "dist" / "cli" / "index.js"
CHECK = Path(__file__).with_name("universal_credentials_check.js")


def _missing() -> str:
    if not shutil.which("node"):
        return "node is not installed"
    if not CLIENT.exists():
        return f"snyk-broker is not installed in {HOME} (run ../shared/tools/broker-preflight once)"
    if not (SHARED / "vendor-data" / "snyk-broker" / "config.default.json").exists():
        return "../shared/vendor-data/snyk-broker/config.default.json is missing"
    return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_folder(root: Path) -> None:
    (root / "node_modules").symlink_to(HOME / "node_modules")
    config = json.loads((SHARED / "vendor-data" / "snyk-broker" / "config.default.json").read_text())
    config["FILTER_RULES_PATHS"] = {"ecr": "defaultFilters/container-registry-agent.json"}
    config["SUPPORTED_BROKER_TYPES"] = ["ecr"]
    (root / "config.default.json").write_text(json.dumps(config))
    template = root / "template"
    template.mkdir()
    subprocess.run([str(HOME / "node_modules" / ".bin" / "broker"), "init", "container-registry-agent"],
                   cwd=template, check=True, capture_output=True, timeout=60)  # fmt: skip
    (root / "defaultFilters").mkdir()
    shutil.copy(template / "accept.json", root / "defaultFilters" / "container-registry-agent.json")


def real_client_missing() -> str:
    return _missing()


def assert_real_client_loads(env_file: str, snyk_fake, deployment_id: str, root: Path) -> dict:
    """Start the real client in universal mode on a rendered deployment .env (in `root`, a folder of
    its own): it gets a token, lists the deployment's connections, loads each one, and its
    container-registry credentials plugin accepts each. Returns the loaded connections by name."""
    names = sorted(c["name"] for c in snyk_fake.connections_of(deployment_id))
    root.mkdir(parents=True, exist_ok=True)
    client_folder(root)
    # As `docker run --env-file` / compose's env_file read it: KEY=value lines, comments skipped.
    settings = dict(line.split("=", 1) for line in env_file.splitlines() if line and not line.startswith("#"))
    assert set(settings) >= {"DEPLOYMENT_ID", "CLIENT_ID", "CLIENT_SECRET", "BROKER_SERVER_URL",
                             "BROKER_DISPATCHER_BASE_URL", "PORT", "BROKER_HA_MODE_ENABLED", "BROKER_CLIENT_URL"}  # fmt: skip
    settings["PORT"] = str(free_port())  # the one change: never collide with a running portal
    env = {**settings, "PATH": os.environ["PATH"], "HOME": str(root), "LOG_LEVEL": "debug"}
    universal = root / "config.universal.json"
    log = root / "client.log"
    calls_before = len(snyk_fake.log)
    with log.open("w") as out:
        proc = subprocess.Popen(["node", "--preserve-symlinks", "--preserve-symlinks-main",
                                 str(root / "node_modules" / "snyk-broker" / "dist" / "cli" / "index.js")],
                                cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                text = log.read_text()
                if text.count("Creating configured connection.") >= len(names):
                    break
                assert proc.poll() is None, text[-3000:]
                time.sleep(0.5)
            loaded = json.loads(universal.read_text())["CONNECTIONS"]
            (root / "loaded.json").write_text(json.dumps({"CONNECTIONS": loaded}))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
    text = log.read_text()
    assert text.count("Creating configured connection.") == len(names), text[-3000:]
    assert "startup failure" not in text and "is disabled" not in text
    client_calls = snyk_fake.log[calls_before:]
    assert client_calls[:2] == [
        "POST /oauth2/token", f"GET /hidden/brokers/deployments/{deployment_id}/connections",
    ]  # fmt: skip
    assert sorted(loaded) == names
    for name, config in loaded.items():
        wanted = next(c["required"] for c in snyk_fake.connections.values() if c["name"] == name)
        assert {
            k.lower(): v for k, v in config.items() if k.startswith(("CR_", "BROKER_CLIENT_URL"))
        } == wanted
        assert config["identifier"]  # integrated: the client opens its tunnel

    check = subprocess.run(["node", str(CHECK), str(HOME), str(root / "loaded.json")],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count(": passing ") == len(names)
    return loaded


@pytest.mark.skipif(bool(_missing()), reason=_missing() or "ready")
def test_the_real_client_loads_every_connection_of_its_deployment(aws, tenant, snyk_fake, tmp_path):  # noqa: F811
    _, accounts = universal_inventory(["222222222222", "333333333333"], regions=("eu-west-1", "us-east-1"))
    for account in accounts:
        onboard(account)
    deployment = SnykDeployment.objects.get()
    env_file = account_services.deployment_file_download(deployment=deployment, fmt="env").content
    assert len(snyk_fake.connections_of(deployment.deployment_id)) == 4
    assert_real_client_loads(env_file, snyk_fake, deployment.deployment_id, tmp_path)

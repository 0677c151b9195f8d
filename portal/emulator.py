"""The embedded AWS emulator: a moto server on loopback, its environment, and demo data.

Used by `manage.py run_embedded`, by tests and by benchmarks:

- `start()` runs a moto server in a child process on a free (or given) loopback port and returns an
  `Emulator` with its URL; `start_thread()` does the same inside this process.
- `aws_environ(url, var_dir)` is the environment that pins boto3 to that server with fake
  credentials, whatever AWS settings the caller's environment (or `.env`) holds.
- `seed_aws()` creates demo accounts in the emulator (a management role the portal's base identity
  can assume, and a few ECR repositories per ECR account); `seed_inventory()` adds the matching
  agent and draft ECR accounts to the database through `provisioning.services`.

Every AWS call goes through `provisioning.aws` (the only boto3 importer); `seed_aws()` refuses to
run unless AWS_ENDPOINT_URL points at a loopback address, so demo data never reaches a real account.

Run as a program (`python -m portal.emulator [--host H] [--port P]`) it serves moto, prints its URL
as the first line on stdout and stops on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from portal import processes

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
# The account moto gives to credentials it has not issued: the portal's base identity.
BASE_ACCOUNT = "123456789012"
REGION = "us-east-1"
MANAGEMENT_ROLE_NAME = "PortalManagement"  # the name `manage.py iam_policy` assumes
# How the seeding enters an account for the first time. On AWS this is the role Organizations
# creates in every member account; moto lets the base identity assume any role ARN to switch account.
BOOTSTRAP_ROLE_NAME = "OrganizationAccountAccessRole"
FAKE_ACCESS_KEY_ID = "AKIAEMBEDDEDEMULATOR"
FAKE_SECRET_ACCESS_KEY = "embedded-emulator-secret-not-a-real-key"
FAKE_SESSION_TOKEN = "embedded-emulator-session"
EMBEDDED_PROFILE = "portal-embedded"
_URL_PREFIX = "moto-server-url="


# --- the server --------------------------------------------------------------------------------


@dataclass
class Emulator:
    """A running moto server. `stop()` is idempotent."""

    url: str
    process: subprocess.Popen | None = None
    _server: Any = None

    @property
    def port(self) -> int:
        return int(urlsplit(self.url).port or 0)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return self._server is not None

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._server is not None:
            self._server.stop()
            self._server = None


def start(host: str = LOOPBACK, port: int = 0, *, timeout: float = 60.0, env: dict | None = None) -> Emulator:
    """Start moto server in a child process; return once it accepts connections.

    port=0 lets the kernel choose a free port (no race between choosing and binding). By default
    the child gets this environment without AWS_* variables: moto itself builds boto3 sessions, and
    a profile or endpoint meant for real AWS would break them.
    """
    if env is None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "portal.emulator", "--host", host, "--port", str(port)],
        stdout=subprocess.PIPE,
        env=env,
        cwd=str(Path(__file__).resolve().parent.parent),
        preexec_fn=processes.preexec_die_with_parent(),  # Linux: never outlives whoever started it
    )
    stdout = process.stdout
    assert stdout is not None
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    stdout.close()  # the child sends nothing else there
    line = lines[0].decode().strip() if lines else ""
    if not line.startswith(_URL_PREFIX):
        if process.poll() is None:
            process.kill()
        process.wait()
        raise RuntimeError(
            f"The AWS emulator did not start (exit status {process.returncode}, said {line!r})."
        )
    return Emulator(url=line.removeprefix(_URL_PREFIX), process=process)


def start_thread(host: str = LOOPBACK, port: int = 0) -> Emulator:
    """Start moto server on a thread of this process (lighter; shares this process's GIL)."""
    from moto.server import ThreadedMotoServer  # noqa: PLC0415  runs bare (python -m portal.emulator) too, without Django

    from portal import moto_accounts, moto_eks  # noqa: PLC0415  as above

    moto_eks.install()  # moto has no EKS Pod Identity: the thin fake answers its calls
    moto_accounts.install()  # each call's account found in constant time, however many accounts
    _quiet_request_log()
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    bound_host, bound_port = server.get_host_and_port()
    return Emulator(url=f"http://{bound_host}:{bound_port}", _server=server)


def _quiet_request_log() -> None:
    # werkzeug logs every request at INFO; the portal's own logs say what matters.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)


def _serve(host: str, port: int) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    emulator = start_thread(host, port)
    sys.stdout.write(f"{_URL_PREFIX}{emulator.url}\n")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # nothing else may block on the parent's pipe
    stop.wait()
    return 0  # no graceful shutdown to wait for: the state dies with the process anyway


# --- the environment ---------------------------------------------------------------------------


def is_loopback_url(url: str) -> bool:
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return False
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def aws_environ(url: str, var_dir: Path | str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Variables that pin boto3 to the emulator at `url`, overriding any AWS settings in `environ`.

    Values are set explicitly (never removed): settings.py loads `.env` with setdefault, so a
    variable that was only removed could come back from `.env` in a child process. Covered: keys,
    profiles and their files, web identity, container and instance credentials, per-service
    endpoint overrides and the switch that ignores configured endpoints.
    """
    environ = os.environ if environ is None else environ
    aws_dir = Path(var_dir) / "aws-emulator"
    aws_dir.mkdir(parents=True, exist_ok=True)
    config = aws_dir / "config"
    credentials = aws_dir / "credentials"
    config.write_text(f"[profile {EMBEDDED_PROFILE}]\nregion = {REGION}\nendpoint_url = {url}\n")
    credentials.write_text(
        f"[{EMBEDDED_PROFILE}]\naws_access_key_id = {FAKE_ACCESS_KEY_ID}\n"
        f"aws_secret_access_key = {FAKE_SECRET_ACCESS_KEY}\n"
    )
    pinned = {
        "AWS_ENDPOINT_URL": url,
        "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "false",
        "AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_ACCESS_KEY,
        "AWS_SESSION_TOKEN": FAKE_SESSION_TOKEN,
        "AWS_SECURITY_TOKEN": "",
        "AWS_CREDENTIAL_EXPIRATION": "",
        "AWS_PROFILE": EMBEDDED_PROFILE,
        "AWS_DEFAULT_PROFILE": EMBEDDED_PROFILE,
        "AWS_CONFIG_FILE": str(config),
        "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
        "AWS_ROLE_ARN": "",
        "AWS_WEB_IDENTITY_TOKEN_FILE": "",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": "",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN": "",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_USE_FIPS_ENDPOINT": "false",
        "AWS_USE_DUALSTACK_ENDPOINT": "false",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }
    for name in environ:
        if name.startswith("AWS_ENDPOINT_URL_"):  # per-service overrides beat AWS_ENDPOINT_URL
            pinned[name] = url
    return pinned


# --- demo data ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoAccount:
    account_id: str
    alias: str
    regions: tuple[str, ...]
    repositories: tuple[str, ...]
    broker_client_url: str


@dataclass(frozen=True)
class DemoSpec:
    agent_name: str = "demo-agent"
    agent_account: str = "111122223333"
    ecr_accounts: tuple[DemoAccount, ...] = field(
        default_factory=lambda: (
            DemoAccount(
                "444455556666",
                "payments-prod",
                ("us-east-1",),
                ("payments/api", "payments/worker", "payments/ledger"),
                "http://broker-payments:8000",
            ),
            DemoAccount(
                "777788889999",
                "data-platform",
                ("us-east-1", "eu-west-1"),
                ("data/etl", "data/notebooks"),
                "http://broker-data:8000",
            ),
        )
    )
    cr_agent_url: str = "http://cra:8081"


DEMO = DemoSpec()


def management_role_arn(account_id: str) -> str:
    return f"arn:aws:iam::{account_id}:role/{MANAGEMENT_ROLE_NAME}"


def management_policy() -> dict[str, Any]:
    """The engine's least privilege in a managed account (`manage.py iam_policy --role management`),
    plus creating the demo repositories (demo only: the portal itself never writes to ECR)."""
    from provisioning import permissions  # noqa: PLC0415  runs bare (python -m portal.emulator) too, without Django

    document = permissions.management_policy()
    document["Statement"].append(
        {
            "Sid": "DemoRepositories",
            "Effect": "Allow",
            "Action": ["ecr:CreateRepository", "ecr:DescribeRepositories"],
            "Resource": "*",
        }
    )
    return document


def _require_emulator() -> None:
    url = os.environ.get("AWS_ENDPOINT_URL", "")
    if not is_loopback_url(url):
        raise RuntimeError(
            "Demo data is only ever written to the embedded emulator: AWS_ENDPOINT_URL must point at a "
            f"loopback address, not {url or '(unset: real AWS)'}."
        )


def base_account() -> str:
    """The account of the base credentials (provisioning.aws verifies accounts; this discovers one)."""
    from provisioning import aws  # noqa: PLC0415  runs bare (python -m portal.emulator) too, without Django

    sts = aws.sessions.client(aws.sessions.base(), "sts")
    return sts.get_caller_identity()["Account"]


def prepare_account(
    account_id: str,
    *,
    trusted_account: str,
    repositories: tuple[str, ...] = (),
    policy: dict[str, Any] | None = None,
) -> str:
    """Give `account_id` a management role trusting `trusted_account`, and ECR repositories.

    Idempotent: an existing role gets its trust and policy rewritten, existing repositories stay.
    Returns the management role ARN.
    """
    from provisioning import aws  # noqa: PLC0415  runs bare (python -m portal.emulator) too, without Django

    _require_emulator()
    bootstrap = aws.Access(account_id, f"arn:aws:iam::{account_id}:role/{BOOTSTRAP_ROLE_NAME}")
    trust = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{trusted_account}:root"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
    )
    try:
        aws.call(
            bootstrap,
            "iam",
            "create_role",
            RoleName=MANAGEMENT_ROLE_NAME,
            AssumeRolePolicyDocument=trust,
            Description="Lets the ECR Broker Portal manage the broker's IAM objects in this account.",
        )
    except aws.AwsError as exc:
        if exc.code != "EntityAlreadyExists":
            raise
        aws.call(
            bootstrap, "iam", "update_assume_role_policy", RoleName=MANAGEMENT_ROLE_NAME, PolicyDocument=trust
        )
    aws.call(
        bootstrap,
        "iam",
        "put_role_policy",
        RoleName=MANAGEMENT_ROLE_NAME,
        PolicyName="EcrBrokerPortalManagement",
        PolicyDocument=json.dumps(policy or management_policy()),
    )
    role_arn = management_role_arn(account_id)
    managed = aws.Access(account_id, role_arn)  # from here on, as the portal itself will act
    for name in repositories:
        try:
            aws.call(managed, "ecr", "create_repository", repositoryName=name)
        except aws.AwsError as exc:
            if exc.code != "RepositoryAlreadyExistsException":
                raise
    return role_arn


def seed_aws(spec: DemoSpec = DEMO) -> dict[str, str]:
    """Demo accounts in the emulator. Returns account id -> management role ARN."""
    _require_emulator()  # before the first call: it would otherwise go to AWS itself
    trusted = base_account()
    policy = management_policy()
    roles = {spec.agent_account: prepare_account(spec.agent_account, trusted_account=trusted, policy=policy)}
    for account in spec.ecr_accounts:
        roles[account.account_id] = prepare_account(
            account.account_id, trusted_account=trusted, repositories=account.repositories, policy=policy
        )
    return roles


@dataclass
class SeededInventory:
    agent: Any
    accounts: list[Any]
    created: bool


def seed_inventory(spec: DemoSpec = DEMO) -> SeededInventory:
    """The demo agent (role kind) and the ECR accounts as drafts, unless they already exist."""
    from accounts import services as inventory  # noqa: PLC0415  runs bare (python -m portal.emulator) too, without Django
    from accounts.models import AgentIdentity, EcrAccount  # noqa: PLC0415  runs bare (python -m portal.emulator) too, without Django

    agent = AgentIdentity.objects.filter(name=spec.agent_name).first()
    created = agent is None
    if agent is None:
        agent = inventory.agent_create(
            name=spec.agent_name,
            kind="role",
            account_id=spec.agent_account,
            management_role_arn=management_role_arn(spec.agent_account),
        )
    accounts = []
    for demo in spec.ecr_accounts:
        account = EcrAccount.objects.filter(account_id=demo.account_id).first()
        if account is None:
            account = inventory.account_create(
                agent=agent,
                account_id=demo.account_id,
                alias=demo.alias,
                regions=demo.regions,
                management_role_arn=management_role_arn(demo.account_id),
                broker_client_url=demo.broker_client_url,
                cr_agent_url=spec.cr_agent_url,
            )
        accounts.append(account)
    return SeededInventory(agent=agent, accounts=accounts, created=created)


# --- the demo organization ------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoOrgAccount:
    name: str
    unit: str  # "" for the root; else the OU's path of names, e.g. "Apps/Payments"
    tags: tuple[tuple[str, str], ...] = ()
    suspended: bool = False


@dataclass(frozen=True)
class DemoOrganizationSpec:
    name: str = "demo-org"
    units: tuple[str, ...] = ("Platform", "Apps", "Apps/Payments")
    accounts: tuple[DemoOrgAccount, ...] = (
        DemoOrgAccount("platform-shared", "Platform", (("team", "platform"),)),
        DemoOrgAccount("apps-web", "Apps", (("team", "web"),)),
        DemoOrgAccount("apps-api", "Apps", (("team", "api"),)),
        DemoOrgAccount("payments-core", "Apps/Payments", (("team", "payments"),)),
        DemoOrgAccount("payments-legacy", "Apps/Payments", (("team", "payments"),), suspended=True),
        DemoOrgAccount("sandbox", ""),
    )
    rule_unit: str = "Apps"  # the demo rule: this OU and its children
    email_domain: str = "example.com"


DEMO_ORGANIZATION = DemoOrganizationSpec()


@dataclass
class SeededOrganization:
    management_account: str
    root_id: str
    units: dict[str, str]  # path of names -> OU id
    accounts: dict[str, str]  # account name -> account id


def _existing_organization(access: Any) -> SeededOrganization | None:
    from provisioning import aws  # noqa: PLC0415  runs bare (python -m portal.emulator) too, without Django

    try:
        described = aws.call(access, "organizations", "describe_organization")["Organization"]
    except aws.AwsError:
        return None
    root_id = aws.call(access, "organizations", "list_roots")["Roots"][0]["Id"]
    units: dict[str, str] = {}
    queue = [(root_id, "")]
    while queue:
        parent, prefix = queue.pop(0)
        for unit in aws.call(
            access, "organizations", "list_organizational_units_for_parent", ParentId=parent
        )["OrganizationalUnits"]:
            path = f"{prefix}{unit['Name']}"
            units[path] = unit["Id"]
            queue.append((unit["Id"], f"{path}/"))
    management = described["MasterAccountId"]
    listed = aws.call(access, "organizations", "list_accounts")["Accounts"]
    accounts = {a["Name"]: a["Id"] for a in listed if a["Id"] != management}
    return SeededOrganization(management, root_id, units, accounts)


def create_demo_organization(
    access: Any, spec: DemoOrganizationSpec = DEMO_ORGANIZATION
) -> SeededOrganization:
    """The demo organization, made through `access` (its management account): a root, the OUs, the
    accounts (moved into their OUs, tagged), one of them closed. Idempotent: an existing one is read."""
    from provisioning import aws  # noqa: PLC0415  runs bare (python -m portal.emulator) too, without Django

    existing = _existing_organization(access)
    if existing is not None:
        return existing
    organization = aws.call(access, "organizations", "create_organization", FeatureSet="ALL")["Organization"]
    root_id = aws.call(access, "organizations", "list_roots")["Roots"][0]["Id"]
    units: dict[str, str] = {}
    for path in spec.units:
        parent = units[path.rsplit("/", 1)[0]] if "/" in path else root_id
        created = aws.call(
            access,
            "organizations",
            "create_organizational_unit",
            ParentId=parent,
            Name=path.rsplit("/", 1)[-1],
        )
        units[path] = created["OrganizationalUnit"]["Id"]
    accounts: dict[str, str] = {}
    for demo in spec.accounts:
        status = aws.call(
            access,
            "organizations",
            "create_account",
            AccountName=demo.name,
            Email=f"{demo.name}@{spec.email_domain}",
            Tags=[{"Key": k, "Value": v} for k, v in demo.tags],
        )["CreateAccountStatus"]
        account_id = status["AccountId"]
        accounts[demo.name] = account_id
        if demo.unit:
            aws.call(
                access,
                "organizations",
                "move_account",
                AccountId=account_id,
                SourceParentId=root_id,
                DestinationParentId=units[demo.unit],
            )
        if demo.suspended:
            aws.call(access, "organizations", "close_account", AccountId=account_id)
    return SeededOrganization(organization["MasterAccountId"], root_id, units, accounts)


def seed_organization(spec: DemoOrganizationSpec = DEMO_ORGANIZATION) -> SeededOrganization:
    """The demo organization in the emulator, managed by the base account through a read-only role."""
    from provisioning import aws, permissions  # noqa: PLC0415  runs bare (python -m portal.emulator) too, without Django

    _require_emulator()
    trusted = base_account()
    role_arn = prepare_account(trusted, trusted_account=trusted, policy=permissions.organization_policy())
    seeded = create_demo_organization(aws.Access(trusted, role_arn), spec)
    # The rule's accounts get ECR repositories, as the demo's own accounts do.
    for name, account_id in seeded.accounts.items():
        member = aws.Access(account_id, f"arn:aws:iam::{account_id}:role/{BOOTSTRAP_ROLE_NAME}")
        try:
            aws.call(member, "ecr", "create_repository", repositoryName=f"{name}/app")
        except aws.AwsError as exc:
            if exc.code != "RepositoryAlreadyExistsException":
                raise
    return seeded


def seed_organization_inventory(
    seeded: SeededOrganization, agent: Any, spec: DemoOrganizationSpec = DEMO_ORGANIZATION
) -> Any:
    """The demo organization's connection and its rule (the OU `rule_unit` and below), unless present."""
    from accounts import organizations as org_inventory  # noqa: PLC0415  runs bare (python -m portal.emulator) too, without Django
    from accounts.models import Organization  # noqa: PLC0415  runs bare (python -m portal.emulator) too, without Django

    organization = Organization.objects.filter(name=spec.name).first()
    rule_unit = seeded.units[spec.rule_unit]
    if organization is not None:
        # The emulator starts empty on every run and moto picks new ids: the demo rule follows its OU.
        organization.rules.filter(position=1).exclude(ou_ids=[rule_unit]).update(ou_ids=[rule_unit])
    else:
        organization = org_inventory.organization_create(
            name=spec.name,
            account_id=seeded.management_account,
            management_role_arn=management_role_arn(seeded.management_account),
        )
        org_inventory.rule_create(
            organization=organization,
            agent=agent,
            regions=[REGION],
            ou_ids=[rule_unit],
            include_children=True,
            broker_client_url_template="http://broker-{account_id}-{region}:8000",
            cr_agent_url_template="http://cra:8081",
        )
    return organization


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve the embedded AWS emulator (moto) on loopback.")
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, default=0, help="0: a free port (printed on stdout)")
    args = parser.parse_args(argv)
    return _serve(args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())

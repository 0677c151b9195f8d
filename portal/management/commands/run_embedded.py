"""`make run`: the whole portal on one machine with nothing but Python.

Starts, in this order: the AWS emulator (moto server on loopback, a child process), database
migrations, the `admin` superuser, demo data (emulator accounts, then inventory rows through
provisioning.services), the agent's setup run, a Celery worker with embedded beat on the
filesystem broker, and the web server. Ctrl-C (SIGINT), SIGTERM or SIGHUP stops all of it: web and
worker first (the worker finishes its task: warm shutdown), the emulator last.

var/ (database, queue, locks) is for the launching user only: 0700, its files 0600 (umask 077,
inherited by every child), and without ENCRYPTION_KEYS the broker tokens are encrypted with a key
generated for this install and kept in var/ (portal.embedded).

The embedded run can never touch a real AWS account: this process and every child get the
emulator's endpoint and fake credentials, overriding whatever AWS settings the environment or
`.env` holds (see portal.emulator.aws_environ). It refuses to start on a non-SQLite database or a
server broker, so demo data and fake credentials never reach a shared deployment.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts import services as inventory
from accounts.choices import Lifecycle
from accounts.models import AgentIdentity, EcrAccount, SnykConnection, SnykDeployment, SnykTenant
from portal import embedded, emulator, fields, snyk_fake
from provisioning import aws, services, snyk_services

SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)


class _Stop(Exception):
    """Raised from a signal handler: unwind, then stop every child."""


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise CommandError(f"{name} must be a whole number, not {value!r}.") from None


def _descendants(pid: int) -> set[int]:
    """Every process below `pid` (Linux /proc; elsewhere nothing, and children are waited for)."""
    parents: dict[int, int] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return set()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat.rpartition(")")[2].split()
        parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Child:
    def __init__(self, name: str, args: list[str], env: dict[str, str], cwd: Path):
        self.name = name
        self.process = subprocess.Popen(args, env=env, cwd=str(cwd))
        self.tree: set[int] = set()

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def signal(self, sig: int) -> None:
        self.tree |= _descendants(self.pid)
        if self.running():
            self.process.send_signal(sig)

    def kill_leftovers(self) -> None:
        """SIGKILL the child if still up, then anything it started that outlived it."""
        if self.running():
            self.tree |= _descendants(self.pid)
            self.process.kill()
        self.process.wait()
        for pid in self.tree:
            try:
                # Same process group as this launcher: not a recycled pid of some other program.
                if _alive(pid) and os.getpgid(pid) == os.getpgrp():
                    os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Command(BaseCommand):
    help = (
        "Run the portal with embedded defaults: SQLite, a Celery worker on the filesystem broker, "
        "an AWS emulator (moto server) with demo data, and the web server on 127.0.0.1."
    )
    # The checks run in the web server's process, with the embedded environment (DEBUG on).
    requires_system_checks = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--port",
            type=int,
            default=_env_int("PORTAL_PORT", 8000),
            help="Web server port on 127.0.0.1 (default: $PORTAL_PORT or 8000).",
        )
        parser.add_argument(
            "--aws-port",
            type=int,
            default=_env_int("PORTAL_AWS_PORT", 0),
            help="AWS emulator port on 127.0.0.1 (default: $PORTAL_AWS_PORT, or 0 for a free port).",
        )
        parser.add_argument(
            "--snyk-port",
            type=int,
            default=_env_int("PORTAL_SNYK_PORT", 0),
            help="Fake Snyk API port on 127.0.0.1 (default: $PORTAL_SNYK_PORT, or 0 for a free port).",
        )
        parser.add_argument(
            "--concurrency",
            type=int,
            default=_env_int("PORTAL_WORKER_CONCURRENCY", 2),
            help="Celery worker processes (default: $PORTAL_WORKER_CONCURRENCY or 2).",
        )
        parser.add_argument("--no-demo", action="store_true", help="Do not seed demo data.")
        parser.add_argument(
            "--shutdown-timeout",
            type=float,
            default=30.0,
            help="Seconds the worker may take to finish its current task when stopping.",
        )

    # --- entry ---------------------------------------------------------------------------------

    def handle(self, *args: Any, **options: Any) -> None:
        self._refuse_shared_services()
        embedded.make_private(Path(settings.VAR_DIR))  # before any file of the run is created
        self.options = options
        self.children: list[Child] = []
        self.emulator: emulator.Emulator | None = None
        self.snyk_fake: snyk_fake.FakeSnyk | None = None
        self.hurry = False
        previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
        for sig in SIGNALS:
            signal.signal(sig, self._on_signal)
        try:
            self._start()
            self._watch()
        except _Stop:
            self.stdout.write("\nStopping…")
        finally:
            for sig in SIGNALS:
                signal.signal(sig, self._on_signal_while_stopping)
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.stdout.write("Stopped.")

    def _on_signal(self, signum: int, frame: FrameType | None) -> NoReturn:
        raise _Stop()

    def _on_signal_while_stopping(self, signum: int, frame: FrameType | None) -> None:
        self.hurry = True  # a second Ctrl-C: stop waiting for a clean shutdown

    def _refuse_shared_services(self) -> None:
        engine = settings.DATABASES["default"]["ENGINE"]
        if engine != "django.db.backends.sqlite3":
            raise CommandError(
                "The embedded run uses its own SQLite database, but DATABASE_URL points at "
                f"{engine.rsplit('.', 1)[-1]}. Unset DATABASE_URL (or use docker compose for that stack)."
            )
        if not settings.CELERY_BROKER_URL.startswith("portalfs://"):
            raise CommandError(
                "The embedded run uses the filesystem broker, but CELERY_BROKER_URL/REDIS_URL name a "
                "server: its worker would take tasks meant for another deployment. Unset them "
                "(or use docker compose for that stack)."
            )

    # --- start ---------------------------------------------------------------------------------

    def _start(self) -> None:
        port = self.options["port"]
        self._require_free_port(port)
        var_dir = Path(settings.VAR_DIR)

        self.stdout.write("Starting the AWS emulator (moto server)…")
        self.emulator = emulator.start(port=self.options["aws_port"])
        pinned = emulator.aws_environ(self.emulator.url, var_dir)
        os.environ.update(pinned)  # this process seeds through provisioning.aws
        settings.AWS_ENDPOINT_URL = self.emulator.url

        aws.sessions.clear()
        base = emulator.base_account()  # fake credentials only work on the emulator
        self.stdout.write("Starting the fake Snyk API…")
        self.snyk_fake, self.snyk_token = snyk_fake.demo()
        snyk_url = self.snyk_fake.start(port=self.options["snyk_port"])  # a thread: workers call it over HTTP
        pinned["SNYK_API_URL"] = settings.SNYK_API_URL = snyk_url

        key_env, key_note = self._encryption_key(var_dir)
        self.stdout.write("Migrating the database…")
        call_command("migrate", interactive=False, verbosity=0)
        if key_env:  # tokens an earlier run stored under the key derived from the public SECRET_KEY
            fields.reencrypt(fields.derived_key(settings.SECRET_KEY))
        password_note = self._ensure_admin()
        snyk_note = self._connect_snyk(snyk_url)

        demo_note = "none (--no-demo)"
        self.demo_agent = None
        if not self.options["no_demo"]:
            self.stdout.write("Seeding demo data…")
            demo_note = self._seed()
        runs_note = self._converge()

        child_env = {
            **os.environ,
            **pinned,
            # A loopback-only development server over plain HTTP, whatever `.env` says for production.
            "DEBUG": "true",
            "SECURE_SSL_REDIRECT": "false",
            "SESSION_COOKIE_SECURE": "false",
            "CSRF_COOKIE_SECURE": "false",
            "SECURE_HSTS_SECONDS": "0",
            "PORTAL_VAR_DIR": str(var_dir),
            "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "portal.settings"),
            "PYTHONUNBUFFERED": "1",
            **key_env,
        }
        if not (os.environ.get("SECRET_KEY") or os.environ.get("SECRET_KEY_FILE")):
            # `SECRET_KEY=` left empty in a .env copied from .env.example: the development key.
            child_env["SECRET_KEY"] = settings.DEFAULT_SECRET_KEY
        base_dir = Path(settings.BASE_DIR)
        concurrency = max(1, self.options["concurrency"])
        self.children.append(
            Child(
                "worker",
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "portal",
                    "worker",
                    "--beat",
                    "--schedule",
                    str(var_dir / "celerybeat-schedule"),
                    "--loglevel",
                    "INFO",
                    "--concurrency",
                    str(concurrency),
                    "--hostname",
                    "embedded@%h",
                    "--without-mingle",
                    "--without-gossip",
                ],
                child_env,
                base_dir,
            )
        )
        self.children.append(
            Child(
                "web",
                [sys.executable, str(base_dir / "manage.py"), "runserver", f"127.0.0.1:{port}", "--noreload"],
                child_env,
                base_dir,
            )
        )
        url = f"http://127.0.0.1:{port}"
        self._wait_for(lambda: self._answers(f"{url}/healthz"), "the web server", timeout=90)

        lines = [
            "",
            "ECR Broker Portal (embedded) is running.",
            f"  web      {url}/   {password_note}",
            f"  worker   celery, {concurrency} process(es) + beat, "
            f"filesystem broker in {settings.CELERY_QUEUE_DIR}",
            f"  AWS      emulator {self.emulator.url} (moto; fake credentials; base account {base};"
            " real AWS is never used)",
            f"  Snyk     fake API {snyk_url} ({snyk_note}; Snyk itself is never called)",
            f"  demo     {demo_note}",
            f"  runs     {runs_note}",
            f"  data     {var_dir} (this user only; {key_note})",
            "Press Ctrl-C to stop.",
            "",
        ]
        self.stdout.write("\n".join(lines))
        self.stdout.flush()

    def _encryption_key(self, var_dir: Path) -> tuple[dict[str, str], str]:
        """(the children's variables, a note): the operator's ENCRYPTION_KEYS, or var/'s own key."""
        if settings.ENCRYPTION_KEYS:
            return {}, "broker tokens encrypted with ENCRYPTION_KEYS"
        settings.ENCRYPTION_KEYS = [embedded.encryption_key(var_dir)]  # this process seeds tokens
        path = var_dir / embedded.KEY_FILE
        return {"ENCRYPTION_KEYS_FILE": str(path)}, f"broker tokens encrypted with {path}: back it up"

    def _require_free_port(self, port: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                raise CommandError(
                    f"Port {port} on 127.0.0.1 is in use: stop what runs there, or set PORTAL_PORT / --port."
                ) from None

    def _ensure_admin(self) -> str:

        User = get_user_model()  # noqa: N806
        given = os.environ.get("PORTAL_ADMIN_PASSWORD", "")
        user = User.objects.filter(username="admin").first()
        if user is None:
            password = given or secrets.token_urlsafe(12)
            User.objects.create_superuser(username="admin", email="", password=password)
            if given:
                return "log in as admin with PORTAL_ADMIN_PASSWORD"
            # Shown once; never stored anywhere but as Django's password hash.
            return f"log in as admin / {password}   (generated now and shown once)"
        if given:
            user.set_password(given)
            user.save(update_fields=["password"])
            return "log in as admin with PORTAL_ADMIN_PASSWORD"
        return "log in as admin (password unchanged; reset: manage.py changepassword admin)"

    def _seed(self) -> str:
        """Demo accounts in the fresh emulator, then the matching rows in the database."""

        emulator.seed_aws()
        seeded = emulator.seed_inventory()
        self.demo_agent = seeded.agent
        accounts = ", ".join(
            f"{a.account_id} {a.alias} ({a.status})"
            for a in EcrAccount.objects.filter(pk__in=[a.pk for a in seeded.accounts])
        )
        what = "created" if seeded.created else "kept"
        return f"agent {seeded.agent.name} in {seeded.agent.account_id} ({what}); ECR accounts {accounts}"

    def _connect_snyk(self, url: str) -> str:
        """Connect the portal to the fake's demo tenant. The fake starts empty every time, like the
        AWS emulator: the ids Snyk gave last time are forgotten, and the converge runs make them anew."""
        SnykConnection.objects.update(connection_id="", integration_id="", org_id="")
        SnykDeployment.objects.update(deployment_id="")
        SnykTenant.objects.update(app_install_id="", app_client_id="", app_client_secret="")
        snyk_services.snyk_connect(
            tenant_id=snyk_fake.DEMO_TENANT_ID,
            token=self.snyk_token,
            api_url=url,
            app_org_id=snyk_fake.DEMO_ORG_ID,
            group_id=snyk_fake.DEMO_GROUP_ID,
        )
        return f"tenant {snyk_fake.DEMO_TENANT_ID} connected"

    def _converge(self) -> str:
        """Queue runs that make the fresh emulator hold what the database says exists.

        The emulator starts empty every time; the database persists in var/. Every agent that was
        set up (and the demo agent) gets a setup run, and the onboarded accounts a reconcile run.
        """

        agents = AgentIdentity.objects.exclude(status__in=(Lifecycle.DRAFT, Lifecycle.REMOVED))
        if self.demo_agent is not None:
            agents = agents | AgentIdentity.objects.filter(pk=self.demo_agent.pk)
        setups = reconciles = 0
        for agent in agents.distinct().order_by("pk"):
            services.agent_setup(agent=agent)
            setups += 1
            members = list(agent.accounts.filter(status__in=inventory.MEMBER_STATUSES))
            if members:
                services.account_reconcile(accounts=members)
                reconciles += len(members)
        return f"queued: setup of {setups} agent(s), reconcile of {reconciles} account(s)"

    # --- run -----------------------------------------------------------------------------------

    def _answers(self, url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback URL)
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _wait_for(self, ready: Callable[[], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            self._check_children()
            if time.monotonic() > deadline:
                raise CommandError(f"{what} did not come up within {timeout:.0f} s.")
            time.sleep(0.2)

    def _check_children(self) -> None:
        for child in self.children:
            if not child.running():
                raise CommandError(
                    f"The {child.name} process exited (status {child.process.returncode}): stopping the rest."
                )
        if self.emulator is not None and not self.emulator.alive():
            raise CommandError("The AWS emulator exited: stopping the rest.")

    def _watch(self) -> None:
        while True:
            self._check_children()
            time.sleep(0.5)

    # --- stop ----------------------------------------------------------------------------------

    def _stop_all(self) -> None:
        for child in self.children:
            child.signal(signal.SIGTERM)  # celery: warm shutdown; runserver: exits
        deadline = time.monotonic() + self.options["shutdown_timeout"]
        for child in self.children:
            while child.running() and time.monotonic() < deadline and not self.hurry:
                time.sleep(0.1)
            child.kill_leftovers()
        if self.emulator is not None:
            self.emulator.stop()
        if self.snyk_fake is not None:
            self.snyk_fake.stop()

"""`make run`: the whole portal on one machine with nothing but Python.

Starts, in this order: the AWS emulator (moto server on loopback, a child process), database
migrations, the `admin` superuser, demo data (emulator accounts, then inventory rows through
provisioning.services), the agent's setup run, a Celery worker with embedded beat on the
filesystem broker, and the web server: gunicorn with portal.gunicorn_config, as compose runs it.
Ctrl-C (SIGINT), SIGTERM or SIGHUP stops all of it: web and worker first (the worker finishes its
task: warm shutdown), the emulator last. If the launcher or the worker dies without stopping them
(SIGKILL), their children follow on Linux (portal.beat.die_with_parent); and the beat holds a lock
on its schedule, so a beat left behind makes the next start refuse instead of sending every
periodic task twice.

var/ (database, queue, locks) is for the launching user only: 0700, its files 0600 (umask 077,
inherited by every child), and without ENCRYPTION_KEYS the broker tokens are encrypted with a key
generated for this install and kept in var/ (portal.embedded).

The embedded run can never touch a real AWS account: this process and every child get the
emulator's endpoint and fake credentials, overriding whatever AWS settings the environment or
`.env` holds (see portal.emulator.aws_environ). It refuses to start on a non-SQLite database or a
server broker, so demo data and fake credentials never reach a shared deployment.
"""

from __future__ import annotations

import contextlib
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
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts import services as inventory
from accounts.choices import Lifecycle
from accounts.models import AgentIdentity, EcrAccount, SnykConnection, SnykDeployment, SnykTenant
from portal import beat, embedded, emulator, fields, processes, snyk_fake
from portal.text import counted
from provisioning import aws, org_services, services, snyk_services

BEAT_SCHEDULE = "celerybeat-schedule"
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
        # Linux: SIGTERM (a clean stop) when this launcher dies, even by SIGKILL (portal.beat).
        self.process = subprocess.Popen(
            args, env=env, cwd=str(cwd), preexec_fn=processes.preexec_die_with_parent(signal.SIGTERM)
        )
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
    # The checks run in a child with the embedded environment (DEBUG on): _run_checks.
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
        self._refuse_a_running_beat(var_dir)
        pinned = self._start_emulator(var_dir)
        self._start_snyk_fake(pinned)
        key_env, notes = self._prepare_data(var_dir)
        env = self._child_env(var_dir, pinned, key_env)
        self._run_checks(env)
        self._start_worker(env, var_dir)
        url = self._start_web(env, port)
        self._wait_for(lambda: self._answers(f"{url}/healthz"), "the web server", timeout=90)
        self._print_banner(url, var_dir, notes)

    def _refuse_a_running_beat(self, var_dir: Path) -> None:
        """A beat left by an earlier run (or another run on this var/) would send every task twice."""
        schedule = var_dir / BEAT_SCHEDULE
        holder = beat.holder_pid(schedule)
        if holder is not None:
            raise CommandError(
                f"A celery beat (pid {holder or 'unknown'}) still holds {beat.lock_path(schedule)}: "
                "another embedded run on this data folder, or one left behind. Stop that run "
                f"(or `kill {holder or '<pid>'}`) and start again."
            )

    def _start_emulator(self, var_dir: Path) -> dict[str, str]:
        """The moto server; returns the AWS variables that pin this process and its children to it."""
        self.stdout.write("Starting the AWS emulator (moto server)…")
        self.emulator = emulator.start(port=self.options["aws_port"])
        pinned = emulator.aws_environ(self.emulator.url, var_dir)
        os.environ.update(pinned)  # this process seeds through provisioning.aws
        settings.AWS_ENDPOINT_URL = self.emulator.url
        aws.sessions.clear()
        return pinned

    def _start_snyk_fake(self, pinned: dict[str, str]) -> None:
        """The fake Snyk API, in a thread of this process: workers call it over HTTP."""
        self.stdout.write("Starting the fake Snyk API…")
        self.snyk_fake, self.snyk_token = snyk_fake.demo()
        self.snyk_url = self.snyk_fake.start(port=self.options["snyk_port"])
        pinned["SNYK_API_URL"] = settings.SNYK_API_URL = self.snyk_url

    def _prepare_data(self, var_dir: Path) -> tuple[dict[str, str], dict[str, str]]:
        """Key, schema, admin user, demo data and the runs that rebuild the emulator; banner notes."""
        notes = {"base": emulator.base_account()}  # fake credentials only work on the emulator
        key_env, notes["key"] = self._encryption_key(var_dir)
        self.stdout.write("Migrating the database…")
        call_command("migrate", interactive=False, verbosity=0)
        if key_env:  # tokens an earlier run stored under the key derived from the public SECRET_KEY
            fields.reencrypt(fields.derived_key(settings.SECRET_KEY))
        notes["password"] = self._ensure_admin()
        notes["snyk"] = self._connect_snyk(self.snyk_url)
        notes["demo"] = "none (--no-demo)"
        self.demo_agent = None
        if not self.options["no_demo"]:
            self.stdout.write("Seeding demo data…")
            notes["demo"] = self._seed()
        notes["runs"] = self._converge()
        return key_env, notes

    def _child_env(self, var_dir: Path, pinned: dict[str, str], key_env: dict[str, str]) -> dict[str, str]:
        env = {
            **os.environ,
            **pinned,
            # A loopback-only server over plain HTTP, whatever `.env` says for production.
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
            env["SECRET_KEY"] = settings.DEFAULT_SECRET_KEY
        return env

    def _run_checks(self, env: dict[str, str]) -> None:
        """Django's system checks with the children's settings (gunicorn does not run them)."""
        checked = subprocess.run(
            [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "check"],
            env=env,
            cwd=settings.BASE_DIR,
            check=False,
        )
        if checked.returncode != 0:
            raise CommandError("The system checks failed (above): nothing was started.")

    def _start_worker(self, env: dict[str, str], var_dir: Path) -> None:
        self.concurrency = max(1, self.options["concurrency"])
        celery = [sys.executable, "-m", "celery", "-A", "portal", "worker", "--beat"]
        options = ["--schedule", str(var_dir / BEAT_SCHEDULE), "--loglevel", "INFO"]
        options += ["--concurrency", str(self.concurrency), "--hostname", "embedded@%h"]
        options += ["--without-mingle", "--without-gossip"]
        self.children.append(Child("worker", celery + options, env, Path(settings.BASE_DIR)))

    def _start_web(self, env: dict[str, str], port: int) -> str:
        """gunicorn with portal.gunicorn_config, as compose runs it (whitenoise serves static files)."""
        web = [sys.executable, "-m", "gunicorn", "--config", "python:portal.gunicorn_config"]
        web += ["--bind", f"127.0.0.1:{port}", "portal.wsgi:application"]
        self.children.append(Child("web", web, env, Path(settings.BASE_DIR)))
        return f"http://127.0.0.1:{port}"

    def _print_banner(self, url: str, var_dir: Path, notes: dict[str, str]) -> None:
        assert self.emulator is not None
        lines = [
            "",
            "ECR Broker Portal (embedded) is running.",
            f"  web      {url}/   {notes['password']}",
            f"  worker   celery, {self.concurrency} process(es) + beat, "
            f"filesystem broker in {settings.CELERY_QUEUE_DIR}",
            f"  AWS      emulator {self.emulator.url} (moto; fake credentials; base account {notes['base']};"
            " real AWS is never used)",
            f"  Snyk     fake API {self.snyk_url} ({notes['snyk']}; Snyk itself is never called)",
            f"  demo     {notes['demo']}",
            f"  runs     {notes['runs']}",
            f"  data     {var_dir} (this user only; {notes['key']})",
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
        return (
            f"agent {seeded.agent.name} in {seeded.agent.account_id} ({what}); ECR accounts {accounts}; "
            f"{self._seed_organization(seeded.agent)}"
        )

    def _seed_organization(self, agent: AgentIdentity) -> str:
        """The demo organization and its rule; a discovery and a sync (held: auto-apply is off) are
        queued, so its page shows the tree and a sync waiting for confirmation."""
        seeded = emulator.seed_organization()
        organization = emulator.seed_organization_inventory(seeded, agent)
        org_services.discover_request(organization=organization)
        # Refused when one is queued already (a restart before the worker took it).
        with contextlib.suppress(ValidationError):
            org_services.sync_request(organization=organization, apply=organization.auto_apply)
        return (
            f"organization {organization.name} ({len(seeded.accounts)} accounts; discovery and sync queued)"
        )

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
        return (
            f"queued: setup of {counted(setups, 'agent', 'agents')}, "
            f"reconcile of {counted(reconciles, 'account', 'accounts')}"
        )

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
            child.signal(signal.SIGTERM)  # celery: warm shutdown; gunicorn: graceful
        deadline = time.monotonic() + self.options["shutdown_timeout"]
        for child in self.children:
            while child.running() and time.monotonic() < deadline and not self.hurry:
                time.sleep(0.1)
            child.kill_leftovers()
        if self.emulator is not None:
            self.emulator.stop()
        if self.snyk_fake is not None:
            self.snyk_fake.stop()

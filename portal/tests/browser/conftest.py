"""Real headless Chromium against the live server, a moto server and (where a run executes) a real
Celery worker process.

Chromium is Debian's (`/usr/bin/chromium`, or $CHROMIUM), driven by Python Playwright; Playwright's
own browser download is never used. Without Chromium every browser test skips and says why
(`.ci/run` installs it). DJANGO_ALLOW_ASYNC_UNSAFE is set only while these tests run: Playwright's
sync API keeps an event loop in the main thread, and Django refuses ORM calls from a thread with
one unless told it is safe (it is: the loop never runs Django code).
"""

from __future__ import annotations

import http.client
import os
import shutil
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[3]
SCREENSHOT_DIR = ROOT / "docs" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
READ_ACTIONS = ("Get", "List", "Describe")


def pytest_addoption(parser):
    # Registered only when pytest starts in this directory (`make screenshots` names it).
    parser.addoption(
        "--screenshots",
        action="store_true",
        default=False,
        help=f"Write PNGs of the main pages into {SCREENSHOT_DIR.relative_to(ROOT)}/.",
    )


def chromium_path() -> str:
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def chromium_missing() -> str:
    path = chromium_path()
    if not os.path.exists(path):
        return (
            f"Chromium is not installed ({path} missing): `apt-get install -y chromium` "
            "(.ci/run does it) to run the browser tests"
        )
    return ""


@pytest.fixture(autouse=True)
def _roles(db):
    """The role groups, as migration portal.0002 makes them.

    Transactional tests end with a flush that empties every table, and serialized_rollback cannot
    restore them here: once Playwright runs, the test thread sees a fresh connection object
    without the serialized copy. So each browser test recreates the groups itself.
    """
    from portal.roles import ensure_role_groups

    ensure_role_groups()


@pytest.fixture(scope="session")
def screenshots(request) -> Path | None:
    """The directory to write screenshots into, or None when --screenshots was not given."""
    try:
        wanted = request.config.getoption("--screenshots")
    except ValueError:
        wanted = False
    if not wanted:
        return None
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    return SCREENSHOT_DIR


@pytest.fixture(scope="module")
def browser():
    reason = chromium_missing()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            try:
                yield chromium
            finally:
                chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(scope="session")
def _live_server_over_http():
    """The live server speaks plain http: production's https redirect and secure cookies are off.

    Session-scoped and applied before `live_server` starts (its middleware reads the settings once).
    """
    from django.conf import settings

    saved = {
        name: getattr(settings, name)
        for name in ("SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE")
    }
    for name in saved:
        setattr(settings, name, False)
    yield
    for name, value in saved.items():
        setattr(settings, name, value)


@pytest.fixture
def portal(_live_server_over_http, live_server) -> str:
    return live_server.url


# What Chromium prints when a page breaks its Content-Security-Policy (inline code, htmx injecting a
# <style>) or sends a Permissions-Policy it cannot read.
POLICY_COMPLAINTS = ("Content Security Policy", "Permissions-Policy", "Permissions policy")


@pytest.fixture
def page(browser, portal):
    """A fresh browser page; every flow on it must keep to the portal's CSP (checked at the end)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.set_default_timeout(20_000)
    page = context.new_page()
    complaints: list[str] = []

    def on_console(message) -> None:
        if any(complaint in message.text for complaint in POLICY_COMPLAINTS):
            complaints.append(f"{page.url}: {message.text}")

    page.on("console", on_console)
    yield page
    context.close()
    assert not complaints, "\n".join(complaints)


@pytest.fixture
def moto(monkeypatch) -> Iterator[str]:
    """A moto server for the live server (this process) and the worker; boto3 pinned to it."""
    from portal.testing import moto_server
    from provisioning import aws

    with moto_server() as url:
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        aws.sessions.clear()
        yield url
        aws.sessions.clear()


class _SlowAws(BaseHTTPRequestHandler):
    """Forwards AWS query-API calls to moto, holding each write for `delay` seconds.

    IAM answers in milliseconds under moto; real IAM takes hundreds. The delay lets a person
    (and the test) watch operations appear one by one. Responses are moto's own, except for the
    calls a test asks to refuse (`faults`): moto does not enforce IAM permissions itself.
    """

    protocol_version = "HTTP/1.1"
    target = ""
    delay = 0.0
    faults: dict[str, int] = {}  # Action -> how many more calls to refuse with AccessDenied

    def log_message(self, *args):  # keep test output quiet
        pass

    def _forward(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        action = (parse_qs(body.decode("utf-8", "replace")).get("Action") or [""])[0]
        if action and not action.startswith(READ_ACTIONS):
            time.sleep(self.delay)
        if self.faults.get(action, 0) > 0:
            self.faults[action] -= 1
            self._deny(action)
            return
        parts = urlsplit(self.target)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
        conn.request(self.command, self.path, body=body, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        conn.close()

    def _deny(self, action: str) -> None:
        """IAM's answer when the caller lacks the permission (what a too-narrow role gets)."""
        payload = (
            '<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><Error><Type>Sender</Type>'
            "<Code>AccessDenied</Code><Message>User: arn:aws:sts::123456789012:assumed-role/"
            f"PortalManagement/ecr-broker-portal is not authorized to perform: iam:{action}</Message>"
            "</Error><RequestId>denied-by-test-proxy</RequestId></ErrorResponse>"
        ).encode()
        self.send_response(403)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward  # noqa: N815  http.server names handlers do_<METHOD>


@pytest.fixture
def aws_faults() -> dict[str, int]:
    """Fill in to make the proxy refuse calls: {"CreatePolicy": 1} denies the next CreatePolicy."""
    return {}


@pytest.fixture
def slow_aws(moto, aws_faults) -> Iterator[str]:
    """The moto server behind a proxy that makes every AWS write take 0.6 s (and injects faults)."""
    handler = type("SlowAws", (_SlowAws,), {"target": moto, "delay": 0.6, "faults": aws_faults})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def start_worker(slow_aws):
    """Start a real Celery worker process (talking to AWS through the slow proxy) when asked."""
    from contextlib import ExitStack

    from portal.testing import celery_workers, purge_broker, worker_env

    purge_broker()
    stack = ExitStack()

    def start():
        return stack.enter_context(celery_workers(count=1, env=worker_env(AWS_ENDPOINT_URL=slow_aws)))

    yield start
    stack.close()


def management_role(account_id: str) -> str:
    """moto lets the base credentials assume any role ARN: the session lands in that account."""
    return f"arn:aws:iam::{account_id}:role/PortalManagement"


@pytest.fixture
def agent(db):
    from accounts import services as account_services

    return account_services.agent_create(
        name="cra",
        kind="role",
        account_id="111111111111",
        management_role_arn=management_role("111111111111"),
    )


@pytest.fixture
def login(page, portal):
    """Log in through the login form, as a person does."""

    def log_in(user, password=None):
        page.goto(portal + "/login/")
        page.fill("#id_username", user.get_username())
        page.fill("#id_password", password or "pw-" + user.get_username())
        page.click("button[type=submit]")
        page.wait_for_url(portal + "/")
        return page

    return log_in

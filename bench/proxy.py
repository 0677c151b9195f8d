"""A latency-and-fault HTTP proxy on loopback, in front of an AWS emulator (moto server).

Every AWS call the portal (or the baseline script) makes goes through it when AWS_ENDPOINT_URL
names it. It adds a fixed delay per call (AWS's own latency: real IAM answers in tens of
milliseconds, moto in one), can answer instead of the emulator with throttling (HTTP 400 and an
IAM `Throttling` error, what botocore's standard retry mode backs off on) or HTTP 500 at given
rates, can refuse chosen calls permanently (for example `AccessDenied` on one action in one
account), and counts every call by action and by account.

The account of a call is learnt from the traffic: an `AssumeRole` request names the role (and so
its account) and its response carries the access key the caller will sign with from then on.
Calls signed with any other key (the base credentials) count under "base".

Used in-process by the benchmarks and the reliability tests: rules and rates are plain attributes,
changed while the proxy runs.
"""

from __future__ import annotations

import http.client
import json
import random
import re
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

# Headers that describe one hop, not the message: never forwarded as they are.
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade", "te"}
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/[^/]+/[^/]+/([^/]+)/")
_ACCESS_KEY = re.compile(rb"<AccessKeyId>([^<]+)</AccessKeyId>")
_ACCOUNT_IN_ARN = re.compile(r"^arn:aws[\w-]*:iam::(\d{12}):")
_ATTEMPT = re.compile(r"attempt=(\d+)")


@dataclass
class Rule:
    """Answer matching calls with this error instead of forwarding them (until removed)."""

    action: str  # "iam:CreateRole"
    code: str = "AccessDenied"
    status: int = 403
    account: str = ""  # only calls made in this account ("" = any)
    message: str = ""
    times: int | None = None  # answer this many calls, then stop matching (None = forever)
    hits: int = 0

    def matches(self, action: str, account: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        return action == self.action and (not self.account or account == self.account)


@dataclass
class Hold:
    """Keep the next matching call waiting until released: the moment a worker is killed mid-call.

    made=True: the emulator makes the write first and only its answer waits (the write took effect);
    made=False: the call waits before reaching the emulator and never does (it did not).
    `arrived` is set once a call is held.
    """

    action: str
    account: str = ""
    made: bool = True
    arrived: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    taken: bool = False  # one call per hold

    def matches(self, call: Call) -> bool:
        return (
            not self.taken
            and call.action == self.action
            and (not self.account or call.account == self.account)
        )


@dataclass(frozen=True)
class Call:
    service: str
    action: str  # "iam:CreateRole"
    account: str  # "base" for the base credentials
    attempt: int  # botocore's attempt number for this call (1 = first try)
    at: float = field(default_factory=time.time)  # when it arrived (wall clock: runs record theirs so)


class FaultProxy:
    """Start with `with FaultProxy(upstream_url) as proxy:`; point AWS_ENDPOINT_URL at proxy.url."""

    def __init__(
        self,
        upstream: str,
        *,
        delay: float = 0.05,
        throttle_rate: float = 0.0,
        error_rate: float = 0.0,
        max_faults_per_call: int | None = None,
        seed: int | None = None,
    ):
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.delay = delay
        self.throttle_rate = throttle_rate
        self.error_rate = error_rate
        # Random faults are injected only on a call's first N attempts, so that a run can still
        # fail only by our code's fault, never by the bad luck of N+ faults in a row (None: always).
        self.max_faults_per_call = max_faults_per_call
        self.rules: list[Rule] = []
        self.holds: list[Hold] = []
        self.counts: Counter[str] = Counter()  # "iam:CreateRole" -> calls (every attempt)
        self.by_account: dict[str, Counter[str]] = defaultdict(Counter)
        self.faults: Counter[str] = Counter()  # "throttle" / "500" / "rule:AccessDenied"
        self.log: list[Call] = []
        self._keys: dict[str, str] = {}  # access key id -> account id
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- control ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "the proxy is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
        server.daemon_threads = True
        server.request_queue_size = 256  # many workers connect at once; the default backlog is 5
        server.allow_reuse_address = True
        server.server_bind()
        server.server_activate()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def reset_counts(self) -> None:
        with self._lock:
            self.counts.clear()
            self.by_account.clear()
            self.faults.clear()
            self.log.clear()

    def add_rule(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear_rules(self) -> None:
        with self._lock:
            self.rules.clear()

    def add_hold(self, hold: Hold) -> Hold:
        with self._lock:
            self.holds.append(hold)
        return hold

    def release_holds(self) -> None:
        with self._lock:
            for hold in self.holds:
                hold.released.set()
            self.holds.clear()

    def _hold_for(self, call: Call) -> Hold | None:
        with self._lock:
            hold = next((h for h in self.holds if h.matches(call)), None)
            if hold is not None:
                hold.taken = True
                if not hold.made:
                    hold.arrived.set()
            return hold

    def writes(self, account: str | None = None) -> int:
        """Calls that change something (not STS, not Get/List/Describe), in one account or all."""
        counts = self.by_account.get(account, Counter()) if account else self.counts
        return sum(n for action, n in counts.items() if is_write(action))

    # --- per call ----------------------------------------------------------------------------------
    def _classify(self, headers: Any, body: bytes) -> Call:
        match = _CREDENTIAL.search(headers.get("Authorization", ""))
        key, service = (match.group(1), match.group(2)) if match else ("", "unknown")
        target = headers.get("X-Amz-Target", "")
        if target:  # JSON protocols (ECR): "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories"
            operation = target.rsplit(".", 1)[-1]
            params: dict[str, list[str]] = {}
        else:  # query protocol (IAM, STS): a form body with Action=...
            params = parse_qs(body.decode("utf-8", "replace"))
            operation = params.get("Action", ["Unknown"])[0]
        if operation == "AssumeRole":
            account = _account_of(params.get("RoleArn", [""])[0]) or "base"
        else:
            with self._lock:
                account = self._keys.get(key, "base")
        attempt = _ATTEMPT.search(headers.get("amz-sdk-request", ""))
        return Call(service, f"{service}:{operation}", account, int(attempt.group(1)) if attempt else 1)

    def _record(self, call: Call) -> None:
        with self._lock:
            self.counts[call.action] += 1
            self.by_account[call.account][call.action] += 1
            self.log.append(call)

    def _fault(self, call: Call) -> tuple[int, str, str] | None:
        """(status, code, message) to answer instead of the emulator, or None to forward."""
        with self._lock:
            for rule in self.rules:
                if rule.matches(call.action, call.account):
                    rule.hits += 1
                    self.faults[f"rule:{rule.code}"] += 1
                    message = rule.message or (
                        f"User is not authorized to perform: {call.action} in account {call.account}"
                    )
                    return rule.status, rule.code, message
            if self.max_faults_per_call is not None and call.attempt > self.max_faults_per_call:
                return None
            roll = self._random.random()
            if roll < self.throttle_rate:
                self.faults["throttle"] += 1
                return 400, "Throttling", "Rate exceeded"
            if roll < self.throttle_rate + self.error_rate:
                self.faults["500"] += 1
                return 500, "ServiceFailure", "Injected internal error"
        return None

    def _learn_key(self, call: Call, response_body: bytes) -> None:
        if call.action == "sts:AssumeRole":
            match = _ACCESS_KEY.search(response_body)
            if match:
                with self._lock:
                    self._keys[match.group(1).decode()] = call.account


def is_write(action: str) -> bool:
    service, operation = action.split(":", 1)
    return service != "sts" and not operation.startswith(("Get", "List", "Describe"))


def _account_of(arn: str) -> str:
    match = _ACCOUNT_IN_ARN.match(arn)
    return match.group(1) if match else ""


def error_body(service: str, code: str, message: str, json_protocol: bool) -> tuple[str, bytes]:
    if json_protocol:
        return "application/x-amz-json-1.1", json.dumps({"__type": code, "message": message}).encode()
    xmlns = f"https://{service}.amazonaws.com/doc/2010-05-08/" if service in ("iam", "sts") else ""
    body = (
        f'<ErrorResponse xmlns="{xmlns}"><Error><Type>Sender</Type><Code>{code}</Code>'
        f"<Message>{message}</Message></Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    )
    return "text/xml", body.encode()


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _upstream(self) -> http.client.HTTPConnection:
        conn = getattr(self, "_conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.owner.upstream_host, self.owner.upstream_port, timeout=60)
            self._conn = conn
        return conn

    def _handle(self) -> None:
        proxy = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        call = proxy._classify(self.headers, body)
        proxy._record(call)
        if proxy.delay:
            time.sleep(proxy.delay)
        hold = proxy._hold_for(call)
        if hold is not None and not hold.made:
            hold.released.wait()
            self.close_connection = True  # dropped, never forwarded: the write was not made
            return
        fault = proxy._fault(call)
        if fault is not None:
            status, code, message = fault
            content_type, payload = error_body(
                call.service, code, message, json_protocol=bool(self.headers.get("X-Amz-Target"))
            )
            self._reply(status, [("Content-Type", content_type)], payload)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
        for attempt in range(2):  # a kept-alive upstream connection may have been closed meanwhile
            conn = self._upstream()
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                break
            except (http.client.HTTPException, OSError):
                conn.close()
                self._conn = None
                if attempt:
                    self._reply(502, [("Content-Type", "text/plain")], b"upstream unreachable")
                    return
        proxy._learn_key(call, payload)
        if hold is not None:  # made: the emulator has done it, only the answer waits
            hold.arrived.set()
            hold.released.wait()
        reply_headers = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_HEADERS]
        # send_response() writes its own Server and Date; Content-Length is set from the payload.
        reply_headers = [
            (k, v) for k, v in reply_headers if k.lower() not in ("content-length", "server", "date")
        ]
        self._reply(response.status, reply_headers, payload)

    def _reply(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        try:
            self._send(status, headers, payload)
        except OSError:  # the caller is gone (a killed worker): nobody to answer
            self.close_connection = True

    def _send(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _handle  # noqa: N815  http.server names handlers do_<METHOD>

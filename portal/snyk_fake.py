"""A fake Snyk API for `make run` and the tests: what provisioning/snyk.py calls, and the two
endpoints the real broker client calls in universal mode (`/oauth2/token`, the deployment's
connections listing).

Shapes follow Snyk's own clients (snyk-broker-config src/api/*.ts, the Terraform provider's
internal/client/, the broker's lib/hybrid-sdk/client/config/remoteConfig.ts and auth/oauth.ts):
each route checks the `version` the real client sends, the JSON:API media type and body, and
answers JSON:API documents with `links.next` pagination and JSON:API errors. It enforces what Snyk
documents: at most 25 connections per deployment, connection names `^[\\w-]+$` unique per
deployment, the six `ecr` parameters, a client secret shown once. Where Snyk's server-side checks
are not public (the exact status of a refusal), the fake picks a plain 4xx and says so.

`FakeSnyk.serve()` runs it on a loopback port in a thread (`make run` and tests); the state is
plain dicts the tests read.
"""

from __future__ import annotations

import re
import secrets
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from flask import Flask, Response, jsonify, request
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

BROKER_VERSIONS = {"2024-10-15", "2025-11-05"}
TENANTS_VERSIONS = {"2024-10-14~experimental"}
APP_INSTALL_VERSIONS = {"2024-05-31"}
APP_SECRETS_VERSIONS = {"2024-05-23"}
HIDDEN_VERSIONS = {"2024-02-08~experimental"}  # the broker client's API_VERSION (config.default.json)
DISPATCHER_VERSIONS = {"2022-12-01~experimental"}  # its HA dispatcher (client/dispatcher/client/api.ts)
BROKER_APP_ID = "cb43d761-bd17-4b44-9b6c-e5b8ad077d33"
MAX_CONNECTIONS = 25
ECR_REQUIRED = ("broker_client_url", "cr_agent_url", "cr_base", "cr_role_arn", "cr_region", "cr_external_id")
_NAME = re.compile(r"^[\w-]+\Z", re.ASCII)
_URL_OR_UUID = re.compile(
    r"^(https?://\S+|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\Z", re.I
)
_HOST_OR_UUID = re.compile(
    r"^([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*(:\d{1,5})?"
    r"|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\Z",
    re.I,
)

# The demo tenant of `make run` (fixed ids, so a restarted run finds what it made).
DEMO_TENANT_ID = "0d7a9c3e-5b1f-4e8a-9c2d-7f6e5a4b3c21"
DEMO_GROUP_ID = "5e2b8f14-9a3c-4d7e-8b6f-1a2c3d4e5f60"
DEMO_ORG_ID = "8c4d2e1f-7a6b-4c5d-9e8f-0a1b2c3d4e5f"  # where the Broker App gets installed
DEMO_USER_ID = "2f9e8d7c-6b5a-4c3d-8e2f-1a0b9c8d7e6f"


class ApiError(Exception):
    def __init__(self, status: int, title: str, detail: str = ""):
        super().__init__(detail or title)
        self.status, self.title, self.detail = status, title, detail


def _id() -> str:
    return str(uuid.uuid4())


@dataclass
class FakeSnyk:
    """Snyk's state, as plain dicts keyed by id."""

    page_size: int = 10
    tokens: dict[str, str] = field(default_factory=dict)  # personal token -> user id
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    tenants: dict[str, dict[str, Any]] = field(default_factory=dict)
    admins: set[tuple[str, str]] = field(default_factory=set)  # (tenant, user)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    orgs: dict[str, dict[str, Any]] = field(default_factory=dict)
    installs: dict[str, dict[str, Any]] = field(default_factory=dict)
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    connections: dict[str, dict[str, Any]] = field(default_factory=dict)
    integrations: dict[str, dict[str, Any]] = field(default_factory=dict)
    access_tokens: dict[str, str] = field(default_factory=dict)  # OAuth access token -> install id
    # Faults to inject: each call to a matching "METHOD /path-prefix" pops one (status, Retry-After).
    faults: list[tuple[str, int, str]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)  # "METHOD /path" of every call
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _server: BaseWSGIServer | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    # --- set-up ------------------------------------------------------------------------------

    def add_tenant(
        self, *, tenant_id: str = "", name: str = "Tenant", group_id: str = "", org_id: str = ""
    ) -> str:
        tenant_id = tenant_id or _id()
        self.tenants[tenant_id] = {"name": name, "slug": name.lower().replace(" ", "-")}
        group_id = group_id or _id()
        self.groups[group_id] = {"name": f"{name} group", "tenant": tenant_id}
        self.orgs[org_id or _id()] = {"name": "Broker admin", "group_id": group_id, "tenant": tenant_id}
        return tenant_id

    def add_org(self, name: str, *, group_id: str = "") -> str:
        """An Org made outside the portal (in a group, or personal without one)."""
        org_id = _id()
        tenant = self.groups[group_id]["tenant"] if group_id else ""
        self.orgs[org_id] = {"name": name, "group_id": group_id, "tenant": tenant}
        return org_id

    def add_user(
        self, *, token: str, user_id: str = "", name: str = "Tenant Admin", admin_of: str = ""
    ) -> str:
        user_id = user_id or _id()
        self.users[user_id] = {
            "name": name,
            "username": name.lower().replace(" ", "."),
            "email": "admin@example.com",
        }
        self.tokens[token] = user_id
        if admin_of:
            self.admins.add((admin_of, user_id))
        return user_id

    def group_of(self, tenant_id: str) -> str:
        return next(g for g, v in self.groups.items() if v["tenant"] == tenant_id)

    def org_of(self, tenant_id: str) -> str:
        return next(o for o, v in self.orgs.items() if v["tenant"] == tenant_id)

    def connections_of(self, deployment_id: str) -> list[dict[str, Any]]:
        return [dict(c, id=i) for i, c in self.connections.items() if c["deployment_id"] == deployment_id]

    def writes(self) -> list[str]:
        return [line for line in self.log if not line.startswith("GET ")]

    # --- serving -----------------------------------------------------------------------------

    @contextmanager
    def serve(self, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
        url = self.start(host, port)
        try:
            yield url
        finally:
            self.stop()

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on a thread of this process; the URL (port 0: a free port, picked as it binds)."""
        server = make_server(host, port, build_app(self), threaded=True, request_handler=_QuietHandler)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="fake-snyk", daemon=True)
        self._thread.start()
        return f"http://{host}:{server.server_port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._server = self._thread = None


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Calls are in FakeSnyk.log; one access-log line each would bury the tests' output."""


def demo() -> tuple[FakeSnyk, str]:
    """The fake of `make run`: one tenant, its group and broker-admin Org, and a Tenant Admin's token."""
    fake = FakeSnyk()
    fake.add_tenant(tenant_id=DEMO_TENANT_ID, name="Demo", group_id=DEMO_GROUP_ID, org_id=DEMO_ORG_ID)
    token = str(uuid.uuid4())
    fake.add_user(token=token, user_id=DEMO_USER_ID, name="Demo Admin", admin_of=DEMO_TENANT_ID)
    return fake, token


# --- documents ---------------------------------------------------------------------------------


def _document(data: Any, *, status: int = 200, links: dict[str, str] | None = None) -> Response:
    body: dict[str, Any] = {"jsonapi": {"version": "1.0"}, "data": data, "links": links or {}}
    response = jsonify(body)
    response.status_code = status
    response.mimetype = "application/vnd.api+json"
    return response


def _page(fake: FakeSnyk, items: list[dict[str, Any]]) -> Response:
    """`limit` items after `starting_after`, with `links.next` while more remain (Snyk's cursors)."""
    limit = int(request.args.get("limit") or fake.page_size)
    after = request.args.get("starting_after", "")
    ids = [item["id"] for item in items]
    start = ids.index(after) + 1 if after in ids else 0
    page = items[start : start + limit]
    links: dict[str, str] = {}
    if start + limit < len(items):
        query = {k: v for k, v in request.args.items() if k != "starting_after"}
        query["starting_after"] = page[-1]["id"]
        links["next"] = f"{request.path}?{urlencode(query)}"
    return _document(page, links=links)


def _deployment_doc(deployment_id: str, d: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": deployment_id,
        "type": "broker_deployment",
        "attributes": {
            "install_id": d["install_id"],
            "broker_app_installed_in_org_id": d["org_id"],
            "metadata": d["metadata"],
        },
    }


def _connection_doc(connection_id: str, c: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": connection_id,
        "type": "broker_connection",
        "attributes": {
            "name": c["name"],
            "deployment_id": c["deployment_id"],
            "configuration": {"type": c["type"], "required": dict(c["required"]), "default": {}},
        },
    }


def _integration_doc(integration_id: str, i: dict[str, Any]) -> dict[str, Any]:
    attributes = {"integration_id": integration_id, "org_id": i["org_id"], "type": i["type"]}
    return {"id": integration_id, "type": "broker_integration", "attributes": attributes}


def _org_doc(org_id: str, o: dict[str, Any]) -> dict[str, Any]:
    """As Snyk's Orgs API (Org20230529): group_id only for an Org in a group, the tenant as a relationship."""
    attributes = {
        "name": o["name"],
        "slug": o["name"].lower().replace(" ", "-"),
        "is_personal": not o["group_id"],
    }
    if o["group_id"]:
        attributes["group_id"] = o["group_id"]
    doc: dict[str, Any] = {"id": org_id, "type": "org", "attributes": attributes}
    if o["tenant"]:
        doc["relationships"] = {"tenant": {"data": {"id": o["tenant"], "type": "tenant"}}}
    return doc


# --- checks ------------------------------------------------------------------------------------


def _version(allowed: set[str]) -> None:
    version = request.args.get("version", "")
    if not version:
        raise ApiError(400, "Bad Request", "The version query parameter is required.")
    if version not in allowed:
        raise ApiError(404, "Not Found", f"No endpoint at version {version}.")


def _body(kind: str) -> dict[str, Any]:
    """The JSON:API `data` of a write, of type `kind`."""
    if request.mimetype != "application/vnd.api+json":
        raise ApiError(415, "Unsupported Media Type", "Content-Type must be application/vnd.api+json.")
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        raise ApiError(400, "Bad Request", "The body must be a JSON:API document with a data object.")
    data: dict[str, Any] = body["data"]
    if data.get("type") != kind:
        raise ApiError(400, "Bad Request", f"data.type must be {kind!r}, not {data.get('type')!r}.")
    return {"data": data, **{k: v for k, v in body.items() if k != "data"}}


def _known(table: dict[str, Any], key: str, what: str) -> dict[str, Any]:
    if key not in table:
        raise ApiError(404, "Not Found", f"{what} {key} was not found.")
    value: dict[str, Any] = table[key]
    return value


def _ecr_configuration(attributes: dict[str, Any]) -> tuple[str, dict[str, str]]:
    configuration = attributes.get("configuration")
    if not isinstance(configuration, dict) or not isinstance(configuration.get("required"), dict):
        raise ApiError(400, "Bad Request", "attributes.configuration.required must be an object.")
    kind = configuration.get("type")
    if kind != "ecr":
        raise ApiError(400, "Bad Request", f"Connection type {kind!r} is not served by this fake (only ecr).")
    required = configuration["required"]
    missing = [k for k in ECR_REQUIRED if not isinstance(required.get(k), str) or not required[k]]
    if missing:
        raise ApiError(400, "Bad Request", f"ecr requires {', '.join(missing)}.")
    extra = sorted(set(required) - set(ECR_REQUIRED))
    if extra:
        raise ApiError(400, "Bad Request", f"Unknown ecr parameter(s): {', '.join(extra)}.")
    for key in ("broker_client_url", "cr_agent_url"):
        if not _URL_OR_UUID.match(required[key]):
            raise ApiError(400, "Bad Request", f"{key} must be an http(s) URL or a credentials reference.")
    if not _HOST_OR_UUID.match(required["cr_base"]):
        raise ApiError(
            400, "Bad Request", "cr_base must be a host name (no scheme) or a credentials reference."
        )
    return kind, dict(required)


# --- the app -----------------------------------------------------------------------------------


def build_app(fake: FakeSnyk) -> Flask:  # noqa: C901  one route table, read top to bottom
    app = Flask("fake_snyk")
    routes: list[tuple[str, str, Callable[..., Response]]] = []

    def route(rule: str, *methods: str) -> Callable[[Callable[..., Response]], Callable[..., Response]]:
        def register(view: Callable[..., Response]) -> Callable[..., Response]:
            routes.append((rule, ",".join(methods), view))
            app.add_url_rule(rule, view.__name__, _guarded(fake, view), methods=list(methods))
            return view

        return register

    def user() -> str:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "token" or token not in fake.tokens:
            raise ApiError(401, "Unauthorized", "The token is not valid (use Authorization: token <token>).")
        return fake.tokens[token]

    def tenant_admin(tenant_id: str) -> str:
        user_id = user()
        _known(fake.tenants, tenant_id, "Tenant")
        if (tenant_id, user_id) not in fake.admins:
            raise ApiError(403, "Forbidden", "Tenant Admin is required.")
        return user_id

    def install_of(tenant_id: str, install_id: str) -> dict[str, Any]:
        tenant_admin(tenant_id)
        install = _known(fake.installs, install_id, "Install")
        if fake.orgs[install["org_id"]]["tenant"] != tenant_id:
            raise ApiError(404, "Not Found", f"Install {install_id} was not found.")
        return install

    def deployment_of(tenant_id: str, install_id: str, deployment_id: str) -> dict[str, Any]:
        install_of(tenant_id, install_id)
        deployment = _known(fake.deployments, deployment_id, "Deployment")
        if deployment["install_id"] != install_id:
            raise ApiError(404, "Not Found", f"Deployment {deployment_id} was not found.")
        return deployment

    @route("/rest/self", "GET")
    def self_user() -> Response:
        _version(APP_INSTALL_VERSIONS)
        user_id = user()
        return _document({"id": user_id, "type": "user", "attributes": fake.users[user_id]})

    @route("/rest/tenants", "GET")
    def tenants() -> Response:
        _version(TENANTS_VERSIONS)
        user_id = user()
        mine = [t for t, u in fake.admins if u == user_id]
        return _page(fake, [{"id": t, "type": "tenant", "attributes": fake.tenants[t]} for t in mine])

    @route("/rest/tenants/<tenant_id>/memberships", "GET")
    def memberships(tenant_id: str) -> Response:
        _version(TENANTS_VERSIONS)
        user()
        _known(fake.tenants, tenant_id, "Tenant")
        wanted = request.args.get("user_id", "")
        role = request.args.get("role_name", "")
        rows = [
            {
                "id": f"{t}:{u}",
                "type": "tenant_membership",
                "relationships": {
                    "role": {"data": {"attributes": {"name": "admin"}}},
                    "user": {"data": {"id": u}},
                },
            }
            for t, u in sorted(fake.admins)
            if t == tenant_id and (not wanted or u == wanted) and role in ("", "admin")
        ]
        return _page(fake, rows)

    @route("/rest/orgs", "GET")
    def orgs() -> Response:
        _version(BROKER_VERSIONS)
        user()
        name = request.args.get("name", "").lower()
        group = request.args.get("group_id", "")
        found = [
            _org_doc(o, v)
            for o, v in fake.orgs.items()
            if name in v["name"].lower() and (not group or v["group_id"] == group)
        ]
        return _page(fake, found)

    @route("/rest/orgs/<org_id>", "GET")
    def org(org_id: str) -> Response:
        _version(BROKER_VERSIONS)
        user()
        return _document(_org_doc(org_id, _known(fake.orgs, org_id, "Org")))

    @route("/v1/org", "POST")
    def create_org() -> Response:
        user()
        body = request.get_json(silent=True) or {}
        name, group_id = body.get("name"), body.get("groupId", "")
        if not isinstance(name, str) or not name.strip():
            return _plain({"message": "name is required", "code": 400}, 400)
        if group_id and group_id not in fake.groups:
            return _plain({"message": f"Group {group_id} not found", "code": 404}, 404)
        org_id = _id()
        tenant = fake.groups[group_id]["tenant"] if group_id else ""
        fake.orgs[org_id] = {"name": name, "group_id": group_id, "tenant": tenant}
        slug = name.lower().replace(" ", "-")
        doc = {
            "id": org_id,
            "name": name,
            "slug": slug,
            "url": f"https://app.snyk.io/org/{slug}",
            "group": {"id": group_id, "name": fake.groups[group_id]["name"]} if group_id else None,
        }
        return _plain(doc, 201)

    @route("/rest/orgs/<org_id>/apps/installs", "GET", "POST")
    def app_installs(org_id: str) -> Response:
        _version(APP_INSTALL_VERSIONS)
        user()
        _known(fake.orgs, org_id, "Org")
        if request.method == "GET":
            rows = [
                {
                    "id": i,
                    "type": "app_install",
                    "attributes": {"client_id": v["client_id"]},
                    "relationships": {"app": {"data": {"id": v["app_id"], "type": "app"}}},
                }
                for i, v in fake.installs.items()
                if v["org_id"] == org_id
            ]
            return _page(fake, rows)
        body = _body("app_install")
        app_id = ((body.get("relationships") or {}).get("app") or {}).get("data", {}).get("id")
        if app_id != BROKER_APP_ID:
            raise ApiError(400, "Bad Request", "relationships.app.data.id must name the Broker App.")
        if any(v["org_id"] == org_id and v["app_id"] == app_id for v in fake.installs.values()):
            raise ApiError(409, "Conflict", "The app is already installed in this Org.")
        install_id, secret = _id(), secrets.token_urlsafe(32)
        fake.installs[install_id] = {
            "org_id": org_id,
            "app_id": app_id,
            "client_id": _id(),
            "client_secret": secret,
        }
        attributes = {"client_id": fake.installs[install_id]["client_id"], "client_secret": secret}
        data = {
            "id": install_id,
            "type": "app_install",
            "attributes": attributes,
            "relationships": {"app": {"data": {"id": app_id, "type": "app"}}},
        }
        return _document(data, status=201)

    @route("/rest/orgs/<org_id>/apps/installs/<install_id>/secrets", "POST")
    def rotate_secret(org_id: str, install_id: str) -> Response:
        _version(APP_SECRETS_VERSIONS)
        user()
        install = _known(fake.installs, install_id, "Install")
        body = _body("app")
        if (body["data"].get("attributes") or {}).get("mode") != "replace":
            raise ApiError(400, "Bad Request", "attributes.mode must be 'replace'.")
        install["client_secret"] = secrets.token_urlsafe(32)  # the old one stops working at once
        attributes = {"client_id": install["client_id"], "client_secret": install["client_secret"]}
        return _document({"id": install_id, "type": "app", "attributes": attributes})

    @route("/rest/tenants/<tenant_id>/brokers/deployments", "GET")
    def tenant_deployments(tenant_id: str) -> Response:
        _version(BROKER_VERSIONS)
        tenant_admin(tenant_id)
        rows = [
            _deployment_doc(d, v)
            for d, v in fake.deployments.items()
            if fake.orgs[v["org_id"]]["tenant"] == tenant_id
        ]
        return _page(fake, rows)

    @route("/rest/tenants/<tenant_id>/brokers/installs/<install_id>/deployments", "GET", "POST")
    def deployments(tenant_id: str, install_id: str) -> Response:
        _version(BROKER_VERSIONS)
        install = install_of(tenant_id, install_id)
        if request.method == "GET":
            rows = [
                _deployment_doc(d, v) for d, v in fake.deployments.items() if v["install_id"] == install_id
            ]
            return _page(fake, rows)
        attributes = _body("broker_deployment")["data"].get("attributes") or {}
        org_id = attributes.get("broker_app_installed_in_org_id")
        if org_id != install["org_id"]:
            raise ApiError(400, "Bad Request", "broker_app_installed_in_org_id must be the install's Org.")
        metadata = attributes.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise ApiError(400, "Bad Request", "attributes.metadata must be an object.")
        deployment_id = _id()
        fake.deployments[deployment_id] = {"install_id": install_id, "org_id": org_id, "metadata": metadata}
        return _document(_deployment_doc(deployment_id, fake.deployments[deployment_id]), status=201)

    @route(
        "/rest/tenants/<tenant_id>/brokers/installs/<install_id>/deployments/<deployment_id>",
        "PATCH",
        "DELETE",
    )
    def deployment(tenant_id: str, install_id: str, deployment_id: str) -> Response:
        _version(BROKER_VERSIONS)
        found = deployment_of(tenant_id, install_id, deployment_id)
        if request.method == "DELETE":
            if fake.connections_of(deployment_id):
                raise ApiError(409, "Conflict", "The deployment still has connections.")
            del fake.deployments[deployment_id]
            return Response(status=204)
        attributes = _body("broker_deployment")["data"].get("attributes") or {}
        found["metadata"] = attributes.get("metadata") or found["metadata"]
        return _document(_deployment_doc(deployment_id, found))

    base = "/rest/tenants/<tenant_id>/brokers/installs/<install_id>/deployments/<deployment_id>/connections"

    @route(base, "GET", "POST")
    def connections(tenant_id: str, install_id: str, deployment_id: str) -> Response:
        _version(BROKER_VERSIONS)
        deployment_of(tenant_id, install_id, deployment_id)
        current = fake.connections_of(deployment_id)
        if request.method == "GET":
            return _page(fake, [_connection_doc(c["id"], c) for c in current])
        attributes = _body("broker_connection")["data"].get("attributes") or {}
        name = attributes.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ApiError(400, "Bad Request", "The connection name must match ^[\\w-]+$.")
        if attributes.get("deployment_id") != deployment_id:
            raise ApiError(400, "Bad Request", "attributes.deployment_id must be the deployment of the path.")
        if any(c["name"] == name for c in current):
            raise ApiError(409, "Conflict", f"A connection named {name} exists in this deployment.")
        if len(current) >= MAX_CONNECTIONS:
            # Snyk documents the limit, not its status code: 409 is this fake's choice.
            raise ApiError(409, "Conflict", f"A deployment holds at most {MAX_CONNECTIONS} connections.")
        kind, required = _ecr_configuration(attributes)
        connection_id = _id()
        fake.connections[connection_id] = {
            "deployment_id": deployment_id,
            "name": name,
            "type": kind,
            "required": required,
            "identifier": _id(),  # the broker's websocket identity, reported once integrated
        }
        return _document(_connection_doc(connection_id, fake.connections[connection_id]), status=201)

    @route(base + "/<connection_id>", "GET", "PATCH", "DELETE")
    def connection(tenant_id: str, install_id: str, deployment_id: str, connection_id: str) -> Response:
        _version(BROKER_VERSIONS)
        deployment_of(tenant_id, install_id, deployment_id)
        found = _known(fake.connections, connection_id, "Connection")
        if found["deployment_id"] != deployment_id:
            raise ApiError(404, "Not Found", f"Connection {connection_id} was not found.")
        if request.method == "GET":
            return _document(_connection_doc(connection_id, found))
        if request.method == "DELETE":
            if any(i["connection_id"] == connection_id for i in fake.integrations.values()):
                raise ApiError(409, "Conflict", "The connection is still integrated with an Org.")
            del fake.connections[connection_id]
            return Response(status=204)
        attributes = _body("broker_connection")["data"].get("attributes") or {}
        if attributes.get("name") != found["name"]:
            raise ApiError(400, "Bad Request", "A connection's name cannot change.")
        found["type"], found["required"] = _ecr_configuration(attributes)
        return _document(_connection_doc(connection_id, found))

    @route("/rest/tenants/<tenant_id>/brokers/connections/<connection_id>/integrations", "GET")
    def integrations(tenant_id: str, connection_id: str) -> Response:
        _version(BROKER_VERSIONS)
        tenant_admin(tenant_id)
        _known(fake.connections, connection_id, "Connection")
        rows = [
            _integration_doc(i, v)
            for i, v in fake.integrations.items()
            if v["connection_id"] == connection_id
        ]
        return _page(fake, rows)

    @route("/rest/tenants/<tenant_id>/brokers/connections/<connection_id>/orgs/<org_id>/integration", "POST")
    def integrate(tenant_id: str, connection_id: str, org_id: str) -> Response:
        _version(BROKER_VERSIONS)
        tenant_admin(tenant_id)
        found = _known(fake.connections, connection_id, "Connection")
        _known(fake.orgs, org_id, "Org")
        data = _body(found["type"])["data"]  # data.type is the connection's type
        if any(v["org_id"] == org_id and v["type"] == found["type"] for v in fake.integrations.values()):
            raise ApiError(409, "Conflict", f"Org {org_id} already has an {found['type']} integration.")
        integration_id = data.get("integration_id") or _id()
        fake.integrations[integration_id] = {
            "connection_id": connection_id,
            "org_id": org_id,
            "type": found["type"],
        }
        return _document(_integration_doc(integration_id, fake.integrations[integration_id]), status=201)

    @route(
        "/rest/tenants/<tenant_id>/brokers/connections/<connection_id>/orgs/<org_id>/integrations/<integration_id>",
        "DELETE",
    )
    def disintegrate(tenant_id: str, connection_id: str, org_id: str, integration_id: str) -> Response:
        _version(BROKER_VERSIONS)
        tenant_admin(tenant_id)
        found = _known(fake.integrations, integration_id, "Integration")
        if found["connection_id"] != connection_id or found["org_id"] != org_id:
            raise ApiError(404, "Not Found", f"Integration {integration_id} was not found.")
        del fake.integrations[integration_id]
        return Response(status=204)

    # --- what the real broker client calls (universal mode) -----------------------------------

    @route("/oauth2/token", "POST")
    def oauth_token() -> Response:
        form = request.form
        install = next((i for i, v in fake.installs.items() if v["client_id"] == form.get("client_id")), None)
        if (
            form.get("grant_type") != "client_credentials"
            or install is None
            or (fake.installs[install]["client_secret"] != form.get("client_secret"))
        ):
            return _plain({"error": "invalid_client", "error_description": "Bad client credentials."}, 401)
        token = secrets.token_urlsafe(24)
        fake.access_tokens[token] = install
        return _plain({"access_token": token, "token_type": "bearer", "expires_in": 3600}, 200)

    @route("/hidden/brokers/deployments/<deployment_id>/connections", "GET")
    def client_connections(deployment_id: str) -> Response:
        _version(HIDDEN_VERSIONS)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        install = fake.access_tokens.get(token) if scheme.lower() == "bearer" else None
        if install is None:
            return _plain({"error": "invalid_token", "error_description": "Bad access token."}, 401)
        deployment = fake.deployments.get(deployment_id)
        if deployment is None or deployment["install_id"] != install:
            raise ApiError(404, "Not Found", f"Deployment {deployment_id} was not found.")
        rows = []
        for c in fake.connections_of(deployment_id):
            doc = _connection_doc(c["id"], c)
            if any(i["connection_id"] == c["id"] for i in fake.integrations.values()):
                doc["attributes"]["identifier"] = c["identifier"]  # only integrated ones open a tunnel
            rows.append(doc)
        return _document(rows)

    @route("/hidden/brokers/<hashed_token>/connections/<client_id>", "POST")
    def allocate_server(hashed_token: str, client_id: str) -> Response:
        """HA mode: which broker server a connection's websocket goes to (one fake server here)."""
        _version(DISPATCHER_VERSIONS)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token not in fake.access_tokens:
            return _plain({"error": "invalid_token", "error_description": "Bad access token."}, 401)
        attributes = _body_attributes()
        if not re.fullmatch(r"[0-9a-f]{64}", hashed_token) or "deployment_location" not in attributes:
            raise ApiError(
                400, "Bad Request", "A hashed connection token and data.attributes.deployment_location."
            )
        return _document({"id": client_id, "type": "server_allocation", "attributes": {"server_id": "0"}})

    app.config["ROUTES"] = routes
    return app


def _body_attributes() -> dict[str, Any]:
    """The broker's dispatcher posts JSON:API `data.attributes` without a `type`."""
    body = request.get_json(force=True, silent=True) or {}
    data = body.get("data") if isinstance(body, dict) else None
    attributes = data.get("attributes") if isinstance(data, dict) else None
    return attributes if isinstance(attributes, dict) else {}


def _guarded(fake: FakeSnyk, view: Callable[..., Response]) -> Callable[..., Response]:
    """Logs the call, serves injected faults, turns ApiError into a JSON:API error document."""

    def handle(**kwargs: Any) -> Response:
        request_id = _id()
        with fake.lock:
            fake.log.append(f"{request.method} {request.path}")
            fault = next(
                (f for f in fake.faults if f"{request.method} {request.path}".startswith(f[0])), None
            )
            if fault is not None:
                fake.faults.remove(fault)
                response = _error_document(fault[1], "Injected fault", "")
                if fault[2]:
                    response.headers["Retry-After"] = fault[2]
            else:
                try:
                    response = view(**kwargs)
                except ApiError as exc:
                    response = _error_document(exc.status, exc.title, exc.detail)
        response.headers["snyk-request-id"] = request_id
        return response

    handle.__name__ = view.__name__
    return handle


def _plain(body: dict[str, Any], status: int) -> Response:
    """A plain JSON answer (v1 and OAuth endpoints are not JSON:API)."""
    response = jsonify(body)
    response.status_code = status
    return response


def _error_document(status: int, title: str, detail: str) -> Response:
    error = {"id": _id(), "status": str(status), "title": title, "detail": detail, "meta": {}}
    response = jsonify({"jsonapi": {"version": "1.0"}, "errors": [error]})
    response.status_code = status
    response.mimetype = "application/vnd.api+json"
    return response

"""The only module that talks to Snyk (as aws.py is for AWS): its REST API, through `requests`.

Paths, bodies and API versions are those of Snyk's own `snyk-broker-config` CLI (src/api/*.ts) and
the Terraform provider's client (snyk-labs/terraform-provider-snyk-broker internal/client/):
JSON:API bodies (`application/vnd.api+json`), `Authorization: token <personal token>`, lists
followed through `links.next`. urllib3's Retry backs off on 429 (any method: the call was not
processed) and on 5xx (idempotent methods only: a POST that may have landed is not repeated, a
re-run looks it up by name instead), honouring Retry-After. Errors surface as SnykError, in plain
words, with Snyk's request id. The token never reaches a log, a row or an exception.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

# API versions, as the CLI sends them (config.default.json of snyk-broker-config).
BROKER_VERSION = "2024-10-15"  # brokers/* and rest/orgs
TENANTS_VERSION = "2024-10-14~experimental"  # tenants, memberships
APP_INSTALL_VERSION = "2024-05-31"  # apps/installs and /self
APP_SECRETS_VERSION = "2024-05-23"  # apps/installs/{id}/secrets
JSON_API = "application/vnd.api+json"
REQUEST_ID_HEADER = "snyk-request-id"

# Every call made through this module, by "METHOD /path-template" (tests and benchmarks read it).
calls: Counter[str] = Counter()
_calls_lock = threading.Lock()
_INTERACTION_ID = str(uuid.uuid4())  # one per process, as the CLI's SNYK-INTERACTION-ID


class SnykError(Exception):
    """A Snyk API error: HTTP status, Snyk's title and detail, its request id and the call."""

    def __init__(self, status: int, title: str, detail: str = "", *, request_id: str = "", call: str = ""):
        self.status = status
        self.title = title
        self.detail = detail
        self.request_id = request_id
        self.call = call
        self.code = f"HTTP {status}" if status else "unreachable"
        super().__init__(self.message)

    @property
    def message(self) -> str:
        text = f"{self.title}: {self.detail}" if self.detail and self.detail != self.title else self.title
        hint = _HINTS.get(self.status, "")
        return f"{text}{' — ' + hint if hint else ''}"

    @property
    def is_not_found(self) -> bool:
        return self.status == 404


_HINTS = {
    401: "the Snyk token was refused: is it current, and is the API host the tenant's region?",
    403: "the token's user may not do this: the portal needs a Tenant Admin's personal token.",
    409: "something with this name exists already in Snyk.",
    429: "Snyk kept rate-limiting the portal; re-run later.",
}


@dataclass(frozen=True)
class SnykAccess:
    """How to reach one Snyk tenant: the API host and a personal token (never printed: repr=False)."""

    api_url: str
    tenant_id: str
    token: str = ""

    def __repr__(self) -> str:
        return f"SnykAccess({self.api_url!r}, {self.tenant_id!r})"


@dataclass
class SnykResponse:
    status: int
    body: dict[str, Any]
    request_id: str
    attempts: int

    @property
    def data_id(self) -> str:
        """The id of what a write made: JSON:API `data.id`, or v1's top-level `id`."""
        data = self.body.get("data")
        if isinstance(data, dict):
            return str(data.get("id", ""))
        return str(self.body.get("id", ""))


class _Retry(Retry):
    """429 is retried for every method (Snyk did not process the call); 5xx only for idempotent ones."""

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        if status_code == 429 and self.total:
            return True
        return super().is_retry(method, status_code, has_retry_after)


def _retry() -> _Retry:
    return _Retry(
        total=settings.SNYK_RETRIES,
        connect=settings.SNYK_RETRIES,
        read=settings.SNYK_RETRIES,
        status=settings.SNYK_RETRIES,
        status_forcelist=(500, 502, 503, 504),
        allowed_methods=frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"}),
        backoff_factor=0.5,
        backoff_max=30,
        respect_retry_after_header=True,
        raise_on_status=False,
    )


def path_template(path: str) -> str:
    """ "/rest/tenants/<uuid>/brokers/..." -> "/rest/tenants/{id}/brokers/..." (for counting calls)."""
    parts = []
    for part in urlsplit(path).path.split("/"):
        try:
            uuid.UUID(part)
            parts.append("{id}")
        except ValueError:
            parts.append(part)
    return "/".join(parts)


class Client:
    """One tenant's API: reads return JSON documents, `write` makes one call and returns its answer."""

    def __init__(self, access: SnykAccess):
        self.access = access
        self.base = access.api_url.rstrip("/")
        self.session = requests.Session()
        adapter = HTTPAdapter(max_retries=_retry())
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)

    def _url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        # links.next is "/rest/..." (or, from some endpoints, relative to /rest).
        return f"{self.base}{path if path.startswith(('/rest/', '/v1/')) else '/rest' + path}"

    def request(
        self,
        method: str,
        path: str,
        *,
        version: str = "",
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        v1: bool = False,
    ) -> SnykResponse:
        query = dict(params or {})
        if version and "version=" not in path:
            query["version"] = version
        headers = {
            "Authorization": f"token {self.access.token}",
            "Content-Type": "application/json" if v1 else JSON_API,
            "Accept": "application/json" if v1 else JSON_API,
            "snyk-interaction-id": _INTERACTION_ID,
        }
        call = f"{method} {path_template(path)}"
        with _calls_lock:
            calls[call] += 1
        try:
            response = self.session.request(
                method,
                self._url(path),
                params=query,
                json=body,
                headers=headers,
                timeout=settings.SNYK_TIMEOUT,
            )
        except requests.RequestException as exc:
            # The exception's text names the host, never the headers.
            raise SnykError(
                0, f"Snyk's API at {self.base} could not be reached", type(exc).__name__, call=call
            ) from None
        history = getattr(getattr(response.raw, "retries", None), "history", ()) or ()
        answer = SnykResponse(
            status=response.status_code,
            body=_json(response),
            request_id=response.headers.get(REQUEST_ID_HEADER, ""),
            attempts=len(history) + 1,
        )
        if response.status_code >= 400:
            raise _error(answer, call)
        return answer

    def get(self, path: str, *, version: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        return self.request("GET", path, version=version, params=params).body

    def list_all(
        self, path: str, *, version: str, params: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Every item of a JSON:API list, following `links.next` (as the Terraform provider does)."""
        return list(self._pages(path, version=version, params=params))

    def _pages(self, path: str, *, version: str, params: dict[str, str] | None) -> Iterator[dict[str, Any]]:
        next_path: str | None = path
        first = True
        while next_path:
            body = self.request("GET", next_path, version=version, params=params if first else None).body
            first = False
            yield from body.get("data") or []
            next_path = (body.get("links") or {}).get("next") or None

    # --- reads the steps and the connection test make ---------------------------------------

    def self_user(self) -> dict[str, Any]:
        return self.get("/rest/self", version=APP_INSTALL_VERSION).get("data") or {}

    def is_tenant_admin(self, user_id: str) -> bool:
        members = self.list_all(
            f"/rest/tenants/{self.access.tenant_id}/memberships",
            version=TENANTS_VERSION,
            params={"role_name": "admin", "user_id": user_id},
        )
        return bool(members)

    def app_installs(self, org_id: str) -> list[dict[str, Any]]:
        return self.list_all(f"/rest/orgs/{org_id}/apps/installs", version=APP_INSTALL_VERSION)

    def deployments(self) -> list[dict[str, Any]]:
        return self.list_all(
            f"/rest/tenants/{self.access.tenant_id}/brokers/deployments", version=BROKER_VERSION
        )

    def install_deployments(self, install_id: str) -> list[dict[str, Any]]:
        """The deployments of one Broker App install (snyk-broker-config getDeployments)."""
        return self.list_all(f"{self.install_path(install_id)}/deployments", version=BROKER_VERSION)

    def connections(self, install_id: str, deployment_id: str) -> list[dict[str, Any]]:
        return self.list_all(
            f"{self.install_path(install_id)}/deployments/{deployment_id}/connections", version=BROKER_VERSION
        )

    def integrations(self, connection_id: str) -> list[dict[str, Any]]:
        return self.list_all(
            f"/rest/tenants/{self.access.tenant_id}/brokers/connections/{connection_id}/integrations",
            version=BROKER_VERSION,
        )

    def org(self, org_id: str) -> dict[str, Any]:
        """One Org (GET /orgs/{org_id}): attributes name, group_id, is_personal; the tenant related."""
        return self.get(f"/rest/orgs/{org_id}", version=BROKER_VERSION).get("data") or {}

    def orgs_named(self, name: str, group_id: str = "") -> list[dict[str, Any]]:
        """Orgs whose name is exactly `name` (Snyk's `name` filter matches parts of names too)."""
        params = {"is_personal": "false", "name": name}
        if group_id:
            params["group_id"] = group_id
        found = self.list_all("/rest/orgs", version=BROKER_VERSION, params=params)
        return [o for o in found if (o.get("attributes") or {}).get("name") == name]

    def install_path(self, install_id: str) -> str:
        return f"/rest/tenants/{self.access.tenant_id}/brokers/installs/{install_id}"


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {"data": body}


def _error(answer: SnykResponse, call: str) -> SnykError:
    """JSON:API `errors[0]` (title, detail), or v1's `message`/`error`, in plain words."""
    errors = answer.body.get("errors")
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
    title = str(first.get("title") or answer.body.get("message") or answer.body.get("error") or "")
    detail = str(first.get("detail") or "")
    return SnykError(
        answer.status,
        title or f"Snyk answered HTTP {answer.status}",
        detail,
        request_id=answer.request_id or str((first.get("meta") or {}).get("request_id", "")),
        call=call,
    )

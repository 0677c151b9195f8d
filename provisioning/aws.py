"""The only module that talks to AWS (the only boto3/botocore importer).

Sessions: base credentials from the environment/instance role, or per account an assumed
management role (+ external id), cached until shortly before expiry. Clients use botocore's
`standard` retry mode (throttling, 5xx) and explicit timeouts; boto3 itself honours
AWS_ENDPOINT_URL, so the same code runs against moto server. Errors surface as AwsError so no
other module needs botocore.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypedDict, TypeVar

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_organizations import OrganizationsClient

CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 8},
    connect_timeout=5,
    read_timeout=30,
    # One client per account and service, but the base STS client serves every account's AssumeRole
    # at once: botocore's default pool of 10 made the other threads open and drop connections.
    max_pool_connections=64,
)
SESSION_SECONDS = 3600  # a 900 s session would be re-assumed on nearly every call
SESSION_REFRESH_MARGIN = 300
SESSION_NAME = "ecr-broker-portal"

# The services the portal calls (a typo in a name fails the type check, not a run).
Service = Literal["iam", "sts", "ecr", "eks", "organizations"]


class Credentials(TypedDict, total=False):
    """Client keyword arguments of an assumed role; empty for the base credentials."""

    aws_access_key_id: str
    aws_secret_access_key: str
    aws_session_token: str


# Every API call made through this module, by "service:Operation" (tests and benchmarks read it).
calls: Counter[str] = Counter()
_calls_lock = threading.Lock()

READ_PREFIXES = ("Get", "List", "Describe")

_T = TypeVar("_T")


class AwsError(Exception):
    """An AWS API error, in plain words: code, message, request id and the call that failed."""

    def __init__(self, code: str, message: str, *, request_id: str = "", operation: str = ""):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id
        self.operation = operation

    @property
    def is_invalid_principal(self) -> bool:
        # IAM eventual consistency: a principal created seconds ago is not yet known to IAM.
        return self.code == "MalformedPolicyDocument" and "principal" in self.message.lower()

    @property
    def is_not_found(self) -> bool:
        return self.code in ("NoSuchEntity", "NoSuchEntityException")


@dataclass(frozen=True)
class Access:
    """How to reach one account: assume `role_arn` (with `external_id`), or base credentials."""

    account_id: str
    role_arn: str = ""
    external_id: str = ""


def _count(event_name: str, **_kwargs: Any) -> None:
    # event_name: "before-call.iam.CreateRole"
    _, service, operation = event_name.split(".", 2)
    with _calls_lock:
        calls[f"{service}:{operation}"] += 1


def is_write(name: str) -> bool:
    """A call that changes something ("iam:CreateRole"); STS sessions and reads do not."""
    service, operation = name.split(":", 1)
    return service != "sts" and not operation.startswith(READ_PREFIXES)


def write_calls() -> int:
    return sum(n for name, n in calls.items() if is_write(name))


def ecr_regions_by_partition() -> dict[str, frozenset[str]]:
    """Regions where ECR exists, per partition, from botocore's endpoint data (accounts/regions.py
    keeps a static copy for the inventory; a test compares the two)."""
    session = boto3.session.Session()
    return {
        partition: frozenset(session.get_available_regions("ecr", partition_name=partition))
        for partition in session.get_available_partitions()
    }


class _Sessions:
    """Thread-safe cache of credentials and clients per Access.

    boto3 sessions may not build clients on several threads at once, and building one takes
    milliseconds of CPU: so a thread builds its accounts' clients (assumed-role credentials) with
    a session it borrows for that (from the idle ones, or a new one), without any lock held, and
    all those sessions share one botocore loader, which parses the service models and endpoint
    data once per process, not once per session or account (~0.15 s each). The clients themselves
    are thread-safe and shared; the lock guards the dictionaries, and the base session's few
    clients (built once per process).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._assumed: dict[tuple[str, str], tuple[Credentials, float, str]] = {}
        self._clients: dict[tuple[str, str, str], Any] = {}
        self._base: boto3.Session | None = None
        self._verified: set[tuple[str, str, str]] = set()
        self._loader: Any = None
        self._events: Any = None
        self._generation = 0  # clear() drops the idle sessions (and those out at the time)
        self._idle: list[boto3.Session] = []

    def clear(self) -> None:
        with self._lock:
            self._assumed.clear()
            self._clients.clear()
            self._base = None
            self._loader = self._events = None
            self._verified.clear()
            self._idle.clear()
            self._generation += 1

    def base(self) -> boto3.Session:
        with self._lock:
            if self._base is None:
                core = botocore.session.get_session()
                self._loader = core.get_component("data_loader")
                self._base = boto3.session.Session(botocore_session=core)
                self._events = core.get_component("event_emitter")
            return self._base

    def _borrow_session(self) -> tuple[boto3.Session, int]:
        """An idle session (or a new one): a session builds on one thread at a time, and is kept for
        the next build, so a run's threads do not each make a session (~6 ms of CPU each)."""
        with self._lock:
            generation = self._generation
            if self._idle:
                return self._idle.pop(), generation
        base = self.base()
        with self._lock:
            loader, events = self._loader, self._events
        core = botocore.session.get_session()
        core.register_component("data_loader", loader)
        session = boto3.session.Session(botocore_session=core, region_name=base.region_name)
        # Its clients copy the handlers registered on the base session, as the base's own would.
        core.register_component("event_emitter", events)
        return session, generation

    def _return_session(self, session: boto3.Session, generation: int) -> None:
        with self._lock:
            if generation == self._generation:  # not one from before clear()
                self._idle.append(session)

    def client_for(self, access: Access, service: Service, region: str = "") -> Any:
        """A client acting in `access.account_id` (in `region` for a regional service such as EKS),
        verified to land there."""
        credentials, landed = self._credentials(access)
        self._verify(access, landed, credentials)
        return self._client(credentials, service, region)

    def client(self, session: boto3.Session, service: Service) -> Any:
        """A client of the base credentials (kept for callers that hold the base session)."""
        return self._client({}, service)

    def _verify(self, access: Access, landed: str, credentials: Credentials) -> None:
        """Refuse to act when the credentials land in another account than the one intended.

        An assumed role's account is in the ARN STS answered with; only the base credentials need
        sts:GetCallerIdentity (once per process), which saves a call per account in every flow.
        """
        key = (access.account_id, access.role_arn, access.external_id)
        if key in self._verified:
            return
        actual = landed or _call(self._client(credentials, "sts"), "get_caller_identity")["Account"]
        if actual != access.account_id:
            how = f"the management role {access.role_arn}" if access.role_arn else "the base credentials"
            raise AwsError(
                "WrongAccount",
                f"{how} act in account {actual}, not {access.account_id}: set the account's management "
                "role (or fix its account id). Nothing was changed.",
                operation="AssumeRole" if landed else "GetCallerIdentity",
            )
        with self._lock:
            self._verified.add(key)

    def _credentials(self, access: Access) -> tuple[Credentials, str]:
        """(client credentials, the account they land in); ({}, "") for the base credentials."""
        if not access.role_arn:
            return {}, ""
        key = (access.role_arn, access.external_id)
        with self._lock:
            cached = self._assumed.get(key)
            if cached and cached[1] - SESSION_REFRESH_MARGIN > time.time():
                return cached[0], cached[2]
        params: dict[str, Any] = {
            "RoleArn": access.role_arn,
            "RoleSessionName": SESSION_NAME,
            "DurationSeconds": SESSION_SECONDS,
        }
        if access.external_id:
            params["ExternalId"] = access.external_id
        answer = _call(self._client({}, "sts"), "assume_role", **params)
        creds = answer["Credentials"]
        credentials: Credentials = {
            "aws_access_key_id": creds["AccessKeyId"],
            "aws_secret_access_key": creds["SecretAccessKey"],
            "aws_session_token": creds["SessionToken"],
        }
        landed = answer["AssumedRoleUser"]["Arn"].split(":")[4]  # arn:aws:sts::ACCOUNT:assumed-role/...
        with self._lock:
            self._assumed[key] = (credentials, creds["Expiration"].timestamp(), landed)
        return credentials, landed

    def _client(self, credentials: Credentials, service: Service, region: str = "") -> Any:
        key = (credentials.get("aws_access_key_id", "base"), service, region)
        client = self._clients.get(key)  # a dict read is atomic: no lock for a cached client
        if client is not None:
            return client
        if not credentials:
            # The base credentials' few clients (once per service and process) come from the base
            # session, which resolves and refreshes those credentials once (an instance role's
            # metadata service is not asked by every thread's session).
            base = self.base()
            with self._lock:
                if key not in self._clients:
                    self._clients[key] = self._build(base, {}, service, region)
                return self._clients[key]
        session, generation = self._borrow_session()
        try:
            built = self._build(session, credentials, service, region)  # no lock held
        finally:
            self._return_session(session, generation)
        with self._lock:  # two threads may have built one: every caller gets the one kept
            return self._clients.setdefault(key, built)

    @staticmethod
    def _build(session: boto3.Session, credentials: Credentials, service: Service, region: str) -> Any:
        client = session.client(
            service,
            config=CLIENT_CONFIG,
            region_name=region or session.region_name or "us-east-1",
            **credentials,
        )
        client.meta.events.register("before-call", _count)
        return client


sessions = _Sessions()


def _call(client: Any, method: str, **params: Any) -> dict[str, Any]:
    try:
        return getattr(client, method)(**params)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise AwsError(
            error.get("Code", "Unknown"),
            error.get("Message", str(exc)),
            request_id=exc.response.get("ResponseMetadata", {}).get("RequestId", ""),
            operation=exc.operation_name,
        ) from None
    except BotoCoreError as exc:
        raise AwsError(type(exc).__name__, str(exc), operation=method) from None


def request_id(response: dict[str, Any]) -> str:
    return response.get("ResponseMetadata", {}).get("RequestId", "")


class Iam:
    """Thin typed IAM calls for one account. Reads return None when the entity does not exist."""

    def __init__(self, access: Access):
        self.access = access
        self.client: IAMClient = sessions.client_for(access, "iam")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        return _call(self.client, method, **params)

    def _maybe(self, method: str, **params: Any) -> dict[str, Any] | None:
        try:
            return self.call(method, **params)
        except AwsError as exc:
            if exc.is_not_found:
                return None
            raise

    # --- reads -------------------------------------------------------------------------------
    def get_role(self, name: str) -> dict[str, Any] | None:
        response = self._maybe("get_role", RoleName=name)
        return response["Role"] if response else None

    def get_user(self, name: str) -> dict[str, Any] | None:
        response = self._maybe("get_user", UserName=name)
        return response["User"] if response else None

    def get_instance_profile(self, name: str) -> dict[str, Any] | None:
        response = self._maybe("get_instance_profile", InstanceProfileName=name)
        return response["InstanceProfile"] if response else None

    def get_policy(self, arn: str) -> dict[str, Any] | None:
        response = self._maybe("get_policy", PolicyArn=arn)
        return response["Policy"] if response else None

    def get_policy_document(self, arn: str, version_id: str) -> dict[str, Any]:
        response = self.call("get_policy_version", PolicyArn=arn, VersionId=version_id)
        return response["PolicyVersion"]["Document"]

    def list_policy_versions(self, arn: str) -> list[dict[str, Any]]:
        return self.call("list_policy_versions", PolicyArn=arn)["Versions"]

    def get_inline_policy(self, kind: str, identity: str, policy_name: str) -> dict[str, Any] | None:
        if kind == "role":
            response = self._maybe("get_role_policy", RoleName=identity, PolicyName=policy_name)
        else:
            response = self._maybe("get_user_policy", UserName=identity, PolicyName=policy_name)
        return response["PolicyDocument"] if response else None

    def list_inline_policies(self, kind: str, identity: str) -> list[str]:
        if kind == "role":
            pages = self.client.get_paginator("list_role_policies").paginate(RoleName=identity)
        else:
            pages = self.client.get_paginator("list_user_policies").paginate(UserName=identity)
        return [name for page in _pages(pages) for name in page["PolicyNames"]]

    def list_attached_policies(self, kind: str, identity: str) -> list[str]:
        if kind == "role":
            pages = self.client.get_paginator("list_attached_role_policies").paginate(RoleName=identity)
        else:
            pages = self.client.get_paginator("list_attached_user_policies").paginate(UserName=identity)
        return [p["PolicyArn"] for page in _pages(pages) for p in page["AttachedPolicies"]]

    def list_access_keys(self, user: str) -> list[dict[str, Any]]:
        return self.call("list_access_keys", UserName=user)["AccessKeyMetadata"]

    def authorization_details_page(self, filters: list[str], max_items: int) -> dict[str, Any] | None:
        """The first page of GetAccountAuthorizationDetails: every role (with its trust, tags,
        attachments and inline documents) and local managed policy (every version's document) of
        the account in one call. None when it is not the whole account (truncated: a large account)."""
        page = self.call("get_account_authorization_details", Filter=filters, MaxItems=max_items)
        return None if page.get("IsTruncated") else page

    def get_open_id_connect_provider(self, arn: str) -> dict[str, Any] | None:
        response = self._maybe("get_open_id_connect_provider", OpenIDConnectProviderArn=arn)
        return response if response else None

    # --- writes (each returns the AWS request id) ---------------------------------------------
    def write(self, method: str, **params: Any) -> str:
        return request_id(self.call(method, **params))


class Eks:
    """Thin EKS calls for one account and region (Pod Identity associations of a cluster)."""

    def __init__(self, access: Access, region: str):
        self.access = access
        self.client = sessions.client_for(access, "eks", region)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        return _call(self.client, method, **params)

    def write(self, method: str, **params: Any) -> str:
        return request_id(self.call(method, **params))

    def pod_identity_association(
        self, cluster: str, namespace: str, service_account: str
    ) -> dict[str, Any] | None:
        """The association of one service account (EKS allows one per service account), described
        (the list answers no role), or None."""
        listed = self.call(
            "list_pod_identity_associations",
            clusterName=cluster,
            namespace=namespace,
            serviceAccount=service_account,
        )["associations"]
        if not listed:
            return None
        return self.call(
            "describe_pod_identity_association", clusterName=cluster, associationId=listed[0]["associationId"]
        )["association"]


def client_for_change(access: Access, action: str, region: str = "") -> Iam | Eks:
    """The client a planned write ("eks:CreatePodIdentityAssociation") is made with."""
    return Eks(access, region) if action.startswith("eks:") else Iam(access)


def _pages(pages: Iterable[_T]) -> Iterator[_T]:
    try:
        yield from pages
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise AwsError(error.get("Code", "Unknown"), error.get("Message", str(exc))) from None


def call(access: Access, service: Service, method: str, **params: Any) -> dict[str, Any]:
    """Any API call in one account (used by the emulator's demo seeding and by audits)."""
    return _call(sessions.client_for(access, service), method, **params)


# Organizations' largest page size for every list call it offers (botocore model: MaxResults 1-20).
ORGANIZATIONS_PAGE_SIZE = 20


class Organizations:
    """Read-only Organizations calls from the management account (or a delegated administrator).

    Every list follows NextToken to the end: Organizations "can occasionally return an empty set of
    results even when more results are available".
    """

    def __init__(self, access: Access):
        self.access = access
        self.client: OrganizationsClient = sessions.client_for(access, "organizations")

    def _all(self, method: str, key: str, *, sized: bool = True, **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        token = ""
        if sized:
            params["MaxResults"] = ORGANIZATIONS_PAGE_SIZE
        while True:
            page = _call(self.client, method, **params, **({"NextToken": token} if token else {}))
            items.extend(page.get(key, []))
            token = page.get("NextToken") or ""
            if not token:
                return items

    def describe_organization(self) -> dict[str, Any]:
        return _call(self.client, "describe_organization")["Organization"]

    def list_roots(self) -> list[dict[str, Any]]:
        return self._all("list_roots", "Roots")

    def list_units(self, parent_id: str) -> list[dict[str, Any]]:
        return self._all("list_organizational_units_for_parent", "OrganizationalUnits", ParentId=parent_id)

    def list_child_accounts(self, parent_id: str) -> list[str]:
        children = self._all("list_children", "Children", ParentId=parent_id, ChildType="ACCOUNT")
        return [child["Id"] for child in children]

    def list_accounts(self) -> list[dict[str, Any]]:
        return self._all("list_accounts", "Accounts")

    def describe_account(self, account_id: str) -> dict[str, Any]:
        return _call(self.client, "describe_account", AccountId=account_id)["Account"]

    def list_tags(self, resource_id: str) -> dict[str, str]:
        tags = self._all("list_tags_for_resource", "Tags", sized=False, ResourceId=resource_id)
        return {tag["Key"]: tag["Value"] for tag in tags}

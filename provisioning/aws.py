"""The only module that talks to AWS (the only boto3/botocore importer).

Sessions: base credentials from the environment/instance role, or per account an assumed
management role (+ external id), cached until shortly before expiry. Clients use botocore's
`standard` retry mode (throttling, 5xx) and explicit timeouts; boto3 itself honours
AWS_ENDPOINT_URL, so the same code runs against moto server. Errors surface as AwsError so no
other module needs botocore.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import boto3
import botocore.credentials
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
    # One client per service serves every account's calls at once (and the base STS client every
    # AssumeRole): botocore's default pool of 10 made the other threads open and drop connections.
    max_pool_connections=64,
)
SESSION_SECONDS = 3600  # a 900 s session would be re-assumed on nearly every call
SESSION_REFRESH_MARGIN = 300
SESSION_NAME = "ecr-broker-portal"

# The services the portal calls (a typo in a name fails the type check, not a run).
Service = Literal["iam", "sts", "ecr", "eks", "organizations"]


# Every API call made through this module, by "service:Operation" (tests and benchmarks read it).
calls: Counter[str] = Counter()
_calls_lock = threading.Lock()

READ_PREFIXES = ("Get", "List", "Describe")


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
    """Thread-safe cache of assumed-role credentials, and of clients per service and region.

    Building a boto3 client takes milliseconds of CPU (half a bulk run's CPU when every account had
    its own), so no account gets one: every account's calls to a service go through one shared
    client, signed with that account's credentials (`_AccountClient`). The clients are thread-safe
    and pool their connections; the lock guards the dictionaries.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._assumed: dict[tuple[str, str], tuple[AccountCredentials, float, str]] = {}
        self._clients: dict[tuple[bool, str, str], Any] = {}
        self._base: boto3.Session | None = None
        self._verified: set[tuple[str, str, str]] = set()

    def clear(self) -> None:
        with self._lock:
            self._assumed.clear()
            self._clients.clear()
            self._base = None
            self._verified.clear()

    def base(self) -> boto3.Session:
        with self._lock:
            if self._base is None:
                self._base = boto3.session.Session(botocore_session=botocore.session.get_session())
            return self._base

    def warm(self) -> None:
        """Build the two clients every run uses now (botocore reads each model once per process):
        the shared IAM client and the base credentials' STS client (every AssumeRole)."""
        self._client("iam", "", acting=True)
        self._client("sts", "", acting=False)

    def client_for(self, access: Access, service: Service, region: str = "") -> Any:
        """A client acting in `access.account_id` (in `region` for a regional service such as EKS),
        verified to land there."""
        credentials, landed = self._credentials(access)
        self._verify(access, landed)
        if credentials is None:
            return self._client(service, region, acting=False)
        return _AccountClient(self._client(service, region, acting=True), credentials)

    def client(self, session: boto3.Session, service: Service) -> Any:
        """A client of the base credentials (kept for callers that hold the base session)."""
        return self._client(service, "", acting=False)

    def _verify(self, access: Access, landed: str) -> None:
        """Refuse to act when the credentials land in another account than the one intended.

        An assumed role's account is in the ARN STS answered with; only the base credentials need
        sts:GetCallerIdentity (once per process), which saves a call per account in every flow.
        """
        key = (access.account_id, access.role_arn, access.external_id)
        if key in self._verified:
            return
        actual = landed or _call(self._client("sts", "", acting=False), "get_caller_identity")["Account"]
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

    def _credentials(self, access: Access) -> tuple[AccountCredentials | None, str]:
        """(the assumed role's credentials, the account they land in); (None, "") for the base ones."""
        if not access.role_arn:
            return None, ""
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
        answer = _call(self._client("sts", "", acting=False), "assume_role", **params)
        creds = answer["Credentials"]
        credentials = AccountCredentials(
            creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]
        )
        landed = answer["AssumedRoleUser"]["Arn"].split(":")[4]  # arn:aws:sts::ACCOUNT:assumed-role/...
        with self._lock:
            self._assumed[key] = (credentials, creds["Expiration"].timestamp(), landed)
        return credentials, landed

    def _client(self, service: Service, region: str, *, acting: bool) -> Any:
        """The process's client of `service` in `region`: of the base credentials, or (acting) the
        one every assumed role's calls share, which holds no credentials of its own."""
        key = (acting, service, region)
        client = self._clients.get(key)  # a dict read is atomic: no lock for a cached client
        if client is not None:
            return client
        base = self.base()
        with self._lock:  # a few clients per process: building them under the lock costs nothing
            if key not in self._clients:
                self._clients[key] = self._build(base, service, region, acting=acting)
            return self._clients[key]

    @staticmethod
    def _build(session: boto3.Session, service: Service, region: str, *, acting: bool) -> Any:
        # The acting client's own keys are placeholders that sign nothing: _sign_as_acting refuses a
        # call made outside an _AccountClient, so the base credentials never act by mistake.
        placeholder = "unset" if acting else None  # None: the base session's credentials
        client = session.client(
            service,
            config=CLIENT_CONFIG,
            region_name=region or session.region_name or "us-east-1",
            aws_access_key_id=placeholder,
            aws_secret_access_key=placeholder,
        )
        if acting:
            client.meta.events.register("before-call", _sign_as_acting)
        client.meta.events.register("before-call", _count)
        return client


class AccountCredentials(botocore.credentials.Credentials):
    """An assumed role's keys: what one account's calls on a shared client are signed with."""


# The credentials of the account the current call acts in; set only by _AccountClient, per call.
_acting: contextvars.ContextVar[AccountCredentials] = contextvars.ContextVar("acting")


def _sign_as_acting(context: dict[str, Any], **_kwargs: Any) -> None:
    """before-call of a shared client: sign the request with the calling account's credentials
    (botocore's per-request credentials), or refuse it before anything is sent."""
    credentials = _acting.get(None)
    if credentials is None:
        raise AwsError("NoCredentials", "a shared client was called outside an account: nothing was sent")
    context.setdefault("signing", {})["request_credentials"] = credentials


class _AccountClient:
    """One account's handle on a shared client: each API call is made as that account. Paginators
    are not offered (their pages would be fetched outside the call): list calls page by hand."""

    def __init__(self, shared: Any, credentials: AccountCredentials) -> None:
        self._shared = shared
        self._credentials = credentials
        self.meta = shared.meta
        self.exceptions = shared.exceptions

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._shared, name)
        if name.startswith("_") or not callable(method) or name in ("get_paginator", "get_waiter"):
            raise AttributeError(f"{name} is not an API call of one account's client")

        def as_account(**params: Any) -> Any:
            token = _acting.set(self._credentials)
            try:
                return method(**params)
            finally:
                _acting.reset(token)

        return as_account


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
            return self._all("list_role_policies", "PolicyNames", RoleName=identity)
        return self._all("list_user_policies", "PolicyNames", UserName=identity)

    def list_attached_policies(self, kind: str, identity: str) -> list[str]:
        if kind == "role":
            attached = self._all("list_attached_role_policies", "AttachedPolicies", RoleName=identity)
        else:
            attached = self._all("list_attached_user_policies", "AttachedPolicies", UserName=identity)
        return [p["PolicyArn"] for p in attached]

    def _all(self, method: str, key: str, **params: Any) -> list[Any]:
        return _every_page(self.client, method, key, "Marker", **params)

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


def _every_page(client: Any, method: str, key: str, marker: str, **params: Any) -> list[Any]:
    """The items of every page of a list call: the `marker` field of each answer, as long as there
    is one, asks for the next page (IAM's Marker, Organizations' NextToken)."""
    items: list[Any] = []
    while True:
        page = _call(client, method, **params)
        items.extend(page.get(key, []))
        if not page.get(marker):
            return items
        params[marker] = page[marker]


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
        if sized:
            params["MaxResults"] = ORGANIZATIONS_PAGE_SIZE
        return _every_page(self.client, method, key, "NextToken", **params)

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

"""Use cases of the inventory itself (HackSoft style: keyword-only, validated with full_clean()).

Building and creating agents and accounts, the desired ExternalIds and the agent's member roles,
handing out broker files (audited). Nothing here talks to AWS or imports the engine
(`provisioning`): the engine imports the inventory, never the other way round.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from portal import audit
from portal.audit import Actor

from . import renderers, universal_renderers
from .choices import (
    DEFAULT_K8S_NAMESPACE,
    DEFAULT_K8S_SERVICE_ACCOUNT,
    DEFAULT_ROLE_AGENT_NAME,
    DEFAULT_USER_AGENT_NAME,
    EKS_RUNTIMES,
    AgentKind,
    AgentRuntime,
    BrokerMode,
    BrokerServer,
    BrokerStatus,
    Lifecycle,
)
from .models import (
    RUNTIME_PARAMETERS,
    AgentIdentity,
    BrokerInstance,
    EcrAccount,
    ExternalId,
    SnykConnection,
    SnykDeployment,
)

# Accounts whose service role the agent's permissions must list.
MEMBER_STATUSES = (Lifecycle.PENDING, Lifecycle.ACTIVE, Lifecycle.FAILED)


def agent_build(
    *,
    name: str,
    kind: str,
    account_id: str,
    iam_name: str = "",
    policy_name: str = "",
    management_role_arn: str = "",
    management_external_id: str = "",
    broker_mode: str = "",
    **runtime: str,
) -> AgentIdentity:
    """An unsaved, validated agent (for --plan and for agent_create).

    `runtime`: runtime, cluster_arn, oidc_issuer, oidc_thumbprint, namespace, service_account."""
    agent = AgentIdentity(
        name=name,
        kind=kind,
        broker_mode=broker_mode or BrokerMode.CLASSIC,
        account_id=account_id,
        iam_name=iam_name or (DEFAULT_USER_AGENT_NAME if kind == AgentKind.USER else DEFAULT_ROLE_AGENT_NAME),
        management_role_arn=management_role_arn,
        management_external_id=management_external_id,
    )
    if policy_name:
        agent.policy_name = policy_name
    _apply_runtime(agent, runtime)
    agent.full_clean()
    return agent


RUNTIME_FIELDS = ("runtime", "cluster_arn", "oidc_issuer", "oidc_thumbprint", "namespace", "service_account")


def _apply_runtime(agent: AgentIdentity, fields: dict[str, str]) -> None:
    unknown = set(fields) - set(RUNTIME_FIELDS)
    if unknown:
        raise TypeError(f"unknown agent fields: {', '.join(sorted(unknown))}")
    for name, value in fields.items():
        setattr(agent, name, value if name != "runtime" else (value or AgentRuntime.EC2))
    if agent.runtime in EKS_RUNTIMES:  # the Helm releases' namespace and the chart's default name
        agent.namespace = agent.namespace or DEFAULT_K8S_NAMESPACE
        agent.service_account = agent.service_account or DEFAULT_K8S_SERVICE_ACCOUNT


def agent_preview_runtime(*, agent: AgentIdentity, runtime: dict[str, str]) -> dict[str, str]:
    """Give the (unsaved) agent another runtime or runtime parameters, validated whole; on bad input
    the agent is left as it was. Parameters the new runtime does not take are cleared, the others
    kept unless given. Returns the fields as they were."""
    before = {name: getattr(agent, name) for name in RUNTIME_FIELDS}
    new = runtime.get("runtime") or agent.runtime
    if new != agent.runtime and new in AgentRuntime.values:
        for name in set(RUNTIME_FIELDS[1:]) - set(RUNTIME_PARAMETERS[AgentRuntime(new)]):
            setattr(agent, name, "")
    _apply_runtime(agent, runtime)
    try:
        agent.full_clean()
    except ValidationError:
        for name, value in before.items():
            setattr(agent, name, value)
        raise
    return before


def agent_set_runtime(*, agent: AgentIdentity, runtime: dict[str, str], user: Actor = None) -> bool:
    """Move a role agent to another runtime (or change its runtime's parameters), as
    `agent_preview_runtime` does, and save it. False when nothing changes. The trust follows in the
    agent's next setup run, previewed like any other."""
    before = agent_preview_runtime(agent=agent, runtime=runtime)
    after = {name: getattr(agent, name) for name in RUNTIME_FIELDS}
    if after == before:
        return False
    agent.save(update_fields=[*RUNTIME_FIELDS, "updated_at"])
    changes = {k: [before[k], after[k]] for k in RUNTIME_FIELDS if before[k] != after[k]}
    audit.record(user=user, action="agent.runtime", obj=agent, arn=agent.arn, changes=changes)
    return True


def agent_create(*, user: Actor = None, **fields: Any) -> AgentIdentity:
    agent = agent_build(**fields)
    agent.save()
    audit.record(user=user, action="agent.create", obj=agent, arn=agent.arn)
    return agent


def agent_set_broker_mode(*, agent: AgentIdentity, broker_mode: str, user: Actor = None) -> bool:
    """Switch how the agent's accounts reach Snyk; False when it already is in that mode.

    Nothing is sent to Snyk here: the next sync of the agent's accounts creates (or removes) the
    Universal Broker connections.
    """
    if broker_mode not in BrokerMode.values:
        choices = ", ".join(BrokerMode.values)
        raise ValidationError({"broker_mode": f"{broker_mode!r} is not one of {choices}."})
    if agent.broker_mode == broker_mode:
        return False
    before = agent.broker_mode
    with transaction.atomic():
        AgentIdentity.objects.filter(pk=agent.pk).update(broker_mode=broker_mode)
        if broker_mode == BrokerMode.CLASSIC:
            # Back to classic: each account's broker clients are needed again, so are their files.
            BrokerInstance.objects.filter(account__agent=agent).update(classic_retired_at=None)
        agent.broker_mode = broker_mode
        audit.record(user=user, action="agent.broker_mode", obj=agent, before=before, after=broker_mode)
    return True


def brokers_retire_classic(brokers: Iterable[BrokerInstance], *, user: Actor = None) -> int:
    """Mark retired the classic broker of each broker whose Universal Broker integration exists
    (its connection opens the tunnel now); how many were marked. Never one without integration."""
    retired = 0
    for broker in brokers:
        integrated = SnykConnection.objects.filter(broker=broker).exclude(integration_id="").exists()
        if broker.classic_retired_at is not None or not integrated:
            continue
        now = timezone.now()
        if BrokerInstance.objects.filter(pk=broker.pk, classic_retired_at__isnull=True).update(
            classic_retired_at=now
        ):
            broker.classic_retired_at = now
            retired += 1
            audit.record(
                user=user,
                action="broker.classic_retired",
                account_id=broker.account.account_id,
                obj=broker,
                region=broker.region,
            )
    return retired


def account_build(
    *,
    agent: AgentIdentity,
    account_id: str,
    regions: Iterable[str],
    alias: str = "",
    external_id: str = "",
    management_role_arn: str = "",
    management_external_id: str = "",
    broker_client_url: str = "",
    cr_agent_url: str = "",
    broker_token: str = "",
    broker_server_url: str = "",
    checked_new: bool = False,
) -> tuple[EcrAccount, ExternalId, list[BrokerInstance]]:
    """Unsaved, validated rows for a new ECR account. Errors carry the field names of the form.

    `checked_new`: the caller checked, for many rows in one query, that the account id is not in
    the portal yet and the agent exists (a bulk file): not queried again for each row (the
    database's unique constraint still refuses an account added meanwhile)."""
    errors: dict[str, list] = {}
    account = EcrAccount(
        account_id=account_id,
        alias=alias,
        agent=agent,
        management_role_arn=management_role_arn,
        management_external_id=management_external_id,
    )
    try:
        if checked_new:
            account.full_clean(exclude=["agent"], validate_unique=False)
        else:
            account.full_clean()
    except ValidationError as exc:
        errors.update(exc.message_dict)
    ext = ExternalId(account=account, value=external_id or ExternalId.generate())
    try:
        ext.full_clean(exclude=["account"])
    except ValidationError as exc:
        errors.setdefault("external_id", []).extend(exc.message_dict.get("value", exc.messages))
    regions = list(dict.fromkeys(r.strip() for r in regions if r.strip()))
    if not regions:
        errors.setdefault("regions", []).append("Choose at least one region.")
    brokers = []
    for region in regions:
        broker = BrokerInstance(
            account=account,
            region=region,
            broker_token=broker_token or BrokerInstance.generate_token(),
            broker_client_url=broker_client_url,
            cr_agent_url=cr_agent_url,
            broker_server_url=broker_server_url or BrokerServer.DEFAULT,
        )
        try:
            # Its constraints hold by construction (the default port, regions made distinct above):
            # checking them would be a query per broker.
            broker.full_clean(exclude=["account"], validate_constraints=False)
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                key = "regions" if field == "region" else field
                errors.setdefault(key, []).extend(m for m in messages if m not in errors.get(key, []))
        brokers.append(broker)
    if errors:
        raise ValidationError(errors)
    return account, ext, brokers


def account_create(*, user: Actor = None, **fields: Any) -> EcrAccount:
    """Save a draft account with its ExternalId and brokers (nothing sent to AWS)."""
    account, ext, brokers = account_build(**fields)
    return account_save(account, ext, brokers, user=user)


@transaction.atomic
def account_save(
    account: EcrAccount, ext: ExternalId, brokers: list[BrokerInstance], *, user: Actor = None
) -> EcrAccount:
    """Save the rows account_build made (validated there), recording who created the account."""
    account.save()
    ext.account = account
    ext.save()
    for broker in brokers:
        broker.account = account
        broker.save()
    audit.record(
        user=user,
        action="account.create",
        account_id=account.account_id,
        obj=account,
        regions=[b.region for b in brokers],
    )
    return account


@transaction.atomic
def accounts_save_many(
    built: list[tuple[EcrAccount, ExternalId, list[BrokerInstance]]], *, status: str, user: Actor = None
) -> list[EcrAccount]:
    """Save many accounts account_build made (a bulk file's rows), in `status`, in a constant number
    of queries whatever their number; each creation recorded as account_save records it."""
    accounts = []
    for account, _, _ in built:
        account.status = status
        accounts.append(account)
    EcrAccount.objects.bulk_create(accounts)
    for account, ext, brokers in built:  # the primary keys are known now
        ext.account = account
        for broker in brokers:
            broker.account = account
    ExternalId.objects.bulk_create([ext for _, ext, _ in built])
    BrokerInstance.objects.bulk_create([broker for _, _, brokers in built for broker in brokers])
    audit.record_many(
        [
            audit.entry(
                user=user,
                action="account.create",
                account_id=account.account_id,
                obj=account,
                regions=[b.region for b in brokers],
            )
            for account, _, brokers in built
        ]
    )
    return accounts


def desired_external_ids(account: EcrAccount) -> list[str]:
    return [e.value for e in account.external_ids.all()]


def agent_member_arns(agent: AgentIdentity, *, plus: EcrAccount | None = None) -> dict[str, str]:
    """Account id -> service role ARN for every account the agent's permissions must list."""
    arns = {
        a.account_id: a.service_role_arn
        for a in agent.accounts.filter(status__in=MEMBER_STATUSES).only(
            "agent_id", "account_id", "service_role_name"
        )  # agent_id: the manager sets it on each row
    }
    if plus is not None:
        arns[plus.account_id] = plus.service_role_arn
    return arns


def host_brokers(broker: BrokerInstance) -> list[BrokerInstance]:
    """The brokers a docker script for `broker`'s host runs: same agent, same agent URL, not retired."""
    return list(
        BrokerInstance.objects.filter(
            account__agent_id=broker.account.agent_id, cr_agent_url=broker.cr_agent_url
        )
        .exclude(status=BrokerStatus.RETIRED)
        .filter(classic_retired_at__isnull=True)
        .select_related("account__agent")
        .prefetch_related("account__external_ids")
        .order_by("account__account_id", "region")
    )


def broker_file_download(*, broker: BrokerInstance, fmt: str, user: Actor = None) -> renderers.BrokerFile:
    """Render a token-holding broker file and record who took it, once per broker it holds.

    Raises renderers.BrokerFileError (nothing recorded) when the file cannot be made.
    """
    hosted = host_brokers(broker) if fmt == "docker" else []
    broker_file = renderers.render(broker, fmt, host_brokers=hosted)
    for held in broker_file.brokers:
        audit.record(
            user=user,
            action="broker.download",
            account_id=held.account.account_id,
            obj=held,
            region=held.region,
            format=fmt,
            filename=broker_file.filename,
            external_id=renderers.current_external_id(held.account),
        )
    return broker_file


def deployment_file_download(
    *, deployment: SnykDeployment, fmt: str, user: Actor = None
) -> renderers.BrokerFile:
    """Render a Universal Broker deployment's file and record who took it (as broker files are).

    Raises renderers.BrokerFileError (nothing recorded) when the file cannot be made.
    """
    broker_file = universal_renderers.render(deployment, fmt)
    audit.record(
        user=user,
        action="deployment.download",
        obj=deployment,
        deployment_id=deployment.deployment_id,
        format=fmt,
        filename=broker_file.filename,
        connections=deployment.connections.count(),
    )
    return broker_file

"""Use cases shared by the browser, the command line and the tasks (HackSoft style: keyword-only).

Every input is validated with full_clean() before anything is saved or sent to AWS; a bad value
raises django.core.exceptions.ValidationError naming the field. Runs are enqueued only after
the transaction that created them commits, with the run id as the task's only argument.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F

from accounts.choices import (
    DEFAULT_ROLE_AGENT_NAME,
    DEFAULT_USER_AGENT_NAME,
    AgentKind,
    BrokerServer,
    Lifecycle,
)
from accounts.models import AgentIdentity, BrokerInstance, EcrAccount, ExternalId
from portal import audit

from . import aws, planner
from .choices import ACTIVE_RUN_STATUSES, RunKind
from .models import Run

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
) -> AgentIdentity:
    """An unsaved, validated agent (for --plan and for agent_create)."""
    agent = AgentIdentity(
        name=name,
        kind=kind,
        account_id=account_id,
        iam_name=iam_name or (DEFAULT_USER_AGENT_NAME if kind == AgentKind.USER else DEFAULT_ROLE_AGENT_NAME),
        management_role_arn=management_role_arn,
        management_external_id=management_external_id,
    )
    if policy_name:
        agent.policy_name = policy_name
    agent.full_clean()
    return agent


def agent_create(*, user=None, **fields: Any) -> AgentIdentity:
    agent = agent_build(**fields)
    agent.save()
    audit.record(user=user, action="agent.create", obj=agent, arn=agent.arn)
    return agent


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
) -> tuple[EcrAccount, ExternalId, list[BrokerInstance]]:
    """Unsaved, validated rows for a new ECR account. Errors carry the field names of the form."""
    errors: dict[str, list] = {}
    account = EcrAccount(
        account_id=account_id,
        alias=alias,
        agent=agent,
        management_role_arn=management_role_arn,
        management_external_id=management_external_id,
    )
    try:
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
            broker.full_clean(exclude=["account"])
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                key = "regions" if field == "region" else field
                errors.setdefault(key, []).extend(m for m in messages if m not in errors.get(key, []))
        brokers.append(broker)
    if errors:
        raise ValidationError(errors)
    return account, ext, brokers


@transaction.atomic
def account_create(*, user=None, **fields: Any) -> EcrAccount:
    """Save a draft account with its ExternalId and brokers (nothing sent to AWS)."""
    account, ext, brokers = account_build(**fields)
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


def desired_external_ids(account: EcrAccount) -> list[str]:
    return [e.value for e in account.external_ids.all()]


def agent_member_arns(agent: AgentIdentity, *, plus: EcrAccount | None = None) -> dict[str, str]:
    """Account id -> service role ARN for every account the agent's permissions must list."""
    arns = {
        a.account_id: a.service_role_arn
        for a in agent.accounts.filter(status__in=MEMBER_STATUSES).only("account_id", "service_role_name")
    }
    if plus is not None:
        arns[plus.account_id] = plus.service_role_arn
    return arns


def plan_onboarding(account: EcrAccount, external_ids: list[str] | None = None) -> planner.Plan:
    """Read-only preview of onboarding `account` (saved draft or unsaved): its resources, then the agent's."""
    ids = external_ids if external_ids is not None else desired_external_ids(account)
    plan = _plan_agent_identity_if_new(account.agent)
    plan.extend(planner.plan_account(account, ids))
    plan.extend(planner.plan_agent_permissions(account.agent, agent_member_arns(account.agent, plus=account)))
    return plan


def _plan_agent_identity_if_new(agent: AgentIdentity) -> planner.Plan:
    """The engine creates an agent that is not set up yet before its first account: preview that too."""
    return planner.plan_agent_identity(agent) if agent.status != Lifecycle.ACTIVE else planner.Plan()


def plan_reconcile(accounts: Iterable[EcrAccount]) -> planner.Plan:
    """Preview of reconciling these accounts: each account's resources, each agent's permissions once.

    Removed accounts lose the agent's permission before their role is deleted, as the engine does.
    """
    accounts = list(accounts)
    agents = {a.agent_id: a.agent for a in accounts}
    agent_plan = planner.Plan()
    for agent in agents.values():
        agent_plan.extend(planner.plan_agent_permissions(agent, agent_member_arns(agent)))
    removing = [a for a in accounts if a.status == Lifecycle.REMOVED]
    plan = planner.Plan()
    for agent in {a.agent_id: a.agent for a in accounts if a.status != Lifecycle.REMOVED}.values():
        plan.extend(_plan_agent_identity_if_new(agent))
    if removing:
        plan.extend(agent_plan)
    for account in accounts:
        if account.status == Lifecycle.REMOVED:
            plan.extend(planner.plan_account(account, [], remove=True))
        else:
            plan.extend(planner.plan_account(account, desired_external_ids(account)))
    return plan if removing else plan.extend(agent_plan)


def plan_agent(agent: AgentIdentity) -> planner.Plan:
    plan = planner.plan_agent_identity(agent)
    if agent.pk:
        plan.extend(planner.plan_agent_permissions(agent, agent_member_arns(agent)))
    plan.about_agent = True
    return plan


def _bump_agent_generation(agent_id: int) -> None:
    AgentIdentity.objects.filter(pk=agent_id).update(policy_generation=F("policy_generation") + 1)


def run_request(
    *,
    kind: str,
    user=None,
    agent: AgentIdentity | None = None,
    accounts: Iterable[EcrAccount] = (),
    options: dict[str, Any] | None = None,
    request_id: str = "",
    enqueue: bool = True,
) -> Run:
    """Create a queued Run; its task is sent after the surrounding transaction commits."""
    accounts = list(accounts)
    with transaction.atomic():
        run = Run.objects.create(
            kind=kind,
            agent=agent or (accounts[0].agent if accounts else None),
            targets=[a.account_id for a in accounts],
            options=options or {},
            requested_by=user if user is not None and user.is_authenticated else None,
            requested_by_name=user.get_username() if user is not None and user.is_authenticated else "cli",
            request_id=request_id,
            task_id=str(uuid.uuid4()) if enqueue else "",
        )
        if accounts:
            run.accounts.set(accounts)
        audit.record(
            user=user,
            action=f"run.request.{kind}",
            account_id=accounts[0].account_id if len(accounts) == 1 else "",
            obj=run,
            run_id=run.pk,
            targets=run.targets[:50],
        )
        if enqueue:
            transaction.on_commit(lambda: _send(run))
    return run


def _send(run: Run) -> None:
    from .tasks import execute_run

    execute_run.apply_async(args=[run.pk], task_id=run.task_id)


def account_onboard(*, account: EcrAccount, user=None, enqueue: bool = True, **run_fields: Any) -> Run:
    """Confirm a draft (or retry a failed) account: it joins the agent's permissions; a run applies it."""
    with transaction.atomic():
        if account.status in (Lifecycle.DRAFT, Lifecycle.REMOVED):
            EcrAccount.objects.filter(pk=account.pk).update(status=Lifecycle.PENDING)
            account.status = Lifecycle.PENDING
            _bump_agent_generation(account.agent_id)
        return run_request(kind=RunKind.ONBOARD, user=user, accounts=[account], enqueue=enqueue, **run_fields)


def account_reconcile(
    *, accounts: list[EcrAccount], user=None, enqueue: bool = True, **run_fields: Any
) -> Run:
    return run_request(kind=RunKind.RECONCILE, user=user, accounts=accounts, enqueue=enqueue, **run_fields)


def agent_setup(*, agent: AgentIdentity, user=None, enqueue: bool = True, **run_fields: Any) -> Run:
    return run_request(kind=RunKind.AGENT, user=user, agent=agent, enqueue=enqueue, **run_fields)


def active_run_for(account: EcrAccount) -> Run | None:
    return account.runs.filter(status__in=ACTIVE_RUN_STATUSES).first()


def agent_create_access_key(*, agent: AgentIdentity, user=None) -> dict[str, str]:
    """Create an access key for a user agent and return it once. It is never stored or logged."""
    if agent.kind != AgentKind.USER:
        raise ValidationError({"kind": "Access keys exist only for user agents."})
    iam = aws.Iam(planner.agent_access(agent))
    if len(iam.list_access_keys(agent.iam_name)) >= 2:
        raise ValidationError(
            {"agent": "IAM allows 2 access keys per user and this user has 2: delete one in IAM first."}
        )
    key = iam.call("create_access_key", UserName=agent.iam_name)["AccessKey"]
    audit.record(user=user, action="agent.access_key.create", obj=agent, key_suffix=key["AccessKeyId"][-4:])
    return {"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}


def run_cancel(*, run: Run, user=None) -> Run:
    """Stop a run: a queued one never starts; a running one stops before its next account (an audit
    before its next read, storing nothing).

    Operations already made stay (and stay recorded); a later run plans from what AWS has then.
    """
    from django.utils import timezone

    from .choices import RunStatus

    if not run.is_active:
        raise ValidationError({"run": f"Run {run.pk} is {run.status}: there is nothing to cancel."})
    Run.objects.filter(pk=run.pk).update(cancel_requested=True)
    # Queued: nobody has claimed it, so it ends here (a later delivery finds it not queued).
    Run.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
        status=RunStatus.CANCELLED, finished_at=timezone.now(), explanation="Cancelled before it started."
    )
    audit.record(user=user, action="run.cancel", obj=run, run_id=run.pk)
    run.refresh_from_db()
    return run

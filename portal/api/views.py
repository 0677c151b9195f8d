"""The API's views: thin, as the pages' are. Reads use the pages' selectors; every write goes
through the same service the page or command calls, with the same checks (a preview's digest, the
run lock), so no rule exists twice. `required_permissions` names the role permission per method."""

from __future__ import annotations

import time
from typing import Any, ClassVar

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import renderers
from accounts import selectors as inventory
from accounts import services as account_services
from accounts.forms import OnboardForm
from accounts.models import AgentIdentity, BrokerInstance, EcrAccount
from portal import audit
from portal.models import ApiToken
from portal.roles import CAN_AUDIT, CAN_DOWNLOAD, CAN_MANAGE_AGENTS, CAN_ONBOARD
from provisioning import audit_selectors, services
from provisioning import selectors as run_selectors
from provisioning.audit.catalogue import public_finding
from provisioning.audit.services import audit_request
from provisioning.choices import RunKind, RunStatus
from provisioning.models import Operation, Run

from . import serializers as s
from .plans import account_preview, agent_preview, run_in_progress, start_confirmed
from .problems import Problem, validation_problem

VIEW_AGENTS = "accounts.view_agentidentity"
VIEW_ACCOUNTS = "accounts.view_ecraccount"
VIEW_BROKERS = "accounts.view_brokerinstance"
VIEW_RUNS = "provisioning.view_run"
VIEW_AUDIT = "portal.view_auditentry"


class PortalApiView(APIView):
    required_permissions: ClassVar[dict[str, str]] = {}

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Any:
        # Tokens, not the login page, guard the API: LoginRequiredMiddleware would redirect to it.
        return login_not_required(super().as_view(**initkwargs))

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        context = audit.set_api_token("")
        try:
            return super().dispatch(request, *args, **kwargs)
        finally:
            audit.reset_api_token(context)

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if isinstance(request.auth, ApiToken):
            audit.set_api_token(request.auth.name)  # every audit row of this request names it


class PortalListView(PortalApiView, generics.ListAPIView):
    pass


class PortalDetailView(PortalApiView, generics.RetrieveAPIView):
    pass


# --- agents ----------------------------------------------------------------------------------


@extend_schema_view(get=extend_schema(summary="Agent identities"))
class AgentList(PortalListView):
    required_permissions = {"GET": VIEW_AGENTS}
    serializer_class = s.AgentSerializer
    queryset = AgentIdentity.objects.order_by("name")


@extend_schema_view(get=extend_schema(summary="One agent identity"))
class AgentDetail(PortalDetailView):
    required_permissions = {"GET": VIEW_AGENTS}
    serializer_class = s.AgentSerializer
    queryset = AgentIdentity.objects.all()


class AgentPreview(PortalApiView):
    required_permissions = {"POST": CAN_MANAGE_AGENTS}

    @extend_schema(request=None, responses={200: s.PreviewSerializer}, summary="Plan an agent's setup")
    def post(self, request: Request, pk: int) -> Response:
        return Response(agent_preview(get_object_or_404(AgentIdentity, pk=pk)).body())


class AgentApply(PortalApiView):
    required_permissions = {"POST": CAN_MANAGE_AGENTS}

    @extend_schema(
        request=s.ApplySerializer, responses={202: s.RunSerializer}, summary="Apply a previewed setup"
    )
    def post(self, request: Request, pk: int) -> Response:
        agent = get_object_or_404(AgentIdentity, pk=pk)
        digest = _digest(request)
        run = start_confirmed(
            agent_preview(agent),
            digest,
            lambda options: services.agent_setup(
                agent=agent,
                user=request.user,
                request_id=request.request_id,
                options=options,
            ),
        )
        return _started(run)


# --- accounts --------------------------------------------------------------------------------


@extend_schema_view(
    get=extend_schema(summary="ECR accounts (filters as the Accounts page: status, agent, region, q, drift)")
)
class AccountList(PortalListView):
    required_permissions = {"GET": VIEW_ACCOUNTS, "POST": CAN_ONBOARD}
    serializer_class = s.AccountSerializer

    def get_queryset(self) -> QuerySet[EcrAccount]:
        filters = inventory.AccountFilters.from_query(self.request.query_params)
        return inventory.account_queryset(filters).prefetch_related("external_ids", "brokers__account")

    @extend_schema(
        request=s.AccountCreateSerializer,
        responses={201: s.AccountSerializer},
        summary="Save a draft account (the wizard's first step: nothing is sent to AWS)",
    )
    def post(self, request: Request) -> Response:
        body = s.AccountCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        form = OnboardForm(data=body.validated_data)
        if not form.is_valid():
            raise validation_problem({name: [str(e) for e in errors] for name, errors in form.errors.items()})
        account = account_services.account_create(user=request.user, **form.service_fields())
        account = inventory.account_get(account.account_id)
        return Response(s.AccountSerializer(account).data, status=status.HTTP_201_CREATED)


@extend_schema_view(get=extend_schema(summary="One ECR account with its ExternalIds and brokers"))
class AccountDetail(PortalDetailView):
    required_permissions = {"GET": VIEW_ACCOUNTS}
    serializer_class = s.AccountSerializer
    lookup_field = "account_id"
    queryset = EcrAccount.objects.select_related("agent").prefetch_related("external_ids", "brokers__account")


class AccountPreview(PortalApiView):
    required_permissions = {"POST": CAN_ONBOARD}

    @extend_schema(
        request=None,
        responses={200: s.PreviewSerializer},
        summary="Plan what confirming the account's page would do (onboarding, else reconcile)",
    )
    def post(self, request: Request, account_id: str) -> Response:
        return Response(account_preview(inventory.account_get(account_id)).body())


class AccountApply(PortalApiView):
    required_permissions = {"POST": CAN_ONBOARD}

    @extend_schema(
        request=s.ApplySerializer,
        responses={
            202: s.RunSerializer,
            409: OpenApiResponse(description="Stale digest or a run in progress"),
        },
        summary="Start the previewed plan; 409 with the new plan when it changed since",
    )
    def post(self, request: Request, account_id: str) -> Response:
        account = inventory.account_get(account_id)
        digest = _digest(request)
        active = services.active_run_for(account)
        if active is not None:
            raise run_in_progress(active)
        preview = account_preview(account)
        fields: dict[str, Any] = {"user": request.user, "request_id": request.request_id}
        if preview.action == "onboard":
            run = start_confirmed(
                preview, digest, lambda o: services.account_onboard(account=account, options=o, **fields)
            )
        else:
            run = start_confirmed(
                preview, digest, lambda o: services.account_reconcile(accounts=[account], options=o, **fields)
            )
        return _started(run)


# --- brokers ---------------------------------------------------------------------------------


@extend_schema_view(get=extend_schema(summary="Broker instances (tokens masked)"))
class BrokerList(PortalListView):
    required_permissions = {"GET": VIEW_BROKERS}
    serializer_class = s.BrokerSerializer
    queryset = BrokerInstance.objects.select_related("account").order_by("account__account_id", "region")


@extend_schema_view(get=extend_schema(summary="One broker instance (token masked)"))
class BrokerDetail(PortalDetailView):
    required_permissions = {"GET": VIEW_BROKERS}
    serializer_class = s.BrokerSerializer
    queryset = BrokerInstance.objects.select_related("account")


class BrokerFile(PortalApiView):
    """The broker's page's download: same permission, same service, same audit row."""

    required_permissions = {"GET": CAN_DOWNLOAD}

    @extend_schema(
        responses={
            **{
                (200, media): OpenApiResponse(
                    OpenApiTypes.STR, description="The file (it holds the broker token)"
                )
                for media in ("text/plain", "application/yaml", "text/x-shellscript")
            },
            409: OpenApiResponse(description="No file can be made for this broker now (the page's reason)"),
        },
        parameters=[OpenApiParameter("fmt", str, OpenApiParameter.PATH, enum=list(renderers.FORMATS))],
        summary="Download a broker file: env, helm or docker",
    )
    def get(self, request: Request, pk: int, fmt: str) -> HttpResponse:
        broker = inventory.broker_get(pk)
        if fmt not in renderers.FORMATS:
            raise validation_problem({"fmt": [f"Choose one of {', '.join(renderers.FORMATS)}."]})
        try:
            broker_file = account_services.broker_file_download(broker=broker, fmt=fmt, user=request.user)
        except renderers.BrokerFileError as exc:
            raise Problem(status=409, code="no-file", detail=f"No file for this broker: {exc}") from None
        response = HttpResponse(broker_file.content, content_type=broker_file.content_type)
        response["Content-Disposition"] = f'attachment; filename="{broker_file.filename}"'
        response["Cache-Control"] = "no-store"
        return response


# --- runs ------------------------------------------------------------------------------------


@extend_schema_view(get=extend_schema(summary="Runs, newest first"))
class RunList(PortalListView):
    required_permissions = {"GET": VIEW_RUNS}
    serializer_class = s.RunSerializer

    @extend_schema(
        parameters=[
            OpenApiParameter("kind", str, enum=RunKind.values),
            OpenApiParameter("status", str, enum=RunStatus.values),
        ]
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[Run]:
        return run_selectors.run_queryset(run_selectors.RunFilters.from_query(self.request.query_params))


@extend_schema_view(get=extend_schema(summary="One run; ?wait=N long-polls until it ends"))
class RunDetail(PortalApiView):
    required_permissions = {"GET": VIEW_RUNS}

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "wait", int, description="Long poll: answer when the run ends or after this many seconds."
            )
        ],
        responses={200: s.RunSerializer},
    )
    def get(self, request: Request, pk: int) -> Response:
        run = run_selectors.run_get(pk)
        deadline = time.monotonic() + _wait_seconds(request)
        while run.is_active and time.monotonic() < deadline:
            time.sleep(0.5)
            run.refresh_from_db()
        return Response(s.RunSerializer(run).data)


@extend_schema_view(get=extend_schema(summary="A run's operations in order, paginated"))
class RunOperations(PortalListView):
    required_permissions = {"GET": VIEW_RUNS}
    serializer_class = s.OperationSerializer

    @extend_schema(parameters=[OpenApiParameter("status", str), OpenApiParameter("account_id", str)])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[Operation]:
        run = run_selectors.run_get(self.kwargs["pk"])
        filters = run_selectors.OperationFilters.from_query(self.request.query_params)
        return run_selectors.operation_queryset(run, filters)


class RunCancel(PortalApiView):
    required_permissions = {"POST": CAN_ONBOARD}

    @extend_schema(
        request=None,
        responses={200: s.RunSerializer, 409: OpenApiResponse(description="The run has ended already")},
        summary="Cancel a queued or running run",
    )
    def post(self, request: Request, pk: int) -> Response:
        try:
            run = services.run_cancel(run=run_selectors.run_get(pk), user=request.user)
        except DjangoValidationError as exc:  # the run has ended: its state, not the request, is why
            raise Problem(status=409, code="run-ended", detail=" ".join(exc.messages)) from None
        return Response(s.RunSerializer(run).data)


# --- audit -----------------------------------------------------------------------------------


@extend_schema_view(get=extend_schema(summary="Every trust relationship with its latest audit and findings"))
class AuditList(PortalListView):
    """Every trust relationship with its latest audit (the Audit page's table)."""

    required_permissions = {"GET": VIEW_AUDIT}
    serializer_class = s.AuditRowSerializer

    def get_queryset(self) -> QuerySet[EcrAccount]:
        return audit_selectors.relationship_queryset(
            audit_selectors.AuditFilters.from_query(self.request.query_params)
        )

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        rows = [_audit_row(r) for r in audit_selectors.relationships(list(page or []))]
        return self.get_paginated_response(rows)


class AuditRefresh(PortalApiView):
    required_permissions = {"POST": CAN_AUDIT}

    @extend_schema(
        request=None, responses={202: s.RunSerializer}, summary="Start an audit (it changes nothing)"
    )
    def post(self, request: Request) -> Response:
        return _started(audit_request(user=request.user, request_id=request.request_id))


# --- helpers ---------------------------------------------------------------------------------


def _audit_row(row: audit_selectors.Relationship) -> dict[str, Any]:
    snapshot = row.snapshot
    live = snapshot.live if snapshot else {}
    return {
        "account_id": row.account.account_id,
        "alias": row.account.alias,
        "agent": row.account.agent.name,
        "role_arn": live.get("role_arn", row.account.service_role_arn),
        "status": row.status,
        "drift_since": snapshot.drift_since if snapshot else None,
        "observed_at": snapshot.observed_at if snapshot else None,
        "confirmed_at": snapshot.confirmed_at if snapshot else None,
        "trusted_principals": live.get("trusted_principals", []),
        "external_ids": live.get("external_ids", []),
        "findings": [public_finding(f) for f in (snapshot.findings if snapshot else [])],
    }


def _digest(request: Request) -> str:
    body = s.ApplySerializer(data=request.data)
    body.is_valid(raise_exception=True)
    return str(body.validated_data["digest"])


def _wait_seconds(request: Request) -> float:
    raw = request.query_params.get("wait", "0") or "0"
    try:
        seconds = int(raw)
    except ValueError:
        raise validation_problem({"wait": ["A whole number of seconds."]}) from None
    if seconds < 0:
        raise validation_problem({"wait": ["A whole number of seconds, 0 or more."]})
    return float(min(seconds, settings.API_LONG_POLL_MAX))


def _started(run: Run) -> Response:
    location = f"/api/v1/runs/{run.pk}/"
    return Response(
        s.RunSerializer(run).data, status=status.HTTP_202_ACCEPTED, headers={"Location": location}
    )

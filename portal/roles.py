"""User roles. Groups are created by portal/migrations/0002_roles.py with these permissions."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Concatenate, ParamSpec, TypeVar

from django.contrib.auth.models import Group, Permission
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseBase

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser, User

_Request = TypeVar("_Request", bound=HttpRequest)
_Response = TypeVar("_Response", bound=HttpResponseBase)
_Params = ParamSpec("_Params")

VIEWER, OPERATOR, ADMIN = "viewer", "operator", "admin"
ROLE_LABELS = {VIEWER: "Viewer", OPERATOR: "Operator", ADMIN: "Administrator"}

_VIEW = [
    "accounts.view_agentidentity",
    "accounts.view_ecraccount",
    "accounts.view_externalid",
    "accounts.view_brokerinstance",
    "accounts.view_snyktenant",
    "accounts.view_snykdeployment",
    "accounts.view_snykconnection",
    "provisioning.view_run",
    "provisioning.view_operation",
    "provisioning.view_runlogentry",
    "portal.view_auditentry",
]
_OPERATE = [
    "accounts.onboard_ecraccount",
    "accounts.download_brokerinstance",
    "accounts.download_snykdeployment",
    "provisioning.request_audit",
]
_ADMINISTER = [
    "accounts.manage_agentidentity",
    "accounts.offboard_ecraccount",
    "auth.view_user",
    "auth.add_user",
    "auth.change_user",
    "auth.view_group",
]

ROLE_PERMISSIONS = {
    VIEWER: _VIEW,
    OPERATOR: _VIEW + _OPERATE,
    ADMIN: _VIEW + _OPERATE + _ADMINISTER,
}

# Permission names used by views (one place to read what each role may do).
CAN_ONBOARD = "accounts.onboard_ecraccount"
CAN_DOWNLOAD = "accounts.download_brokerinstance"
CAN_DOWNLOAD_DEPLOYMENT = "accounts.download_snykdeployment"
CAN_AUDIT = "provisioning.request_audit"
CAN_MANAGE_AGENTS = "accounts.manage_agentidentity"
CAN_OFFBOARD = "accounts.offboard_ecraccount"


def role_of(user: User | AnonymousUser) -> str:
    if not user.is_authenticated:
        return ""
    if user.is_superuser:
        return ADMIN
    names = {g.name for g in user.groups.all()}
    for role in (ADMIN, OPERATOR, VIEWER):
        if role in names:
            return role
    return ""


def permission_required(
    perm: str,
) -> Callable[
    [Callable[Concatenate[_Request, _Params], _Response]], Callable[Concatenate[_Request, _Params], _Response]
]:
    """Like Django's, but always 403 (never a login redirect loop for a logged-in user)."""

    def decorator(
        view: Callable[Concatenate[_Request, _Params], _Response],
    ) -> Callable[Concatenate[_Request, _Params], _Response]:
        @wraps(view)
        def wrapped(request: _Request, *args: _Params.args, **kwargs: _Params.kwargs) -> _Response:
            if not request.user.has_perm(perm):
                raise PermissionDenied(f"Your role may not do this ({perm}).")
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


def context_processor(request: HttpRequest) -> dict[str, str | bool]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {
        "user_role": role_of(user),
        "can_onboard": user.has_perm(CAN_ONBOARD),
        "can_download": user.has_perm(CAN_DOWNLOAD),
        "can_download_deployment": user.has_perm(CAN_DOWNLOAD_DEPLOYMENT),
        "can_audit": user.has_perm(CAN_AUDIT),
        "can_manage_agents": user.has_perm(CAN_MANAGE_AGENTS),
        "can_offboard": user.has_perm(CAN_OFFBOARD),
    }


def ensure_role_groups() -> None:
    """Create the role groups if missing (a database flush in tests removes what migrations made)."""

    for role, perms in ROLE_PERMISSIONS.items():
        group, created = Group.objects.get_or_create(name=role)
        if created:
            for perm in perms:
                app_label, codename = perm.split(".")
                group.permissions.add(
                    Permission.objects.get(content_type__app_label=app_label, codename=codename)
                )

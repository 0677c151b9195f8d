"""Who may call what: the role's permission the view names per method, as the pages check it, and
a `read` token's scope, which allows reads only whatever its user's role."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rest_framework.permissions import SAFE_METHODS, BasePermission

from portal.models import ApiToken, ApiTokenScope

if TYPE_CHECKING:  # DRF imports this module while rest_framework.views loads
    from rest_framework.request import Request
    from rest_framework.views import APIView


class RolePermission(BasePermission):
    def has_permission(self, request: Request, view: APIView) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False  # DRF answers 401: no (valid) credentials
        token = request.auth if isinstance(request.auth, ApiToken) else None
        if token is not None and token.scope == ApiTokenScope.READ and request.method not in SAFE_METHODS:
            self.message = f"The token {token.name!r} has the read scope: it may not change anything."
            return False
        perms: dict[str, str] = getattr(view, "required_permissions", {})
        perm = perms.get(request.method or "", perms.get("*", ""))
        if not perm:
            self.message = "No role may do this."
            return False
        if not request.user.has_perm(perm):
            self.message = f"Your role may not do this ({perm})."
            return False
        return True

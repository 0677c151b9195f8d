"""EKS Pod Identity associations for moto, which has none (moto 5.2 implements clusters, node groups
and Fargate profiles only): a thin fake, installed into moto's EKS routes by `install()`.

It answers the five calls the portal makes (Create/List/Describe/Update/DeletePodIdentityAssociation)
as botocore's EKS model shapes them: associations live beside moto's clusters (the cluster must
exist), one per namespace and service account (EKS refuses a second with ResourceInUseException),
ids `a-` plus 17 characters, ARNs `arn:aws:eks:<region>:<account>:podidentityassociation/<cluster>/<id>`.
Nothing else of EKS Pod Identity (the agent add-on, session tags, target roles) is modelled.
"""

from __future__ import annotations

import json
import random
import re
import string
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from moto.core.responses import ActionResult
from moto.eks import urls
from moto.eks.exceptions import InvalidParameterException, ResourceInUseException, ResourceNotFoundException
from moto.eks.responses import EKSResponse

_PATH = re.compile(r"/clusters/(?P<cluster>[^/]+)/pod-identity-associations(?:/(?P<id>[^/]+))?$")
_SUMMARY = ("clusterName", "namespace", "serviceAccount", "associationArn", "associationId")
_ROUTES = (
    "{0}/clusters/(?P<clusterName>[^/]+)/pod-identity-associations$",
    "{0}/clusters/(?P<clusterName>[^/]+)/pod-identity-associations/(?P<associationId>[^/]+)$",
)
_installed = False


def _associations(backend: Any, cluster: str) -> dict[str, dict[str, Any]]:
    """The cluster's associations (moto recreates its backends on reset: so do these)."""
    if cluster not in backend.clusters:
        raise ResourceNotFoundException(
            clusterName=cluster,
            nodegroupName=None,
            fargateProfileName=None,
            addonName=None,
            message=f"No cluster found for name: {cluster}.",
        )
    store: dict[str, dict[str, dict[str, Any]]] = backend.__dict__.setdefault("_pod_identity", {})
    return store.setdefault(cluster, {})


def _not_found(cluster: str, association_id: str) -> ResourceNotFoundException:
    return ResourceNotFoundException(
        clusterName=cluster,
        nodegroupName=None,
        fargateProfileName=None,
        addonName=None,
        message=f"No association found for id {association_id}.",
    )


class PodIdentityResponse(EKSResponse):
    """moto's EKS responses plus the five Pod Identity association calls (moto finds each method by
    the operation botocore's model matches to the request's method and path)."""

    def _where(self) -> tuple[dict[str, dict[str, Any]], str, str]:
        match = _PATH.search(unquote(self.path.split("?", 1)[0]))
        assert match is not None  # the route matched this very pattern
        cluster = match["cluster"]
        return _associations(self.eks_backend, cluster), cluster, match["id"] or ""

    def _body(self) -> dict[str, Any]:
        return json.loads(self.body) if self.body else {}

    def _get(self) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        associations, cluster, association_id = self._where()
        if association_id not in associations:
            raise _not_found(cluster, association_id)
        return associations[association_id], associations

    def create_pod_identity_association(self) -> ActionResult:
        associations, cluster, _ = self._where()
        body = self._body()
        for name in ("namespace", "serviceAccount", "roleArn"):
            if not body.get(name):
                raise InvalidParameterException(message=f"{name} is required.")
        if any(
            a["namespace"] == body["namespace"] and a["serviceAccount"] == body["serviceAccount"]
            for a in associations.values()
        ):
            raise ResourceInUseException(
                clusterName=cluster,
                nodegroupName=None,
                fargateProfileName=None,
                addonName=None,
                message="Association already exists for this service account.",
            )
        association_id = "a-" + "".join(random.choices(string.ascii_lowercase + string.digits, k=17))
        now = datetime.now(UTC)
        association = {
            "clusterName": cluster,
            "namespace": body["namespace"],
            "serviceAccount": body["serviceAccount"],
            "roleArn": body["roleArn"],
            "associationArn": f"arn:aws:eks:{self.region}:{self.current_account}:podidentityassociation/"
            f"{cluster}/{association_id}",
            "associationId": association_id,
            "tags": body.get("tags") or {},
            "createdAt": now,
            "modifiedAt": now,
        }
        associations[association_id] = association
        return ActionResult({"association": association})

    def list_pod_identity_associations(self) -> ActionResult:
        associations, _, _ = self._where()
        wanted = {k: v[0] for k, v in self.querystring.items() if k in ("namespace", "serviceAccount")}
        summaries = [
            {
                k: a[k]
                for k in ("clusterName", "namespace", "serviceAccount", "associationArn", "associationId")
            }
            for a in associations.values()
            if all(a[k] == v for k, v in wanted.items())
        ]
        return ActionResult({"associations": summaries})

    def describe_pod_identity_association(self) -> ActionResult:
        association, _ = self._get()
        return ActionResult({"association": association})

    def update_pod_identity_association(self) -> ActionResult:
        association, _ = self._get()
        role_arn = self._body().get("roleArn")
        if role_arn:
            association["roleArn"] = role_arn
            association["modifiedAt"] = datetime.now(UTC)
        return ActionResult({"association": association})

    def delete_pod_identity_association(self) -> ActionResult:
        association, associations = self._get()
        del associations[association["associationId"]]
        return ActionResult({"association": association})


def install() -> None:
    """Add the routes to moto's EKS (before a mock or server starts; idempotent)."""
    global _installed
    if not _installed:
        for route in _ROUTES:
            urls.url_paths[route] = PodIdentityResponse.dispatch
        _installed = True

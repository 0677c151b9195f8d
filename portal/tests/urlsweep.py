"""Walk every URL the project serves and fill its parameters from a fixture inventory.

`sweep(inventory)` returns one SweptUrl per URL pattern (through every include, the admin's
included), with a concrete path whose parameters name rows that exist. A pattern whose parameters
cannot be filled raises Unfillable: a new page must be fillable (or the tables below taught) before
the access tests pass, so no page slips through unswept.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.exceptions import Resolver404
from django.urls.resolvers import RegexPattern, RoutePattern

# Words in a URL name (or in a `<word>_pk` / `<word>_id` parameter) -> the model a `pk` means.
MODEL_ALIASES = {
    "agent": "accounts.agentidentity",
    "account": "accounts.ecraccount",
    "external_id": "accounts.externalid",
    "externalid": "accounts.externalid",
    "external": "accounts.externalid",
    "ext": "accounts.externalid",
    "broker": "accounts.brokerinstance",
    "deployment": "accounts.snykdeployment",
    "run": "provisioning.run",
    "operation": "provisioning.operation",
    "op": "provisioning.operation",
    "log": "provisioning.runlogentry",
    "audit": "portal.auditentry",
    "entry": "portal.auditentry",
    "user": "auth.user",
    "group": "auth.group",
    "api_token": "portal.apitoken",
}
# URLs whose `pk` / `object_id` the name alone does not tell.
PK_MODEL_BY_NAME = {
    "admin:view_on_site": "accounts.ecraccount",
    "provisioning:snyk_org_map": "accounts.brokerinstance",
}

_ROUTE_PARAM = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<parameter>[^>]+)>")
_ADMIN_MODEL = re.compile(r"^admin/(?P<app>\w+)/(?P<model>\w+)/")


class Unfillable(Exception):
    """A URL parameter the sweep has no inventory value for."""


@dataclass
class Inventory:
    """Saved rows by model label, plus values for parameters that are not primary keys."""

    objects: dict[str, Any]
    params: dict[str, Callable[[], Any] | Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SweptUrl:
    name: str  # "namespace:name", or "namespace:<route>" for an unnamed pattern
    url_name: str | None  # the pattern's own name, None when unnamed
    namespace: str
    route: str  # the full pattern, e.g. "accounts/<str:account_id>/"
    path: str  # a concrete, resolvable path
    callback: Callable

    def __str__(self) -> str:
        return f"{self.name} ({self.path})"


def iter_patterns(
    resolver: URLResolver | None = None, prefix: tuple = (), namespaces: tuple = ()
) -> Iterator[tuple[tuple, URLPattern, tuple]]:
    """(pattern chain, leaf pattern, namespaces) for every leaf, recursively through includes."""
    resolver = resolver or get_resolver()
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            inner = namespaces + ((entry.namespace,) if entry.namespace else ())
            yield from iter_patterns(entry, (*prefix, entry.pattern), inner)
        else:
            yield (*prefix, entry.pattern), entry, namespaces


def _model_for(name: str, route: str, inventory: Inventory, param: str) -> str:
    if name in PK_MODEL_BY_NAME:
        return PK_MODEL_BY_NAME[name]
    admin = _ADMIN_MODEL.match(route)
    if admin and f"{admin['app']}.{admin['model']}" in inventory.objects:
        return f"{admin['app']}.{admin['model']}"
    # Non-admin names: the alias that appears first in the name (longest alias on ties).
    short = name.split(":")[-1]
    found = []
    for alias, label in MODEL_ALIASES.items():
        for match in re.finditer(rf"(?:^|_){re.escape(alias)}(?:_|$)", short):
            found.append((match.start(), -len(alias), label))
    if not found:
        raise Unfillable(f"{name}: no model for parameter {param!r} (add to MODEL_ALIASES/PK_MODEL_BY_NAME)")
    return min(found)[2]


def _choices(param: str, name: str, route: str, inventory: Inventory) -> list[Any]:
    """The values to try for one parameter: a list in Inventory.params sweeps each of them."""
    if param in inventory.params:
        value = inventory.params[param]
        value = value() if callable(value) else value
        return list(value) if isinstance(value, (list, tuple)) else [value]
    if param in ("pk", "id", "object_id"):
        label = _model_for(name, route, inventory, param)
    elif (m := re.fullmatch(r"(?P<alias>\w+?)_(?:pk|id)", param)) and m["alias"] in MODEL_ALIASES:
        label = MODEL_ALIASES[m["alias"]]
    else:
        raise Unfillable(f"{name}: no inventory value for parameter {param!r} in {route!r}")
    if label not in inventory.objects:
        raise Unfillable(f"{name}: the inventory has no {label} for parameter {param!r}")
    return [inventory.objects[label].pk]


def _regex_groups(text: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, name) of each top-level named group of a regex."""
    i = 0
    while i < len(text):
        group = re.match(r"\(\?P<(\w+)>", text[i:])
        if not group:
            i += 2 if text[i] == "\\" else 1
            continue
        depth, j = 1, i + group.end()
        while depth and j < len(text):
            if text[j] == "\\":
                j += 1
            elif text[j] == "(":
                depth += 1
            elif text[j] == ")":
                depth -= 1
            j += 1
        yield i, j, group[1]
        i = j


def _params_of(pattern: Any, name: str) -> list[str]:
    if isinstance(pattern, RoutePattern):
        return [m["parameter"] for m in _ROUTE_PARAM.finditer(str(pattern))]
    if isinstance(pattern, RegexPattern):
        return [group for _, _, group in _regex_groups(str(pattern))]
    raise Unfillable(f"{name}: unknown pattern type {type(pattern).__name__}")


def _fill(pattern: Any, values: dict[str, Any], name: str, route: str) -> str:
    if isinstance(pattern, RoutePattern):
        return _ROUTE_PARAM.sub(
            lambda m: str(pattern.converters[m["parameter"]].to_url(values[m["parameter"]])), str(pattern)
        )
    text, out, last = str(pattern), [], 0
    for start, end, param in _regex_groups(text):
        out += [text[last:start], re.escape(str(values[param]))]
        last = end
    filled = ("".join(out) + text[last:]).removeprefix("^").removesuffix("$").removesuffix(r"\Z")
    if re.search(r"(?<!\\)[()\[\]*+?|{}^$]", filled):
        raise Unfillable(f"{name}: cannot turn the regex {route!r} into a path")
    return re.sub(r"\\(.)", r"\1", filled)


def is_static(path: str) -> bool:
    prefixes = [p for p in (settings.STATIC_URL, getattr(settings, "MEDIA_URL", "")) if p and p != "/"]
    return any(path.startswith("/" + p.lstrip("/")) for p in prefixes)


def sweep(inventory: Inventory, resolver: URLResolver | None = None) -> list[SweptUrl]:
    """Every non-static URL with a concrete path. Raises Unfillable listing every URL it cannot fill."""
    resolver = resolver or get_resolver()
    urls, problems = [], []
    for chain, leaf, namespaces in iter_patterns(resolver):
        namespace = ":".join(namespaces)
        route = "".join(str(p) for p in chain)
        label = leaf.name or route
        name = f"{namespace}:{label}" if namespace else label
        try:
            params = [param for pattern in chain for param in _params_of(pattern, name)]
            choices = [_choices(param, name, route, inventory) for param in params]
            paths = []
            for combination in itertools.product(*choices):
                values = dict(zip(params, combination, strict=True))
                path = "/" + "".join(_fill(pattern, values, name, route) for pattern in chain)
                try:
                    match = resolver.resolve(path)
                except Resolver404:
                    raise Unfillable(f"{name}: the filled path {path!r} does not resolve") from None
                if match.func is not leaf.callback:
                    raise Unfillable(f"{name}: the filled path {path!r} resolves to {match.view_name}")
                paths.append(path)
        except Unfillable as exc:
            problems.append(str(exc))
            continue
        urls += [
            SweptUrl(name, leaf.name, namespace, route, p, leaf.callback) for p in paths if not is_static(p)
        ]
    if problems:
        raise Unfillable("\n".join(problems))
    return urls

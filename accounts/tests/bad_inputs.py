"""The bad-input corpus (bad_inputs.yaml) and the helpers every entry point's tests share.

The service tests (accounts/tests/test_validators.py) send each case through
account_services.account_build / agent_build; the command-line and upload tests reuse the same cases by
mapping `target` and `field` onto their own flags and columns:

    from accounts.tests.bad_inputs import load_bad_inputs, as_params

    @pytest.mark.parametrize("case", as_params(load_bad_inputs(targets={"account"})))
    def test_cli_refuses(case): ...
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from accounts import services as account_services
from provisioning.bulkfile import COLUMNS

CORPUS = Path(__file__).with_name("bad_inputs.yaml")

# Rows the corpus assumes exist (duplicate cases refer to them): see make_existing_inventory().
EXISTING_AGENT_NAME = "cra-existing"
EXISTING_ACCOUNT_ID = "111122223333"

# A complete, valid input per target: a case replaces exactly one field of it.
VALID_INPUTS: dict[str, dict[str, Any]] = {
    "account": {
        "account_id": "444455556666",
        "regions": ["us-east-1"],
        "alias": "team-valid",
        "external_id": "ext-valid-0001",
        "management_role_arn": "arn:aws:iam::444455556666:role/PortalManagement",
        "management_external_id": "mgmt-valid",
        "broker_client_url": "http://broker.internal:8000",
        "cr_agent_url": "http://cra.internal:8081",
        "broker_token": "1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b",
        "broker_server_url": "https://broker.eu.snyk.io",
    },
    "agent": {
        "name": "cra-new",
        "kind": "role",
        "account_id": "555566667777",
        "iam_name": "SnykCraEc2Role",
        "policy_name": "SnykCraAssumeRolePolicy",
        "management_role_arn": "arn:aws:iam::555566667777:role/PortalManagement",
        "management_external_id": "mgmt-valid",
    },
}
# Whole-file upload cases (target `upload`): `value` is the file's text, `field` the report column
# the problem is listed under ("file" for the file as a whole, "row" for a row's shape).
# An upload's errors name the file, a row, or one of the bulk reader's columns.
UPLOAD_FIELDS = frozenset({"file", "row", *COLUMNS})
FIELDS: dict[str, frozenset[str]] = {
    **{target: frozenset(values) for target, values in VALID_INPUTS.items()},
    "upload": UPLOAD_FIELDS,
}
TARGETS = frozenset(FIELDS)
_KEYS = {
    "target",
    "field",
    "value",
    "expect",
    "repeat",
    "prefix",
    "suffix",
    "close",
    "id",
    "filename",
    "encoding",
}
_REQUIRED = {"target", "field", "value", "expect"}


@dataclass(frozen=True)
class BadInput:
    id: str
    target: str  # "account" (account_services.account_build), "agent" (account_services.agent_build) or "upload" (a file)
    field: str  # the field the error must be reported under
    value: str
    expect: str  # a fragment of the expected message
    filename: str = "accounts.csv"  # upload cases: the uploaded file's name (its format)
    encoding: str = "utf-8"  # upload cases: how the text is turned into the file's bytes

    def content(self) -> bytes:
        """Upload cases: the file's bytes."""
        return self.value.encode(self.encoding)

    def kwargs(self) -> dict[str, Any]:
        """The valid input for this target with this case's one bad value in it."""
        values = dict(VALID_INPUTS[self.target])
        values[self.field] = [self.value] if self.field == "regions" else self.value
        return values


class CorpusError(ValueError):
    pass


def load_bad_inputs(path: Path = CORPUS, *, targets: Iterable[str] | None = None) -> list[BadInput]:
    """Every case of the corpus (optionally only some targets), checked for shape and unique ids."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(raw, list):
        raise CorpusError(f"{path}: expected a list of cases")
    wanted = set(targets) if targets is not None else None
    cases: list[BadInput] = []
    seen: set[str] = set()
    for number, item in enumerate(raw, start=1):
        where = f"{path.name} case {number}"
        if not isinstance(item, dict):
            raise CorpusError(f"{where}: expected a mapping")
        if missing := _REQUIRED - item.keys():
            raise CorpusError(f"{where}: missing {sorted(missing)}")
        if unknown := item.keys() - _KEYS:
            raise CorpusError(f"{where}: unknown keys {sorted(unknown)}")
        if item["target"] not in TARGETS:
            raise CorpusError(f"{where}: unknown target {item['target']!r}")
        if item["field"] not in FIELDS[item["target"]]:
            raise CorpusError(f"{where}: {item['target']} has no field {item['field']!r}")
        for key in ("value", "expect", "prefix", "suffix", "close", "filename", "encoding"):
            if key in item and not isinstance(item[key], str):
                raise CorpusError(f"{where}: {key} must be a string (quote it)")
        repeat = int(item.get("repeat", 1))
        # `close` is repeated as often as `value`: what a nested value needs to end well-formed.
        value = (
            item.get("prefix", "")
            + item["value"] * repeat
            + item.get("suffix", "")
            + item.get("close", "") * repeat
        )
        case_id = str(item.get("id") or f"{item['target']}-{item['field']}-{number}")
        if case_id in seen:
            raise CorpusError(f"{where}: duplicate id {case_id!r}")
        seen.add(case_id)
        if wanted is None or item["target"] in wanted:
            extra = {key: item[key] for key in ("filename", "encoding") if key in item}
            cases.append(BadInput(case_id, item["target"], item["field"], value, item["expect"], **extra))
    return cases


def as_params(cases: Iterable[BadInput]) -> list:
    return [pytest.param(case, id=case.id) for case in cases]


def make_existing_inventory():
    """The rows the corpus refers to: agent `cra-existing` and ECR account 111122223333."""

    agent = account_services.agent_create(name=EXISTING_AGENT_NAME, kind="role", account_id="111111111111")
    account_services.account_create(agent=agent, account_id=EXISTING_ACCOUNT_ID, regions=["us-east-1"])
    return agent


def call_service(case: BadInput, *, agent) -> Any:
    """Send one case through its service entry point (raises ValidationError when refused)."""

    if case.target == "account":
        return account_services.account_build(agent=agent, **case.kwargs())
    return account_services.agent_build(**case.kwargs())


def inventory_counts() -> dict[str, int]:
    """Row counts of every table a refused input must leave untouched."""
    from accounts.models import AgentIdentity, BrokerInstance, EcrAccount, ExternalId
    from portal.models import AuditEntry
    from provisioning.models import Operation, Run, RunLogEntry

    models = [AgentIdentity, EcrAccount, ExternalId, BrokerInstance, Run, Operation, RunLogEntry, AuditEntry]
    return {model._meta.label: model.objects.count() for model in models}

"""Bulk onboarding files: CSV or YAML, one ECR account per row, every row checked before anything else.

`load()` reads a file into a BulkReport: the rows as unsaved, validated inventory rows (the same
`inventory.account_build` the wizard and the command line use), and every problem found, each naming
its row and field. Nothing here saves a row or calls AWS. A file is refused as a whole when it is
too big, not UTF-8, has unknown or missing columns, is nested deeper than any row needs, or is
YAML with aliases, tags or duplicate keys; a cell that starts like a spreadsheet formula (`=cmd`,
`+`, `-`, `@`) is refused, because the file and the reports made from it end up in spreadsheets.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import yaml
from django.core.exceptions import ValidationError
from django.utils.translation import ngettext

from accounts import services as inventory
from accounts import validators as v
from accounts.choices import Lifecycle
from accounts.models import AgentIdentity, BrokerInstance, EcrAccount, ExternalId
from portal.text import counted

from . import policies

COLUMNS = (
    "account_id",
    "alias",
    "regions",
    "management_role_arn",
    "management_external_id",
    "external_id",
    "broker_client_url",
    "cr_agent_url",
)
REQUIRED_COLUMNS = ("account_id", "regions")
MAX_BYTES = 512 * 1024
MAX_ROWS = 500
REGION_SEPARATORS = re.compile(r"[\s,;|]+")
# Lists and mappings inside each other: `accounts:` > the rows > a row > its regions is 4. The YAML
# composer and json.loads recurse once per level, so a deeper file is refused before they do.
MAX_NESTING = 8
TOO_DEEP = f"too deeply nested: at most {MAX_NESTING} levels of lists and mappings"
# In JSON text: a string (skipped whole, it may hold brackets) or a bracket.
_JSON_STRING_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the file: row None means the file as a whole."""

    row: int | None
    field: str
    message: str
    account_id: str = ""

    def __str__(self) -> str:
        if self.row is None:
            return f"file: {self.field + ': ' if self.field else ''}{self.message}"
        who = f" ({self.account_id})" if self.account_id else ""
        return f"row {self.row}{who}: {self.field}: {self.message}"


@dataclass
class BulkRow:
    row: int
    values: dict[str, str]  # the columns, normalised; external_id filled in when it was generated
    account: EcrAccount
    external_id: ExternalId
    brokers: list[BrokerInstance]

    def service_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = dict(self.values)
        fields["regions"] = split_regions(self.values["regions"])
        return fields


@dataclass
class BulkReport:
    agent: AgentIdentity | None
    rows: list[BulkRow] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    row_count: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems and bool(self.rows)

    @property
    def bad_rows(self) -> list[int]:
        return sorted({p.row for p in self.problems if p.row is not None})

    def records(self) -> str:
        """The validated rows as JSON (generated ExternalIds included): what a confirm page carries."""
        return json.dumps([[r.row, r.values] for r in self.rows], separators=(",", ":"))

    def as_text(self) -> str:
        head = (
            ngettext("%(bad)d of %(rows)d row", "%(bad)d of %(rows)d rows", self.row_count)
            % {"bad": len(self.bad_rows), "rows": self.row_count}
            + ngettext(" is invalid", " are invalid", len(self.bad_rows))
            if self.bad_rows
            else "the file is invalid"
        )
        return head + "; nothing was saved or sent to AWS:\n  " + "\n  ".join(map(str, self.problems))


def split_regions(value: str) -> list[str]:
    return [r for r in REGION_SEPARATORS.split(value.strip()) if r]


# --- reading ------------------------------------------------------------------------------------


class _Refused(Exception):
    pass


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML without aliases (no "billion laughs"), duplicate keys or deep nesting."""

    nesting = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not accepted", event.start_mark
            )
        if self.nesting >= MAX_NESTING and self.check_event(yaml.CollectionStartEvent):
            raise _Refused(f"{TOO_DEEP} (line {self.peek_event().start_mark.line + 1})")
        self.nesting += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.nesting -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _format_of(filename: str, text: str) -> str:
    name = filename.lower()
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".yaml", ".yml", ".json")):
        return "yaml"
    head = text.lstrip()[:20]
    return "yaml" if head.startswith(("-", "[", "{", "accounts:")) else "csv"


def _column(name: str) -> str:
    return re.sub(r"[\s-]+", "_", name.strip().lower())


def _read_csv(text: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise _Refused("the file is empty") from None
    except csv.Error as exc:
        raise _Refused(f"not a readable CSV file: {exc}") from None
    for cell in header:
        if v.starts_like_formula(cell.strip()):
            raise _Refused(f"header cell {cell.strip()[:20]!r} starts like a spreadsheet formula")
    columns = [_column(c) for c in header]
    _check_columns(columns)
    rows: list[tuple[int, dict[str, Any]]] = []
    start = reader.line_num + 1  # a quoted cell may span lines: a row is named by its first line
    try:
        for cells in reader:
            line, start = start, reader.line_num + 1
            if not any(c.strip() for c in cells):
                continue  # blank line
            _check_row_count(len(rows) + 1)
            if len(cells) != len(columns):
                wrong = f"has {counted(len(cells), 'cell', 'cells')}, the header has {len(columns)}"
                rows.append((line, {"__cells__": wrong}))
                continue
            rows.append((line, dict(zip(columns, cells, strict=True))))
    except csv.Error as exc:
        raise _Refused(f"not a readable CSV file at line {reader.line_num}: {exc}") from None
    return rows


def _read_yaml(text: str) -> list[tuple[int, dict[str, Any]]]:
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise _Refused(f"not a readable YAML file: {exc}") from None
    if isinstance(data, dict) and set(data) == {"accounts"}:
        data = data["accounts"]
    if not isinstance(data, list):
        raise _Refused("expected a list of accounts (or `accounts:` holding one)")
    _check_row_count(len(data))
    rows: list[tuple[int, dict[str, Any]]] = []
    unknown: set[str] = set()
    for number, item in enumerate(data, start=1):
        if not isinstance(item, dict):
            rows.append((number, {"__cells__": "is not a mapping of column: value"}))
            continue
        values = {_column(str(k)): v for k, v in item.items()}
        unknown.update(k for k in values if k not in COLUMNS)
        rows.append((number, values))
    if unknown:
        _check_columns(sorted(unknown))  # raises, naming them
    return rows


def _check_columns(columns: list[str]) -> None:
    unknown = [c for c in columns if c not in COLUMNS]
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    problems = []
    if unknown:
        names = ", ".join(map(repr, unknown))
        problems.append(f"{ngettext('unknown column', 'unknown columns', len(unknown))} {names}")
    if duplicates:
        problems.append(
            ngettext("column %(names)s appears", "columns %(names)s appear", len(duplicates))
            % {"names": ", ".join(map(repr, duplicates))}
            + " more than once"
        )
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing and not unknown:
        problems.append(f"{ngettext('missing column', 'missing columns', len(missing))} {', '.join(missing)}")
    if problems:
        raise _Refused("; ".join(problems) + f". Columns are: {', '.join(COLUMNS)}.")


def _check_row_count(count: int) -> None:
    if count > MAX_ROWS:
        raise _Refused(f"more than {MAX_ROWS} rows: split the file (each file is one run)")


def read(content: bytes, filename: str = "") -> tuple[list[tuple[int, dict[str, Any]]], list[Problem]]:
    """(row number, raw values) for every row, or a file-level problem. Row numbers are CSV line
    numbers (the header is line 1) or 1-based YAML list positions."""
    if len(content) > MAX_BYTES:
        return [], [Problem(None, "", f"the file is {len(content):,} bytes; at most {MAX_BYTES:,} are read")]
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return [], [Problem(None, "", f"not UTF-8 text (byte {exc.start})")]
    if "\x00" in text:
        return [], [Problem(None, "", "binary content (NUL bytes): expected CSV or YAML text")]
    try:
        if _format_of(filename, text) == "csv":
            return _read_csv(text), []
        return _read_yaml(text), []
    except _Refused as exc:
        return [], [Problem(None, "", str(exc))]


# --- validating ---------------------------------------------------------------------------------


def _text(value: Any, column: str) -> tuple[str, str]:
    """(text, problem) for one raw value."""
    if value is None:
        return "", ""
    if isinstance(value, bool | float | dict):
        return "", "must be text"
    if isinstance(value, int):
        if column == "account_id" and len(str(value)) == 12:
            return str(value), ""
        if column == "account_id":
            return "", "write account ids in quotes: as a number, leading zeros are lost"
        return "", "must be text"
    if isinstance(value, list):
        if column != "regions" or not all(isinstance(item, str) for item in value):
            return "", "must be text"
        return " ".join(value), ""
    return str(value), ""


def validate(agent: AgentIdentity | None, raw_rows: list[tuple[int, dict[str, Any]]]) -> BulkReport:
    """Every row built and validated; every problem collected (never only the first)."""
    report = BulkReport(agent=agent, row_count=len(raw_rows))
    if agent is None:
        report.problems.append(Problem(None, "agent", "no such agent (see agent_add)"))
        return report
    if agent.status == Lifecycle.REMOVED:
        report.problems.append(Problem(None, "agent", f"agent {agent.name} is removed"))
        return report
    if not raw_rows:
        report.problems.append(Problem(None, "", "no rows: the file holds no account"))
        return report
    candidates = {str(values.get("account_id") or "").strip() for _, values in raw_rows}
    existing = dict(EcrAccount.objects.filter(account_id__in=candidates).values_list("account_id", "status"))
    first_row: dict[str, int] = {}
    for number, raw in raw_rows:
        row = _validate_row(agent, number, raw, existing, first_row, report.problems)
        if row is not None:
            report.rows.append(row)
    if not report.problems:
        members = inventory.agent_member_arns(agent)
        members.update({r.account.account_id: r.account.service_role_arn for r in report.rows})
        try:
            policies.agent_permissions(agent.kind, agent.policy_name, members)
        except policies.LayoutError as exc:
            report.problems.append(Problem(None, "agent", str(exc)))
    if report.problems:
        report.rows = []
    return report


def _validate_row(
    agent: AgentIdentity,
    number: int,
    raw: dict[str, Any],
    existing: dict[str, str],
    first_row: dict[str, int],
    problems: list[Problem],
) -> BulkRow | None:
    """One row checked like the wizard checks its form: every problem found, or the rows it builds."""
    found: list[Problem] = []
    account_id = str(raw.get("account_id") or "").strip()[:20]

    def problem(column: str, message: str) -> None:
        found.append(Problem(number, column, message, account_id))

    if "__cells__" in raw:
        problem("row", str(raw["__cells__"]))
        problems.extend(found)
        return None
    values, padded = _cells(raw, problem)
    _check_account_id(values["account_id"], number, existing, first_row, {p.field for p in found}, problem)
    built = _build(agent, values, {p.field for p in found}, problem)
    for column in padded:
        problem(column, v.SURROUNDING_WHITESPACE)
    if found or built is None:
        problems.extend(found)
        return None
    account, external_id, brokers = built
    values["external_id"] = external_id.value
    return BulkRow(number, values, account, external_id, brokers)


def _cells(raw: dict[str, Any], problem: Callable[[str, str], None]) -> tuple[dict[str, str], list[str]]:
    """Every column's text, and the columns padded with spaces (refused with the hint, as the forms)."""
    values: dict[str, str] = {}
    padded: list[str] = []
    for column in COLUMNS:
        text, bad = _text(raw.get(column), column)
        if not text.strip():
            text = ""  # a blank cell, however it is spaced
        elif column != "regions" and v.has_surrounding_whitespace(text):
            padded.append(column)  # refused with the hint; the rules check what is inside (as the forms do)
            text = text.strip()
        if bad:
            problem(column, bad)
        elif v.starts_like_formula(text):
            problem(
                column, f"starts with {text[:1]!r}: cells that look like spreadsheet formulas are refused"
            )
        values[column] = text
    return values, padded


def _check_account_id(
    account_id: str,
    number: int,
    existing: dict[str, str],
    first_row: dict[str, int],
    flagged: set[str],
    problem: Callable[[str, str], None],
) -> None:
    """Required, not in the portal yet, and not twice in the file."""
    if not account_id and "account_id" not in flagged:
        problem("account_id", "This field is required.")
    elif account_id in existing:
        problem(
            "account_id",
            f"already in the portal (status {existing[account_id]}): use reconcile, or offboard it first",
        )
    elif account_id in first_row:
        problem("account_id", f"duplicate of row {first_row[account_id]}")
    else:
        first_row.setdefault(account_id, number)


def _build(
    agent: AgentIdentity, values: dict[str, str], flagged: set[str], problem: Callable[[str, str], None]
) -> tuple[EcrAccount, ExternalId, list[BrokerInstance]] | None:
    """The rows the services would save, built and validated as the wizard does (nothing saved)."""
    try:
        fields: dict[str, Any] = {**values, "regions": split_regions(values["regions"])}
        # The agent is one, and every account id was looked up at once (_check_account_id).
        return inventory.account_build(agent=agent, checked_new=True, **fields)
    except ValidationError as exc:
        for column, errors in exc.error_dict.items():
            if column in flagged:
                continue  # its own problem says it already
            for error in errors:
                for message in error.messages:
                    problem(column if column != "__all__" else "row", message)
        return None


def load(agent: AgentIdentity | None, content: bytes, filename: str = "") -> BulkReport:
    raw_rows, problems = read(content, filename)
    if problems:
        return BulkReport(agent=agent, problems=problems)
    return validate(agent, raw_rows)


def _json_nesting(text: str) -> int:
    """How deep the lists and objects of a JSON text go, counted without decoding it."""
    depth = deepest = 0
    for match in _JSON_STRING_OR_BRACKET.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_NESTING:
                break
        elif token in ("]", "}"):
            depth -= 1
    return deepest


def load_records(agent: AgentIdentity | None, records: str) -> BulkReport:
    """Re-validate what `BulkReport.records()` produced (a confirm page posts it back)."""
    if _json_nesting(records) > MAX_NESTING:
        return BulkReport(agent=agent, problems=[Problem(None, "", f"the confirmed rows are {TOO_DEEP}")])
    try:
        data = json.loads(records)
        raw_rows = [(int(number), dict(values)) for number, values in data]
        if len(raw_rows) > MAX_ROWS or any(set(values) - set(COLUMNS) for _, values in raw_rows):
            raise ValueError
    except (ValueError, TypeError):
        return BulkReport(agent=agent, problems=[Problem(None, "", "the confirmed rows are unreadable")])
    return validate(agent, raw_rows)

"""Importing resources from CSV: one row per team, expert, supply, equipment, shelter
or vehicle.

The file is UTF-8 (a BOM is allowed: Excel's "CSV UTF-8"), comma-separated, with a
header row. Column names are case-insensitive and may come in any order; ``kind`` and
``name`` are required, every other column is optional:

============= =========================================================================
column        meaning
============= =========================================================================
kind          team, expert, supply, equipment, shelter or vehicle; the Chinese names
              救援队伍 (队伍), 专家, 物资, 装备, 避难场所, 车辆 are understood too
name          the resource's name
lat, lon      its location in decimal degrees (WGS-84), both or neither
address       its address
contacts      ``name:phone`` items separated by ``;`` (``name:phone:title`` to give a
              title): ``张三:13800138000:队长;值班室:010-65123456``. Full-width ``：``
              and ``；`` work too
status        available or unavailable (可用, 不可用)
leader, members, headcount          teams (members: names separated by ``;`` or ``、``)
field, organisation                 experts
quantity, unit, warehouse, keeper   supplies and equipment
capacity, occupancy                 shelters
plate, vehicle_type, seats          vehicles
============= =========================================================================

A row whose kind and name (and, for supplies and equipment, warehouse) match a stored
resource updates it: its non-empty cells replace the stored values, empty cells leave
them alone. Any other row adds a resource. A value in a column another kind's row
does not have (a quantity on a team's row) is an error, not ignored.

The import is all or nothing: every bad line is reported (1-based physical line
numbers, the header being line 1) and nothing is written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from storage.sql import Tx

from .csv_records import MalformedCsv, decode, records
from .errors import DispatchError, ImportFailed, LineError
from .resources import (
    KIND_FIELDS,
    KIND_LABELS,
    NAME_MAX,
    RESOURCE_KINDS,
    ImportResult,
    check_field,
    clean_text,
)

if TYPE_CHECKING:
    from .resources import ResourceService

KIND_FIELD_COLUMNS: Final = tuple(dict.fromkeys(
    spec.name for kind in RESOURCE_KINDS for spec in KIND_FIELDS[kind]))
COLUMNS: Final = ("kind", "name", "lat", "lon", "address", "contacts", "status",
                  *KIND_FIELD_COLUMNS)
REQUIRED: Final = ("kind", "name")
MAX_BYTES: Final = 10 * 1024 * 1024
MAX_ROWS: Final = 10_000
MAX_ERRORS: Final = 100

KIND_ALIASES: Final[Mapping[str, str]] = {
    **{kind: kind for kind in RESOURCE_KINDS},
    **{label: kind for kind, label in KIND_LABELS.items()},
    "队伍": "team", "应急队伍": "team", "专家组": "expert", "物资储备": "supply",
    "避难所": "shelter", "应急避难场所": "shelter",
}
STATUS_ALIASES: Final[Mapping[str, str]] = {
    "available": "available", "unavailable": "unavailable",
    "可用": "available", "不可用": "unavailable", "dispatched": "dispatched",
}
_LIST_SEPARATORS: Final = re.compile(r"[;；、]")
_CONTACT_SEPARATORS: Final = re.compile(r"[;；]")
_DECIMAL: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_INTEGER: Final = re.compile(r"[+-]?[0-9]{1,18}")


@dataclass(frozen=True, slots=True)
class ImportRow:
    line: int
    kind: str
    name: str
    fields: dict[str, Any]
    """The checked values of the row's non-empty cells (name and kind excepted)."""


def parse_csv(data: bytes | str) -> list[ImportRow]:
    """Rows of a resources CSV, checked one by one; ``ImportFailed`` lists every bad line."""
    rows, errors = check_csv(data)
    if errors:
        raise ImportFailed(errors)
    return rows


def check_csv(data: bytes | str) -> tuple[list[ImportRow], list[LineError]]:
    """The well-formed rows of a resources CSV and the errors of the others.

    A file that can't be read at all (not UTF-8, a bad header) raises ``ImportFailed``.
    """
    text = decode(data, max_bytes=MAX_BYTES)
    errors: list[LineError] = []
    rows: list[ImportRow] = []
    header: dict[str, int] | None = None
    try:
        for line, record in records(text):
            if header is None:
                header = _header(record, line)
                continue
            if len(rows) >= MAX_ROWS:
                errors.append(LineError(line, f"more than {MAX_ROWS} rows"))
                break
            if len(record) > len(header):
                errors.append(LineError(
                    line, f"{len(record)} fields but the header has {len(header)} columns"))
                continue
            cells = {column: record[index].strip() if index < len(record) else ""
                     for column, index in header.items()}
            row, problems = _row(line, cells)
            errors += [LineError(line, p) for p in problems]
            if row is not None:
                rows.append(row)
            if len(errors) >= MAX_ERRORS:
                break
    except MalformedCsv as exc:
        errors.append(LineError(exc.line, exc.message))
    if header is None and not errors:
        errors.append(LineError(1, "the file is empty: a header row is needed "
                                   f"(columns {', '.join(COLUMNS)})"))
    if header is None:
        raise ImportFailed(errors[:MAX_ERRORS])
    return rows, errors[:MAX_ERRORS]


def _header(record: list[str], line: int) -> dict[str, int]:
    names = [cell.strip().lower() for cell in record]
    errors: list[LineError] = []
    unknown = [n for n in names if n not in COLUMNS]
    if unknown:
        errors.append(LineError(line, f"unknown column(s) {', '.join(unknown)}: the columns "
                                      f"are {', '.join(COLUMNS)}"))
    if len(set(names)) != len(names):
        errors.append(LineError(line, "a column appears twice in the header"))
    for column in REQUIRED:
        if column not in names:
            errors.append(LineError(line, f"the header has no {column!r} column"))
    if errors:
        raise ImportFailed(errors)
    return {n: i for i, n in enumerate(names)}


def _row(line: int, cells: Mapping[str, str]) -> tuple[ImportRow | None, list[str]]:
    problems: list[str] = []
    kind_text = cells["kind"]
    kind = KIND_ALIASES.get(kind_text.lower()) if kind_text else None
    if kind is None:
        problems.append("kind is empty" if not kind_text else
                        f"kind {kind_text!r} is not one of {', '.join(RESOURCE_KINDS)}")
    name = ""
    try:
        name = clean_text(cells["name"], "name", NAME_MAX, optional=False) or ""
    except DispatchError as exc:
        problems.append(exc.message)
    fields: dict[str, Any] = {}

    def take(column: str, value: object) -> None:
        try:
            fields[column] = check_field(kind or "team", column, value)
        except DispatchError as exc:
            problems.append(exc.message)

    lat, lon = cells.get("lat", ""), cells.get("lon", "")
    if lat or lon:
        if not (lat and lon):
            problems.append("give both lat and lon, or neither")
        else:
            bad = [f"{c} {v!r} is not a decimal number" for c, v in (("lat", lat), ("lon", lon))
                   if not _DECIMAL.fullmatch(v)]
            problems += bad
            if not bad:
                take("location", {"lat": float(lat), "lon": float(lon)})
    if cells.get("address"):
        take("address", cells["address"])
    if cells.get("contacts"):
        contacts = _contacts(cells["contacts"], problems)
        if contacts is not None:
            take("contacts", contacts)
    if cells.get("status"):
        status = STATUS_ALIASES.get(cells["status"].lower(), cells["status"])
        take("status", status)
    for column in KIND_FIELD_COLUMNS:
        text = cells.get(column, "")
        if not text or kind is None:
            continue
        spec = next((s for s in KIND_FIELDS[kind] if s.name == column), None)
        if spec is None:
            problems.append(f"column {column} does not apply to a {kind} "
                            f"({KIND_LABELS[kind]}): leave it empty on this row")
            continue
        if spec.type == "names":
            take(column, [n.strip() for n in _LIST_SEPARATORS.split(text) if n.strip()])
        elif spec.type == "count":
            if _INTEGER.fullmatch(text):
                take(column, int(text))
            else:
                problems.append(f"{column} {text!r} is not a whole number")
        else:
            take(column, text)
    if problems or kind is None:
        return None, problems
    return ImportRow(line, kind, name, fields), []


def _contacts(text: str, problems: list[str]) -> list[dict[str, str]] | None:
    contacts: list[dict[str, str]] = []
    ok = True
    for item in filter(None, (p.strip() for p in _CONTACT_SEPARATORS.split(text))):
        parts = [p.strip() for p in item.replace("：", ":").split(":", 2)]
        if len(parts) < 2 or not parts[0] or not parts[1]:
            problems.append(f"contact {item!r} is not NAME:PHONE (or NAME:PHONE:TITLE)")
            ok = False
            continue
        contact = {"name": parts[0], "phone": parts[1]}
        if len(parts) == 3 and parts[2]:
            contact["title"] = parts[2]
        contacts.append(contact)
    return contacts if ok else None


def apply_rows(tx: Tx, rows: list[ImportRow], service: ResourceService, *,
               errors: list[LineError] | None = None) -> ImportResult:
    """Write the rows in ``tx``; ``ImportFailed`` on any error, ``errors`` (those found
    while parsing) included, so the caller's transaction rolls back."""
    errors = list(errors or [])
    seen: dict[tuple[str, str, str], int] = {}
    created = updated = 0
    for row in rows:
        warehouse = row.fields.get("warehouse") if row.kind in ("supply", "equipment") else None
        key = (row.kind, row.name, warehouse or "")
        if key in seen:
            where = f" in warehouse {warehouse}" if warehouse else ""
            errors.append(LineError(row.line, f"{row.kind} {row.name!r}{where} is already on "
                                              f"line {seen[key]}"))
            continue
        seen[key] = row.line
        try:
            existing = service.find(tx, row.kind, row.name, warehouse)
            if existing is None:
                service.insert(tx, service.new_values(row.kind, row.name, row.fields))
                created += 1
            else:
                service.rewrite(tx, existing, service.changed_values(existing, row.fields),
                                requested_status=row.fields.get("status"))
                updated += 1
        except DispatchError as exc:
            errors.append(LineError(row.line, exc.message))
        if len(errors) >= MAX_ERRORS:
            break
    if errors:
        raise ImportFailed(sorted(errors, key=lambda e: e.line)[:MAX_ERRORS])
    return ImportResult(created, updated)

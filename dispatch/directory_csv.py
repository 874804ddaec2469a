"""Importing the directory from CSV: one row per person or device.

The file is UTF-8 (a BOM is allowed), comma-separated, with a header row. Column names
are case-insensitive and may come in any order; only ``name`` is required:

========== ===========================================================================
column     meaning
========== ===========================================================================
name       the person's or device's name (required)
kind       ``person`` (default) or ``device``
title      job title or role, optional
unit       the unit's path from the top, ``/`` between levels (``市消防局/一中队``);
           missing units are created; empty means no unit
endpoints  how to reach them, preferred first, ``;`` between, each ``KIND:ADDRESS``:
           ``sip:1001;mobile:13800138000``. KIND is sip (an existing hub user), mobile,
           browser (an operator name), app or radio
groups     fixed groups the person belongs to, ``;`` between; missing groups are created
========== ===========================================================================

A row whose name and unit match a stored person updates it (kind and title; its
endpoints become the row's when the column is there; groups are added to). Any other
row adds a person. The import is all or nothing: every bad line is reported (1-based
physical line numbers, the header being line 1) and nothing is written.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Final

from .csv_records import MalformedCsv, decode, records
from .directory import (
    ENDPOINT_KINDS,
    PERSON_KINDS,
    DirectoryService,
    EndpointSpec,
    ImportResult,
    clean_text,
    normalise_address,
)
from .errors import DispatchError, ImportFailed, LineError

COLUMNS: Final = ("name", "kind", "title", "unit", "endpoints", "groups")
MAX_BYTES: Final = 10 * 1024 * 1024
MAX_ROWS: Final = 10_000
MAX_ERRORS: Final = 100


@dataclass(frozen=True, slots=True)
class ImportRow:
    line: int
    name: str
    kind: str
    title: str | None
    unit: tuple[str, ...]
    endpoints: tuple[EndpointSpec, ...] | None
    """None when the file has no endpoints column (leave a person's endpoints alone)."""
    groups: tuple[str, ...]


def parse_csv(data: bytes | str) -> list[ImportRow]:
    """Rows of a directory CSV, checked one by one; ``ImportFailed`` lists every bad line."""
    rows, errors = check_csv(data)
    if errors:
        raise ImportFailed(errors)
    return rows


def check_csv(data: bytes | str) -> tuple[list[ImportRow], list[LineError]]:
    """The well-formed rows of a directory CSV and the errors of the others.

    A file that can't be read at all (not UTF-8, a bad header) raises ``ImportFailed``.
    """
    text = decode(data, max_bytes=MAX_BYTES)
    errors: list[LineError] = []
    rows: list[ImportRow] = []
    header: dict[str, int] | None = None
    try:
        for line, record in records(text):
            if header is None:
                names = [cell.strip().lower() for cell in record]
                unknown = [n for n in names if n not in COLUMNS]
                if unknown:
                    errors.append(LineError(line, f"unknown column(s) {', '.join(unknown)}: "
                                                  f"the columns are {', '.join(COLUMNS)}"))
                if len(set(names)) != len(names):
                    errors.append(LineError(line, "a column appears twice in the header"))
                if "name" not in names:
                    errors.append(LineError(line, "the header has no 'name' column"))
                if errors:
                    raise ImportFailed(errors)
                header = {n: i for i, n in enumerate(names)}
                continue
            if len(rows) >= MAX_ROWS:
                errors.append(LineError(line, f"more than {MAX_ROWS} rows"))
                break
            if len(record) > len(header):
                errors.append(LineError(
                    line, f"{len(record)} fields but the header has {len(header)} columns"))
                continue

            def cell(column: str, record: list[str] = record,
                     header: dict[str, int] = header) -> str:
                index = header.get(column)
                return record[index].strip() if index is not None and index < len(record) else ""

            problems: list[str] = []
            name = cell("name")
            try:
                name = clean_text(name, "name") or ""
            except DispatchError as exc:
                problems.append("name is empty" if not name else exc.message)
            kind = cell("kind") or "person"
            if kind not in PERSON_KINDS:
                problems.append(f"kind {kind!r} is not one of {', '.join(PERSON_KINDS)}")
            title: str | None = None
            try:
                title = clean_text(cell("title"), "title", optional=True)
            except DispatchError as exc:
                problems.append(exc.message)
            unit: list[str] = []
            if cell("unit"):
                for part in cell("unit").split("/"):
                    try:
                        unit.append(clean_text(part, "unit name") or "")
                    except DispatchError:
                        problems.append(f"unit {cell('unit')!r} has an empty or bad level")
                        break
            endpoints: list[EndpointSpec] | None = None
            if "endpoints" in header:
                endpoints = []
                for item in filter(None, (p.strip() for p in cell("endpoints").split(";"))):
                    kind_text, sep, address = item.partition(":")
                    if not sep or kind_text.strip() not in ENDPOINT_KINDS:
                        problems.append(f"endpoint {item!r} is not KIND:ADDRESS with KIND one of "
                                        f"{', '.join(ENDPOINT_KINDS)}")
                        continue
                    try:
                        address = normalise_address(kind_text.strip(), address)
                    except DispatchError as exc:
                        problems.append(exc.message)
                        continue
                    spec = EndpointSpec(kind_text.strip(), address)
                    if spec in endpoints:
                        problems.append(f"endpoint {item!r} is listed twice")
                        continue
                    endpoints.append(spec)
            groups: list[str] = []
            for group in filter(None, (g.strip() for g in cell("groups").split(";"))):
                try:
                    groups.append(clean_text(group, "group name") or "")
                except DispatchError as exc:
                    problems.append(exc.message)
            errors += [LineError(line, p) for p in problems]
            if not problems:
                rows.append(ImportRow(line, name, kind, title, tuple(unit),
                                      None if endpoints is None else tuple(endpoints),
                                      tuple(dict.fromkeys(groups))))
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


def apply_rows(conn: sqlite3.Connection, rows: list[ImportRow], service: DirectoryService,
               *, now: float, errors: list[LineError] | None = None) -> ImportResult:
    """Write the rows in ``conn``'s transaction; ``ImportFailed`` on any error, ``errors``
    (those found while parsing) included, so the caller's transaction rolls back."""
    errors = list(errors or [])
    units: dict[tuple[str, ...], int] = {}
    units_created = groups_created = created = updated = endpoint_count = 0
    seen_people: dict[tuple[tuple[str, ...], str], int] = {}
    seen_endpoints: dict[tuple[str, str], int] = {}
    groups: dict[str, int] = {}

    def unit_id(path: tuple[str, ...]) -> int | None:
        nonlocal units_created
        parent: int | None = None
        for depth in range(1, len(path) + 1):
            key = path[:depth]
            if key not in units:
                row = conn.execute("SELECT id FROM units WHERE name = ? AND parent_id IS ?",
                                   (key[-1], parent)).fetchone()
                if row is None:
                    cursor = conn.execute(
                        "INSERT INTO units (name, parent_id, created_at) VALUES (?, ?, ?)",
                        (key[-1], parent, now))
                    units[key] = int(cursor.lastrowid or 0)
                    units_created += 1
                else:
                    units[key] = int(row[0])
            parent = units[key]
        return parent

    for row in rows:
        problems: list[str] = []
        key = (row.unit, row.name)
        if key in seen_people:
            problems.append(f"{row.name!r} in unit {'/'.join(row.unit) or '(none)'} is "
                            f"already on line {seen_people[key]}")
        for spec in row.endpoints or ():
            other = seen_endpoints.get((spec.kind, spec.address))
            if other is not None:
                problems.append(f"endpoint {spec.kind}:{spec.address} is also on line {other}")
        if problems:
            errors += [LineError(row.line, p) for p in problems]
            continue
        seen_people[key] = row.line
        for spec in row.endpoints or ():
            seen_endpoints[(spec.kind, spec.address)] = row.line
        unit = unit_id(row.unit)
        matches = conn.execute("SELECT id FROM people WHERE name = ? AND unit_id IS ?",
                               (row.name, unit)).fetchall()
        if len(matches) > 1:
            errors.append(LineError(row.line, f"{len(matches)} people named {row.name!r} are in "
                                              "that unit already: cannot tell which to update"))
            continue
        existing = int(matches[0][0]) if matches else None
        try:
            person = service._import_person(
                conn, existing, name=row.name, kind=row.kind, title=row.title, unit=unit,
                endpoints=row.endpoints)
        except DispatchError as exc:
            errors.append(LineError(row.line, exc.message))
            continue
        if existing is None:
            created += 1
        else:
            updated += 1
        endpoint_count += conn.execute("SELECT COUNT(*) FROM endpoints WHERE person_id = ?",
                                       (person,)).fetchone()[0]
        for group in row.groups:
            if group not in groups:
                found = conn.execute("SELECT id, kind FROM groups WHERE name = ?",
                                     (group,)).fetchone()
                if found is not None and found["kind"] != "fixed":
                    errors.append(LineError(row.line, f"group {group!r} is a temporary group"))
                    continue
                if found is None:
                    cursor = conn.execute(
                        "INSERT INTO groups (name, kind, created_by, created_at)"
                        " VALUES (?, 'fixed', NULL, ?)", (group, now))
                    groups[group] = int(cursor.lastrowid or 0)
                    groups_created += 1
                else:
                    groups[group] = int(found["id"])
            conn.execute(
                "INSERT OR IGNORE INTO group_members (group_id, person_id, position)"
                " SELECT ?, ?, COALESCE(MAX(position) + 1, 0) FROM group_members"
                " WHERE group_id = ?", (groups[group], person, groups[group]))
        if len(errors) >= MAX_ERRORS:
            break
    if errors:
        raise ImportFailed(sorted(errors, key=lambda e: e.line)[:MAX_ERRORS])
    return ImportResult(units_created, created, updated, groups_created, endpoint_count)

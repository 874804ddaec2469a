"""Emergency resources (应急资源): what a command centre can send to an incident.

Six kinds share one table: rescue teams (救援队伍), experts (专家), supplies (物资) and
equipment (装备) kept in warehouses (仓库), shelters (避难场所) and vehicles (车辆).
Each has a name, a status, an optional location and address, and contacts whose
``phone`` is what the hub dials (a directory person's name, a SIP user or a number).
The fields only one kind has are declared once, in :data:`KIND_FIELDS`; the service
checks them, the CSV import reads them and the API publishes them from that table.

How it is stored, and why:

* ``resources`` keeps the common fields as columns and the kind's own fields as JSON
  text in ``details``, except two that SQL must see: ``quantity`` (the stock, taken and
  returned with a compare-and-set ``UPDATE`` so two dispatchers can never both take the
  last tent) and ``warehouse`` (part of the unique key ``(kind, name, warehouse)``:
  the same supply may sit in two warehouses; for other kinds it is ``''``).
* ``resource_dispatches`` is the history of who was sent where; it copies the
  resource's kind and name, so it outlives a removed resource.

Status rules (:func:`settle_status`): operators set ``available`` or ``unavailable``;
``dispatched`` is only ever the result of dispatching. A team, expert, shelter or
vehicle is ``dispatched`` from its dispatch to its release, and its status cannot be
changed by hand meanwhile. A supply or equipment stays ``available`` while stock
remains and is ``dispatched`` when all of it is out on an incident.

Every method checks all of its input before it writes anything, and writes in one
transaction. The incident's timeline (another service) is told after the commit: a
lost timeline line is logged, never a reason to undo a dispatch that happened.
"""

from __future__ import annotations

import builtins
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol, TypeVar

from storage.sql import Conflict as SqlConflict
from storage.sql import Database, Migration, Row, Tx

from .errors import Conflict, InvalidInput, NotFound
from .geo import LatLon, bounding_box, check_coordinates, distance_m

log = logging.getLogger(__name__)

RESOURCE_KINDS: Final = ("team", "expert", "supply", "equipment", "shelter", "vehicle")
KIND_LABELS: Final[Mapping[str, str]] = {
    "team": "救援队伍", "expert": "专家", "supply": "物资", "equipment": "装备",
    "shelter": "避难场所", "vehicle": "车辆"}
STATUSES: Final = ("available", "dispatched", "unavailable")
SETTABLE_STATUSES: Final = ("available", "unavailable")
"""What an operator may set; ``dispatched`` comes from dispatching."""
STOCK_KINDS: Final = frozenset({"supply", "equipment"})
"""Kinds held in stock: dispatching takes a quantity, releasing returns it."""
COMMON_FIELDS: Final = ("status", "location", "address", "contacts")
"""Fields every kind has besides ``kind`` and ``name``."""

NAME_MAX: Final = 128
TEXT_MAX: Final = 128
PERSON_MAX: Final = 64
PHONE_MAX: Final = 64
ADDRESS_MAX: Final = 256
NOTE_MAX: Final = 1000
MAX_CONTACTS: Final = 32
MAX_MEMBERS: Final = 500
MAX_COUNT: Final = 1_000_000_000
MAX_LIMIT: Final = 1000
DEFAULT_LIMIT: Final = 100
MAX_ID: Final = 2**63 - 1


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One kind-specific field."""

    name: str
    type: str
    """``text`` (a string or null), ``count`` (an integer >= 0) or ``names`` (a list of
    distinct names)."""
    description: str
    limit: int = TEXT_MAX
    """``text``: most characters; ``names``: most items."""
    nullable: bool = True


_STOCK_FIELDS: Final = (
    FieldSpec("quantity", "count", "库存数量: how many are in stock now (dispatching takes "
              "from it, releasing returns it)", nullable=False),
    FieldSpec("unit", "text", "计量单位: the unit of the quantity (顶, 箱, 台...)", 16),
    FieldSpec("warehouse", "text", "仓库: where it is kept; the same item may be stored in "
              "several warehouses"),
    FieldSpec("keeper", "text", "保管员: who keeps it", PERSON_MAX),
)
KIND_FIELDS: Final[Mapping[str, tuple[FieldSpec, ...]]] = {
    "team": (
        FieldSpec("leader", "text", "队长: the team leader's name", PERSON_MAX),
        FieldSpec("members", "names", "队员: the members' names", MAX_MEMBERS),
        FieldSpec("headcount", "count", "人数: how many people the team can send"),
    ),
    "expert": (
        FieldSpec("field", "text", "专业领域: the expert's specialty (危化品, 地质灾害...)"),
        FieldSpec("organisation", "text", "工作单位: where the expert works"),
    ),
    "supply": _STOCK_FIELDS,
    "equipment": _STOCK_FIELDS,
    "shelter": (
        FieldSpec("capacity", "count", "容纳人数: how many people it can take"),
        FieldSpec("occupancy", "count", "how many people are in it now (may exceed the "
                  "capacity when it is overcrowded)"),
    ),
    "vehicle": (
        FieldSpec("plate", "text", "车牌号: the number plate", 16),
        FieldSpec("vehicle_type", "text", "车辆类型: 消防车, 救护车, 越野车...", 64),
        FieldSpec("seats", "count", "座位数: seats"),
    ),
}
_COLUMN_FIELDS: Final = frozenset({"quantity", "warehouse"})
"""Kind fields kept in their own columns, not in ``details``."""


MIGRATIONS: Final = (
    Migration(1, "resources and their dispatches to incidents", """
        CREATE TABLE resources (
            id {pk},
            kind TEXT NOT NULL,
            name TEXT NOT NULL,
            warehouse TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL,
            lat {float},
            lon {float},
            address TEXT,
            contacts TEXT NOT NULL,
            details TEXT NOT NULL,
            quantity {bigint} CHECK (quantity IS NULL OR quantity >= 0),
            search TEXT NOT NULL,
            created_at {float} NOT NULL,
            updated_at {float} NOT NULL
        );
        CREATE UNIQUE INDEX resources_key ON resources (kind, name, warehouse);
        CREATE INDEX resources_status ON resources (status, kind);
        CREATE INDEX resources_lat ON resources (lat);
        CREATE TABLE resource_dispatches (
            id {pk},
            incident_id {bigint} NOT NULL,
            resource_id {bigint} REFERENCES resources (id) ON DELETE SET NULL,
            kind TEXT NOT NULL,
            name TEXT NOT NULL,
            quantity {bigint} CHECK (quantity IS NULL OR quantity > 0),
            unit TEXT,
            note TEXT,
            distance_m {float},
            dispatched_by TEXT,
            dispatched_at {float} NOT NULL,
            released_by TEXT,
            released_at {float}
        );
        CREATE INDEX resource_dispatches_incident ON resource_dispatches (incident_id, id);
        CREATE INDEX resource_dispatches_resource ON resource_dispatches (resource_id, released_at)
    """),
)


class IncidentLookup(Protocol):
    """What the resources need of the incidents feature."""

    def location(self, incident_id: int) -> tuple[float, float] | None:
        """The incident's ``(lat, lon)``; None if it has none. ``NotFound`` if unknown."""
        ...

    def record(self, incident_id: int, kind: str, data: dict[str, Any], *,
               actor: str | None = None) -> object:
        """Append an event to the incident's timeline (what it returns is not used)."""
        ...


class PlacedCall(Protocol):
    """A call another service placed (``dispatch.calls.DispatchCall``)."""

    @property
    def id(self) -> str: ...


CallT = TypeVar("CallT", bound=PlacedCall)


@dataclass(frozen=True, slots=True)
class Contact:
    """Someone to call about a resource."""

    name: str
    phone: str
    """What is dialled: a directory person's name, a SIP user or a number."""
    title: str | None = None
    """Their role (队长, 值班室, 保管员...)."""

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "phone": self.phone, "title": self.title}


@dataclass(frozen=True, slots=True)
class Resource:
    """One resource as stored (plus its distance, in a listing sorted by it)."""

    id: int
    kind: str
    name: str
    status: str
    location: LatLon | None
    address: str | None
    contacts: tuple[Contact, ...]
    details: Mapping[str, Any]
    """Every field of the kind (:data:`KIND_FIELDS`), None (or []) where unset."""
    dispatched_to: tuple[int, ...]
    """The incidents it is out on now (released dispatches excluded)."""
    created_at: float
    updated_at: float
    distance_m: float | None = None
    """Metres from the point a listing was sorted by; None if it has no location."""
    ranked: bool = False
    """True in a listing sorted by distance (``as_dict`` then has ``distance_m``)."""

    @property
    def in_stock(self) -> bool:
        return self.kind in STOCK_KINDS

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id, "kind": self.kind, "name": self.name, "status": self.status,
            "location": None if self.location is None else {
                "lat": self.location[0], "lon": self.location[1]},
            "address": self.address,
            "contacts": [c.as_dict() for c in self.contacts],
            **{key: list(value) if isinstance(value, tuple) else value
               for key, value in self.details.items()},
            "dispatched_to": list(self.dispatched_to),
            "created_at": self.created_at, "updated_at": self.updated_at,
        }
        if self.ranked:
            data["distance_m"] = self.distance_m
        return data


@dataclass(frozen=True, slots=True)
class Dispatch:
    """A resource sent to an incident (and, once released, back)."""

    id: int
    incident_id: int
    resource_id: int | None
    """None once the resource was removed (kind and name stay)."""
    kind: str
    name: str
    quantity: int | None
    """How many were taken from stock (supplies and equipment); None for the others."""
    unit: str | None
    note: str | None
    distance_m: float | None
    """How far the resource was from the incident when dispatched, if both had a location."""
    dispatched_by: str | None
    dispatched_at: float
    released_by: str | None
    released_at: float | None

    @property
    def active(self) -> bool:
        return self.released_at is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "incident_id": self.incident_id, "resource_id": self.resource_id,
            "kind": self.kind, "name": self.name, "quantity": self.quantity, "unit": self.unit,
            "note": self.note, "distance_m": self.distance_m,
            "state": "active" if self.active else "released",
            "dispatched_by": self.dispatched_by, "dispatched_at": self.dispatched_at,
            "released_by": self.released_by, "released_at": self.released_at,
        }


@dataclass(frozen=True, slots=True)
class ImportResult:
    created: int
    updated: int

    def to_dict(self) -> dict[str, int]:
        return {"created": self.created, "updated": self.updated}


# ------------------------------------------------------------------------------ checks


def _invalid(message: str, error_id: str = "invalid-input") -> InvalidInput:
    return InvalidInput(message, error_id)


def clean_text(value: object, what: str, limit: int, *, optional: bool) -> str | None:
    """Stripped text of 1-``limit`` characters without control characters; None for an
    empty optional one."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise _invalid(f"{what} must be a string, got {_type_name(value)}")
    text = value.strip()
    if not text:
        if optional:
            return None
        raise _invalid(f"{what} must not be empty")
    if len(text) > limit:
        raise _invalid(f"{what} must be at most {limit} characters, got {len(text)}")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise _invalid(f"{what} must not contain control characters")
    return text


def check_count(value: object, what: str, *, minimum: int = 0,
                maximum: int = MAX_COUNT) -> int:
    """An integer in ``minimum..maximum`` (a boolean is not one)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(f"{what} must be an integer >= {minimum}, got {_type_name(value)}",
                       f"invalid-{what}")
    if value < minimum:
        raise _invalid(f"{what} must be at least {minimum}, got {value}", f"invalid-{what}")
    if value > maximum:
        raise _invalid(f"{what} must be at most {maximum}, got {value}", f"invalid-{what}")
    return value


def check_id(value: object, what: str) -> int:
    """A row id (a positive integer a PostgreSQL BIGINT holds)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        raise _invalid(f"{what} must be a positive integer, got {value!r}", "invalid-id")
    return value


def check_status(value: object) -> str:
    if value == "dispatched":
        raise _invalid("status 'dispatched' is set by dispatching the resource to an "
                       "incident, not by hand", "invalid-status")
    if value not in SETTABLE_STATUSES:
        raise _invalid(f"status must be one of {', '.join(SETTABLE_STATUSES)}, got {value!r}",
                       "invalid-status")
    return str(value)


def check_location(value: object) -> LatLon | None:
    """``{"lat": .., "lon": ..}`` or a ``(lat, lon)`` pair; None for no location."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        extra = sorted(set(value) - {"lat", "lon"})
        if extra:
            raise _invalid(f"location has unknown field(s) {', '.join(map(str, extra))}: "
                           "give lat and lon", "invalid-location")
        if "lat" not in value or "lon" not in value:
            raise _invalid("location needs both lat and lon", "invalid-location")
        return check_coordinates(value["lat"], value["lon"])
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        return check_coordinates(value[0], value[1])
    raise _invalid(f"location must be {{lat, lon}} or null, got {_type_name(value)}",
                   "invalid-location")


_NUMBER = re.compile(r"\+?[\s().-]*(?:[0-9][\s().-]*){3,20}")


def check_phone(value: object, what: str) -> str:
    """What to dial. A telephone number loses its spaces, dashes, dots and brackets
    (``010-6512 3456`` dials as ``01065123456``); names are kept as written."""
    phone = clean_text(value, what, PHONE_MAX, optional=False)
    assert phone is not None
    if _NUMBER.fullmatch(phone):
        phone = re.sub(r"[\s().-]", "", phone)
    return phone


def check_contacts(value: object) -> tuple[Contact, ...]:
    """A list of ``{name, phone, title?}`` (or :class:`Contact`)."""
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise _invalid(f"contacts must be a list, got {_type_name(value)}", "invalid-contacts")
    if len(value) > MAX_CONTACTS:
        raise _invalid(f"contacts takes at most {MAX_CONTACTS} items, got {len(value)}",
                       "invalid-contacts")
    contacts: list[Contact] = []
    for index, item in enumerate(value):
        where = f"contacts[{index}]"
        if isinstance(item, Contact):
            item = item.as_dict()
        if not isinstance(item, Mapping):
            raise _invalid(f"{where} must be {{name, phone, title}}, got {_type_name(item)}",
                           "invalid-contacts")
        extra = sorted(set(item) - {"name", "phone", "title"})
        if extra:
            raise _invalid(f"{where} has unknown field(s) {', '.join(map(str, extra))}",
                           "invalid-contacts")
        name = clean_text(item.get("name"), f"{where}.name", PERSON_MAX, optional=False)
        assert name is not None
        contacts.append(Contact(name, check_phone(item.get("phone"), f"{where}.phone"),
                                clean_text(item.get("title"), f"{where}.title", PERSON_MAX,
                                           optional=True)))
    return tuple(contacts)


def check_names(value: object, what: str, limit: int) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise _invalid(f"{what} must be a list of names, got {_type_name(value)}",
                       f"invalid-{what}")
    if len(value) > limit:
        raise _invalid(f"{what} takes at most {limit} names, got {len(value)}",
                       f"invalid-{what}")
    names: list[str] = []
    for index, item in enumerate(value):
        name = clean_text(item, f"{what}[{index}]", PERSON_MAX, optional=False)
        assert name is not None
        if name in names:
            raise _invalid(f"{what}[{index}]: {name!r} is listed twice", f"invalid-{what}")
        names.append(name)
    return tuple(names)


def field_spec(kind: str, name: str) -> FieldSpec:
    """The spec of ``kind``'s field ``name``; ``InvalidInput`` naming it if it has none."""
    for spec in KIND_FIELDS[kind]:
        if spec.name == name:
            return spec
    fields = ", ".join(s.name for s in KIND_FIELDS[kind])
    raise _invalid(f"{name!r} is not a field of a {kind} ({KIND_LABELS[kind]}); its own "
                   f"fields are {fields}, and every kind has name, "
                   f"{', '.join(COMMON_FIELDS)}", "unknown-field")


def check_field(kind: str, name: str, value: object) -> Any:
    """``value`` checked and normalised as ``kind``'s field ``name`` (common ones too)."""
    if name == "name":
        return clean_text(value, "name", NAME_MAX, optional=False)
    if name == "status":
        return check_status(value)
    if name == "location":
        return check_location(value)
    if name == "address":
        return clean_text(value, "address", ADDRESS_MAX, optional=True)
    if name == "contacts":
        return check_contacts(value)
    if name == "kind":
        raise _invalid("the kind of a resource cannot change: remove it and add it again",
                       "kind-immutable")
    spec = field_spec(kind, name)
    if spec.type == "text":
        return clean_text(value, name, spec.limit, optional=True)
    if spec.type == "names":
        return check_names(value, name, spec.limit)
    if value is None and spec.nullable:
        return None
    return check_count(value, name)


def check_kind(kind: object) -> str:
    if kind not in RESOURCE_KINDS:
        raise _invalid(f"kind must be one of {', '.join(RESOURCE_KINDS)}, got {kind!r}",
                       "invalid-kind")
    return str(kind)


def settle_status(kind: str, current: str, requested: str | None, *,
                  quantity: int | None, open_dispatches: Sequence[int]) -> str:
    """The status a resource ends up with (see the module notes); ``Conflict`` for a
    change by hand that its dispatches forbid. ``open_dispatches`` are incident ids."""
    if kind not in STOCK_KINDS:
        if current == "dispatched" and open_dispatches:
            if requested is not None:
                raise Conflict(f"it is dispatched to incident {_incidents(open_dispatches)}: "
                               "release it first", "resource-dispatched")
            return current
        return requested or ("available" if current == "dispatched" else current)
    base = requested or ("available" if current == "dispatched" else current)
    if base == "unavailable":
        return base
    return "dispatched" if quantity == 0 and open_dispatches else "available"


def _incidents(ids: Iterable[int]) -> str:
    return ", ".join(str(i) for i in sorted(set(ids)))


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, Sequence):
        return "a list"
    return type(value).__name__


def _like(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# ----------------------------------------------------------------------------- service


class ResourceService:
    """Keeps the resources, ranks them by distance and dispatches them to incidents."""

    def __init__(self, db: Database, incidents: IncidentLookup, *,
                 clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._incidents = incidents
        self._clock = clock
        db.migrate("resources", MIGRATIONS, now=clock())

    # -- reading

    def get(self, resource_id: int) -> Resource:
        row = self._db.query_one("SELECT * FROM resources WHERE id = ?",
                                 (self._known_id(resource_id),))
        if row is None:
            raise NotFound(f"no resource {resource_id}", "resource-not-found")
        return self._resources([row])[0]

    def list(self, *, kind: str | None = None, status: str | None = None,
             query: str | None = None, near: LatLon | None = None,
             near_incident: int | None = None, radius_m: float | None = None,
             limit: int = DEFAULT_LIMIT) -> builtins.list[Resource]:
        """Resources matching every filter, by id; nearest first with ``near`` (a point)
        or ``near_incident`` (that incident's location), those without a location last
        (left out when ``radius_m`` limits the distance). ``query`` finds text in names,
        addresses, contacts and the kind's text fields, case-insensitively."""
        clauses: list[str] = []
        params: list[object] = []
        if kind is not None:
            clauses.append("kind = ?")
            params.append(check_kind(kind))
        if status is not None:
            if status not in STATUSES:
                raise _invalid(f"status must be one of {', '.join(STATUSES)}, got {status!r}",
                               "invalid-status")
            clauses.append("status = ?")
            params.append(status)
        if query is not None and query.strip():
            text = clean_text(query, "query", NAME_MAX, optional=False)
            assert text is not None
            clauses.append("search LIKE ? ESCAPE '\\'")
            params.append(_like(text))
        check_count(limit, "limit", minimum=1, maximum=MAX_LIMIT)
        if near is not None and near_incident is not None:
            raise _invalid("give either near (a point) or near_incident, not both",
                           "invalid-near")
        origin = None
        if near is not None:
            origin = check_coordinates(near[0], near[1], "near")
        elif near_incident is not None:
            origin = self._incident_location(near_incident)
            if origin is None:
                raise _invalid(f"incident {near_incident} has no coordinates: give a point "
                               "(lat and lon) to sort by instead", "incident-without-location")
        if radius_m is not None:
            if origin is None:
                raise _invalid("a radius needs a point to measure from (near)", "invalid-near")
            if isinstance(radius_m, bool) or not isinstance(radius_m, (int, float)) \
                    or not math.isfinite(radius_m) or radius_m <= 0:
                raise _invalid(f"radius must be a number of metres > 0, got {radius_m!r}",
                               "invalid-radius")
            box = bounding_box(origin, float(radius_m))
            clauses.append("lat BETWEEN ? AND ?")
            params += [box.south, box.north]
            ranges = box.lon_ranges()
            clauses.append("(" + " OR ".join(["lon BETWEEN ? AND ?"] * len(ranges)) + ")")
            params += [bound for pair in ranges for bound in pair]
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        if origin is None:
            rows = self._db.query(f"SELECT * FROM resources{where} ORDER BY id LIMIT ?",
                                  [*params, limit])
            return self._resources(rows)
        rows = self._db.query(f"SELECT * FROM resources{where} ORDER BY id", params)
        ranked: list[tuple[float, int, Row]] = []
        for row in rows:
            if row["lat"] is None:
                ranked.append((math.inf, int(row["id"]), row))
                continue
            distance = distance_m(origin, (float(row["lat"]), float(row["lon"])))
            if radius_m is None or distance <= radius_m:
                ranked.append((distance, int(row["id"]), row))
        ranked.sort(key=lambda item: (item[0], item[1]))
        chosen = ranked[:limit]
        return [replace(resource, ranked=True,
                        distance_m=None if math.isinf(d) else round(d, 1))
                for (d, _, _), resource in zip(
                    chosen, self._resources([row for _, _, row in chosen]), strict=True)]

    def dispatches(self, incident_id: int) -> builtins.list[Dispatch]:
        """Every dispatch to the incident (released ones included), oldest first."""
        self._incident_location(incident_id)
        rows = self._db.query("SELECT * FROM resource_dispatches WHERE incident_id = ?"
                              " ORDER BY id", (incident_id,))
        return [_dispatch(row) for row in rows]

    def get_dispatch(self, dispatch_id: int) -> Dispatch:
        row = self._db.query_one("SELECT * FROM resource_dispatches WHERE id = ?",
                                 (self._known_id(dispatch_id),))
        if row is None:
            raise NotFound(f"no dispatch {dispatch_id}", "dispatch-not-found")
        return _dispatch(row)

    # -- writing

    def create(self, kind: str, name: str, /, **fields: Any) -> Resource:
        """Add a resource: ``name`` and the fields of ``kind`` (see :data:`KIND_FIELDS`)
        and the common ones (status, location, address, contacts)."""
        values = self.new_values(check_kind(kind), name, fields)
        with self._db.transaction() as tx:
            try:
                resource_id = self.insert(tx, values)
            except SqlConflict:  # a concurrent insert won the race past _check_key
                raise self._duplicate(values) from None
        log.info("resource %d added: %s %s", resource_id, kind, values["name"])
        return self.get(resource_id)

    def update(self, resource_id: int, /, **changes: Any) -> Resource:
        """Change the fields given (PATCH semantics), checked as ``create`` does."""
        rid = self._known_id(resource_id)
        with self._db.transaction() as tx:
            current = self._load(tx, rid)
            values = self.changed_values(current, changes)
            try:
                self.rewrite(tx, current, values, requested_status=changes.get("status"))
            except SqlConflict:  # a concurrent write won the race past _check_key
                raise self._duplicate(values) from None
        return self.get(rid)

    def remove(self, resource_id: int) -> None:
        """Remove a resource that is not out on an incident (its history stays)."""
        rid = self._known_id(resource_id)
        with self._db.transaction() as tx:
            current = self._load(tx, rid)
            if current.dispatched_to:
                raise Conflict(f"resource {rid} is dispatched to incident "
                               f"{_incidents(current.dispatched_to)}: release it first",
                               "resource-dispatched")
            tx.execute("DELETE FROM resources WHERE id = ?", (rid,))
        log.info("resource %d removed: %s %s", rid, current.kind, current.name)

    def import_csv(self, data: bytes | str) -> ImportResult:
        """Add and update resources from CSV (see ``dispatch.resources_csv``): all or
        nothing, ``ImportFailed`` lists every bad line."""
        from .resources_csv import apply_rows, check_csv

        rows, errors = check_csv(data)
        with self._db.transaction() as tx:
            result = apply_rows(tx, rows, self, errors=errors)
        log.info("resources imported: %d added, %d updated", result.created, result.updated)
        return result

    def dispatch(self, incident_id: int, resource_id: int, *, quantity: int | None = None,
                 note: str | None = None, operator: str | None = None) -> Dispatch:
        """Send a resource to an incident; supplies and equipment send ``quantity``
        (1 to what is in stock) and keep the rest available. Recorded on the incident's
        timeline as ``resource.dispatched``."""
        origin = self._incident_location(incident_id)
        rid = self._known_id(resource_id)
        note = clean_text(note, "note", NOTE_MAX, optional=True)
        now = self._clock()
        with self._db.transaction() as tx:
            current = self._load(tx, rid)
            if current.status == "unavailable":
                raise Conflict(f"{current.name} is unavailable", "resource-unavailable")
            if current.in_stock:
                stock = int(current.details["quantity"])
                if current.status == "dispatched":
                    raise Conflict(f"{current.name}: none left in stock, all of it is "
                                   f"dispatched (incident {_incidents(current.dispatched_to)})",
                                   "out-of-stock")
                if quantity is None:
                    raise _invalid(f"quantity: say how many of {current.name} to send "
                                   f"(1-{stock} in stock)", "invalid-quantity")
                check_count(quantity, "quantity", minimum=1)
                if quantity > stock:
                    unit = current.details.get("unit") or ""
                    raise _invalid(f"quantity {quantity} is more than the {stock}{unit} of "
                                   f"{current.name} in stock", "not-enough-stock")
                left = stock - quantity
                status = settle_status(current.kind, current.status, None, quantity=left,
                                       open_dispatches=[*current.dispatched_to, incident_id])
                changed = tx.execute(
                    "UPDATE resources SET quantity = ?, status = ?, updated_at = ?"
                    " WHERE id = ? AND quantity = ? AND status = ?",
                    (left, status, now, rid, stock, current.status))
            else:
                if quantity is not None:
                    raise _invalid(f"quantity is for supplies and equipment; a {current.kind}"
                                   " is dispatched whole", "invalid-quantity")
                if current.status == "dispatched":
                    raise Conflict(f"{current.name} is already dispatched to incident "
                                   f"{_incidents(current.dispatched_to)}: release it first",
                                   "resource-dispatched")
                changed = tx.execute(
                    "UPDATE resources SET status = 'dispatched', updated_at = ?"
                    " WHERE id = ? AND status = 'available'", (now, rid))
            if changed != 1:
                raise Conflict(f"{current.name} changed meanwhile: try again", "changed")
            distance = None
            if origin is not None and current.location is not None:
                distance = round(distance_m(origin, current.location), 1)
            dispatch_id = tx.insert(
                "INSERT INTO resource_dispatches (incident_id, resource_id, kind, name,"
                " quantity, unit, note, distance_m, dispatched_by, dispatched_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (incident_id, rid, current.kind, current.name, quantity,
                 current.details.get("unit") if current.in_stock else None, note, distance,
                 operator, now))
        dispatch = self.get_dispatch(dispatch_id)
        log.info("resource %d (%s) dispatched to incident %d as %d", rid, current.name,
                 incident_id, dispatch_id)
        data = {"dispatch_id": dispatch.id, "resource_id": rid, "name": current.name,
                "kind": current.kind, "quantity": quantity, "note": note}
        if current.in_stock:
            data["unit"] = dispatch.unit
        if distance is not None:
            data["distance_m"] = distance
        self._tell(incident_id, "resource.dispatched", data, operator)
        return dispatch

    def release(self, dispatch_id: int, *, incident_id: int | None = None,
                operator: str | None = None) -> Dispatch:
        """Bring a dispatched resource back: available again, its quantity back in stock.
        ``incident_id``, if given, must be the dispatch's. Recorded on the timeline as
        ``resource.released``."""
        did = self._known_id(dispatch_id)
        now = self._clock()
        with self._db.transaction() as tx:
            rows = tx.query("SELECT * FROM resource_dispatches WHERE id = ?", (did,))
            if not rows or (incident_id is not None and rows[0]["incident_id"] != incident_id):
                where = "" if incident_id is None else f" of incident {incident_id}"
                raise NotFound(f"no dispatch {dispatch_id}{where}", "dispatch-not-found")
            before = _dispatch(rows[0])
            if not before.active:
                raise Conflict(f"dispatch {did} was released already", "already-released")
            tx.execute("UPDATE resource_dispatches SET released_at = ?, released_by = ?"
                       " WHERE id = ?", (now, operator, did))
            if before.resource_id is not None:
                self._give_back(tx, before, now)
        dispatch = self.get_dispatch(did)
        log.info("dispatch %d released (%s back from incident %d)", did, dispatch.name,
                 dispatch.incident_id)
        self._tell(dispatch.incident_id, "resource.released",
                   {"dispatch_id": did, "resource_id": dispatch.resource_id,
                    "name": dispatch.name, "kind": dispatch.kind,
                    "quantity": dispatch.quantity}, operator)
        return dispatch

    def call_contact(self, resource_id: int, contact: int | str,
                     dial: Callable[[str], CallT], *, incident_id: int | None = None,
                     operator: str | None = None) -> tuple[Resource, Contact, CallT]:
        """Call one of a resource's contacts (its index or name; the first of that name):
        ``dial(phone)`` places the call. With an ``incident_id`` (checked first), the
        incident's timeline gets ``resource.contact_called``."""
        resource = self.get(resource_id)
        chosen = self.contact(resource, contact)
        if incident_id is not None:
            self._incident_location(incident_id)
        placed = dial(chosen.phone)
        if incident_id is not None:
            self._tell(incident_id, "resource.contact_called",
                       {"resource_id": resource.id, "name": resource.name,
                        "kind": resource.kind, "contact": chosen.name,
                        "phone": chosen.phone, "call_id": placed.id}, operator)
        return resource, chosen, placed

    @staticmethod
    def contact(resource: Resource, which: int | str) -> Contact:
        """The resource's contact at index ``which``, or the first named ``which``."""
        if not resource.contacts:
            raise _invalid(f"{resource.name} has no contacts to call", "no-contacts")
        if isinstance(which, bool) or not isinstance(which, (int, str)):
            raise _invalid(f"contact must be an index or a name, got {which!r}",
                           "unknown-contact")
        if isinstance(which, int):
            if 0 <= which < len(resource.contacts):
                return resource.contacts[which]
            raise _invalid(f"contact {which} does not exist: {resource.name} has "
                           f"{len(resource.contacts)} (0-{len(resource.contacts) - 1})",
                           "unknown-contact")
        for item in resource.contacts:
            if item.name == which.strip():
                return item
        raise _invalid(f"{resource.name} has no contact named {which!r} (contacts: "
                       f"{', '.join(c.name for c in resource.contacts)})", "unknown-contact")

    # -- shared with the CSV import (inside its transaction)

    def new_values(self, kind: str, name: object, fields: Mapping[str, Any]) -> dict[str, Any]:
        """A new resource's checked values (every field, defaults filled in)."""
        values: dict[str, Any] = {
            "kind": kind, "name": check_field(kind, "name", name), "status": "available",
            "location": None, "address": None, "contacts": ()}
        for spec in KIND_FIELDS[kind]:
            values[spec.name] = () if spec.type == "names" else None
        if kind in STOCK_KINDS:
            values["quantity"] = 0
        for key, value in fields.items():
            if key in ("kind", "name"):
                raise _invalid(f"{key} is given twice", f"invalid-{key}")
            values[key] = check_field(kind, key, value)
        return values

    def changed_values(self, current: Resource, changes: Mapping[str, Any]) -> dict[str, Any]:
        """``current``'s values with ``changes`` (checked) applied."""
        values = _values(current)
        for key, value in changes.items():
            if key == "kind" and value == current.kind:
                continue
            values[key] = check_field(current.kind, key, value)
        return values

    def insert(self, tx: Tx, values: Mapping[str, Any]) -> int:
        self._check_key(tx, values, None)
        now = self._clock()
        status = settle_status(values["kind"], "available", values["status"],
                               quantity=values.get("quantity"), open_dispatches=())
        return tx.insert(
            "INSERT INTO resources (kind, name, warehouse, status, lat, lon, address, contacts,"
            " details, quantity, search, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (values["kind"], values["name"], *_columns(values, status), now, now))

    def rewrite(self, tx: Tx, current: Resource, values: Mapping[str, Any], *,
                requested_status: object = None) -> None:
        """Store ``values`` over ``current`` (a status change by hand only when
        ``requested_status`` is given)."""
        self._check_key(tx, values, current.id)
        try:
            status = settle_status(current.kind, current.status,
                                   None if requested_status is None else values["status"],
                                   quantity=values.get("quantity"),
                                   open_dispatches=current.dispatched_to)
        except Conflict as exc:
            raise Conflict(f"{current.name}: {exc.message}", exc.error_id) from None
        tx.execute(
            "UPDATE resources SET name = ?, warehouse = ?, status = ?, lat = ?, lon = ?,"
            " address = ?, contacts = ?, details = ?, quantity = ?, search = ?, updated_at = ?"
            " WHERE id = ?",
            (values["name"], *_columns(values, status), self._clock(), current.id))

    def find(self, tx: Tx, kind: str, name: str, warehouse: str | None) -> Resource | None:
        """The resource with that import key, if any (``warehouse`` counts for stock)."""
        rows = tx.query("SELECT * FROM resources WHERE kind = ? AND name = ? AND warehouse = ?",
                        (kind, name, (warehouse or "") if kind in STOCK_KINDS else ""))
        return self._resources(rows, tx)[0] if rows else None

    # -- internals

    def _load(self, tx: Tx, resource_id: int) -> Resource:
        rows = tx.query("SELECT * FROM resources WHERE id = ?", (resource_id,))
        if not rows:
            raise NotFound(f"no resource {resource_id}", "resource-not-found")
        return self._resources(rows, tx)[0]

    def _resources(self, rows: Sequence[Row], tx: Tx | None = None) -> builtins.list[Resource]:
        if not rows:
            return []
        ids = [int(row["id"]) for row in rows]
        reader = tx.query if tx is not None else self._db.query
        out: dict[int, list[int]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for row in reader(
                    "SELECT resource_id, incident_id FROM resource_dispatches WHERE"
                    f" released_at IS NULL AND resource_id IN ({', '.join('?' * len(chunk))})"
                    " ORDER BY id", chunk):
                out.setdefault(int(row["resource_id"]), []).append(int(row["incident_id"]))
        return [_resource(row, tuple(out.get(int(row["id"]), ()))) for row in rows]

    def _check_key(self, tx: Tx, values: Mapping[str, Any], own_id: int | None) -> None:
        found = self.find(tx, values["kind"], values["name"], values.get("warehouse"))
        if found is not None and found.id != own_id:
            raise self._duplicate(values, found.id)

    @staticmethod
    def _duplicate(values: Mapping[str, Any], other: int | None = None) -> Conflict:
        where = ""
        if values["kind"] in STOCK_KINDS:
            where = f" in warehouse {values['warehouse']!r}" if values.get("warehouse") \
                else " without a warehouse"
        which = "" if other is None else f" (resource {other})"
        return Conflict(f"there is a {values['kind']} named {values['name']!r}{where} "
                        f"already{which}", "resource-exists")

    def _give_back(self, tx: Tx, dispatch: Dispatch, now: float) -> None:
        assert dispatch.resource_id is not None
        current = self._load(tx, dispatch.resource_id)
        still_out = builtins.list(current.dispatched_to)
        if dispatch.incident_id in still_out:
            still_out.remove(dispatch.incident_id)
        if current.in_stock:
            stock = int(current.details["quantity"]) + (dispatch.quantity or 0)
            status = settle_status(current.kind, current.status, None, quantity=stock,
                                   open_dispatches=still_out)
            tx.execute("UPDATE resources SET quantity = ?, status = ?, updated_at = ?"
                       " WHERE id = ?", (stock, status, now, current.id))
        elif current.status == "dispatched" and not still_out:
            tx.execute("UPDATE resources SET status = 'available', updated_at = ?"
                       " WHERE id = ?", (now, current.id))

    def _incident_location(self, incident_id: int) -> LatLon | None:
        check_id(incident_id, "incident_id")
        found = self._incidents.location(incident_id)
        return None if found is None else (float(found[0]), float(found[1]))

    @staticmethod
    def _known_id(value: int) -> int:
        check_id(value, "id")
        return value

    def _tell(self, incident_id: int, kind: str, data: dict[str, Any],
              actor: str | None) -> None:
        try:
            self._incidents.record(incident_id, kind, data, actor=actor)
        except Exception:
            # What it reports happened (and is committed); undoing it would be worse
            # than a missing line on the timeline.
            log.exception("incident %d: cannot record %s on the timeline", incident_id, kind)


def _values(resource: Resource) -> dict[str, Any]:
    return {"kind": resource.kind, "name": resource.name, "status": resource.status,
            "location": resource.location, "address": resource.address,
            "contacts": resource.contacts, **resource.details}


def _columns(values: Mapping[str, Any], status: str) -> tuple[object, ...]:
    """warehouse, status, lat, lon, address, contacts, details, quantity, search."""
    kind = values["kind"]
    details = {spec.name: builtins.list(values[spec.name]) if spec.type == "names"
               else values[spec.name]
               for spec in KIND_FIELDS[kind] if spec.name not in _COLUMN_FIELDS}
    location = values["location"]
    contacts: tuple[Contact, ...] = values["contacts"]
    words = [values["name"], values["address"], KIND_LABELS[kind],
             *(part for c in contacts for part in (c.name, c.phone, c.title))]
    for spec in KIND_FIELDS[kind]:
        if spec.type == "text":
            words.append(values[spec.name])
        elif spec.type == "names":
            words += values[spec.name]
    search = "\n".join(str(w) for w in words if w).lower()
    return ((values.get("warehouse") or "") if kind in STOCK_KINDS else "", status,
            None if location is None else location[0],
            None if location is None else location[1],
            values["address"],
            json.dumps([c.as_dict() for c in contacts], ensure_ascii=False),
            json.dumps(details, ensure_ascii=False),
            values.get("quantity") if kind in STOCK_KINDS else None,
            search)


def _resource(row: Row, dispatched_to: tuple[int, ...]) -> Resource:
    kind = str(row["kind"])
    stored = json.loads(row["details"])
    details: dict[str, Any] = {}
    for spec in KIND_FIELDS[kind]:
        if spec.name == "quantity":
            details["quantity"] = int(row["quantity"])
        elif spec.name == "warehouse":
            details["warehouse"] = row["warehouse"] or None
        elif spec.type == "names":
            details[spec.name] = tuple(stored.get(spec.name) or ())
        else:
            details[spec.name] = stored.get(spec.name)
    return Resource(
        id=int(row["id"]), kind=kind, name=str(row["name"]), status=str(row["status"]),
        location=None if row["lat"] is None else (float(row["lat"]), float(row["lon"])),
        address=row["address"],
        contacts=tuple(Contact(c["name"], c["phone"], c.get("title"))
                       for c in json.loads(row["contacts"])),
        details=details, dispatched_to=dispatched_to,
        created_at=float(row["created_at"]), updated_at=float(row["updated_at"]))


def _dispatch(row: Row) -> Dispatch:
    return Dispatch(
        id=int(row["id"]), incident_id=int(row["incident_id"]),
        resource_id=None if row["resource_id"] is None else int(row["resource_id"]),
        kind=str(row["kind"]), name=str(row["name"]),
        quantity=None if row["quantity"] is None else int(row["quantity"]),
        unit=row["unit"], note=row["note"],
        distance_m=None if row["distance_m"] is None else float(row["distance_m"]),
        dispatched_by=row["dispatched_by"], dispatched_at=float(row["dispatched_at"]),
        released_by=row["released_by"],
        released_at=None if row["released_at"] is None else float(row["released_at"]))

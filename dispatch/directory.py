"""The directory: units, people and devices, their endpoints, groups, and live status.

Design notes:

* **Organisation tree.** Units nest (``parent_id``); people and devices sit in at most
  one unit. Each person has endpoints in preferred order (``position`` 0 first):
  ``sip`` (a hub user), ``mobile`` (a number reached through a trunk), ``browser``
  (an operator's console), ``app`` and ``radio`` (for their gateways to come). An
  endpoint belongs to one person: its id is ``kind:address`` (``sip:1001``,
  ``mobile:13800138000``), the same whoever owns it.
* **Every SIP user is a person** unless a stored person already has it as an endpoint:
  the directory shows such a user as an *implicit* person ``user:NAME`` (named after
  the user's display name) with the one endpoint ``sip:NAME``. ``hub user add`` is
  thus all the simplest set-up needs, and ``hub user remove`` takes the person away
  with the user. Editing an implicit person (or putting it in a group) first turns it
  into a stored one (``p<N>``); ``user:NAME`` stays an alias of whoever owns
  ``sip:NAME``.
* **Groups** are fixed (kept, managed by supervisors) or temporary (made by
  dispatchers for the incident at hand). Members are people, in order.
* **Live status** is derived, never stored: ``offline``/``idle`` from the store's
  unexpired registrations (a SIP endpoint; a mobile endpoint is always ``idle``, the
  trunk being assumed up; the other kinds are ``offline`` until their gateways exist),
  overridden by the live legs the endpoint has: ``talking`` (a leg up) beats ``held``
  beats ``ringing`` (a leg new or ringing). ``RegistrationChanged`` and
  ``LegStateChanged`` on the bus say *when* to look again; the look itself recomputes
  from the source of truth, so a missed or reordered event cannot leave a lamp wrong.
  Binding expiry publishes no event: a timer armed at the next expiry (at most
  ``RECHECK_S`` away) catches it. Changes go out as ``EndpointStatusChanged``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from bridges.events import Event, EventBus, LegStateChanged, RegistrationChanged
from bridges.model import Leg

from .db import Database
from .errors import Conflict, InvalidInput, NotFound

log = logging.getLogger(__name__)

ENDPOINT_KINDS: Final = ("sip", "mobile", "browser", "app", "radio")
PERSON_KINDS: Final = ("person", "device")
GROUP_KINDS: Final = ("fixed", "temporary")
STATUSES: Final = ("offline", "idle", "ringing", "held", "talking")
"""Every endpoint status, from least to most engaged."""

RECHECK_S: Final = 30.0
"""Longest time between two full status checks (binding expiry, CLI changes)."""

_RANK: Final = {status: rank for rank, status in enumerate(STATUSES)}
_LEG_STATUS: Final = {"new": "ringing", "ringing": "ringing", "up": "talking", "held": "held"}
# Which endpoint kinds a leg of a given kind can be (its peer is the address).
_LEG_KINDS: Final[Mapping[str, tuple[str, ...]]] = {
    "sip-user": ("sip",),
    "sip-trunk": ("mobile",),
    "sip": ("sip", "mobile"),  # a room member: a user or a trunk caller
    "webrtc": ("browser", "app"),
    "browser": ("browser",),
    "app": ("app",),
    "radio": ("radio",),
}
_MIN_SUFFIX: Final = 8  # digits two numbers must share at the end to be the same phone

_NAME_MAX: Final = 128
_LABEL_MAX: Final = 64
_SIP_RE: Final = re.compile(r"[A-Za-z0-9._~-]{1,64}")
_MOBILE_RE: Final = re.compile(r"\+?[0-9]{3,20}")
_MOBILE_NOISE: Final = re.compile(r"[\s().-]")
_HANDLE_RE: Final = re.compile(r"[A-Za-z0-9._~@+-]{1,64}")
_ID_RE: Final = re.compile(r"([upg])([1-9][0-9]{0,17})")

LegSource = Callable[[], Iterable[Leg]]
"""Every live leg the hub has (calls and rooms); the composition root provides it."""


# ------------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class EndpointStatusChanged(Event):
    endpoint_id: str
    """The endpoint (``sip:1001``)."""
    person_id: str
    """Whose it is (``p3``, or ``user:1001`` for an implicit person)."""
    old: str
    """Status before: offline, idle, ringing, held, talking."""
    new: str
    """Status now."""


@dataclass(frozen=True, slots=True)
class DirectoryChanged(Event):
    what: str
    """unit, person, endpoint, group, or import (many at once)."""
    id: str | None
    """The object's id, when one object changed."""
    change: str
    """created, updated, removed or imported: consoles refetch what they show."""


# ------------------------------------------------------------------------------ records


class Unset(enum.Enum):
    UNSET = enum.auto()


UNSET: Final = Unset.UNSET
"""Marks an update argument that was not given (``None`` may be a value)."""


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """An endpoint as asked for: kind and address (normalised by the service)."""

    kind: str
    address: str
    label: str | None = None


@dataclass(frozen=True, slots=True)
class Unit:
    id: str
    name: str
    parent_id: str | None
    path: str
    """Names from the root, joined by ``/``."""
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "parent_id": self.parent_id,
                "path": self.path, "created_at": self.created_at}


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: str
    kind: str
    address: str
    person_id: str
    position: int
    label: str | None
    status: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "address": self.address,
                "person_id": self.person_id, "position": self.position, "label": self.label,
                "status": self.status}


@dataclass(frozen=True, slots=True)
class Person:
    id: str
    name: str
    kind: str
    title: str | None
    unit_id: str | None
    implicit: bool
    """True for a SIP user shown as a person (not stored; see the module notes)."""
    endpoints: tuple[str, ...]
    """Endpoint ids, preferred first."""
    groups: tuple[str, ...]
    status: str
    """The most engaged status of its endpoints."""
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "kind": self.kind, "title": self.title,
                "unit_id": self.unit_id, "implicit": self.implicit,
                "endpoints": list(self.endpoints), "groups": list(self.groups),
                "status": self.status, "created_at": self.created_at}


@dataclass(frozen=True, slots=True)
class Group:
    id: str
    name: str
    kind: str
    members: tuple[str, ...]
    """Person ids, in order."""
    created_by: str | None
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "kind": self.kind,
                "members": list(self.members), "created_by": self.created_by,
                "created_at": self.created_at}


@dataclass(frozen=True, slots=True)
class DirectoryView:
    units: tuple[Unit, ...]
    people: tuple[Person, ...]
    groups: tuple[Group, ...]
    endpoints: tuple[Endpoint, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"units": [u.to_dict() for u in self.units],
                "people": [p.to_dict() for p in self.people],
                "groups": [g.to_dict() for g in self.groups],
                "endpoints": [e.to_dict() for e in self.endpoints]}


@dataclass(frozen=True, slots=True)
class ImportResult:
    units_created: int
    people_created: int
    people_updated: int
    groups_created: int
    endpoints: int
    """Endpoints the imported rows now have, in all."""

    def to_dict(self) -> dict[str, int]:
        return {"units_created": self.units_created, "people_created": self.people_created,
                "people_updated": self.people_updated, "groups_created": self.groups_created,
                "endpoints": self.endpoints}


# --------------------------------------------------------------------------- validation


def clean_text(value: object, what: str, limit: int = _NAME_MAX, *,
               optional: bool = False) -> str | None:
    """A name, title or label: stripped, 1-``limit`` characters, no control characters."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string", f"invalid-{what.replace(' ', '-')}")
    text = value.strip()
    if not text and optional:
        return None
    if not text or len(text) > limit or any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise InvalidInput(
            f"invalid {what} {value!r}: 1-{limit} characters without control characters",
            f"invalid-{what.replace(' ', '-')}")
    return text


def _required(value: object, what: str, limit: int = _NAME_MAX) -> str:
    text = clean_text(value, what, limit)
    assert text is not None
    return text


def normalise_address(kind: str, address: str) -> str:
    """The canonical address of an endpoint of ``kind``; ``InvalidInput`` if malformed."""
    if kind not in ENDPOINT_KINDS:
        raise InvalidInput(
            f"unknown endpoint kind {kind!r}: one of {', '.join(ENDPOINT_KINDS)}",
            "invalid-endpoint-kind")
    if not isinstance(address, str):
        raise InvalidInput("endpoint address must be a string", "invalid-endpoint-address")
    text = address.strip()
    if kind == "sip":
        ok = _SIP_RE.fullmatch(text) is not None
        rule = "a hub user name (1-64 of A-Z a-z 0-9 . _ ~ -)"
    elif kind == "mobile":
        text = _MOBILE_NOISE.sub("", text)
        ok = _MOBILE_RE.fullmatch(text) is not None
        rule = "a phone number: 3-20 digits, optionally after +"
    else:
        ok = _HANDLE_RE.fullmatch(text) is not None
        rule = "1-64 of A-Z a-z 0-9 . _ ~ @ + -"
    if not ok:
        raise InvalidInput(f"invalid {kind} address {address!r}: {rule}",
                           "invalid-endpoint-address")
    return text


def parse_endpoint_id(endpoint_id: str) -> tuple[str, str]:
    """``"sip:1001"`` -> ``("sip", "1001")``; ``NotFound`` if it can't be an endpoint id."""
    kind, sep, address = endpoint_id.partition(":")
    if not sep or kind not in ENDPOINT_KINDS or not address:
        raise NotFound(f"no endpoint {endpoint_id!r}: endpoint ids are KIND:ADDRESS "
                       f"with KIND one of {', '.join(ENDPOINT_KINDS)}", "endpoint-not-found")
    return kind, address


def _row_id(value: str, prefix: str, what: str) -> int:
    match = _ID_RE.fullmatch(value)
    if match is None or match.group(1) != prefix:
        raise NotFound(f"no {what} {value!r}", f"{what}-not-found")
    return int(match.group(2))


def _digits(number: str) -> str:
    return number.lstrip("+")


def combine(base: str, leg_states: Iterable[str]) -> str:
    """An endpoint's status: its base (offline/idle) or its most engaged leg's."""
    best = base
    for state in leg_states:
        status = _LEG_STATUS.get(state)
        if status is not None and _RANK[status] > _RANK[best]:
            best = status
    return best


def most_engaged(statuses: Iterable[str]) -> str:
    """A person's status: the most engaged of its endpoints' (offline if it has none)."""
    return max(statuses, key=_RANK.__getitem__, default="offline")


def _leg_state(leg: Leg) -> str:
    state: object = leg.state
    return str(getattr(state, "value", state))


# ------------------------------------------------------------------------------ service


@dataclass
class _Tree:
    """Units by row id, with their paths."""

    rows: dict[int, sqlite3.Row] = field(default_factory=dict)

    def path(self, unit_id: int) -> str:
        names: list[str] = []
        seen: set[int] = set()
        current: int | None = unit_id
        while current is not None and current in self.rows and current not in seen:
            seen.add(current)
            row = self.rows[current]
            names.append(row["name"])
            current = row["parent_id"]
        return "/".join(reversed(names))

    def subtree(self, unit_id: int) -> set[int]:
        found = {unit_id}
        changed = True
        while changed:
            changed = False
            for row_id, row in self.rows.items():
                if row["parent_id"] in found and row_id not in found:
                    found.add(row_id)
                    changed = True
        return found


class DirectoryService:
    """Reads and edits the directory; keeps every endpoint's live status.

    ``bus`` and ``legs`` are optional (the CLI has neither): without a bus no status
    is tracked or published, without ``legs`` no endpoint is ever ringing or talking.
    Call ``start()`` on the running loop to arm the expiry timer, ``close()`` to stop.
    """

    def __init__(
        self,
        db: Database,
        *,
        bus: EventBus | None = None,
        legs: LegSource | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._bus = bus
        self._legs: LegSource = legs or (lambda: ())
        self._clock = clock
        self._last: dict[str, str] = {}
        self._leg_endpoints: dict[str, tuple[str, ...]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._unsubscribe: Callable[[], None] | None = None
        if bus is not None:
            self._last = dict(self.statuses())
            self._unsubscribe = bus.subscribe(self._on_event)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Arm the timer that notices expired registrations (needs a running loop)."""
        self._arm()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        now = self._clock()
        row = self._db.query(
            "SELECT MIN(expires_at) FROM registrations WHERE expires_at > ?", (now,))
        delay = RECHECK_S
        if row and row[0][0] is not None:
            delay = min(RECHECK_S, max(0.05, float(row[0][0]) - now + 0.05))
        self._timer = loop.call_later(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        try:
            self.refresh()
        except Exception:  # the database may be busy; try again next time
            log.exception("directory status refresh failed")
        self._arm()

    # -- live status ---------------------------------------------------------------------

    def statuses(self, only: Iterable[str] | None = None) -> dict[str, str]:
        """Endpoint id -> status, for every endpoint (or those of ``only`` that exist)."""
        if only is None:
            return self._compute(self._endpoint_keys())
        endpoints: list[tuple[str, str]] = []
        for endpoint_id in dict.fromkeys(only):
            kind, _, address = endpoint_id.partition(":")
            if kind == "sip":
                exists = self._db.query("SELECT 1 FROM users WHERE name = ?", (address,))
            else:
                exists = self._db.query(
                    "SELECT 1 FROM endpoints WHERE kind = ? AND address = ?", (kind, address))
            if exists:
                endpoints.append((kind, address))
        return self._compute(endpoints)

    def refresh(self) -> None:
        """Recompute every status and publish what changed."""
        self._publish_changes(self.statuses(), full=True)

    def _endpoint_keys(self) -> list[tuple[str, str]]:
        rows = self._db.query(
            "SELECT kind, address FROM endpoints UNION"
            " SELECT 'sip', name FROM users")
        return [(r[0], r[1]) for r in rows]

    def _compute(self, endpoints: Sequence[tuple[str, str]]) -> dict[str, str]:
        now = self._clock()
        sip = [address for kind, address in endpoints if kind == "sip"]
        if len(sip) <= 100:  # a few endpoints (an event): ask about them only
            marks = ",".join("?" * len(sip))
            registered = {r[0] for r in self._db.query(
                f"SELECT DISTINCT aor FROM registrations WHERE expires_at > ? AND aor IN ({marks})",
                (now, *sip))} if sip else set()
        else:
            registered = {r[0] for r in self._db.query(
                "SELECT DISTINCT aor FROM registrations WHERE expires_at > ?", (now,))}
        mobiles = [address for kind, address in endpoints if kind == "mobile"]
        live = self._live_states(mobiles)
        result: dict[str, str] = {}
        for kind, address in endpoints:
            endpoint_id = f"{kind}:{address}"
            if kind == "sip":
                base = "idle" if address in registered else "offline"
            elif kind == "mobile":
                base = "idle"
            else:
                base = "offline"
            result[endpoint_id] = combine(base, live.get(endpoint_id, ()))
        return result

    def _live_states(self, mobiles: Sequence[str]) -> dict[str, list[str]]:
        by_suffix: dict[str, list[str]] = {}
        for number in mobiles:
            by_suffix.setdefault(_digits(number)[-_MIN_SUFFIX:], []).append(number)
        live: dict[str, list[str]] = {}
        for leg in self._legs():
            state = _leg_state(leg)
            if state == "ended":
                continue
            for endpoint_id in self._endpoints_of_leg(leg.kind, leg.peer, by_suffix):
                live.setdefault(endpoint_id, []).append(state)
        return live

    @staticmethod
    def _endpoints_of_leg(kind: str, peer: str,
                          by_suffix: Mapping[str, list[str]]) -> list[str]:
        found: list[str] = []
        for endpoint_kind in _LEG_KINDS.get(kind, ENDPOINT_KINDS):
            if endpoint_kind != "mobile":
                found.append(f"{endpoint_kind}:{peer}")
                continue
            digits = _digits(_MOBILE_NOISE.sub("", peer))
            if not digits.isdigit():
                continue
            for number in by_suffix.get(digits[-_MIN_SUFFIX:], ()):
                theirs = _digits(number)
                shorter = min(len(theirs), len(digits))
                if theirs == digits or (
                        shorter >= _MIN_SUFFIX
                        and (theirs.endswith(digits) or digits.endswith(theirs))):
                    found.append(f"mobile:{number}")
        return found

    def _on_event(self, event: Event) -> None:
        if isinstance(event, RegistrationChanged):
            self._recheck((f"sip:{event.user}",))
        elif isinstance(event, LegStateChanged):
            endpoint_ids = self._leg_endpoints.get(event.leg_id)
            if endpoint_ids is None:
                endpoint_ids = self._find_leg_endpoints(event.leg_id)
            if event.new == "ended":
                self._leg_endpoints.pop(event.leg_id, None)
            elif endpoint_ids:
                self._leg_endpoints[event.leg_id] = endpoint_ids
            self._recheck(endpoint_ids)

    def _find_leg_endpoints(self, leg_id: str) -> tuple[str, ...]:
        for leg in self._legs():
            if leg.id == leg_id:
                mobiles = [r[0] for r in self._db.query(
                    "SELECT address FROM endpoints WHERE kind = 'mobile'")]
                by_suffix: dict[str, list[str]] = {}
                for number in mobiles:
                    by_suffix.setdefault(_digits(number)[-_MIN_SUFFIX:], []).append(number)
                return tuple(self._endpoints_of_leg(leg.kind, leg.peer, by_suffix))
        return ()

    def _recheck(self, endpoint_ids: Iterable[str]) -> None:
        """Look at these endpoints again, once the event that asked is fully delivered.

        On the loop, the look waits for ``call_soon`` so every subscriber (the consoles
        included) sees the cause (a registration, a leg) before its effect (a lamp).
        """
        wanted = list(endpoint_ids)
        if not wanted:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._publish_changes(self.statuses(wanted), full=False)
            return
        loop.call_soon(self._recheck_now, wanted)

    def _recheck_now(self, endpoint_ids: list[str]) -> None:
        try:
            self._publish_changes(self.statuses(endpoint_ids), full=False)
        except Exception:
            log.exception("directory: status check of %s failed", ", ".join(endpoint_ids))

    def _publish_changes(self, current: Mapping[str, str], *, full: bool) -> None:
        changes = [(key, self._last.get(key, "offline"), status)
                   for key, status in current.items() if self._last.get(key) != status]
        if full:
            for gone in set(self._last) - set(current):
                del self._last[gone]
        for key, old, new in changes:
            self._last[key] = new
            if self._bus is not None and old != new:
                self._bus.publish(EndpointStatusChanged(
                    endpoint_id=key, person_id=self._owner(key), old=old, new=new))

    def _owner(self, endpoint_id: str) -> str:
        kind, address = endpoint_id.split(":", 1)
        rows = self._db.query(
            "SELECT person_id FROM endpoints WHERE kind = ? AND address = ?", (kind, address))
        return f"p{rows[0][0]}" if rows else f"user:{address}"

    def user_changed(self, name: str, change: str) -> None:
        """A SIP user was added or removed elsewhere (the users API): tell the consoles."""
        self._changed("person", f"user:{name}", change)

    def _changed(self, what: str, object_id: str | None, change: str) -> None:
        if self._bus is not None:
            self._bus.publish(DirectoryChanged(what=what, id=object_id, change=change))
            self.refresh()

    # -- reading ---------------------------------------------------------------------------

    def view(self, *, query: str | None = None, unit_id: str | None = None) -> DirectoryView:
        """The directory, or the part matching ``query`` and/or inside ``unit_id``.

        ``query`` matches (case-insensitively, anywhere) names, titles, unit paths,
        endpoint addresses and labels, and group names (a matching group brings its
        members). A unit brings the people of all its sub-units.
        """
        tree = self._tree()
        units = [self._unit(tree, row_id) for row_id in sorted(tree.rows)]
        people, endpoints = self._people()
        groups = self._groups()
        if unit_id is not None:
            root = _row_id(unit_id, "u", "unit")
            if root not in tree.rows:
                raise NotFound(f"no unit {unit_id!r}", "unit-not-found")
            inside = {f"u{u}" for u in tree.subtree(root)}
            people = [p for p in people if p.unit_id in inside]
            units = [u for u in units if u.id in inside]
        if query is not None and query.strip():
            needle = query.strip().casefold()
            unit_paths = {u.id: u.path for u in units}
            by_id = {e.id: e for e in endpoints}
            matched_groups = [g for g in groups if needle in g.name.casefold()]
            via_group = {m for g in matched_groups for m in g.members}

            def hit(person: Person) -> bool:
                texts = [person.name, person.title or "",
                         unit_paths.get(person.unit_id or "", "")]
                for endpoint_id in person.endpoints:
                    texts += [by_id[endpoint_id].address, by_id[endpoint_id].label or ""]
                return person.id in via_group or any(needle in t.casefold() for t in texts)

            people = [p for p in people if hit(p)]
            groups = matched_groups
            units = [u for u in units if needle in u.path.casefold()]
        kept = {e for p in people for e in p.endpoints}
        return DirectoryView(tuple(units), tuple(people), tuple(groups),
                             tuple(e for e in endpoints if e.id in kept))

    def _tree(self) -> _Tree:
        return _Tree({int(r["id"]): r for r in self._db.query("SELECT * FROM units")})

    @staticmethod
    def _unit(tree: _Tree, row_id: int) -> Unit:
        row = tree.rows[row_id]
        parent = row["parent_id"]
        return Unit(f"u{row_id}", row["name"], None if parent is None else f"u{parent}",
                    tree.path(row_id), float(row["created_at"]))

    def _people(self, only: int | None = None,
                only_user: str | None = None) -> tuple[list[Person], list[Endpoint]]:
        """Stored and implicit people (or one of them) with their endpoints and status."""
        if only is not None:
            person_rows = self._db.query("SELECT * FROM people WHERE id = ?", (only,))
        elif only_user is not None:
            person_rows = []
        else:
            person_rows = self._db.query("SELECT * FROM people ORDER BY name, id")
        ids = [int(r["id"]) for r in person_rows]
        marks = ",".join("?" * len(ids))
        endpoint_rows = self._db.query(
            f"SELECT * FROM endpoints WHERE person_id IN ({marks})"
            " ORDER BY person_id, position, id", ids) if ids else []
        member_rows = self._db.query(
            f"SELECT group_id, person_id FROM group_members WHERE person_id IN ({marks})"
            " ORDER BY group_id", ids) if ids else []
        if only is not None:
            user_rows: list[sqlite3.Row] = []
        else:
            user_rows = self._db.query(
                "SELECT name, display_name, created_at FROM users"
                " WHERE (? IS NULL OR name = ?) AND name NOT IN"
                " (SELECT address FROM endpoints WHERE kind = 'sip') ORDER BY name",
                (only_user, only_user))
        keys = [(r["kind"], r["address"]) for r in endpoint_rows]
        keys += [("sip", r["name"]) for r in user_rows]
        statuses = self._compute(keys)
        endpoints: list[Endpoint] = []
        by_person: dict[int, list[str]] = {}
        for r in endpoint_rows:
            endpoint_id = f"{r['kind']}:{r['address']}"
            endpoints.append(Endpoint(endpoint_id, r["kind"], r["address"], f"p{r['person_id']}",
                                      int(r["position"]), r["label"], statuses[endpoint_id]))
            by_person.setdefault(int(r["person_id"]), []).append(endpoint_id)
        groups_of: dict[int, list[str]] = {}
        for r in member_rows:
            groups_of.setdefault(int(r["person_id"]), []).append(f"g{r['group_id']}")
        people: list[Person] = []
        for r in person_rows:
            row_id = int(r["id"])
            mine = by_person.get(row_id, [])
            people.append(Person(
                f"p{row_id}", r["name"], r["kind"], r["title"],
                None if r["unit_id"] is None else f"u{r['unit_id']}", False, tuple(mine),
                tuple(groups_of.get(row_id, ())), most_engaged(statuses[e] for e in mine),
                float(r["created_at"])))
        for r in user_rows:
            endpoint_id = f"sip:{r['name']}"
            status = statuses[endpoint_id]
            endpoints.append(Endpoint(endpoint_id, "sip", r["name"], f"user:{r['name']}", 0,
                                      None, status))
            people.append(Person(f"user:{r['name']}", r["display_name"] or r["name"], "person",
                                 None, None, True, (endpoint_id,), (), status,
                                 float(r["created_at"])))
        return people, endpoints

    def _groups(self, only: int | None = None) -> list[Group]:
        rows = self._db.query(
            "SELECT * FROM groups WHERE (? IS NULL OR id = ?) ORDER BY name", (only, only))
        members: dict[int, list[str]] = {}
        for r in self._db.query(
                "SELECT group_id, person_id FROM group_members WHERE (? IS NULL OR group_id = ?)"
                " ORDER BY group_id, position", (only, only)):
            members.setdefault(int(r["group_id"]), []).append(f"p{r['person_id']}")
        return [Group(f"g{r['id']}", r["name"], r["kind"], tuple(members.get(int(r["id"]), ())),
                      r["created_by"], float(r["created_at"])) for r in rows]

    def list_units(self) -> list[Unit]:
        return list(self.view().units)

    def get_unit(self, unit_id: str) -> Unit:
        row_id = _row_id(unit_id, "u", "unit")
        tree = self._tree()
        if row_id not in tree.rows:
            raise NotFound(f"no unit {unit_id!r}", "unit-not-found")
        return self._unit(tree, row_id)

    def endpoints_named(self, name: str) -> list[tuple[str, str]] | None:
        """The endpoints ``(kind, address)``, preferred first, of the one person called
        ``name`` (stored, or a SIP user's implicit person, named by its display name);
        None when nobody or several are. Two indexed queries, no statuses: what dialling
        by name needs (a 50-member group call asks 50 times)."""
        stored = self._db.query("SELECT id FROM people WHERE name = ? LIMIT 2", (name,))
        implicit = self._db.query(
            "SELECT name FROM users WHERE COALESCE(display_name, name) = ? AND name NOT IN"
            " (SELECT address FROM endpoints WHERE kind = 'sip') LIMIT 2", (name,))
        if len(stored) + len(implicit) != 1:
            return None
        if implicit:
            return [("sip", str(implicit[0]["name"]))]
        return [(str(r["kind"]), str(r["address"])) for r in self._db.query(
            "SELECT kind, address FROM endpoints WHERE person_id = ? ORDER BY position, id",
            (stored[0]["id"],))]

    def list_people(self) -> list[Person]:
        return self._people()[0]

    def get_person(self, person_id: str) -> Person:
        """A stored person (``p3``) or a SIP user's person (``user:1001``, even if stored)."""
        if person_id.startswith("user:"):
            name = person_id[5:]
            rows = self._db.query(
                "SELECT person_id FROM endpoints WHERE kind = 'sip' AND address = ?", (name,))
            if rows:
                return self._people(only=int(rows[0][0]))[0][0]
            people = self._people(only_user=name)[0] if name else []
            if not people:
                raise NotFound(f"no person {person_id!r}: no SIP user {name!r}",
                               "person-not-found")
            return people[0]
        people = self._people(only=_row_id(person_id, "p", "person"))[0]
        if not people:
            raise NotFound(f"no person {person_id!r}", "person-not-found")
        return people[0]

    def get_endpoint(self, endpoint_id: str) -> Endpoint:
        kind, address = parse_endpoint_id(endpoint_id)
        rows = self._db.query(
            "SELECT person_id FROM endpoints WHERE kind = ? AND address = ?", (kind, address))
        if rows:
            person_id = f"p{rows[0][0]}"
        elif kind == "sip" and self._db.query("SELECT 1 FROM users WHERE name = ?", (address,)):
            person_id = f"user:{address}"
        else:
            raise NotFound(f"no endpoint {endpoint_id!r}", "endpoint-not-found")
        _, endpoints = self._people(
            only=int(person_id[1:]) if person_id.startswith("p") else None,
            only_user=address if person_id.startswith("user:") else None)
        for endpoint in endpoints:
            if endpoint.id == endpoint_id:
                return endpoint
        raise NotFound(f"no endpoint {endpoint_id!r}", "endpoint-not-found")  # pragma: no cover

    def list_groups(self) -> list[Group]:
        return self._groups()

    def get_group(self, group_id: str) -> Group:
        groups = self._groups(_row_id(group_id, "g", "group"))
        if not groups:
            raise NotFound(f"no group {group_id!r}", "group-not-found")
        return groups[0]

    def snapshot(self) -> dict[str, Any]:
        """The whole directory with live statuses, as JSON-ready data."""
        return self.view().to_dict()

    # -- units -------------------------------------------------------------------------------

    def create_unit(self, name: str, parent_id: str | None = None) -> Unit:
        clean = _required(name, "unit name")
        if "/" in clean:
            raise InvalidInput(f"invalid unit name {name!r}: '/' separates units in a path",
                               "invalid-unit-name")
        with self._db.transaction() as conn:
            parent = None if parent_id is None else self._unit_row(conn, parent_id)
            try:
                cursor = conn.execute(
                    "INSERT INTO units (name, parent_id, created_at) VALUES (?, ?, ?)",
                    (clean, parent, self._clock()))
            except sqlite3.IntegrityError:
                where = "at the top" if parent is None else f"in unit u{parent}"
                raise Conflict(f"a unit named {clean!r} already exists {where}",
                               "unit-exists") from None
            row_id = int(cursor.lastrowid or 0)
        self._changed("unit", f"u{row_id}", "created")
        return self.get_unit(f"u{row_id}")

    def update_unit(self, unit_id: str, *, name: str | Unset = UNSET,
                    parent_id: str | None | Unset = UNSET) -> Unit:
        with self._db.transaction() as conn:
            row_id = self._unit_row(conn, unit_id)
            if not isinstance(name, Unset):
                clean = _required(name, "unit name")
                if "/" in clean:
                    raise InvalidInput(
                        f"invalid unit name {name!r}: '/' separates units in a path",
                        "invalid-unit-name")
                try:
                    conn.execute("UPDATE units SET name = ? WHERE id = ?", (clean, row_id))
                except sqlite3.IntegrityError:
                    raise Conflict(f"a unit named {clean!r} already exists there",
                                   "unit-exists") from None
            if not isinstance(parent_id, Unset):
                parent = None if parent_id is None else self._unit_row(conn, parent_id)
                if parent is not None:
                    tree = _Tree({int(r["id"]): r for r in conn.execute("SELECT * FROM units")})
                    if parent in tree.subtree(row_id):
                        raise Conflict(
                            f"cannot move unit {unit_id} under {parent_id}: "
                            f"{parent_id} is {unit_id} or inside it", "unit-cycle")
                try:
                    conn.execute("UPDATE units SET parent_id = ? WHERE id = ?", (parent, row_id))
                except sqlite3.IntegrityError:
                    raise Conflict("a unit of that name already exists there",
                                   "unit-exists") from None
        self._changed("unit", unit_id, "updated")
        return self.get_unit(unit_id)

    def remove_unit(self, unit_id: str) -> None:
        with self._db.transaction() as conn:
            row_id = self._unit_row(conn, unit_id)
            units = conn.execute("SELECT COUNT(*) FROM units WHERE parent_id = ?",
                                 (row_id,)).fetchone()[0]
            people = conn.execute("SELECT COUNT(*) FROM people WHERE unit_id = ?",
                                  (row_id,)).fetchone()[0]
            if units or people:
                raise Conflict(
                    f"unit {unit_id} is not empty ({units} sub-unit(s), {people} person(s)):"
                    " move or remove them first", "unit-not-empty")
            conn.execute("DELETE FROM units WHERE id = ?", (row_id,))
        self._changed("unit", unit_id, "removed")

    @staticmethod
    def _unit_row(conn: sqlite3.Connection, unit_id: str) -> int:
        if not isinstance(unit_id, str):
            raise InvalidInput("a unit id must be a string like 'u3'", "invalid-unit-id")
        row_id = _row_id(unit_id, "u", "unit")
        if conn.execute("SELECT 1 FROM units WHERE id = ?", (row_id,)).fetchone() is None:
            raise NotFound(f"no unit {unit_id!r}", "unit-not-found")
        return row_id

    # -- people and endpoints -----------------------------------------------------------------

    def create_person(self, name: str, *, kind: str = "person", title: str | None = None,
                      unit_id: str | None = None,
                      endpoints: Sequence[EndpointSpec] = ()) -> Person:
        clean = _required(name, "name")
        self._check_kind(kind)
        clean_title = clean_text(title, "title", optional=True)
        with self._db.transaction() as conn:
            unit = None if unit_id is None else self._unit_row(conn, unit_id)
            cursor = conn.execute(
                "INSERT INTO people (name, kind, title, unit_id, created_at)"
                " VALUES (?, ?, ?, ?, ?)", (clean, kind, clean_title, unit, self._clock()))
            row_id = int(cursor.lastrowid or 0)
            self._set_endpoints(conn, row_id, endpoints)
        self._changed("person", f"p{row_id}", "created")
        return self.get_person(f"p{row_id}")

    def update_person(self, person_id: str, *, name: str | Unset = UNSET,
                      kind: str | Unset = UNSET, title: str | None | Unset = UNSET,
                      unit_id: str | None | Unset = UNSET,
                      endpoints: Sequence[EndpointSpec] | Unset = UNSET) -> Person:
        """Change a person; an implicit one (``user:NAME``) is stored first."""
        with self._db.transaction() as conn:
            row_id = self._person_row(conn, person_id, materialise=True)
            if not isinstance(name, Unset):
                conn.execute("UPDATE people SET name = ? WHERE id = ?",
                             (_required(name, "name"), row_id))
            if not isinstance(kind, Unset):
                self._check_kind(kind)
                conn.execute("UPDATE people SET kind = ? WHERE id = ?", (kind, row_id))
            if not isinstance(title, Unset):
                conn.execute("UPDATE people SET title = ? WHERE id = ?",
                             (clean_text(title, "title", optional=True), row_id))
            if not isinstance(unit_id, Unset):
                unit = None if unit_id is None else self._unit_row(conn, unit_id)
                conn.execute("UPDATE people SET unit_id = ? WHERE id = ?", (unit, row_id))
            if not isinstance(endpoints, Unset):
                self._set_endpoints(conn, row_id, endpoints)
        self._changed("person", f"p{row_id}", "updated")
        return self.get_person(f"p{row_id}")

    def remove_person(self, person_id: str) -> None:
        if person_id.startswith("user:") and not self._db.query(
                "SELECT 1 FROM endpoints WHERE kind = 'sip' AND address = ?", (person_id[5:],)):
            self.get_person(person_id)  # NotFound if there is no such user
            raise Conflict(
                f"{person_id} is SIP user {person_id[5:]!r} shown as a person: remove the user"
                " (hub user remove) to take it out of the directory", "implicit-person")
        with self._db.transaction() as conn:
            row_id = self._person_row(conn, person_id, materialise=False)
            conn.execute("DELETE FROM people WHERE id = ?", (row_id,))
        self._changed("person", person_id, "removed")

    def add_endpoint(self, person_id: str, spec: EndpointSpec,
                     position: int | None = None) -> Endpoint:
        """Give a person one more endpoint, last or at ``position`` (0 = preferred)."""
        kind, address = self._check_spec(spec)
        label = clean_text(spec.label, "label", _LABEL_MAX, optional=True)
        with self._db.transaction() as conn:
            row_id = self._person_row(conn, person_id, materialise=True)
            self._claim(conn, row_id, kind, address)
            if conn.execute("SELECT 1 FROM endpoints WHERE kind = ? AND address = ?",
                            (kind, address)).fetchone() is not None:
                raise Conflict(f"p{row_id} already has endpoint {kind}:{address}: PATCH it to "
                               "move it in the order", "endpoint-exists")
            order = self._order(conn, row_id)
            at = len(order) if position is None else max(0, min(position, len(order)))
            conn.execute(
                "INSERT INTO endpoints (person_id, kind, address, sip_user, position, label)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (row_id, kind, address, address if kind == "sip" else None, len(order), label))
            new_id = int(conn.execute("SELECT last_insert_rowid()").fetchone()[0])
            order.insert(at, new_id)
            self._renumber(conn, order)
        self._changed("endpoint", f"{kind}:{address}", "created")
        return self.get_endpoint(f"{kind}:{address}")

    def update_endpoint(self, endpoint_id: str, *, label: str | None | Unset = UNSET,
                        position: int | Unset = UNSET) -> Endpoint:
        kind, address = parse_endpoint_id(endpoint_id)
        with self._db.transaction() as conn:
            row = self._endpoint_row(conn, kind, address, materialise=True)
            if not isinstance(label, Unset):
                conn.execute("UPDATE endpoints SET label = ? WHERE id = ?",
                             (clean_text(label, "label", _LABEL_MAX, optional=True), row["id"]))
            if not isinstance(position, Unset):
                order = self._order(conn, int(row["person_id"]))
                order.remove(int(row["id"]))
                order.insert(max(0, min(position, len(order))), int(row["id"]))
                self._renumber(conn, order)
        self._changed("endpoint", endpoint_id, "updated")
        return self.get_endpoint(endpoint_id)

    def remove_endpoint(self, endpoint_id: str) -> None:
        kind, address = parse_endpoint_id(endpoint_id)
        with self._db.transaction() as conn:
            row = conn.execute("SELECT * FROM endpoints WHERE kind = ? AND address = ?",
                               (kind, address)).fetchone()
            if row is None:
                if kind == "sip" and conn.execute("SELECT 1 FROM users WHERE name = ?",
                                                  (address,)).fetchone():
                    raise Conflict(
                        f"{endpoint_id} is SIP user {address!r}'s own endpoint: remove the user"
                        " (hub user remove) to take it out of the directory",
                        "implicit-endpoint")
                raise NotFound(f"no endpoint {endpoint_id!r}", "endpoint-not-found")
            conn.execute("DELETE FROM endpoints WHERE id = ?", (row["id"],))
            self._renumber(conn, self._order(conn, int(row["person_id"])))
        self._changed("endpoint", endpoint_id, "removed")

    @staticmethod
    def _check_kind(kind: object) -> None:
        if kind not in PERSON_KINDS:
            raise InvalidInput(f"invalid kind {kind!r}: one of {', '.join(PERSON_KINDS)}",
                               "invalid-kind")

    @staticmethod
    def _check_spec(spec: EndpointSpec) -> tuple[str, str]:
        if not isinstance(spec.kind, str):
            raise InvalidInput("endpoint kind must be a string", "invalid-endpoint-kind")
        return spec.kind, normalise_address(spec.kind, spec.address)

    def _set_endpoints(self, conn: sqlite3.Connection, row_id: int,
                       specs: Sequence[EndpointSpec]) -> None:
        """Make a person's endpoints exactly ``specs``, in that order."""
        wanted: list[tuple[str, str, str | None]] = []
        for spec in specs:
            kind, address = self._check_spec(spec)
            label = clean_text(spec.label, "label", _LABEL_MAX, optional=True)
            if any(k == kind and a == address for k, a, _ in wanted):
                raise Conflict(f"endpoint {kind}:{address} is listed twice",
                               "duplicate-endpoint")
            wanted.append((kind, address, label))
        keep = {(k, a) for k, a, _ in wanted}
        for row in conn.execute("SELECT id, kind, address FROM endpoints WHERE person_id = ?",
                                (row_id,)).fetchall():
            if (row["kind"], row["address"]) not in keep:
                conn.execute("DELETE FROM endpoints WHERE id = ?", (row["id"],))
        for position, (kind, address, label) in enumerate(wanted):
            existing = conn.execute(
                "SELECT id, person_id FROM endpoints WHERE kind = ? AND address = ?",
                (kind, address)).fetchone()
            if existing is not None and int(existing["person_id"]) == row_id:
                conn.execute("UPDATE endpoints SET position = ?, label = ? WHERE id = ?",
                             (position, label, existing["id"]))
                continue
            self._claim(conn, row_id, kind, address)
            conn.execute(
                "INSERT INTO endpoints (person_id, kind, address, sip_user, position, label)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (row_id, kind, address, address if kind == "sip" else None, position, label))

    @staticmethod
    def _claim(conn: sqlite3.Connection, row_id: int, kind: str, address: str) -> None:
        """Refuse an endpoint that doesn't exist (SIP) or belongs to someone else."""
        if kind == "sip" and conn.execute("SELECT 1 FROM users WHERE name = ?",
                                          (address,)).fetchone() is None:
            raise NotFound(f"no SIP user {address!r}: add it first (hub user add)",
                           "sip-user-not-found")
        owner = conn.execute("SELECT person_id FROM endpoints WHERE kind = ? AND address = ?",
                             (kind, address)).fetchone()
        if owner is not None and int(owner[0]) != row_id:
            raise Conflict(f"endpoint {kind}:{address} already belongs to p{owner[0]}",
                           "endpoint-taken")

    @staticmethod
    def _order(conn: sqlite3.Connection, row_id: int) -> list[int]:
        return [int(r[0]) for r in conn.execute(
            "SELECT id FROM endpoints WHERE person_id = ? ORDER BY position, id", (row_id,))]

    @staticmethod
    def _renumber(conn: sqlite3.Connection, order: Sequence[int]) -> None:
        conn.executemany("UPDATE endpoints SET position = ? WHERE id = ?",
                         [(position, row_id) for position, row_id in enumerate(order)])

    def _person_row(self, conn: sqlite3.Connection, person_id: str, *,
                    materialise: bool) -> int:
        """The stored row of a person; a SIP user's implicit person is stored if asked."""
        if not isinstance(person_id, str):
            raise InvalidInput("a person id must be a string like 'p3' or 'user:1001'",
                               "invalid-person-id")
        if person_id.startswith("user:"):
            name = person_id[5:]
            row = conn.execute("SELECT person_id FROM endpoints WHERE kind = 'sip'"
                               " AND address = ?", (name,)).fetchone()
            if row is not None:
                return int(row[0])
            user = conn.execute("SELECT name, display_name FROM users WHERE name = ?",
                                (name,)).fetchone()
            if user is None:
                raise NotFound(f"no person {person_id!r}: no SIP user {name!r}",
                               "person-not-found")
            if not materialise:
                raise Conflict(f"{person_id} is not stored", "implicit-person")
            return self._materialise(conn, user["name"], user["display_name"])
        row_id = _row_id(person_id, "p", "person")
        if conn.execute("SELECT 1 FROM people WHERE id = ?", (row_id,)).fetchone() is None:
            raise NotFound(f"no person {person_id!r}", "person-not-found")
        return row_id

    def _materialise(self, conn: sqlite3.Connection, user: str, display: str | None) -> int:
        cursor = conn.execute(
            "INSERT INTO people (name, kind, title, unit_id, created_at)"
            " VALUES (?, 'person', NULL, NULL, ?)", (display or user, self._clock()))
        row_id = int(cursor.lastrowid or 0)
        conn.execute("INSERT INTO endpoints (person_id, kind, address, sip_user, position)"
                     " VALUES (?, 'sip', ?, ?, 0)", (row_id, user, user))
        log.info("directory: SIP user %s stored as person p%d", user, row_id)
        return row_id

    def _endpoint_row(self, conn: sqlite3.Connection, kind: str, address: str, *,
                      materialise: bool) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM endpoints WHERE kind = ? AND address = ?",
                           (kind, address)).fetchone()
        if row is None and kind == "sip" and materialise:
            self._person_row(conn, f"user:{address}", materialise=True)
            row = conn.execute("SELECT * FROM endpoints WHERE kind = ? AND address = ?",
                               (kind, address)).fetchone()
        if row is None:
            raise NotFound(f"no endpoint {kind}:{address}", "endpoint-not-found")
        result: sqlite3.Row = row
        return result

    # -- groups ----------------------------------------------------------------------------

    def create_group(self, name: str, *, kind: str = "fixed",
                     members: Sequence[str] = (), created_by: str | None = None) -> Group:
        clean = _required(name, "group name")
        if kind not in GROUP_KINDS:
            raise InvalidInput(f"invalid group kind {kind!r}: one of {', '.join(GROUP_KINDS)}",
                               "invalid-group-kind")
        with self._db.transaction() as conn:
            try:
                cursor = conn.execute(
                    "INSERT INTO groups (name, kind, created_by, created_at) VALUES (?, ?, ?, ?)",
                    (clean, kind, created_by, self._clock()))
            except sqlite3.IntegrityError:
                raise Conflict(f"a group named {clean!r} already exists",
                               "group-exists") from None
            row_id = int(cursor.lastrowid or 0)
            self._set_members(conn, row_id, members)
        self._changed("group", f"g{row_id}", "created")
        return self.get_group(f"g{row_id}")

    def update_group(self, group_id: str, *, name: str | Unset = UNSET,
                     members: Sequence[str] | Unset = UNSET) -> Group:
        with self._db.transaction() as conn:
            row_id = self._group_row(conn, group_id)
            if not isinstance(name, Unset):
                clean = _required(name, "group name")
                try:
                    conn.execute("UPDATE groups SET name = ? WHERE id = ?", (clean, row_id))
                except sqlite3.IntegrityError:
                    raise Conflict(f"a group named {clean!r} already exists",
                                   "group-exists") from None
            if not isinstance(members, Unset):
                self._set_members(conn, row_id, members)
        self._changed("group", group_id, "updated")
        return self.get_group(group_id)

    def remove_group(self, group_id: str) -> None:
        with self._db.transaction() as conn:
            row_id = self._group_row(conn, group_id)
            conn.execute("DELETE FROM groups WHERE id = ?", (row_id,))
        self._changed("group", group_id, "removed")

    @staticmethod
    def _group_row(conn: sqlite3.Connection, group_id: str) -> int:
        row_id = _row_id(group_id, "g", "group")
        if conn.execute("SELECT 1 FROM groups WHERE id = ?", (row_id,)).fetchone() is None:
            raise NotFound(f"no group {group_id!r}", "group-not-found")
        return row_id

    def _set_members(self, conn: sqlite3.Connection, row_id: int,
                     members: Sequence[str]) -> None:
        rows: list[int] = []
        for member in members:
            person = self._person_row(conn, member, materialise=True)
            if person in rows:
                raise Conflict(f"member {member!r} is listed twice (it is {f'p{person}'})",
                               "duplicate-member")
            rows.append(person)
        conn.execute("DELETE FROM group_members WHERE group_id = ?", (row_id,))
        conn.executemany(
            "INSERT INTO group_members (group_id, person_id, position) VALUES (?, ?, ?)",
            [(row_id, person, position) for position, person in enumerate(rows)])

    # -- import ------------------------------------------------------------------------------

    def import_csv(self, data: bytes | str) -> ImportResult:
        """Import people, units and fixed groups from CSV (see ``dispatch.directory_csv``).

        All or nothing: ``ImportFailed`` lists every bad line and nothing is written.
        """
        from .directory_csv import apply_rows, check_csv

        rows, errors = check_csv(data)
        with self._db.transaction() as conn:
            result = apply_rows(conn, rows, self, now=self._clock(), errors=errors)
        self._changed("import", None, "imported")
        return result

    # Used by the importer, inside its transaction.
    def _import_person(self, conn: sqlite3.Connection, row_id: int | None, *, name: str,
                       kind: str, title: str | None, unit: int | None,
                       endpoints: Sequence[EndpointSpec] | None) -> int:
        if row_id is None:
            cursor = conn.execute(
                "INSERT INTO people (name, kind, title, unit_id, created_at)"
                " VALUES (?, ?, ?, ?, ?)", (name, kind, title, unit, self._clock()))
            row_id = int(cursor.lastrowid or 0)
        else:
            conn.execute("UPDATE people SET kind = ?, title = ? WHERE id = ?",
                         (kind, title, row_id))
        if endpoints is not None:
            self._set_endpoints(conn, row_id, endpoints)
        return row_id

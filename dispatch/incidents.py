"""Incidents (接报) and their timelines, on the portable data layer.

An incident is what a call reports: type, level I-IV, location, status (reported ->
verified -> responding -> closed), reporter. Its *timeline* is every fact about it in
order: the incident's own changes, every call placed for it and each leg's outcome,
recordings, plan activations and the acknowledgement board's changes, notifications,
messages, resources dispatched. Facts are appended, never edited.

Calls attach on their own: a call created with ``incident_id`` (or the call an
incident was made from) is followed through the bus's ``CallChanged`` events, and each
leg's new state or outcome becomes a timeline entry.

Timelines are read far more often than written and can be long (a large response runs
to thousands of entries): each entry's data is stored as JSON text and
``timeline_json`` splices the stored text into the answer instead of parsing and
re-encoding every entry.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from bridges.events import Event, EventBus
from storage.sql import Database, Migration, Row, Tx

from . import taxonomy
from .errors import Conflict, InvalidInput, NotFound

log = logging.getLogger(__name__)

STATUSES: Final = ("reported", "verified", "responding", "closed")
COMPONENT: Final = "incidents"
MAX_TEXT: Final = 4000

MIGRATIONS: Final = (
    Migration(1, "incidents, timelines, plans and responses", """
CREATE TABLE incidents (
  id {pk},
  title TEXT NOT NULL,
  type TEXT NOT NULL,
  category TEXT NOT NULL,
  level INTEGER NOT NULL,
  status TEXT NOT NULL,
  lat {float},
  lon {float},
  address TEXT,
  reporter TEXT,
  reporter_phone TEXT,
  description TEXT,
  source_call TEXT,
  reported_at {float} NOT NULL,
  created_at {float} NOT NULL,
  updated_at {float} NOT NULL,
  created_by TEXT,
  closed_at {float});
CREATE INDEX incidents_by_status ON incidents (status, reported_at);
CREATE TABLE incident_events (
  id {pk},
  incident_id {bigint} NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
  at {float} NOT NULL,
  kind TEXT NOT NULL,
  actor TEXT,
  data TEXT NOT NULL);
CREATE INDEX incident_events_by_incident ON incident_events (incident_id, id);
CREATE TABLE incident_calls (
  incident_id {bigint} NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
  call_id TEXT NOT NULL,
  attached_at {float} NOT NULL,
  PRIMARY KEY (incident_id, call_id));
CREATE TABLE incident_recordings (
  incident_id {bigint} NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
  recording_id TEXT NOT NULL,
  call_id TEXT,
  started_at {float} NOT NULL,
  PRIMARY KEY (incident_id, recording_id));
CREATE TABLE plans (
  id {pk},
  name TEXT NOT NULL UNIQUE,
  incident_type TEXT NOT NULL,
  level INTEGER NOT NULL,
  escalate_after_s {float} NOT NULL,
  body TEXT NOT NULL,
  created_at {float} NOT NULL,
  updated_at {float} NOT NULL);
CREATE TABLE responses (
  id {pk},
  incident_id {bigint} NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
  plan_id {bigint} NOT NULL REFERENCES plans (id),
  plan_name TEXT NOT NULL,
  level INTEGER NOT NULL,
  state TEXT NOT NULL,
  call_id TEXT,
  started_at {float} NOT NULL,
  started_by TEXT,
  ended_at {float},
  ended_by TEXT);
CREATE INDEX responses_by_incident ON responses (incident_id, id);
CREATE TABLE responders (
  id {pk},
  response_id {bigint} NOT NULL REFERENCES responses (id) ON DELETE CASCADE,
  role TEXT NOT NULL,
  person TEXT NOT NULL,
  deputy TEXT,
  deputy_for {bigint},
  level INTEGER,
  state TEXT NOT NULL,
  escalated INTEGER NOT NULL,
  notified INTEGER NOT NULL,
  endpoint TEXT,
  attempts INTEGER NOT NULL,
  leg_id TEXT,
  deadline {float},
  answered_at {float},
  confirmed_at {float},
  updated_at {float} NOT NULL);
CREATE INDEX responders_by_response ON responders (response_id, id);
CREATE TABLE tasks (
  id {pk},
  incident_id {bigint} NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
  response_id {bigint},
  title TEXT NOT NULL,
  role TEXT,
  due_at {float},
  state TEXT NOT NULL,
  done_at {float},
  done_by TEXT);
CREATE INDEX tasks_by_incident ON tasks (incident_id, id)
"""),
)


@dataclass(frozen=True, slots=True)
class IncidentChanged(Event):
    incident: dict[str, Any]
    """The incident's fields (without its timeline), as the list gives them."""


@dataclass(frozen=True, slots=True)
class TimelineAppended(Event):
    incident_id: int
    """The incident."""
    entry: dict[str, Any]
    """The new timeline entry: id, at, kind, actor, data."""


@dataclass(frozen=True, slots=True)
class CallFacts:
    """What an incident takes over from the call it is made from."""

    call_id: str
    caller: str | None
    started_at: float
    recording_id: str | None


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def clean_text(value: object, field: str, limit: int = 200, *,
               required: bool = False) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip() and not required):
        if required:
            raise InvalidInput(f"{field} is required")
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string")
    text = value.strip()
    if required and not text:
        raise InvalidInput(f"{field} must not be empty")
    if len(text) > limit:
        raise InvalidInput(f"{field} is longer than {limit} characters")
    if any(ord(c) < 32 and c not in "\n\t" for c in text):
        raise InvalidInput(f"{field} must not contain control characters")
    return text


def coordinates(value: object, field: str = "location") -> tuple[float | None, float | None,
                                                               str | None]:
    """``{"lat", "lon", "address"?}`` checked: WGS-84 degrees, finite, in range."""
    if value is None:
        return None, None, None
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{field} must be an object with lat and lon")
    unknown = set(value) - {"lat", "lon", "address"}
    if unknown:
        raise InvalidInput(f"{field}: unknown field {sorted(unknown)[0]!r}")
    lat, lon = value.get("lat"), value.get("lon")
    if lat is None and lon is None:
        return None, None, clean_text(value.get("address"), f"{field}.address")
    for name, v, bound in (("lat", lat, 90.0), ("lon", lon, 180.0)):
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise InvalidInput(f"{field}.{name} must be a number")
        if not math.isfinite(v) or not -bound <= v <= bound:
            raise InvalidInput(f"{field}.{name} must be between {-bound:g} and {bound:g}")
    assert isinstance(lat, int | float) and isinstance(lon, int | float)
    return float(lat), float(lon), clean_text(value.get("address"), f"{field}.address")


def incident_dict(row: Row) -> dict[str, Any]:
    location = None
    if row["lat"] is not None and row["lon"] is not None:
        location = {"lat": row["lat"], "lon": row["lon"]}
    kind = taxonomy.TYPES.get(row["type"])
    return {
        "id": row["id"], "title": row["title"], "type": row["type"],
        "type_zh": kind.zh if kind else row["type"], "type_en": kind.en if kind else row["type"],
        "category": row["category"], "level": row["level"],
        "level_label": taxonomy.level_label(row["level"]), "status": row["status"],
        "location": location, "address": row["address"], "reporter": row["reporter"],
        "reporter_phone": row["reporter_phone"], "description": row["description"],
        "source_call": row["source_call"], "reported_at": row["reported_at"],
        "created_at": row["created_at"], "updated_at": row["updated_at"],
        "created_by": row["created_by"], "closed_at": row["closed_at"],
    }


class IncidentService:
    """Incidents, their timelines and the calls attached to them."""

    def __init__(self, db: Database, bus: EventBus | None = None, *,
                 clock: Callable[[], float] = time.time,
                 call_facts: Callable[[str], CallFacts | None] | None = None,
                 attach_call: Callable[[str, int], None] | None = None) -> None:
        self.db = db
        self.bus = bus
        self.clock = clock
        self.call_facts = call_facts
        """A call id (queued ``Q1``, dispatch ``D3``, a SIP call) -> what an incident made
        from it takes over; None if there is no such call."""
        self.attach_call = attach_call
        """Told when a live call is attached, so the call carries the incident's id."""
        self._calls: dict[str, int] = {}
        self._legs: dict[tuple[str, str], tuple[Any, ...]] = {}
        self._recordings: set[tuple[int, str]] = set()
        self.listeners: list[Callable[[str, int, dict[str, Any]], None]] = []
        """Told of every timeline entry appended: (kind, incident_id, data)."""
        db.migrate(COMPONENT, MIGRATIONS)
        if bus is not None:
            bus.subscribe(self._on_event)

    # -- incidents -----------------------------------------------------------------------------
    def create(self, fields: Mapping[str, Any], *, operator: str | None = None) -> dict[str, Any]:
        """A new incident, by hand or from a call (``call_id``); returns it."""
        now = self.clock()
        facts: CallFacts | None = None
        call_id = clean_text(fields.get("call_id"), "call_id", 64)
        if call_id is not None:
            facts = self.call_facts(call_id) if self.call_facts else None
            if facts is None:
                raise NotFound(f"no call {call_id!r} to make an incident from")
        allowed = {"title", "type", "level", "location", "status", "reporter", "reporter_phone",
                   "description", "call_id", "address", "reported_at"}
        unknown = set(fields) - allowed
        if unknown:
            raise InvalidInput(f"unknown field {sorted(unknown)[0]!r}")
        default_title = f"来电 {facts.caller}" if facts and facts.caller else None
        title = clean_text(fields.get("title") or default_title, "title", 200, required=True)
        for required in ("type", "level"):
            if required not in fields and facts is None:
                raise InvalidInput(f"{required} is required (for an incident made by hand)")
        kind = taxonomy.incident_type(fields["type"]) if "type" in fields \
            else taxonomy.TYPES["other"]
        level = taxonomy.level(fields["level"]) if "level" in fields else 4
        status = fields.get("status", "reported")
        if status not in STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        lat, lon, address = coordinates(fields.get("location"))
        address = clean_text(fields.get("address"), "address") or address
        reporter = clean_text(fields.get("reporter"), "reporter", 100)
        phone = clean_text(fields.get("reporter_phone"), "reporter_phone", 64) or (
            facts.caller if facts else None)
        description = clean_text(fields.get("description"), "description", MAX_TEXT)
        reported_at = facts.started_at if facts else now
        with self.db.transaction() as tx:
            incident_id = tx.insert(
                "INSERT INTO incidents (title, type, category, level, status, lat, lon, address,"
                " reporter, reporter_phone, description, source_call, reported_at, created_at,"
                " updated_at, created_by, closed_at) VALUES"
                " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (title, kind.code, kind.category, level, status, lat, lon, address, reporter,
                 phone, description, call_id, reported_at, now, now, operator,
                 now if status == "closed" else None))
            entries = [self._append(tx, incident_id, "incident.created", {
                "title": title, "type": kind.code, "level": level, "status": status,
                "location": {"lat": lat, "lon": lon} if lat is not None else None,
                "address": address, "reporter": reporter, "reporter_phone": phone,
                "call_id": call_id}, operator, now)]
            if facts is not None:
                entries += self._attach(tx, incident_id, facts, now)
        self._after(incident_id, entries)
        if facts is not None and self.attach_call is not None:
            self.attach_call(facts.call_id, incident_id)
        log.info("incident %d created by %s: %s (%s, level %s)", incident_id, operator, title,
                 kind.code, taxonomy.level_label(level))
        return self.get(incident_id)

    def _attach(self, tx: Tx, incident_id: int, facts: CallFacts,
                now: float) -> list[dict[str, Any]]:
        self._calls[facts.call_id] = incident_id
        tx.execute("INSERT INTO incident_calls (incident_id, call_id, attached_at) VALUES"
                   " (?, ?, ?) ON CONFLICT DO NOTHING", (incident_id, facts.call_id, now))
        entries = [self._append(tx, incident_id, "call.attached", {
            "call_id": facts.call_id, "caller": facts.caller, "started_at": facts.started_at,
            "recording_id": facts.recording_id}, None, now)]
        if facts.recording_id:
            entries += self._add_recording(tx, incident_id, facts.recording_id, facts.call_id,
                                           facts.started_at, now)
        return entries

    def _add_recording(self, tx: Tx, incident_id: int, recording_id: str, call_id: str | None,
                       started_at: float, now: float) -> list[dict[str, Any]]:
        key = (incident_id, recording_id)
        if key in self._recordings:
            return []
        self._recordings.add(key)
        changed = tx.execute(
            "INSERT INTO incident_recordings (incident_id, recording_id, call_id, started_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (incident_id, recording_id, call_id, started_at))
        if not changed:
            return []
        return [self._append(tx, incident_id, "recording.attached", {
            "recording_id": recording_id, "call_id": call_id, "started_at": started_at},
            None, now)]

    def attach(self, incident_id: int, call_id: str) -> None:
        """Follow a live call for this incident (its legs and recording go to the timeline)."""
        self._row(incident_id)
        facts = self.call_facts(call_id) if self.call_facts else None
        if facts is None:
            raise NotFound(f"no call {call_id!r}")
        now = self.clock()
        with self.db.transaction() as tx:
            entries = self._attach(tx, incident_id, facts, now)
        self._after(incident_id, entries)
        if self.attach_call is not None:
            self.attach_call(call_id, incident_id)

    def _row(self, incident_id: int) -> Row:
        row = self.db.query_one("SELECT * FROM incidents WHERE id = ?", (incident_id,))
        if row is None:
            raise NotFound(f"no incident {incident_id}")
        return row

    def get(self, incident_id: int) -> dict[str, Any]:
        return incident_dict(self._row(incident_id))

    def exists(self, incident_id: int) -> bool:
        return self.db.query_one("SELECT id FROM incidents WHERE id = ?",
                                 (incident_id,)) is not None

    def location(self, incident_id: int) -> tuple[float, float] | None:
        row = self._row(incident_id)
        if row["lat"] is None or row["lon"] is None:
            return None
        return float(row["lat"]), float(row["lon"])

    def find(self, *, status: str | None = None, limit: int = 100,
             active: bool = False) -> list[dict[str, Any]]:
        if status is not None and status not in STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(STATUSES)}")
        sql = "SELECT * FROM incidents"
        params: list[object] = []
        if status is not None:
            sql += " WHERE status = ?"
            params.append(status)
        elif active:
            sql += " WHERE status <> 'closed'"
        sql += " ORDER BY reported_at DESC, id DESC LIMIT ?"
        params.append(max(1, min(limit, 1000)))
        return [incident_dict(r) for r in self.db.query(sql, params)]

    def update(self, incident_id: int, fields: Mapping[str, Any], *,
               operator: str | None = None) -> tuple[dict[str, Any], dict[str, tuple[Any, Any]]]:
        """Change an incident; returns it and what changed (field -> (old, new))."""
        row = self._row(incident_id)
        allowed = {"title", "type", "level", "status", "location", "address", "reporter",
                   "reporter_phone", "description"}
        unknown = set(fields) - allowed
        if unknown:
            raise InvalidInput(f"unknown field {sorted(unknown)[0]!r}")
        new: dict[str, Any] = {}
        if "title" in fields:
            new["title"] = clean_text(fields["title"], "title", 200, required=True)
        if "type" in fields:
            kind = taxonomy.incident_type(fields["type"])
            new["type"], new["category"] = kind.code, kind.category
        if "level" in fields:
            new["level"] = taxonomy.level(fields["level"])
        if "status" in fields:
            if fields["status"] not in STATUSES:
                raise InvalidInput(f"status must be one of {', '.join(STATUSES)}, "
                                   f"not {fields['status']!r}")
            new["status"] = fields["status"]
        if "location" in fields:
            lat, lon, address = coordinates(fields["location"])
            new["lat"], new["lon"] = lat, lon
            if address is not None:
                new["address"] = address
        for name, limit in (("address", 200), ("reporter", 100), ("reporter_phone", 64),
                            ("description", MAX_TEXT)):
            if name in fields:
                new[name] = clean_text(fields[name], name, limit)
        changes = {k: (row[k], v) for k, v in new.items() if row[k] != v}
        if not changes:
            return incident_dict(row), {}
        now = self.clock()
        if "status" in changes:
            changes["closed_at"] = (row["closed_at"], now if new["status"] == "closed" else None)
        assignments = ", ".join(f"{k} = ?" for k in changes)
        with self.db.transaction() as tx:
            tx.execute(f"UPDATE incidents SET {assignments}, updated_at = ? WHERE id = ?",
                       [v for _, v in changes.values()] + [now, incident_id])
            entries = []
            for name in ("status", "level"):
                if name in changes:
                    old, value = changes[name]
                    entries.append(self._append(tx, incident_id, f"incident.{name}",
                                                {"old": old, "new": value}, operator, now))
            rest = {k: v for k, (_, v) in changes.items()
                    if k not in ("status", "level", "closed_at", "category", "lat", "lon")}
            if "lat" in changes or "lon" in changes:
                rest["location"] = (None if new["lat"] is None else
                                    {"lat": new["lat"], "lon": new["lon"]})
            if rest:
                entries.append(self._append(tx, incident_id, "incident.updated", rest,
                                            operator, now))
        self._after(incident_id, entries)
        return self.get(incident_id), changes

    # -- the timeline ----------------------------------------------------------------------------
    def record(self, incident_id: int, kind: str, data: dict[str, Any], *,
               actor: str | None = None) -> dict[str, Any]:
        """Append one entry to an incident's timeline (NotFound for an unknown incident)."""
        now = self.clock()
        try:
            with self.db.transaction() as tx:
                entry = self._append(tx, incident_id, kind, data, actor, now)
        except Exception as exc:
            if not self.exists(incident_id):
                raise NotFound(f"no incident {incident_id}") from exc
            raise
        self._after(incident_id, [entry])
        return entry

    def record_many(self, incident_id: int, entries: Iterable[tuple[str, dict[str, Any],
                                                                     str | None]]) -> None:
        """Several entries in one transaction (a board's burst of changes)."""
        now = self.clock()
        with self.db.transaction() as tx:
            done = [self._append(tx, incident_id, kind, data, actor, now)
                    for kind, data, actor in entries]
        self._after(incident_id, done)

    def add_message(self, incident_id: int, text: object, *,
                    operator: str | None = None) -> dict[str, Any]:
        message = clean_text(text, "text", MAX_TEXT, required=True)
        self._row(incident_id)
        return self.record(incident_id, "message", {"text": message}, actor=operator)

    @staticmethod
    def _append(tx: Tx, incident_id: int, kind: str, data: dict[str, Any], actor: str | None,
                at: float) -> dict[str, Any]:
        entry_id = tx.insert("INSERT INTO incident_events (incident_id, at, kind, actor, data)"
                             " VALUES (?, ?, ?, ?, ?)", (incident_id, at, kind, actor,
                                                         _dumps(data)))
        return {"id": entry_id, "at": at, "kind": kind, "actor": actor, "data": data}

    def _after(self, incident_id: int, entries: list[dict[str, Any]]) -> None:
        """Tell the bus and listeners, once the entries are committed."""
        for entry in entries:
            for listener in list(self.listeners):
                try:
                    listener(entry["kind"], incident_id, entry)
                except Exception:
                    log.exception("timeline listener failed on %s", entry["kind"])
            if self.bus is not None:
                self.bus.publish(TimelineAppended(incident_id=incident_id, entry=entry))
        if self.bus is not None and any(e["kind"].startswith("incident.") for e in entries):
            self.bus.publish(IncidentChanged(incident=self.get(incident_id)))

    def timeline(self, incident_id: int, *, after: int = 0,
                 limit: int | None = None) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = json.loads(
            self.timeline_json(incident_id, after=after, limit=limit))
        return entries

    def timeline_json(self, incident_id: int, *, after: int = 0,
                      limit: int | None = None) -> str:
        """The timeline as a JSON array, oldest first, entries after id ``after``."""
        sql = ("SELECT id, at, kind, actor, data FROM incident_events"
               " WHERE incident_id = ? AND id > ? ORDER BY id")
        params: list[object] = [incident_id, after]
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = self.db.query_tuples(sql, params)
        dumps = json.dumps
        # The stored data is already JSON: spliced in as it is. Kinds and actors repeat
        # (a few dozen distinct values), so each is encoded once.
        kinds: dict[str, str] = {}
        actors: dict[str | None, str] = {}
        parts = []
        for entry_id, at, kind, actor, data in rows:
            k = kinds.get(kind)
            if k is None:
                k = kinds[kind] = dumps(kind)
            a = actors.get(actor)
            if a is None:
                a = actors[actor] = dumps(actor)
            parts.append(f'{{"id":{entry_id},"at":{at!r},"kind":{k},"actor":{a},"data":{data}}}')
        return "[" + ",".join(parts) + "]"

    def recordings(self, incident_id: int) -> list[dict[str, Any]]:
        return self.db.query("SELECT recording_id, call_id, started_at FROM incident_recordings"
                             " WHERE incident_id = ? ORDER BY started_at, recording_id",
                             (incident_id,))

    def calls(self, incident_id: int) -> list[str]:
        return [r["call_id"] for r in self.db.query(
            "SELECT call_id FROM incident_calls WHERE incident_id = ? ORDER BY attached_at",
            (incident_id,))]

    def on_audit(self, entry: Any) -> None:
        """A dispatcher's action on one of an incident's calls goes to its timeline too
        (``entry`` is a ``dispatch.audit.AuditEntry``)."""
        target = entry.target or ""
        incident_id = self._calls.get(target.split("/", 1)[0])
        if incident_id is None or not entry.action.startswith(("call.", "queue.")):
            return
        self._safe_record(incident_id, "action", {
            "action": entry.action, "target": target, "result": entry.result,
            "status": entry.status, **dict(entry.detail or {})}, actor=entry.operator)

    # -- following calls ---------------------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        # Local import: calls imports gateways (heavy); this module is used without them.
        from .calls import CallChanged, CallEnded

        if isinstance(event, CallChanged):
            self._call_changed(event.call)
        elif isinstance(event, CallEnded):
            incident_id = self._calls.pop(event.call_id, None)
            if incident_id is not None:
                for key in [k for k in self._legs if k[0] == event.call_id]:
                    del self._legs[key]
                self._safe_record(incident_id, "call.ended",
                                  {"call_id": event.call_id, "reason": event.reason})

    def _safe_record(self, incident_id: int, kind: str, data: dict[str, Any], *,
                     actor: str | None = None) -> None:
        try:
            self.record(incident_id, kind, data, actor=actor)
        except Exception:
            log.exception("incident %s: cannot record %s", incident_id, kind)

    def _call_changed(self, call: dict[str, Any]) -> None:
        call_id = call["id"]
        incident_id = call.get("incident_id") or self._calls.get(call_id)
        if incident_id is None:
            return
        now = self.clock()
        first = call_id not in self._calls
        self._calls[call_id] = incident_id
        entries: list[tuple[str, dict[str, Any]]] = []
        if first:
            entries.append(("call.placed", {"call_id": call_id, "mode": call.get("mode"),
                                            "targets": call.get("targets"),
                                            "operator": call.get("operator")}))
        for leg in call.get("legs", ()):
            key = (call_id, leg["leg_id"])
            seen = (leg["state"], leg["outcome"], leg.get("confirmed"))
            if self._legs.get(key) == seen:
                continue
            self._legs[key] = seen
            entries.append(("call.leg", {
                "call_id": call_id, "leg_id": leg["leg_id"], "target": leg["target"],
                "endpoint": leg.get("endpoint"), "state": leg["state"],
                "outcome": leg["outcome"], "status": leg.get("status"),
                "confirmed": leg.get("confirmed"), "relation": leg.get("relation")}))
        recording_id = call.get("recording_id")
        try:
            with self.db.transaction() as tx:
                if first:
                    tx.execute("INSERT INTO incident_calls (incident_id, call_id, attached_at)"
                               " VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                               (incident_id, call_id, now))
                done = [self._append(tx, incident_id, kind, data, None, now)
                        for kind, data in entries]
                if recording_id:
                    done += self._add_recording(tx, incident_id, recording_id, call_id,
                                                call.get("created") or now, now)
        except Exception:
            log.exception("incident %s: cannot record call %s", incident_id, call_id)
            return
        self._after(incident_id, done)


__all__ = ["STATUSES", "CallFacts", "Conflict", "IncidentChanged", "IncidentService",
           "TimelineAppended", "coordinates"]

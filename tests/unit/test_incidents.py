"""Incidents, timelines and plans on both backends (the ``database`` fixture)."""

import json
from typing import Any

import pytest

from bridges.events import Event, EventBus
from dispatch.calls import CallChanged, CallEnded
from dispatch.errors import Conflict, InvalidInput, NotFound
from dispatch.incidents import CallFacts, IncidentChanged, IncidentService, TimelineAppended
from dispatch.plans import PlanService
from storage.sql import Database


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def _service(db: Database, bus: EventBus | None = None, **kw: Any) -> IncidentService:
    return IncidentService(db, bus, clock=Clock(), **kw)


FIRE = {"title": "仓库火灾", "type": "fire", "level": 3,
        "location": {"lat": 39.9087, "lon": 116.3975}}


def test_create_read_and_timeline(database: Database) -> None:
    bus = EventBus()
    seen: list[Event] = []
    bus.subscribe(seen.append)
    incidents = _service(database, bus)
    created = incidents.create(FIRE, operator="op")
    assert created["type"] == "fire" and created["category"] == "accident"
    assert created["type_zh"] == "火灾" and created["level_label"] == "III"
    assert created["status"] == "reported" and created["created_by"] == "op"
    assert created["location"] == {"lat": 39.9087, "lon": 116.3975}
    [entry] = incidents.timeline(created["id"])
    assert entry["kind"] == "incident.created" and entry["actor"] == "op"
    assert entry["data"]["title"] == "仓库火灾"
    assert any(isinstance(e, IncidentChanged) for e in seen)
    assert any(isinstance(e, TimelineAppended) and e.incident_id == created["id"] for e in seen)
    assert incidents.location(created["id"]) == (39.9087, 116.3975)
    assert [i["id"] for i in incidents.find()] == [created["id"]]


@pytest.mark.parametrize("fields, message", [
    ({**FIRE, "level": 5}, "level"),
    ({**FIRE, "level": "V"}, "level"),
    ({**FIRE, "type": "alien invasion"}, "unknown incident type"),
    ({**FIRE, "location": {"lat": 91, "lon": 0}}, "location.lat"),
    ({**FIRE, "location": {"lat": "x", "lon": 0}}, "location.lat"),
    ({**FIRE, "title": "  "}, "title"),
    ({**FIRE, "status": "done"}, "status"),
    ({**FIRE, "colour": "red"}, "colour"),
    ({"title": "x", "type": "fire"}, "level"),
])
def test_bad_input_is_refused_and_nothing_is_written(
        database: Database, fields: dict[str, Any], message: str) -> None:
    incidents = _service(database)
    with pytest.raises(InvalidInput, match=message):
        incidents.create(fields)
    assert database.query("SELECT COUNT(*) AS n FROM incidents")[0]["n"] == 0
    assert database.query("SELECT COUNT(*) AS n FROM incident_events")[0]["n"] == 0


def test_types_and_levels_accept_the_fields_own_words(database: Database) -> None:
    incidents = _service(database)
    a = incidents.create({**FIRE, "type": "火灾", "level": "Ⅲ".replace("Ⅲ", "III")})
    b = incidents.create({**FIRE, "type": "Forest fire", "level": "2"})
    c = incidents.create({**FIRE, "type": "public_health", "level": 1})
    d = incidents.create({**FIRE, "type": "accident/fire"})
    assert d["type"] == "fire"
    for words, (kind, level) in {("traffic_accident", "Ⅲ级"): ("traffic", 3),
                                 ("火警", "三级"): ("fire", 3),
                                 ("Hazardous chemicals", "Level II"): ("hazmat", 2)}.items():
        made = incidents.create({**FIRE, "type": words[0], "level": words[1]})
        assert (made["type"], made["level"]) == (kind, level), words
    with pytest.raises(InvalidInput):
        incidents.create({**FIRE, "type": "public_health/fire"})
    assert (a["type"], a["level"]) == ("fire", 3)
    assert (b["type"], b["category"], b["level"]) == ("forest_fire", "natural_disaster", 2)
    assert (c["type"], c["category"]) == ("public_health", "public_health")


def test_update_records_status_and_level_changes(database: Database) -> None:
    incidents = _service(database)
    created = incidents.create(FIRE)
    after, changes = incidents.update(created["id"], {"status": "verified", "level": "II",
                                                      "address": "东城区"}, operator="sup")
    assert after["status"] == "verified" and after["level"] == 2
    assert changes["level"] == (3, 2)
    kinds = [(e["kind"], e["data"].get("old"), e["data"].get("new"))
             for e in incidents.timeline(created["id"])]
    assert kinds[1:] == [("incident.status", "reported", "verified"),
                         ("incident.level", 3, 2), ("incident.updated", None, None)]
    same, none = incidents.update(created["id"], {"status": "verified"})
    assert none == {} and len(incidents.timeline(created["id"])) == 4
    closed, _ = incidents.update(created["id"], {"status": "closed"})
    assert closed["closed_at"] is not None
    with pytest.raises(NotFound):
        incidents.update(999, {"status": "closed"})
    with pytest.raises(InvalidInput, match="level"):
        incidents.update(created["id"], {"level": 0})


def test_timeline_json_is_valid_and_follows_after(database: Database) -> None:
    incidents = _service(database)
    created = incidents.create(FIRE)
    incidents.record_many(created["id"], [("message", {"text": f'"quoted" {i} 中文'}, "op")
                                          for i in range(50)])
    everything = json.loads(incidents.timeline_json(created["id"]))
    assert len(everything) == 51
    assert [e["id"] for e in everything] == sorted(e["id"] for e in everything)
    assert everything[5]["data"]["text"] == '"quoted" 4 中文'
    tail = json.loads(incidents.timeline_json(created["id"], after=everything[-3]["id"]))
    assert [e["id"] for e in tail] == [e["id"] for e in everything[-2:]]
    with pytest.raises(NotFound):
        incidents.record(12345, "message", {"text": "x"})


def test_an_incident_from_a_call_carries_caller_time_and_recording(database: Database) -> None:
    attached: list[tuple[str, int]] = []
    facts = {"Q1": CallFacts("Q1", "1380013", 1_799_999_000.0, "R1")}
    incidents = _service(database, EventBus(), call_facts=facts.get,
                         attach_call=lambda c, i: attached.append((c, i)))
    created = incidents.create({"call_id": "Q1"})
    assert created["reporter_phone"] == "1380013"
    assert created["reported_at"] == 1_799_999_000.0
    assert created["type"] == "other" and created["level"] == 4
    assert created["source_call"] == "Q1" and attached == [("Q1", created["id"])]
    assert [r["recording_id"] for r in incidents.recordings(created["id"])] == ["R1"]
    assert incidents.calls(created["id"]) == ["Q1"]
    with pytest.raises(NotFound, match="Q9"):
        incidents.create({"call_id": "Q9"})


def test_calls_for_an_incident_reach_its_timeline(database: Database) -> None:
    bus = EventBus()
    incidents = _service(database, bus)
    created = incidents.create(FIRE)

    def call(state: str, outcome: str, recording: str | None = None) -> dict[str, Any]:
        return {"id": "D7", "mode": "group", "targets": ["bob"], "operator": "op",
                "incident_id": created["id"], "recording_id": recording, "created": 1.0,
                "legs": [{"leg_id": "L1", "target": "bob", "endpoint": "bob", "state": state,
                          "outcome": outcome, "status": 0, "confirmed": None,
                          "relation": "member"}]}

    bus.publish(CallChanged(call=call("ringing", "pending")))
    bus.publish(CallChanged(call=call("ringing", "pending")))  # no change: no entry
    bus.publish(CallChanged(call=call("up", "answered", "R9")))
    bus.publish(CallEnded(call_id="D7", reason="done"))
    bus.publish(CallChanged(call={**call("up", "answered"), "id": "D8", "incident_id": None}))
    kinds = [(e["kind"], e["data"].get("state")) for e in incidents.timeline(created["id"])]
    assert kinds == [("incident.created", None), ("call.placed", None), ("call.leg", "ringing"),
                     ("call.leg", "up"), ("recording.attached", None), ("call.ended", None)]
    assert incidents.calls(created["id"]) == ["D7"]


def _plans(db: Database, people: set[str]) -> PlanService:
    return PlanService(db, person_exists=people.__contains__, clock=Clock())


PLAN = {"name": "火灾事故应急预案", "incident_type": "fire", "level": 3,
        "escalate_after_s": 30,
        "roles": [{"role": "现场指挥", "person": "alice", "deputy": "bob"},
                  {"role": "医疗救护", "person": "carol", "level": "II"}],
        "resources": [{"kind": "team", "quantity": 2}],
        "tasks": [{"title": "疏散", "role": "现场指挥", "deadline_s": 600}]}


def test_plans_round_trip(database: Database) -> None:
    plans = _plans(database, {"alice", "bob", "carol"})
    created = plans.create(PLAN)
    assert created["roles"][1]["level"] == 2 and created["roles"][0]["level"] is None
    assert plans.get(created["id"]) == created
    assert [p["id"] for p in plans.find(incident_type="火灾")] == [created["id"]]
    assert plans.find(incident_type="flood") == []
    # A plan for the whole category covers its subtypes.
    plans.create({**PLAN, "name": "accidents", "incident_type": "accident"})
    assert len(plans.find(incident_type="fire")) == 2
    changed = plans.update(created["id"], {"escalate_after_s": 10})
    assert changed["escalate_after_s"] == 10 and changed["roles"] == created["roles"]
    with pytest.raises(Conflict):
        plans.create(PLAN)


@pytest.mark.parametrize("change, message", [
    ({"roles": [{"role": "x", "person": "mallory"}]}, "roles[0].person: no person 'mallory'"),
    ({"roles": [{"role": "x", "person": "alice", "deputy": "alice"}]}, "deputy"),
    ({"roles": [{"role": "x", "person": "alice", "deputy": "trent"}]}, "roles[0].deputy"),
    ({"roles": [{"role": "x", "person": "alice"}, {"role": "y", "person": "alice"}]},
     "already fills"),
    ({"roles": []}, "roles"),
    ({"level": 7}, "level"),
    ({"resources": [{"kind": "supply", "quantity": -5}]}, "resources[0].quantity"),
    ({"resources": [{"kind": "spaceship"}]}, "resources[0].kind"),
    ({"tasks": [{"title": "t", "role": "nobody"}]}, "tasks[0].role"),
    ({"escalate_after_s": -1}, "escalate_after_s"),
    ({"incident_type": "meteor"}, "incident_type"),
])
def test_bad_plans_are_refused_whole(database: Database, change: dict[str, Any],
                                     message: str) -> None:
    plans = _plans(database, {"alice", "bob", "carol"})
    with pytest.raises(InvalidInput) as info:
        plans.create({**PLAN, **change})
    assert message in str(info.value)
    assert database.query("SELECT COUNT(*) AS n FROM plans")[0]["n"] == 0


def test_dispatcher_actions_on_an_incidents_calls_reach_its_timeline(database: Database) -> None:
    from dispatch.audit import AuditEntry

    bus = EventBus()
    incidents = _service(database, bus)
    created = incidents.create(FIRE)
    bus.publish(CallChanged(call={"id": "D3", "incident_id": created["id"], "legs": []}))

    def entry(action: str, target: str) -> AuditEntry:
        return AuditEntry(1, 1.0, "op", "dispatcher", action, target, "ok", 200, None, None)

    incidents.on_audit(entry("call.leg.mute", "D3/L9"))
    incidents.on_audit(entry("call.leg.mute", "D4/L1"))  # another call: not this incident's
    incidents.on_audit(entry("directory.person.create", "D3"))  # not a call action
    actions = [e for e in incidents.timeline(created["id"]) if e["kind"] == "action"]
    assert [(a["actor"], a["data"]["action"], a["data"]["target"]) for a in actions] == [
        ("op", "call.leg.mute", "D3/L9")]


def test_moving_an_incident_records_its_new_location(database: Database) -> None:
    incidents = _service(database)
    created = incidents.create(FIRE)
    moved, _ = incidents.update(created["id"], {"location": {"lat": 39.95, "lon": 116.3975}})
    assert moved["location"] == {"lat": 39.95, "lon": 116.3975}
    cleared, _ = incidents.update(created["id"], {"location": None})
    assert cleared["location"] is None
    updates = [e["data"] for e in incidents.timeline(created["id"])
               if e["kind"] == "incident.updated"]
    assert updates == [{"location": {"lat": 39.95, "lon": 116.3975}}, {"location": None}]

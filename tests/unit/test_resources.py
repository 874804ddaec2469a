"""Resources (应急资源): geometry, the service and the CSV import, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import math
from typing import Any

import pytest

from dispatch import geo
from dispatch.errors import Conflict, ImportFailed, InvalidInput, NotFound
from dispatch.resources import MIGRATIONS, Contact, ResourceService, settle_status
from dispatch.resources_csv import parse_csv
from storage.sql import Database

NOW = 1_700_000_000.0

# WGS-84 points in Beijing.
TIANANMEN = (39.9087, 116.3975)          # incident 1
XIDAN = (39.9073, 116.3740)              # ~2.0 km west
BEIJING_STATION = (39.9029, 116.4270)    # ~2.6 km east
ZHONGGUANCUN = (39.9834, 116.3162)       # ~10.8 km north-west
CAPITAL_AIRPORT = (40.0799, 116.6031)    # ~25.9 km north-east
DAXING_AIRPORT = (39.5098, 116.4105)     # ~44 km south


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


class FakeIncidents:
    """Incident 1 at Tiananmen, incident 2 without coordinates, others unknown."""

    def __init__(self) -> None:
        self.places: dict[int, tuple[float, float] | None] = {1: TIANANMEN, 2: None, 3: XIDAN}
        self.events: list[tuple[int, str, dict[str, Any], str | None]] = []
        self.broken = False

    def location(self, incident_id: int) -> tuple[float, float] | None:
        if incident_id not in self.places:
            raise NotFound(f"no incident {incident_id}", "incident-not-found")
        return self.places[incident_id]

    def record(self, incident_id: int, kind: str, data: dict[str, Any], *,
               actor: str | None = None) -> None:
        if self.broken:
            raise RuntimeError("timeline down")
        self.events.append((incident_id, kind, data, actor))


@pytest.fixture
def incidents() -> FakeIncidents:
    return FakeIncidents()


@pytest.fixture
def svc(database: Database, incidents: FakeIncidents) -> ResourceService:
    return ResourceService(database, incidents, clock=Clock())


def loc(point: tuple[float, float]) -> dict[str, float]:
    return {"lat": point[0], "lon": point[1]}


def count_rows(db: Database, table: str) -> int:
    row = db.query_one(f"SELECT COUNT(*) AS n FROM {table}")
    assert row is not None
    return int(row["n"])


# -------------------------------------------------------------------------------- geo


def test_distances() -> None:
    one_degree = geo.EARTH_RADIUS_M * math.pi / 180
    assert geo.distance_m((0.0, 0.0), (1.0, 0.0)) == pytest.approx(one_degree)
    assert geo.distance_m((0.0, 179.5), (0.0, -179.5)) == pytest.approx(one_degree)
    assert geo.distance_m((0.0, 0.0), (0.0, 180.0)) == pytest.approx(math.pi * geo.EARTH_RADIUS_M)
    assert geo.distance_m(TIANANMEN, TIANANMEN) == 0.0
    # Beijing to Shanghai: 1,067 km (1,068 km on the ellipsoid).
    beijing_shanghai = geo.distance_m((39.9042, 116.4074), (31.2304, 121.4737))
    assert beijing_shanghai == pytest.approx(1_067_000, abs=2_000)
    assert geo.distance_m(TIANANMEN, XIDAN) == pytest.approx(2_010, abs=5)
    assert geo.distance_m(TIANANMEN, XIDAN) == geo.distance_m(XIDAN, TIANANMEN)


@pytest.mark.parametrize(("lat", "lon", "message"), [
    (91, 0, "location.lat must be between -90 and 90, got 91"),
    (0, -180.5, "location.lon must be between -180 and 180, got -180.5"),
    (math.nan, 0, "location.lat must be between -90 and 90, got nan"),
    (0, math.inf, "location.lon must be between -180 and 180, got inf"),
    ("39.9", 116, "location.lat must be a number of degrees, got '39.9'"),
    (True, 116, "location.lat must be a number of degrees, got True"),
    (39.9, None, "location.lon must be a number of degrees, got None"),
])
def test_check_coordinates_refuses(lat: Any, lon: Any, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        geo.check_coordinates(lat, lon)
    assert caught.value.message == message and caught.value.error_id == "invalid-location"


def test_check_coordinates_accepts_the_edges() -> None:
    assert geo.check_coordinates(-90, 180) == (-90.0, 180.0)
    assert geo.check_coordinates(39, 116.5) == (39.0, 116.5)


@pytest.mark.parametrize(("centre", "radius"), [
    (TIANANMEN, 5_000), ((0.0, 179.99), 50_000), ((0.0, -179.99), 50_000),
    ((89.9, 10.0), 50_000), ((-89.99, 0.0), 10_000), ((60.0, 30.0), 1_000_000),
    ((10.0, 20.0), 30_000_000),
])
def test_bounding_box_holds_the_circle(centre: tuple[float, float], radius: float) -> None:
    box = geo.bounding_box(centre, radius)
    steps = 72
    for i in range(steps):
        bearing = 2 * math.pi * i / steps
        for fraction in (0.5, 0.999999):
            point = _destination(centre, bearing, radius * fraction)
            assert geo.distance_m(centre, point) <= radius * 1.000001
            assert box.contains(point), (centre, radius, point, box)
    # ... and it is a box, not the whole world, when it can be.
    if radius < 1_000_000 and abs(centre[0]) < 80:
        assert not box.contains((centre[0] + 20, centre[1]))
    if centre[1] > 179:
        assert box.crosses_antimeridian and len(box.lon_ranges()) == 2


def test_bounding_box_refuses_a_bad_radius() -> None:
    with pytest.raises(InvalidInput, match="radius"):
        geo.bounding_box(TIANANMEN, math.nan)
    with pytest.raises(InvalidInput, match="centre.lat"):
        geo.bounding_box((100.0, 0.0), 10)


def _destination(start: tuple[float, float], bearing: float, metres: float) -> tuple[float, float]:
    lat1, lon1 = math.radians(start[0]), math.radians(start[1])
    angle = metres / geo.EARTH_RADIUS_M
    lat2 = math.asin(math.sin(lat1) * math.cos(angle)
                     + math.cos(lat1) * math.sin(angle) * math.cos(bearing))
    lon2 = lon1 + math.atan2(math.sin(bearing) * math.sin(angle) * math.cos(lat1),
                             math.cos(angle) - math.sin(lat1) * math.sin(lat2))
    lon = (math.degrees(lon2) + 540) % 360 - 180
    return math.degrees(lat2), lon


# ------------------------------------------------------------------------ the service


def test_migrations_are_idempotent(database: Database, incidents: FakeIncidents) -> None:
    ResourceService(database, incidents)
    ResourceService(database, incidents)
    assert database.schema_version("resources") == len(MIGRATIONS)


def test_create_every_kind_with_chinese_names(svc: ResourceService) -> None:
    team = svc.create(
        "team", "蓝天救援队", location=loc(XIDAN), address="北京市西城区西单北大街",
        leader="张伟", members=["张伟", "李娜", "王强"], headcount=30,
        contacts=[{"name": "张伟", "phone": "138 0013-8000", "title": "队长"},
                  {"name": "值班室", "phone": "1001"}])
    assert team.as_dict() == {
        "id": team.id, "kind": "team", "name": "蓝天救援队", "status": "available",
        "location": {"lat": XIDAN[0], "lon": XIDAN[1]}, "address": "北京市西城区西单北大街",
        "contacts": [{"name": "张伟", "phone": "13800138000", "title": "队长"},
                     {"name": "值班室", "phone": "1001", "title": None}],
        "leader": "张伟", "members": ["张伟", "李娜", "王强"], "headcount": 30,
        "dispatched_to": [], "created_at": team.created_at, "updated_at": team.updated_at}
    expert = svc.create("expert", "刘教授", field="危化品", organisation="应急管理大学")
    assert (expert.details["field"], expert.location) == ("危化品", None)
    tents = svc.create("supply", "帐篷", quantity=200, unit="顶", warehouse="朝阳区应急物资仓库",
                       keeper="赵六")
    assert tents.as_dict()["quantity"] == 200
    assert tents.as_dict()["warehouse"] == "朝阳区应急物资仓库"
    pump = svc.create("equipment", "排水泵")
    assert pump.details == {"quantity": 0, "unit": None, "warehouse": None, "keeper": None}
    shelter = svc.create("shelter", "地坛公园避难场所", capacity=5000, occupancy=120)
    assert (shelter.details["capacity"], shelter.details["occupancy"]) == (5000, 120)
    truck = svc.create("vehicle", "水罐消防车", plate="京A·12345", vehicle_type="消防车", seats=6,
                       status="unavailable")
    assert truck.status == "unavailable" and truck.details["plate"] == "京A·12345"
    assert svc.get(team.id) == team
    assert [r.name for r in svc.list()] == [
        "蓝天救援队", "刘教授", "帐篷", "排水泵", "地坛公园避难场所", "水罐消防车"]


@pytest.mark.parametrize(("kind", "fields", "error_id", "words"), [
    ("team", {"quantity": 3}, "unknown-field", "'quantity' is not a field of a team (救援队伍)"),
    ("vehicle", {"members": []}, "unknown-field", "'members' is not a field of a vehicle"),
    ("supply", {"quantity": -1}, "invalid-quantity", "quantity must be at least 0, got -1"),
    ("supply", {"quantity": True}, "invalid-quantity", "quantity must be an integer"),
    ("supply", {"quantity": None}, "invalid-quantity", "quantity must be an integer"),
    ("supply", {"quantity": 2.5}, "invalid-quantity", "quantity must be an integer"),
    ("shelter", {"capacity": -10}, "invalid-capacity", "capacity must be at least 0"),
    ("team", {"members": ["张三", "张三"]}, "invalid-members",
     "members[1]: '张三' is listed twice"),
    ("team", {"members": "张三"}, "invalid-members", "members must be a list of names"),
    ("team", {"status": "dispatched"}, "invalid-status", "set by dispatching"),
    ("team", {"status": "busy"}, "invalid-status", "status must be one of available, "
                                                   "unavailable"),
    ("team", {"location": {"lat": 39.9}}, "invalid-location", "needs both lat and lon"),
    ("team", {"location": {"lat": 95, "lon": 116}}, "invalid-location", "location.lat"),
    ("team", {"contacts": [{"name": "张三"}]}, "invalid-input", "contacts[0].phone must be a "
                                                             "string"),
    ("team", {"contacts": [{"name": "张三", "phone": "1", "mail": "x"}]}, "invalid-contacts",
     "contacts[0] has unknown field(s) mail"),
    ("team", {"address": "a\x00b"}, "invalid-input", "address must not contain control"),
    ("team", {"kind": "vehicle"}, "invalid-kind", "kind is given twice"),
])
def test_create_refuses_bad_fields_and_writes_nothing(
        svc: ResourceService, database: Database, kind: str, fields: dict[str, Any],
        error_id: str, words: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        svc.create(kind, "一号", **fields)
    assert caught.value.error_id == error_id and words in caught.value.message, \
        caught.value.message
    assert count_rows(database, "resources") == 0


def test_create_refuses_bad_kind_and_name(svc: ResourceService) -> None:
    with pytest.raises(InvalidInput, match="kind must be one of team, expert"):
        svc.create("boat", "冲锋舟")
    with pytest.raises(InvalidInput, match="name must not be empty"):
        svc.create("team", "   ")


def test_names_are_unique_per_kind_and_warehouse(svc: ResourceService,
                                                 database: Database) -> None:
    svc.create("team", "蓝天救援队")
    with pytest.raises(Conflict, match="there is a team named '蓝天救援队' already"):
        svc.create("team", "蓝天救援队")
    svc.create("expert", "蓝天救援队")  # another kind: fine
    svc.create("supply", "帐篷", warehouse="一号仓库", quantity=10)
    svc.create("supply", "帐篷", warehouse="二号仓库", quantity=20)
    with pytest.raises(Conflict, match="in warehouse '二号仓库' already"):
        svc.create("supply", "帐篷", warehouse="二号仓库")
    second = svc.list(query="二号仓库")[0]
    with pytest.raises(Conflict, match="in warehouse '一号仓库' already"):
        svc.update(second.id, warehouse="一号仓库")
    assert svc.get(second.id).details["warehouse"] == "二号仓库"
    assert count_rows(database, "resources") == 4


def test_update_changes_only_what_is_given(svc: ResourceService) -> None:
    team = svc.create("team", "蓝天救援队", leader="张伟", headcount=30, location=loc(XIDAN))
    changed = svc.update(team.id, headcount=28, contacts=[{"name": "张伟", "phone": "1001"}])
    assert changed.details == {"leader": "张伟", "members": (), "headcount": 28}
    assert changed.location == XIDAN and changed.contacts == (Contact("张伟", "1001"),)
    assert changed.updated_at > team.updated_at and changed.created_at == team.created_at
    cleared = svc.update(team.id, leader=None, location=None, headcount=None)
    assert cleared.details["leader"] is None and cleared.location is None
    assert svc.update(team.id, kind="team").name == "蓝天救援队"  # the same kind: no change
    before = svc.get(team.id)
    for bad in ({"headcount": -1}, {"quantity": 5}, {"kind": "vehicle"},
                {"name": "新名字", "members": ["a", "a"]}):
        with pytest.raises(InvalidInput):
            svc.update(team.id, **bad)
    assert svc.get(team.id) == before  # nothing half-written
    with pytest.raises(NotFound):
        svc.update(999, name="x")


def test_list_filters_and_text_search(svc: ResourceService) -> None:
    svc.create("team", "蓝天救援队", members=["李娜"],
               contacts=[{"name": "张伟", "phone": "13800138000"}])
    svc.create("team", "Blue Sky Rescue", status="unavailable")
    svc.create("supply", "100%纯棉被", warehouse="朝阳仓库", quantity=5)
    svc.create("vehicle", "救护车一号", plate="京B_8888")

    def names(**filters: Any) -> list[str]:
        return [r.name for r in svc.list(**filters)]

    assert names(kind="team") == ["蓝天救援队", "Blue Sky Rescue"]
    assert names(status="unavailable") == ["Blue Sky Rescue"]
    assert names(kind="team", status="available") == ["蓝天救援队"]
    assert names(query="李娜") == ["蓝天救援队"]           # a member
    assert names(query="13800138000") == ["蓝天救援队"]    # a contact's phone
    assert names(query="blue SKY") == ["Blue Sky Rescue"]  # case-insensitive
    assert names(query="朝阳") == ["100%纯棉被"]            # the warehouse
    assert names(query="物资") == ["100%纯棉被"]            # the kind's Chinese name
    assert names(query="%") == ["100%纯棉被"]               # LIKE wildcards are literal
    assert names(query="B_8") == ["救护车一号"]
    assert names(query="  ") == names()
    assert names(limit=2) == ["蓝天救援队", "Blue Sky Rescue"]
    with pytest.raises(InvalidInput, match="limit must be at most 1000"):
        svc.list(limit=1001)
    with pytest.raises(InvalidInput, match="kind must be one of"):
        svc.list(kind="boat")
    with pytest.raises(InvalidInput, match="status must be one of"):
        svc.list(status="lost")


def _beijing(svc: ResourceService) -> dict[str, int]:
    return {
        "airport": svc.create("team", "首都机场消防队", location=loc(CAPITAL_AIRPORT)).id,
        "station": svc.create("vehicle", "北京站救护车", location=loc(BEIJING_STATION)).id,
        "nowhere": svc.create("expert", "王教授").id,
        "daxing": svc.create("shelter", "大兴避难场所", location=loc(DAXING_AIRPORT)).id,
        "xidan": svc.create("supply", "西单仓库帐篷", location=loc(XIDAN), quantity=9).id,
        "zgc": svc.create("team", "中关村救援队", location=loc(ZHONGGUANCUN)).id,
    }


def test_nearest_to_an_incident_first(svc: ResourceService) -> None:
    ids = _beijing(svc)
    found = svc.list(near_incident=1)
    assert [r.id for r in found] == [ids[k] for k in
                                     ("xidan", "station", "zgc", "airport", "daxing", "nowhere")]
    distances = [r.as_dict()["distance_m"] for r in found]
    assert distances[0] == pytest.approx(2_010, abs=5)
    assert distances[1] == pytest.approx(2_598, abs=5)
    assert distances[2] == pytest.approx(10_818, abs=5)
    assert distances[3] == pytest.approx(25_868, abs=5)
    assert distances[4] == pytest.approx(44_370, abs=5)
    assert distances[5] is None  # no location: last
    assert "distance_m" not in svc.list()[0].as_dict()
    # From a point instead, with a radius and a limit; filters still apply.
    near_xidan = svc.list(near=XIDAN, radius_m=15_000)
    assert [r.id for r in near_xidan] == [ids["xidan"], ids["station"], ids["zgc"]]
    assert near_xidan[0].distance_m == 0.0
    assert [r.id for r in svc.list(near_incident=1, kind="team", limit=1)] == [ids["zgc"]]
    assert [r.id for r in svc.list(near_incident=1, radius_m=2_100)] == [ids["xidan"]]


def test_near_needs_a_known_incident_with_coordinates(svc: ResourceService) -> None:
    _beijing(svc)
    with pytest.raises(InvalidInput) as caught:
        svc.list(near_incident=2)
    assert caught.value.error_id == "incident-without-location"
    assert "incident 2 has no coordinates" in caught.value.message
    with pytest.raises(NotFound, match="no incident 404"):
        svc.list(near_incident=404)
    with pytest.raises(InvalidInput, match="not both"):
        svc.list(near=XIDAN, near_incident=1)
    with pytest.raises(InvalidInput, match="needs a point"):
        svc.list(radius_m=100)
    with pytest.raises(InvalidInput, match="radius must be a number of metres > 0"):
        svc.list(near=XIDAN, radius_m=-1)
    with pytest.raises(InvalidInput, match="near.lat"):
        svc.list(near=(123.0, 0.0))


# ------------------------------------------------------------------------ dispatching


def test_dispatch_a_team_and_release_it(svc: ResourceService, incidents: FakeIncidents,
                                        database: Database) -> None:
    team = svc.create("team", "蓝天救援队", location=loc(XIDAN))
    dispatch = svc.dispatch(1, team.id, note="协助疏散", operator="alice")
    assert dispatch.as_dict() == {
        "id": dispatch.id, "incident_id": 1, "resource_id": team.id, "kind": "team",
        "name": "蓝天救援队", "quantity": None, "unit": None, "note": "协助疏散",
        "distance_m": pytest.approx(2_010, abs=5), "state": "active",
        "dispatched_by": "alice", "dispatched_at": dispatch.dispatched_at,
        "released_by": None, "released_at": None}
    assert svc.get(team.id).status == "dispatched"
    assert svc.get(team.id).dispatched_to == (1,)
    assert incidents.events == [(1, "resource.dispatched", {
        "dispatch_id": dispatch.id, "resource_id": team.id, "name": "蓝天救援队",
        "kind": "team", "quantity": None, "note": "协助疏散",
        "distance_m": dispatch.distance_m}, "alice")]
    # Not twice, not to another incident, and its status is not the operators' to change.
    with pytest.raises(Conflict, match="already dispatched to incident 1"):
        svc.dispatch(3, team.id)
    with pytest.raises(Conflict, match="release it first"):
        svc.update(team.id, status="available")
    with pytest.raises(Conflict, match="release it first"):
        svc.remove(team.id)
    assert svc.update(team.id, headcount=12).status == "dispatched"  # other fields: fine
    released = svc.release(dispatch.id, operator="bob")
    assert released.as_dict()["state"] == "released" and not released.active
    assert released.released_by == "bob" and released.released_at is not None
    assert svc.get(team.id).status == "available" and svc.get(team.id).dispatched_to == ()
    assert incidents.events[-1] == (1, "resource.released", {
        "dispatch_id": dispatch.id, "resource_id": team.id, "name": "蓝天救援队",
        "kind": "team", "quantity": None}, "bob")
    with pytest.raises(Conflict, match="released already"):
        svc.release(dispatch.id)
    # Dispatched again (to an incident without coordinates: no distance).
    again = svc.dispatch(2, team.id)
    assert again.distance_m is None and "distance_m" not in incidents.events[-1][2]
    assert [d.id for d in svc.dispatches(1)] == [dispatch.id]
    assert [d.id for d in svc.dispatches(2)] == [again.id]
    with pytest.raises(NotFound, match="no dispatch .* of incident 1"):
        svc.release(again.id, incident_id=1)
    assert count_rows(database, "resource_dispatches") == 2


def test_dispatch_refusals_write_nothing(svc: ResourceService, incidents: FakeIncidents,
                                         database: Database) -> None:
    team = svc.create("team", "蓝天救援队")
    truck = svc.create("vehicle", "水罐消防车", status="unavailable")
    before = svc.get(team.id)
    with pytest.raises(NotFound, match="no incident 404"):
        svc.dispatch(404, team.id)
    with pytest.raises(NotFound, match="no resource 999"):
        svc.dispatch(1, 999)
    with pytest.raises(InvalidInput, match="a team is dispatched whole"):
        svc.dispatch(1, team.id, quantity=1)
    with pytest.raises(InvalidInput, match="note must be at most 1000"):
        svc.dispatch(1, team.id, note="x" * 1001)
    with pytest.raises(Conflict, match="水罐消防车 is unavailable"):
        svc.dispatch(1, truck.id)
    with pytest.raises(InvalidInput, match="incident_id must be a positive integer"):
        svc.dispatch(0, team.id)
    assert svc.get(team.id) == before
    assert count_rows(database, "resource_dispatches") == 0 and incidents.events == []


def test_supplies_are_taken_from_stock_and_given_back(svc: ResourceService,
                                                      database: Database) -> None:
    tents = svc.create("supply", "帐篷", quantity=100, unit="顶", warehouse="朝阳仓库",
                       location=loc(BEIJING_STATION))

    def stock() -> tuple[int, str]:
        resource = svc.get(tents.id)
        return resource.details["quantity"], resource.status

    first = svc.dispatch(1, tents.id, quantity=30)
    assert (first.quantity, first.unit) == (30, "顶")
    assert stock() == (70, "available")  # stock remains: still available
    for bad, words in ((None, "say how many of 帐篷 to send (1-70 in stock)"),
                       (0, "quantity must be at least 1, got 0"),
                       (-5, "quantity must be at least 1, got -5"),
                       (71, "quantity 71 is more than the 70顶 of 帐篷 in stock"),
                       (True, "quantity must be an integer")):
        with pytest.raises(InvalidInput) as caught:
            svc.dispatch(3, tents.id, quantity=bad)
        assert words in caught.value.message
    assert stock() == (70, "available") and count_rows(database, "resource_dispatches") == 1
    second = svc.dispatch(3, tents.id, quantity=70)
    assert stock() == (0, "dispatched")
    assert svc.get(tents.id).dispatched_to == (1, 3)
    with pytest.raises(Conflict) as caught_conflict:
        svc.dispatch(1, tents.id, quantity=1)
    assert caught_conflict.value.error_id == "out-of-stock"
    svc.release(first.id)
    assert stock() == (30, "available")
    assert svc.dispatch(1, tents.id, quantity=30).quantity == 30
    assert stock() == (0, "dispatched")
    # A restock makes it available although some is still out.
    assert svc.update(tents.id, quantity=50).status == "available"
    svc.release(second.id)
    assert stock() == (120, "available")
    # Marked unavailable by hand: stays so when stock comes back, and is not dispatched.
    third_out = svc.dispatches(1)[-1]
    assert svc.update(tents.id, status="unavailable").status == "unavailable"
    svc.release(third_out.id)
    assert stock() == (150, "unavailable")
    with pytest.raises(Conflict, match="unavailable"):
        svc.dispatch(1, tents.id, quantity=1)


def test_removing_keeps_the_dispatch_history(svc: ResourceService) -> None:
    truck = svc.create("vehicle", "救护车一号")
    dispatch = svc.dispatch(1, truck.id)
    svc.release(dispatch.id)
    svc.remove(truck.id)
    with pytest.raises(NotFound):
        svc.get(truck.id)
    [kept] = svc.dispatches(1)
    assert (kept.resource_id, kept.name, kept.kind) == (None, "救护车一号", "vehicle")
    with pytest.raises(NotFound):
        svc.remove(truck.id)


def test_a_lost_timeline_line_does_not_undo_the_dispatch(
        svc: ResourceService, incidents: FakeIncidents,
        caplog: pytest.LogCaptureFixture) -> None:
    team = svc.create("team", "蓝天救援队")
    incidents.broken = True
    with caplog.at_level(logging.ERROR, logger="dispatch.resources"):
        dispatch = svc.dispatch(1, team.id)
    assert svc.get(team.id).status == "dispatched" and dispatch.active
    assert "incident 1: cannot record resource.dispatched" in caplog.text


def test_settle_status_table() -> None:
    assert settle_status("team", "available", None, quantity=None, open_dispatches=()) == \
        "available"
    assert settle_status("team", "dispatched", None, quantity=None, open_dispatches=(4,)) == \
        "dispatched"
    with pytest.raises(Conflict, match="incident 4"):
        settle_status("team", "dispatched", "unavailable", quantity=None, open_dispatches=(4,))
    assert settle_status("supply", "available", None, quantity=0, open_dispatches=(4,)) == \
        "dispatched"
    assert settle_status("supply", "available", None, quantity=0, open_dispatches=()) == \
        "available"
    assert settle_status("supply", "dispatched", "unavailable", quantity=0,
                         open_dispatches=(4,)) == "unavailable"


class FakeCall:
    def __init__(self, call_id: str) -> None:
        self.id = call_id


def test_call_a_contact(svc: ResourceService, incidents: FakeIncidents) -> None:
    team = svc.create("team", "蓝天救援队", contacts=[
        {"name": "张伟", "phone": "13800138000", "title": "队长"},
        {"name": "值班室", "phone": "1001"}])
    dialled: list[str] = []

    def dial(phone: str) -> FakeCall:
        dialled.append(phone)
        return FakeCall(f"D{len(dialled)}")

    _, contact, call = svc.call_contact(team.id, 0, dial)
    assert (contact.name, call.id, dialled) == ("张伟", "D1", ["13800138000"])
    assert incidents.events == []  # no incident given: nothing on a timeline
    _, contact, call = svc.call_contact(team.id, "值班室", dial, incident_id=1, operator="alice")
    assert dialled[-1] == "1001"
    assert incidents.events == [(1, "resource.contact_called", {
        "resource_id": team.id, "name": "蓝天救援队", "kind": "team", "contact": "值班室",
        "phone": "1001", "call_id": "D2"}, "alice")]
    for which, words in ((2, "contact 2 does not exist: 蓝天救援队 has 2 (0-1)"),
                         ("李四", "no contact named '李四' (contacts: 张伟, 值班室)")):
        with pytest.raises(InvalidInput, match=words.replace("(", r"\(").replace(")", r"\)")):
            svc.call_contact(team.id, which, dial)
    with pytest.raises(NotFound):
        svc.call_contact(team.id, 0, dial, incident_id=404)
    lonely = svc.create("expert", "王教授")
    with pytest.raises(InvalidInput, match="王教授 has no contacts to call"):
        svc.call_contact(lonely.id, 0, dial)
    assert dialled == ["13800138000", "1001"]  # nothing dialled after a refusal


def test_a_second_connection_sees_the_same_stock(database: Database,
                                                 incidents: FakeIncidents, tmp_path: Any) -> None:
    from storage.sql import open_database

    first = ResourceService(database, incidents)
    other_db = open_database(database.url, default_path=tmp_path / "unused.sqlite3")
    try:
        second = ResourceService(other_db, incidents)
        tents = first.create("supply", "帐篷", quantity=5)
        second.dispatch(1, tents.id, quantity=3)
        with pytest.raises(InvalidInput, match="more than the 2 of 帐篷"):
            first.dispatch(1, tents.id, quantity=3)
        assert first.get(tents.id).details["quantity"] == 2
    finally:
        other_db.close()


def test_the_unique_index_backs_the_name_check(svc: ResourceService,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    svc.create("team", "蓝天救援队")
    other = svc.create("team", "二号队")
    # As if a concurrent writer got in between the check and the write.
    monkeypatch.setattr(svc, "_check_key", lambda *args: None)
    with pytest.raises(Conflict, match="there is a team named '蓝天救援队' already"):
        svc.create("team", "蓝天救援队")
    with pytest.raises(Conflict, match="there is a team named '蓝天救援队' already"):
        svc.update(other.id, name="蓝天救援队")
    assert [r.name for r in svc.list()] == ["蓝天救援队", "二号队"]


def test_concurrent_dispatches_never_take_the_same_stock(
        postgres_server: Any, incidents: FakeIncidents, tmp_path: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two dispatchers on two connections: the later write sees the stock has changed.

    On PostgreSQL only: it lets both transactions read at once (SQLite's BEGIN
    IMMEDIATE makes the second wait for the first, so the race cannot happen there)."""
    from storage.sql import open_database

    with postgres_server.fresh_database() as url:
        database = open_database(url, default_path=tmp_path / "unused.sqlite3")
        other_db = open_database(url, default_path=tmp_path / "unused.sqlite3")
        try:
            _race(database, other_db, incidents, monkeypatch)
        finally:
            other_db.close()
            database.close()


def _race(database: Database, other_db: Database, incidents: FakeIncidents,
          monkeypatch: pytest.MonkeyPatch) -> None:
    first = ResourceService(database, incidents)
    second = ResourceService(other_db, incidents)
    tents = first.create("supply", "帐篷", quantity=5)
    load = first._load

    def load_then_race(tx: Any, resource_id: int) -> Any:
        resource = load(tx, resource_id)
        second.dispatch(3, resource_id, quantity=4)  # commits meanwhile
        return resource

    monkeypatch.setattr(first, "_load", load_then_race)
    with pytest.raises(Conflict, match="changed meanwhile: try again"):
        first.dispatch(1, tents.id, quantity=5)
    monkeypatch.undo()
    assert first.get(tents.id).details["quantity"] == 1
    assert [d.quantity for d in first.dispatches(3)] == [4] and first.dispatches(1) == []


# ------------------------------------------------------------------------------ CSV

GOOD_CSV = (
    "\ufeffKind,Name,Lat,Lon,Address,Contacts,Status,Leader,Members,Headcount,Quantity,Unit,"
    "Warehouse,Keeper,Field,Capacity,Plate,Vehicle_type,Seats\n"
    "救援队伍,蓝天救援队,39.9073,116.3740,西单北大街,张伟：13800138000：队长；值班室:1001,,"
    "张伟,张伟、李娜;王强,30,,,,,,,,,\n"
    "supply,帐篷,39.9029,116.4270,,赵六:13900139000,,,,,200,顶,朝阳仓库,赵六,,,,,\n"
    "supply,帐篷,,,,,,,,,50,顶,海淀仓库,,,,,,\n"
    "专家,刘教授,,,,,不可用,,,,,,,,危化品,,,,\n"
    "shelter,地坛公园避难场所,39.9526,116.4109,\"安定门外大街, 地坛公园\",,,,,,,,,,,5000,,,\n"
    "VEHICLE,水罐消防车,,,,,available,,,,,,,,,,京A12345,消防车,6\n"
)


def test_import_csv(svc: ResourceService) -> None:
    assert svc.import_csv(GOOD_CSV.encode()).to_dict() == {"created": 6, "updated": 0}
    by_name = {(r.name, r.details.get("warehouse")): r for r in svc.list()}
    team = by_name[("蓝天救援队", None)]
    assert team.location == XIDAN and team.details["members"] == ("张伟", "李娜", "王强")
    assert team.contacts == (Contact("张伟", "13800138000", "队长"), Contact("值班室", "1001"))
    assert by_name[("帐篷", "朝阳仓库")].details["quantity"] == 200
    assert by_name[("帐篷", "海淀仓库")].details["quantity"] == 50
    assert by_name[("刘教授", None)].status == "unavailable"
    assert by_name[("地坛公园避难场所", None)].address == "安定门外大街, 地坛公园"
    assert by_name[("水罐消防车", None)].details["seats"] == 6
    # Again, with changes: rows update by kind and name (and warehouse); empty cells keep.
    update = ("kind,name,quantity,headcount\n"
              "supply,帐篷,,\n"
              "team,蓝天救援队,,25\n")
    with pytest.raises(ImportFailed):
        svc.import_csv(update.replace("supply,帐篷,,", "supply,帐篷,-1,"))
    assert svc.import_csv(update).to_dict() == {"created": 1, "updated": 1}  # 帐篷 without
    team_after = svc.get(team.id)                                           # a warehouse
    assert team_after.details["headcount"] == 25
    assert team_after.contacts == team.contacts and team_after.location == XIDAN
    assert len(svc.list()) == 7


def test_import_reports_every_bad_line_and_writes_nothing(svc: ResourceService,
                                                          database: Database) -> None:
    existing = svc.create("team", "蓝天救援队")
    svc.dispatch(1, existing.id)
    bad = ("kind,name,lat,lon,contacts,status,quantity,members,capacity\n"  # 1
           "team,一号队,,,,,,,\n"                                           # 2: fine
           "boat,冲锋舟,,,,,,,\n"                                           # 3
           "supply,矿泉水,39.9,,,,-5,,\n"                                   # 4
           "team,二号队,,,,,3,,\n"                                          # 5
           "shelter,体育馆,91,116,,,,,many\n"                               # 6
           "team,,,,张三,,,,\n"                                             # 7
           "team,三号队,,,,dispatched,,\"张三;张三\",\n"                     # 8
           "team,一号队,,,,,,,\n"                                           # 9
           "team,蓝天救援队,,,,unavailable,,,\n"                            # 10
           "\"team\",\"多行\n名称\",,,,,,,\n")                              # 11-12
    with pytest.raises(ImportFailed) as caught:
        svc.import_csv(bad)
    assert [(e.line, e.message) for e in caught.value.errors] == [
        (3, "kind 'boat' is not one of team, expert, supply, equipment, shelter, vehicle"),
        (4, "give both lat and lon, or neither"),
        (4, "quantity must be at least 0, got -5"),
        (5, "column quantity does not apply to a team (救援队伍): leave it empty on this row"),
        (6, "location.lat must be between -90 and 90, got 91.0"),
        (6, "capacity 'many' is not a whole number"),
        (7, "name must not be empty"),
        (7, "contact '张三' is not NAME:PHONE (or NAME:PHONE:TITLE)"),
        (8, "status 'dispatched' is set by dispatching the resource to an incident, not by "
            "hand"),
        (8, "members[1]: '张三' is listed twice"),
        (9, "team '一号队' is already on line 2"),
        (10, "蓝天救援队: it is dispatched to incident 1: release it first"),
        (11, "name must not contain control characters"),
    ]
    assert caught.value.message.startswith("nothing imported, 13 errors: line 3: kind 'boat'")
    assert [r.name for r in svc.list()] == ["蓝天救援队"]
    assert svc.get(existing.id).status == "dispatched"


@pytest.mark.parametrize(("data", "line", "words"), [
    ("", 1, "the file is empty"),
    ("name,kind,colour\n", 1, "unknown column(s) colour"),
    ("name,lat\nx,1\n", 1, "the header has no 'kind' column"),
    ("kind,name,name\n", 1, "a column appears twice"),
    ("kind,name\nteam,a,extra\n", 2, "3 fields but the header has 2 columns"),
    ("kind,name\nteam,\"open\n", 2, "malformed CSV"),
    # 一 in GBK happens to be valid UTF-8 (U+04BB); 号 is not.
    ("kind,name\nteam,一号队\n".encode("gbk"), 2, "not UTF-8 text (byte 18): save the file as "
                                                 "CSV UTF-8"),
])
def test_import_unreadable_files(svc: ResourceService, data: str | bytes, line: int,
                                 words: str) -> None:
    with pytest.raises(ImportFailed) as caught:
        svc.import_csv(data)
    assert caught.value.errors[0].line == line and words in caught.value.errors[0].message, \
        caught.value.errors


def test_parse_csv_is_pure() -> None:
    [row] = parse_csv("kind,name,members,headcount\n队伍,一号队,甲、乙,3\n")
    assert (row.line, row.kind, row.name) == (2, "team", "一号队")
    assert row.fields == {"members": ("甲", "乙"), "headcount": 3}

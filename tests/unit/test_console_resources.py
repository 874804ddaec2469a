"""Resources over HTTP: CRUD, nearest to an incident, one-click calls, dispatches, CSV."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from console.app import create_app
from console.auth import AuthService, LoginThrottle
from console.resources_api import resources_routes
from console.validation import validate
from dispatch.audit import AuditLog
from dispatch.errors import NotFound
from dispatch.resources import ResourceService
from hub.store import Store
from storage.sql import SqliteDatabase
from tests.unit.console_util import FAST_HASHER, PASSWORDS, Clock, FakeHub

TIANANMEN = (39.9087, 116.3975)
XIDAN = (39.9073, 116.3740)
BEIJING_STATION = (39.9029, 116.4270)


class FakeIncidents:
    def __init__(self) -> None:
        self.places: dict[int, tuple[float, float] | None] = {7: TIANANMEN, 8: None}
        self.events: list[tuple[int, str, dict[str, Any], str | None]] = []

    def location(self, incident_id: int) -> tuple[float, float] | None:
        if incident_id not in self.places:
            raise NotFound(f"no incident {incident_id}", "incident-not-found")
        return self.places[incident_id]

    def record(self, incident_id: int, kind: str, data: dict[str, Any], *,
               actor: str | None = None) -> None:
        self.events.append((incident_id, kind, data, actor))


@dataclass
class FakeCall:
    id: str
    targets: list[str]
    mode: str
    operator: str | None
    incident_id: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "mode": self.mode, "targets": self.targets,
                "state": "active", "operator": self.operator,
                "incident_id": self.incident_id, "legs": []}


@dataclass
class FakeCalls:
    """What the routes use of CallService: ``create`` (a real one needs a SIP gateway)."""

    placed: list[FakeCall] = field(default_factory=list)

    def create(self, targets: list[str], mode: str = "group", *, operator: str | None = None,
               incident_id: int | None = None) -> FakeCall:
        call = FakeCall(f"D{len(self.placed) + 1}", list(targets), mode, operator, incident_id)
        self.placed.append(call)
        return call


@dataclass
class Hub:
    client: TestClient
    resources: ResourceService
    incidents: FakeIncidents
    calls: FakeCalls
    audit: AuditLog
    tokens: dict[str, str] = field(default_factory=dict)

    def headers(self, as_: str) -> dict[str, str]:
        if as_ not in self.tokens:
            response = self.client.post("/api/auth/token",
                                        json={"username": as_, "password": PASSWORDS[as_]})
            assert response.status_code == 200, response.text
            self.tokens[as_] = response.json()["token"]
        return {"Authorization": f"Bearer {self.tokens[as_]}"}

    def request(self, method: str, path: str, as_: str, **kw: Any) -> Any:
        headers = {**self.headers(as_), **kw.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kw)

    def get(self, path: str, as_: str = "dispatcher", **kw: Any) -> Any:
        return self.request("GET", path, as_, **kw)

    def post(self, path: str, as_: str = "supervisor", **kw: Any) -> Any:
        return self.request("POST", path, as_, **kw)

    def patch(self, path: str, as_: str = "supervisor", **kw: Any) -> Any:
        return self.request("PATCH", path, as_, **kw)

    def delete(self, path: str, as_: str = "supervisor", **kw: Any) -> Any:
        return self.request("DELETE", path, as_, **kw)

    def audit_entries(self, action: str) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self.audit.entries(action=action)]


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    clock = Clock()
    store = Store.open(tmp_path / "data")
    auth = AuthService(store, clock=clock, hasher=FAST_HASHER,
                       throttle=LoginThrottle(max_failures=3, window=60, block_for=300))
    for role, password in PASSWORDS.items():
        auth.add_operator(role, role, password=password)
    audit = AuditLog(store, clock=clock)
    db = SqliteDatabase(tmp_path / "resources.sqlite3")
    incidents = FakeIncidents()
    resources = ResourceService(db, incidents, clock=clock)
    calls = FakeCalls()
    app = create_app(FakeHub(), version="test", auth=auth, audit=audit,
                     features=[lambda api: resources_routes(api, resources, calls)])
    try:
        with TestClient(app, base_url="http://hub.test") as client:
            yield Hub(client, resources, incidents, calls, audit)
    finally:
        db.close()
        store.close()


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if status != 204 else None


def refused(response: Any, status: int, error_id: str, words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error_id"] == error_id, body
    assert words in body["message"], body
    return body


TEAM = {"kind": "team", "name": "蓝天救援队", "location": {"lat": XIDAN[0], "lon": XIDAN[1]},
        "address": "西单北大街", "leader": "张伟", "members": ["张伟", "李娜"], "headcount": 30,
        "contacts": [{"name": "张伟", "phone": "13800138000", "title": "队长"},
                     {"name": "值班室", "phone": "1001"}]}
TENTS = {"kind": "supply", "name": "帐篷", "quantity": 100, "unit": "顶", "warehouse": "朝阳仓库",
         "keeper": "赵六", "location": {"lat": BEIJING_STATION[0], "lon": BEIJING_STATION[1]}}


# --------------------------------------------------------------------------- resources


def test_create_read_update_remove(hub: Hub) -> None:
    response = hub.post("/api/resources", json=TEAM)
    team = ok(response, 201)
    assert response.headers["location"] == f"/api/resources/{team['id']}"
    assert team == {**TEAM, "id": team["id"], "status": "available",
                    "contacts": [{"name": "张伟", "phone": "13800138000", "title": "队长"},
                                 {"name": "值班室", "phone": "1001", "title": None}],
                    "dispatched_to": [], "created_at": team["created_at"],
                    "updated_at": team["updated_at"]}
    assert ok(hub.get(f"/api/resources/{team['id']}")) == team
    changed = ok(hub.patch(f"/api/resources/{team['id']}", json={"headcount": 25,
                                                                  "status": "unavailable"}))
    assert (changed["headcount"], changed["status"], changed["leader"]) == (25, "unavailable",
                                                                            "张伟")
    ok(hub.delete(f"/api/resources/{team['id']}"), 204)
    refused(hub.get(f"/api/resources/{team['id']}"), 404, "resource-not-found", "no resource")
    assert [(e["action"], e["target"], e["result"]) for e in
            hub.audit_entries("resource.*")[::-1]] == [
        ("resource.create", f"resource:{team['id']}", "ok"),
        ("resource.update", f"resource:{team['id']}", "ok"),
        ("resource.remove", f"resource:{team['id']}", "ok")]
    assert hub.audit_entries("resource.update")[0]["detail"] == {
        "fields": ["headcount", "status"]}


def test_roles(hub: Hub) -> None:
    refused(hub.post("/api/resources", as_="dispatcher", json=TEAM), 403, "forbidden",
            "needs the supervisor role")
    ok(hub.post("/api/resources", as_="admin", json=TEAM), 201)
    assert ok(hub.get("/api/resources"))[0]["name"] == "蓝天救援队"
    refused(hub.client.get("/api/resources"), 401, "unauthenticated", "authentication required")
    refused(hub.post("/api/resources/import", as_="dispatcher", content="kind,name\n",
                     headers={"content-type": "text/csv"}), 403, "forbidden", "supervisor")
    [entry] = hub.audit_entries("resource.create")[1:]
    assert (entry["operator"], entry["result"], entry["status"]) == ("dispatcher", "forbidden",
                                                                     403)


@pytest.mark.parametrize(("body", "words"), [
    ({**TENTS, "quantity": -1}, "body.quantity: must be at least 0"),
    ({**TEAM, "quantity": 5}, "body: unknown field 'quantity' (fields: kind, name, status, "
                              "location, address, contacts, leader, members, headcount)"),
    ({**TEAM, "kind": "boat"}, "body.kind: 'boat' is not one of team, expert"),
    ({**TEAM, "status": "dispatched"}, "body.status: 'dispatched' is not one of available, "
                                       "unavailable"),
    ({**TEAM, "location": {"lat": 91, "lon": 116}}, "body.location.lat: must be at most 90"),
    ({**TEAM, "members": ["张伟", "张伟"]}, "body.members[1]: '张伟' is listed twice"),
    ({**TEAM, "contacts": [{"name": "张伟"}]}, "body.contacts[0]: 'phone' is required"),
    ({"kind": "team"}, "body: 'name' is required"),
    ({**TEAM, "name": "  "}, "body.name"),
    ({**TENTS, "quantity": 1.5}, "body.quantity: expected an integer, got a number"),
])
def test_bad_input_is_422_naming_the_field_and_stores_nothing(
        hub: Hub, body: dict[str, Any], words: str) -> None:
    refused(hub.post("/api/resources", json=body), 422, "invalid-input", words)
    assert ok(hub.get("/api/resources")) == []
    [entry] = hub.audit_entries("resource.create")
    assert (entry["result"], entry["status"]) == ("invalid-input", 422)


def test_non_finite_coordinates_are_refused_by_the_service(hub: Hub) -> None:
    # JSON itself has no NaN, but Python's parser takes it; the service checks again.
    raw = '{"kind": "team", "name": "x", "location": {"lat": NaN, "lon": 116}}'
    refused(hub.post("/api/resources", content=raw,
                     headers={"content-type": "application/json"}),
            422, "invalid-location", "location.lat must be between -90 and 90, got nan")
    assert hub.resources.list() == []


def test_patch_is_checked_against_the_resources_kind(hub: Hub) -> None:
    team = ok(hub.post("/api/resources", json=TEAM), 201)
    before = ok(hub.get(f"/api/resources/{team['id']}"))
    refused(hub.patch(f"/api/resources/{team['id']}", json={"headcount": 3, "quantity": 5}),
            422, "unknown-field", "'quantity' is not a field of a team")
    refused(hub.patch(f"/api/resources/{team['id']}", json={"headcount": -3}),
            422, "invalid-input", "body.headcount: must be at least 0")
    refused(hub.patch(f"/api/resources/{team['id']}", json={"kind": "vehicle"}),
            422, "invalid-input", "unknown field 'kind'")
    assert ok(hub.get(f"/api/resources/{team['id']}")) == before
    ok(hub.post("/api/resources", json={"kind": "team", "name": "二号队"}), 201)
    refused(hub.patch(f"/api/resources/{team['id']}", json={"name": "二号队"}),
            409, "resource-exists", "there is a team named '二号队' already")
    refused(hub.post("/api/resources", json=TEAM), 409, "resource-exists", "蓝天救援队")


@pytest.mark.parametrize("path", ["/api/resources/abc", "/api/resources/0",
                                  "/api/resources/99999999999999999999", "/api/resources/12"])
def test_unknown_resource_ids_are_404(hub: Hub, path: str) -> None:
    assert hub.get(path).status_code == 404
    assert hub.patch(path, json={"name": "x"}).status_code == 404
    assert hub.delete(path).status_code == 404


def test_list_filters_and_nearest_to_an_incident(hub: Hub) -> None:
    team = ok(hub.post("/api/resources", json=TEAM), 201)
    tents = ok(hub.post("/api/resources", json=TENTS), 201)
    expert = ok(hub.post("/api/resources", json={"kind": "expert", "name": "刘教授",
                                                 "field": "危化品"}), 201)
    listing = ok(hub.get("/api/resources"))
    assert [r["id"] for r in listing] == [team["id"], tents["id"], expert["id"]]
    assert "distance_m" not in listing[0]
    near = ok(hub.get("/api/resources", params={"near": 7}))
    assert [(r["name"], r["distance_m"]) for r in near] == [
        ("蓝天救援队", pytest.approx(2_010, abs=5)), ("帐篷", pytest.approx(2_598, abs=5)),
        ("刘教授", None)]
    point = ok(hub.get("/api/resources", params={"lat": BEIJING_STATION[0],
                                                  "lon": BEIJING_STATION[1], "radius": 1000}))
    assert [r["name"] for r in point] == ["帐篷"]
    assert [r["name"] for r in ok(hub.get("/api/resources", params={"q": "危化品"}))] == [
        "刘教授"]
    assert [r["name"] for r in ok(hub.get("/api/resources", params={
        "kind": "supply", "status": "available", "limit": 5}))] == ["帐篷"]
    refused(hub.get("/api/resources", params={"near": 8}), 422, "incident-without-location",
            "incident 8 has no coordinates")
    refused(hub.get("/api/resources", params={"near": 9}), 404, "incident-not-found",
            "no incident 9")
    refused(hub.get("/api/resources", params={"lat": 39.9}), 422, "invalid-input",
            "give lat and lon together")
    refused(hub.get("/api/resources", params={"lat": 39.9, "lon": 116.4, "near": 7}), 422,
            "invalid-input", "not both")
    refused(hub.get("/api/resources", params={"radius": 100}), 422, "invalid-near",
            "needs a point")
    refused(hub.get("/api/resources", params={"lat": "north", "lon": 1}), 422, "invalid-input",
            "query parameter 'lat': expected a number")
    refused(hub.get("/api/resources", params={"kind": "boat"}), 422, "invalid-input",
            "query parameter 'kind'")
    refused(hub.get("/api/resources", params={"limit": 0}), 422, "invalid-input",
            "query parameter 'limit': must be at least 1")


# ------------------------------------------------------------------------- one-click call


def test_call_a_contact_in_one_click(hub: Hub) -> None:
    team = ok(hub.post("/api/resources", json=TEAM), 201)
    response = hub.post(f"/api/resources/{team['id']}/call", as_="dispatcher")
    call = ok(response, 201)
    assert response.headers["location"] == "/api/calls/D1"
    assert call["id"] == "D1" and call["targets"] == ["13800138000"]
    assert (call["mode"], call["operator"], call["incident_id"]) == ("single", "dispatcher",
                                                                     None)
    assert hub.incidents.events == []
    call = ok(hub.post(f"/api/resources/{team['id']}/call", as_="dispatcher",
                       json={"contact": "值班室", "incident_id": 7}), 201)
    assert call["targets"] == ["1001"] and call["incident_id"] == 7
    assert hub.incidents.events == [(7, "resource.contact_called", {
        "resource_id": team["id"], "name": "蓝天救援队", "kind": "team", "contact": "值班室",
        "phone": "1001", "call_id": "D2"}, "dispatcher")]
    assert ok(hub.post(f"/api/resources/{team['id']}/call", as_="dispatcher",
                       json={"contact": 1}), 201)["targets"] == ["1001"]
    refused(hub.post(f"/api/resources/{team['id']}/call", as_="dispatcher",
                     json={"contact": 5}), 422, "unknown-contact", "contact 5 does not exist")
    refused(hub.post(f"/api/resources/{team['id']}/call", as_="dispatcher",
                     json={"contact": "李四"}), 422, "unknown-contact", "no contact named '李四'")
    refused(hub.post(f"/api/resources/{team['id']}/call", as_="dispatcher",
                     json={"incident_id": 404}), 404, "incident-not-found", "no incident 404")
    refused(hub.post(f"/api/resources/{team['id']}/call", as_="dispatcher",
                     json={"contact": -1}), 422, "invalid-input", "body.contact")
    refused(hub.post("/api/resources/99/call", as_="dispatcher"), 404, "resource-not-found",
            "no resource 99")
    assert len(hub.calls.placed) == 3  # nothing dialled after a refusal
    entries = hub.audit_entries("resource.call")
    assert [e["result"] for e in entries[::-1]] == [
        "ok", "ok", "ok", "unknown-contact", "unknown-contact", "incident-not-found",
        "invalid-input", "resource-not-found"]
    assert entries[-2]["detail"] == {"contact": "值班室", "phone": "1001", "call_id": "D2",
                                     "incident_id": 7}
    assert entries[-2]["target"] == f"resource:{team['id']}"


# ------------------------------------------------------------------------- dispatching


def test_dispatch_and_release(hub: Hub) -> None:
    team = ok(hub.post("/api/resources", json=TEAM), 201)
    tents = ok(hub.post("/api/resources", json=TENTS), 201)
    first = ok(hub.post("/api/incidents/7/dispatches", as_="dispatcher",
                        json={"resource_id": team["id"], "note": "协助疏散"}), 201)
    assert (first["incident_id"], first["resource_id"], first["state"], first["note"],
            first["dispatched_by"]) == (7, team["id"], "active", "协助疏散", "dispatcher")
    assert first["distance_m"] == pytest.approx(2_010, abs=5)
    second = ok(hub.post("/api/incidents/7/dispatches", as_="dispatcher",
                         json={"resource_id": tents["id"], "quantity": 40}), 201)
    assert (second["quantity"], second["unit"]) == (40, "顶")
    after = ok(hub.get(f"/api/resources/{tents['id']}"))
    assert (after["quantity"], after["status"], after["dispatched_to"]) == (60, "available", [7])
    assert ok(hub.get(f"/api/resources/{team['id']}"))["status"] == "dispatched"
    assert [d["id"] for d in ok(hub.get("/api/incidents/7/dispatches"))["dispatches"]] == [
        first["id"], second["id"]]
    assert [k for _, k, _, _ in hub.incidents.events] == ["resource.dispatched"] * 2
    refused(hub.post("/api/incidents/7/dispatches", as_="dispatcher",
                     json={"resource_id": team["id"]}), 409, "resource-dispatched",
            "already dispatched to incident 7")
    refused(hub.delete(f"/api/resources/{team['id']}"), 409, "resource-dispatched",
            "release it first")
    released = ok(hub.post(f"/api/incidents/7/dispatches/{second['id']}/release",
                           as_="dispatcher"))
    assert released["state"] == "released" and released["released_by"] == "dispatcher"
    assert ok(hub.get(f"/api/resources/{tents['id']}"))["quantity"] == 100
    refused(hub.post(f"/api/incidents/7/dispatches/{second['id']}/release", as_="dispatcher"),
            409, "already-released", "released already")
    refused(hub.post(f"/api/incidents/8/dispatches/{first['id']}/release", as_="dispatcher"),
            404, "dispatch-not-found", "of incident 8")
    assert hub.incidents.events[-1][1] == "resource.released"
    releases = hub.audit_entries("resource.release")[::-1]
    assert [e["result"] for e in releases] == ["ok", "already-released", "dispatch-not-found"]
    entry = releases[0]
    assert (entry["target"], entry["detail"]) == (
        f"dispatch:{second['id']}", {"incident_id": 7, "resource_id": tents["id"],
                                     "quantity": 40})
    entries = hub.audit_entries("resource.dispatch")
    assert [e["result"] for e in entries[::-1]] == ["ok", "ok", "resource-dispatched"]
    assert entries[-1]["detail"] == {"incident_id": 7, "dispatch_id": first["id"],
                                     "quantity": None}


@pytest.mark.parametrize(("body", "status", "error_id", "words"), [
    ({"quantity": -5}, 422, "invalid-input", "body.quantity: must be at least 1"),
    ({"quantity": 0}, 422, "invalid-input", "body.quantity: must be at least 1"),
    ({"quantity": 101}, 422, "not-enough-stock", "quantity 101 is more than the 100顶"),
    ({}, 422, "invalid-quantity", "say how many of 帐篷 to send (1-100 in stock)"),
    ({"quantity": "5"}, 422, "invalid-input", "body.quantity: expected an integer"),
    ({"resource_id": 999, "quantity": 1}, 404, "resource-not-found", "no resource 999"),
    ({"extra": 1}, 422, "invalid-input", "unknown field 'extra'"),
])
def test_dispatch_refusals_write_nothing(hub: Hub, body: dict[str, Any], status: int,
                                         error_id: str, words: str) -> None:
    tents = ok(hub.post("/api/resources", json=TENTS), 201)
    refused(hub.post("/api/incidents/7/dispatches", as_="dispatcher",
                     json={"resource_id": tents["id"], **body}), status, error_id, words)
    assert ok(hub.get(f"/api/resources/{tents['id']}"))["quantity"] == 100
    assert ok(hub.get("/api/incidents/7/dispatches"))["dispatches"] == []
    assert hub.incidents.events == []


def test_dispatch_to_an_unknown_incident(hub: Hub) -> None:
    team = ok(hub.post("/api/resources", json=TEAM), 201)
    refused(hub.post("/api/incidents/404/dispatches", as_="dispatcher",
                     json={"resource_id": team["id"]}), 404, "incident-not-found", "no incident")
    refused(hub.post("/api/incidents/x/dispatches", as_="dispatcher",
                     json={"resource_id": team["id"]}), 404, "incident-not-found", "no incident")
    refused(hub.get("/api/incidents/404/dispatches"), 404, "incident-not-found", "no incident")
    assert ok(hub.get(f"/api/resources/{team['id']}"))["status"] == "available"


# ------------------------------------------------------------------------------ import

CSV = ("kind,name,lat,lon,contacts,leader,quantity,unit,warehouse\n"
       "救援队伍,蓝天救援队,39.9073,116.3740,张伟:13800138000:队长,张伟,,,\n"
       "物资,帐篷,,,,,200,顶,朝阳仓库\n")


def import_csv(hub: Hub, text: str | bytes, as_: str = "supervisor") -> Any:
    return hub.post("/api/resources/import", as_=as_,
                    content=text.encode() if isinstance(text, str) else text,
                    headers={"content-type": "text/csv; charset=utf-8"})


def test_import_csv(hub: Hub) -> None:
    assert ok(import_csv(hub, "\ufeff" + CSV)) == {"created": 2, "updated": 0}
    assert ok(import_csv(hub, CSV)) == {"created": 0, "updated": 2}
    listing = ok(hub.get("/api/resources"))
    assert [(r["kind"], r["name"]) for r in listing] == [("team", "蓝天救援队"), ("supply", "帐篷")]
    assert listing[0]["contacts"] == [{"name": "张伟", "phone": "13800138000", "title": "队长"}]
    [latest, _] = hub.audit_entries("resource.import")
    assert latest["detail"] == {"created": 0, "updated": 2}


def test_import_bad_csv_reports_lines_and_writes_nothing(hub: Hub) -> None:
    bad = CSV + "team,二号队,,,,,-1,,\nboat,冲锋舟,,,,,,,\n"
    body = refused(import_csv(hub, bad), 422, "invalid-csv", "nothing imported, 2 errors")
    assert body["errors"] == [
        {"line": 4, "message": "column quantity does not apply to a team (救援队伍): leave it "
                               "empty on this row"},
        {"line": 5, "message": "kind 'boat' is not one of team, expert, supply, equipment, "
                               "shelter, vehicle"},
    ]
    assert ok(hub.get("/api/resources")) == []
    refused(hub.post("/api/resources/import", json={"kind": "team"}), 415,
            "unsupported-media-type", "text/csv")
    assert hub.audit_entries("resource.import")[1]["result"] == "invalid-csv"


# ----------------------------------------------------------------------------- OpenAPI


def test_routes_are_documented_with_their_schemas(hub: Hub) -> None:
    doc = hub.client.get("/openapi.json").json()
    paths = doc["paths"]
    assert set(paths["/api/resources"]) == {"get", "post"}
    assert set(paths["/api/resources/{resource_id}"]) == {"get", "patch", "delete"}
    assert set(paths["/api/incidents/{incident_id}/dispatches"]) == {"get", "post"}
    assert "post" in paths["/api/incidents/{incident_id}/dispatches/{dispatch_id}/release"]
    assert paths["/api/resources/{resource_id}/call"]["post"]["x-hub-role"] == "dispatcher"
    assert paths["/api/resources"]["post"]["x-hub-role"] == "supervisor"
    assert paths["/api/resources"]["post"]["x-hub-audit-action"] == "resource.create"
    body = paths["/api/resources"]["post"]["requestBody"]["content"]["application/json"][
        "schema"]
    validate(TEAM, body)
    validate(TENTS, body)
    assert "救援队伍" in body["properties"]["kind"]["description"]
    assert body["properties"]["quantity"]["minimum"] == 0
    assert "supply, equipment only" in body["properties"]["quantity"]["description"]
    params = {p["name"] for p in paths["/api/resources"]["get"]["parameters"]}
    assert params == {"kind", "status", "q", "near", "lat", "lon", "radius", "limit"}
    for path, operations in paths.items():
        if "resource" in path or "dispatches" in path:
            for method, op in operations.items():
                assert op["summary"] and op["tags"] == ["resources"], (path, method)
                assert {"401", "403"} <= set(op["responses"]), (path, method)
                if "{" in path:
                    assert "404" in op["responses"], (path, method)
                if "requestBody" in op:
                    assert {"415", "422"} <= set(op["responses"]), (path, method)

"""The directory over HTTP: units, people, endpoints, groups, CSV import, live status."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridges.events import RegistrationChanged
from bridges.model import LegState
from dispatch.directory import DirectoryChanged, EndpointStatusChanged, combine
from hub.cli import main as hub_main
from tests.unit.console_util import NOW, Console, console


@pytest.fixture
def c(tmp_path: Path) -> Iterator[Console]:
    with console(tmp_path) as running:
        for name, display in (("1001", "Duty desk"), ("1002", None), ("1003", None)):
            running.store.add_user(name, "pw", display, now=NOW)
        yield running


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if status != 204 else None


def refused(response: Any, status: int, error_id: str, words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error_id"] == error_id, body
    assert words in body["message"], body


def endpoint_status(c: Console, endpoint_id: str) -> str:
    status: str = ok(c.get(f"/api/directory/endpoints/{endpoint_id}"))["status"]
    return status


# ------------------------------------------------------------------- SIP users as people


def test_every_sip_user_is_a_person_with_no_other_step(c: Console) -> None:
    directory = ok(c.get("/api/directory"))
    assert [p["id"] for p in directory["people"]] == ["user:1001", "user:1002", "user:1003"]
    duty = directory["people"][0]
    assert duty == {"id": "user:1001", "name": "Duty desk", "kind": "person", "title": None,
                    "unit_id": None, "implicit": True, "endpoints": ["sip:1001"], "groups": [],
                    "status": "offline", "created_at": NOW}
    assert directory["endpoints"][0] == {"id": "sip:1001", "kind": "sip", "address": "1001",
                                         "person_id": "user:1001", "position": 0, "label": None,
                                         "status": "offline"}
    assert directory["units"] == [] and directory["groups"] == []


def test_editing_an_implicit_person_stores_it(c: Console) -> None:
    person = ok(c.patch("/api/directory/people/user:1002", json={"title": "Driver"}))
    assert person["id"] == "p1" and not person["implicit"] and person["name"] == "1002"
    assert person["endpoints"] == ["sip:1002"] and person["title"] == "Driver"
    # user:NAME stays an alias of whoever owns sip:NAME.
    assert ok(c.get("/api/directory/people/user:1002"))["id"] == "p1"
    [entry] = c.audit_entries(action="directory.person.update")
    assert entry["target"] == "user:1002" and entry["detail"] == {"stored_as": "p1"}
    refused(c.delete("/api/directory/people/user:1001"), 409, "implicit-person",
            "hub user remove")
    refused(c.delete("/api/directory/endpoints/sip:1001"), 409, "implicit-endpoint",
            "hub user remove")
    # Removing the SIP user removes its endpoint from the stored person.
    c.store.remove_user("1002")
    assert ok(c.get("/api/directory/people/p1"))["endpoints"] == []


# ------------------------------------------------------------------------------- units


def test_unit_tree(c: Console) -> None:
    city = ok(c.post("/api/directory/units", json={"name": "市消防局"}), 201)
    station = ok(c.post("/api/directory/units", json={"name": "一中队", "parent_id": city["id"]}),
                 201)
    assert station == {"id": "u2", "name": "一中队", "parent_id": "u1", "path": "市消防局/一中队",
                       "created_at": NOW}
    assert [u["path"] for u in ok(c.get("/api/directory/units"))["units"]] == [
        "市消防局", "市消防局/一中队"]
    renamed = ok(c.patch("/api/directory/units/u2", json={"name": "Station 1"}))
    assert renamed["path"] == "市消防局/Station 1"
    moved = ok(c.patch("/api/directory/units/u2", json={"parent_id": None}))
    assert moved["path"] == "Station 1" and moved["parent_id"] is None
    ok(c.patch("/api/directory/units/u2", json={"parent_id": "u1"}))
    assert ok(c.get("/api/directory/units/u2"))["parent_id"] == "u1"
    ok(c.delete("/api/directory/units/u2"), 204)
    refused(c.get("/api/directory/units/u2"), 404, "unit-not-found", "no unit 'u2'")


@pytest.mark.parametrize("method, path, body, status, error_id, words", [
    ("POST", "/api/directory/units", {"name": "A"}, 409, "unit-exists", "already exists"),
    ("POST", "/api/directory/units", {"name": ""}, 422, "invalid-input",
     "body.name: must not be empty"),
    ("POST", "/api/directory/units", {"name": "a/b"}, 422, "invalid-input",
     "body.name: 'a/b' does not match"),
    ("POST", "/api/directory/units", {"name": "  "}, 422, "invalid-input",
     "body.name: '  ' does not match"),
    ("POST", "/api/directory/units", {"name": "X", "parent_id": "u99"}, 404, "unit-not-found",
     "u99"),
    ("POST", "/api/directory/units", {"name": "X", "parent_id": 3}, 422, "invalid-input",
     "body.parent_id: expected a string"),
    ("PATCH", "/api/directory/units/u1", {"parent_id": "u2"}, 409, "unit-cycle", "inside it"),
    ("PATCH", "/api/directory/units/u1", {"parent_id": "u1"}, 409, "unit-cycle", "inside it"),
    ("DELETE", "/api/directory/units/u1", None, 409, "unit-not-empty", "1 sub-unit(s)"),
    ("GET", "/api/directory/units/x1", None, 404, "unit-not-found", "no unit 'x1'"),
    ("PATCH", "/api/directory/units/u9", {"name": "Y"}, 404, "unit-not-found", "u9"),
])
def test_unit_refusals(c: Console, method: str, path: str, body: object, status: int,
                       error_id: str, words: str) -> None:
    ok(c.post("/api/directory/units", json={"name": "A"}), 201)
    ok(c.post("/api/directory/units", json={"name": "B", "parent_id": "u1"}), 201)
    refused(c.client.request(method, path, json=body, headers=c.headers("supervisor")),
            status, error_id, words)


# ------------------------------------------------------------------ people, endpoints


def test_people_and_their_endpoints_in_preferred_order(c: Console) -> None:
    ok(c.post("/api/directory/units", json={"name": "Station 1"}), 201)
    person = ok(c.post("/api/directory/people", json={
        "name": "张三", "title": "Captain", "unit_id": "u1",
        "endpoints": [{"kind": "sip", "address": "1001", "label": "desk"},
                      {"kind": "mobile", "address": "+86 138-0013-8000"}]}), 201)
    assert person["id"] == "p1"
    assert person["endpoints"] == ["sip:1001", "mobile:+8613800138000"]
    assert person["status"] == "idle"  # the mobile is reachable; the desk phone is offline
    mobile = ok(c.post("/api/directory/people/p1/endpoints",
                       json={"kind": "radio", "address": "tg-5", "position": 0}), 201)
    assert mobile == {"id": "radio:tg-5", "kind": "radio", "address": "tg-5", "person_id": "p1",
                      "position": 0, "label": None, "status": "offline"}
    assert ok(c.get("/api/directory/people/p1"))["endpoints"] == [
        "radio:tg-5", "sip:1001", "mobile:+8613800138000"]
    moved = ok(c.patch("/api/directory/endpoints/radio:tg-5", json={"position": 9,
                                                                    "label": "talk group"}))
    assert moved["position"] == 2 and moved["label"] == "talk group"
    ok(c.delete("/api/directory/endpoints/sip:1001"), 204)
    assert ok(c.get("/api/directory/people/p1"))["endpoints"] == [
        "mobile:+8613800138000", "radio:tg-5"]
    # sip:1001 is 1001's own (implicit) person again.
    assert ok(c.get("/api/directory/endpoints/sip:1001"))["person_id"] == "user:1001"
    replaced = ok(c.patch("/api/directory/people/p1", json={
        "name": "Zhang San", "unit_id": None, "kind": "device",
        "endpoints": [{"kind": "app", "address": "zhang@app"}]}))
    assert replaced["endpoints"] == ["app:zhang@app"] and replaced["unit_id"] is None
    assert replaced["kind"] == "device" and replaced["name"] == "Zhang San"
    ok(c.delete("/api/directory/people/p1"), 204)
    refused(c.get("/api/directory/people/p1"), 404, "person-not-found", "no person 'p1'")
    refused(c.get("/api/directory/endpoints/app:zhang@app"), 404, "endpoint-not-found",
            "app:zhang@app")
    actions = [e["action"] for e in reversed(c.audit_entries(action="directory.*"))]
    assert actions == ["directory.unit.create", "directory.person.create",
                       "directory.endpoint.create", "directory.endpoint.update",
                       "directory.endpoint.remove", "directory.person.update",
                       "directory.person.remove"]
    assert c.audit_entries(action="directory.endpoint.create")[0]["target"] == "radio:tg-5"


@pytest.mark.parametrize("method, path, body, status, error_id, words", [
    ("POST", "/api/directory/people", {"name": "X", "endpoints": [
        {"kind": "sip", "address": "1009"}]}, 404, "sip-user-not-found", "no SIP user '1009'"),
    ("POST", "/api/directory/people", {"name": "X", "endpoints": [
        {"kind": "mobile", "address": "call me"}]}, 422, "invalid-input",
     "body.endpoints[0].address: 'call me' does not match"),
    ("POST", "/api/directory/people", {"name": "X", "endpoints": [
        {"kind": "sip", "address": "a b"}]}, 422, "invalid-input",
     "body.endpoints[0].address: 'a b' does not match ^[A-Za-z0-9._~-]{1,64}$"),
    ("POST", "/api/directory/people", {"name": "X", "title": "bad\u0007bell"}, 422,
     "invalid-input", "body.title"),
    ("POST", "/api/directory/people", {"name": "X", "endpoints": [
        {"kind": "fax", "address": "1"}]}, 422, "invalid-input",
     "body.endpoints[0].kind: 'fax' is not one of sip, mobile"),
    ("POST", "/api/directory/people", {"name": "X", "endpoints": [
        {"kind": "sip", "address": "1002"}, {"kind": "sip", "address": "1002", "label": "x"}]},
     409, "duplicate-endpoint", "listed twice"),
    ("POST", "/api/directory/people", {"name": "X", "endpoints": [
        {"kind": "sip", "address": "1001"}]}, 409, "endpoint-taken", "already belongs to p1"),
    ("POST", "/api/directory/people", {"name": "X", "unit_id": "u7"}, 404, "unit-not-found",
     "u7"),
    ("POST", "/api/directory/people", {"title": "no name"}, 422, "invalid-input",
     "'name' is required"),
    ("POST", "/api/directory/people", {"name": "X", "kind": "robot"}, 422, "invalid-input",
     "body.kind"),
    ("POST", "/api/directory/people/p1/endpoints", {"kind": "sip", "address": "1001"}, 409,
     "endpoint-exists", "p1 already has endpoint sip:1001"),
    ("POST", "/api/directory/people/p9/endpoints", {"kind": "app", "address": "a"}, 404,
     "person-not-found", "p9"),
    ("POST", "/api/directory/people/user:nobody/endpoints", {"kind": "app", "address": "a"},
     404, "person-not-found", "no SIP user 'nobody'"),
    ("PATCH", "/api/directory/people/p1", {"name": " "}, 422, "invalid-input",
     "body.name: ' ' does not match"),
    ("GET", "/api/directory/endpoints/sip:9999", None, 404, "endpoint-not-found", "sip:9999"),
    ("GET", "/api/directory/endpoints/1001", None, 404, "endpoint-not-found", "KIND:ADDRESS"),
    ("PATCH", "/api/directory/endpoints/mobile:1", {"label": "x"}, 404, "endpoint-not-found",
     "mobile:1"),
    ("DELETE", "/api/directory/people/p2", None, 404, "person-not-found", "p2"),
])
def test_people_refusals(c: Console, method: str, path: str, body: object, status: int,
                         error_id: str, words: str) -> None:
    ok(c.post("/api/directory/people", json={"name": "Owner", "endpoints": [
        {"kind": "sip", "address": "1001"}]}), 201)
    refused(c.client.request(method, path, json=body, headers=c.headers("supervisor")),
            status, error_id, words)


# ------------------------------------------------------------------------------ groups


def test_dispatchers_make_temporary_groups_supervisors_fixed_ones(c: Console) -> None:
    temp = ok(c.post("/api/directory/groups", as_="dispatcher", json={
        "name": "Fire at the port", "kind": "temporary", "members": ["user:1001", "user:1002"]}),
        201)
    assert temp["kind"] == "temporary" and temp["created_by"] == "dispatcher"
    assert temp["members"] == ["p1", "p2"]  # the SIP users' people were stored
    assert ok(c.get("/api/directory/people/p1"))["groups"] == [temp["id"]]
    renamed = ok(c.patch(f"/api/directory/groups/{temp['id']}", as_="dispatcher",
                         json={"name": "Port fire", "members": ["p2"]}))
    assert renamed["name"] == "Port fire" and renamed["members"] == ["p2"]
    refused(c.post("/api/directory/groups", as_="dispatcher", json={"name": "Team 3"}),
            403, "forbidden", "creating a fixed group needs the supervisor role")
    fixed = ok(c.post("/api/directory/groups", as_="supervisor",
                      json={"name": "Team 3", "members": ["user:1003"]}), 201)
    assert fixed["kind"] == "fixed"
    refused(c.patch(f"/api/directory/groups/{fixed['id']}", as_="dispatcher",
                    json={"members": []}), 403, "forbidden", "changing a fixed group")
    refused(c.delete(f"/api/directory/groups/{fixed['id']}", as_="dispatcher"),
            403, "forbidden", "removing a fixed group")
    ok(c.delete(f"/api/directory/groups/{temp['id']}", as_="dispatcher"), 204)
    assert [g["name"] for g in ok(c.get("/api/directory/groups"))["groups"]] == ["Team 3"]
    denied = c.audit_entries(result="forbidden")
    assert {e["action"] for e in denied} == {
        "directory.group.create", "directory.group.update", "directory.group.remove"}
    assert all(e["operator"] == "dispatcher" for e in denied)


@pytest.mark.parametrize("method, path, body, status, error_id, words", [
    ("POST", "/api/directory/groups", {"name": "G"}, 409, "group-exists", "already exists"),
    ("POST", "/api/directory/groups", {"name": "H", "members": ["p42"]}, 404,
     "person-not-found", "p42"),
    ("POST", "/api/directory/groups", {"name": "H", "members": ["user:1001", "user:1001"]},
     422, "invalid-input", "body.members[1]: 'user:1001' is listed twice"),
    ("POST", "/api/directory/groups", {"name": "H", "members": ["user:1001", "p1"]},
     409, "duplicate-member", "'p1' is listed twice (it is p1)"),
    ("POST", "/api/directory/groups", {"name": "H", "kind": "forever"}, 422, "invalid-input",
     "body.kind"),
    ("GET", "/api/directory/groups/g9", None, 404, "group-not-found", "g9"),
    ("PATCH", "/api/directory/groups/g9", {"name": "x"}, 404, "group-not-found", "g9"),
    ("DELETE", "/api/directory/groups/q1", None, 404, "group-not-found", "q1"),
])
def test_group_refusals(c: Console, method: str, path: str, body: object, status: int,
                        error_id: str, words: str) -> None:
    ok(c.post("/api/directory/groups", json={"name": "G"}), 201)
    refused(c.client.request(method, path, json=body, headers=c.headers("supervisor")),
            status, error_id, words)


# ------------------------------------------------------------------------------ search


def test_search(c: Console) -> None:
    ok(c.post("/api/directory/units", json={"name": "港区中队"}), 201)
    ok(c.post("/api/directory/people", json={
        "name": "王五", "unit_id": "u1",
        "endpoints": [{"kind": "mobile", "address": "13912345678"}]}), 201)
    ok(c.post("/api/directory/groups", json={"name": "Night shift", "members": ["user:1003"]}),
       201)

    def found(q: str, **params: str) -> list[str]:
        view = ok(c.get("/api/directory/search", params={"q": q, **params}))
        return [p["id"] for p in view["people"]]

    assert found("王") == ["p1"]
    assert found("港区") == ["p1"]          # by unit path
    assert found("1234") == ["p1"]         # by address
    assert found("duty") == ["user:1001"]  # by display name, case-insensitively
    assert found("night") == ["p2"]        # a group brings its members
    assert found("nobody-matches") == []
    view = ok(c.get("/api/directory", params={"unit": "u1"}))
    assert [p["id"] for p in view["people"]] == ["p1"]
    assert [e["id"] for e in view["endpoints"]] == ["mobile:13912345678"]
    refused(c.get("/api/directory/search"), 422, "invalid-input", "'q' is required")
    refused(c.get("/api/directory", params={"unit": "u9"}), 404, "unit-not-found", "u9")


# ---------------------------------------------------------------------------- import

GOOD_CSV = """\ufeffname,kind,title,unit,endpoints,groups
张三,person,Captain,市消防局/一中队,sip:1001;mobile:138 0013 8000,Fire team 3;Night shift
李四,,,"市消防局/一中队",mobile:13900000000,Fire team 3

Pump 7,device,,市消防局/二中队,radio:tg-7,
"""


def import_csv(c: Console, text: str, as_: str = "supervisor") -> Any:
    return c.post("/api/directory/import", as_=as_, content=text.encode(),
                  headers={"content-type": "text/csv"})


def test_import_good_csv(c: Console) -> None:
    result = ok(import_csv(c, GOOD_CSV))
    assert result == {"units_created": 3, "people_created": 3, "people_updated": 0,
                      "groups_created": 2, "endpoints": 4}
    view = ok(c.get("/api/directory"))
    assert [u["path"] for u in view["units"]] == ["市消防局", "市消防局/一中队", "市消防局/二中队"]
    people = {p["name"]: p for p in view["people"]}
    assert people["张三"]["endpoints"] == ["sip:1001", "mobile:13800138000"]
    assert people["Pump 7"]["kind"] == "device"
    assert "Duty desk" not in people  # 1001 is 张三 now
    groups = {g["name"]: g["members"] for g in view["groups"]}
    assert groups == {"Fire team 3": [people["张三"]["id"], people["李四"]["id"]],
                      "Night shift": [people["张三"]["id"]]}
    # Importing again updates the same people: nothing doubles.
    again = ok(import_csv(c, GOOD_CSV))
    assert again["people_created"] == 0 and again["people_updated"] == 3
    assert len(ok(c.get("/api/directory/people"))["people"]) == 5  # + user:1002, user:1003
    [entry, _] = c.audit_entries(action="directory.import")
    assert entry["detail"]["people_updated"] == 3


def test_import_bad_csv_reports_every_line_and_writes_nothing(c: Console) -> None:
    ok(c.post("/api/directory/people", json={"name": "Owner", "endpoints": [
        {"kind": "sip", "address": "1002"}]}), 201)
    bad = ("name,unit,endpoints\n"            # 1
           "Good One,A,sip:1001\n"            # 2
           ",A,\n"                            # 3: no name
           "X,A,sip:1009\n"                   # 4: unknown user
           "Y,A//B,mobile:1\n"                # 5: bad unit and bad number
           "Z,A,sip:1002\n"                   # 6: 1002 is Owner's
           "W,A,sip:1001\n"                   # 7: also on line 2
           '"multi\nline",A,fax:1\n'          # 8-9: bad name and kind, at the record's first line
           "Good One,A,\n")                   # 10: same person as line 2
    response = import_csv(c, bad)
    assert response.status_code == 422
    body = response.json()
    assert body["error_id"] == "invalid-csv"
    assert body["message"].startswith("nothing imported, 9 errors: line 3: name is empty")
    assert [(e["line"], e["message"]) for e in body["errors"]] == [
        (3, "name is empty"),
        (4, "no SIP user '1009': add it first (hub user add)"),
        (5, "unit 'A//B' has an empty or bad level"),
        (5, "invalid mobile address '1': a phone number: 3-20 digits, optionally after +"),
        (6, "endpoint sip:1002 already belongs to p1"),
        (7, "endpoint sip:1001 is also on line 2"),
        (8, "invalid name 'multi\\nline': 1-128 characters without control characters"),
        (8, "endpoint 'fax:1' is not KIND:ADDRESS with KIND one of sip, mobile, browser, app, "
            "radio"),
        (10, "'Good One' in unit A is already on line 2"),
    ]
    view = ok(c.get("/api/directory"))
    assert view["units"] == [] and [p["name"] for p in view["people"]] == [
        "Owner", "Duty desk", "1003"]


@pytest.mark.parametrize("text, line, words", [
    ("", 1, "the file is empty"),
    ("name,phone\nA,1\n", 1, "unknown column(s) phone"),
    ("title\nA\n", 1, "no 'name' column"),
    ("name,name\nA,B\n", 1, "a column appears twice"),
    ("name\nA,extra\n", 2, "2 fields but the header has 1 columns"),
    ('name\n"unterminated\n', 2, "malformed CSV"),
])
def test_import_unreadable_files(c: Console, text: str, line: int, words: str) -> None:
    response = import_csv(c, text)
    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error["line"] == line and words in error["message"]


def test_import_refuses_non_utf8_and_wrong_types(c: Console) -> None:
    response = c.post("/api/directory/import", content=b"name\n\xff\xfe\n",
                      headers={"content-type": "text/csv"})
    assert response.status_code == 422
    assert response.json()["errors"] == [{"line": 2, "message": "not UTF-8 text (byte 6): "
                                                      "save the file as CSV UTF-8"}]
    response = c.post("/api/directory/import", json={"name": "x"})
    assert response.status_code == 415 and "text/csv" in response.json()["message"]


def test_import_from_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    assert hub_main(["user", "add", "1001", "--password", "pw", "--data-dir", str(data)]) == 0
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text(GOOD_CSV, encoding="utf-8")
    bad.write_text("name,endpoints\nA,sip:1009\n,mobile:13800000000\n", encoding="utf-8")
    assert hub_main(["directory", "import", str(good), "--data-dir", str(data)]) == 0
    assert "3 person(s) added" in capsys.readouterr().out
    assert hub_main(["directory", "import", str(bad), "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: no SIP user '1009'" in err and f"{bad}:3: name is empty" in err
    assert hub_main(["directory", "import", str(tmp_path / "none.csv"),
                     "--data-dir", str(data)]) == 1


def test_operator_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    assert hub_main(["operator", "add", "li", "--password", "long-enough", "--role",
                     "supervisor", "--display-name", "李", *data]) == 0
    assert "added operator li (supervisor)" in capsys.readouterr().out
    assert hub_main(["operator", "add", "li", "--password", "long-enough", "--role",
                     "admin", *data]) == 1
    assert "already exists" in capsys.readouterr().err
    assert hub_main(["operator", "add", "x", "--password", "short", "--role", "admin",
                     *data]) == 2
    assert "8-256 characters" in capsys.readouterr().err
    assert hub_main(["operator", "add", "x", "--password", "long-enough", "--role", "root",
                     *data]) == 2
    capsys.readouterr()
    assert hub_main(["operator", "list", *data]) == 0
    out = capsys.readouterr().out
    assert "li" in out and "supervisor" in out and "李" in out
    assert hub_main(["operator", "remove", "li", *data]) == 0
    assert hub_main(["operator", "remove", "li", *data]) == 1
    assert "no operator 'li'" in capsys.readouterr().err


# ------------------------------------------------------------------------- live status


def test_registration_changes_the_status(c: Console) -> None:
    events: list[Any] = []
    c.bus.subscribe(events.append)
    assert endpoint_status(c, "sip:1001") == "offline"
    c.register("1001")
    c.bus.publish(RegistrationChanged(user="1001", contacts=1))
    assert endpoint_status(c, "sip:1001") == "idle"
    changed = [e for e in events if isinstance(e, EndpointStatusChanged)]
    assert [(e.endpoint_id, e.person_id, e.old, e.new) for e in changed] == [
        ("sip:1001", "user:1001", "offline", "idle")]
    c.store.remove_all_bindings("1001")
    c.bus.publish(RegistrationChanged(user="1001", contacts=0))
    assert [(e.old, e.new) for e in events if isinstance(e, EndpointStatusChanged)] == [
        ("offline", "idle"), ("idle", "offline")]


def test_expired_registrations_go_offline_on_refresh(c: Console) -> None:
    c.register("1002", expires_in=60)
    c.bus.publish(RegistrationChanged(user="1002", contacts=1))
    assert endpoint_status(c, "sip:1002") == "idle"
    events: list[Any] = []
    c.bus.subscribe(events.append)
    c.clock.now += 61
    c.directory.refresh()
    assert [(e.endpoint_id, e.new) for e in events if isinstance(e, EndpointStatusChanged)] == [
        ("sip:1002", "offline")]


def test_legs_drive_ringing_talking_held_and_back(c: Console) -> None:
    c.register("1001")
    c.register("1002")
    c.bus.publish(RegistrationChanged(user="1001", contacts=1))
    c.bus.publish(RegistrationChanged(user="1002", contacts=1))
    events: list[Any] = []
    c.bus.subscribe(events.append)
    bridge = c.bridge()
    a = bridge.add_leg("sip-user", "1001")
    b = bridge.add_leg("sip-user", "1002")
    b.set_state(LegState.RINGING, "180")
    a.set_state(LegState.RINGING, "180")
    assert endpoint_status(c, "sip:1002") == "ringing"
    assert endpoint_status(c, "sip:1001") == "ringing"
    b.set_state(LegState.UP, "answered")
    a.set_state(LegState.UP, "answered")
    assert endpoint_status(c, "sip:1001") == "talking"
    b.set_state(LegState.HELD, "sendonly")
    assert endpoint_status(c, "sip:1002") == "held"
    assert ok(c.get("/api/directory/people/user:1002"))["status"] == "held"
    bridge.close("bye")
    assert endpoint_status(c, "sip:1001") == "idle"
    assert endpoint_status(c, "sip:1002") == "idle"
    lamps = [(e.endpoint_id, e.new) for e in events if isinstance(e, EndpointStatusChanged)]
    assert lamps == [("sip:1002", "ringing"), ("sip:1001", "ringing"), ("sip:1002", "talking"),
                     ("sip:1001", "talking"), ("sip:1002", "held"), ("sip:1001", "idle"),
                     ("sip:1002", "idle")]
    snapshot = c.directory.statuses()
    assert snapshot["sip:1001"] == "idle" and snapshot["sip:1003"] == "offline"


def test_trunk_legs_light_the_matching_mobile(c: Console) -> None:
    ok(c.post("/api/directory/people", json={"name": "Field", "endpoints": [
        {"kind": "mobile", "address": "13800138000"}]}), 201)
    events: list[Any] = []
    c.bus.subscribe(events.append)
    bridge = c.bridge()
    leg = bridge.add_leg("sip-trunk", "+8613800138000")  # the caller ID as the carrier sends it
    leg.set_state(LegState.UP, "answered")
    assert endpoint_status(c, "mobile:13800138000") == "talking"
    other = bridge.add_leg("sip-trunk", "1380013800")  # one digit short: someone else
    other.set_state(LegState.UP)
    bridge.close("bye")
    assert endpoint_status(c, "mobile:13800138000") == "idle"
    assert [(e.endpoint_id, e.person_id, e.new) for e in events
            if isinstance(e, EndpointStatusChanged)] == [
        ("mobile:13800138000", "p1", "talking"), ("mobile:13800138000", "p1", "idle")]


def test_directory_changes_are_announced(c: Console) -> None:
    events: list[Any] = []
    c.bus.subscribe(events.append)
    ok(c.post("/api/directory/people", json={"name": "New", "endpoints": [
        {"kind": "mobile", "address": "13700000000"}]}), 201)
    assert [(e.what, e.id, e.change) for e in events if isinstance(e, DirectoryChanged)] == [
        ("person", "p1", "created")]
    assert [(e.endpoint_id, e.old, e.new) for e in events
            if isinstance(e, EndpointStatusChanged)] == [("mobile:13700000000", "offline", "idle")]


def test_status_combination() -> None:
    assert combine("offline", []) == "offline"
    assert combine("idle", ["ringing", "up"]) == "talking"
    assert combine("offline", ["new"]) == "ringing"
    assert combine("idle", ["held", "ringing"]) == "held"
    assert combine("idle", ["ended"]) == "idle"


async def test_expiry_timer_notices_a_binding_running_out(tmp_path: Path) -> None:
    import asyncio
    import time

    from bridges.events import EventBus
    from dispatch.directory import DirectoryService
    from hub.store import BindingRecord, Store

    with Store.open(tmp_path) as store:
        store.add_user("1001", "pw")
        store.save_binding(BindingRecord(
            aor="1001", contact="sip:1001@192.0.2.1", expires_at=time.time() + 0.2,
            received_host="192.0.2.1", received_port=5060, transport="udp", call_id="x", cseq=1))
        bus = EventBus()
        directory = DirectoryService(store, bus=bus)
        offline = asyncio.Event()
        bus.subscribe(lambda e: offline.set() if isinstance(e, EndpointStatusChanged)
                      and e.new == "offline" else None)
        assert directory.statuses()["sip:1001"] == "idle"
        directory.start()
        try:
            await asyncio.wait_for(offline.wait(), timeout=5)
        finally:
            directory.close()


def test_dialling_by_name_finds_the_one_person_and_their_endpoints(c: Console) -> None:
    from dispatch.directory import EndpointSpec
    from hub.server import endpoints_for

    d = c.directory
    d.create_person("张三", endpoints=[EndpointSpec("sip", "1002"),
                                       EndpointSpec("mobile", "13800138000")])
    assert d.endpoints_named("张三") == [("sip", "1002"), ("mobile", "13800138000")]
    assert endpoints_for(d, "张三") == ["1002", "13800138000"]
    # A SIP user's implicit person goes by its display name.
    assert d.endpoints_named("Duty desk") == [("sip", "1001")]
    assert endpoints_for(d, "1003") == ["1003"]
    d.create_person("李四")
    d.create_person("李四")
    assert d.endpoints_named("李四") is None  # ambiguous: dialled as it is
    assert endpoints_for(d, "李四") == ["李四"]
    assert endpoints_for(d, "nobody") == ["nobody"]

"""A plan's response as the level moves, over the HTTP API (no phone answers here).

Nobody is registered, so every responder is unreachable at once: each gets the text
notification, and at the deadline their deputy is called. Raising the level mobilises
the roles the plan adds at that level; lowering it stands them down; closing the
incident ends the response and sends the closing notice.
"""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from hub.config import ServeConfig
from hub.server import Hub, start
from tests.integration.api_client import operator, poll
from tests.pg import PostgresServer


@pytest_asyncio.fixture(params=["sqlite", "postgresql"])
async def any_hub(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Hub]:
    """The hub on its embedded SQLite, and on PostgreSQL (``hub serve --database``)."""
    async def run(url: str | None) -> AsyncIterator[Hub]:
        running = await start(ServeConfig(data_dir=tmp_path / "hubdata", bind="127.0.0.1",
                                          sip_port=0, http_port=0, rtp_ports=(20000, 24999),
                                          database_url=url))
        for name in ("alice", "bob", "carol", "dave", "erin"):
            running.store.add_user(name, f"pw-{name}", display_name=name.title())
        try:
            assert running.db.dialect == ("postgresql" if url else "sqlite")
            yield running
        finally:
            await running.stop()

    if request.param == "sqlite":
        async for running in run(None):
            yield running
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    with server.fresh_database() as url:
        async for running in run(url):
            yield running


def _states(response: dict[str, Any]) -> dict[str, str]:
    return {r["person"]: r["state"] for r in response["responders"]}


async def test_level_changes_mobilise_and_stand_down(any_hub: Hub) -> None:
    hub = any_hub
    async with httpx.AsyncClient(base_url=hub.http.url) as client:
        disp = await operator(client, hub, "dispatcher")
        sup = await operator(client, hub, "supervisor")
        resp = await client.post("/api/plans", headers=disp, json={
            "name": "p", "incident_type": "flood", "level": 3, "roles": []})
        assert resp.status_code == 403  # plans are a supervisor's
        bad = await client.post("/api/plans", headers=sup, json={
            "name": "p", "incident_type": "flood", "level": 3,
            "roles": [{"role": "r", "person": "alice"}],
            "resources": [{"kind": "supply", "quantity": -3}]})
        assert bad.status_code == 422 and "resources[0].quantity" in bad.json()["message"]
        plan = (await client.post("/api/plans", headers=sup, json={
            "name": "防汛预案", "incident_type": "natural_disaster", "level": 3,
            "escalate_after_s": 1,
            "roles": [{"role": "指挥", "person": "alice", "deputy": "bob"},
                      {"role": "医疗", "person": "carol", "level": "II"},
                      {"role": "省级", "person": "dave", "level": "I"}]})).json()
        incident = (await client.post("/api/incidents", headers=disp, json={
            "title": "城区内涝", "type": "flood", "level": "III",
            "location": {"lat": 30.59, "lon": 114.30}})).json()
        base = f"/api/incidents/{incident['id']}"

        assert (await client.post(base + "/activate", headers=disp,
                                  json={"plan_id": 999})).status_code == 422
        assert (await client.post(base + "/activate", headers=disp,
                                  json={"plan_id": plan["id"], "level": 9})).status_code == 422
        resp = await client.post(base + "/activate", headers=disp, json={"plan_id": plan["id"]})
        assert resp.status_code == 201, resp.text
        assert set(_states(resp.json())) == {"alice"}
        again = await client.post(base + "/activate", headers=disp,
                                  json={"plan_id": plan["id"]})
        assert again.status_code == 409

        response = await poll(client, disp, base + "/response",
                                lambda r: _states(r).get("bob") == "unreachable")
        assert _states(response)["alice"] == "escalated"
        bob = next(r for r in response["responders"] if r["person"] == "bob")
        assert bob["deputy_for"] == next(r["id"] for r in response["responders"]
                                         if r["person"] == "alice")

        raised = await client.patch(base, headers=disp, json={"level": "II"})
        assert raised.status_code == 200 and raised.json()["level"] == 2
        response = await poll(client, disp, base + "/response",
                                lambda r: _states(r).get("carol") == "unreachable")
        assert "dave" not in _states(response) and response["level"] == 2

        await client.patch(base, headers=disp, json={"level": 3})
        response = await poll(client, disp, base + "/response",
                                lambda r: _states(r).get("carol") == "stood-down")

        closed = await client.patch(base, headers=disp, json={"status": "closed"})
        assert closed.status_code == 200
        detail = closed.json()
        assert detail["response"]["state"] == "ended" and detail["status"] == "closed"
        timeline = detail["timeline"]
        levels = [e["data"] for e in timeline if e["kind"] == "response.level"]
        assert levels[0]["mobilised"] == ["carol"] and levels[1]["stood_down"] == ["carol"]
        notices = [(e["data"]["person"], e["data"]["reason"]) for e in timeline
                   if e["kind"] == "notification.sent"]
        assert ("alice", "unreachable") in notices and ("bob", "unreachable") in notices
        assert ("carol", "stand-down") in notices
        assert {p for p, why in notices if why == "closing"} == {"alice", "bob"}
        assert [e["kind"] for e in timeline].count("response.ended") == 1
        assert (await client.post(base + "/activate", headers=disp,
                                  json={"plan_id": plan["id"]})).status_code == 409
        audited = [(e.action, e.operator, e.result) for e in hub.audit.entries(limit=100)]
        assert ("incident.activate", "op-dispatcher", "ok") in audited
        assert ("incident.update", "op-dispatcher", "ok") in audited
        assert ("plan.create", "op-dispatcher", "forbidden") in audited


async def test_resources_nearest_dispatch_and_call_a_contact(any_hub: Hub) -> None:
    hub = any_hub
    async with httpx.AsyncClient(base_url=hub.http.url) as client:
        disp = await operator(client, hub, "dispatcher")
        sup = await operator(client, hub, "supervisor")
        incident = (await client.post("/api/incidents", headers=disp, json={
            "title": "化工厂泄漏", "type": "hazmat", "level": 2,
            "location": {"lat": 39.9042, "lon": 116.4074}})).json()
        csv = ("kind,name,lat,lon,contacts,quantity,warehouse,keeper,capacity\n"
               "team,消防一中队,39.9100,116.4100,队长:alice,,,,\n"
               "supply,防化服,40.0500,116.3000,库管:bob,40,北郊仓库,bob,\n"
               "shelter,朝阳公园避难场所,39.9400,116.4800,,,,,5000\n"
               "team,远郊救援队,40.9000,117.9000,,,,,\n")
        imported = await client.post("/api/resources/import", headers={
            **sup, "content-type": "text/csv"}, content=csv.encode())
        assert imported.status_code in (200, 201), imported.text
        bad = await client.post("/api/resources", headers=sup, json={
            "kind": "supply", "name": "沙袋", "quantity": -1})
        assert bad.status_code == 422 and "quantity" in bad.json()["message"]

        near = (await client.get(f"/api/resources?near={incident['id']}",
                                 headers=disp)).json()
        names = [r["name"] for r in near]
        assert names == ["消防一中队", "朝阳公园避难场所", "防化服", "远郊救援队"]
        distances = [r["distance_m"] for r in near]
        assert distances == sorted(distances) and 600 < distances[0] < 900

        suits = next(r for r in near if r["name"] == "防化服")
        too_many = await client.post(f"/api/incidents/{incident['id']}/dispatches",
                                     headers=disp, json={"resource_id": suits["id"],
                                                         "quantity": 41})
        assert too_many.status_code in (409, 422), too_many.text
        sent = await client.post(f"/api/incidents/{incident['id']}/dispatches", headers=disp,
                                 json={"resource_id": suits["id"], "quantity": 15,
                                       "note": "第一批"})
        assert sent.status_code == 201, sent.text
        left = (await client.get(f"/api/resources/{suits['id']}", headers=disp)).json()
        assert left["quantity"] == 25

        team = near[0]
        placed = await client.post(f"/api/resources/{team['id']}/call", headers=disp,
                                   json={"contact": 0, "incident_id": incident["id"]})
        assert placed.status_code == 201, placed.text
        call_id = placed.json()["id"]
        detail = (await client.get(f"/api/incidents/{incident['id']}", headers=disp)).json()
        kinds = [e["kind"] for e in detail["timeline"]]
        assert "resource.dispatched" in kinds and "resource.contact_called" in kinds
        dispatched = next(e for e in detail["timeline"] if e["kind"] == "resource.dispatched")
        assert dispatched["data"]["quantity"] == 15 and dispatched["actor"] == "op-dispatcher"
        assert call_id in detail["calls"]
        assert detail["dispatches"][0]["quantity"] == 15


async def test_hanging_up_the_command_room_ends_the_response(any_hub: Hub) -> None:
    hub = any_hub
    async with httpx.AsyncClient(base_url=hub.http.url) as client:
        disp = await operator(client, hub, "dispatcher")
        sup = await operator(client, hub, "supervisor")
        plan = (await client.post("/api/plans", headers=sup, json={
            "name": "p", "incident_type": "fire", "level": 3,
            "roles": [{"role": "r", "person": "alice"}]})).json()
        incident = (await client.post("/api/incidents", headers=disp, json={
            "title": "t", "type": "fire", "level": 3})).json()
        base = f"/api/incidents/{incident['id']}"
        response = (await client.post(base + "/activate", headers=disp,
                                      json={"plan_id": plan["id"]})).json()
        ended = await client.delete(f"/api/calls/{response['call_id']}", headers=disp)
        assert ended.status_code == 200
        after = await poll(client, disp, base + "/response", lambda r: r["state"] == "ended")
        assert after["id"] == response["id"]
        timeline = (await client.get(base + "/timeline", headers=disp)).json()
        [end] = [e for e in timeline if e["kind"] == "response.ended"]
        assert "command room closed" in end["data"]["reason"]
        # A new response may start now.
        again = await client.post(base + "/activate", headers=disp, json={"plan_id": plan["id"]})
        assert again.status_code == 201

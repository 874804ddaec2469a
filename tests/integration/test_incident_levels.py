"""A plan's response as the level moves, over the HTTP API (no phone answers here).

Nobody is registered, so every responder is unreachable at once: each gets the text
notification, and at the deadline their deputy is called. Raising the level mobilises
the roles the plan adds at that level; lowering it stands them down; closing the
incident ends the response and sends the closing notice.
"""

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from hub.config import ServeConfig
from hub.server import Hub, start
from tests.peers import scaled
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


async def _token(client: httpx.AsyncClient, hub: Hub, role: str) -> dict[str, str]:
    hub.auth.add_operator(f"op-{role}", role, password="op-password-1")
    resp = await client.post("/api/auth/token",
                             json={"username": f"op-{role}", "password": "op-password-1"})
    return {"Authorization": f"Bearer {resp.json()['token']}"}


async def _until(client: httpx.AsyncClient, headers: dict[str, str], path: str,
                 done: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + scaled(timeout)
    while True:
        body = (await client.get(path, headers=headers)).json()
        if done(body):
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.1)


def _states(response: dict[str, Any]) -> dict[str, str]:
    return {r["person"]: r["state"] for r in response["responders"]}


async def test_level_changes_mobilise_and_stand_down(any_hub: Hub) -> None:
    hub = any_hub
    async with httpx.AsyncClient(base_url=hub.http.url) as client:
        disp = await _token(client, hub, "dispatcher")
        sup = await _token(client, hub, "supervisor")
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

        response = await _until(client, disp, base + "/response",
                                lambda r: _states(r).get("bob") == "unreachable")
        assert _states(response)["alice"] == "escalated"
        bob = next(r for r in response["responders"] if r["person"] == "bob")
        assert bob["deputy_for"] == next(r["id"] for r in response["responders"]
                                         if r["person"] == "alice")

        raised = await client.patch(base, headers=disp, json={"level": "II"})
        assert raised.status_code == 200 and raised.json()["level"] == 2
        response = await _until(client, disp, base + "/response",
                                lambda r: _states(r).get("carol") == "unreachable")
        assert "dave" not in _states(response) and response["level"] == 2

        await client.patch(base, headers=disp, json={"level": 3})
        response = await _until(client, disp, base + "/response",
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

"""The ``/api/events`` WebSocket: authentication, snapshot first, live events, back-pressure."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.websockets import WebSocketDisconnect

from bridges.events import Event, EventBus, RegistrationChanged, TalkerChanged
from bridges.model import LegState
from console.api import Api
from console.events_ws import events_routes
from tests.unit.console_util import PASSWORDS, Console, TestClient, console


@pytest.fixture
def c(tmp_path: Path) -> Iterator[Console]:
    with console(tmp_path, snapshot={"calls": [{"id": "C1"}], "rooms": []}) as running:
        running.store.add_user("1001", "pw", "Duty desk")
        yield running


def closed_with(c: Console, url: str, code: int, **kw: Any) -> str:
    with pytest.raises(WebSocketDisconnect) as caught, \
            c.client.websocket_connect(url, **kw) as ws:
        ws.receive_text()
    assert caught.value.code == code
    return str(caught.value.reason)


def test_refused_without_valid_credentials(c: Console) -> None:
    reason = closed_with(c, "/api/events", 4401)
    assert "authentication required" in reason
    assert "invalid" in closed_with(c, "/api/events?token=forged-token-xxxxxxxxxxxxxxxx", 4401)
    closed_with(c, "/api/events", 4401, headers={"Authorization": "Bearer nope-nope-nope-nope"})


def test_snapshot_first_then_live_events(c: Console) -> None:
    with c.client.websocket_connect("/api/events",
                                    headers={"Authorization": f"Bearer {c.token('dispatcher')}"}
                                    ) as ws:
        snapshot = ws.receive_json()
        assert snapshot["type"] == "snapshot"
        assert snapshot["calls"] == [{"id": "C1"}] and snapshot["rooms"] == []
        assert snapshot["directory"]["endpoints"] == [
            {"id": "sip:1001", "kind": "sip", "address": "1001", "person_id": "user:1001",
             "position": 0, "label": None, "status": "offline"}]
        c.register("1001")
        c.publish(RegistrationChanged(user="1001", contacts=1))
        first, second = ws.receive_json(), ws.receive_json()
        # The cause arrives before its effect.
        assert first == {"type": "RegistrationChanged", "user": "1001", "contacts": 1,
                         "at": first["at"]}
        assert second["type"] == "EndpointStatusChanged"
        assert (second["endpoint_id"], second["old"], second["new"]) == (
            "sip:1001", "offline", "idle")
        c.publish(TalkerChanged(bridge_id="B1", leg_id="L1", talking=True))
        assert ws.receive_json()["type"] == "TalkerChanged"


def test_a_call_lights_the_lamps_on_the_socket(c: Console) -> None:
    c.register("1001")
    with c.client.websocket_connect(f"/api/events?token={c.token('supervisor')}") as ws:
        assert ws.receive_json()["directory"]["endpoints"][0]["status"] == "idle"
        bridge = c.bridge()  # BridgeOpened
        leg = bridge.add_leg("sip-user", "1001")
        assert c.client.portal is not None
        c.client.portal.call(leg.set_state, LegState.RINGING, "180")
        kinds = [ws.receive_json()["type"] for _ in range(3)]
        assert kinds == ["BridgeOpened", "LegStateChanged", "EndpointStatusChanged"]
        c.client.portal.call(leg.set_state, LegState.UP, "200")
        assert ws.receive_json()["new"] == "up"
        lamp = ws.receive_json()
        assert (lamp["endpoint_id"], lamp["new"]) == ("sip:1001", "talking")


def test_session_cookie_works_from_the_same_origin_only(c: Console) -> None:
    login = c.client.post("/api/auth/login", json={"username": "dispatcher",
                                                   "password": PASSWORDS["dispatcher"]})
    cookie = f"hub_session={login.cookies['hub_session']}"
    # The test client's WebSockets go to ws://testserver, whatever the base URL.
    with c.client.websocket_connect("/api/events", headers={
            "cookie": cookie, "origin": "http://testserver"}) as ws:
        assert ws.receive_json()["type"] == "snapshot"
    with c.client.websocket_connect("/api/events", headers={"cookie": cookie}) as ws:
        assert ws.receive_json()["type"] == "snapshot"  # no Origin: not a browser
    closed_with(c, "/api/events", 4403, headers={"cookie": cookie,
                                                 "origin": "https://evil.example"})


def test_logout_closes_the_stream(c: Console) -> None:
    token = c.token("dispatcher")
    with pytest.raises(WebSocketDisconnect) as caught, \
            c.client.websocket_connect(f"/api/events?token={token}") as ws:
        assert ws.receive_json()["type"] == "snapshot"
        assert c.client.post("/api/auth/logout",
                             headers={"Authorization": f"Bearer {token}"}).status_code == 204
        while True:
            ws.receive_json()
    assert caught.value.code == 4401


def test_removing_the_operator_closes_its_stream(c: Console) -> None:
    with pytest.raises(WebSocketDisconnect) as caught, \
            c.client.websocket_connect(f"/api/events?token={c.token('dispatcher')}") as ws:
        ws.receive_json()
        assert c.delete("/api/operators/dispatcher", as_="admin").status_code == 204
        while True:
            ws.receive_json()
    assert caught.value.code == 4401


def test_a_console_that_cannot_keep_up_is_dropped(c: Console) -> None:
    bus = EventBus()
    api = Api(c.auth, None)
    app = Starlette(routes=events_routes(api, c.auth, bus, {}, queue_limit=5))
    with TestClient(app) as client:
        token = c.token("dispatcher")

        def flood() -> None:  # all in one loop step: the sender can't drain in between
            for n in range(20):
                bus.publish(Event(at=float(n)))

        with pytest.raises(WebSocketDisconnect) as caught, \
                client.websocket_connect(f"/api/events?token={token}") as ws:
            assert ws.receive_json()["type"] == "snapshot"
            assert client.portal is not None
            client.portal.call(flood)
            while True:
                ws.receive_json()
        assert caught.value.code == 1013
        assert bus._subscribers == []  # unsubscribed when dropped


def test_plain_http_get_is_426(c: Console) -> None:
    response = c.client.get("/api/events")
    assert response.status_code == 426
    assert response.json()["error_id"] == "websocket-required"


def test_batch_mode_sends_events_published_together_as_one_message(c: Console) -> None:
    with c.client.websocket_connect(f"/api/events?token={c.token('dispatcher')}&batch=1"
                                    ) as ws:
        assert ws.receive_json()["type"] == "snapshot"

        def burst() -> None:
            for n in range(5):
                c.bus.publish(TalkerChanged(bridge_id="B1", leg_id=f"L{n}", talking=True))

        assert c.client.portal is not None
        c.client.portal.call(burst)
        message = ws.receive_json()
        assert message["type"] == "batch"
        assert [e["leg_id"] for e in message["events"]] == [f"L{n}" for n in range(5)]
        assert {e["type"] for e in message["events"]} == {"TalkerChanged"}
        c.publish(TalkerChanged(bridge_id="B1", leg_id="L9", talking=False))
        single = ws.receive_json()  # alone: sent as itself
        assert single["type"] == "TalkerChanged" and single["leg_id"] == "L9"

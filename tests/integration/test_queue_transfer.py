"""The dispatch queue and call transfer, with real phones (baresip) and the HTTP API.

Queue: a caller dialling the dispatch number is answered by the hub, hears ringback
and waits in ``GET /api/queue``; a dispatcher picks it up with their own phone
(``POST /api/queue/{id}/answer``) and the two talk (FFT of what each phone heard); a
caller who hangs up while queued leaves the queue. Transfer: a phone's REFER (baresip
``transfer``) and the API's blind transfer replace one side of a call by a third phone.
"""

import asyncio
import time
from typing import Any

import httpx
import pytest

from bridges.events import Event
from gateways.queue import QueueChanged
from hub.server import Hub
from tests.integration.api_client import bearer, poll
from tests.integration.conftest import sip_port
from tests.integration.test_dispatch_calls import LOUD, _phones, _until, amplitude, heard
from tests.peers import scaled
from tests.peers.audio import read_wav
from tests.peers.baresip import PhoneFactory

pytestmark = pytest.mark.peers

RINGBACK_HZ = 450.0


async def test_queued_caller_is_picked_up_by_a_dispatcher(
        hub: Hub, phone_factory: PhoneFactory) -> None:
    hub.auth.add_operator("op", "dispatcher", password="op-password-1")
    events: list[Event] = []
    hub.bus.subscribe(events.append)
    phones = await _phones(hub, phone_factory, ["alice", "bob"])
    alice, bob = phones["alice"], phones["bob"]
    number = hub.store.dispatch_number
    async with httpx.AsyncClient(base_url=hub.http.url) as client:
        headers = await bearer(client)
        await alice.dial(f"sip:{number}@127.0.0.1:{sip_port(hub)}")
        await alice.wait_event("CALL_ESTABLISHED", timeout=scaled(10))
        t_queued = time.monotonic()
        queue = await poll(client, headers, "/api/queue", lambda q: len(q) == 1)
        [entry] = queue
        assert entry["position"] == 1 and entry["caller"] == "alice"
        assert entry["state"] == "waiting" and entry["since"] <= time.time()
        await asyncio.sleep(scaled(1.2))  # alice hears the ringback meanwhile
        resp = await client.post(f"/api/queue/{entry['queue_id']}/answer", headers=headers,
                                 json={"phone": "bob"})
        assert resp.status_code == 201, resp.text
        again = await client.post(f"/api/queue/{entry['queue_id']}/answer", headers=headers,
                                  json={"phone": "bob"})
        assert again.status_code == 409, again.text
        await bob.wait_event("CALL_ESTABLISHED", timeout=scaled(10))
        t_answered = time.monotonic()
        call = await poll(client, headers, f"/api/calls/{entry['queue_id']}",
                           lambda c: c.get("answered_by") == "op")
        assert call["mode"] == "queue"
        assert (await client.get("/api/queue", headers=headers)).json() == []
        listed = (await client.get("/api/calls", headers=headers)).json()
        assert any(c["id"] == entry["queue_id"] and c.get("answered_by") == "op"
                   for c in listed), listed
        await asyncio.sleep(scaled(2.5))
        await alice.hangup()
        await bob.wait_event("CALL_CLOSED", timeout=scaled(10))
        await poll(client, headers, f"/api/calls/{entry['queue_id']}",
                    lambda c: c["state"] == "ended")
    for phone in phones.values():
        await phone.stop()
    offset = t_answered - t_queued
    # Waiting: the ringback cadence's first second (450 Hz; nobody else is in the bridge).
    assert _level(alice, 0.1, min(1.0, offset), RINGBACK_HZ) > LOUD
    assert heard(alice, 0.1, min(1.0, offset))["bob"] < LOUD
    a = heard(alice, offset + 0.5)
    b = heard(bob, 0.5)
    assert a["bob"] > LOUD, a
    assert b["alice"] > LOUD, b
    queues = [e.queue for e in events if isinstance(e, QueueChanged)]
    assert queues and queues[0][0]["caller"] == "alice" and queues[-1] == []
    actions = [e.action for e in hub.audit.entries(limit=50)]
    assert "queue.answer" in actions


def _level(phone: Any, start: float, end: float, hz: float) -> float:
    rate, samples = read_wav(phone.dec_wavs()[-1])
    return amplitude(samples[int(start * rate): int(end * rate)], rate, hz)


async def test_caller_hanging_up_while_queued_is_removed(
        hub: Hub, phone_factory: PhoneFactory) -> None:
    hub.auth.add_operator("op", "dispatcher", password="op-password-1")
    hub.store.set_dispatch_number("110")
    phones = await _phones(hub, phone_factory, ["alice", "carol"])
    async with httpx.AsyncClient(base_url=hub.http.url) as client:
        headers = await bearer(client)
        await phones["alice"].dial(f"sip:110@127.0.0.1:{sip_port(hub)}")
        await phones["carol"].dial(f"sip:110@127.0.0.1:{sip_port(hub)}")
        queue = await poll(client, headers, "/api/queue", lambda q: len(q) == 2)
        assert [e["position"] for e in queue] == [1, 2]
        first = {e["caller"]: e for e in queue}
        await phones["alice"].wait_event("CALL_ESTABLISHED", timeout=scaled(10))
        await phones["alice"].hangup()
        queue = await poll(client, headers, "/api/queue", lambda q: len(q) == 1)
        assert queue[0]["caller"] == "carol" and queue[0]["position"] == 1
        gone = await client.post(f"/api/queue/{first['alice']['queue_id']}/answer",
                                 headers=headers, json={"phone": "bob"})
        assert gone.status_code == 404, gone.text
        await phones["carol"].hangup()
        await poll(client, headers, "/api/queue", lambda q: q == [])
    for phone in phones.values():
        await phone.stop()
    assert not hub.engine.bridges


async def test_phone_transfers_with_refer(hub: Hub, phone_factory: PhoneFactory) -> None:
    phones = await _phones(hub, phone_factory, ["alice", "bob", "carol"])
    alice, bob, carol = phones["alice"], phones["bob"], phones["carol"]
    await alice.dial(f"sip:bob@127.0.0.1:{sip_port(hub)}")
    await bob.wait_event("CALL_ESTABLISHED", timeout=scaled(10))
    await alice.wait_event("CALL_ESTABLISHED", timeout=scaled(10))
    t0 = time.monotonic()
    await asyncio.sleep(scaled(1))
    await bob.command("transfer", f"sip:carol@127.0.0.1:{sip_port(hub)}")
    await carol.wait_event("CALL_ESTABLISHED", timeout=scaled(10))
    t_carol = time.monotonic()
    await bob.wait_event("CALL_CLOSED", timeout=scaled(10))
    [sip_call] = hub.gateway.calls.values()
    assert sip_call.released == {"b"}
    await asyncio.sleep(scaled(2.5))
    await alice.hangup()
    await carol.wait_event("CALL_CLOSED", timeout=scaled(10))
    for phone in phones.values():
        await phone.stop()
    a = heard(alice, t_carol - t0 + 0.6)
    c = heard(carol, 0.6)
    assert a["carol"] > LOUD and a["bob"] < LOUD, a
    assert c["alice"] > LOUD and c["bob"] < LOUD, c
    assert not hub.gateway.calls and not hub.engine.bridges


async def test_blind_transfer_through_the_api(hub: Hub, phone_factory: PhoneFactory) -> None:
    hub.auth.add_operator("op", "dispatcher", password="op-password-1")
    phones = await _phones(hub, phone_factory, ["alice", "bob", "carol"])
    alice, bob, carol = phones["alice"], phones["bob"], phones["carol"]
    await alice.dial(f"sip:bob@127.0.0.1:{sip_port(hub)}")
    await bob.wait_event("CALL_ESTABLISHED", timeout=scaled(10))
    t0 = time.monotonic()
    [sip_call] = hub.gateway.calls.values()
    async with httpx.AsyncClient(base_url=hub.http.url) as client:
        headers = await bearer(client)
        calls = (await client.get("/api/calls", headers=headers)).json()
        legs = {leg["target"]: leg["leg_id"] for leg in calls[0]["legs"]}
        bad = await client.post(f"/api/calls/{sip_call.id}/legs/{legs['alice']}/transfer",
                                headers=headers, json={"target": "nobody"})
        assert bad.status_code == 422, bad.text
        resp = await client.post(f"/api/calls/{sip_call.id}/legs/{legs['alice']}/transfer",
                                 headers=headers, json={"target": "carol"})
        assert resp.status_code == 200, resp.text
        await carol.wait_event("CALL_ESTABLISHED", timeout=scaled(10))
        t_carol = time.monotonic()
        await bob.wait_event("CALL_CLOSED", timeout=scaled(10))
        await asyncio.sleep(scaled(2.5))
        await carol.hangup()
        await alice.wait_event("CALL_CLOSED", timeout=scaled(10))
    for phone in phones.values():
        await phone.stop()
    a = heard(alice, t_carol - t0 + 0.6)
    c = heard(carol, 0.6)
    assert a["carol"] > LOUD and a["bob"] < LOUD, a
    assert c["alice"] > LOUD, c
    actions = [e.action for e in hub.audit.entries(limit=50)]
    assert "call.transfer" in actions
    await _until(lambda: not hub.engine.bridges)

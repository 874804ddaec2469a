"""Attended transfer with real phones: by the API and by a phone's REFER with Replaces.

API: the hub calls bob (call 1) and carol (call 2, the consultation); ``POST
/api/calls/{1}/legs/{bob}/transfer {"to_call": 2}`` moves carol's leg into call 1's
bridge and the two talk (FFT of what each phone heard). Phone: alice (a scripted UA,
tests/peers/sip_ua.py: baresip 1.0 cannot send a REFER with Replaces) calls bob, holds
him, calls carol and REFERs bob to carol with Replaces naming her call-2 dialog (RFC
5589 7.x); the hub answers 202, connects bob and carol without dialling anyone, NOTIFYs
``SIP/2.0 200 OK`` and sends alice BYE on both dialogs. A Replaces naming no dialog the
hub knows gets a 481 NOTIFY and the call goes on.
"""

import asyncio
import time
from typing import Any

import httpx
import pytest

from bridges.events import Event, LegMoved, LegStateChanged
from bridges.model import LegState
from dispatch.calls import CallChanged, CallEnded
from gateways.sip_gateway import Call as SipCall
from hub.server import Hub
from tests.integration.api_client import bearer
from tests.integration.conftest import sip_port
from tests.integration.test_dispatch_calls import LOUD, TONES, _phones, _until, heard
from tests.peers import scaled
from tests.peers.baresip import PhoneFactory
from tests.peers.sip_ua import SipUa, UaCall

pytestmark = pytest.mark.peers

ALICE_2 = "dave"
"""The tone alice sends in her second call (2400 Hz), to tell her two calls apart."""


def _sip_call(hub: Hub, ua_call: UaCall) -> SipCall:
    [found] = [c for c in hub.gateway.calls.values()
               if ua_call.call_id in (c.a_dialog.call_id,
                                      c.b.dialog.call_id if c.b and c.b.dialog else None)]
    return found


async def _alice(hub: Hub) -> SipUa:
    ua = SipUa("alice", "pw-alice", ("127.0.0.1", sip_port(hub)))
    await ua.start()
    await ua.register()
    return ua


def _refer_to(hub: Hub, call: UaCall, **options: Any) -> str:
    return f"<sip:carol@127.0.0.1:{sip_port(hub)}?Replaces={call.replaces(**options)}>"


async def test_attended_transfer_through_the_api(hub: Hub, phone_factory: PhoneFactory) -> None:
    hub.auth.add_operator("op", "dispatcher", password="op-password-1")
    events: list[Event] = []
    hub.bus.subscribe(events.append)
    phones = await _phones(hub, phone_factory, ["bob", "carol"])
    bob, carol = phones["bob"], phones["carol"]
    first = hub.calls.create(["bob"], "single", record=True, operator="op")
    await bob.wait_event("CALL_ESTABLISHED", timeout=scaled(10))
    t0_bob = time.monotonic()
    consult = hub.calls.create(["carol"], "single", operator="op")
    await carol.wait_event("CALL_ESTABLISHED", timeout=scaled(10))
    t0_carol = time.monotonic()
    [bob_leg] = first.legs
    [carol_leg] = consult.legs
    await _until(lambda: bob_leg in first.media.mixer and carol_leg in consult.media.mixer)
    await asyncio.sleep(scaled(1.5))
    async with httpx.AsyncClient(base_url=hub.http.url) as client:
        headers = await bearer(client)
        url = f"/api/calls/{first.id}/legs/{bob_leg}/transfer"
        for body, status, says in (
                ({"target": "carol", "to_call": consult.id}, 422, "only one of"),
                ({}, 422, "give 'target' or 'to_call'"),
                ({"to_call": ""}, 422, "must not be empty"),
                ({"to_call": first.id}, 422, "another call"),
                ({"to_call": "D999"}, 404, "no call"),
        ):
            resp = await client.post(url, headers=headers, json=body)
            assert resp.status_code == status and says in resp.json()["message"], (body, resp.text)
        resp = await client.post(f"/api/calls/{first.id}/legs/L0/transfer", headers=headers,
                                 json={"to_call": consult.id})
        assert resp.status_code == 404, resp.text
        t_joined = time.monotonic()
        resp = await client.post(url, headers=headers, json={"to_call": consult.id})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["id"] == first.id and body["state"] == "active"
        assert {leg["leg_id"]: (leg["target"], leg["state"]) for leg in body["legs"]} == {
            bob_leg: ("bob", "up"), carol_leg: ("carol", "up")}
        assert body["recording_id"] == first.recording_id is not None
        ended = (await client.get(f"/api/calls/{consult.id}", headers=headers)).json()
        assert ended["state"] == "ended"
        again = await client.post(url, headers=headers, json={"to_call": consult.id})
        assert again.status_code == 409, again.text
        await asyncio.sleep(scaled(2.5))
        resp = await client.delete(f"/api/calls/{first.id}", headers=headers)
        assert resp.status_code == 200, resp.text
    for phone in phones.values():
        await phone.wait_event("CALL_CLOSED", timeout=scaled(10))
        await phone.stop()
    # carol's leg changed bridges, once, without changing state; call 2 ended.
    moved = [e for e in events if isinstance(e, LegMoved)]
    assert [(e.leg_id, e.from_bridge_id, e.to_bridge_id) for e in moved] == [
        (carol_leg, consult.bridge.id, first.bridge.id)]
    assert not any(isinstance(e, LegStateChanged) and e.leg_id == carol_leg
                   and e.new == "ended" and e.at < moved[0].at for e in events)
    assert any(isinstance(e, CallEnded) and e.call_id == consult.id for e in events)
    changes = [e.call for e in events if isinstance(e, CallChanged) and e.call["id"] == first.id]
    assert any(len(c["legs"]) == 2 and c["state"] == "active" for c in changes), changes
    actions = [(e.action, e.target) for e in hub.audit.entries(limit=50)]
    assert ("call.transfer", f"{first.id}/{bob_leg}") in actions
    # Before: each alone. After: each hears the other.
    b_before = heard(bob, 0.5, t_joined - t0_bob - 0.1)
    b = heard(bob, t_joined - t0_bob + 0.6, t_joined - t0_bob + 2.4)
    c = heard(carol, t_joined - t0_carol + 0.6, t_joined - t0_carol + 2.4)
    assert b_before["carol"] < LOUD, b_before
    assert b["carol"] > LOUD, b
    assert c["bob"] > LOUD, c
    await _until(lambda: not hub.engine.bridges)


async def test_phone_transfers_with_refer_replaces(hub: Hub, phone_factory: PhoneFactory) -> None:
    events: list[Event] = []
    hub.bus.subscribe(events.append)
    phones = await _phones(hub, phone_factory, ["bob", "carol"])
    bob, carol = phones["bob"], phones["carol"]
    alice = await _alice(hub)
    try:
        call1 = await alice.invite("bob", tone_hz=TONES["alice"])
        await bob.wait_event("CALL_ESTABLISHED", timeout=scaled(10))
        t0_bob = time.monotonic()
        await asyncio.sleep(scaled(1.5))
        assert (await alice.reinvite(call1, "sendonly")).status == 200  # bob on hold
        t_held = time.monotonic()
        call2 = await alice.invite("carol", tone_hz=TONES[ALICE_2])
        await carol.wait_event("CALL_ESTABLISHED", timeout=scaled(10))
        t0_carol = time.monotonic()
        sip1, sip2 = _sip_call(hub, call1), _sip_call(hub, call2)
        assert sip2.b is not None and sip2.b.leg is not None
        carol_leg = sip2.b.leg.id
        await asyncio.sleep(scaled(1.5))
        t_refer = time.monotonic()
        assert (await alice.refer(call1, _refer_to(hub, call2))).status == 202
        await alice.wait_request("NOTIFY", lambda r: r.call_id == call1.call_id
                                 and r.body.startswith(b"SIP/2.0 200"))
        t_joined = time.monotonic()
        await _until(lambda: call1.byed and call2.byed)
        notify = alice.requests("NOTIFY", call1)
        assert alice.notifies(call1) == ["SIP/2.0 100 Trying", "SIP/2.0 200 OK"]
        assert all(n.headers.get("Event") == "refer" for n in notify)
        assert (notify[-1].headers.get("Subscription-State") or "").startswith("terminated")
        assert not alice.requests("NOTIFY", call2)
        # One call left: call 1 with bob's side, alice's released, carol in its bridge.
        assert list(hub.gateway.calls) == [sip1.id] and sip2.ended
        assert sip1.released == {"a"} and sip1.transfer is not None
        assert sip1.transfer.name == "carol" and sip1.transfer.id == carol_leg
        assert set(sip1.media.legs) == {sip1.b.leg.id, carol_leg}  # type: ignore[union-attr]
        moved = [(e.leg_id, e.from_bridge_id, e.to_bridge_id) for e in events
                 if isinstance(e, LegMoved)]
        assert moved == [(carol_leg, sip2.bridge.id, sip1.bridge.id)]
        ended = {e.leg_id for e in events if isinstance(e, LegStateChanged) and e.new == "ended"}
        assert ended == {sip1.a_leg.id, sip2.a_leg.id}  # alice's two legs, nobody else's
        # bob was held by alice (recvonly): the hub re-INVITEs him off hold.
        await _until(lambda: sip1.b is not None and sip1.b.media.direction == "sendrecv")
        sent_to_bob = sip1.b.media.stats.packets_out  # type: ignore[union-attr]
        await asyncio.sleep(scaled(2.5))
        assert sip1.b.media.stats.packets_out > sent_to_bob + 50  # type: ignore[union-attr]
        # bob holds and resumes: the hub answers him itself now.
        assert sip1.b is not None and sip1.b.leg is not None
        await bob.command("hold")
        await _until(lambda: sip1.b.leg.state is LegState.HELD)  # type: ignore[union-attr]
        await bob.command("resume")
        await _until(lambda: sip1.b.leg.state is LegState.UP)  # type: ignore[union-attr]
        await carol.hangup()
        await bob.wait_event("CALL_CLOSED", timeout=scaled(10))
    finally:
        alice.close()
    for phone in phones.values():
        await phone.stop()
    # baresip 1.0's decode dump ends at the first re-INVITE the phone gets (alice's
    # hold): bob's recording proves the call before it; carol hearing bob after the
    # transfer proves the hub took him off hold (a held leg is not heard). That bob
    # hears carol is checked by FFT in the tests without a hold below.
    b_before = heard(bob, 0.5, t_held - t0_bob - 0.1)
    c_before = heard(carol, 0.5, t_refer - t0_carol - 0.1)
    c = heard(carol, t_joined - t0_carol + 0.8, t_joined - t0_carol + 2.8)
    assert b_before["alice"] > LOUD and b_before["carol"] < LOUD, b_before
    assert c_before[ALICE_2] > LOUD and c_before["bob"] < LOUD, c_before
    assert c["bob"] > LOUD and c["alice"] < LOUD and c[ALICE_2] < LOUD, c
    await _until(lambda: not hub.gateway.calls and not hub.engine.bridges)


async def test_bad_replaces_fails_and_the_call_goes_on(
        hub: Hub, phone_factory: PhoneFactory) -> None:
    phones = await _phones(hub, phone_factory, ["bob", "carol"])
    bob, carol = phones["bob"], phones["carol"]
    alice = await _alice(hub)
    alice.incoming_tone_hz = TONES[ALICE_2]
    try:
        call1 = await alice.invite("bob", tone_hz=TONES["alice"])
        await bob.wait_event("CALL_ESTABLISHED", timeout=scaled(10))
        t0_bob = time.monotonic()
        sip1 = _sip_call(hub, call1)
        port = sip_port(hub)

        async def refused(refer_to: str, status: str) -> None:
            before = len(alice.requests("NOTIFY", call1))
            assert (await alice.refer(call1, refer_to)).status == 202
            await alice.wait_request("NOTIFY", lambda r: r.call_id == call1.call_id
                                     and len(alice.requests("NOTIFY", call1)) >= before + 2)
            notify = alice.requests("NOTIFY", call1)[before:]
            assert [n.body.decode().strip() for n in notify][-1].startswith(status), notify
            assert (notify[-1].headers.get("Subscription-State") or "").startswith("terminated")

        # A dialog the hub does not know: 481, as the target would answer the INVITE.
        nowhere = "nowhere%40x%3Bto-tag%3D1%3Bfrom-tag%3D2"
        await refused(f"<sip:carol@127.0.0.1:{port}?Replaces={nowhere}>", "SIP/2.0 481")
        # The REFER's own dialog: nothing to connect bob with but himself.
        await refused(_refer_to(hub, call1), "SIP/2.0 403")
        # Not a Replaces at all: the REFER itself is refused.
        bad = await alice.refer(call1, f"<sip:carol@127.0.0.1:{port}?Replaces=x%3Bto-tag%3D1>")
        assert bad.status == 400
        # Bob is still in alice's call, hearing her.
        assert not sip1.released and sip1.transfer is None and sip1.state == "answered"
        assert not call1.byed and not any(e.type == "CALL_CLOSED" for e in bob.events)
        t_failed = time.monotonic()
        await asyncio.sleep(scaled(1.5))
        assert heard(bob, t_failed - t0_bob + 0.2, t_failed - t0_bob + 1.3)["alice"] > LOUD
        # carol calls alice: this time alice is the callee of her second call.
        await carol.dial(f"sip:alice@127.0.0.1:{port}")
        await carol.wait_event("CALL_ESTABLISHED", timeout=scaled(10))
        t0_carol = time.monotonic()
        await _until(lambda: len(alice.calls) == 2)
        call2 = alice.calls[1]
        sip2 = _sip_call(hub, call2)
        carol_leg = sip2.a_leg.id
        await refused(_refer_to(hub, call2, early_only=True), "SIP/2.0 486")
        await refused(_refer_to(hub, call2, swap=True), "SIP/2.0 481")  # tags are directional
        await asyncio.sleep(scaled(1.0))
        assert (await alice.refer(call1, _refer_to(hub, call2))).status == 202
        await alice.wait_request("NOTIFY", lambda r: r.call_id == call1.call_id
                                 and r.body.startswith(b"SIP/2.0 200"))
        t_joined = time.monotonic()
        await _until(lambda: call1.byed and call2.byed)
        assert sip1.transfer is not None and sip1.transfer.id == carol_leg
        assert list(hub.gateway.calls) == [sip1.id]
        await asyncio.sleep(scaled(2.5))
        await bob.hangup()  # the other way round this time: carol is released
        await carol.wait_event("CALL_CLOSED", timeout=scaled(10))
    finally:
        alice.close()
    for phone in phones.values():
        await phone.stop()
    b = heard(bob, t_joined - t0_bob + 0.8, t_joined - t0_bob + 2.8)
    c = heard(carol, t_joined - t0_carol + 0.8, t_joined - t0_carol + 2.8)
    assert b["carol"] > LOUD and b["alice"] < LOUD, b
    assert c["bob"] > LOUD and c[ALICE_2] < LOUD, c
    await _until(lambda: not hub.gateway.calls and not hub.engine.bridges)


async def test_api_joins_a_phone_call_with_a_dispatch_call(
        hub: Hub, phone_factory: PhoneFactory) -> None:
    """The dispatcher's desk phone (alice) talks with bob through the hub; the console
    calls carol; the API connects bob and carol: alice's side is released with BYE."""
    hub.auth.add_operator("op", "dispatcher", password="op-password-1")
    phones = await _phones(hub, phone_factory, ["bob", "carol"])
    bob, carol = phones["bob"], phones["carol"]
    alice = await _alice(hub)
    try:
        call1 = await alice.invite("bob", tone_hz=TONES["alice"])
        await bob.wait_event("CALL_ESTABLISHED", timeout=scaled(10))
        t0_bob = time.monotonic()
        sip1 = _sip_call(hub, call1)
        assert sip1.b is not None and sip1.b.leg is not None
        consult = hub.calls.create(["carol"], "single", operator="op")
        await carol.wait_event("CALL_ESTABLISHED", timeout=scaled(10))
        t0_carol = time.monotonic()
        [carol_leg] = consult.legs
        await _until(lambda: carol_leg in consult.media.mixer)
        await asyncio.sleep(scaled(1.0))
        async with httpx.AsyncClient(base_url=hub.http.url) as client:
            headers = await bearer(client)
            url = f"/api/calls/{sip1.id}/legs/{sip1.b.leg.id}/transfer"
            t_joined = time.monotonic()
            resp = await client.post(url, headers=headers, json={"to_call": consult.id})
            assert resp.status_code == 200, resp.text
        await _until(lambda: call1.byed)
        assert not alice.requests("NOTIFY")  # nobody REFERred: no subscription
        assert sip1.released == {"a"} and sip1.transfer is not None
        assert sip1.transfer.id == carol_leg and carol_leg in sip1.media.legs
        assert consult.ended is not None
        await asyncio.sleep(scaled(2.5))
        await carol.hangup()
        await bob.wait_event("CALL_CLOSED", timeout=scaled(10))
    finally:
        alice.close()
    for phone in phones.values():
        await phone.stop()
    b = heard(bob, t_joined - t0_bob + 0.8, t_joined - t0_bob + 2.8)
    c = heard(carol, t_joined - t0_carol + 0.8, t_joined - t0_carol + 2.8)
    assert b["carol"] > LOUD and b["alice"] < LOUD, b
    assert c["bob"] > LOUD, c
    await _until(lambda: not hub.gateway.calls and not hub.engine.bridges)


async def test_invite_with_replaces_takes_the_call_over(
        hub: Hub, phone_factory: PhoneFactory) -> None:
    """RFC 3891 at the hub: alice's second device sends an INVITE with Replaces naming
    her first device's dialog; bob now talks with the second, the first gets BYE."""
    phones = await _phones(hub, phone_factory, ["bob"])
    bob = phones["bob"]
    alice = await _alice(hub)
    second = SipUa("alice", "pw-alice", ("127.0.0.1", sip_port(hub)))
    dave = SipUa("dave", "pw-dave", ("127.0.0.1", sip_port(hub)))
    await second.start()
    await dave.start()
    try:
        call1 = await alice.invite("bob", tone_hz=TONES["alice"])
        await bob.wait_event("CALL_ESTABLISHED", timeout=scaled(10))
        t0_bob = time.monotonic()
        sip1 = _sip_call(hub, call1)
        mine = f"Replaces: {call1.replaces_value()}\nRequire: replaces\n"
        for ua, extra, status in (
                (dave, mine, 403),                  # not dave's dialog to take
                (second, "Replaces: gone@x;to-tag=1;from-tag=2\n", 481),
                (second, mine + f"Replaces: {call1.replaces_value()}\n", 400),
                (second, f"Replaces: {call1.replaces_value(early_only=True)}\n", 486),
                (second, f"Replaces: {call1.replaces_value(swap=True)}\n", 481),
        ):
            response, _ = await ua.try_invite("bob", extra=extra)
            assert response.status == status, (extra, response.status, response.reason)
        assert sip1.transfer is None and not sip1.released and not call1.byed
        await asyncio.sleep(scaled(1.0))
        t_moved = time.monotonic()
        call2 = await second.invite("bob", tone_hz=TONES[ALICE_2], extra=mine)
        await _until(lambda: call1.byed)
        assert list(hub.gateway.calls) == [sip1.id] and sip1.released == {"a"}
        assert sip1.transfer is not None and sip1.transfer.name == "alice"
        assert sip1.transfer.media.id in sip1.media.mixer
        await asyncio.sleep(scaled(2.5))
        assert (await second.bye(call2)).status == 200
        await bob.wait_event("CALL_CLOSED", timeout=scaled(10))
    finally:
        for ua in (alice, second, dave):
            ua.close()
    await bob.stop()
    before = heard(bob, 0.5, t_moved - t0_bob - 0.1)
    after = heard(bob, t_moved - t0_bob + 0.8, t_moved - t0_bob + 2.8)
    assert before["alice"] > LOUD and before[ALICE_2] < LOUD, before
    assert after[ALICE_2] > LOUD and after["alice"] < LOUD, after
    await _until(lambda: not hub.gateway.calls and not hub.engine.bridges)


async def test_api_moves_a_phone_call_party_into_a_dispatch_call(
        hub: Hub, phone_factory: PhoneFactory) -> None:
    """The console calls bob; the dispatcher's phone (alice) barges into that call, then
    calls carol from the phone. Transferring bob's leg ``to_call`` the phone call hands
    carol's dialog to the hub, into bob's call; alice leaves both calls."""
    hub.auth.add_operator("op", "dispatcher", password="op-password-1")
    phones = await _phones(hub, phone_factory, ["bob", "carol"])
    bob, carol = phones["bob"], phones["carol"]
    alice = await _alice(hub)
    alice.incoming_tone_hz = TONES["alice"]
    try:
        first = hub.calls.create(["bob"], "single", operator="op")
        await bob.wait_event("CALL_ESTABLISHED", timeout=scaled(10))
        t0_bob = time.monotonic()
        [bob_leg] = first.legs
        barge = hub.calls.join(first.id, "barge", "alice", operator="op")
        await _until(lambda: barge.out is not None and barge.id in first.media.mixer)
        call2 = await alice.invite("carol", tone_hz=TONES[ALICE_2])
        await carol.wait_event("CALL_ESTABLISHED", timeout=scaled(10))
        t0_carol = time.monotonic()
        sip2 = _sip_call(hub, call2)
        assert sip2.b is not None and sip2.b.leg is not None
        carol_leg = sip2.b.leg.id
        await asyncio.sleep(scaled(1.0))
        async with httpx.AsyncClient(base_url=hub.http.url) as client:
            headers = await bearer(client)
            t_joined = time.monotonic()
            resp = await client.post(f"/api/calls/{first.id}/legs/{bob_leg}/transfer",
                                     headers=headers, json={"to_call": sip2.id})
            assert resp.status_code == 200, resp.text
            legs = {leg["leg_id"]: leg for leg in resp.json()["legs"]}
        assert legs[carol_leg]["target"] == "carol" and legs[carol_leg]["state"] == "up"
        assert legs[bob_leg]["state"] == "up"
        [barge_call] = [c for c in alice.calls if c.incoming]  # the hub called her to barge
        await _until(lambda: call2.byed and barge_call.byed)
        assert not hub.gateway.calls and sip2.ended
        assert carol_leg in first.media.mixer and barge.id not in first.media.mixer
        await asyncio.sleep(scaled(2.5))
        await carol.hangup()
        await _until(lambda: first.legs[carol_leg].out is not None
                     and first.legs[carol_leg].out.ended)  # type: ignore[union-attr]
        hub.calls.end(first.id)
        await bob.wait_event("CALL_CLOSED", timeout=scaled(10))
    finally:
        alice.close()
    for phone in phones.values():
        await phone.stop()
    b = heard(bob, t_joined - t0_bob + 0.8, t_joined - t0_bob + 2.8)
    c = heard(carol, t_joined - t0_carol + 0.8, t_joined - t0_carol + 2.8)
    assert b["carol"] > LOUD and b["alice"] < LOUD and b[ALICE_2] < LOUD, b
    assert c["bob"] > LOUD and c[ALICE_2] < LOUD, c
    await _until(lambda: not hub.engine.bridges)


async def test_queued_caller_is_connected_to_a_consulted_party(
        hub: Hub, phone_factory: PhoneFactory) -> None:
    """alice calls the dispatch number; the dispatcher picks up with bob's phone, calls
    carol from the console and connects alice with her: bob is released, the queue
    call (and its recording) goes on until carol hangs up."""
    hub.auth.add_operator("op", "dispatcher", password="op-password-1")
    phones = await _phones(hub, phone_factory, ["alice", "bob", "carol"])
    alice, bob, carol = phones["alice"], phones["bob"], phones["carol"]
    async with httpx.AsyncClient(base_url=hub.http.url) as client:
        headers = await bearer(client)
        await alice.dial(f"sip:{hub.store.dispatch_number}@127.0.0.1:{sip_port(hub)}")
        await alice.wait_event("CALL_ESTABLISHED", timeout=scaled(10))
        t0_alice = time.monotonic()
        await _until(lambda: len(hub.gateway.queue.waiting()) == 1)
        [entry] = hub.gateway.queue.waiting()
        resp = await client.post(f"/api/queue/{entry.id}/answer", headers=headers,
                                 json={"phone": "bob"})
        assert resp.status_code == 201, resp.text
        await bob.wait_event("CALL_ESTABLISHED", timeout=scaled(10))
        queued = hub.calls.get(entry.id)
        await _until(lambda: queued.answered_by == "op")
        consult = hub.calls.create(["carol"], "single", operator="op")
        await carol.wait_event("CALL_ESTABLISHED", timeout=scaled(10))
        t0_carol = time.monotonic()
        [carol_leg] = consult.legs
        await _until(lambda: carol_leg in consult.media.mixer)
        await asyncio.sleep(scaled(1.0))
        t_joined = time.monotonic()
        resp = await client.post(f"/api/calls/{entry.id}/legs/{entry.leg.id}/transfer",
                                 headers=headers, json={"to_call": consult.id})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["recording_id"] == entry.recording_id is not None
        await bob.wait_event("CALL_CLOSED", timeout=scaled(10))  # the dispatcher's phone
        states = {leg["target"]: leg["state"] for leg in
                  (await client.get(f"/api/calls/{entry.id}", headers=headers)).json()["legs"]}
        assert states == {"alice": "up", "bob": "ended", "carol": "up"}, states
        await asyncio.sleep(scaled(2.5))
        await carol.hangup()
        await alice.wait_event("CALL_CLOSED", timeout=scaled(10))
        ended = (await client.get(f"/api/calls/{entry.id}", headers=headers)).json()
        assert ended["state"] == "ended"
    for phone in phones.values():
        await phone.stop()
    a = heard(alice, t_joined - t0_alice + 0.8, t_joined - t0_alice + 2.8)
    c = heard(carol, t_joined - t0_carol + 0.8, t_joined - t0_carol + 2.8)
    assert a["carol"] > LOUD and a["bob"] < LOUD, a
    assert c["alice"] > LOUD and c["bob"] < LOUD, c
    await _until(lambda: not hub.engine.bridges)

"""The dispatcher's own voice from a browser: a WebRTC leg in dispatch calls.

A started hub, real phones (baresip), and an aiortc peer standing in for the page
(tests/integration/test_webrtc.py proves the same media path with real Chromium).
"""

import asyncio

import pytest

from dispatch.calls import CallConflict, CallInvalid
from hub.server import Hub
from media.ports import PortAllocator
from tests.integration.conftest import sip_port
from tests.integration.test_dispatch_calls import TONES, _phones, _until, amplitude, heard
from tests.peers import LOOPBACK, scaled
from tests.peers.baresip import PhoneFactory
from tests.peers.webrtc import AiortcPeer

pytestmark = pytest.mark.peers

LOUD = 0.02
PEER_PORTS = (27500, 27999)
# The browsers' tones, named by the phone of test_dispatch_calls.TONES sharing them.
BROWSER, MONITOR, WHISPER = "carol", "carol", "dave"


def _peer_levels(peer: AiortcPeer, tones: dict[str, float]) -> dict[str, float]:
    pcm = peer.pcm() / 32768.0
    return {name: amplitude(pcm, 48000, hz) for name, hz in tones.items()}


async def test_call_started_from_the_browser(hub: Hub, phone_factory: PhoneFactory) -> None:
    phones = await _phones(hub, phone_factory, ["alice"])
    peer = AiortcPeer(PortAllocator(LOOPBACK, *PEER_PORTS), TONES[BROWSER])
    try:
        call, dleg, answer = await hub.calls.create_from_browser(
            ["alice"], await peer.offer(), "single", operator="op1")
        await peer.accept(answer)
        assert dleg.browser is not None and dleg.id in call.media.legs
        await phones["alice"].wait_event("CALL_ESTABLISHED", timeout=scaled(10))
        await _until(lambda: dleg.as_dict()["state"] == "up")
        await asyncio.sleep(1.0)
        peer.recording = True
        await asyncio.sleep(scaled(2.0))
        peer.recording = False
        view = dleg.as_dict()
        assert view["kind"] == "webrtc" and view["outcome"] == "answered", view
        assert view["target"] == "op1"
        hub.calls.end(call.id)
        await phones["alice"].wait_event("CALL_CLOSED", timeout=scaled(10))
        await _until(lambda: peer.pc.connectionState == "closed")
        assert dleg.as_dict()["state"] == "ended"
        await phones["alice"].stop()
        # alice heard the dispatcher's browser (1800 Hz); the browser heard alice.
        assert heard(phones["alice"], 1.0)[BROWSER] > LOUD
        assert _peer_levels(peer, {"alice": 440.0})["alice"] > LOUD
    finally:
        await peer.close()
    assert hub.webrtc is not None
    await _until(lambda: not hub.webrtc.sessions)  # type: ignore[union-attr]


async def test_browser_monitors_and_whispers_into_a_phone_call(
        hub: Hub, phone_factory: PhoneFactory) -> None:
    phones = await _phones(hub, phone_factory, ["alice", "bob"])
    alice, bob = phones["alice"], phones["bob"]
    await alice.dial(f"sip:bob@127.0.0.1:{sip_port(hub)}")
    await bob.wait_event("CALL_ESTABLISHED", timeout=scaled(10))
    [sip_call] = hub.gateway.calls.values()
    ports = PortAllocator(LOOPBACK, *PEER_PORTS)
    monitor, whisper = AiortcPeer(ports, TONES[MONITOR]), AiortcPeer(ports, TONES[WHISPER])
    try:
        with pytest.raises(CallInvalid, match="one audio stream"):
            await hub.calls.join_browser(sip_call.id, "monitor", "v=0\r\n")
        with pytest.raises(CallInvalid, match="whisper needs"):
            await hub.calls.join_browser(sip_call.id, "whisper", "v=0\r\n")
        m_leg, m_answer = await hub.calls.join_browser(sip_call.id, "monitor",
                                                       await monitor.offer(), operator="op1")
        w_leg, w_answer = await hub.calls.join_browser(
            sip_call.id, "whisper", await whisper.offer(), leg_id=sip_call.a_leg.id,
            operator="op2")
        await monitor.accept(m_answer)
        await whisper.accept(w_answer)
        await _until(lambda: m_leg.as_dict()["state"] == "up"
                     and w_leg.as_dict()["state"] == "up")
        await asyncio.sleep(1.0)
        monitor.recording = True
        await asyncio.sleep(scaled(2.5))
        monitor.recording = False
        await alice.hangup()
        for phone in phones.values():
            await phone.wait_event("CALL_CLOSED", timeout=scaled(10))
            await phone.stop()
        # The call's end ends the browsers' legs too.
        await _until(lambda: monitor.pc.connectionState == "closed"
                     and whisper.pc.connectionState == "closed")
        with pytest.raises(CallConflict):
            await hub.calls.join_browser(sip_call.id, "monitor", "v=0\r\n")
    finally:
        await monitor.close()
        await whisper.close()
    a, b = heard(alice, 1.5, 3.5), heard(bob, 1.5, 3.5)
    m = _peer_levels(monitor, TONES)
    assert m["alice"] > LOUD and m["bob"] > LOUD, m          # the monitor hears both
    assert m[WHISPER] < LOUD, m                               # but not the whisper
    assert a[MONITOR] < LOUD and b[MONITOR] < LOUD, (a, b)    # nobody hears the monitor
    assert a[WHISPER] > LOUD, a                               # the whisper reaches alice
    assert b[WHISPER] < LOUD, b                               # and only alice
    assert hub.webrtc is not None
    await _until(lambda: not hub.webrtc.sessions)  # type: ignore[union-attr]

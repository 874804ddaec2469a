"""Two real phones (baresip) register to the hub with digest and call each other through it.

Audio is proven by audio: each phone plays its own tone and the FFT peak of what
the other phone heard must be that tone.
"""

import asyncio

import pytest

from hub.server import Hub
from tests.integration.conftest import sip_port
from tests.peers import scaled
from tests.peers.audio import dominant_frequency
from tests.peers.baresip import PhoneFactory

pytestmark = pytest.mark.peers


async def _registered_pair(hub: Hub, phone_factory: PhoneFactory,
                           callee_answer: str = "auto") -> tuple:
    registrar = ("127.0.0.1", sip_port(hub))
    alice = await phone_factory("alice", password="pw-alice", registrar=registrar,
                                tone_hz=440.0)
    bob = await phone_factory("bob", password="pw-bob", registrar=registrar, tone_hz=1000.0,
                              answermode=callee_answer)
    await alice.wait_registered()
    await bob.wait_registered()
    return alice, bob


async def test_call_between_two_phones_carries_audio_both_ways(
        hub: Hub, phone_factory: PhoneFactory) -> None:
    alice, bob = await _registered_pair(hub, phone_factory)
    assert hub.store.bindings("alice", __import__("time").time())
    await alice.dial(f"sip:bob@127.0.0.1:{sip_port(hub)}")
    await alice.wait_event("CALL_ESTABLISHED", timeout=scaled(10))
    await bob.wait_event("CALL_ESTABLISHED", timeout=scaled(10))
    assert len(hub.gateway.calls) == 1
    await asyncio.sleep(scaled(3))
    await alice.hangup()
    await bob.wait_event("CALL_CLOSED", timeout=scaled(10))
    await asyncio.sleep(0.5)
    assert hub.gateway.calls == {}
    assert not hub.engine.bridges
    await alice.stop()
    await bob.stop()
    heard_by_alice = dominant_frequency(alice.dec_wavs()[-1])
    heard_by_bob = dominant_frequency(bob.dec_wavs()[-1])
    assert abs(heard_by_alice - 1000.0) < 20, heard_by_alice
    assert abs(heard_by_bob - 440.0) < 20, heard_by_bob

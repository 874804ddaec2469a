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


@pytest.mark.parametrize(("alice_codec", "bob_codec", "transport"), [
    ("opus/48000/2", "G722/16000/1", "udp"),
    ("PCMA", "opus/48000/2", "tcp"),
])
async def test_phones_with_different_codecs_hear_each_other(
        hub: Hub, phone_factory: PhoneFactory, alice_codec: str, bob_codec: str,
        transport: str) -> None:
    """The hub transcodes: each phone gets the codec it offers (Opus, G.722, PCMA)."""
    registrar = ("127.0.0.1", sip_port(hub))
    alice = await phone_factory("alice", password="pw-alice", registrar=registrar,
                                tone_hz=440.0, codecs=alice_codec, transport=transport)
    bob = await phone_factory("bob", password="pw-bob", registrar=registrar, tone_hz=1000.0,
                              codecs=bob_codec, transport=transport)
    await alice.wait_registered()
    await bob.wait_registered()
    await alice.dial(f"sip:bob@127.0.0.1:{sip_port(hub)}")
    await alice.wait_event("CALL_ESTABLISHED", timeout=scaled(10))
    await bob.wait_event("CALL_ESTABLISHED", timeout=scaled(10))
    [call] = hub.gateway.calls.values()
    codecs = {leg.id: leg.codec.name for leg in call.media.legs.values() if leg.codec}
    assert codecs[call.a_leg.id].lower() == alice_codec.split("/")[0].lower()
    assert call.b is not None
    assert codecs[call.b.media.id].lower() == bob_codec.split("/")[0].lower()
    await asyncio.sleep(scaled(3))
    await alice.hangup()
    await bob.wait_event("CALL_CLOSED", timeout=scaled(10))
    await alice.stop()
    await bob.stop()
    assert abs(dominant_frequency(alice.dec_wavs()[-1]) - 1000.0) < 20
    assert abs(dominant_frequency(bob.dec_wavs()[-1]) - 440.0) < 20

"""``MediaBridge.move_leg``: a leg changes bridges without a gap on the wire.

An engine on loopback with RTP endpoints (tests/peers/rtp_phone.py): a leg sending a
tone is heard in its first bridge, is moved into a second bridge mixing at another
rate, and from then on is heard there (and hears it) and no longer in the first. Its
port, SSRC and sequence numbers carry on; both recordings and the talker state see
the move.
"""

import asyncio
import struct
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from media.codecs import PCMU
from media.engine import MediaBridge, MediaEngine, TalkerChanged
from media.ports import PortAllocator
from tests.peers.rtp_phone import RtpPhone, tone_levels

MOVER_HZ = 1000.0
STAYER_HZ = 440.0
THERE_HZ = 1800.0
FREQS = [MOVER_HZ, STAYER_HZ, THERE_HZ]


class FakeRecorder:
    """What a bridge tells its recording about its legs."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def on_mix(self, pcm: Any, now: float) -> None:
        pass

    def on_leg(self, leg_id: str, pcm: Any, now: float) -> None:
        pass

    def leg_joined(self, leg_id: str, peer: str, now: float) -> None:
        self.calls.append(("joined", leg_id))

    def leg_left(self, leg_id: str, now: float) -> None:
        self.calls.append(("left", leg_id))

    def close(self, now: float) -> None:
        pass


@pytest_asyncio.fixture
async def engine() -> AsyncIterator[MediaEngine]:
    events: list[object] = []
    eng = MediaEngine(PortAllocator("127.0.0.1", 29700, 29799), advertised_host="127.0.0.1",
                      on_event=events.append)
    eng.events = events  # type: ignore[attr-defined]
    yield eng
    eng.close()


def _leg(bridge: MediaBridge, name: str, hz: float | None) -> RtpPhone:
    phone = RtpPhone(hz)
    leg = bridge.add_leg(name, PCMU, 0, 101, peer=name)
    leg.set_remote("127.0.0.1", phone.port)
    phone.dest = leg.local_address
    return phone


async def _talk(phones: dict[str, RtpPhone], seconds: float = 1.2) -> dict[str, dict[float, float]]:
    for phone in phones.values():
        phone.clear()
        phone.start(seconds)
    await asyncio.gather(*(p.wait() for p in phones.values()))
    await asyncio.sleep(0.15)
    # The first 200 ms fill the jitter buffers: judge the steady state.
    return {name: tone_levels(p.pcm()[1600:], FREQS) for name, p in phones.items()}


def _rtp_headers(phone: RtpPhone) -> list[tuple[int, int]]:
    """(sequence number, SSRC) of every audio packet the phone received."""
    out = []
    for packet in phone.received_packets:
        if len(packet) >= 12 and packet[1] & 0x7F == 0:
            seq, _, ssrc = struct.unpack_from("!HII", packet, 2)
            out.append((seq, ssrc))
    return out


async def test_a_moved_leg_is_heard_in_its_new_bridge_only(engine: MediaEngine) -> None:
    here = engine.create_bridge("here", rate=8000)
    there = engine.create_bridge("there", rate=16000)  # another rate: resampled after the move
    here.recorder = rec_here = FakeRecorder()  # type: ignore[assignment]
    there.recorder = rec_there = FakeRecorder()  # type: ignore[assignment]
    phones = {"mover": _leg(here, "mover", MOVER_HZ), "stayer": _leg(here, "stayer", STAYER_HZ),
              "there": _leg(there, "there", THERE_HZ)}
    try:
        before = await _talk(phones)
        assert before["stayer"][MOVER_HZ] > 0.3 and before["mover"][STAYER_HZ] > 0.3, before
        assert before["there"][MOVER_HZ] < 0.05, before
        assert "mover" in here.talking
        leg = here.legs["mover"]
        port, ssrc = leg.local_address, leg.ssrc  # type: ignore[attr-defined]

        moved = here.move_leg("mover", there)

        assert moved is leg and leg.bridge is there  # type: ignore[attr-defined]
        assert "mover" not in here.legs and "mover" not in here.mixer
        assert "mover" in there.legs and "mover" in there.mixer and leg.joined
        assert leg.local_address == port and leg.ssrc == ssrc  # type: ignore[attr-defined]
        assert "mover" not in here.talking
        events = engine.events  # type: ignore[attr-defined]
        assert TalkerChanged("here", "mover", False) in events
        assert rec_here.calls[-1] == ("left", "mover")
        assert rec_there.calls[-1] == ("joined", "mover")

        after = await _talk(phones)
        assert after["there"][MOVER_HZ] > 0.3, after       # heard in the new bridge
        assert after["mover"][THERE_HZ] > 0.3, after       # and hears it
        assert after["stayer"][MOVER_HZ] < 0.05, after     # no longer in the old one
        assert after["mover"][STAYER_HZ] < 0.05, after
        assert engine.stats.tick_errors == 0
        assert "mover" in there.talking
        # One RTP stream toward the phone: same SSRC, sequence numbers without a jump.
        headers = _rtp_headers(phones["mover"])
        assert {s for _, s in headers} == {ssrc}
        steps = np.diff(np.array([seq for seq, _ in headers], dtype=np.int64)) % 65536
        assert set(steps.tolist()) == {1}, steps
    finally:
        for phone in phones.values():
            phone.close()


async def test_move_refuses_what_cannot_work(engine: MediaEngine) -> None:
    here = engine.create_bridge("here", rate=8000)
    there = engine.create_bridge("there", rate=8000)
    phones = {"a": _leg(here, "a", None), "b": _leg(there, "b", None)}
    try:
        with pytest.raises(ValueError, match="no leg"):
            here.move_leg("nobody", there)
        with pytest.raises(ValueError, match="already in bridge here"):
            here.move_leg("a", here)
        there.add_leg("a", PCMU, 0, 101)
        with pytest.raises(ValueError, match="already in bridge there"):
            here.move_leg("a", there)
        there.remove_leg("a")
        closed = engine.create_bridge("closed", rate=8000)
        closed.close()
        with pytest.raises(ValueError, match="cannot take legs"):
            here.move_leg("a", closed)
        # An unanswered leg (not in the mix) moves and stays out of the new mix.
        waiting = here.add_leg("w", None, join=False)
        here.move_leg("w", there)
        assert waiting.bridge is there and "w" not in there.mixer and not waiting.joined
        # Closing the old bridge no longer touches the moved leg; the new one closes it.
        here.move_leg("a", there)
        here.close()
        assert not there.legs["a"]._rtp.closed  # type: ignore[attr-defined]
    finally:
        for phone in phones.values():
            phone.close()

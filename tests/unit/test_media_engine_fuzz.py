"""Whatever arrives on a leg's sockets, the engine neither raises nor disturbs other legs.

Hypothesis feeds garbage, truncated, oversized and almost-valid RTP/RTCP straight into
one leg's receive handlers (the code behind its socket), between mix ticks; a second
leg keeps sending a clean tone and must keep being heard by the third.
"""

import asyncio
import struct
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from media.codecs import PCMU, ulaw_encode
from media.engine import MediaBridge, MediaEngine
from media.ports import PortAllocator

SOURCE = ("127.0.0.1", 40000)


@pytest.fixture(scope="module")
def room() -> Iterator[tuple[MediaEngine, MediaBridge]]:
    loop = asyncio.new_event_loop()
    engine = MediaEngine(PortAllocator("127.0.0.1", 29500, 29599),
                         advertised_host="127.0.0.1", loop=loop)
    try:
        bridge = engine.create_bridge("fuzz", 8000)
        for name in ("bad", "good", "ear"):
            leg = bridge.add_leg(name, PCMU, 0, 101)
            leg.set_remote("127.0.0.1", 40000 + len(bridge.legs) * 2)
    except BaseException:
        engine.close()
        loop.close()
        raise
    # The bad leg's garbage is parsed but not mixed, so what the ear hears is the good
    # leg's tone alone and can be checked exactly.
    bridge.mixer.set_muted("bad", True)
    yield engine, bridge
    engine.close()
    loop.close()


def rtp_like() -> st.SearchStrategy[bytes]:
    header = st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 0xFFFF),
                       st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF))
    return st.builds(lambda h, tail: struct.pack("!BBHII", *h) + tail, header,
                     st.binary(max_size=1400))


_clock = [1000.0]


def _tone_packet(seq: int) -> bytes:
    t = (np.arange(160) + seq * 160) / 8000
    pcm = (8000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    return struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, seq * 160, 0xABC) + ulaw_encode(
        pcm).tobytes()


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.binary(max_size=2000), rtp_like()), max_size=40),
       st.lists(st.binary(max_size=300), max_size=10))
def test_garbage_on_one_leg_never_raises_nor_silences_others(
        room: tuple[MediaEngine, MediaBridge], rtp: list[bytes], rtcp: list[bytes]) -> None:
    engine, bridge = room
    bad, good, ear = (bridge.legs[n] for n in ("bad", "good", "ear"))
    engine.clock = lambda: _clock[0]
    heard = []
    for i, data in enumerate(rtp):
        bad._on_rtp([(data, SOURCE)])
        if i < len(rtcp):
            bad._on_rtcp([(rtcp[i], SOURCE)])
    for _ in range(6):
        seq = int(_clock[0] * 50)
        good._on_rtp([(_tone_packet(seq), ("127.0.0.1", 40004))])
        _clock[0] += 0.02
        bridge.tick(_clock[0], 0.0)
        heard.append(bridge.mixer.last_total.copy())
    assert engine.stats.tick_errors == 0
    # The ear hears the good leg's tone (after the jitter buffer's first frames).
    tail = np.concatenate(heard[-3:])
    assert np.abs(tail).max() > 1000
    spectrum = np.abs(np.fft.rfft(tail * np.hanning(tail.size)))
    assert abs(np.fft.rfftfreq(tail.size, 1 / 8000)[spectrum.argmax()] - 1000) < 40


@pytest.mark.parametrize("payload_size", [0, 80, 240])
def test_packets_of_other_durations_fit_the_tick(room: tuple[MediaEngine, MediaBridge],
                                                 payload_size: int) -> None:
    """An empty, 10 ms or 30 ms packet still gives exactly one 20 ms frame per tick."""
    engine, bridge = room
    engine.clock = lambda: _clock[0]
    bad = bridge.legs["bad"]
    for i in range(8):
        seq = int(_clock[0] * 50) + i
        bad._on_rtp([(struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, seq * 160, 0x77)
                      + bytes(payload_size), SOURCE)])
        _clock[0] += 0.02
        bridge.tick(_clock[0], 0.0)
    assert engine.stats.tick_errors == 0

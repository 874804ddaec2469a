"""media/webrtc.py and gateways/webrtc.py without a network: queues, framing, pacing,
the offer filter, and the pinned ICE candidates (aioice's private fields we set)."""

import asyncio
import fractions
from collections.abc import AsyncIterator

import numpy as np
import pytest
import pytest_asyncio
from aiortc import RTCConfiguration, RTCPeerConnection
from av import AudioFrame

from gateways.webrtc import sanitise_offer
from media.engine import MediaEngine
from media.ports import PortAllocator
from media.webrtc import (
    FRAME_SAMPLES,
    MAX_QUEUE,
    FrameQueue,
    HostCandidates,
    WebRtcLeg,
)
from tests.peers.webrtc import dominant_hz

PORTS = (28000, 28099)


def _frame(i: int) -> np.ndarray:
    return np.full(4, i, dtype=np.int16)


def test_queue_primes_then_plays_then_primes_again() -> None:
    queue = FrameQueue(limit=5, prefill=2)
    queue.put(_frame(1))
    assert queue.get() is None  # one frame is not enough to start
    queue.put(_frame(2))
    assert queue.get()[0] == 1 and queue.get()[0] == 2  # type: ignore[index]
    assert queue.get() is None and queue.underruns == 1
    queue.put(_frame(3))
    assert queue.get() is None  # priming again after the underrun
    queue.put(_frame(4))
    assert queue.get()[0] == 3  # type: ignore[index]


def test_queue_drops_the_oldest_beyond_its_limit() -> None:
    queue = FrameQueue(limit=5, prefill=2)
    for i in range(8):
        queue.put(_frame(i))
    assert len(queue) == 5 and queue.dropped == 3
    assert [queue.get()[0] for _ in range(5)] == [3, 4, 5, 6, 7]  # type: ignore[index]


def test_queue_rejects_a_prefill_beyond_its_limit() -> None:
    with pytest.raises(ValueError, match="prefill"):
        FrameQueue(limit=2, prefill=3)


@pytest_asyncio.fixture
async def engine() -> AsyncIterator[MediaEngine]:
    eng = MediaEngine(PortAllocator("127.0.0.1", *PORTS), advertised_host="127.0.0.1")
    yield eng
    eng.close()


def _stereo(hz: float, samples: int, start: int = 0) -> AudioFrame:
    """What aiortc's Opus decoder hands over: s16 stereo (interleaved) at 48 kHz."""
    t = (np.arange(samples) + start) / 48000
    mono = (8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)
    frame = AudioFrame.from_ndarray(np.repeat(mono, 2).reshape(1, -1), format="s16",
                                    layout="stereo")
    frame.sample_rate = 48000
    frame.pts = start
    frame.time_base = fractions.Fraction(1, 48000)
    return frame


async def test_leg_cuts_any_frame_size_into_bridge_frames(engine: MediaEngine) -> None:
    bridge = engine.create_bridge("b", rate=8000)
    leg = WebRtcLeg(bridge, "w", peer="browser")
    start = 0
    heard = []
    for size in [480, 1440, 960, 960, 720, 240, 960] * 5:  # 10, 30, 20... ms frames
        leg.receive(_stereo(1000.0, size, start))
        start += size
        while (pcm := leg.pull(0.0)) is not None:
            assert pcm.dtype == np.int16 and pcm.shape == (160,)
            heard.append(pcm)
    # Every whole 20 ms came out, in order, or waits in the queue (priming); none lost.
    assert leg.stats.frames_in == start // FRAME_SAMPLES == 30
    assert len(heard) + len(leg._in) == 30 and leg._in.dropped == 0
    pcm = np.concatenate(heard)
    assert abs(dominant_hz(pcm[800:], 8000) - 1000.0) < 10
    assert leg.idle_for(engine.clock()) < 1.0


async def test_leg_never_queues_more_than_100_ms(engine: MediaEngine) -> None:
    bridge = engine.create_bridge("b", rate=16000)
    leg = WebRtcLeg(bridge, "w")
    for k in range(20):  # a 400 ms burst nobody pulled
        leg.receive(_stereo(440.0, 960, k * 960))
    frames = []
    while (pcm := leg.pull(0.0)) is not None:
        frames.append(pcm)
    assert len(frames) == MAX_QUEUE and all(f.shape == (320,) for f in frames)
    assert leg.snapshot()["dropped_in"] == 20 - MAX_QUEUE


async def test_leg_pushes_48khz_frames_and_the_track_paces_them(engine: MediaEngine) -> None:
    bridge = engine.create_bridge("b", rate=8000)
    leg = WebRtcLeg(bridge, "w")
    t = np.arange(160 * 10) / 8000
    tone = (8000 * np.sin(2 * np.pi * 440.0 * t)).astype(np.int16)
    for k in range(10):
        leg.push(tone[k * 160:(k + 1) * 160], 0.0)
    assert len(leg.track.queue) == MAX_QUEUE  # the oldest went: aiortc was not reading
    loop = asyncio.get_running_loop()
    started = loop.time()
    frames = [await leg.track.recv() for _ in range(6)]
    elapsed = loop.time() - started
    assert elapsed >= 5 * 0.020 - 0.002  # paced: one frame per 20 ms after the first
    assert [f.pts for f in frames] == [k * FRAME_SAMPLES for k in range(6)]
    assert all(f.sample_rate == 48000 and f.samples == FRAME_SAMPLES for f in frames)
    pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in frames[:5]])
    assert abs(dominant_hz(pcm, 48000) - 440.0) < 15
    assert not frames[5].to_ndarray().any()  # nothing left: silence
    leg.push_silence(0.0)
    snap = leg.snapshot()
    assert snap["frames_out"] == 6 and snap["underruns_out"] == 1 and snap["codec"] == "opus"
    leg.close()
    assert leg.track.readyState == "ended"


def test_offer_filter_drops_mdns_candidates_only() -> None:
    offer = ("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
             "a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host\r\n"
             "a=candidate:2 1 udp 2122260223 3f2a-b1.local 50001 typ host\r\n"
             "a=candidate:3 1 udp 2122260223 2001:db8::1 50002 typ host\r\n")
    cleaned, dropped = sanitise_offer(offer)
    assert dropped == 1 and ".local" not in cleaned
    assert "127.0.0.1 50000" in cleaned and "2001:db8::1 50002" in cleaned


async def test_host_candidates_say_the_advertised_address_only() -> None:
    ports = PortAllocator("127.0.0.1", *PORTS)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pinned = HostCandidates(ports, "203.0.113.7")  # a NAT's public address, say
    try:
        pc.addTransceiver("audio")
        pinned.apply(pc)
        await pc.setLocalDescription(await pc.createOffer())
        lines = [line.split() for line in pc.localDescription.sdp.splitlines()
                 if line.startswith("a=candidate:")]
        assert len(lines) == 1
        _, component, proto, _, host, port, _, kind = lines[0][:8]
        assert (component, proto.lower(), host, kind) == ("1", "udp", "203.0.113.7", "host")
        assert PORTS[0] <= int(port) <= PORTS[1] and int(port) % 2 == 0
        assert ports.in_use == 1
    finally:
        await pc.close()
        pinned.release()
    assert ports.in_use == 0

"""The conference engine over real sockets: tones in, FFT of what each leg hears out."""

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest_asyncio

from media.codecs import PCMU
from media.engine import DtmfReceived, MediaBridge, MediaEngine
from media.ports import PortAllocator
from tests.peers.rtp_phone import RtpPhone, tone_levels

TONES = {"a": 440.0, "b": 1000.0, "c": 1800.0}
FREQS = list(TONES.values())


@pytest_asyncio.fixture
async def engine() -> AsyncIterator[MediaEngine]:
    events: list[object] = []
    eng = MediaEngine(PortAllocator("127.0.0.1", 26000, 26999), advertised_host="127.0.0.1",
                      on_event=events.append)
    eng.events = events  # type: ignore[attr-defined]
    yield eng
    eng.close()


async def _room(engine: MediaEngine, rate: int = 8000) -> tuple[MediaBridge, dict[str, RtpPhone]]:
    bridge = engine.create_bridge("room", rate=rate)
    phones = {}
    for name, hz in TONES.items():
        phone = RtpPhone(hz)
        leg = bridge.add_leg(name, PCMU, 0, 101, peer=name)
        leg.set_remote("127.0.0.1", phone.port)
        phone.dest = leg.local_address
        phones[name] = phone
    return bridge, phones


async def _talk(phones: dict[str, RtpPhone], seconds: float = 1.2) -> dict[str, dict[float, float]]:
    for phone in phones.values():
        phone.clear()
        phone.start(seconds)
    await asyncio.gather(*(p.wait() for p in phones.values()))
    await asyncio.sleep(0.15)
    # The first 200 ms fill the jitter buffers: judge the steady state.
    return {name: tone_levels(p.pcm()[1600:], FREQS) for name, p in phones.items()}


def _hears(levels: dict[float, float], name: str) -> bool:
    return levels[TONES[name]] > 0.3


def _close(phones: dict[str, RtpPhone]) -> None:
    for phone in phones.values():
        phone.close()


async def test_mix_minus_each_hears_the_others_not_itself(engine: MediaEngine) -> None:
    bridge, phones = await _room(engine)
    try:
        heard = await _talk(phones)
        for name in TONES:
            others = set(TONES) - {name}
            assert all(_hears(heard[name], o) for o in others), (name, heard[name])
            assert heard[name][TONES[name]] < 0.05, (name, heard[name])
        snap = bridge.snapshot()
        assert {leg["leg_id"] for leg in snap["legs"]} == set(TONES)
        assert all(leg["packets_in"] > 40 and leg["packets_out"] > 40 for leg in snap["legs"])
    finally:
        _close(phones)


async def test_relations_mute_deaf_whisper_monitor(engine: MediaEngine) -> None:
    bridge, phones = await _room(engine)
    try:
        bridge.mixer.set_muted("a", True)
        heard = await _talk(phones)
        assert not _hears(heard["b"], "a") and not _hears(heard["c"], "a")
        assert _hears(heard["a"], "b"), "a muted still hears"
        bridge.mixer.set_muted("a", False)

        bridge.mixer.set_deaf("b", True)
        heard = await _talk(phones)
        assert not any(_hears(heard["b"], o) for o in ("a", "c"))
        assert _hears(heard["a"], "b")
        bridge.mixer.set_deaf("b", False)

        bridge.mixer.set_whisper("c", {"a"})
        heard = await _talk(phones)
        assert _hears(heard["a"], "c") and not _hears(heard["b"], "c")
        bridge.mixer.set_whisper("c", set())

        bridge.mixer.set_monitor("c", True)
        heard = await _talk(phones)
        assert _hears(heard["c"], "a") and _hears(heard["c"], "b")
        assert not _hears(heard["a"], "c") and not _hears(heard["b"], "c")
    finally:
        _close(phones)


async def test_wideband_bridge_resamples_narrowband_legs(engine: MediaEngine) -> None:
    bridge, phones = await _room(engine, rate=16000)
    try:
        heard = await _talk(phones)
        assert _hears(heard["a"], "b") and _hears(heard["a"], "c")
        assert bridge.snapshot()["rate"] == 16000
    finally:
        _close(phones)


async def test_garbage_flood_and_ssrc_change_do_not_disturb_others(engine: MediaEngine) -> None:
    bridge, phones = await _room(engine)
    rng = np.random.default_rng(7)
    try:
        for phone in phones.values():
            phone.clear()
            phone.start(1.2)
        bad = phones["c"]
        for _ in range(300):  # garbage, truncated headers, bad versions, huge CSRC counts
            size = int(rng.integers(0, 200))
            bad.send_raw(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
            bad.send_raw(b"\x8f\x00\x00")
            bad.send_raw(bytes([0x9F, 0]) + bytes(10))
        # a flood of valid packets with a new SSRC
        for _ in range(200):
            bad.send_raw(bad.packet(bad.frame(), ssrc=0xBEEF))
        await asyncio.gather(*(p.wait() for p in phones.values()))
        await asyncio.sleep(0.15)
        heard = {n: tone_levels(p.pcm()[1600:], FREQS) for n, p in phones.items()}
        assert _hears(heard["a"], "b") and _hears(heard["b"], "a")
        stats = {leg["leg_id"]: leg for leg in bridge.snapshot()["legs"]}
        assert stats["c"]["invalid"] > 100
        assert engine.stats.tick_errors == 0
    finally:
        _close(phones)


async def test_dtmf_from_a_leg_is_an_event(engine: MediaEngine) -> None:
    bridge, phones = await _room(engine)
    try:
        phone = phones["a"]
        from media.dtmf import DtmfSender
        for p in DtmfSender(8000).packets("5", 120, 4000):
            phone.send_raw(phone.packet(p.payload, pt=101, timestamp=p.timestamp,
                                        marker=p.marker))
        await asyncio.sleep(0.3)
        digits = [e for e in engine.events if isinstance(e, DtmfReceived)]  # type: ignore[attr-defined]
        assert [(d.leg_id, d.digit) for d in digits] == [("a", "5")]
    finally:
        _close(phones)


async def test_player_is_heard_by_every_leg(engine: MediaEngine) -> None:
    from media.tones import tone
    bridge, phones = await _room(engine)
    try:
        for phone in phones.values():
            phone.sending = False
        bridge.play(tone(2500, 1500, 8000), leg_id=None)
        heard = await _talk(phones, seconds=1.0)
        for name in TONES:
            levels = tone_levels(phones[name].pcm()[1600:], [2500.0])
            assert levels[2500.0] > 0.5, (name, levels, heard)
    finally:
        _close(phones)

"""Conference rooms with real phones: three baresip phones, each its own tone.

Each phone's recording of what it heard must hold the other two tones and not its
own (mix-minus); the room's own recording holds all three. Relations (mute, deaf,
whisper, monitor) are shown the same way.
"""

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from hub.server import Hub
from recordings.export import export
from tests.integration.conftest import sip_port
from tests.peers import scaled
from tests.peers.audio import read_wav
from tests.peers.baresip import BaresipPhone, PhoneFactory

pytestmark = pytest.mark.peers

TONES = {"alice": 440.0, "bob": 1000.0, "carol": 1800.0}


LOUD = 0.02
"""Amplitude (full scale 1.0) above which a tone counts as heard: -34 dBFS. The
phones play theirs at about 0.5; a removed speaker leaves nothing above 0.002."""


def levels(samples: np.ndarray, rate: int) -> dict[str, float]:
    """The amplitude of each phone's tone in ``samples`` (full scale 1.0)."""
    window = np.hanning(samples.size)
    spectrum = np.abs(np.fft.rfft(samples * window)) * 2 / window.sum()
    bins = np.fft.rfftfreq(samples.size, 1 / rate)
    return {n: float(spectrum[np.abs(bins - f) < 20].max()) for n, f in TONES.items()}


ESTABLISHED: dict[str, float] = {}


def heard_between(phone: BaresipPhone, start: float, end: float) -> dict[str, float]:
    """What ``phone`` heard between two times (seconds after the last phone joined)."""
    rate, samples = read_wav(phone.dec_wavs()[-1])
    # Its recording began when its own call was established, a little before.
    shift = ESTABLISHED["_all"] - ESTABLISHED[phone.username]
    part = samples[int((start + shift) * rate): int((end + shift) * rate)]
    assert part.size > rate // 2, f"{phone.username} heard only {part.size / rate:.2f} s"
    return levels(part, rate)


async def _room_call(hub: Hub, phone_factory: PhoneFactory, number: str,
                     names: tuple[str, ...] = ("alice", "bob", "carol")) -> dict[str, BaresipPhone]:
    registrar = ("127.0.0.1", sip_port(hub))
    phones = {}
    for name in names:
        phones[name] = await phone_factory(name, password=f"pw-{name}", registrar=registrar,
                                           tone_hz=TONES[name])
    for phone in phones.values():
        await phone.wait_registered()
    for name, phone in phones.items():
        await phone.dial(f"sip:{number}@127.0.0.1:{sip_port(hub)}")
        await phone.wait_event("CALL_ESTABLISHED", timeout=scaled(10))
        ESTABLISHED[name] = time.monotonic()
    ESTABLISHED["_all"] = time.monotonic()
    return phones


def _session(hub: Hub, number: str):  # type: ignore[no-untyped-def]
    return hub.gateway.rooms.sessions[number]


def _leg(hub: Hub, number: str, peer: str) -> str:
    return next(m.leg.id for m in _session(hub, number).members.values() if m.peer == peer)


async def test_three_phones_mix_minus_relations_and_recording(
        hub: Hub, phone_factory: PhoneFactory, tmp_path: Path) -> None:
    hub.store.add_room("800", name="指挥大厅", record=True)
    phones = await _room_call(hub, phone_factory, "800")
    session = _session(hub, "800")
    assert len(session.members) == 3
    started = ESTABLISHED["_all"]
    mixer = session.media.mixer
    a, b, c = (_leg(hub, "800", n) for n in ("alice", "bob", "carol"))
    windows: list[tuple[str, float, float]] = []

    async def phase(name: str, seconds: float = 3.0) -> None:
        # The phones' recordings are placed on the test's clock from the moment each call
        # was established: wide guard bands keep a loaded machine's drift out of a window.
        begin = time.monotonic() - started
        await asyncio.sleep(seconds)
        windows.append((name, begin + 1.0, time.monotonic() - started - 0.4))

    await phase("all")
    mixer.set_muted(a, True)
    await phase("alice muted")
    mixer.set_muted(a, False)
    mixer.set_deaf(b, True)
    await phase("bob deaf")
    mixer.set_deaf(b, False)
    mixer.set_whisper(c, {a})
    await phase("carol whispers to alice")
    mixer.set_whisper(c, set())
    mixer.set_monitor(c, True)
    await phase("carol monitors")
    mixer.set_monitor(c, False)
    recording_id = session.recording_id
    for phone in phones.values():
        await phone.hangup()
        await phone.wait_event("CALL_CLOSED", timeout=scaled(10))
    await asyncio.sleep(0.3)
    assert "800" not in hub.gateway.rooms.sessions, "the room session ends with its last member"
    for phone in phones.values():
        await phone.stop()

    def hears(listener: str, window: str) -> dict[str, float]:
        _, begin, end = next(w for w in windows if w[0] == window)
        return heard_between(phones[listener], begin, end)

    def loud(result: dict[str, float], who: str) -> bool:
        return result[who] > LOUD

    for name in TONES:
        result = hears(name, "all")
        others = [o for o in TONES if o != name]
        assert all(loud(result, o) for o in others), (name, result)
        assert not loud(result, name), (name, result)
    for listener in ("bob", "carol"):
        assert not loud(hears(listener, "alice muted"), "alice")
    assert loud(hears("alice", "alice muted"), "bob"), "a muted phone still hears"
    deaf = hears("bob", "bob deaf")
    assert not loud(deaf, "alice") and not loud(deaf, "carol"), deaf
    assert loud(hears("alice", "bob deaf"), "bob"), "a deaf phone is still heard"
    assert loud(hears("alice", "carol whispers to alice"), "carol")
    assert not loud(hears("bob", "carol whispers to alice"), "carol")
    mon = hears("carol", "carol monitors")
    assert loud(mon, "alice") and loud(mon, "bob")
    assert not loud(hears("alice", "carol monitors"), "carol")
    assert not loud(hears("bob", "carol monitors"), "carol")

    # The room's recording: one playable file with all three tones in it.
    assert recording_id is not None
    await asyncio.to_thread(hub.disk.wait, recording_id, 30.0)
    out = tmp_path / "room.wav"
    await asyncio.to_thread(export, hub.recordings, recording_id, out)
    rate, samples = read_wav(out)
    assert samples.size / rate > 8.0
    mix = levels(samples[: int(2.5 * rate)], rate)
    assert all(v > LOUD for v in mix.values()), mix
    info = hub.recordings.get(recording_id)
    assert {p.peer for p in info.participants} == set(TONES)


async def test_room_with_pin_admits_after_the_right_digits(
        hub: Hub, phone_factory: PhoneFactory) -> None:
    hub.store.add_room("801", pin="4321")
    phones = await _room_call(hub, phone_factory, "801", names=("alice", "bob"))
    session = _session(hub, "801")
    assert not any(m.admitted for m in session.members.values())
    alice = phones["alice"]
    for digit in "4321#":
        await alice.command("sndcode", digit, check=False)
        await asyncio.sleep(0.25)
    deadline = time.monotonic() + scaled(5)
    while time.monotonic() < deadline:
        if any(m.admitted and m.peer == "alice" for m in session.members.values()):
            break
        await asyncio.sleep(0.1)
    members = {m.peer: m.admitted for m in session.members.values()}
    assert members == {"alice": True, "bob": False}


async def test_locked_room_admits_nobody_new(hub: Hub, phone_factory: PhoneFactory) -> None:
    hub.store.add_room("802")
    phones = await _room_call(hub, phone_factory, "802", names=("alice",))
    registrar = ("127.0.0.1", sip_port(hub))
    bob = await phone_factory("bob", password="pw-bob", registrar=registrar)
    await bob.wait_registered()
    locked = hub.calls.lock("802", True)
    assert locked.locked is True
    await bob.dial(f"sip:802@127.0.0.1:{sip_port(hub)}")
    await bob.wait_event("CALL_CLOSED", timeout=scaled(10))
    assert [m.peer for m in _session(hub, "802").members.values()] == ["alice"]
    hub.calls.lock("802", False)
    await bob.dial(f"sip:802@127.0.0.1:{sip_port(hub)}")
    await bob.wait_event("CALL_ESTABLISHED", timeout=scaled(10))
    assert sorted(m.peer for m in _session(hub, "802").members.values()) == ["alice", "bob"]
    await phones["alice"].hangup()
    await bob.hangup()

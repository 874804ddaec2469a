"""Dispatch calls placed by the hub, with real phones (baresip, auto-answer).

Group call: five phones ring at once, the answered ones meet in one bridge and hear
each other; an offline member's outcome says so. Roll call: each member confirms with
1. Barge, monitor and whisper into a phone-to-phone call, proven by what each phone
heard (FFT of its recording).
"""

import asyncio
import time

import numpy as np
import pytest

from bridges.events import Event
from dispatch.calls import CallChanged, CallInvalid
from hub.server import Hub
from tests.integration.conftest import sip_port
from tests.peers import scaled
from tests.peers.audio import read_wav
from tests.peers.baresip import BaresipPhone, PhoneFactory

pytestmark = pytest.mark.peers

TONES = {"alice": 440.0, "bob": 1000.0, "carol": 1800.0, "dave": 2400.0, "erin": 700.0}
LOUD = 0.02


def amplitude(samples: np.ndarray, rate: int, hz: float) -> float:
    window = np.hanning(samples.size)
    spectrum = np.abs(np.fft.rfft(samples * window)) * 2 / window.sum()
    bins = np.fft.rfftfreq(samples.size, 1 / rate)
    return float(spectrum[np.abs(bins - hz) < 20].max())


def heard(phone: BaresipPhone, start: float = 0.5, end: float | None = None) -> dict[str, float]:
    rate, samples = read_wav(phone.dec_wavs()[-1])
    part = samples[int(start * rate): None if end is None else int(end * rate)]
    return {name: amplitude(part, rate, hz) for name, hz in TONES.items()}


async def _phones(hub: Hub, factory: PhoneFactory, names: list[str]) -> dict[str, BaresipPhone]:
    registrar = ("127.0.0.1", sip_port(hub))
    phones = {n: await factory(n, password=f"pw-{n}", registrar=registrar, tone_hz=TONES[n])
              for n in names}
    for phone in phones.values():
        await phone.wait_registered()
    return phones


async def _until(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + scaled(timeout)
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_group_call_rings_all_and_reports_each_outcome(
        hub: Hub, phone_factory: PhoneFactory) -> None:
    phones = await _phones(hub, phone_factory, ["alice", "bob", "carol", "dave"])
    events: list[Event] = []
    hub.bus.subscribe(events.append)
    call = hub.calls.create(["alice", "bob", "carol", "dave", "erin"], "group", operator="op1")
    await _until(lambda: sum(1 for leg in call.legs.values()
                             if leg.out and leg.out.outcome.value != "pending") == 5)
    outcomes = {leg.target: leg.out.outcome.value for leg in call.legs.values() if leg.out}
    assert outcomes == {"alice": "answered", "bob": "answered", "carol": "answered",
                        "dave": "answered", "erin": "unreachable"} or outcomes["erin"] in (
        "unreachable", "no-answer"), outcomes
    for phone in phones.values():
        await phone.wait_event("CALL_ESTABLISHED", timeout=scaled(10))
    await asyncio.sleep(scaled(2.5))
    hub.calls.end(call.id)
    for phone in phones.values():
        await phone.wait_event("CALL_CLOSED", timeout=scaled(10))
        await phone.stop()
    # Everyone heard the other three members, and not themselves.
    for name, phone in phones.items():
        levels = heard(phone, 0.8)
        for other in phones:
            if other == name:
                assert levels[other] < LOUD, (name, levels)
            else:
                assert levels[other] > LOUD, (name, other, levels)
    snapshots = [e.call for e in events if isinstance(e, CallChanged)]
    assert snapshots[-1]["state"] == "ended"
    assert not hub.engine.bridges


async def test_roll_call_each_member_confirms_with_1(
        hub: Hub, phone_factory: PhoneFactory) -> None:
    phones = await _phones(hub, phone_factory, ["alice", "bob"])

    async def confirm(phone: BaseException | BaresipPhone) -> None:
        assert isinstance(phone, BaresipPhone)
        await phone.wait_event("CALL_ESTABLISHED", timeout=scaled(15))
        await asyncio.sleep(0.5)
        await phone.command("sndcode", "1", check=False)

    confirmer = asyncio.ensure_future(confirm(phones["alice"]))
    call = hub.calls.create(["alice", "bob", "erin"], "rollcall")
    await confirmer
    # bob answers but never presses a key: after the confirmation time he is marked so.
    hub_mod = __import__("dispatch.calls", fromlist=["ROLLCALL_CONFIRM_S"])
    assert hub_mod.ROLLCALL_CONFIRM_S <= 15
    await _until(lambda: call.current is None and not call.queue, timeout=40)
    table = {leg.target: (leg.out.outcome.value if leg.out else None, leg.confirmed)
             for leg in call.legs.values()}
    assert table["alice"] == ("answered", True)
    assert table["bob"] == ("answered", False)
    assert table["erin"][0] in ("unreachable", "no-answer") and table["erin"][1] is None
    hub.calls.end(call.id)


async def test_barge_monitor_whisper_into_a_phone_call(
        hub: Hub, phone_factory: PhoneFactory) -> None:
    phones = await _phones(hub, phone_factory, ["alice", "bob", "carol", "dave", "erin"])
    alice, bob = phones["alice"], phones["bob"]
    await alice.dial(f"sip:bob@127.0.0.1:{sip_port(hub)}")
    await bob.wait_event("CALL_ESTABLISHED", timeout=scaled(10))
    [sip_call] = hub.gateway.calls.values()
    # carol monitors, dave barges in, erin whispers to alice.
    hub.calls.join(sip_call.id, "monitor", "carol")
    hub.calls.join(sip_call.id, "barge", "dave")
    hub.calls.join(sip_call.id, "whisper", "erin", leg_id=sip_call.a_leg.id)
    for name in ("carol", "dave", "erin"):
        await phones[name].wait_event("CALL_ESTABLISHED", timeout=scaled(10))
    await asyncio.sleep(scaled(3))
    call_view = hub.calls.get(sip_call.id)
    assert {leg.relation.value for leg in call_view.legs.values()} == {
        "monitor", "barge", "whisper"}
    with pytest.raises(CallInvalid):
        hub.calls.join(sip_call.id, "whisper", "carol")
    await alice.hangup()
    for phone in phones.values():
        await phone.wait_event("CALL_CLOSED", timeout=scaled(10))
    # carol and dave's legs end with the call's bridge: the hub released them.
    for phone in phones.values():
        await phone.stop()
    # Judge the steady part: all five had joined by then.
    a, b, c, d, e = (heard(phones[n], 1.0, 3.0) for n in ("alice", "bob", "carol", "dave",
                                                          "erin"))
    assert c["alice"] > LOUD and c["bob"] > LOUD and c["dave"] > LOUD, c  # monitor hears all
    assert a["carol"] < LOUD and b["carol"] < LOUD and d["carol"] < LOUD  # nobody hears it
    assert a["dave"] > LOUD and b["dave"] > LOUD, (a, b)                   # barge: heard
    assert d["alice"] > LOUD and d["bob"] > LOUD, d                        # and hears
    assert a["erin"] > LOUD, a                                            # whisper reaches
    assert b["erin"] < LOUD and d["erin"] < LOUD, (b, d)                  # only its target


async def test_unreachable_endpoint_rolls_to_the_persons_next_one(
        hub: Hub, phone_factory: PhoneFactory) -> None:
    from dispatch.directory import EndpointSpec

    phones = await _phones(hub, phone_factory, ["alice"])
    # 值班长 (the duty chief): desk phone erin (offline) first, then alice's phone.
    hub.directory.create_person("值班长", endpoints=[EndpointSpec("sip", "erin"),
                                                   EndpointSpec("sip", "alice")])
    call = hub.calls.create(["值班长"], "single")
    await phones["alice"].wait_event("CALL_ESTABLISHED", timeout=scaled(10))
    [leg] = [leg.as_dict() for leg in call.legs.values()]
    assert leg["target"] == "值班长" and leg["endpoint"] == "alice"
    assert leg["attempts"] == 2 and leg["outcome"] == "answered"
    hub.calls.end(call.id)
    await phones["alice"].wait_event("CALL_CLOSED", timeout=scaled(10))

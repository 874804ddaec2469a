"""media.dtmf: RFC 4733 payloads, one digit per press whatever the network, sender packets."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.dtmf import (
    DtmfDigit,
    DtmfPacket,
    DtmfReceiver,
    DtmfSender,
    TelephoneEvent,
    build_telephone_event,
    digit_to_event,
    event_to_digit,
    parse_telephone_event,
)
from media.errors import DtmfError, MediaError


def test_payload_parse_and_build() -> None:
    # RFC 4733 figure: event 5, E bit, volume 10, duration 800.
    data = bytes([0x05, 0x8A, 0x03, 0x20])
    event = parse_telephone_event(data)
    assert event == TelephoneEvent(event=5, end=True, volume=10, duration=800)
    assert event.digit == "5"
    assert build_telephone_event(5, end=True, volume=10, duration=800) == data
    # The reserved R bit is ignored; extra octets (RFC 2198 redundancy is not ours) too.
    assert parse_telephone_event(bytes([11, 0x40 | 0x3F, 0xFF, 0xFF, 0xAA])) == TelephoneEvent(
        11, False, 63, 65535
    )
    assert parse_telephone_event(bytes([16, 0, 0, 0])).digit is None  # flash


def test_payload_errors() -> None:
    with pytest.raises(DtmfError, match="3 bytes, need 4") as info:
        parse_telephone_event(b"\x01\x02\x03")
    assert isinstance(info.value, MediaError) and isinstance(info.value, ValueError)
    with pytest.raises(DtmfError, match="event code 256"):
        build_telephone_event(256, end=False, volume=0, duration=0)
    with pytest.raises(DtmfError, match="volume 64"):
        build_telephone_event(1, end=False, volume=64, duration=0)
    with pytest.raises(DtmfError, match="duration 65536"):
        build_telephone_event(1, end=False, volume=0, duration=65536)


def test_digit_mapping() -> None:
    assert [digit_to_event(d) for d in "0123456789*#ABCD"] == list(range(16))
    assert digit_to_event("a") == 12
    assert event_to_digit(11) == "#" and event_to_digit(16) is None
    for bad in ("E", "", "12"):
        with pytest.raises(DtmfError, match="not a DTMF digit"):
            digit_to_event(bad)


# --------------------------------------------------------------------------- sender


def test_sender_packets() -> None:
    packets = DtmfSender().packets("5", 100, 1000)
    durations = [parse_telephone_event(p.payload).duration for p in packets]
    assert durations == [160, 320, 480, 640, 800, 800, 800]
    assert [p.end for p in packets] == [False] * 4 + [True] * 3
    assert [p.marker for p in packets] == [True] + [False] * 6
    assert {p.timestamp for p in packets} == {1000}
    # One report per 20 ms as the key stays down; the end repeated at the same pace.
    assert [round(p.offset * 1000) for p in packets] == [20, 40, 60, 80, 100, 120, 140]
    assert all(parse_telephone_event(p.payload).volume == 10 for p in packets)


def test_sender_short_press_and_options() -> None:
    packets = DtmfSender(interval_ms=50, volume=7, end_repeats=2).packets("#", 30, 0)
    assert [(parse_telephone_event(p.payload).duration, p.end) for p in packets] == [
        (240, True),
        (240, True),
    ]
    assert packets[0].marker and not packets[1].marker
    with pytest.raises(DtmfError, match="positive"):
        DtmfSender().packets("1", 0, 0)
    with pytest.raises(DtmfError, match="not a DTMF digit"):
        DtmfSender().packets("X", 100, 0)
    with pytest.raises(DtmfError, match="volume 99"):
        DtmfSender(volume=99)


def test_long_press_is_segmented_and_rejoined() -> None:
    # At the 48 kHz telephone-event clock, 0xFFFF units is only 1.365 s.
    sender = DtmfSender(48000)
    packets = sender.packets("1", 3000, 2**32 - 1000)
    segments = sorted({p.timestamp for p in packets})
    assert segments == sorted(
        {2**32 - 1000, (2**32 - 1000 + 0xFFFF) % 2**32, (2**32 - 1000 + 2 * 0xFFFF) % 2**32}
    )
    assert sum(p.marker for p in packets) == 1
    assert sum(p.end for p in packets) == 3
    assert max(parse_telephone_event(p.payload).duration for p in packets) == 0xFFFF
    assert [p.offset for p in packets] == sorted(p.offset for p in packets)
    receiver = DtmfReceiver(48000)
    digits = [d for p in packets for d in receiver.feed(p.payload, p.timestamp, p.offset)]
    assert digits == [DtmfDigit("1", 3000, 2**32 - 1000, 10, True)]


# --------------------------------------------------------------------------- receiver


def play(receiver: DtmfReceiver, packets: list[DtmfPacket], start: float = 0.0) -> list[DtmfDigit]:
    return [d for p in packets for d in receiver.feed(p.payload, p.timestamp, start + p.offset)]


def test_one_digit_per_press_despite_retransmissions() -> None:
    sender, receiver = DtmfSender(), DtmfReceiver()
    digits = play(receiver, sender.packets("7", 120, 5000))
    assert digits == [DtmfDigit("7", 120, 5000, 10, True)]
    assert receiver.pressed is None


def test_same_digit_twice_is_two_presses() -> None:
    sender, receiver = DtmfSender(), DtmfReceiver()
    packets = sender.packets("3", 100, 0) + sender.packets("3", 100, 2400)
    assert [d.digit for d in play(receiver, packets)] == ["3", "3"]


def test_lost_end_packets_closed_by_next_event() -> None:
    sender, receiver = DtmfSender(), DtmfReceiver()
    first = [p for p in sender.packets("1", 100, 0) if not p.end]
    second = sender.packets("2", 80, 1600)
    digits = play(receiver, first + second)
    assert digits == [DtmfDigit("1", 80, 0, 10, False), DtmfDigit("2", 80, 1600, 10, True)]


def test_lost_end_packets_closed_by_timeout() -> None:
    sender, receiver = DtmfSender(), DtmfReceiver(timeout=0.5)
    play(receiver, [p for p in sender.packets("9", 200, 0) if not p.end])
    assert receiver.pressed == "9"
    assert receiver.poll(0.6) is None  # last update at 0.18 s: not silent long enough
    assert receiver.poll(0.7) == DtmfDigit("9", 180, 0, 10, False)
    assert receiver.poll(5.0) is None


def test_only_end_packets_arrive() -> None:
    sender, receiver = DtmfSender(), DtmfReceiver()
    ends = [p for p in sender.packets("*", 60, 99) if p.end]
    assert play(receiver, ends) == [DtmfDigit("*", 60, 99, 10, True)]


def test_late_update_after_end_is_ignored() -> None:
    sender, receiver = DtmfSender(), DtmfReceiver()
    packets = sender.packets("4", 100, 0)
    reordered = packets[:2] + packets[3:] + [packets[2]]
    assert len(play(receiver, reordered)) == 1
    assert receiver.pressed is None


def test_flash() -> None:
    receiver = DtmfReceiver()
    assert play(receiver, DtmfSender().packets("!", 100, 0))[0].digit == "!"


def test_bad_payload_raises_dtmf_error() -> None:
    with pytest.raises(DtmfError):
        DtmfReceiver().feed(b"\x01", 0, 0.0)


@settings(max_examples=80, deadline=None)
@given(
    digits=st.lists(st.sampled_from("0123456789*#ABCD"), min_size=1, max_size=6),
    seed=st.integers(0, 2**32 - 1),
    loss=st.floats(0.0, 0.5),
)
def test_exactly_one_digit_per_press_on_a_bad_network(
    digits: list[str], seed: int, loss: float
) -> None:
    """Loss (never of a whole press), duplication, local reordering: each digit comes out once."""
    rng = random.Random(seed)
    sender = DtmfSender()
    stream: list[tuple[float, DtmfPacket]] = []
    timestamp = 0
    start = 0.0
    for digit in digits:
        packets = sender.packets(digit, rng.choice([40, 100, 250]), timestamp)
        kept = [p for p in packets if rng.random() >= loss] or [packets[-1]]
        for p in kept:
            arrival = start + p.offset + rng.uniform(0, 0.03)  # reorders within ~30 ms
            stream.append((arrival, p))
            if rng.random() < 0.2:
                stream.append((arrival + 0.001, p))  # duplicated by the network
        timestamp += 8000  # a second apart
        start += 1.0
    stream.sort(key=lambda item: item[0])
    receiver = DtmfReceiver()
    got: list[str] = []
    for arrival, p in stream:
        got += [d.digit for d in receiver.feed(p.payload, p.timestamp, arrival)]
    closed = receiver.poll(start + 1.0)
    if closed is not None:
        got.append(closed.digit)
    assert got == digits

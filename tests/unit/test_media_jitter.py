"""media.jitter: a simulated network (reorder, duplicates, loss, bursts, drift) against exact stats.

Every scenario is a list of packets with arrival times, replayed against a mixer
that ticks every 20 ms: before each tick, the packets that have arrived are put,
then the tick's frame is taken. Packet payloads carry their index, so the played
order can be read back. Packet i is sent at 20 i ms and arrives 53 ms later, so
with the default 20 ms minimum delay the first packet plays on the tick at 60 ms.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.jitter import Frame, FrameKind, JitterBuffer

TICK = 0.02


@dataclass(frozen=True)
class Pkt:
    index: int
    seq: int
    ts: int
    arrival: float
    ssrc: int = 1
    marker: bool = False


def stream(
    count: int,
    *,
    first: int = 0,
    period: float = TICK,
    transit: float = 0.053,
    seq0: int = 1000,
    ts0: int = 160_000,
    ssrc: int = 1,
) -> list[Pkt]:
    return [
        Pkt(
            index=first + i,
            seq=(seq0 + i) & 0xFFFF,
            ts=(ts0 + 160 * i) & 0xFFFFFFFF,
            arrival=transit + i * period,
            ssrc=ssrc,
            marker=i == 0,
        )
        for i in range(count)
    ]


def run(jb: JitterBuffer, packets: list[Pkt], ticks: int) -> tuple[list[Frame], list[bool]]:
    ordered = sorted(packets, key=lambda p: p.arrival)
    frames: list[Frame] = []
    accepted: list[bool] = []
    k = 0
    for tick in range(ticks):
        now = tick * TICK
        while k < len(ordered) and ordered[k].arrival <= now:
            p = ordered[k]
            k += 1
            accepted.append(
                jb.put(
                    p.seq, p.ts, p.index.to_bytes(4, "big"), p.arrival, ssrc=p.ssrc, marker=p.marker
                )
            )
        frames.append(jb.get(now))
    return frames, accepted


def played(frames: list[Frame]) -> str:
    """Compact picture: the index of each AUDIO frame, M for MISSING, . for IDLE."""
    out = []
    for f in frames:
        if f.kind is FrameKind.AUDIO:
            out.append(str(int.from_bytes(f.payload, "big")))
        else:
            out.append("M" if f.missing else ".")
    return " ".join(out)


def seq_of(start: int, stop: int) -> str:
    return " ".join(str(i) for i in range(start, stop))


def counts(jb: JitterBuffer) -> tuple[int, int, int, int, int, int, int]:
    s = jb.stats
    return (s.received, s.duplicates, s.late, s.lost, s.underruns, s.dropped, s.resets)


# --------------------------------------------------------------------------- basics


def test_clean_stream_then_end() -> None:
    jb = JitterBuffer(8000, 160)
    frames, accepted = run(jb, stream(30), 50)
    # Three idle ticks before the first packet has waited; then every packet in
    # order; when the stream stops, max_delay (200 ms) of underruns, then idle.
    assert played(frames) == ". . . " + seq_of(0, 30) + " M" * 10 + " ." * 7
    assert all(accepted)
    assert counts(jb) == (30, 0, 0, 0, 10, 0, 0)
    assert jb.stats.jitter_ms == pytest.approx(0.0, abs=1e-9)
    assert 0 < jb.stats.delay_ms < 20 and jb.stats.target_ms == 20
    audio = [f for f in frames if f.kind is FrameKind.AUDIO]
    assert [f.timestamp for f in audio[:3]] == [160_000, 160_160, 160_320]
    assert [f.sequence_number for f in audio[:3]] == [1000, 1001, 1002]
    assert audio[0].marker and not audio[1].marker
    missing = [f for f in frames if f.missing]
    assert missing[0].timestamp == 160_000 + 30 * 160  # the slot it waits on
    assert not jb.playing


def test_idle_before_anything() -> None:
    jb = JitterBuffer(8000, 160)
    assert jb.get(0.0).kind is FrameKind.IDLE
    assert jb.get(0.02).timestamp is None


def test_duplicates_refused() -> None:
    packets = stream(20)
    copies = [replace(p, arrival=p.arrival + 0.001) for p in packets]
    jb = JitterBuffer(8000, 160)
    frames, accepted = run(jb, packets + copies, 25)
    assert played(frames) == ". . . " + seq_of(0, 20) + " M M"
    assert accepted.count(False) == 20
    assert counts(jb)[:2] == (20, 20)


def test_duplicate_of_a_played_packet() -> None:
    packets = stream(20)
    packets.append(replace(packets[3], arrival=0.3))  # long after it was played
    jb = JitterBuffer(8000, 160)
    run(jb, packets, 25)
    assert counts(jb)[:3] == (20, 1, 0)  # a duplicate, not a late packet


def test_sequence_and_timestamp_wrap() -> None:
    jb = JitterBuffer(8000, 160)
    frames, _ = run(jb, stream(40, seq0=65530, ts0=2**32 - 480), 43)
    assert played(frames) == ". . . " + seq_of(0, 40)
    audio = frames[3:10]
    assert [f.sequence_number for f in audio] == [65530, 65531, 65532, 65533, 65534, 65535, 0]
    assert [f.timestamp for f in audio] == [
        2**32 - 480,
        2**32 - 320,
        2**32 - 160,
        0,
        160,
        320,
        480,
    ]
    assert counts(jb) == (40, 0, 0, 0, 0, 0, 0)


# --------------------------------------------------------------------------- loss, lateness, order


def test_losses_cost_one_concealed_frame_each() -> None:
    packets = [p for p in stream(40) if p.index not in (10, 20, 21)]
    jb = JitterBuffer(8000, 160)
    frames, _ = run(jb, packets, 43)
    # With one packet buffered, a loss first looks like an underrun; when the next
    # packet lands the tick is re-counted as the loss it was, and no delay is added.
    expected = ". . . " + seq_of(0, 10) + " M " + seq_of(11, 20) + " M M " + seq_of(22, 40)
    assert played(frames) == expected
    assert counts(jb) == (37, 0, 0, 3, 0, 0, 0)
    missing = [f.timestamp for f in frames if f.missing]
    # The second of the double loss was an underrun tick at the time: it names the
    # slot it was waiting for.
    assert missing == [160_000 + 160 * 10, 160_000 + 160 * 20, 160_000 + 160 * 20]


def test_late_packet_refused_and_target_grows() -> None:
    packets = stream(40)
    packets[15] = replace(packets[15], arrival=packets[15].arrival + 0.1)
    jb = JitterBuffer(8000, 160)
    frames, accepted = run(jb, packets, 43)
    assert played(frames) == ". . . " + seq_of(0, 15) + " M " + seq_of(16, 40)
    assert accepted.count(False) == 1
    assert counts(jb) == (39, 0, 1, 1, 0, 0, 0)
    assert jb.stats.target_ms > 40  # jitter estimate plus a frame for the late packet


def test_reordering_beyond_the_buffer_adds_a_frame_of_delay() -> None:
    packets = stream(40)
    packets[5] = replace(packets[5], arrival=packets[5].arrival + 0.025)  # after packet 6
    jb = JitterBuffer(8000, 160)
    frames, _ = run(jb, packets, 44)
    # Packet 5 is not there on its tick and nothing later is either: underrun, and
    # both are played in order when they land. Nothing lost, nothing late.
    assert played(frames) == ". . . " + seq_of(0, 5) + " M " + seq_of(5, 40)
    assert counts(jb) == (40, 0, 0, 0, 1, 0, 0)


def test_reordering_within_the_buffer_is_invisible() -> None:
    packets = stream(40, transit=0.013)
    for i in range(2, 38, 4):  # swap pairs: i+1 arrives 5 ms before i
        a, b = packets[i], packets[i + 1]
        packets[i], packets[i + 1] = (
            replace(a, arrival=b.arrival),
            replace(b, arrival=a.arrival + 0.015),
        )
    jb = JitterBuffer(8000, 160, min_delay_ms=60)
    frames, _ = run(jb, packets, 43)
    audio = [int.from_bytes(f.payload, "big") for f in frames if f.kind is FrameKind.AUDIO]
    assert audio == list(range(40))
    assert counts(jb)[2:] == (0, 0, 0, 0, 0)


def test_jitter_burst_grows_delay_then_drains() -> None:
    packets = stream(120)
    # The network freezes: packets 20-29 are delivered together when 29 would be.
    for i in range(20, 30):
        packets[i] = replace(packets[i], arrival=packets[29].arrival)
    jb = JitterBuffer(8000, 160)
    frames, _ = run(jb, packets, 123)
    audio = [int.from_bytes(f.payload, "big") for f in frames if f.kind is FrameKind.AUDIO]
    # The freeze is waited out (nine underruns), not turned into losses and late packets.
    assert played(frames)[: len(". . . " + seq_of(0, 20))] == ". . . " + seq_of(0, 20)
    assert played(frames).count("M") == 9
    assert audio[20:30] == list(range(20, 30))
    s = jb.stats
    assert (s.received, s.late, s.lost, s.underruns) == (120, 0, 0, 9)
    # The 180 ms it added drains by one dropped frame per half second, never in a gulp.
    assert s.dropped == 4
    assert len(audio) + s.dropped + s.buffered == 120
    assert audio == sorted(audio)
    assert s.target_ms > 20  # the burst left its mark on the jitter estimate


@pytest.mark.parametrize(
    ("period_factor", "expected"),
    [
        # Sender 0.1 % fast: one frame too many every 20 s, dropped to keep the delay.
        (0.999, (3000, 0, 0, 0, 0, 2, 0)),
        # Sender 0.1 % slow: one frame too few every 20 s, an underrun fills it.
        (1.001, (2994, 0, 0, 0, 3, 0, 0)),
    ],
)
def test_clock_drift(period_factor: float, expected: tuple[int, ...]) -> None:
    jb = JitterBuffer(8000, 160)
    delays = []
    packets = stream(3100, period=TICK * period_factor)
    ordered = sorted(packets, key=lambda p: p.arrival)
    k = 0
    for tick in range(3000):
        now = tick * TICK
        while k < len(ordered) and ordered[k].arrival <= now:
            p = ordered[k]
            k += 1
            jb.put(p.seq, p.ts, b"x", p.arrival, ssrc=1)
        jb.get(now)
        delays.append(jb.stats.delay_ms)
    assert counts(jb) == expected
    assert max(delays[100:]) < 40  # drift never builds up a backlog


def test_drift_with_network_jitter() -> None:
    rng = np.random.default_rng(5)
    for factor in (0.999, 1.001):
        packets = [
            replace(p, arrival=p.arrival + abs(float(rng.normal(0, 0.005))))
            for p in stream(1600, period=TICK * factor)
        ]
        jb = JitterBuffer(8000, 160)
        run(jb, packets, 1500)
        s = jb.stats
        assert s.late == 0 and s.lost == 0
        assert s.underruns <= 4 and s.dropped <= 3
        assert 2 < s.jitter_ms < 5
        assert 20 < s.target_ms < 40


# --------------------------------------------------------------------------- resynchronisation


def test_ssrc_change_resets() -> None:
    first = stream(20)
    second = stream(20, first=100, transit=0.453, seq0=7, ts0=99, ssrc=2)
    jb = JitterBuffer(8000, 160)
    frames, accepted = run(jb, first + second, 48)
    # The new source is scheduled afresh on its first packet: no gap, no overlap.
    assert played(frames) == ". . . " + seq_of(0, 20) + " " + seq_of(100, 120) + " M M M M M"
    assert all(accepted)
    assert counts(jb) == (40, 0, 0, 0, 5, 0, 1)


def test_marker_starts_a_new_talk_spurt() -> None:
    first = stream(10)
    # 60 ms of silence: the next spurt's timestamps are 13 frames on, marker set.
    second = stream(10, first=100, transit=0.313, seq0=1010, ts0=160_000 + 13 * 160)
    jb = JitterBuffer(8000, 160)
    frames, _ = run(jb, first + second, 30)
    # The silence looks like an underrun until the marker says a spurt begins; the
    # new spurt is then scheduled afresh, not counted as three lost packets.
    assert played(frames) == ". . . " + seq_of(0, 10) + " M M M " + seq_of(100, 110) + " M M M M"
    assert counts(jb) == (20, 0, 0, 0, 7, 0, 0)


def test_long_silence_without_marker() -> None:
    first = stream(10)
    second = [
        replace(p, marker=False)
        for p in stream(10, first=100, transit=1.253, seq0=1010, ts0=160_000 + 60 * 160)
    ]
    jb = JitterBuffer(8000, 160)
    frames, _ = run(jb, first + second, 75)
    # Ten underruns (max_delay), then idle; the next spurt starts like the first.
    picture = ". . . " + seq_of(0, 10) + " M" * 10 + " ." * 40 + " " + seq_of(100, 110) + " M M"
    assert played(frames) == picture
    assert counts(jb) == (20, 0, 0, 0, 12, 0, 0)


def test_timestamp_jump_forward_is_followed_not_waited_for() -> None:
    packets = stream(30)
    packets[10:] = [replace(p, ts=p.ts + 80_000) for p in packets[10:]]  # +10 s, no marker
    jb = JitterBuffer(8000, 160)
    frames, _ = run(jb, packets, 33)
    assert played(frames) == ". . . " + seq_of(0, 30)
    assert counts(jb) == (30, 0, 0, 0, 0, 0, 0)
    assert jb.stats.target_ms < 60  # the jump is not mistaken for 10 s of jitter


def test_timestamp_jump_back_resets() -> None:
    packets = stream(30)
    packets[10:] = [replace(p, ts=p.ts - 80_000) for p in packets[10:]]
    jb = JitterBuffer(8000, 160)
    frames, accepted = run(jb, packets, 33)
    assert played(frames) == ". . . " + seq_of(0, 30)
    assert all(accepted)
    assert counts(jb) == (30, 0, 0, 0, 0, 0, 1)


def test_sequence_jump_resets() -> None:
    packets = stream(30)
    packets[10:] = [replace(p, seq=(p.seq + 20_000) & 0xFFFF) for p in packets[10:]]
    jb = JitterBuffer(8000, 160)
    frames, _ = run(jb, packets, 33)
    assert played(frames) == ". . . " + seq_of(0, 30)
    assert counts(jb) == (30, 0, 0, 0, 0, 0, 1)


def test_backlog_beyond_max_delay_is_dropped() -> None:
    packets = [replace(p, arrival=0.7) for p in stream(30)]  # 600 ms delivered at once
    jb = JitterBuffer(8000, 160)
    frames, _ = run(jb, packets, 50)
    # Only max_delay (200 ms) before the newest packet is kept: the last 11. The
    # burst's jitter raised the target to 71 ms, so they start 51 ms after landing,
    # and, waiting ever longer, lose one more frame to the shrinking.
    assert played(frames) == ". " * 38 + "19 20 21 22 23 24 25 27 28 29 M M"
    assert counts(jb) == (30, 0, 0, 0, 2, 20, 0)


def test_misaligned_timestamps_are_snapped() -> None:
    # A sender whose new spurt is off the previous grid by 40 samples.
    first = stream(5)
    second = [
        replace(p, ts=p.ts + 40, marker=False)
        for p in stream(5, first=5, transit=0.153, seq0=1005, ts0=160_800)
    ]
    jb = JitterBuffer(8000, 160)
    frames, _ = run(jb, first + second, 15)
    assert played(frames) == ". . . " + seq_of(0, 10) + " M M"


def test_opus_clock() -> None:
    jb = JitterBuffer(48000, 960)
    for i in range(5):
        assert jb.put(i, i * 960, b"o", 0.01 + i * TICK)
    frames = [jb.get(t * TICK) for t in range(1, 6)]
    assert [f.timestamp for f in frames] == [0, 960, 1920, 2880, 3840]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="positive"):
        JitterBuffer(0, 160)
    with pytest.raises(ValueError, match="min_delay_ms <= max_delay_ms"):
        JitterBuffer(8000, 160, min_delay_ms=100, max_delay_ms=50)


# --------------------------------------------------------------------------- invariants


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 59),  # packet index (repeats are duplicates)
            st.floats(0.0, 0.3),  # extra network delay
        ),
        max_size=80,
    )
)
def test_any_arrival_pattern_keeps_the_books(arrivals: list[tuple[int, float]]) -> None:
    base = stream(60)
    packets = [replace(base[i], arrival=base[i].arrival + extra) for i, extra in arrivals]
    jb = JitterBuffer(8000, 160)
    frames, accepted = run(jb, packets, 90)
    s = jb.stats
    assert s.received + s.duplicates + s.late == len(packets)
    audio = [int.from_bytes(f.payload, "big") for f in frames if f.kind is FrameKind.AUDIO]
    assert audio == sorted(set(audio))  # in order, never twice
    assert len(audio) + s.dropped + s.buffered == s.received
    assert sum(f.missing for f in frames) == s.lost + s.underruns
    assert 20 <= s.target_ms <= 200

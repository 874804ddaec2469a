"""media.rtcp: RFC 3550 A.1/A.3/A.8 statistics, builders byte for byte, parser errors, fuzzing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.errors import MediaError, RtcpError, RtpError
from media.rtcp import (
    BYE,
    RR,
    SDES,
    SR,
    Bye,
    ReceiverReport,
    ReceiverStats,
    ReportBlock,
    Sdes,
    SdesChunk,
    SenderReport,
    Unknown,
    build_bye,
    build_compound,
    build_rr,
    build_sdes,
    build_sr,
    ntp_from_unix,
    ntp_middle32,
    ntp_to_unix,
    parse_rtcp,
    round_trip_time,
)

BLOCK = ReportBlock(
    ssrc=0xCAFEBABE,
    fraction_lost=64,
    cumulative_lost=-3,
    highest_seq=0x0001_0005,
    jitter=37,
    lsr=0x12345678,
    dlsr=65536,
)


# --------------------------------------------------------------------------- NTP


def test_ntp_conversions() -> None:
    assert ntp_from_unix(0.0) == 2_208_988_800 << 32
    assert ntp_from_unix(1.5) == ((2_208_988_800 + 1) << 32) | 0x8000_0000
    assert ntp_to_unix(ntp_from_unix(1_700_000_000.25)) == pytest.approx(1_700_000_000.25)
    assert ntp_middle32(0x1122_3344_5566_7788) == 0x3344_5566


# --------------------------------------------------------------------------- builders


def test_sr_bytes() -> None:
    data = build_sr(0x01020304, 0x1122334455667788, 0xAABBCCDD, 10, 1600, [BLOCK])
    assert len(data) == 52
    assert data[:4] == bytes([0x81, 200, 0, 12])  # V=2, RC=1; length 13 words - 1
    assert data[4:28] == bytes.fromhex("010203041122334455667788aabbccdd0000000a00000640")
    # Fraction 64, cumulative lost -3 as 24-bit two's complement.
    assert data[28:52] == bytes.fromhex("cafebabe40fffffd00010005000000251234567800010000")


def test_rr_and_round_trip() -> None:
    data = build_rr(7, [BLOCK, BLOCK])
    assert data[:4] == bytes([0x82, 201, 0, 13])
    assert parse_rtcp(data) == [ReceiverReport(7, (BLOCK, BLOCK))]
    assert parse_rtcp(build_rr(7)) == [ReceiverReport(7, ())]


def test_sdes_bytes() -> None:
    data = build_sdes(0x01020304, "ab")
    # Chunk: SSRC, CNAME item (1, 2, "ab"), a null octet, padded to 32 bits.
    assert data == bytes([0x81, 202, 0, 3]) + bytes.fromhex("010203040102616200000000")
    exact = build_sdes(1, "abcdef")  # item ends 2 bytes short of a boundary: one null + one pad
    assert len(exact) % 4 == 0
    assert parse_rtcp(build_sdes(5, "user@host", [(6, "dispatch-hub")])) == [
        Sdes((SdesChunk(5, ((1, "user@host"), (6, "dispatch-hub"))),))
    ]
    # An item ending exactly on a boundary still needs its null octet: a whole word.
    aligned = build_sdes(9, "ab" * 3 + "x")  # 4 + 2 + 7 = 13 -> 13 + 1 null -> pad to 16
    assert len(aligned) == 4 + 16
    assert parse_rtcp(aligned)[0] == Sdes((SdesChunk(9, ((1, "abababx"),)),))


def test_bye_bytes() -> None:
    assert build_bye(0x01020304) == bytes([0x81, 203, 0, 1, 1, 2, 3, 4])
    data = build_bye([1, 2], "gone")
    assert data[:4] == bytes([0x82, 203, 0, 4])
    assert parse_rtcp(data) == [Bye((1, 2), "gone")]
    assert parse_rtcp(build_bye(9, "")) == [Bye((9,), "")]


def test_sr_round_trip_with_extension_stripped() -> None:
    sr = SenderReport(1, ntp_from_unix(1000.0), 160, 2**32 - 1, 5, (BLOCK,))
    assert parse_rtcp(build_sr(1, sr.ntp_timestamp, 160, 2**32 - 1, 5, [BLOCK])) == [sr]
    # Counters wrap by definition.
    assert parse_rtcp(build_sr(1, 0, 0, 2**32 + 3, 2**32 + 4))[0] == SenderReport(1, 0, 0, 3, 4)


def test_compound() -> None:
    compound = build_compound([build_rr(1, [BLOCK]), build_sdes(1, "me@hub"), build_bye(1)])
    parsed = parse_rtcp(compound)
    assert [type(p) for p in parsed] == [ReceiverReport, Sdes, Bye]
    sdes = parsed[1]
    assert isinstance(sdes, Sdes) and sdes.chunks[0].cname == "me@hub"
    with pytest.raises(RtcpError, match="must start with SR or RR, not packet type 202"):
        build_compound([build_sdes(1, "x"), build_rr(1)])
    with pytest.raises(RtcpError, match="part 1 is 7 bytes, its header says 8"):
        build_compound([build_rr(1), build_bye(1)[:7]])
    with pytest.raises(RtcpError, match="at least one"):
        build_compound([])
    with pytest.raises(RtcpError, match="part 0 is not an RTCP packet"):
        build_compound([b"\x00\x01"])


def test_builder_errors() -> None:
    with pytest.raises(RtcpError, match="32 blocks, at most 31"):
        build_rr(1, [BLOCK] * 32)
    with pytest.raises(RtcpError, match="fraction lost 256 outside 0..255"):
        build_rr(1, [ReportBlock(1, 256, 0, 0, 0, 0, 0)])
    with pytest.raises(RtcpError, match="cumulative lost 8388608 outside -8388608..8388607"):
        build_rr(1, [ReportBlock(1, 0, 1 << 23, 0, 0, 0, 0)])
    with pytest.raises(RtcpError, match="SSRC -1 outside"):
        build_sr(-1, 0, 0, 0, 0)
    with pytest.raises(RtcpError, match="SDES item 1 is 256 bytes"):
        build_sdes(1, "x" * 256)
    with pytest.raises(RtcpError, match="SDES item type 0"):
        build_sdes(1, "x", [(0, "y")])
    with pytest.raises(RtcpError, match="BYE names 0 sources"):
        build_bye([])
    with pytest.raises(RtcpError, match="BYE reason is 300 bytes"):
        build_bye(1, "r" * 300)


# --------------------------------------------------------------------------- parser


def test_unknown_types_kept_raw() -> None:
    app = bytes([0x80 | 3, 204, 0, 2]) + b"\x00\x00\x00\x01" + b"NAME"
    pli = bytes([0x81, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2])
    parsed = parse_rtcp(build_rr(1) + app + pli)
    assert parsed[1] == Unknown(204, 3, b"\x00\x00\x00\x01NAME")
    assert parsed[2] == Unknown(206, 1, b"\x00\x00\x00\x01\x00\x00\x00\x02")


def test_padding_removed() -> None:
    padded = bytes([0xA1, 203, 0, 2, 0, 0, 0, 9, 0, 0, 0, 4])  # P bit, 4 octets of padding
    assert parse_rtcp(padded) == [Bye((9,))]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\x80\xc8\x00", "packet 0 truncated: 3 bytes left"),
        (bytes([0x40, 200, 0, 0]), "packet 0: version 1, expected 2"),
        (bytes([0x80, 72, 0, 0]), "type 72 outside 192-223"),
        (bytes([0x80, 201, 0, 5, 0, 0, 0, 1]), r"length 24 exceeds the 8 bytes left"),
        (bytes([0x80, 200, 0, 1, 0, 0, 0, 1]), r"\(SR\): body 4 bytes, need 24"),
        (bytes([0x80, 201, 0, 0]), r"\(RR\): body 0 bytes, need 4"),
        (bytes([0x81, 201, 0, 1, 0, 0, 0, 1]), r"1 report blocks need 28 bytes, body has 4"),
        (bytes([0x81, 202, 0, 0]), r"\(SDES\): chunk 0 truncated"),
        (bytes([0x81, 202, 0, 2, 0, 0, 0, 1, 1, 9, 97, 98]), r"item 1 overruns chunk 0"),
        (bytes([0x81, 202, 0, 2, 0, 0, 0, 1, 1, 2, 97, 98]), r"chunk 0 has no end marker"),
        (bytes([0x82, 203, 0, 1, 0, 0, 0, 1]), r"\(BYE\): 2 sources need 8 bytes, have 4"),
        (bytes([0x81, 203, 0, 2, 0, 0, 0, 1, 9, 97, 98, 99]), "reason length 9 overruns"),
        (bytes([0xA0, 201, 0, 1, 0, 0, 0, 0]), "padding 0 invalid for length 8"),
        (bytes([0xA0, 201, 0, 1, 0, 0, 0, 5]), "padding 5 invalid for length 8"),
        (build_rr(1) + b"\x80", r"packet 1 truncated: 1 bytes left"),
    ],
)
def test_parse_errors(data: bytes, message: str) -> None:
    with pytest.raises(RtcpError, match=message) as info:
        parse_rtcp(data)
    assert isinstance(info.value, RtpError | MediaError | ValueError)


@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    try:
        parse_rtcp(data)
    except RtcpError:
        pass


@given(
    st.lists(
        st.tuples(
            st.integers(0, 31),  # count
            st.sampled_from([200, 201, 202, 203, 204, 205, 206, 207]),
            st.binary(max_size=120),
            st.booleans(),  # padding bit
        ),
        min_size=1,
        max_size=4,
    )
)
def test_fuzz_plausible_headers(parts: list[tuple[int, int, bytes, bool]]) -> None:
    # Headers that pass the first checks, so the per-type parsers get exercised.
    data = b""
    for count, packet_type, body, padding in parts:
        body = body + b"\0" * (-len(body) % 4)
        data += (
            struct.pack(
                "!BBH", 0x80 | (0x20 if padding else 0) | count, packet_type, len(body) // 4
            )
            + body
        )
    try:
        parsed = parse_rtcp(data)
    except RtcpError:
        return
    assert len(parsed) == len(parts)


# --------------------------------------------------------------------------- ReceiverStats


def feed(stats: ReceiverStats, seqs: list[int], *, start: float = 0.0) -> list[bool]:
    return [stats.update(seq, 160 * i, start + 0.02 * i) for i, seq in enumerate(seqs)]


def test_probation_then_counting() -> None:
    stats = ReceiverStats(0xABC, 8000)
    results = feed(stats, [100, 101, 102, 103])
    # A.1: the first packet only starts probation; the second validates the source
    # (and becomes the base), from then on every packet counts.
    assert results == [False, True, True, True]
    assert (stats.base_seq, stats.received, stats.expected, stats.lost) == (101, 3, 3, 0)


def test_probation_restarts_on_a_gap() -> None:
    stats = ReceiverStats(1, 8000)
    assert feed(stats, [10, 12, 13, 14]) == [False, False, True, True]
    assert stats.base_seq == 13


def test_loss_and_fraction_lost() -> None:
    stats = ReceiverStats(1, 8000)
    seqs = [s for s in range(1000, 1101) if s not in (1010, 1020, 1030, 1040)]
    feed(stats, seqs)
    block = stats.report_block(now=3.0)
    # Base 1001 (after probation), highest 1100: 100 expected, 96 received.
    assert (block.cumulative_lost, block.highest_seq) == (4, 1100)
    assert block.fraction_lost == (4 << 8) // 100  # 10
    # Next interval: 10 more expected, 5 received -> 50 %.
    feed(stats, [1101, 1103, 1105, 1107, 1109, 1110], start=3.0)
    block = stats.report_block(now=4.0)
    assert block.cumulative_lost == 8
    assert block.fraction_lost == (4 << 8) // 10
    # Nothing new: no loss in an empty interval.
    assert stats.report_block(now=5.0).fraction_lost == 0


def test_sequence_wrap_counts_cycles() -> None:
    stats = ReceiverStats(1, 8000)
    feed(stats, [(65530 + i) & 0xFFFF for i in range(12)])
    assert stats.cycles == 1 << 16
    assert stats.extended_max == (1 << 16) + 5
    block = stats.report_block(now=1.0)
    assert block.highest_seq == 0x0001_0005
    assert (block.cumulative_lost, block.fraction_lost) == (0, 0)


def test_duplicates_make_lost_negative() -> None:
    stats = ReceiverStats(1, 8000)
    feed(stats, [1, 2, 3, 3, 3, 4])
    assert stats.lost == -2
    assert stats.report_block(now=1.0).cumulative_lost == -2


def test_big_jump_needs_confirmation() -> None:
    stats = ReceiverStats(1, 8000)
    feed(stats, list(range(1, 11)))
    assert stats.update(40000, 0, 1.0) is False  # suspicious: dropped, remembered
    assert stats.update(40001, 160, 1.02) is True  # sequential with it: a restart
    assert (stats.base_seq, stats.received) == (40001, 1)


def test_jitter_estimate() -> None:
    stats = ReceiverStats(1, 8000)
    # Steady stream: transit constant, jitter stays zero.
    for i in range(50):
        stats.update(i, 160 * i, 0.02 * i)
    assert stats.jitter == pytest.approx(0.0, abs=1e-6)
    # Every other packet 2 ms late: |D| = 16 timestamp units per packet; J converges to 16.
    for i in range(50, 400):
        stats.update(i, 160 * i, 0.02 * i + (0.002 if i % 2 else 0.0))
    assert stats.jitter == pytest.approx(16, rel=0.01)
    assert stats.report_block(now=8.0).jitter == 15  # floor of the estimate


def test_jitter_across_timestamp_wrap() -> None:
    stats = ReceiverStats(1, 8000)
    for i in range(20):
        stats.update(i, (2**32 - 1600 + 160 * i) & 0xFFFFFFFF, 0.02 * i)
    assert stats.jitter == pytest.approx(0.0, abs=1e-6)


def test_lsr_dlsr_and_rtt() -> None:
    stats = ReceiverStats(0x55, 8000)
    feed(stats, [1, 2, 3])
    assert (stats.report_block(now=0.5).lsr, stats.report_block(now=0.5).dlsr) == (0, 0)
    sr_ntp = ntp_from_unix(1000.0)
    stats.on_sender_report(SenderReport(0x55, sr_ntp, 0, 3, 480), arrival=10.0)
    block = stats.report_block(now=10.25)
    assert block.lsr == ntp_middle32(sr_ntp)
    assert block.dlsr == 16384  # 0.25 s in 1/65536
    # The SR's sender gets this block back 0.35 s after it sent the SR: RTT 0.1 s.
    assert round_trip_time(block, ntp_from_unix(1000.35)) == pytest.approx(0.1, abs=1e-4)
    assert round_trip_time(ReportBlock(1, 0, 0, 0, 0, 0, 0), sr_ntp) is None
    assert round_trip_time(block, ntp_from_unix(1000.1)) is None  # negative


def test_stats_feed_a_real_report() -> None:
    stats = ReceiverStats(0x77, 8000)
    feed(stats, list(range(20)))
    data = build_compound([build_rr(0x1, [stats.report_block(now=1.0)]), build_sdes(0x1, "hub")])
    rr = parse_rtcp(data)[0]
    assert isinstance(rr, ReceiverReport)
    assert rr.reports[0].ssrc == 0x77 and rr.reports[0].highest_seq == 19


def test_packet_type_constants() -> None:
    assert (SR, RR, SDES, BYE) == (200, 201, 202, 203)

"""media.rtp: header parsing down to the exact error, RFC 5761 demux, fuzzing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.errors import MediaError, RtpError
from media.rtp import (
    RTP_HEADER_SIZE,
    RtcpHeader,
    RtpHeader,
    build_rtp_packet,
    is_rtcp,
    is_rtp_or_rtcp,
    looks_like_rtp,
    parse_rtcp_header,
    parse_rtp_header,
    seq_diff,
)


def rtp(
    *,
    first: int = 0x80,
    second: int = 0,
    seq: int = 1,
    ts: int = 160,
    ssrc: int = 0x11223344,
    rest: bytes = b"",
) -> bytes:
    return struct.pack("!BBHII", first, second, seq, ts, ssrc) + rest


def test_minimal_packet() -> None:
    header = parse_rtp_header(rtp(second=0x80 | 8, seq=65535, ts=0xFFFFFFFF, rest=b"abc"))
    assert header == RtpHeader(
        padding=False,
        extension=False,
        marker=True,
        payload_type=8,
        sequence_number=65535,
        timestamp=0xFFFFFFFF,
        ssrc=0x11223344,
        csrc=(),
        extension_profile=None,
        extension_data=b"",
        payload_offset=12,
        payload_end=15,
    )
    assert header.version == 2
    assert header.csrc_count == 0
    assert header.payload_size == 3


def test_header_only_packet_has_empty_payload() -> None:
    data = rtp()
    header = parse_rtp_header(data)
    assert header.payload(data) == b""
    assert not header.marker


def test_csrc_list() -> None:
    data = rtp(first=0x82, rest=struct.pack("!II", 7, 9) + b"pay")
    header = parse_rtp_header(data)
    assert header.csrc == (7, 9)
    assert header.csrc_count == 2
    assert header.payload(data) == b"pay"


def test_header_extension() -> None:
    ext = struct.pack("!HH", 0xBEDE, 2) + b"12345678"
    data = rtp(first=0x90, rest=ext + b"pay")
    header = parse_rtp_header(data)
    assert header.extension
    assert header.extension_profile == 0xBEDE
    assert header.extension_data == b"12345678"
    assert header.payload_offset == 12 + 4 + 8
    assert header.payload(data) == b"pay"


def test_csrc_and_extension_together() -> None:
    data = rtp(first=0x91, rest=struct.pack("!I", 5) + struct.pack("!HH", 0x1000, 0) + b"x")
    header = parse_rtp_header(data)
    assert header.csrc == (5,)
    assert header.extension_profile == 0x1000
    assert header.extension_data == b""
    assert header.payload(data) == b"x"


def test_padding_is_stripped_from_payload() -> None:
    data = rtp(first=0xA0, rest=b"payload" + b"\x00\x00\x03")
    header = parse_rtp_header(data)
    assert header.padding
    assert header.payload(data) == b"payload"


def test_padding_may_fill_whole_payload() -> None:
    data = rtp(first=0xA0, rest=b"\x00\x00\x00\x04")
    assert parse_rtp_header(data).payload(data) == b""


def test_telephone_event_payload_is_opaque() -> None:
    # RFC 4733 event: digit 5, end bit, volume 10, duration 800.
    event = struct.pack("!BBH", 5, 0x80 | 10, 800)
    data = build_rtp_packet(101, 7, 1000, 42, event, marker=True)
    header = parse_rtp_header(data)
    assert (header.payload_type, header.marker) == (101, True)
    assert header.payload(data) == event


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "RTP packet too short: 0 bytes, need at least 12"),
        (rtp()[:11], "RTP packet too short: 11 bytes, need at least 12"),
        (rtp(first=0x40), "RTP version 1 unsupported, expected 2"),
        (rtp(first=0x00), "RTP version 0 unsupported, expected 2"),
        (rtp(first=0xC0), "RTP version 3 unsupported, expected 2"),
        (
            rtp(first=0x83, rest=b"\x00" * 8),
            "RTP packet truncated in CSRC list: CC=3 needs 24 bytes, have 20",
        ),
        (
            rtp(first=0x8F),
            "RTP packet truncated in CSRC list: CC=15 needs 72 bytes, have 12",
        ),
        (
            rtp(first=0x90, rest=b"\xbe\xde"),
            "RTP packet truncated in header extension: need 16 bytes, have 14",
        ),
        (
            rtp(first=0x90, rest=struct.pack("!HH", 0xBEDE, 2) + b"1234"),
            "RTP header extension length 2 words needs 24 bytes, have 20",
        ),
        (
            rtp(first=0xA0),
            "RTP padding bit set but packet has no room for a padding count",
        ),
        (
            rtp(first=0xA0, rest=b"ab\x00"),
            "RTP padding length 0 invalid: must be 1..3 (octets after the header)",
        ),
        (
            rtp(first=0xA0, rest=b"ab\x04"),
            "RTP padding length 4 invalid: must be 1..3 (octets after the header)",
        ),
        (
            rtp(first=0xB1, rest=b"\x00\x00\x00\x01" + struct.pack("!HH", 1, 0) + b"\x09"),
            "RTP padding length 9 invalid: must be 1..1 (octets after the header)",
        ),
    ],
)
def test_malformed_packets_name_the_problem(data: bytes, message: str) -> None:
    with pytest.raises(RtpError) as info:
        parse_rtp_header(data)
    assert str(info.value) == message


def test_rtp_error_is_a_value_error_and_a_media_error() -> None:
    assert issubclass(RtpError, ValueError)
    assert issubclass(RtpError, MediaError)


@given(st.binary(max_size=200))
def test_fuzz_parse_rtp_raises_only_rtp_error(data: bytes) -> None:
    try:
        header = parse_rtp_header(data)
    except RtpError:
        return
    assert RTP_HEADER_SIZE <= header.payload_offset <= header.payload_end <= len(data)
    assert len(header.csrc) == data[0] & 0x0F
    assert looks_like_rtp(data)


@given(
    cc=st.integers(0, 15),
    ext_words=st.none() | st.integers(0, 4),
    pad=st.integers(0, 8),
    body=st.binary(max_size=40),
    tail=st.binary(max_size=8),
)
def test_fuzz_structured_headers(
    cc: int, ext_words: int | None, pad: int, body: bytes, tail: bytes
) -> None:
    # Near-valid packets reach the deeper branches far more often than random bytes.
    first = 0x80 | cc | (0x10 if ext_words is not None else 0) | (0x20 if pad else 0)
    rest = b"\x00" * 4 * cc
    if ext_words is not None:
        rest += struct.pack("!HH", 0xBEDE, ext_words) + b"\x00" * 4 * ext_words
    rest += body
    if pad:
        rest += b"\x00" * (pad - 1) + bytes([pad])
    data = rtp(first=first, rest=rest)
    header = parse_rtp_header(data)
    assert header.csrc_count == cc
    assert header.payload(data) == body
    # Truncating or extending arbitrarily still never raises anything else.
    for mutated in (data[: len(data) // 2], data + tail, data[:-1]):
        try:
            parse_rtp_header(mutated)
        except RtpError:
            pass


@given(st.binary(max_size=64))
def test_fuzz_parse_rtcp_raises_only_rtp_error(data: bytes) -> None:
    try:
        header = parse_rtcp_header(data)
    except RtpError:
        return
    assert 192 <= header.packet_type <= 223
    assert header.length <= len(data)


@given(st.binary(max_size=16))
def test_fuzz_predicates_never_raise(data: bytes) -> None:
    assert isinstance(is_rtcp(data), bool)
    assert isinstance(is_rtp_or_rtcp(data), bool)
    assert isinstance(looks_like_rtp(data), bool)


@pytest.mark.parametrize(
    ("second", "expected"),
    [
        (0, False),  # PCMU
        (0x80 | 0, False),  # PCMU, marker
        (101, False),  # telephone-event
        (0x80 | 101, False),
        (191, False),  # PT 63 with marker: last RTP value below the RTCP range
        (192, True),  # old FIR
        (200, True),  # SR
        (201, True),  # RR
        (207, True),  # XR
        (223, True),
        (224, False),  # PT 96 with marker: dynamic RTP
    ],
)
def test_is_rtcp_uses_rfc5761_range(second: int, expected: bool) -> None:
    assert is_rtcp(bytes([0x80, second, 0, 1])) is expected


def test_is_rtcp_short_input() -> None:
    assert not is_rtcp(b"")
    assert not is_rtcp(b"\x80")


def test_is_rtp_or_rtcp_rfc7983() -> None:
    assert is_rtp_or_rtcp(b"\x80")
    assert is_rtp_or_rtcp(b"\xbf")
    assert not is_rtp_or_rtcp(b"\x00\x01")  # STUN
    assert not is_rtp_or_rtcp(b"\x16")  # DTLS
    assert not is_rtp_or_rtcp(b"")


def test_parse_rtcp_receiver_report() -> None:
    rr = struct.pack("!BBHI", 0x80, 201, 1, 0xCAFE)
    assert parse_rtcp_header(rr) == RtcpHeader(padding=False, count=0, packet_type=201, length=8)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\xc9", "RTCP packet too short: 2 bytes, need at least 4"),
        (b"\x40\xc9\x00\x00", "RTCP version 1 unsupported, expected 2"),
        (b"\x80\x00\x00\x00", "RTCP packet type 0 outside 192-223"),
        (b"\x80\xc9\x00\x01", "RTCP length field says 8 bytes, have 4"),
    ],
)
def test_malformed_rtcp(data: bytes, message: str) -> None:
    with pytest.raises(RtpError) as info:
        parse_rtcp_header(data)
    assert str(info.value) == message


def test_build_round_trips() -> None:
    data = build_rtp_packet(0, 70000, 2**32 + 5, 2**32 + 7, b"\xff" * 160)
    header = parse_rtp_header(data)
    assert (header.sequence_number, header.timestamp, header.ssrc) == (70000 - 65536, 5, 7)
    assert len(data) == 172


def test_build_rejects_bad_payload_type() -> None:
    with pytest.raises(RtpError, match="RTP payload type 128 outside 0-127"):
        build_rtp_packet(128, 0, 0, 0)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [(1, 0, 1), (0, 1, -1), (0, 65535, 1), (65535, 0, -1), (32767, 0, 32767), (32768, 0, -32768)],
)
def test_seq_diff_wraps(a: int, b: int, expected: int) -> None:
    assert seq_diff(a, b) == expected


def test_looks_like_rtp() -> None:
    assert looks_like_rtp(rtp())
    assert not looks_like_rtp(rtp()[:11])
    assert not looks_like_rtp(rtp(first=0x40))

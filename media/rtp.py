"""RTP and RTCP framing (RFC 3550, RFC 5761 demultiplexing), sans-I/O.

Pure functions over bytes: no sockets, no clock. The relay's hot path does not
call the full parser (it only needs "version 2 and at least 12 bytes", which it
checks inline); the parser is for code that must look inside packets (jitter
buffer, mixer, recorder) and for validation in tests and tools.

Every parse failure is an RtpError with a message naming the field and the sizes
involved; no other exception can escape, whatever the input.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from media.errors import RtpError

__all__ = [
    "RTP_HEADER_SIZE",
    "RTP_VERSION",
    "RTCP_HEADER_SIZE",
    "RtcpHeader",
    "RtpError",
    "RtpHeader",
    "build_rtp_packet",
    "is_rtcp",
    "is_rtp_or_rtcp",
    "looks_like_rtp",
    "parse_rtcp_header",
    "parse_rtp_header",
    "seq_diff",
]

RTP_VERSION = 2
RTP_HEADER_SIZE = 12
RTCP_HEADER_SIZE = 4

_FIXED = struct.Struct("!BBHII")
_EXT_HEADER = struct.Struct("!HH")
_RTCP_HEADER = struct.Struct("!BBH")


@dataclass(frozen=True, slots=True)
class RtpHeader:
    """The parsed header of one RTP packet (RFC 3550 section 5.1)."""

    padding: bool
    """P bit: the packet ends with padding octets, the last one counting them."""
    extension: bool
    """X bit: a header extension follows the CSRC list."""
    marker: bool
    """M bit: profile-defined; for audio the first packet of a talk spurt."""
    payload_type: int
    """PT, 0-127."""
    sequence_number: int
    """16-bit sequence number, wraps."""
    timestamp: int
    """32-bit media timestamp, wraps."""
    ssrc: int
    """Synchronisation source identifier."""
    csrc: tuple[int, ...] = ()
    """Contributing sources, as many as the CC field says (0-15)."""
    extension_profile: int | None = None
    """The 16-bit profile of the header extension (0xBEDE for RFC 8285 one-byte), if any."""
    extension_data: bytes = b""
    """The header extension's body, without its 4-byte profile/length word."""
    payload_offset: int = RTP_HEADER_SIZE
    """Index of the first payload octet in the packet."""
    payload_end: int = RTP_HEADER_SIZE
    """Index one past the last payload octet, i.e. where padding starts."""

    @property
    def version(self) -> int:
        """Always 2: the parser rejects every other version."""
        return RTP_VERSION

    @property
    def csrc_count(self) -> int:
        """The CC field."""
        return len(self.csrc)

    @property
    def payload_size(self) -> int:
        """Length of the payload, padding excluded."""
        return self.payload_end - self.payload_offset

    def payload(self, packet: bytes) -> bytes:
        """The payload of ``packet`` (the packet this header was parsed from)."""
        return packet[self.payload_offset : self.payload_end]


@dataclass(frozen=True, slots=True)
class RtcpHeader:
    """The 4-byte common header of one RTCP packet (RFC 3550 section 6.4)."""

    padding: bool
    """P bit."""
    count: int
    """Reception report count, source count or FMT subtype (5 bits)."""
    packet_type: int
    """PT: 200 SR, 201 RR, 202 SDES, 203 BYE, 204 APP, 205 RTPFB, 206 PSFB, 207 XR."""
    length: int
    """Length of this packet in octets, header included (the wire field is in words minus one)."""


def looks_like_rtp(data: bytes) -> bool:
    """The relay's cheap sanity check: version 2 and long enough for a fixed header."""
    return len(data) >= RTP_HEADER_SIZE and data[0] >> 6 == RTP_VERSION


def is_rtp_or_rtcp(data: bytes) -> bool:
    """RFC 7983 first-octet demux: 128-191 is RTP or RTCP (not STUN, DTLS or ZRTP)."""
    return len(data) > 0 and 128 <= data[0] <= 191


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 section 4: the second octet is an RTCP packet type (192-223).

    RTP payload types 64-95 would collide with these once the marker bit is set,
    which is why RFC 5761 forbids them on a multiplexed port. Call this on data
    already known to be RTP or RTCP (see ``is_rtp_or_rtcp``).
    """
    return len(data) >= 2 and 192 <= data[1] <= 223


def parse_rtp_header(data: bytes) -> RtpHeader:
    """Parse and validate the header of an RTP packet, per RFC 3550 section 5.1 and A.1.

    Raises RtpError, and only RtpError, when ``data`` is not a well-formed packet.
    """
    size = len(data)
    if size < RTP_HEADER_SIZE:
        raise RtpError(f"RTP packet too short: {size} bytes, need at least {RTP_HEADER_SIZE}")
    first, second, seq, timestamp, ssrc = _FIXED.unpack_from(data)
    version = first >> 6
    if version != RTP_VERSION:
        raise RtpError(f"RTP version {version} unsupported, expected {RTP_VERSION}")
    padding = bool(first & 0x20)
    extension = bool(first & 0x10)
    cc = first & 0x0F

    offset = RTP_HEADER_SIZE
    csrc: tuple[int, ...] = ()
    if cc:
        end = offset + 4 * cc
        if end > size:
            raise RtpError(
                f"RTP packet truncated in CSRC list: CC={cc} needs {end} bytes, have {size}"
            )
        csrc = struct.unpack_from(f"!{cc}I", data, offset)
        offset = end

    extension_profile: int | None = None
    extension_data = b""
    if extension:
        if offset + 4 > size:
            raise RtpError(
                f"RTP packet truncated in header extension: need {offset + 4} bytes, have {size}"
            )
        extension_profile, words = _EXT_HEADER.unpack_from(data, offset)
        offset += 4
        end = offset + 4 * words
        if end > size:
            raise RtpError(
                f"RTP header extension length {words} words needs {end} bytes, have {size}"
            )
        extension_data = bytes(data[offset:end])
        offset = end

    payload_end = size
    if padding:
        available = size - offset
        if available == 0:
            raise RtpError("RTP padding bit set but packet has no room for a padding count")
        pad = data[-1]
        # The count includes itself, so zero is as malformed as a count past the header.
        if pad == 0 or pad > available:
            raise RtpError(
                f"RTP padding length {pad} invalid: must be 1..{available} "
                "(octets after the header)"
            )
        payload_end = size - pad

    return RtpHeader(
        padding=padding,
        extension=extension,
        marker=bool(second & 0x80),
        payload_type=second & 0x7F,
        sequence_number=seq,
        timestamp=timestamp,
        ssrc=ssrc,
        csrc=csrc,
        extension_profile=extension_profile,
        extension_data=extension_data,
        payload_offset=offset,
        payload_end=payload_end,
    )


def parse_rtcp_header(data: bytes) -> RtcpHeader:
    """Parse the common header of the first RTCP packet in ``data`` (RFC 3550 section 6.4).

    Checks version, the RFC 5761 packet-type range and that the declared length fits.
    Raises RtpError, and only RtpError.
    """
    size = len(data)
    if size < RTCP_HEADER_SIZE:
        raise RtpError(f"RTCP packet too short: {size} bytes, need at least {RTCP_HEADER_SIZE}")
    first, packet_type, words = _RTCP_HEADER.unpack_from(data)
    version = first >> 6
    if version != RTP_VERSION:
        raise RtpError(f"RTCP version {version} unsupported, expected {RTP_VERSION}")
    if not 192 <= packet_type <= 223:
        raise RtpError(f"RTCP packet type {packet_type} outside 192-223")
    length = 4 * (words + 1)
    if length > size:
        raise RtpError(f"RTCP length field says {length} bytes, have {size}")
    return RtcpHeader(
        padding=bool(first & 0x20), count=first & 0x1F, packet_type=packet_type, length=length
    )


def build_rtp_packet(
    payload_type: int,
    sequence_number: int,
    timestamp: int,
    ssrc: int,
    payload: bytes = b"",
    *,
    marker: bool = False,
) -> bytes:
    """A minimal RTP packet (no CSRC, extension or padding), for generators and tests."""
    if not 0 <= payload_type <= 127:
        raise RtpError(f"RTP payload type {payload_type} outside 0-127")
    header = _FIXED.pack(
        RTP_VERSION << 6,
        (0x80 if marker else 0) | payload_type,
        sequence_number & 0xFFFF,
        timestamp & 0xFFFFFFFF,
        ssrc & 0xFFFFFFFF,
    )
    return header + payload


def seq_diff(a: int, b: int) -> int:
    """Signed distance from sequence number ``b`` to ``a`` across the 16-bit wrap.

    Positive when ``a`` is newer than ``b``; in [-32768, 32767].
    """
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000

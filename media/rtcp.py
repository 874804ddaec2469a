"""RTCP (RFC 3550 section 6 and appendix A), sans-I/O: reception statistics, builders, parser.

- ``ReceiverStats`` is one remote source's reception state: sequence tracking with
  wrap and probation (A.1), expected/lost/fraction lost (A.3) and interarrival
  jitter (A.8), plus what a report block needs to let the sender measure round
  trip time (LSR/DLSR, 6.4.1). Time is an argument.
- ``build_sr``, ``build_rr``, ``build_sdes``, ``build_bye`` and ``build_compound``
  produce wire bytes; field values are checked, not silently masked.
- ``parse_rtcp`` splits a compound packet into typed packets. Anything malformed
  raises ``RtcpError`` (a ``ValueError``) naming the packet and field, and nothing
  else can escape, whatever the input: a fuzz test holds it to that. Packet types
  the hub does not interpret (APP, feedback, XR) come back as ``Unknown``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from media.errors import RtcpError

__all__ = [
    "BYE",
    "RR",
    "SDES",
    "SR",
    "Bye",
    "ReceiverReport",
    "ReceiverStats",
    "ReportBlock",
    "RtcpError",
    "RtcpPacket",
    "Sdes",
    "SdesChunk",
    "SenderReport",
    "Unknown",
    "build_bye",
    "build_compound",
    "build_rr",
    "build_sdes",
    "build_sr",
    "ntp_from_unix",
    "ntp_middle32",
    "ntp_to_unix",
    "parse_rtcp",
    "round_trip_time",
]

SR: Final = 200
RR: Final = 201
SDES: Final = 202
BYE: Final = 203

SDES_END: Final = 0
SDES_CNAME: Final = 1

_VERSION: Final = 2
_MAX_COUNT: Final = 31  # the 5-bit RC/SC field
_HEADER = struct.Struct("!BBH")
_SR_INFO = struct.Struct("!IQIII")  # SSRC, NTP, RTP timestamp, packets, octets
_BLOCK = struct.Struct("!IIIIII")  # SSRC, fraction+lost, highest seq, jitter, LSR, DLSR
_U32: Final = 0xFFFFFFFF

# Seconds from the NTP epoch (1900) to the Unix epoch (1970).
_NTP_UNIX_OFFSET: Final = 2_208_988_800


# --------------------------------------------------------------------------- NTP time


def ntp_from_unix(seconds: float) -> int:
    """64-bit NTP timestamp (32.32 fixed point since 1900) for a Unix time."""
    return round((seconds + _NTP_UNIX_OFFSET) * (1 << 32)) & 0xFFFFFFFFFFFFFFFF


def ntp_to_unix(ntp: int) -> float:
    """Unix time of a 64-bit NTP timestamp."""
    return ntp / (1 << 32) - _NTP_UNIX_OFFSET


def ntp_middle32(ntp: int) -> int:
    """The middle 32 bits (16.16 seconds) used by LSR and round-trip maths (6.4.1)."""
    return (ntp >> 16) & _U32


# --------------------------------------------------------------------------- packets


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """One reception report (RFC 3550 6.4.1) about the source ``ssrc``."""

    ssrc: int
    """The source this block reports on."""
    fraction_lost: int
    """Lost since the previous report, in 1/256 (0-255)."""
    cumulative_lost: int
    """Packets lost since the beginning (signed 24-bit: duplicates can make it negative)."""
    highest_seq: int
    """Extended highest sequence number received (cycles << 16 | seq)."""
    jitter: int
    """Interarrival jitter in timestamp units."""
    lsr: int
    """Middle 32 bits of the last SR's NTP timestamp from this source, 0 if none."""
    dlsr: int
    """Delay since that SR, in 1/65536 s; 0 if none."""


@dataclass(frozen=True, slots=True)
class SenderReport:
    """SR (PT 200): sender info and reception reports."""

    ssrc: int
    """The sender."""
    ntp_timestamp: int
    """64-bit NTP wallclock at the time the report was sent."""
    rtp_timestamp: int
    """The same instant in the sender's RTP timestamp units."""
    packet_count: int
    """RTP packets sent since the start (mod 2^32)."""
    octet_count: int
    """Payload octets sent since the start (mod 2^32)."""
    reports: tuple[ReportBlock, ...] = ()
    """Reception reports, at most 31."""
    extension: bytes = b""
    """Profile-specific extension after the report blocks."""


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    """RR (PT 201): reception reports from a participant that is not sending."""

    ssrc: int
    """The reporter."""
    reports: tuple[ReportBlock, ...] = ()
    """Reception reports, at most 31."""
    extension: bytes = b""
    """Profile-specific extension after the report blocks."""


@dataclass(frozen=True, slots=True)
class SdesChunk:
    """The SDES items of one source."""

    ssrc: int
    """The source described."""
    items: tuple[tuple[int, str], ...]
    """(item type, text) in wire order; text decoded as UTF-8, bad bytes replaced."""

    @property
    def cname(self) -> str | None:
        """The CNAME item (type 1), if present."""
        for kind, text in self.items:
            if kind == SDES_CNAME:
                return text
        return None


@dataclass(frozen=True, slots=True)
class Sdes:
    """SDES (PT 202): source descriptions."""

    chunks: tuple[SdesChunk, ...]
    """One chunk per source, at most 31."""


@dataclass(frozen=True, slots=True)
class Bye:
    """BYE (PT 203): sources leaving."""

    ssrcs: tuple[int, ...]
    """The sources that leave, at most 31."""
    reason: str | None = None
    """Optional reason for leaving."""


@dataclass(frozen=True, slots=True)
class Unknown:
    """Any other RTCP packet (APP, RTPFB/PSFB feedback, XR...), kept raw."""

    packet_type: int
    """PT, 192-223."""
    count: int
    """The 5-bit count/subtype field."""
    body: bytes
    """Everything after the 4-byte header, padding removed."""


RtcpPacket = SenderReport | ReceiverReport | Sdes | Bye | Unknown


# --------------------------------------------------------------------------- building


def _check(name: str, value: int, bits: int, *, signed: bool = False) -> int:
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not low <= value <= high:
        raise RtcpError(f"RTCP {name} {value} outside {low}..{high}")
    return value


def _header(count: int, packet_type: int, body_len: int) -> bytes:
    """The common header for a body already padded to a 32-bit boundary."""
    return _HEADER.pack((_VERSION << 6) | count, packet_type, body_len // 4)


def _pack_block(block: ReportBlock) -> bytes:
    lost = _check("cumulative lost", block.cumulative_lost, 24, signed=True) & 0xFFFFFF
    return _BLOCK.pack(
        _check("report SSRC", block.ssrc, 32),
        (_check("fraction lost", block.fraction_lost, 8) << 24) | lost,
        _check("highest sequence", block.highest_seq, 32),
        _check("jitter", block.jitter, 32),
        _check("LSR", block.lsr, 32),
        _check("DLSR", block.dlsr, 32),
    )


def _pack_blocks(blocks: Sequence[ReportBlock]) -> bytes:
    if len(blocks) > _MAX_COUNT:
        raise RtcpError(f"RTCP report has {len(blocks)} blocks, at most {_MAX_COUNT} fit")
    return b"".join(_pack_block(block) for block in blocks)


def _padded(body: bytes) -> bytes:
    return body + b"\0" * (-len(body) % 4)


def build_sr(
    ssrc: int,
    ntp_time: int,
    rtp_ts: int,
    packets: int,
    octets: int,
    report_blocks: Sequence[ReportBlock] = (),
) -> bytes:
    """A sender report. ``ntp_time`` is the 64-bit NTP timestamp (see ``ntp_from_unix``)."""
    body = _SR_INFO.pack(
        _check("SSRC", ssrc, 32),
        _check("NTP timestamp", ntp_time, 64),
        _check("RTP timestamp", rtp_ts, 32),
        packets & _U32,  # counters wrap by definition (6.4.1)
        octets & _U32,
    ) + _pack_blocks(report_blocks)
    return _header(len(report_blocks), SR, len(body)) + body


def build_rr(ssrc: int, report_blocks: Sequence[ReportBlock] = ()) -> bytes:
    """A receiver report (also the mandatory first packet of a compound with no SR)."""
    body = struct.pack("!I", _check("SSRC", ssrc, 32)) + _pack_blocks(report_blocks)
    return _header(len(report_blocks), RR, len(body)) + body


def build_sdes(ssrc: int, cname: str, items: Sequence[tuple[int, str]] = ()) -> bytes:
    """An SDES packet with one chunk: the CNAME, then any further (type, text) items."""
    chunk = bytearray(struct.pack("!I", _check("SSRC", ssrc, 32)))
    for kind, text in ((SDES_CNAME, cname), *items):
        data = text.encode("utf-8")
        if not 1 <= kind <= 255:
            raise RtcpError(f"SDES item type {kind} outside 1..255")
        if len(data) > 255:
            raise RtcpError(f"SDES item {kind} is {len(data)} bytes, at most 255 fit")
        chunk += bytes((kind, len(data))) + data
    # The item list ends with a null octet, then nulls up to the next 32-bit boundary.
    chunk += b"\0"
    body = _padded(bytes(chunk))
    return _header(1, SDES, len(body)) + body


def build_bye(ssrc: int | Sequence[int], reason: str | None = None) -> bytes:
    """A BYE for one source (or several), with an optional reason."""
    ssrcs = [ssrc] if isinstance(ssrc, int) else list(ssrc)
    if not 1 <= len(ssrcs) <= _MAX_COUNT:
        raise RtcpError(f"BYE names {len(ssrcs)} sources, must be 1..{_MAX_COUNT}")
    body = b"".join(struct.pack("!I", _check("SSRC", s, 32)) for s in ssrcs)
    if reason is not None:
        text = reason.encode("utf-8")
        if len(text) > 255:
            raise RtcpError(f"BYE reason is {len(text)} bytes, at most 255 fit")
        body += bytes((len(text),)) + text
    body = _padded(body)
    return _header(len(ssrcs), BYE, len(body)) + body


def build_compound(packets: Iterable[bytes]) -> bytes:
    """Join RTCP packets into one compound packet, checking RFC 3550 6.1's rules.

    The first must be an SR or RR and each part must be one whole packet (its
    length field covering it exactly); an SDES with a CNAME should follow, which
    is the caller's to include.
    """
    parts = list(packets)
    if not parts:
        raise RtcpError("RTCP compound packet needs at least one packet")
    for index, part in enumerate(parts):
        if len(part) < 4 or part[0] >> 6 != _VERSION:
            raise RtcpError(f"RTCP compound part {index} is not an RTCP packet")
        declared = 4 * (_HEADER.unpack_from(part)[2] + 1)
        if declared != len(part):
            raise RtcpError(
                f"RTCP compound part {index} is {len(part)} bytes, its header says {declared}"
            )
    if parts[0][1] not in (SR, RR):
        raise RtcpError(f"RTCP compound must start with SR or RR, not packet type {parts[0][1]}")
    return b"".join(parts)


# --------------------------------------------------------------------------- parsing


def parse_rtcp(data: bytes) -> list[RtcpPacket]:
    """Split and parse a (compound) RTCP packet; RtcpError, and only that, if malformed."""
    if not data:
        raise RtcpError("RTCP packet is empty")
    packets: list[RtcpPacket] = []
    offset, size = 0, len(data)
    while offset < size:
        if size - offset < 4:
            raise RtcpError(f"RTCP packet {len(packets)} truncated: {size - offset} bytes left")
        first, packet_type, words = _HEADER.unpack_from(data, offset)
        index = len(packets)
        if first >> 6 != _VERSION:
            raise RtcpError(f"RTCP packet {index}: version {first >> 6}, expected 2")
        if not 192 <= packet_type <= 223:
            raise RtcpError(f"RTCP packet {index}: type {packet_type} outside 192-223")
        length = 4 * (words + 1)
        if offset + length > size:
            raise RtcpError(
                f"RTCP packet {index} ({packet_type}): length {length} exceeds the "
                f"{size - offset} bytes left"
            )
        body_end = offset + length
        if first & 0x20:
            pad = data[body_end - 1]
            if pad == 0 or pad > length - 4:
                raise RtcpError(f"RTCP packet {index}: padding {pad} invalid for length {length}")
            body_end -= pad
        body = bytes(data[offset + 4 : body_end])
        packets.append(_parse_one(index, first & 0x1F, packet_type, body))
        offset += length
    return packets


def _parse_one(index: int, count: int, packet_type: int, body: bytes) -> RtcpPacket:
    if packet_type == SR:
        return _parse_sr(index, count, body)
    if packet_type == RR:
        return _parse_rr(index, count, body)
    if packet_type == SDES:
        return _parse_sdes(index, count, body)
    if packet_type == BYE:
        return _parse_bye(index, count, body)
    return Unknown(packet_type, count, body)


def _parse_blocks(
    index: int, name: str, count: int, body: bytes, start: int
) -> tuple[tuple[ReportBlock, ...], bytes]:
    end = start + count * _BLOCK.size
    if end > len(body):
        raise RtcpError(
            f"RTCP packet {index} ({name}): {count} report blocks need {end} bytes, "
            f"body has {len(body)}"
        )
    blocks = []
    for at in range(start, end, _BLOCK.size):
        ssrc, lost_word, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(body, at)
        lost = lost_word & 0xFFFFFF
        if lost & 0x800000:
            lost -= 1 << 24
        blocks.append(ReportBlock(ssrc, lost_word >> 24, lost, highest, jitter, lsr, dlsr))
    return tuple(blocks), body[end:]


def _parse_sr(index: int, count: int, body: bytes) -> SenderReport:
    if len(body) < _SR_INFO.size:
        raise RtcpError(f"RTCP packet {index} (SR): body {len(body)} bytes, need {_SR_INFO.size}")
    ssrc, ntp, rtp_ts, packets, octets = _SR_INFO.unpack_from(body)
    blocks, extension = _parse_blocks(index, "SR", count, body, _SR_INFO.size)
    return SenderReport(ssrc, ntp, rtp_ts, packets, octets, blocks, extension)


def _parse_rr(index: int, count: int, body: bytes) -> ReceiverReport:
    if len(body) < 4:
        raise RtcpError(f"RTCP packet {index} (RR): body {len(body)} bytes, need 4")
    (ssrc,) = struct.unpack_from("!I", body)
    blocks, extension = _parse_blocks(index, "RR", count, body, 4)
    return ReceiverReport(ssrc, blocks, extension)


def _parse_sdes(index: int, count: int, body: bytes) -> Sdes:
    chunks = []
    at, size = 0, len(body)
    for number in range(count):
        if at + 4 > size:
            raise RtcpError(f"RTCP packet {index} (SDES): chunk {number} truncated")
        (ssrc,) = struct.unpack_from("!I", body, at)
        at += 4
        items = []
        while True:
            if at >= size:
                raise RtcpError(f"RTCP packet {index} (SDES): chunk {number} has no end marker")
            kind = body[at]
            if kind == SDES_END:
                # The null octet, then nulls to the next 32-bit boundary (from the chunk start,
                # which is itself aligned).
                at += 1
                at += -at % 4
                break
            if at + 2 > size or at + 2 + body[at + 1] > size:
                raise RtcpError(f"RTCP packet {index} (SDES): item {kind} overruns chunk {number}")
            length = body[at + 1]
            items.append((kind, body[at + 2 : at + 2 + length].decode("utf-8", "replace")))
            at += 2 + length
        chunks.append(SdesChunk(ssrc, tuple(items)))
    return Sdes(tuple(chunks))


def _parse_bye(index: int, count: int, body: bytes) -> Bye:
    end = 4 * count
    if end > len(body):
        raise RtcpError(
            f"RTCP packet {index} (BYE): {count} sources need {end} bytes, have {len(body)}"
        )
    ssrcs = struct.unpack_from(f"!{count}I", body)
    reason = None
    if end < len(body):
        length = body[end]
        if end + 1 + length > len(body):
            raise RtcpError(
                f"RTCP packet {index} (BYE): reason length {length} overruns the packet"
            )
        reason = body[end + 1 : end + 1 + length].decode("utf-8", "replace")
    return Bye(tuple(ssrcs), reason)


# --------------------------------------------------------------------------- statistics


_MAX_DROPOUT: Final = 3000
_MAX_MISORDER: Final = 100
_MIN_SEQUENTIAL: Final = 2
_SEQ_MOD: Final = 1 << 16


class ReceiverStats:
    """Reception statistics for one remote source, after RFC 3550 appendix A.

    ``update`` is A.1's ``update_seq`` plus A.8's jitter; ``report_block`` is A.3.
    A new source is on probation until ``MIN_SEQUENTIAL`` (2) packets arrive in
    sequence, so a stray packet does not create a participant; a jump of more
    than MAX_DROPOUT (3000) is believed only when the next packet follows it
    (the sender restarted).
    """

    def __init__(self, ssrc: int, clock_rate: int) -> None:
        if clock_rate <= 0:
            raise ValueError(f"clock rate must be positive, got {clock_rate}")
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self._started = False
        self.max_seq = 0
        self.cycles = 0
        self.base_seq = 0
        self.bad_seq = _SEQ_MOD + 1  # never equal to a 16-bit number
        self.probation = _MIN_SEQUENTIAL
        self.received = 0
        self._expected_prior = 0
        self._received_prior = 0
        self._transit: float | None = None
        self._jitter = 0.0
        self._lsr = 0
        self._lsr_arrival: float | None = None

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = _SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self._received_prior = 0
        self._expected_prior = 0

    def update(self, seq: int, rtp_timestamp: int, arrival: float) -> bool:
        """Account one RTP packet; False while on probation or for a suspect jump (A.1)."""
        seq &= 0xFFFF
        if not self._started:
            self._started = True
            self._init_seq(seq)
            self.max_seq = (seq - 1) & 0xFFFF
            self.probation = _MIN_SEQUENTIAL
        if not self._update_seq(seq):
            return False
        self._update_jitter(rtp_timestamp, arrival)
        return True

    def _update_seq(self, seq: int) -> bool:
        """RFC 3550 A.1, line for line."""
        udelta = (seq - self.max_seq) & 0xFFFF
        if self.probation:
            if seq == (self.max_seq + 1) & 0xFFFF:
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._init_seq(seq)
                    self.received += 1
                    return True
            else:
                self.probation = _MIN_SEQUENTIAL - 1
                self.max_seq = seq
            return False
        if udelta < _MAX_DROPOUT:
            if seq < self.max_seq:
                self.cycles += _SEQ_MOD  # wrapped
            self.max_seq = seq
        elif udelta <= _SEQ_MOD - _MAX_MISORDER:
            if seq == self.bad_seq:
                # Two sequential packets after a big jump: the sender restarted.
                self._init_seq(seq)
            else:
                self.bad_seq = (seq + 1) & 0xFFFF
                return False
        # else: a duplicate or a reordered packet, counted but not moving max_seq.
        self.received += 1
        return True

    def _update_jitter(self, rtp_timestamp: int, arrival: float) -> None:
        """RFC 3550 A.8: J += (|D| - J) / 16, in timestamp units."""
        transit = arrival * self.clock_rate - (rtp_timestamp & _U32)
        if self._transit is not None:
            d = transit - self._transit
            # Timestamps wrap at 2^32; a difference across the wrap is small, not 2^32.
            d = (d + 2**31) % 2**32 - 2**31
            self._jitter += (abs(d) - self._jitter) / 16
        self._transit = transit

    def on_sender_report(self, report: SenderReport, arrival: float) -> None:
        """Remember this source's SR, so our next report block carries LSR and DLSR."""
        self._lsr = ntp_middle32(report.ntp_timestamp)
        self._lsr_arrival = arrival

    @property
    def extended_max(self) -> int:
        """Highest sequence number received, extended with the wrap count (A.3)."""
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        """Packets expected since the first (A.3)."""
        return self.extended_max - self.base_seq + 1 if self._started and not self.probation else 0

    @property
    def lost(self) -> int:
        """Cumulative packets lost (A.3); negative when duplicates outnumber losses."""
        return self.expected - self.received

    @property
    def jitter(self) -> float:
        """Interarrival jitter in timestamp units (A.8)."""
        return self._jitter

    def report_block(self, now: float) -> ReportBlock:
        """A report block on this source, closing the interval for fraction lost (A.3)."""
        expected = self.expected
        lost = max(-0x800000, min(self.lost, 0x7FFFFF))  # 24-bit signed field
        expected_interval = expected - self._expected_prior
        self._expected_prior = expected
        received_interval = self.received - self._received_prior
        self._received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval == 0 or lost_interval <= 0:
            fraction = 0
        else:
            fraction = min((lost_interval << 8) // expected_interval, 255)
        dlsr = 0
        if self._lsr_arrival is not None:
            dlsr = max(0, min(round((now - self._lsr_arrival) * 65536), _U32))
        return ReportBlock(
            ssrc=self.ssrc,
            fraction_lost=fraction,
            cumulative_lost=lost,
            highest_seq=self.extended_max & _U32,
            jitter=min(int(self._jitter), _U32),
            lsr=self._lsr,
            dlsr=dlsr,
        )


def round_trip_time(block: ReportBlock, arrival_ntp: int) -> float | None:
    """RTT in seconds from a report block about *our* stream, received at ``arrival_ntp``.

    RFC 3550 6.4.1: RTT = A - LSR - DLSR in 16.16 seconds. None when the block does
    not refer to an SR of ours (LSR zero) or the result would be negative.
    """
    if block.lsr == 0:
        return None
    rtt = (ntp_middle32(arrival_ntp) - block.lsr - block.dlsr) & _U32
    if rtt >= 1 << 31:
        return None  # negative: the peer's DLSR or our clock is off; no estimate
    return rtt / 65536

"""DTMF over RTP: RFC 4733 telephone-events, parsed, received as digits, generated.

One key press travels as a run of packets that all carry the RTP timestamp of
the moment the key went down (RFC 4733 2.5.1.2): a first packet with the marker
bit, updates every packet interval with the growing duration, and a final
packet with the E bit, sent three times in case one is lost (2.5.1.4). Packets
can be lost, reordered or duplicated, so the receiver keys events on that
timestamp:

- the first end packet of an event yields its ``DtmfDigit``; the copies, and any
  update that arrives after it, are recognised by their timestamp and ignored;
- an event whose end packets were all lost still yields its digit, when the next
  event begins or when ``poll(now)`` finds it silent for ``timeout`` seconds;
- a press longer than the 16-bit duration field (8.2 s at 8 kHz, 1.4 s at the
  48 kHz telephone-event clock next to Opus) is sent as segments, each starting
  where the previous ended (2.5.1.3); they are joined into one digit.

Exactly one digit per key press, whatever the network did. Sans-I/O: the caller
passes the RTP timestamp and the arrival time, and sends what ``DtmfSender``
returns at the offsets it gives.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from typing import Final

from media.errors import DtmfError

__all__ = [
    "DtmfDigit",
    "DtmfPacket",
    "DtmfReceiver",
    "DtmfSender",
    "TelephoneEvent",
    "build_telephone_event",
    "digit_to_event",
    "event_to_digit",
    "parse_telephone_event",
]

# RFC 4733 3.2: events 0-9, *, #, A-D, then flash.
_DIGITS: Final = "0123456789*#ABCD"
FLASH: Final = 16
_PAYLOAD = struct.Struct("!BBH")
_MAX_DURATION: Final = 0xFFFF
_U32: Final = 0xFFFFFFFF


def digit_to_event(digit: str) -> int:
    """The event code of a DTMF digit ("0"-"9", "*", "#", "A"-"D"; case-insensitive)."""
    index = _DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if index < 0:
        raise DtmfError(f"{digit!r} is not a DTMF digit (0-9, *, #, A-D)")
    return index


def event_to_digit(event: int) -> str | None:
    """The digit of an event code, or None for events that are not digits (flash, tones)."""
    return _DIGITS[event] if 0 <= event < len(_DIGITS) else None


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """One telephone-event payload (RFC 4733 2.3)."""

    event: int
    """Event code, 0-255 (0-15 are DTMF digits)."""
    end: bool
    """E bit: this packet reports the end of the event."""
    volume: int
    """Power level in -dBm0, 0-63 (larger is quieter)."""
    duration: int
    """Duration so far in RTP timestamp units, 0-65535."""

    @property
    def digit(self) -> str | None:
        """The DTMF digit, if the event is one."""
        return event_to_digit(self.event)


def parse_telephone_event(payload: bytes) -> TelephoneEvent:
    """Parse the first 4-octet event of a payload; DtmfError if it is shorter."""
    if len(payload) < _PAYLOAD.size:
        raise DtmfError(f"telephone-event payload is {len(payload)} bytes, need 4")
    event, flags, duration = _PAYLOAD.unpack_from(payload)
    # The R bit (0x40) is reserved: ignored on receipt (RFC 4733 2.3.4).
    return TelephoneEvent(event, bool(flags & 0x80), flags & 0x3F, duration)


def build_telephone_event(event: int, *, end: bool, volume: int, duration: int) -> bytes:
    """The 4-octet payload for one event report."""
    if not 0 <= event <= 255:
        raise DtmfError(f"event code {event} outside 0-255")
    if not 0 <= volume <= 63:
        raise DtmfError(f"volume {volume} outside 0-63 (-dBm0)")
    if not 0 <= duration <= _MAX_DURATION:
        raise DtmfError(f"duration {duration} outside 0-65535")
    return _PAYLOAD.pack(event, (0x80 if end else 0) | volume, duration)


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    """One key press, as received."""

    digit: str
    """The key: 0-9, *, #, A-D ("!" for a flash)."""
    duration_ms: int
    """How long it was held, from the last report received."""
    timestamp: int
    """RTP timestamp of the key-down (the event's first segment)."""
    volume: int
    """Power level in -dBm0."""
    ended: bool
    """False when no end packet arrived (the digit was closed by a timeout or the next event)."""


@dataclass(slots=True)
class _Event:
    start_ts: int
    segment_ts: int
    event: int
    volume: int
    previous_segments: int  # timestamp units of the segments already complete
    duration: int  # of the current segment
    last_arrival: float


class DtmfReceiver:
    """Turns a telephone-event packet stream into exactly one ``DtmfDigit`` per key press."""

    _REMEMBERED: Final = 32

    def __init__(self, clock_rate: int = 8000, *, timeout: float = 0.5) -> None:
        if clock_rate <= 0:
            raise ValueError(f"clock rate must be positive, got {clock_rate}")
        self.clock_rate = clock_rate
        self.timeout = timeout
        self._current: _Event | None = None
        # Timestamps of finished events (and segments), so that their retransmitted
        # end packets and late updates are not mistaken for new presses.
        self._finished: deque[int] = deque(maxlen=self._REMEMBERED)

    @property
    def pressed(self) -> str | None:
        """The digit currently held down, if any (e.g. to mute audio while it lasts)."""
        current = self._current
        if current is None:
            return None
        return event_to_digit(current.event) or "!"

    def feed(self, payload: bytes, timestamp: int, arrival: float) -> list[DtmfDigit]:
        """One telephone-event packet in; the digits it completes out (usually none or one).

        Raises DtmfError for a payload shorter than 4 bytes (the caller drops it).
        """
        report = parse_telephone_event(payload)
        timestamp &= _U32
        if timestamp in self._finished:
            return []
        done: list[DtmfDigit] = []
        current = self._current
        if current is not None and timestamp != current.segment_ts:
            if self._continues(current, report, timestamp):
                # RFC 4733 2.5.1.3: the next segment of a press longer than 0xFFFF.
                self._finished.append(current.segment_ts)
                current.previous_segments += _MAX_DURATION
                current.segment_ts = timestamp
                current.duration = 0
            else:
                done.append(self._close(current, ended=False))
                current = None
        if current is None:
            current = _Event(timestamp, timestamp, report.event, report.volume, 0, 0, arrival)
            self._current = current
        current.duration = max(current.duration, report.duration)
        current.volume = report.volume
        current.last_arrival = arrival
        if report.end:
            done.append(self._close(current, ended=True))
        return done

    def poll(self, now: float) -> DtmfDigit | None:
        """Close an event whose end packets were all lost, once silent for ``timeout``."""
        current = self._current
        if current is not None and now - current.last_arrival >= self.timeout:
            return self._close(current, ended=False)
        return None

    @staticmethod
    def _continues(current: _Event, report: TelephoneEvent, timestamp: int) -> bool:
        return (
            report.event == current.event
            and current.duration == _MAX_DURATION
            and timestamp == (current.segment_ts + _MAX_DURATION) & _U32
        )

    def _close(self, event: _Event, *, ended: bool) -> DtmfDigit:
        self._finished.append(event.segment_ts)
        self._current = None
        units = event.previous_segments + event.duration
        return DtmfDigit(
            digit=event_to_digit(event.event) or "!",
            duration_ms=round(units * 1000 / self.clock_rate),
            timestamp=event.start_ts,
            volume=event.volume,
            ended=ended,
        )


@dataclass(frozen=True, slots=True)
class DtmfPacket:
    """One packet to send: the caller adds the RTP header (next sequence number)."""

    payload: bytes
    """The 4-octet telephone-event payload."""
    timestamp: int
    """RTP timestamp: the key-down instant (the segment's start for long presses)."""
    marker: bool
    """RTP marker bit: set on the first packet of the press only."""
    offset: float
    """When to send it, in seconds after the key went down."""
    end: bool
    """True for the final report and its retransmissions."""


class DtmfSender:
    """Generates the packets of one key press (RFC 4733 2.5.1).

    A packet leaves every ``interval_ms``, each reporting how long the key has been
    down at that moment; the last one carries the E bit and is sent three times at
    the same interval, so losing one or two does not lose the end. Presses longer
    than 0xFFFF timestamp units are cut into segments, each ending (E bit clear)
    with three 0xFFFF reports and restarting at ``timestamp + 0xFFFF``.
    """

    def __init__(
        self,
        clock_rate: int = 8000,
        *,
        interval_ms: int = 20,
        volume: int = 10,
        end_repeats: int = 3,
    ) -> None:
        if clock_rate <= 0 or interval_ms <= 0 or end_repeats < 1:
            raise ValueError("clock rate, interval and end repeats must be positive")
        if not 0 <= volume <= 63:
            raise DtmfError(f"volume {volume} outside 0-63 (-dBm0)")
        self.clock_rate = clock_rate
        self.interval_ms = interval_ms
        self.volume = volume
        self.end_repeats = end_repeats

    def packets(self, digit: str, duration_ms: int, timestamp: int) -> list[DtmfPacket]:
        """Every packet of pressing ``digit`` for ``duration_ms`` from RTP time ``timestamp``."""
        event = FLASH if digit == "!" else digit_to_event(digit)
        if duration_ms <= 0:
            raise DtmfError(f"key press duration must be positive, got {duration_ms} ms")
        step = self.clock_rate * self.interval_ms // 1000
        total = self.clock_rate * duration_ms // 1000
        out: list[DtmfPacket] = []
        segment_start = 0  # units since key-down at which the current segment began
        elapsed = 0
        while True:
            elapsed = min(elapsed + step, total)
            in_segment = elapsed - segment_start
            segment_full = in_segment >= _MAX_DURATION and elapsed < total
            final = elapsed >= total
            duration = min(in_segment, _MAX_DURATION)
            ts = (timestamp + segment_start) & _U32
            offset = elapsed / self.clock_rate
            payload = build_telephone_event(event, end=final, volume=self.volume, duration=duration)
            repeats = self.end_repeats if (final or segment_full) else 1
            for copy in range(repeats):
                out.append(
                    DtmfPacket(
                        payload=payload,
                        timestamp=ts,
                        marker=not out,
                        offset=offset + copy * self.interval_ms / 1000,
                        end=final,
                    )
                )
            if final:
                # A segment's retransmissions overlap the next segment's first reports.
                out.sort(key=lambda packet: packet.offset)
                return out
            if segment_full:
                # The rest of this interval belongs to the next segment.
                segment_start += _MAX_DURATION

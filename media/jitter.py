"""Adaptive jitter buffer for one incoming RTP audio stream, sans-I/O.

The mixer ticks every 20 ms and asks each leg's buffer for the frame of that tick
(``get(now)``); the leg's socket handler hands packets over as they arrive
(``put(..., arrival)``). Neither call reads a clock. Each tick yields a ``Frame``:

- AUDIO: the payload for this slot, to decode;
- MISSING: the slot's packet is lost or not here yet, the caller conceals
  (``Decoder.conceal``);
- IDLE: nothing is expected (before the first packet, between talk spurts, after
  the stream stopped): play silence or comfort noise, not concealment.

Design, in the order a packet meets it:

1. Numbering. Sequence numbers are extended past 65535 and timestamps past 2^32
   (RFC 3550 A.1's cycle counting), so everything below compares plain ints. A new
   SSRC, or a sequence jump of more than 3000 (A.1's MAX_DROPOUT: the sender
   restarted), resets the stream.
2. Admission. A sequence number seen before is a duplicate; a timestamp whose slot
   was already played is late. Both are refused (``put`` returns False).
3. Target delay. The RFC 3550 A.8 interarrival jitter J drives the target
   ``clamp(frame + 3 J, min_delay, max_delay)``. It grows at once (and by a frame
   on every late packet: proof it is too short) but shrinks by at most one frame
   every two seconds, so one quiet moment does not undo what a burst taught.
4. Playout. A talk spurt starts when its first packet has waited ``target - frame``
   (the tick that follows is at most one frame later). From then on each tick
   plays the next slot of ``frame`` timestamp units:
   - its packet is here: AUDIO;
   - a later packet is here but not this one: MISSING, counted lost, move on;
   - nothing at all is buffered: MISSING, but *stay* on this slot (an underrun).
     This is how delay grows during a jitter burst: the burst's packets are
     played in order when they land instead of being thrown away as late. If
     what lands next is a later slot, the underrun ticks are re-counted as the
     losses they were, so an isolated loss costs one concealed frame, not two.
     After ``max_delay`` of underrun the stream is deemed stopped: IDLE.
   - the next packet starts a new talk spurt (marker bit, RFC 3551 4.1) or lies
     further ahead than ``max_delay``: re-anchor as at a spurt start rather than
     conceal a long gap. This is when the delay adapts for free.
5. Shrinking. When the smoothed wait of played packets exceeds what the target
   asks for by a frame, one frame is dropped (at most one per half second), so
   a sender whose clock runs fast (drift) or a burst's leftover delay drains
   slowly. A sender whose clock runs slow shows up as the odd underrun.
6. Bounds. Never more than ``max_delay`` of audio is held: the oldest goes first.

Assumes one frame per packet (ptime == frame), which is what the hub negotiates.
"""

from __future__ import annotations

import enum
import heapq
import math
from dataclasses import dataclass
from typing import Final, NamedTuple

__all__ = [
    "Frame",
    "FrameKind",
    "JitterBuffer",
    "JitterStats",
]

_MAX_DROPOUT: Final = 3000  # RFC 3550 A.1: a larger forward jump is a restart
_SEEN_WINDOW: Final = 1024  # sequence numbers remembered for duplicate detection
_JITTER_FACTOR: Final = 3.0
_SHRINK_TICKS_PER_FRAME: Final = 100  # target shrinks one frame per 2 s at 20 ms ticks
_DROP_INTERVAL_TICKS: Final = 25  # at most one shrink drop per 0.5 s at 20 ms ticks
_DELAY_SMOOTHING: Final = 1 / 16


class FrameKind(enum.Enum):
    """What the caller does with a tick's frame."""

    AUDIO = "audio"
    """Decode ``payload``."""
    MISSING = "missing"
    """Conceal: a packet was expected for this slot and is not here."""
    IDLE = "idle"
    """No audio is expected: silence or comfort noise, no concealment."""


class Frame(NamedTuple):
    """One playout slot's worth of the stream.

    A named tuple rather than a frozen dataclass: one is made per leg per tick, and a
    frozen dataclass's ``__init__`` (``object.__setattr__`` per field) cost a few percent
    of a 400-leg mixer's CPU.
    """

    kind: FrameKind
    """AUDIO, MISSING or IDLE."""
    payload: bytes = b""
    """The RTP payload (AUDIO only)."""
    timestamp: int | None = None
    """RTP timestamp (32-bit, as on the wire) of the slot; None when IDLE.

    Consecutive underruns all name the slot being waited for.
    """
    sequence_number: int | None = None
    """RTP sequence number (16-bit) of the packet played (AUDIO only)."""
    marker: bool = False
    """The packet's marker bit: the first packet of a talk spurt."""

    @property
    def missing(self) -> bool:
        """True when the caller must conceal this slot."""
        return self.kind is FrameKind.MISSING


_IDLE: Final = Frame(FrameKind.IDLE)


@dataclass(frozen=True, slots=True)
class JitterStats:
    """A snapshot of a buffer's counters (cumulative across resets) and estimates."""

    received: int
    """Packets accepted into the buffer."""
    duplicates: int
    """Packets refused because their sequence number was already seen."""
    late: int
    """Packets refused because their slot had already been played (or skipped)."""
    lost: int
    """Slots played MISSING whose packet never made it in time."""
    underruns: int
    """Slots played MISSING while waiting for a late stream (each adds a frame of delay)."""
    dropped: int
    """Packets thrown away to shrink the delay or to respect ``max_delay``."""
    resets: int
    """Times the stream was reset: new SSRC, or a sender restart (sequence jump)."""
    jitter_ms: float
    """RFC 3550 A.8 interarrival jitter."""
    delay_ms: float
    """Smoothed time played packets waited in the buffer."""
    target_ms: float
    """The delay the buffer currently aims at."""
    buffered: int
    """Packets currently held."""


@dataclass(slots=True)
class _Entry:
    seq: int  # extended
    timestamp: int  # extended
    payload: bytes
    arrival: float
    marker: bool


class JitterBuffer:
    """Reorders, paces and de-jitters one RTP stream into one frame per tick.

    ``frame_samples`` is the packet's duration in RTP clock units (160 for 20 ms of
    PCMU or G.722, 960 for Opus); the caller calls ``get`` once per such duration.
    """

    def __init__(
        self,
        clock_rate: int,
        frame_samples: int,
        *,
        min_delay_ms: float = 20,
        max_delay_ms: float = 200,
    ) -> None:
        if clock_rate <= 0 or frame_samples <= 0:
            raise ValueError(
                f"clock rate and frame size must be positive: {clock_rate}, {frame_samples}"
            )
        if not 0 <= min_delay_ms <= max_delay_ms:
            raise ValueError(
                f"need 0 <= min_delay_ms <= max_delay_ms, got {min_delay_ms}, {max_delay_ms}"
            )
        self.clock_rate = clock_rate
        self.frame_samples = frame_samples
        self._frame_s = frame_samples / clock_rate
        self._min_delay = max(min_delay_ms / 1000, self._frame_s)
        self._max_delay = max(max_delay_ms / 1000, self._min_delay)
        self._max_span = math.floor(self._max_delay * clock_rate)  # in timestamp units
        # Counters survive resets: they describe the leg, not one SSRC.
        self._received = 0
        self._duplicates = 0
        self._late = 0
        self._lost = 0
        self._underruns = 0
        self._dropped = 0
        self._resets = 0
        self._ssrc: int | None = None
        self._target = self._min_delay
        self._clear()

    def _clear(self) -> None:
        """Forget the stream (numbering, contents, playout and estimates), keep counters."""
        self._entries: dict[int, _Entry] = {}
        self._heap: list[int] = []
        self._seen: set[int] = set()
        self._highest_seq: int | None = None
        self._last_ts: int | None = None
        self._play_ts: int | None = None  # the next slot to play; None when idle
        self._played_until: int | None = None  # slots below this are gone (late)
        self._stalls = 0
        self._jitter = 0.0  # timestamp units, RFC 3550 A.8
        self._last_transit: float | None = None
        self._delay = 0.0
        self._delay_known = False
        self._ticks_since_drop = 0
        self._target = self._min_delay

    # ------------------------------------------------------------------ properties

    @property
    def stats(self) -> JitterStats:
        """Counters and estimates now."""
        return JitterStats(
            received=self._received,
            duplicates=self._duplicates,
            late=self._late,
            lost=self._lost,
            underruns=self._underruns,
            dropped=self._dropped,
            resets=self._resets,
            jitter_ms=self._jitter / self.clock_rate * 1000,
            delay_ms=self._delay * 1000,
            target_ms=self._target * 1000,
            buffered=len(self._entries),
        )

    @property
    def target_delay(self) -> float:
        """The delay aimed at, in seconds."""
        return self._target

    @property
    def playing(self) -> bool:
        """True inside a talk spurt (ticks yield AUDIO or MISSING), False when idle."""
        return self._play_ts is not None

    # ------------------------------------------------------------------ input

    def put(
        self,
        seq: int,
        timestamp: int,
        payload: bytes,
        arrival: float,
        *,
        ssrc: int | None = None,
        marker: bool = False,
    ) -> bool:
        """Offer one packet; False if refused (duplicate, or its slot was already played)."""
        if ssrc is not None:
            if self._ssrc is not None and ssrc != self._ssrc:
                self._reset()
            self._ssrc = ssrc
        ext_seq, ext_ts = self._extend(seq & 0xFFFF, timestamp & 0xFFFFFFFF)
        if ext_seq in self._seen or ext_ts in self._entries:
            self._duplicates += 1
            return False
        self._seen.add(ext_seq)
        if len(self._seen) > 2 * _SEEN_WINDOW:
            floor = ext_seq - _SEEN_WINDOW
            self._seen = {s for s in self._seen if s >= floor}
        self._update_jitter(ext_ts, arrival)
        if self._played_until is not None and ext_ts < self._played_until - self.frame_samples // 2:
            if self._highest_seq is not None and ext_seq >= self._highest_seq:
                # Newest by sequence yet "in the past" by timestamp: the sender's
                # timestamps jumped back. Start over rather than refuse it forever.
                self._reset()
                return self.put(seq, timestamp, payload, arrival, ssrc=ssrc, marker=marker)
            self._late += 1
            # Proof the delay is too short for this network: grow now.
            self._target = min(self._target + self._frame_s, self._max_delay)
            return False
        if self._highest_seq is None or ext_seq > self._highest_seq:
            self._highest_seq = ext_seq
        self._received += 1
        self._entries[ext_ts] = _Entry(ext_seq, ext_ts, payload, arrival, marker)
        heapq.heappush(self._heap, ext_ts)
        if marker and self._stalls:
            # The underrun was the silence before this spurt, not lateness: re-anchor.
            self._go_idle()
        return True

    def _reset(self) -> None:
        self._resets += 1
        self._clear()

    def _extend(self, seq: int, timestamp: int) -> tuple[int, int]:
        """Sequence and timestamp unwrapped against what came before (RFC 3550 A.1)."""
        if self._highest_seq is None or self._last_ts is None:
            self._last_ts = timestamp
            return seq, timestamp
        delta = ((seq - self._highest_seq + 0x8000) & 0xFFFF) - 0x8000
        if abs(delta) > _MAX_DROPOUT:
            # A restart of the sender (RFC 3550 A.1): sequence and timestamps start over.
            self._reset()
            self._last_ts = timestamp
            return seq, timestamp
        ext_seq = self._highest_seq + delta
        ts_delta = ((timestamp - self._last_ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        ext_ts = self._last_ts + ts_delta
        if ts_delta > 0:
            self._last_ts = ext_ts
        return ext_seq, ext_ts

    def _update_jitter(self, ext_ts: int, arrival: float) -> None:
        """RFC 3550 A.8, in timestamp units, and the target delay that follows from it."""
        transit = arrival * self.clock_rate - ext_ts
        if self._last_transit is not None:
            # Clamped: a timestamp jump (a sender resuming after a pause without
            # keeping its clock) is not network jitter, and one such packet must
            # not pin the target at max_delay for seconds.
            d = min(abs(transit - self._last_transit), self._max_span)
            self._jitter += (d - self._jitter) / 16
        self._last_transit = transit
        wanted = self._frame_s + _JITTER_FACTOR * self._jitter / self.clock_rate
        wanted = min(max(wanted, self._min_delay), self._max_delay)
        if wanted > self._target:
            self._target = wanted  # grow at once

    # ------------------------------------------------------------------ output

    def get(self, now: float) -> Frame:
        """The frame for the tick at ``now``; call once per frame duration."""
        self._shrink_target()
        self._ticks_since_drop += 1
        self._enforce_max_delay()
        if self._play_ts is None and not self._start(now):
            return _IDLE
        return self._play(now)

    def _shrink_target(self) -> None:
        wanted = self._frame_s + _JITTER_FACTOR * self._jitter / self.clock_rate
        wanted = min(max(wanted, self._min_delay), self._max_delay)
        if wanted < self._target:
            self._target = max(wanted, self._target - self._frame_s / _SHRINK_TICKS_PER_FRAME)

    def _enforce_max_delay(self) -> None:
        """Hold at most ``max_delay`` of audio: a backlog beyond it is dropped, oldest first."""
        if not self._heap:
            return
        # Slots before `oldest_kept` would end more than max_delay before the newest
        # packet's end; the one being played is not counted.
        oldest_kept = max(self._heap) - self._max_span
        while self._heap and self._heap[0] < oldest_kept:
            self._pop()
            self._dropped += 1
        if self._play_ts is not None and self._play_ts < oldest_kept:
            self._play_ts = self._heap[0] if self._heap else oldest_kept
            self._played_until = self._play_ts
            self._stalls = 0

    def _start(self, now: float) -> bool:
        """Start a spurt once its first packet has waited long enough; True if started."""
        if not self._heap:
            return False
        earliest = min(entry.arrival for entry in self._entries.values())
        if now < earliest + self._target - self._frame_s - 1e-9:
            return False
        self._play_ts = self._heap[0]
        self._stalls = 0
        return True

    def _go_idle(self) -> None:
        self._play_ts = None
        self._stalls = 0

    def _pop(self) -> _Entry:
        return self._entries.pop(heapq.heappop(self._heap))

    def _play(self, now: float) -> Frame:
        play_ts = self._play_ts
        assert play_ts is not None
        half = self.frame_samples // 2
        if not self._heap:
            self._stalls += 1
            if self._stalls * self._frame_s > self._max_delay + 1e-9:
                self._go_idle()  # the stream stopped; this was not jitter
                return _IDLE
            self._underruns += 1
            return Frame(FrameKind.MISSING, timestamp=play_ts & 0xFFFFFFFF)

        next_ts = self._heap[0]
        if self._stalls and next_ts >= play_ts + half:
            # The underrun ticks were in fact the slots of packets that are lost:
            # what arrived is further on. Count them so, and catch up.
            slots = min(self._stalls, (next_ts - play_ts + half) // self.frame_samples)
            self._underruns -= slots
            self._lost += slots
            play_ts += slots * self.frame_samples
            self._played_until = play_ts
        self._stalls = 0
        entry = self._entries[next_ts]
        gap = next_ts - play_ts

        if gap >= half and (entry.marker or gap > self._max_span):
            # A new talk spurt, or a jump too long to conceal: re-anchor on its packet.
            self._go_idle()
            self._played_until = play_ts
            if not self._start(now):
                return _IDLE
            play_ts = next_ts
            gap = 0

        if gap >= half:
            self._lost += 1
            self._play_ts = play_ts + self.frame_samples
            self._played_until = self._play_ts
            return Frame(FrameKind.MISSING, timestamp=play_ts & 0xFFFFFFFF)

        entry = self._pop()
        if self._should_drop(entry):
            self._dropped += 1
            self._ticks_since_drop = 0
            self._delay -= self._frame_s  # every later packet waits a frame less
            entry = self._pop()
        self._play_ts = entry.timestamp + self.frame_samples
        self._played_until = self._play_ts
        wait = max(now - entry.arrival, 0.0)
        if self._delay_known:
            self._delay += (wait - self._delay) * _DELAY_SMOOTHING
        else:
            self._delay, self._delay_known = wait, True  # no bias towards zero at start
        return Frame(
            FrameKind.AUDIO,
            payload=entry.payload,
            timestamp=entry.timestamp & 0xFFFFFFFF,
            sequence_number=entry.seq & 0xFFFF,
            marker=entry.marker,
        )

    def _should_drop(self, entry: _Entry) -> bool:
        """Shrink by one frame: waits run a frame over target and the next packet is here."""
        if self._ticks_since_drop < _DROP_INTERVAL_TICKS or not self._heap:
            return False
        # A spurt starts with waits in [target - frame, target): half a frame under
        # target on average. A frame over that is excess delay.
        if self._delay <= self._target + self._frame_s / 2:
            return False
        following = self._heap[0]
        if following != entry.timestamp + self.frame_samples:
            return False
        return not self._entries[following].marker

"""The conference engine: every bridge mixed once per 20 ms tick, every leg its own RTP.

A :class:`MediaEngine` owns the tick: one timer for the whole process, paced from an
absolute start time so it never drifts, skipping ahead (and counting) when the loop
was late. Each tick, every :class:`MediaBridge`

1. pulls one frame per leg out of its jitter buffer (decoded, concealed when a packet
   is missing, resampled to the bridge's rate) into one ``(slots, samples)`` array,
2. mixes it with its :class:`~media.mixer.Mixer` (mix-minus plus the relation matrix),
3. adds what its players play (beeps, prompts, music on hold),
4. pushes each leg its row (resampled, encoded, one RTP packet) and feeds the recorder.

Receiving is separate: each leg's RTP socket is drained in batches by a
:class:`~media.udp.BatchedUdpEndpoint`; a packet costs a header unpack and a jitter
buffer insert, nothing more, so the per-packet Python work stays small.

The engine knows nothing of SIP or dispatch; it reports talkers, DTMF digits and dead
legs through ``on_event``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from .codecs import (
    ALAW_DECODE_TABLE,
    ALAW_ENCODE_TABLE,
    ULAW_DECODE_TABLE,
    ULAW_ENCODE_TABLE,
    CodecSpec,
    Decoder,
    Encoder,
    G711Decoder,
    RepeatConcealer,
    new_decoder,
    new_encoder,
)
from .dtmf import DtmfReceiver, DtmfSender
from .jitter import FrameKind, JitterBuffer
from .mixer import Mixer
from .ports import PortAllocator, PortPair
from .resample import Resampler
from .rtcp import (
    ReceiverStats,
    build_bye,
    build_compound,
    build_rr,
    build_sdes,
    build_sr,
    ntp_from_unix,
)
from .talker import TalkerDetector
from .tones import Player
from .udp import BatchedUdpEndpoint

log = logging.getLogger(__name__)

Pcm = npt.NDArray[np.int16]
Address = tuple[str, int]

TICK = 0.020
KEEPALIVE = 0.5
"""Seconds between silent packets when nobody talks (silence suppression)."""
RTCP_INTERVAL = 5.0
_HEADER = struct.Struct("!BBHII")
_SEQ_TS_SSRC = struct.Struct("!HII")
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_NOT_SENDING = ("sendonly", "inactive")
_NOT_HEARD = ("recvonly", "inactive")
_AUDIO = FrameKind.AUDIO
_MISSING = FrameKind.MISSING
# G.711 is a table lookup: a bridge encodes all its G.711 legs' rows at once per tick.
_G711_ENCODE = {"PCMU": ULAW_ENCODE_TABLE, "PCMA": ALAW_ENCODE_TABLE}
_G711_DECODE = {"PCMU": ULAW_DECODE_TABLE, "PCMA": ALAW_DECODE_TABLE}
# How much decoded audio a G.711 decoder's concealer remembers (see MediaLeg.pull).
_PLC_HISTORY_MS = RepeatConcealer._HISTORY_MS


def _rtcp_interval() -> float:
    """RTCP_INTERVAL times a random factor in [0.5, 1.5] (RFC 3550 6.3.1).

    Legs that join together (a group call set up at once) would otherwise all build
    and send their reports in the same tick, every interval, delaying that tick's RTP.
    """
    return RTCP_INTERVAL * (0.5 + random.random())


# --- events -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TalkerChanged:
    bridge_id: str
    """The bridge."""
    leg_id: str
    """Who started or stopped talking."""
    talking: bool
    """True when the talk spurt starts."""


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    bridge_id: str
    """The bridge."""
    leg_id: str
    """Who pressed the key."""
    digit: str
    """0-9, *, #, A-D."""
    duration_ms: int
    """How long the key was held."""


@dataclass(frozen=True, slots=True)
class LegTimedOut:
    bridge_id: str
    """The bridge."""
    leg_id: str
    """The leg that sent no RTP for ``seconds``."""
    seconds: float
    """How long it has been silent on the wire."""


MediaEvent = TalkerChanged | DtmfReceived | LegTimedOut


class Recorder(Protocol):
    """What a bridge feeds its recording (recordings.recorder.BridgeRecorder fits)."""

    def on_mix(self, pcm: Pcm, now: float) -> None: ...

    def on_leg(self, leg_id: str, pcm: Pcm, now: float) -> None: ...

    def leg_joined(self, leg_id: str, peer: str, now: float) -> None: ...

    def leg_left(self, leg_id: str, now: float) -> None: ...

    def close(self, now: float) -> Any: ...


# --- legs ---------------------------------------------------------------------------------


class LegIO(Protocol):
    """What a bridge's tick needs of a leg: an RTP ``MediaLeg`` and a browser's
    ``media.webrtc.WebRtcLeg`` both fit (``MediaBridge.attach`` takes any)."""

    id: str
    peer: str
    joined: bool
    direction: str
    """The leg's own SDP direction (recvonly/inactive: not heard; sendonly: not sent to)."""
    codec: CodecSpec | None
    _encode_table: npt.NDArray[np.uint8] | None
    """Set when the bridge may encode the leg's row itself (G.711 at the bridge's rate);
    then it calls ``_push_encoded`` instead of ``push``."""
    _timed_out: bool

    def pull(self, now: float) -> Pcm | None: ...

    def push(self, pcm: Pcm, now: float) -> None: ...

    def _push_encoded(self, payload: bytes, now: float) -> None: ...

    def push_silence(self, now: float) -> None: ...

    def send_dtmf(self, digit: str, duration_ms: int = 160) -> None: ...

    def idle_for(self, now: float) -> float: ...

    def snapshot(self) -> dict[str, Any]: ...

    def close(self) -> None: ...

    def moved_to(self, bridge: MediaBridge) -> None:
        """Now in ``bridge`` (``MediaBridge.move_leg``): follow its rate, keep the wire."""



@dataclass
class LegStats:
    packets_in: int = 0
    bytes_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    invalid: int = 0
    """Not RTP, or a payload type nobody negotiated."""
    foreign: int = 0
    """RTP from an address other than the one latched on."""
    ssrc_changes: int = 0
    dtmf_digits: int = 0
    rtcp_in: int = 0
    rtcp_out: int = 0
    last_rx: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class MediaLeg:
    """One party's audio in a bridge: RTP in and out on its own port pair."""

    def __init__(self, bridge: MediaBridge, leg_id: str, pair: PortPair,
                 codec: CodecSpec | None, payload_type: int = 0,
                 dtmf_payload_type: int | None = None, *, peer: str = "") -> None:
        self.bridge = bridge
        self.id = leg_id
        self.peer = peer
        self.pair = pair
        self.direction = "sendrecv"
        """The leg's own SDP direction: sendonly = it holds us (we stop sending)."""
        self.stats = LegStats()
        self.remote: Address | None = None
        self.remote_rtcp: Address | None = None
        self.latched: Address | None = None
        self.latched_rtcp: Address | None = None
        self.joined = False
        self.ssrc = secrets.randbits(32)
        self.seq = secrets.randbits(16)
        self.ts = secrets.randbits(32)
        self._marker = True
        self._rx_ssrc: int | None = None
        self._dtmf_out: deque[tuple[float, bytes, int, bool]] = deque()
        self._dtmf_started: float | None = None
        self._next_rtcp = time.monotonic() + _rtcp_interval()
        self._timed_out = False
        self.created = bridge.engine.clock()
        self._last_sent = 0.0
        self._silent_payload: bytes | None = None
        self.codec: CodecSpec | None = None
        self._encode_table: npt.NDArray[np.uint8] | None = None
        self.payload_type: int = payload_type
        self.dtmf_payload_type: int | None = dtmf_payload_type
        if codec is not None:
            self.configure(codec, payload_type, dtmf_payload_type)
        loop = bridge.engine.loop
        self._rtp = BatchedUdpEndpoint(pair.rtp_sock, self._on_rtp, loop=loop,
                                       name=f"{leg_id}/rtp")
        self._rtcp = BatchedUdpEndpoint(pair.rtcp_sock, self._on_rtcp, loop=loop,
                                        name=f"{leg_id}/rtcp")

    def configure(self, codec: CodecSpec, payload_type: int, dtmf_payload_type: int | None,
                  ptime_ms: int = 20) -> None:
        """Set (or change) the negotiated codec: a leg's port exists before its SDP answer."""
        if self.codec is not None and (self.codec, self.payload_type,
                                       self.dtmf_payload_type) == (
                codec, payload_type, dtmf_payload_type):
            return
        self.codec = codec
        self.payload_type = payload_type
        self.dtmf_payload_type = dtmf_payload_type
        frame_ts = codec.timestamp_step(ptime_ms)
        self.frame_ts = frame_ts
        self.jitter = JitterBuffer(codec.clock_rate, frame_ts)
        self.decoder: Decoder = new_decoder(codec)
        self.encoder: Encoder = new_encoder(codec, ptime_ms=ptime_ms)
        # G.711 decoding is a table lookup plus the concealer's bookkeeping, which only
        # matters once a packet is lost: see pull().
        self._decode_table = (_G711_DECODE.get(codec.name)
                              if isinstance(self.decoder, G711Decoder) else None)
        self._plc_settled = True
        self._plc_backlog: list[bytes] = []
        self._plc_backlog_samples = 0
        self._plc_history = codec.sample_rate * _PLC_HISTORY_MS // 1000
        self._frame_samples = codec.samples_per_frame()
        """PCM samples in one of the codec's frames (asked on every pull)."""
        rate = self.bridge.rate
        self._down = Resampler(codec.sample_rate, rate) if codec.sample_rate != rate else None
        self._up = Resampler(rate, codec.sample_rate) if codec.sample_rate != rate else None
        # Set for G.711 at the bridge's rate: MediaBridge.tick then encodes this leg's
        # row together with the others' (the very bytes self.encoder.encode would make).
        self._encode_table = _G711_ENCODE.get(codec.name) if self._up is None else None
        self.rx = ReceiverStats(0, codec.clock_rate)
        self._rx_ssrc = None
        self.dtmf_in = DtmfReceiver(codec.clock_rate)
        self._silent_payload = None

    def moved_to(self, bridge: MediaBridge) -> None:
        """The leg now belongs to ``bridge`` (``MediaBridge.move_leg``).

        Everything on the wire stays: ports, SSRC, sequence and timestamp, the latched
        address, the codec. What depends on the bridge follows it: the resamplers (the
        new bridge may mix at another rate) and the jitter buffer, restarted so the
        first frame pulled there is not one that waited through the move.
        """
        self.bridge = bridge
        codec = self.codec
        if codec is None:
            return
        rate = bridge.rate
        self._down = Resampler(codec.sample_rate, rate) if codec.sample_rate != rate else None
        self._up = Resampler(rate, codec.sample_rate) if codec.sample_rate != rate else None
        self._encode_table = _G711_ENCODE.get(codec.name) if self._up is None else None
        self.jitter = JitterBuffer(codec.clock_rate, self.frame_ts)

    # -- addressing ----------------------------------------------------------------------
    @property
    def local_address(self) -> Address:
        return (self.bridge.engine.advertised_host, self.pair.rtp_port)

    def set_remote(self, host: str, port: int, rtcp_port: int | None = None) -> None:
        """Where the leg's SDP says it receives. A changed address clears the latch."""
        if host in ("0.0.0.0", "::") or port == 0:
            self.remote = None
            return
        new = (host, port)
        if new != self.remote:
            self.latched = None
            self.latched_rtcp = None
        self.remote = new
        self.remote_rtcp = (host, rtcp_port if rtcp_port else port + 1)

    def set_direction(self, direction: str) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {direction!r}")
        self.direction = direction

    # -- receiving -----------------------------------------------------------------------------
    def _on_rtp(self, batch: list[tuple[bytes, Any]]) -> None:
        now = self.bridge.engine.clock()
        stats = self.stats
        codec = self.codec
        if codec is None:
            return  # no answer yet: nothing to decode it with
        for data, addr in batch:
            size = len(data)
            if size < 12 or data[0] & 0xC0 != 0x80:
                stats.invalid += 1
                continue
            source = (addr[0], addr[1])
            if self.latched is None:
                # Symmetric RTP: media goes back where it comes from (NAT).
                self.latched = source
            elif source != self.latched:
                stats.foreign += 1
                continue
            first = data[0]
            offset = 12 + 4 * (first & 0x0F)
            if first & 0x10:
                if size < offset + 4:
                    stats.invalid += 1
                    continue
                offset += 4 + 4 * ((data[offset + 2] << 8) | data[offset + 3])
            end = size
            if first & 0x20:
                end -= data[-1]
            if offset > end:
                stats.invalid += 1
                continue
            second = data[1]
            pt = second & 0x7F
            seq, ts, ssrc = _SEQ_TS_SSRC.unpack_from(data, 2)
            stats.packets_in += 1
            stats.bytes_in += size
            stats.last_rx = now
            self._timed_out = False
            if pt == self.payload_type:
                if ssrc != self._rx_ssrc:
                    if self._rx_ssrc is not None:
                        stats.ssrc_changes += 1
                    self._rx_ssrc = ssrc
                    self.rx = ReceiverStats(ssrc, codec.clock_rate)
                self.rx.update(seq, ts, now)
                self.jitter.put(seq, ts, data[offset:end], now, ssrc=ssrc,
                                marker=bool(second & 0x80))
            elif pt == self.dtmf_payload_type:
                for digit in self.dtmf_in.feed(data[offset:end], ts, now):
                    stats.dtmf_digits += 1
                    self.bridge._dtmf(self, digit.digit, digit.duration_ms)
            elif pt in (13, 19):
                pass  # comfort noise: silence is what we play anyway
            else:
                stats.invalid += 1

    def _on_rtcp(self, batch: list[tuple[bytes, Any]]) -> None:
        for data, addr in batch:
            if len(data) < 8 or data[0] & 0xC0 != 0x80:
                continue
            if self.latched_rtcp is None:
                self.latched_rtcp = (addr[0], addr[1])
            self.stats.rtcp_in += 1

    def pull(self, now: float) -> Pcm | None:
        """This tick's audio from the leg at the bridge's rate, or None when it is silent."""
        codec = self.codec
        if codec is None:
            return None
        frame = self.jitter.get(now)
        kind = frame.kind
        if kind is _AUDIO:
            table = self._decode_table
            if table is not None and self._plc_settled:
                # G.711 since the last loss: the decoder would return exactly this lookup
                # (its concealer only cross-fades the first good frame after a loss) and
                # note the frame in its history. The history is only read on a loss, so
                # the frames are handed to it then (_settle_plc), not one by one.
                payload = frame.payload
                pcm = table[np.frombuffer(payload, dtype=np.uint8)]
                backlog = self._plc_backlog
                backlog.append(payload)
                self._plc_backlog_samples += len(payload)
                if self._plc_backlog_samples - len(backlog[0]) >= self._plc_history:
                    self._plc_backlog_samples -= len(backlog.pop(0))
            else:
                try:
                    pcm = self.decoder.decode(frame.payload)
                except ValueError:
                    self.stats.invalid += 1
                    pcm = self._conceal(codec.samples_per_frame())
                else:
                    self._plc_settled = True
        elif kind is _MISSING:
            pcm = self._conceal(self._frame_samples)
        else:
            return None
        expected = self._frame_samples
        if pcm.size != expected:
            # A packet of another duration (an empty one, 10 ms, 30 ms...): the mix
            # takes exactly one frame per tick, so conceal, pad or cut to fit.
            if pcm.size == 0:
                self.stats.invalid += 1
                pcm = self._conceal(expected)
            elif pcm.size < expected:
                pcm = np.concatenate([pcm, np.zeros(expected - pcm.size, dtype=np.int16)])
            else:
                pcm = pcm[:expected]
        if self._down is not None:
            pcm = self._down.process(pcm)
        return pcm

    def _conceal(self, samples: int) -> Pcm:
        self._settle_plc()
        self._plc_settled = False
        return self.decoder.conceal(samples)

    def _settle_plc(self) -> None:
        """Give the decoder the G.711 frames pull() decoded without it (its history)."""
        if self._plc_backlog:
            for payload in self._plc_backlog:
                self.decoder.decode(payload)
            self._plc_backlog.clear()
            self._plc_backlog_samples = 0

    # -- sending -----------------------------------------------------------------------------
    @property
    def destination(self) -> Address | None:
        return self.latched or self.remote

    def push(self, pcm: Pcm, now: float) -> None:
        """Send this tick's frame (what the leg may hear) as one RTP packet."""
        if self.codec is None:
            return
        dest = self.destination
        self.ts = (self.ts + self.frame_ts) & 0xFFFFFFFF
        if dest is None or self.direction in ("sendonly", "inactive"):
            return
        if self._dtmf_out and self._send_dtmf(now, dest):
            return
        if self._up is not None:
            pcm = self._up.process(pcm)
        payload = self.encoder.encode(pcm)
        self._send(self.payload_type, self.ts, payload, dest)
        if now >= self._next_rtcp:
            self._send_rtcp(now)

    def _push_encoded(self, payload: bytes, now: float) -> None:
        """``push`` for a frame the bridge has already encoded with ``_encode_table``."""
        dest = self.latched or self.remote
        self.ts = ts = (self.ts + self.frame_ts) & 0xFFFFFFFF
        if dest is None or self.direction in _NOT_SENDING:
            return
        if self._dtmf_out and self._send_dtmf(now, dest):
            return
        # _send inlined: this runs for every leg of every bridge every tick.
        self.seq = seq = (self.seq + 1) & 0xFFFF
        second = self.payload_type
        if self._marker:
            second |= 0x80
            self._marker = False
        packet = _HEADER.pack(0x80, second, seq, ts, self.ssrc) + payload
        self._last_sent = now
        if self._rtp.send(packet, dest):
            stats = self.stats
            stats.packets_out += 1
            stats.bytes_out += len(packet)
        if now >= self._next_rtcp:
            self._send_rtcp(now)

    def push_silence(self, now: float) -> None:
        """A tick with nothing to hear: no packet, but time moves on (RFC 3551 4.1).

        A silent frame still goes out every ``KEEPALIVE`` seconds, so NATs and the
        phone's own RTP timeout see the stream alive; the next packet after a gap
        carries the marker bit (start of a talk spurt).
        """
        if self.codec is None:
            return
        self.ts = (self.ts + self.frame_ts) & 0xFFFFFFFF
        self._marker = True
        if now - self._last_sent >= KEEPALIVE:
            dest = self.destination
            if dest is not None and self.direction not in ("sendonly", "inactive"):
                if self._silent_payload is None:
                    self._silent_payload = self.encoder.encode(
                        np.zeros(self.codec.samples_per_frame(), dtype=np.int16))
                self._send(self.payload_type, self.ts, self._silent_payload, dest)
        if now >= self._next_rtcp:
            self._send_rtcp(now)

    def _send(self, pt: int, ts: int, payload: bytes, dest: Address, marker: bool = False) -> None:
        self.seq = (self.seq + 1) & 0xFFFF
        second = pt | (0x80 if (marker or self._marker) else 0)
        self._marker = False
        packet = _HEADER.pack(0x80, second, self.seq, ts, self.ssrc) + payload
        self._last_sent = self.bridge.engine.clock()
        if self._rtp.send(packet, dest):
            self.stats.packets_out += 1
            self.stats.bytes_out += len(packet)

    def send_dtmf(self, digit: str, duration_ms: int = 160) -> None:
        """Queue an RFC 4733 key press toward this leg (sent instead of audio meanwhile)."""
        if self.dtmf_payload_type is None or self.codec is None:
            return
        sender = DtmfSender(self.codec.clock_rate)
        start_ts = (self.ts + self.frame_ts) & 0xFFFFFFFF
        first = True
        for p in sender.packets(digit, duration_ms, start_ts):
            self._dtmf_out.append((p.offset, p.payload, p.timestamp, p.marker or first))
            first = False
        self._dtmf_started = None

    def _send_dtmf(self, now: float, dest: Address) -> bool:
        if self._dtmf_started is None:
            self._dtmf_started = now
        elapsed = now - self._dtmf_started + 1e-6
        sent = False
        while self._dtmf_out and self._dtmf_out[0][0] <= elapsed:
            _, payload, ts, marker = self._dtmf_out.popleft()
            self._send(self.dtmf_payload_type or 101, ts, payload, dest, marker)
            sent = True
        if not self._dtmf_out:
            self._dtmf_started = None
        return sent or bool(self._dtmf_out)

    def _send_rtcp(self, now: float) -> None:
        self._next_rtcp = now + _rtcp_interval()
        dest = self.latched_rtcp or self.remote_rtcp
        if dest is None:
            return
        blocks = [self.rx.report_block(now)] if self._rx_ssrc is not None else []
        if self.stats.packets_out:
            report = build_sr(self.ssrc, ntp_from_unix(time.time()), self.ts,
                              self.stats.packets_out, self.stats.bytes_out, blocks)
        else:
            report = build_rr(self.ssrc, blocks)
        packet = build_compound([report, build_sdes(self.ssrc, f"hub@{self.bridge.id}")])
        if self._rtcp.send(packet, dest):
            self.stats.rtcp_out += 1

    # -- bookkeeping ----------------------------------------------------------------------------
    def idle_for(self, now: float) -> float:
        last = self.stats.last_rx
        return now - (last if last is not None else self.created)

    def snapshot(self) -> dict[str, Any]:
        if self.codec is None:
            return {"leg_id": self.id, "peer": self.peer, "codec": None,
                    "local_port": self.pair.rtp_port, **self.stats.as_dict()}
        j = self.jitter.stats
        return {
            "leg_id": self.id,
            "peer": self.peer,
            "codec": self.codec.name,
            "local_port": self.pair.rtp_port,
            "remote": f"{self.destination[0]}:{self.destination[1]}" if self.destination else None,
            "direction": self.direction,
            **self.stats.as_dict(),
            "lost": self.rx.lost if self._rx_ssrc is not None else 0,
            "jitter_ms": round(j.jitter_ms, 2),
            "late": j.late,
            "concealed": j.lost + j.underruns,
            "buffer_ms": round(j.delay_ms, 1),
        }

    def close(self) -> None:
        dest = self.latched_rtcp or self.remote_rtcp
        if dest is not None and self.codec is not None and self.stats.packets_out:
            # RFC 3550 6.6: say goodbye, so the other end stops waiting for us.
            packet = build_compound([build_rr(self.ssrc, []), build_bye(self.ssrc, "leg ended")])
            self._rtcp.send(packet, dest)
        log.info("leg %s (%s) closed: %s", self.id, self.peer, self.snapshot())
        self._rtp.close()
        self._rtcp.close()
        # The endpoints hold bound methods of this leg: cut the cycle so the leg is
        # freed at once, not by a full cyclic collection (a pause on the media loop).
        self._rtp.on_batch = _ignore
        self._rtcp.on_batch = _ignore
        self.bridge.engine.ports.release(self.pair)


def _ignore(batch: list[tuple[bytes, Any]]) -> None:
    """The receive handler of a closed leg's endpoints."""


# --- bridges ------------------------------------------------------------------------------------


@dataclass
class BridgeStats:
    ticks: int = 0
    mix_seconds: float = 0.0
    max_tick_seconds: float = 0.0


class MediaBridge:
    """Legs mixed together at one sample rate."""

    def __init__(self, engine: MediaEngine, bridge_id: str, rate: int) -> None:
        if rate not in (8000, 16000, 48000):
            raise ValueError(f"bridge rate must be 8000, 16000 or 48000, not {rate}")
        self.engine = engine
        self.id = bridge_id
        self.rate = rate
        self.samples = int(rate * TICK)
        self.mixer = Mixer(self.samples, capacity=8)
        self.legs: dict[str, LegIO] = {}
        self.players: list[Player] = []
        self.leg_players: dict[str, list[Player]] = {}
        self.recorder: Recorder | None = None
        self.record_legs = False
        self.stats = BridgeStats()
        self._frames = np.zeros((self.mixer.capacity, self.samples), dtype=np.int16)
        self._active = np.zeros(self.mixer.capacity, dtype=bool)
        self._talker = TalkerDetector(self.mixer.capacity)
        self._silence = np.zeros(self.samples, dtype=np.int16)
        self._joined: list[tuple[LegIO, int]] = []
        self.talking: set[str] = set()
        self.closed = False

    # -- legs ------------------------------------------------------------------------------------
    def add_leg(self, leg_id: str, codec: CodecSpec | None, payload_type: int = 0,
                dtmf_payload_type: int | None = None, *, peer: str = "",
                join: bool = True) -> MediaLeg:
        """A new leg with its own RTP port pair; ``join`` puts it in the mix at once."""
        if leg_id in self.legs:
            raise ValueError(f"leg {leg_id} already in bridge {self.id}")
        pair = self.engine.ports.allocate()
        try:
            leg = MediaLeg(self, leg_id, pair, codec, payload_type, dtmf_payload_type, peer=peer)
        except BaseException:
            self.engine.ports.release(pair)
            raise
        self.legs[leg_id] = leg
        if join:
            self.join(leg_id)
        return leg

    def attach(self, leg: LegIO, *, join: bool = True) -> None:
        """Add a leg built elsewhere (a browser's WebRTC leg); ``remove_leg`` closes it."""
        if leg.id in self.legs:
            raise ValueError(f"leg {leg.id} already in bridge {self.id}")
        self.legs[leg.id] = leg
        if join:
            self.join(leg.id)

    def join(self, leg_id: str) -> None:
        leg = self.legs[leg_id]
        if leg.joined:
            return
        if leg.codec is None:
            raise ValueError(f"leg {leg_id} has no codec yet: configure it before joining")
        leg.joined = True
        self.mixer.add(leg_id)
        self._joined_changed()
        if self.mixer.capacity > self._frames.shape[0]:
            self._frames = np.zeros((self.mixer.capacity, self.samples), dtype=np.int16)
            self._active = np.zeros(self.mixer.capacity, dtype=bool)
            self._talker = TalkerDetector(self.mixer.capacity)
        if self.recorder is not None:
            self.recorder.leg_joined(leg_id, leg.peer, time.time())

    def _joined_changed(self) -> None:
        """The legs in the mix with their slots, built once per change, not per tick."""
        self._joined = [(leg, self.mixer.slot(leg.id)) for leg in self.legs.values()
                        if leg.joined]

    def remove_leg(self, leg_id: str) -> None:
        leg = self.legs.pop(leg_id, None)
        if leg is None:
            return
        if leg.joined:
            slot = self.mixer.slot(leg_id)
            self._talker.reset(slot)
            self._active[slot] = False
            self._frames[slot] = 0
            self.mixer.remove(leg_id)
            self._joined_changed()
            if self.recorder is not None:
                self.recorder.leg_left(leg_id, time.time())
        self.talking.discard(leg_id)
        self.leg_players.pop(leg_id, None)
        leg.close()

    def move_leg(self, leg_id: str, to: MediaBridge) -> LegIO:
        """Move a leg into another bridge without a gap on the wire (attended transfer).

        The leg leaves this bridge's mix as ``remove_leg`` would take it out, but is not
        closed: its sockets, SSRC, sequence numbers and remote address go on, so the
        phone sees one unbroken RTP stream. It joins ``to``'s mix if it was in this one
        (an unanswered leg stays out); what it was playing here (music on hold, a
        prompt) stays here; a talk spurt in progress ends here (``TalkerChanged``).
        Both recordings note the move (``leg_left`` here, ``leg_joined`` there).
        """
        if to is self:
            raise ValueError(f"leg {leg_id} is already in bridge {self.id}")
        if to.closed or to.engine is not self.engine:
            raise ValueError(f"bridge {to.id} cannot take legs")
        if leg_id in to.legs:
            raise ValueError(f"leg {leg_id} already in bridge {to.id}")
        leg = self.legs.get(leg_id)
        if leg is None:
            raise ValueError(f"no leg {leg_id} in bridge {self.id}")
        joined = leg.joined
        if joined:
            slot = self.mixer.slot(leg_id)
            self._talker.reset(slot)
            self._active[slot] = False
            self._frames[slot] = 0
            self.mixer.remove(leg_id)
        del self.legs[leg_id]
        leg.joined = False
        if joined:
            self._joined_changed()
            if self.recorder is not None:
                self.recorder.leg_left(leg_id, time.time())
        if leg_id in self.talking:
            self.talking.discard(leg_id)
            self.engine.emit(TalkerChanged(self.id, leg_id, False))
        self.leg_players.pop(leg_id, None)
        leg.moved_to(to)
        to.legs[leg_id] = leg
        if joined:
            to.join(leg_id)
        log.info("leg %s (%s) moved from bridge %s to %s", leg_id, leg.peer, self.id, to.id)
        return leg

    # -- playback ---------------------------------------------------------------------------------
    def play(self, samples: Pcm, *, leg_id: str | None = None, loop: bool = False) -> Player:
        """Play PCM at the bridge's rate to everyone, or to one leg only."""
        player = Player(samples, self.samples, loop=loop)
        if leg_id is None:
            self.players.append(player)
        else:
            self.leg_players.setdefault(leg_id, []).append(player)
        return player

    def stop_player(self, player: Player) -> None:
        if player in self.players:
            self.players.remove(player)
        for players in self.leg_players.values():
            if player in players:
                players.remove(player)

    # -- the tick ---------------------------------------------------------------------------------
    def tick(self, now: float, wall: float) -> None:
        started = time.perf_counter()
        mixer = self.mixer
        frames = self._frames
        active = self._active
        joined = self._joined
        speaking = 0
        for leg, slot in joined:
            pcm = leg.pull(now)
            if pcm is None or leg.direction in _NOT_HEARD:
                if active[slot]:
                    frames[slot] = 0
                    active[slot] = False
            else:
                frames[slot] = pcm
                active[slot] = True
                speaking += 1
        if speaking == 0 and not self.players and not self.leg_players and not self.talking:
            # Nobody says anything: everyone would hear silence. Send none (RFC 3551
            # silence suppression, with a keep-alive), mix nothing.
            for leg, _ in joined:
                leg.push_silence(now)
            if self.recorder is not None:
                self.recorder.on_mix(self._silence, wall)
            self._account(started)
            return
        if len(joined) == 2 and mixer.plain and not self.players:
            # A two-party call: each hears the other, no need for the general mix.
            (leg_a, slot_a), (leg_b, slot_b) = joined
            out = frames
            total: npt.NDArray[Any] = frames[slot_a].astype(np.int32) + frames[slot_b]
            rows: dict[int, Pcm] | None = {slot_a: frames[slot_b], slot_b: frames[slot_a]}
        else:
            out = mixer.mix(frames)
            total = mixer.last_total
            if self.players:
                extra = self._read_players(self.players)
                if extra is not None:
                    out = np.clip(out.astype(np.int32) + extra, -32768, 32767).astype(np.int16)
                    total = total + extra
            rows = None
        leg_players = self.leg_players
        encoded: dict[int, bytes] = {}
        size = self.samples
        for leg, slot in joined:
            table = leg._encode_table
            own = leg_players.get(leg.id) if leg_players else None
            if table is not None and rows is None and not own:
                # G.711 at the bridge's rate: every such row encoded in one lookup.
                codes = encoded.get(id(table))
                if codes is None:
                    codes = encoded[id(table)] = table[out.view(np.uint16)].tobytes()
                start = slot * size
                leg._push_encoded(codes[start:start + size], now)
                continue
            row = rows[slot] if rows is not None else out[slot]
            if own:
                extra = self._read_players(own)
                if extra is not None:
                    row = np.clip(row.astype(np.int32) + extra, -32768, 32767).astype(np.int16)
            leg.push(row, now)
        self._detect_talkers(frames, active, now)
        if self.recorder is not None:
            mix = np.clip(total, -32768, 32767).astype(np.int16)
            self.recorder.on_mix(mix, wall)
            if self.record_legs:
                for leg, slot in joined:
                    self.recorder.on_leg(leg.id, frames[slot].copy(), wall)
        self._account(started)

    def _detect_talkers(self, frames: Pcm, active: npt.NDArray[np.bool_], now: float) -> None:
        for slot, started_talking in self._talker.update(frames, active, now):
            leg_id = self._leg_at(slot)
            if leg_id is None:
                continue
            if started_talking:
                self.talking.add(leg_id)
            else:
                self.talking.discard(leg_id)
            self.engine.emit(TalkerChanged(self.id, leg_id, started_talking))

    def _account(self, started: float) -> None:
        spent = time.perf_counter() - started
        self.stats.ticks += 1
        self.stats.mix_seconds += spent
        if spent > self.stats.max_tick_seconds:
            self.stats.max_tick_seconds = spent

    def _read_players(self, players: list[Player]) -> Pcm | None:
        mixed: npt.NDArray[np.int32] | None = None
        for player in list(players):
            frame = player.read()
            if frame is None:
                players.remove(player)
                continue
            mixed = frame.astype(np.int32) if mixed is None else mixed + frame
        if mixed is None:
            return None
        return np.clip(mixed, -32768, 32767).astype(np.int16)

    def _leg_at(self, slot: int) -> str | None:
        for leg_id in self.mixer.legs():
            if self.mixer.slot(leg_id) == slot:
                return leg_id
        return None

    def _dtmf(self, leg: MediaLeg, digit: str, duration_ms: int) -> None:
        self.engine.emit(DtmfReceived(self.id, leg.id, digit, duration_ms))

    def snapshot(self) -> dict[str, Any]:
        ticks = max(self.stats.ticks, 1)
        return {
            "bridge_id": self.id,
            "rate": self.rate,
            "legs": [leg.snapshot() for leg in self.legs.values()],
            "talking": sorted(self.talking),
            "ticks": self.stats.ticks,
            "mix_us_avg": round(self.stats.mix_seconds / ticks * 1e6, 1),
            "mix_us_max": round(self.stats.max_tick_seconds * 1e6, 1),
            "recording": self.recorder is not None,
        }

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for leg_id in list(self.legs):
            self.remove_leg(leg_id)
        if self.recorder is not None:
            try:
                self.recorder.close(time.time())
            except Exception:
                log.exception("bridge %s: closing its recording failed", self.id)
            self.recorder = None
        self.engine._forget(self)


# --- the engine ----------------------------------------------------------------------------------


@dataclass
class EngineStats:
    ticks: int = 0
    late_ticks: int = 0
    """Ticks that started more than one tick late (the loop was busy)."""
    skipped_ticks: int = 0
    max_lateness: float = 0.0
    tick_errors: int = 0
    started: float = field(default_factory=time.monotonic)


class MediaEngine:
    """All bridges of one process, and the clock that drives them."""

    def __init__(self, ports: PortAllocator, *, advertised_host: str,
                 loop: asyncio.AbstractEventLoop | None = None, rtp_timeout: float = 60.0,
                 on_event: Callable[[MediaEvent], None] | None = None) -> None:
        self.ports = ports
        self.advertised_host = advertised_host
        self.loop = loop or asyncio.get_running_loop()
        self.rtp_timeout = rtp_timeout
        self.on_event = on_event
        self.bridges: dict[str, MediaBridge] = {}
        self.stats = EngineStats()
        self._timer: asyncio.TimerHandle | None = None
        self._start = 0.0
        self._tick_no = 0
        self._next_check = 0.0
        self.clock = self.loop.time

    def create_bridge(self, bridge_id: str, rate: int = 8000) -> MediaBridge:
        if bridge_id in self.bridges:
            raise ValueError(f"bridge {bridge_id} exists")
        bridge = MediaBridge(self, bridge_id, rate)
        self.bridges[bridge_id] = bridge
        if self._timer is None:
            self._start = self.loop.time()
            self._tick_no = 0
            self._schedule()
        return bridge

    def _forget(self, bridge: MediaBridge) -> None:
        if self.bridges.get(bridge.id) is bridge:
            del self.bridges[bridge.id]

    def emit(self, event: MediaEvent) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(event)
        except Exception:
            log.exception("media event handler failed on %s", type(event).__name__)

    def _schedule(self) -> None:
        self._tick_no += 1
        self._timer = self.loop.call_at(self._start + self._tick_no * TICK, self._tick)

    def _tick(self) -> None:
        now = self.loop.time()
        lateness = now - (self._start + self._tick_no * TICK)
        stats = self.stats
        stats.ticks += 1
        if lateness > TICK:
            stats.late_ticks += 1
            stats.max_lateness = max(stats.max_lateness, lateness)
            if lateness > 5 * TICK:
                # Don't try to catch up a long stall with a burst of ticks.
                skipped = int(lateness / TICK)
                stats.skipped_ticks += skipped
                self._tick_no += skipped
        wall = time.time()
        for bridge in list(self.bridges.values()):
            try:
                bridge.tick(now, wall)
            except Exception:
                stats.tick_errors += 1
                log.exception("bridge %s: tick failed", bridge.id)
        if now >= self._next_check:
            self._next_check = now + 1.0
            self._check_timeouts(now)
        if self.bridges:
            self._schedule()
        else:
            self._timer = None

    def _check_timeouts(self, now: float) -> None:
        for bridge in list(self.bridges.values()):
            for leg in list(bridge.legs.values()):
                if leg._timed_out or leg.direction == "inactive":
                    continue
                idle = leg.idle_for(now)
                if idle >= self.rtp_timeout:
                    leg._timed_out = True
                    self.emit(LegTimedOut(bridge.id, leg.id, idle))

    def snapshot(self) -> dict[str, Any]:
        return {
            "bridges": len(self.bridges),
            "legs": sum(len(b.legs) for b in self.bridges.values()),
            "ticks": self.stats.ticks,
            "late_ticks": self.stats.late_ticks,
            "skipped_ticks": self.stats.skipped_ticks,
            "max_lateness_ms": round(self.stats.max_lateness * 1000, 1),
            "tick_errors": self.stats.tick_errors,
        }

    def close(self) -> None:
        for bridge in list(self.bridges.values()):
            bridge.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

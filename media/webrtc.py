"""A browser's microphone and speaker as a leg of a bridge (WebRTC through aiortc, Opus).

aiortc does ICE, DTLS-SRTP, RTP and Opus; this module only moves decoded audio between
its tracks and a :class:`~media.engine.MediaBridge`, in the bridge's own terms:

- in: a task reads the browser's track (aiortc's decoded ``AudioFrame``: 48 kHz s16,
  usually stereo), mixes it down to mono, cuts it into 20 ms frames and resamples them
  to the bridge's rate into a short queue that ``pull(now)`` drains one frame per tick.
  The queue is bounded (``MAX_QUEUE`` frames, the oldest dropped): a browser whose
  clock runs fast, or a burst after a stall, can never build up latency.
- out: ``push(pcm, now)`` resamples the tick's row to 48 kHz into another short queue;
  :class:`BridgeTrack`, the ``MediaStreamTrack`` aiortc encodes and sends, hands aiortc
  one 20 ms frame per ``recv()``, paced from an absolute start time (like aiortc's
  ``AudioStreamTrack``), silence when the bridge gave nothing.

Both queues start playing after ``PREFILL`` frames and prime again after an underrun:
the tick and aiortc's sender run on separate 20 ms cadences of the same clock, so
one frame of slack keeps a tick that happens to run just after ``recv()`` from
turning into a gap.

ICE: aioice gathers a host candidate on every interface except loopback. A hub must
instead advertise one configured address (the ``--media-address`` a NAT forwards,
like Janus's ``nat_1_1_mapping``). :class:`HostCandidates` replaces the gathering of
each of a peer connection's ICE agents: one UDP socket from the hub's own RTP port
range (so the firewall/NAT rules for RTP cover WebRTC too), bound where the hub binds
its RTP, announced as a single host candidate with the advertised address. No STUN
or TURN server is ever asked (the peer connections have ``iceServers=[]``).

The leg knows nothing of SDP or signalling: ``gateways/webrtc.py`` owns the peer
connections (offer/answer) and closes them when their leg leaves its bridge.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aioice.ice import Connection, StunProtocol
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, AudioResampler

from .codecs import OPUS, CodecSpec
from .ports import PortAllocator, PortPair
from .resample import Resampler

if TYPE_CHECKING:
    import numpy.typing as npt

    from .engine import MediaBridge, Pcm

log = logging.getLogger(__name__)

WEBRTC_RATE = 48000
"""aiortc's Opus runs at 48 kHz."""
FRAME_SAMPLES = 960
"""20 ms at 48 kHz."""
FRAME_SECONDS = FRAME_SAMPLES / WEBRTC_RATE
MAX_QUEUE = 5
"""Frames (100 ms) either queue may hold; beyond that the oldest is dropped."""
PREFILL = 2
"""Frames a queue collects before it plays, at the start and after an underrun."""
_TIME_BASE = fractions.Fraction(1, WEBRTC_RATE)
_STALL = MAX_QUEUE * FRAME_SECONDS
"""A ``recv()`` this late re-anchors the pacing instead of catching up in a burst."""


@dataclass
class WebRtcLegStats:
    frames_in: int = 0
    """20 ms frames received from the browser (after mixing down and cutting)."""
    frames_out: int = 0
    """20 ms frames handed to aiortc to encode and send."""
    dropped_in: int = 0
    """Frames from the browser dropped because the queue was full (latency cap)."""
    dropped_out: int = 0
    """Frames for the browser dropped because aiortc did not take them in time."""
    underruns_in: int = 0
    """Ticks that found the browser's queue empty while it was talking."""
    underruns_out: int = 0
    """Frames aiortc asked for while the bridge had given none (sent as silence)."""
    last_rx: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class FrameQueue:
    """A short FIFO of equal-sized PCM frames: bounded, primed, counting its losses."""

    def __init__(self, *, limit: int = MAX_QUEUE, prefill: int = PREFILL) -> None:
        if not 1 <= prefill <= limit:
            raise ValueError(f"prefill {prefill} must be within 1..{limit}")
        self.limit = limit
        self.prefill = prefill
        self.dropped = 0
        self.underruns = 0
        self._frames: deque[Pcm] = deque()
        self._priming = True

    def __len__(self) -> int:
        return len(self._frames)

    def put(self, frame: Pcm) -> None:
        frames = self._frames
        if len(frames) >= self.limit:
            frames.popleft()
            self.dropped += 1
        frames.append(frame)

    def get(self) -> Pcm | None:
        """The next frame, or None while priming (at the start, after running dry)."""
        frames = self._frames
        if self._priming:
            if len(frames) < self.prefill:
                return None
            self._priming = False
        if not frames:
            self._priming = True
            self.underruns += 1
            return None
        return frames.popleft()

    def clear(self) -> None:
        self._frames.clear()
        self._priming = True


class BridgeTrack(MediaStreamTrack):
    """What the bridge says to the browser: the audio track aiortc encodes (Opus) and sends.

    ``feed`` takes 48 kHz mono frames of ``FRAME_SAMPLES``; ``recv`` returns one per
    20 ms from an absolute start time, silence when none is queued.
    """

    kind = "audio"

    def __init__(self, *, clock: Callable[[], float] | None = None) -> None:
        super().__init__()
        self.queue = FrameQueue()
        self.frames_out = 0
        self._clock = clock
        self._start: float | None = None
        self._pts = 0
        self._silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)

    def feed(self, pcm: Pcm) -> None:
        self.queue.put(pcm)

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        clock = self._clock or asyncio.get_running_loop().time
        now = clock()
        if self._start is None:
            self._start = now
        else:
            self._pts += FRAME_SAMPLES
            wait = self._start + self._pts / WEBRTC_RATE - now
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -_STALL:
                # The loop stalled: carry on from now rather than send a burst.
                self._start = now - self._pts / WEBRTC_RATE
        pcm = self.queue.get()
        if pcm is None:
            pcm = self._silence
        frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = WEBRTC_RATE
        frame.pts = self._pts
        frame.time_base = _TIME_BASE
        self.frames_out += 1
        return frame


class WebRtcLeg:
    """A browser in a bridge: fits the engine's ``LegIO`` like an RTP ``MediaLeg``."""

    kind = "webrtc"

    def __init__(self, bridge: MediaBridge, leg_id: str, *, peer: str = "") -> None:
        self.bridge = bridge
        self.id = leg_id
        self.peer = peer
        self.joined = False
        self.direction = "sendrecv"
        self.codec: CodecSpec | None = OPUS
        self.state = "new"
        """The peer connection's state, kept here for ``snapshot`` (set by the session)."""
        self.stats = WebRtcLegStats()
        self.track = BridgeTrack(clock=bridge.engine.clock)
        self.on_close: list[Callable[[WebRtcLeg], None]] = []
        self.closed = False
        # The engine encodes G.711 rows for legs with a table; this leg encodes itself.
        self._encode_table: npt.NDArray[np.uint8] | None = None
        self._timed_out = False
        self.created = bridge.engine.clock()
        rate = bridge.rate
        self._in = FrameQueue()
        self._down = Resampler(WEBRTC_RATE, rate) if rate != WEBRTC_RATE else None
        self._up = Resampler(rate, WEBRTC_RATE) if rate != WEBRTC_RATE else None
        # Whatever aiortc's decoder hands over (format, layout, rate) becomes s16 mono 48 kHz.
        self._normalise = AudioResampler(format="s16", layout="mono", rate=WEBRTC_RATE)
        self._pending: Pcm = np.zeros(0, dtype=np.int16)
        self._silence = np.zeros(bridge.samples, dtype=np.int16)
        self._reader: asyncio.Task[None] | None = None

    def moved_to(self, bridge: MediaBridge) -> None:
        """The leg now belongs to ``bridge`` (``MediaBridge.move_leg``): its rate, its frames."""
        self.bridge = bridge
        rate = bridge.rate
        self._down = Resampler(WEBRTC_RATE, rate) if rate != WEBRTC_RATE else None
        self._up = Resampler(rate, WEBRTC_RATE) if rate != WEBRTC_RATE else None
        self._silence = np.zeros(bridge.samples, dtype=np.int16)
        self._in.clear()  # frames queued at the old bridge's rate

    # -- in: the browser's microphone -------------------------------------------------------
    def consume(self, track: MediaStreamTrack) -> None:
        """Read the browser's audio track until it ends or the leg closes."""
        if self._reader is not None:
            self._reader.cancel()
        self._reader = asyncio.get_running_loop().create_task(
            self._read(track), name=f"webrtc-in-{self.id}")

    async def _read(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                if isinstance(frame, AudioFrame):
                    self.receive(frame)
        except MediaStreamError:
            log.info("leg %s (%s): the browser's audio track ended", self.id, self.peer)

    def receive(self, frame: AudioFrame) -> None:
        """One decoded frame from the browser, any size: cut into 20 ms frames and queued."""
        parts: list[Pcm] = [np.asarray(out.to_ndarray(), dtype=np.int16).reshape(-1)
                            for out in self._normalise.resample(frame)]
        if not parts:
            return
        if self._pending.size:
            parts.insert(0, self._pending)
        samples: Pcm = parts[0] if len(parts) == 1 else np.concatenate(parts)
        whole = samples.size // FRAME_SAMPLES
        for k in range(whole):
            pcm = samples[k * FRAME_SAMPLES:(k + 1) * FRAME_SAMPLES]
            if self._down is not None:
                pcm = self._down.process(pcm)
            self._in.put(pcm)
        self._pending = samples[whole * FRAME_SAMPLES:].copy()
        if whole:
            self.stats.frames_in += whole
            self.stats.last_rx = self.bridge.engine.clock()
            self._timed_out = False

    def pull(self, now: float) -> Pcm | None:
        """This tick's audio from the browser at the bridge's rate, or None."""
        return self._in.get()

    # -- out: the browser's speaker ------------------------------------------------------------
    def push(self, pcm: Pcm, now: float) -> None:
        if self.direction in ("sendonly", "inactive"):
            pcm = self._silence
        if self._up is not None:
            pcm = self._up.process(pcm)
        self.track.feed(pcm)

    def push_silence(self, now: float) -> None:
        self.push(self._silence, now)

    def _push_encoded(self, payload: bytes, now: float) -> None:
        raise RuntimeError(f"leg {self.id}: a WebRTC leg encodes its own audio (no G.711 row)")

    def send_dtmf(self, digit: str, duration_ms: int = 160) -> None:
        """Browsers play no RFC 4733 events (aiortc sends none): the key press is dropped."""
        log.debug("leg %s: DTMF %s not sent to a browser", self.id, digit)

    # -- bookkeeping ---------------------------------------------------------------------------
    def idle_for(self, now: float) -> float:
        last = self.stats.last_rx
        return now - (last if last is not None else self.created)

    def snapshot(self) -> dict[str, Any]:
        stats = self.stats
        stats.dropped_in = self._in.dropped
        stats.underruns_in = self._in.underruns
        stats.dropped_out = self.track.queue.dropped
        stats.underruns_out = self.track.queue.underruns
        stats.frames_out = self.track.frames_out
        return {
            "leg_id": self.id,
            "peer": self.peer,
            "kind": self.kind,
            "codec": self.codec.name if self.codec else None,
            "direction": self.direction,
            "state": self.state,
            **stats.as_dict(),
        }

    def close(self) -> None:
        """Leave: stop both directions and tell the owner (who closes the peer connection)."""
        if self.closed:
            return
        self.closed = True
        self.track.stop()
        if self._reader is not None:
            self._reader.cancel()
        log.info("leg %s (%s) closed: %s", self.id, self.peer, self.snapshot())
        for callback in self.on_close:
            try:
                callback(self)
            except Exception:
                log.exception("leg %s: close callback failed", self.id)


class HostCandidates:
    """ICE host candidates of one peer connection, pinned to the hub's media address.

    ``apply(pc)`` (before ``setLocalDescription``) replaces ``gather_candidates`` of each
    of the connection's aioice agents: instead of one socket per interface (loopback
    excluded), one socket taken from ``ports`` (the hub's RTP range, bound on its bind
    address) and one host candidate that says ``advertised_host``. Remote checks reach
    that socket whatever the address says, which is what a 1:1 NAT needs. ``release()``
    gives the ports back once the connection is closed.

    aioice has no public hook for this: the replacement sets the same private fields
    its own ``gather_candidates`` sets (checked by tests/unit/test_media_webrtc.py).
    """

    def __init__(self, ports: PortAllocator, advertised_host: str) -> None:
        self.ports = ports
        self.advertised_host = advertised_host
        self.pairs: list[PortPair] = []
        self._pinned: set[int] = set()

    def apply(self, pc: RTCPeerConnection) -> None:
        transports = [t.receiver.transport for t in pc.getTransceivers()]
        if pc.sctp is not None:
            transports.append(pc.sctp.transport)
        for dtls in transports:
            connection = dtls.transport.iceGatherer._connection
            if id(connection) in self._pinned:
                continue
            self._pinned.add(id(connection))
            connection.gather_candidates = self._gatherer(connection)  # type: ignore[method-assign]

    def _gatherer(self, connection: Connection) -> Callable[[], Any]:
        async def gather_candidates() -> None:
            if connection._local_candidates_start:
                return
            connection._local_candidates_start = True
            loop = asyncio.get_running_loop()
            host = self.advertised_host
            for component in sorted(connection._components):
                pair = self.ports.allocate()
                self.pairs.append(pair)
                _, protocol = await loop.create_datagram_endpoint(
                    lambda: StunProtocol(connection), sock=pair.rtp_sock)
                protocol.local_candidate = Candidate(
                    foundation=candidate_foundation("host", "udp", host),
                    component=component, transport="udp",
                    priority=candidate_priority(component, "host"),
                    host=host, port=pair.rtp_port, type="host")
                connection._protocols.append(protocol)
                connection._local_candidates.append(protocol.local_candidate)
            connection._local_candidates_end = True

        return gather_candidates

    def release(self) -> None:
        """Return the sockets' ports to the range (after the peer connection closed)."""
        for pair in self.pairs:
            self.ports.release(pair)
        self.pairs.clear()

"""Browsers as legs: one aiortc peer connection per browser leg, answered by the hub.

The console posts a browser's SDP offer; :meth:`WebRtcSessions.offer` answers it with
a peer connection whose only audio track is the bridge's (Opus), whose ICE agent has
no STUN/TURN server and a single host candidate on the hub's media address
(:class:`media.webrtc.HostCandidates`), and attaches a :class:`~media.webrtc.WebRtcLeg`
to the bridge. The session lives as long as its leg:

- the leg leaves its bridge (kicked, call ended, bridge closed) -> the peer connection
  is closed and its port returned;
- the peer connection fails (ICE or DTLS) or the browser closes it -> the leg leaves
  the bridge.

Each session's state moves through :meth:`WebRtcSession._set_state` only, which checks
the move against ``_ALLOWED``, logs ``old -> new`` and emits a :class:`WebRtcLegChanged`
to the listeners (the call service).

Offers are sanitised before aiortc sees them: mDNS host candidates (``*.local``, what a
browser without microphone permission offers) are dropped, since resolving them would
mean multicast queries on the hub's networks; the browser's checks still reach the hub
and become peer-reflexive candidates. An offer must carry audio only.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)

from media.engine import MediaBridge, MediaEngine
from media.ports import PortAllocator
from media.webrtc import HostCandidates, WebRtcLeg

log = logging.getLogger(__name__)

MAX_OFFER_BYTES = 64 * 1024
"""A browser's audio offer is 2-6 KB; anything far bigger is refused unread."""


class WebRtcError(ValueError):
    """An offer the hub cannot answer; the message says why (for a 422)."""

    error_id = "webrtc-offer"


class WebRtcState(enum.Enum):
    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"


_ALLOWED: dict[WebRtcState, frozenset[WebRtcState]] = {
    WebRtcState.NEW: frozenset({WebRtcState.CONNECTING, WebRtcState.CONNECTED,
                                WebRtcState.CLOSED}),
    WebRtcState.CONNECTING: frozenset({WebRtcState.CONNECTED, WebRtcState.CLOSED}),
    WebRtcState.CONNECTED: frozenset({WebRtcState.CLOSED}),
    WebRtcState.CLOSED: frozenset(),
}

# aiortc's RTCPeerConnection.connectionState -> ours ("failed" ends the session).
_FROM_AIORTC = {
    "new": WebRtcState.NEW,
    "connecting": WebRtcState.CONNECTING,
    "connected": WebRtcState.CONNECTED,
    "failed": WebRtcState.CLOSED,
    "closed": WebRtcState.CLOSED,
}


@dataclass(frozen=True, slots=True)
class WebRtcLegChanged:
    bridge_id: str
    """The bridge the browser's leg is in."""
    leg_id: str
    """The browser's leg."""
    state: str
    """new, connecting, connected or closed (a ``WebRtcState`` value)."""
    reason: str
    """Why it changed (``ice/dtls failed``, ``leg left the bridge``, ...)."""


def sanitise_offer(sdp: str) -> tuple[str, int]:
    """The offer without mDNS (``.local``) candidates, and how many were dropped."""
    kept: list[str] = []
    dropped = 0
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            fields = line.split()
            if len(fields) >= 5 and fields[4].lower().endswith(".local"):
                dropped += 1
                continue
        kept.append(line)
    return "\r\n".join(kept) + "\r\n", dropped


class WebRtcSession:
    """One browser leg and its peer connection."""

    def __init__(self, owner: WebRtcSessions, leg: WebRtcLeg, pc: RTCPeerConnection,
                 candidates: HostCandidates) -> None:
        self.owner = owner
        self.leg = leg
        self.pc = pc
        self.candidates = candidates
        self.state = WebRtcState.NEW
        self.close_reason = ""
        self._closing: asyncio.Task[None] | None = None

    @property
    def id(self) -> str:
        return self.leg.id

    def _set_state(self, new: WebRtcState, reason: str = "") -> None:
        old = self.state
        if new is old:
            return
        if new not in _ALLOWED[old]:
            # aiortc drives this; a surprising report is logged, never raised into it.
            log.warning("webrtc %s: ignoring %s -> %s", self.id, old.value, new.value)
            return
        self.state = new
        self.leg.state = new.value
        log.info("webrtc %s (%s): %s -> %s %s", self.id, self.leg.peer, old.value, new.value,
                 reason)
        self.owner._emit(WebRtcLegChanged(self.leg.bridge.id, self.id, new.value, reason))

    def _on_connection_state(self) -> None:
        state = _FROM_AIORTC.get(self.pc.connectionState)
        if state is None or self.state is WebRtcState.CLOSED:
            return
        if state is WebRtcState.CLOSED:
            reason = ("ice/dtls failed" if self.pc.connectionState == "failed"
                      else "closed by the browser")
            self.end(reason)
        else:
            self._set_state(state)

    def end(self, reason: str) -> None:
        """Take the leg out of its bridge (which closes the peer connection)."""
        if not self.close_reason:
            self.close_reason = reason
        bridge = self.leg.bridge
        if bridge.legs.get(self.id) is self.leg:
            bridge.remove_leg(self.id)
        else:
            self.leg.close()

    def _leg_closed(self, leg: WebRtcLeg) -> None:
        self._set_state(WebRtcState.CLOSED, self.close_reason or "leg left the bridge")
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(
                self._close_pc(), name=f"webrtc-close-{self.id}")

    async def _close_pc(self) -> None:
        try:
            await self.pc.close()
        except Exception:
            log.exception("webrtc %s: closing the peer connection failed", self.id)
        finally:
            self.candidates.release()
            self.owner._forget(self)

    async def wait_closed(self) -> None:
        if self._closing is not None:
            await asyncio.shield(self._closing)


class WebRtcSessions:
    """Answers browsers' offers with WebRTC legs in bridges; closes them when they leave.

    ``advertised_host`` is the one address put in ICE candidates (default: the engine's
    media address); the sockets come from ``ports`` (default: the engine's RTP range).
    """

    def __init__(self, engine: MediaEngine, advertised_host: str | None = None, *,
                 ports: PortAllocator | None = None) -> None:
        self.engine = engine
        self.advertised_host = advertised_host or engine.advertised_host
        self.ports = ports or engine.ports
        self.sessions: dict[str, WebRtcSession] = {}
        self.listeners: list[Callable[[WebRtcLegChanged], None]] = []

    async def offer(self, sdp: str, *, bridge: MediaBridge, leg_id: str, peer: str = "browser",
                    join: bool = True) -> str:
        """Answer a browser's offer with a leg ``leg_id`` in ``bridge``; returns the answer SDP.

        Raises :class:`WebRtcError` when the offer is unusable (nothing is left behind).
        """
        if not isinstance(sdp, str) or not sdp.strip():
            raise WebRtcError("the offer is empty")
        if len(sdp) > MAX_OFFER_BYTES:
            raise WebRtcError(f"the offer is larger than {MAX_OFFER_BYTES} bytes")
        if leg_id in self.sessions or leg_id in bridge.legs:
            raise WebRtcError(f"leg {leg_id} already exists")
        if bridge.closed:
            raise WebRtcError(f"bridge {bridge.id} is closed")
        sdp, dropped = sanitise_offer(sdp)
        if dropped:
            log.info("webrtc %s: ignored %d mDNS candidate(s) in the offer", leg_id, dropped)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        leg = WebRtcLeg(bridge, leg_id, peer=peer)
        candidates = HostCandidates(self.ports, self.advertised_host)
        session = WebRtcSession(self, leg, pc, candidates)
        leg.on_close.append(session._leg_closed)

        @pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "audio":
                leg.consume(track)

        pc.on("connectionstatechange", session._on_connection_state)
        self.sessions[leg_id] = session
        try:
            transceiver = pc.addTransceiver(leg.track, direction="sendrecv")
            opus = [c for c in RTCRtpSender.getCapabilities("audio").codecs
                    if c.mimeType.lower() == "audio/opus"]
            transceiver.setCodecPreferences(opus)
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            except Exception as exc:
                raise WebRtcError(f"unusable offer: {exc or type(exc).__name__}") from exc
            if (transceiver.mid is None or len(pc.getTransceivers()) != 1
                    or pc.sctp is not None):
                raise WebRtcError("the offer must hold one audio stream and nothing else")
            candidates.apply(pc)
            await pc.setLocalDescription(await pc.createAnswer())
            if bridge.closed:
                raise WebRtcError(f"bridge {bridge.id} closed meanwhile")
        except BaseException:
            self.sessions.pop(leg_id, None)
            leg.on_close.clear()
            leg.close()
            await pc.close()
            candidates.release()
            raise
        bridge.attach(leg, join=join)
        answer = pc.localDescription
        log.info("webrtc %s (%s): answered, joins bridge %s", leg_id, peer, bridge.id)
        return answer.sdp

    def get(self, leg_id: str) -> WebRtcSession | None:
        return self.sessions.get(leg_id)

    def close(self, leg_id: str, reason: str = "closed by the hub") -> bool:
        """End a browser's leg (and its peer connection); False if there is none."""
        session = self.sessions.get(leg_id)
        if session is None:
            return False
        session.end(reason)
        return True

    async def aclose(self) -> None:
        """End every session and wait for the peer connections to close."""
        for session in list(self.sessions.values()):
            session.end("shutdown")
        closing = [s.wait_closed() for s in list(self.sessions.values())]
        await asyncio.gather(*closing, return_exceptions=True)

    def snapshot(self) -> list[dict[str, Any]]:
        return [s.leg.snapshot() for s in self.sessions.values()]

    def _forget(self, session: WebRtcSession) -> None:
        if self.sessions.get(session.id) is session:
            del self.sessions[session.id]

    def _emit(self, event: WebRtcLegChanged) -> None:
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:
                log.exception("webrtc listener failed on %s", event)

"""RTP/RTCP relay: keeps the hub in the media path of every two-party call.

A ``MediaRelay`` (one per hub) owns ``RelaySession``s. A session is the smallest
bridge: two legs, A and B, each a ``RelaySide`` with its own RTP and RTCP sockets
(a ``PortPair``). Whatever a phone sends to its side's socket leaves through the
*other* side's socket towards the other phone, so each phone sees one address,
the one the B2BUA put in the SDP it sent that phone (symmetric RTP, RFC 4961).

Where to send a side's media is learned twice:
- from SDP (``set_remote``), the address the phone says it listens on;
- from the wire: the source of the first valid packet a side receives is *latched*
  and used instead of the SDP address, which is what makes phones behind NAT
  work. After that, packets from other sources are dropped (a late re-learn is
  the "RTP bleed" hole); a new SDP address (re-INVITE) clears the latch.

Direction follows SDP (RFC 3264 section 5.1) as declared by the side's own party:
a side that is ``recvonly`` or ``inactive`` has its packets dropped, and a side
that is ``sendonly`` or ``inactive`` receives nothing. RTCP is relayed whatever
the direction, as RFC 3264 section 5.1 asks.

The payload is never looked at: G.711, Opus, comfort noise and RFC 4733
telephone-events pass through byte for byte. The only check is RTP version 2 and
a 12-byte header (RTCP: version 2, 8 bytes, packet type 192-223).

The per-packet path is the batch handler of ``RelaySide``; it keeps every
attribute it needs in locals and updates counters once per batch. A later mixer
will replace that handler (``BatchedUdpEndpoint.on_batch``) and keep the rest.

Time is an argument (``idle_for(now)``, ``check_timeouts(now)``); the only clock
read on the packet path is one ``time.monotonic()`` per batch.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import itertools
import logging
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from media.errors import SessionClosed
from media.ports import PortAllocator, PortPair
from media.udp import Address, Batch, BatchedUdpEndpoint

__all__ = [
    "DEFAULT_HOLD_TIMEOUT",
    "DEFAULT_RTP_TIMEOUT",
    "Direction",
    "MediaRelay",
    "RelaySession",
    "RelaySide",
    "Side",
    "SideStats",
    "TimeoutHook",
]

logger = logging.getLogger(__name__)

DEFAULT_RTP_TIMEOUT = 60.0
# A held call can be legitimately silent for a long time (inactive hold sends nothing).
DEFAULT_HOLD_TIMEOUT = 3600.0
DEFAULT_CHECK_INTERVAL = 1.0

_RTP_MIN = 12
_RTCP_MIN = 8

TimeoutHook = Callable[["RelaySession"], None]


class Side(enum.Enum):
    """The two legs of a relay session."""

    A = "a"
    B = "b"

    @property
    def other(self) -> Side:
        return Side.B if self is Side.A else Side.A


class Direction(enum.Enum):
    """An SDP direction attribute (RFC 3264 section 5.1), from the declaring party's view."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        """The party sends media: packets from it are forwarded."""
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        """The party receives media: packets are forwarded to it."""
        return self in (Direction.SENDRECV, Direction.RECVONLY)


@dataclass(frozen=True, slots=True)
class SideStats:
    """A snapshot of one side's counters. "In" is from that side's phone, "out" is to it."""

    packets_in: int
    """Valid RTP packets received from the side's phone (latched source)."""
    bytes_in: int
    """UDP payload bytes of those packets."""
    packets_out: int
    """RTP packets sent to the side's phone (relayed from the other side)."""
    bytes_out: int
    """UDP payload bytes of those packets."""
    rtcp_packets_in: int
    """Valid RTCP packets received from the side's phone."""
    rtcp_packets_out: int
    """RTCP packets sent to the side's phone."""
    invalid: int
    """Datagrams dropped as not RTP/RTCP (wrong version, too short, wrong RTCP type)."""
    foreign: int
    """Valid packets dropped because they came from a source other than the latched one."""
    dropped: int
    """Valid packets received but not forwarded: direction, no destination yet, send failed."""
    last_rx: float | None
    """Monotonic time of the last valid RTP packet received, None if none yet."""


class _SessionLog(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every record with the session id, so one call's lines can be grepped."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = self.extra or {}
        return f"[relay {extra.get('session')}] {msg}", kwargs


def _normalise_remote(host: str, port: int, ipv6_socket: bool) -> Address | None:
    """A sendto address for an SDP connection address and port, None for 'do not send'."""
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} outside 0-65535")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        # Resolving names here would block the loop; the SDP layer resolves first.
        raise ValueError(f"remote media host must be an IP literal, got {host!r}") from None
    # RFC 3264 8.4: port 0 rejects the stream; RFC 2543-style hold sends c=0.0.0.0.
    if port == 0 or ip.is_unspecified:
        return None
    if ip.version == 6:
        if not ipv6_socket:
            raise ValueError(f"IPv6 remote {host} for an IPv4 media socket")
        return (str(ip), port)
    if ipv6_socket:
        return (f"::ffff:{ip}", port)
    return (str(ip), port)


class RelaySide:
    """One leg of a relay session: its RTP/RTCP sockets, remote address and counters.

    Created by ``RelaySession``; callers read ``local_address`` for their SDP and
    change the remote and direction through the session.
    """

    __slots__ = (
        "_ipv6",
        "_latched_rtcp",
        "_latched_rtp",
        "_log",
        "_peer",
        "_ports",
        "_quiet_since",
        "_remote_rtcp",
        "_remote_rtp",
        "_rtcp",
        "_rtcp_dest",
        "_rtp",
        "_rtp_dest",
        "_direction",
        "_forward",
        "advertised_host",
        "bytes_in",
        "bytes_out",
        "dropped",
        "foreign",
        "invalid",
        "last_rx",
        "packets_in",
        "packets_out",
        "rtcp_packets_in",
        "rtcp_packets_out",
        "side",
    )

    def __init__(
        self,
        side: Side,
        ports: PortPair,
        *,
        advertised_host: str,
        loop: asyncio.AbstractEventLoop,
        log: logging.LoggerAdapter[logging.Logger],
        now: float,
    ) -> None:
        self.side = side
        self.advertised_host = advertised_host
        """The host to put in SDP for this side (the bind address unless overridden)."""
        self._direction = Direction.SENDRECV
        self._ports = ports
        self._ipv6 = ":" in ports.host
        self._log = log
        self._peer: RelaySide | None = None
        self._remote_rtp: Address | None = None
        self._remote_rtcp: Address | None = None
        self._latched_rtp: Address | None = None
        self._latched_rtcp: Address | None = None
        self._rtp_dest: Address | None = None
        self._rtcp_dest: Address | None = None
        self._forward = True
        self._quiet_since = now
        self.packets_in = 0
        self.bytes_in = 0
        self.packets_out = 0
        self.bytes_out = 0
        self.rtcp_packets_in = 0
        self.rtcp_packets_out = 0
        self.invalid = 0
        self.foreign = 0
        self.dropped = 0
        self.last_rx: float | None = None
        name = f"{side.value}:{ports.rtp_port}"
        self._rtp = BatchedUdpEndpoint(ports.rtp_sock, self._on_rtp, loop=loop, name=name)
        try:
            self._rtcp = BatchedUdpEndpoint(
                ports.rtcp_sock, self._on_rtcp, loop=loop, name=f"{name}+1"
            )
        except BaseException:
            self._rtp.close()
            raise

    # -- what the B2BUA reads -------------------------------------------------

    @property
    def rtp_port(self) -> int:
        return self._ports.rtp_port

    @property
    def rtcp_port(self) -> int:
        return self._ports.rtcp_port

    @property
    def local_address(self) -> tuple[str, int]:
        """(host, RTP port) for this side's SDP c= and m= lines."""
        return self.advertised_host, self._ports.rtp_port

    @property
    def direction(self) -> Direction:
        """The direction this side's party declared in its SDP (``set_direction``)."""
        return self._direction

    @property
    def remote_rtp(self) -> Address | None:
        """The RTP address from SDP, None if unknown or disabled."""
        return self._remote_rtp

    @property
    def remote_rtcp(self) -> Address | None:
        return self._remote_rtcp

    @property
    def latched_rtp(self) -> Address | None:
        """The observed source of this side's RTP, once a valid packet has arrived."""
        return self._latched_rtp

    @property
    def latched_rtcp(self) -> Address | None:
        return self._latched_rtcp

    @property
    def rtp_destination(self) -> Address | None:
        """Where RTP for this side's phone goes: the latched source, else the SDP address."""
        return self._rtp_dest

    @property
    def rtcp_destination(self) -> Address | None:
        return self._rtcp_dest

    @property
    def endpoints(self) -> tuple[BatchedUdpEndpoint, BatchedUdpEndpoint]:
        """The RTP and RTCP endpoints (their socket-level counters, their handler)."""
        return self._rtp, self._rtcp

    def idle_for(self, now: float) -> float:
        """Seconds without RTP from this side's phone, counted from the last change of
        remote or direction if that is more recent (a re-INVITE restarts the clock)."""
        last = self.last_rx
        since = self._quiet_since if last is None or last < self._quiet_since else last
        return max(0.0, now - since)

    def stats(self) -> SideStats:
        return SideStats(
            packets_in=self.packets_in,
            bytes_in=self.bytes_in,
            packets_out=self.packets_out,
            bytes_out=self.bytes_out,
            rtcp_packets_in=self.rtcp_packets_in,
            rtcp_packets_out=self.rtcp_packets_out,
            invalid=self.invalid,
            foreign=self.foreign,
            dropped=self.dropped,
            last_rx=self.last_rx,
        )

    # -- changes, through RelaySession ----------------------------------------

    def _link(self, peer: RelaySide) -> None:
        self._peer = peer

    def _set_remote(self, host: str, port: int, rtcp_port: int | None, now: float) -> None:
        rtp = _normalise_remote(host, port, self._ipv6)
        rtcp = None
        if rtp is not None:
            rtcp = _normalise_remote(host, port + 1 if rtcp_port is None else rtcp_port, self._ipv6)
        if rtp != self._remote_rtp:
            # A new SDP address means the phone moved (or re-answered): learn it again.
            if self._latched_rtp is not None:
                self._log.info(
                    "side %s: SDP RTP address %s -> %s, latch %s cleared",
                    self.side.value,
                    self._remote_rtp,
                    rtp,
                    self._latched_rtp,
                )
            self._latched_rtp = None
            self._latched_rtcp = None
        elif rtcp != self._remote_rtcp:
            self._latched_rtcp = None
        self._remote_rtp = rtp
        self._remote_rtcp = rtcp
        self._quiet_since = now
        self._update_destinations()

    def _set_direction(self, direction: Direction, now: float) -> None:
        if direction is not self._direction:
            self._log.info(
                "side %s: direction %s -> %s",
                self.side.value,
                self._direction.value,
                direction.value,
            )
        self._direction = direction
        self._quiet_since = now

    def _update_destinations(self) -> None:
        self._rtp_dest = self._latched_rtp or self._remote_rtp
        self._rtcp_dest = self._latched_rtcp or self._remote_rtcp

    def _latch_rtp(self, addr: Address) -> None:
        self._latched_rtp = addr
        self._rtp_dest = addr
        if addr != self._remote_rtp:
            self._log.info(
                "side %s: RTP latched to %s (SDP said %s)", self.side.value, addr, self._remote_rtp
            )

    def _latch_rtcp(self, addr: Address) -> None:
        self._latched_rtcp = addr
        self._rtcp_dest = addr
        if addr != self._remote_rtcp:
            self._log.info(
                "side %s: RTCP latched to %s (SDP said %s)",
                self.side.value,
                addr,
                self._remote_rtcp,
            )

    def _close(self) -> None:
        self._rtp.close()
        self._rtcp.close()

    # -- the packet path ------------------------------------------------------

    def _on_rtp(self, batch: Batch) -> None:
        peer = self._peer
        if peer is None:
            return
        dest = peer._rtp_dest if self._forward else None
        sendto = peer._rtp.socket.sendto
        latched = self._latched_rtp
        accepted = accepted_bytes = invalid = foreign = failed = failed_bytes = 0
        for data, addr in batch:
            size = len(data)
            if size < _RTP_MIN or data[0] >> 6 != 2:
                invalid += 1
                continue
            if addr != latched:
                if latched is not None:
                    foreign += 1
                    continue
                self._latch_rtp(addr)
                latched = addr
            accepted += 1
            accepted_bytes += size
            if dest is not None:
                try:
                    sendto(data, dest)
                except OSError:
                    # Full send buffer or an ICMP error: drop, RTP tolerates loss.
                    failed += 1
                    failed_bytes += size
        if accepted:
            self.packets_in += accepted
            self.bytes_in += accepted_bytes
            self.last_rx = time.monotonic()
            if dest is not None:
                peer.packets_out += accepted - failed
                peer.bytes_out += accepted_bytes - failed_bytes
                self.dropped += failed
            else:
                self.dropped += accepted
        if invalid:
            self.invalid += invalid
        if foreign:
            self.foreign += foreign

    def _on_rtcp(self, batch: Batch) -> None:
        peer = self._peer
        if peer is None:
            return
        dest = peer._rtcp_dest
        sendto = peer._rtcp.socket.sendto
        latched = self._latched_rtcp
        accepted = invalid = foreign = failed = 0
        for data, addr in batch:
            if len(data) < _RTCP_MIN or data[0] >> 6 != 2 or not 192 <= data[1] <= 223:
                invalid += 1
                continue
            if addr != latched:
                if latched is not None:
                    foreign += 1
                    continue
                self._latch_rtcp(addr)
                latched = addr
            accepted += 1
            if dest is not None:
                try:
                    sendto(data, dest)
                except OSError:
                    failed += 1
        if accepted:
            self.rtcp_packets_in += accepted
            if dest is not None:
                peer.rtcp_packets_out += accepted - failed
                self.dropped += failed
            else:
                self.dropped += accepted
        if invalid:
            self.invalid += invalid
        if foreign:
            self.foreign += foreign

    def __repr__(self) -> str:
        return (
            f"<RelaySide {self.side.value} local={self.local_address} "
            f"dest={self._rtp_dest} {self.direction.value}>"
        )


class RelaySession:
    """A two-leg bridge: media from side A goes to side B and back.

    Created by ``MediaRelay.create_session``. The B2BUA puts ``local_address(Side.A)``
    in the SDP it sends phone A (and B's in B's), calls ``set_remote`` with what each
    phone's SDP says, ``set_direction`` on hold and resume, and ``close`` at hangup.
    """

    def __init__(
        self,
        session_id: str,
        relay: MediaRelay,
        ports_a: PortPair,
        ports_b: PortPair,
        *,
        advertised_host: str,
        loop: asyncio.AbstractEventLoop,
        on_timeout: TimeoutHook | None,
        now: float,
    ) -> None:
        self.id = session_id
        self.on_timeout = on_timeout
        """Called once when the session has been idle past its timeout (None: relay's hook)."""
        self.created_at = now
        self._relay = relay
        self._closed = False
        self._timeout_reported = False
        self.log = _SessionLog(logger, {"session": session_id})
        self.a = RelaySide(
            Side.A, ports_a, advertised_host=advertised_host, loop=loop, log=self.log, now=now
        )
        try:
            self.b = RelaySide(
                Side.B, ports_b, advertised_host=advertised_host, loop=loop, log=self.log, now=now
            )
        except BaseException:
            self.a._close()
            raise
        self.a._link(self.b)
        self.b._link(self.a)

    @property
    def closed(self) -> bool:
        return self._closed

    def side(self, side: Side) -> RelaySide:
        return self.a if side is Side.A else self.b

    def local_address(self, side: Side) -> tuple[str, int]:
        """(host, RTP port) the B2BUA advertises to ``side``'s phone."""
        return self.side(side).local_address

    def set_remote(self, side: Side, host: str, port: int, rtcp_port: int | None = None) -> None:
        """Record the media address from ``side``'s SDP (c= host, m= port, a=rtcp port).

        Port 0 or an unspecified host (0.0.0.0, ::) stops sending to that side until
        it sends to us. A changed address clears the side's latch. ``host`` must be an
        IP literal. Raises ValueError on a bad address, SessionClosed after ``close``.
        """
        self._check_open()
        self.side(side)._set_remote(host, port, rtcp_port, time.monotonic())

    def set_direction(self, side: Side, direction: Direction | str) -> None:
        """Record the direction attribute of ``side``'s SDP (hold, resume)."""
        self._check_open()
        direction = Direction(direction)
        self.side(side)._set_direction(direction, time.monotonic())
        # Forwarding A->B needs A to send and B to receive; the hot path reads one flag.
        self.a._forward = self.a.direction.sends and self.b.direction.receives
        self.b._forward = self.b.direction.sends and self.a.direction.receives

    def idle_for(self, now: float) -> float:
        """Seconds the quieter side has gone without sending RTP (see ``RelaySide.idle_for``)."""
        return max(self.a.idle_for(now), self.b.idle_for(now))

    @property
    def held(self) -> bool:
        """Either side declared a direction other than sendrecv."""
        return (
            self.a.direction is not Direction.SENDRECV or self.b.direction is not Direction.SENDRECV
        )

    def stats(self) -> dict[Side, SideStats]:
        return {Side.A: self.a.stats(), Side.B: self.b.stats()}

    def close(self) -> None:
        """Stop relaying and give the ports back. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.a._close()
        self.b._close()
        self._relay._forget(self)
        self.log.info("closed: A %s, B %s", self.a.stats(), self.b.stats())

    def _check_open(self) -> None:
        if self._closed:
            raise SessionClosed(f"relay session {self.id} is closed")

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<RelaySession {self.id} {state} a={self.a!r} b={self.b!r}>"


class MediaRelay:
    """The hub's relay: creates sessions on ports from ``ports`` and watches for dead calls.

    ``advertised_host`` is the address put in SDP when the sockets are bound to a
    wildcard or a private address (a NAT 1:1 setting). A session whose quieter side
    has sent no RTP for ``rtp_timeout`` seconds (``hold_timeout`` while either side
    is not sendrecv) is reported once to its ``on_timeout`` hook; the relay does not
    close it itself, the owner of the call decides.

    Must be created inside a running event loop (or be given one).
    """

    def __init__(
        self,
        ports: PortAllocator,
        *,
        advertised_host: str | None = None,
        rtp_timeout: float = DEFAULT_RTP_TIMEOUT,
        hold_timeout: float = DEFAULT_HOLD_TIMEOUT,
        on_timeout: TimeoutHook | None = None,
        check_interval: float | None = DEFAULT_CHECK_INTERVAL,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._ports = ports
        self._loop = loop if loop is not None else asyncio.get_running_loop()
        if advertised_host is None:
            if ports.host in ("0.0.0.0", "::"):
                raise ValueError("advertised_host is required when binding to a wildcard")
            advertised_host = ports.host
        self.advertised_host = advertised_host
        self.rtp_timeout = rtp_timeout
        self.hold_timeout = hold_timeout
        self.on_timeout = on_timeout
        """Default timeout hook for sessions created without one."""
        self._check_interval = check_interval
        self._sessions: dict[str, RelaySession] = {}
        self._ids = itertools.count(1)
        self._closed = False
        self._timer: asyncio.TimerHandle | None = None
        if check_interval is not None:
            self._timer = self._loop.call_later(check_interval, self._on_timer)

    @property
    def ports(self) -> PortAllocator:
        return self._ports

    @property
    def sessions(self) -> Mapping[str, RelaySession]:
        """Open sessions by id (read-only view)."""
        return MappingProxyType(self._sessions)

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[RelaySession]:
        return iter(list(self._sessions.values()))

    def get(self, session_id: str) -> RelaySession | None:
        return self._sessions.get(session_id)

    def create_session(
        self, session_id: str | None = None, *, on_timeout: TimeoutHook | None = None
    ) -> RelaySession:
        """Allocate two port pairs and start relaying between them.

        Raises PortsExhausted when the range is full, ValueError on a duplicate id.
        """
        if self._closed:
            raise RuntimeError("media relay is closed")
        if session_id is None:
            session_id = f"r{next(self._ids)}"
        if session_id in self._sessions:
            raise ValueError(f"relay session {session_id} already exists")
        ports_a = self._ports.allocate()
        try:
            ports_b = self._ports.allocate()
        except BaseException:
            self._ports.release(ports_a)
            raise
        try:
            session = RelaySession(
                session_id,
                self,
                ports_a,
                ports_b,
                advertised_host=self.advertised_host,
                loop=self._loop,
                on_timeout=on_timeout,
                now=time.monotonic(),
            )
        except BaseException:
            self._ports.release(ports_a)
            self._ports.release(ports_b)
            raise
        self._sessions[session_id] = session
        session.log.info(
            "open: A %s:%d, B %s:%d",
            self.advertised_host,
            ports_a.rtp_port,
            self.advertised_host,
            ports_b.rtp_port,
        )
        return session

    def timeout_for(self, session: RelaySession) -> float:
        return self.hold_timeout if session.held else self.rtp_timeout

    def check_timeouts(self, now: float) -> list[RelaySession]:
        """Report sessions newly idle past their timeout to their hook; return them.

        A session is reported once per idle spell: traffic resets it.
        """
        expired: list[RelaySession] = []
        for session in list(self._sessions.values()):
            idle = session.idle_for(now)
            if idle < self.timeout_for(session):
                session._timeout_reported = False
                continue
            if session._timeout_reported:
                continue
            session._timeout_reported = True
            expired.append(session)
            session.log.warning("no RTP for %.1f s", idle)
            hook = session.on_timeout or self.on_timeout
            if hook is None:
                continue
            try:
                hook(session)
            except Exception:
                session.log.exception("timeout hook failed")
        return expired

    def close(self) -> None:
        """Close every session and stop the timeout check. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for session in list(self._sessions.values()):
            session.close()

    def _forget(self, session: RelaySession) -> None:
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]
        self._ports.release(session.a._ports)
        self._ports.release(session.b._ports)

    def _on_timer(self) -> None:
        assert self._check_interval is not None
        try:
            self.check_timeouts(time.monotonic())
        finally:
            if not self._closed:
                self._timer = self._loop.call_later(self._check_interval, self._on_timer)

"""RTP/RTCP port pairs from a configured range.

RFC 3550 section 11: RTP on an even port, RTCP on the next (odd) one. Both are
bound here, so a pair handed out is known to be usable and the RTCP port can be
relayed too. Ports held by other processes are skipped, not fatal. The scan
resumes after the last pair handed out rather than from the bottom of the range,
so a port just released is not reused at once and stray packets of the call that
ended there do not leak into the next call.
"""

from __future__ import annotations

import errno
import logging
import socket
from dataclasses import dataclass, field

from media.errors import PortsExhausted
from media.udp import DEFAULT_RCVBUF, open_udp_socket

__all__ = ["DEFAULT_PORT_MAX", "DEFAULT_PORT_MIN", "PortAllocator", "PortPair"]

logger = logging.getLogger(__name__)

DEFAULT_PORT_MIN = 20000
DEFAULT_PORT_MAX = 29999

# Another process owns the port (or the kernel reserves it): try the next pair.
_SKIPPABLE = frozenset({errno.EADDRINUSE, errno.EACCES})


@dataclass(eq=False, slots=True)
class PortPair:
    """Two bound non-blocking UDP sockets: RTP on an even port, RTCP on the next."""

    host: str
    """The address both sockets are bound to."""
    rtp_port: int
    """The even port."""
    rtp_sock: socket.socket = field(repr=False)
    rtcp_sock: socket.socket = field(repr=False)

    @property
    def rtcp_port(self) -> int:
        return self.rtp_port + 1


class PortAllocator:
    """Hands out RTP/RTCP port pairs over ``port_min``..``port_max`` on one address.

    One per hub (or per media address). Not thread-safe: call it from the loop.
    """

    def __init__(
        self,
        host: str,
        port_min: int = DEFAULT_PORT_MIN,
        port_max: int = DEFAULT_PORT_MAX,
        *,
        rcvbuf: int | None = DEFAULT_RCVBUF,
    ) -> None:
        if not 1 <= port_min <= port_max <= 65535:
            raise ValueError(f"invalid port range {port_min}-{port_max}")
        first = port_min + (port_min & 1)  # RTP ports are even
        if first + 1 > port_max:
            raise ValueError(f"port range {port_min}-{port_max} holds no even/odd pair")
        self._host = host
        self._first = first
        self._count = (port_max - first + 1) // 2
        self._rcvbuf = rcvbuf
        self._next = 0  # index of the pair to try first
        self._in_use: set[int] = set()

    @property
    def host(self) -> str:
        return self._host

    @property
    def port_range(self) -> tuple[int, int]:
        """First RTP port and last RTCP port of the pairs this allocator can hand out."""
        return self._first, self._first + 2 * self._count - 1

    @property
    def capacity(self) -> int:
        """Number of pairs in the range."""
        return self._count

    @property
    def in_use(self) -> int:
        """Number of pairs handed out and not yet released."""
        return len(self._in_use)

    def allocate(self) -> PortPair:
        """Bind the next free pair. Raises PortsExhausted when none is left."""
        for step in range(self._count):
            index = (self._next + step) % self._count
            port = self._first + 2 * index
            if port in self._in_use:
                continue
            pair = self._try_bind(port)
            if pair is None:
                continue
            self._in_use.add(port)
            self._next = (index + 1) % self._count
            return pair
        first, last = self.port_range
        raise PortsExhausted(
            f"no free RTP port pair in {first}-{last} on {self._host} "
            f"({len(self._in_use)} of {self._count} held by this hub)"
        )

    def release(self, pair: PortPair) -> None:
        """Close both sockets and return the pair to the range. Idempotent."""
        pair.rtp_sock.close()
        pair.rtcp_sock.close()
        self._in_use.discard(pair.rtp_port)

    def _try_bind(self, port: int) -> PortPair | None:
        try:
            rtp = open_udp_socket(self._host, port, rcvbuf=self._rcvbuf)
        except OSError as exc:
            if exc.errno in _SKIPPABLE:
                return None
            raise
        try:
            rtcp = open_udp_socket(self._host, port + 1, rcvbuf=self._rcvbuf)
        except OSError as exc:
            rtp.close()
            if exc.errno in _SKIPPABLE:
                logger.debug("RTCP port %d busy, skipping pair %d", port + 1, port)
                return None
            raise
        return PortPair(self._host, port, rtp, rtcp)

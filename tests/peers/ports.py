"""Free ports on 127.0.0.1 for peers started by tests.

Single ports come from the kernel (bind to port 0). Contiguous blocks (a baresip SIP
port needs ``port`` and ``port + 1``, an RTP range needs dozens) cannot, so they are
probed in ``PEERS_PORT_RANGE`` (default 15000-15999, below the kernel's ephemeral
range so nothing else is handed them by accident), starting from a random offset so
concurrent test runs rarely probe the same ports.

Every port handed out is remembered for the life of the process: a port is only free
until its peer binds it, and tests usually allocate for several peers before starting
any of them.
"""

import errno
import os
import random
import socket

from tests.peers import LOOPBACK

DEFAULT_PORT_RANGE = (15000, 15999)


def _range_from_env() -> tuple[int, int]:
    text = os.environ.get("PEERS_PORT_RANGE")
    if not text:
        return DEFAULT_PORT_RANGE
    low, sep, high = text.partition("-")
    try:
        lo, hi = int(low), int(high)
    except ValueError:
        raise ValueError(f"PEERS_PORT_RANGE must look like 15000-15999, got {text!r}") from None
    if not sep or not 1024 <= lo < hi <= 65535:
        raise ValueError(f"PEERS_PORT_RANGE must look like 15000-15999, got {text!r}")
    return lo, hi


def bindable(port: int, kind: socket.SocketKind = socket.SOCK_DGRAM) -> bool:
    """True if ``port`` can be bound on 127.0.0.1 now (False: someone holds it)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        if kind == socket.SOCK_STREAM:
            # A listener in TIME_WAIT must not make the port look taken.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


# Local addresses in /proc/net/{udp,tcp}[6] that stop a bind to 127.0.0.1:
# 127.0.0.1, 0.0.0.0, :: and ::ffff:127.0.0.1 (hex, in the kernel's byte order).
_BLOCKING_ADDRESSES = frozenset(
    {"0100007F", "00000000", "0" * 32, "0000000000000000FFFF00000100007F"}
)
_TCP_LISTEN = "0A"


def port_in_use(port: int, kind: socket.SocketKind = socket.SOCK_DGRAM) -> bool:
    """True if some socket holds ``port`` on 127.0.0.1 (a TCP one only when listening).

    Reads /proc/net rather than trying to bind, so checking never steals the port
    from a process that is about to bind it.
    """
    name = "udp" if kind == socket.SOCK_DGRAM else "tcp"
    suffix = f":{port:04X}"
    for table in (f"/proc/net/{name}", f"/proc/net/{name}6"):
        try:
            with open(table) as lines:
                next(lines, None)  # header
                for line in lines:
                    fields = line.split()
                    address, _, local_port = fields[1].partition(":")
                    if (
                        ":" + local_port == suffix
                        and address in _BLOCKING_ADDRESSES
                        and (name == "udp" or fields[3] == _TCP_LISTEN)
                    ):
                        return True
        except FileNotFoundError:  # no IPv6 in this kernel or namespace
            continue
    return False


class PortAllocator:
    """Hands out loopback ports that no earlier call of this allocator returned."""

    def __init__(self, port_range: tuple[int, int] | None = None) -> None:
        self.port_range = port_range if port_range is not None else _range_from_env()
        self._given: set[int] = set()

    def _kernel_port(self, kind: socket.SocketKind) -> int:
        for _ in range(100):
            with socket.socket(socket.AF_INET, kind) as sock:
                sock.bind((LOOPBACK, 0))
                port: int = sock.getsockname()[1]
            if port not in self._given:
                self._given.add(port)
                return port
        raise RuntimeError("the kernel keeps returning ports this process already handed out")

    def udp_port(self) -> int:
        """A UDP port free on 127.0.0.1 (from the kernel's ephemeral range)."""
        return self._kernel_port(socket.SOCK_DGRAM)

    def tcp_port(self) -> int:
        """A TCP port free on 127.0.0.1 (from the kernel's ephemeral range)."""
        return self._kernel_port(socket.SOCK_STREAM)

    def block(self, count: int, *, udp: bool = True, tcp: bool = True) -> range:
        """``count`` consecutive ports, each bindable now for UDP and/or TCP.

        The first port is even, which RTP ranges (RTP on even, RTCP on odd) want.
        """
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        if not (udp or tcp):
            raise ValueError("ask for udp, tcp or both")
        lo, hi = self.port_range
        lo += lo % 2
        bases = list(range(lo, hi - count + 2, 2))
        if not bases:
            raise ValueError(f"no block of {count} ports fits in {self.port_range}")
        start = random.randrange(len(bases))
        for base in bases[start:] + bases[:start]:
            ports = range(base, base + count)
            if any(port in self._given for port in ports):
                continue
            if all(
                (not udp or bindable(port, socket.SOCK_DGRAM))
                and (not tcp or bindable(port, socket.SOCK_STREAM))
                for port in ports
            ):
                self._given.update(ports)
                return ports
        raise RuntimeError(f"no free block of {count} ports left in {self.port_range}")

    def release(self, ports: range | int) -> None:
        """Let ports be handed out again (only needed by very long sessions)."""
        if isinstance(ports, int):
            self._given.discard(ports)
        else:
            self._given.difference_update(ports)


# One allocator per process: separate allocators would hand out the same ports.
allocator = PortAllocator()


def free_udp_port() -> int:
    """A UDP port free on 127.0.0.1, never returned before in this process."""
    return allocator.udp_port()


def free_tcp_port() -> int:
    """A TCP port free on 127.0.0.1, never returned before in this process."""
    return allocator.tcp_port()


def free_port_block(count: int, *, udp: bool = True, tcp: bool = True) -> range:
    """``count`` consecutive free ports on 127.0.0.1, starting on an even port."""
    return allocator.block(count, udp=udp, tcp=tcp)


def release_ports(ports: range | int) -> None:
    """Give ports back once the peer holding them has exited (long sessions need it)."""
    allocator.release(ports)

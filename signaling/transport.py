"""The asyncio side of the SIP core: sockets, connections and the endpoint's clock.

Thin on purpose: bytes go into :class:`SipEndpoint`, bytes and events come out, and
one timer handle wakes the endpoint at its next deadline. UDP, TCP (framed with
:class:`StreamFramer`) and TLS share one code path.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import ssl
from collections.abc import Callable

from .errors import ParseError
from .message import Request, Response, StreamFramer
from .stack import CloseConnection, SipEndpoint, StackEvent
from .transaction import Address, ClientTransaction, ServerTransaction

log = logging.getLogger(__name__)

EventHandler = Callable[[StackEvent], None]


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport) -> None:
        self.owner = owner
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport is not a subclass of asyncio.DatagramTransport.
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.owner._receive(data, Address(addr[0], addr[1], "udp"))

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)


class _Stream(asyncio.Protocol):
    def __init__(self, owner: SipTransport, transport_name: str) -> None:
        self.owner = owner
        self.name = transport_name
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.conn_id = next(owner._conn_ids)
        self.peer: tuple[str, int] = ("", 0)
        self._stall: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = (peer[0], peer[1]) if peer else ("", 0)
        self.owner._connections[self.conn_id] = self
        self.owner._by_peer[(self.name, self.peer[0], self.peer[1])] = self

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.framer.feed(data)
        except ParseError as exc:
            self._framing_error(exc, data)
            return
        for message in messages:
            self.owner._receive(message, self.address)
        if self.framer.error is not None:
            # Good messages came ahead of the fault in this chunk; now the fault.
            self._framing_error(self.framer.error, data)
            return
        self._watch_partial(restart=bool(messages))

    def _framing_error(self, exc: ParseError, data: bytes) -> None:
        # The stream can't be resynchronised: answer what we can and close.
        self.owner._receive(bytes(self.framer._buf) or data, self.address, exc=exc)
        self.close()

    def _watch_partial(self, *, restart: bool) -> None:
        """Close a connection left holding part of a message (RFC 4475 3.1.2.7)."""
        if not self.framer.pending:
            if self._stall is not None:
                self._stall.cancel()
                self._stall = None
            return
        if self._stall is not None and not restart:
            return  # the clock runs from the start of the message, not the last byte
        if self._stall is not None:
            self._stall.cancel()
        self._stall = self.owner._loop.call_later(self.owner.partial_message_timeout,
                                                  self._stalled)

    def _stalled(self) -> None:
        self._stall = None
        log.info("closing %s: incomplete message for %.0f s", self.address,
                 self.owner.partial_message_timeout)
        self.close()

    @property
    def address(self) -> Address:
        return Address(self.peer[0], self.peer[1], self.name, self.conn_id)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        self.owner._connections.pop(self.conn_id, None)
        for key in [k for k, conn in self.owner._by_peer.items() if conn is self]:
            del self.owner._by_peer[key]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class SipTransport:
    """Owns the SIP sockets of one endpoint and drives it."""

    def __init__(self, endpoint: SipEndpoint, handler: EventHandler | None = None,
                 *, advertised_host: str | None = None,
                 partial_message_timeout: float = 32.0) -> None:
        self.endpoint = endpoint
        # Seconds a stream may hold an incomplete message before it is closed.
        self.partial_message_timeout = partial_message_timeout
        self.handler: EventHandler = handler or (lambda event: None)
        self.advertised_host = advertised_host
        self._loop = asyncio.get_running_loop()
        self._udp: _Udp | None = None
        self._servers: list[asyncio.Server] = []
        self._listen: dict[str, tuple[str, int]] = {}
        self._connections: dict[int, _Stream] = {}
        self._by_peer: dict[tuple[str, str, int], _Stream] = {}
        self._pending: dict[tuple[str, str, int], list[bytes]] = {}
        self._conn_ids = itertools.count(1)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._flushing = False
        self._route_cache: dict[str, str] = {}
        self.client_ssl: ssl.SSLContext | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- listening -------------------------------------------------------------------------
    async def listen_udp(self, host: str, port: int) -> tuple[str, int]:
        transport, protocol = await self._loop.create_datagram_endpoint(
            lambda: _Udp(self), local_addr=(host, port))
        self._udp = protocol
        sock = transport.get_extra_info("socket")
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        except OSError:
            pass
        bound = transport.get_extra_info("sockname")
        self._listen["udp"] = (bound[0], bound[1])
        return self._listen["udp"]

    async def listen_tcp(self, host: str, port: int) -> tuple[str, int]:
        server = await self._loop.create_server(lambda: _Stream(self, "tcp"), host, port,
                                                reuse_address=True)
        self._servers.append(server)
        bound = server.sockets[0].getsockname()
        self._listen["tcp"] = (bound[0], bound[1])
        return self._listen["tcp"]

    async def listen_tls(self, host: str, port: int, context: ssl.SSLContext) -> tuple[str, int]:
        server = await self._loop.create_server(lambda: _Stream(self, "tls"), host, port,
                                                ssl=context, reuse_address=True)
        self._servers.append(server)
        bound = server.sockets[0].getsockname()
        self._listen["tls"] = (bound[0], bound[1])
        return self._listen["tls"]

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for conn in list(self._connections.values()):
            conn.close()
        for server in self._servers:
            server.close()
            await server.wait_closed()
        if self._udp is not None and self._udp.transport is not None:
            self._udp.transport.close()

    # -- addressing --------------------------------------------------------------------------
    def sent_by(self, dest: Address) -> tuple[str, int]:
        """Our address as ``dest`` should see it, for Via and Contact."""
        transport = dest.transport if dest.transport in self._listen else "udp"
        host, port = self._listen.get(transport, ("127.0.0.1", 5060))
        if self.advertised_host:
            return self.advertised_host, port
        if host in ("0.0.0.0", "::", ""):
            host = self._route_cache.get(dest.host) or self._source_for(dest.host)
        return host, port

    def _source_for(self, remote: str) -> str:
        family = socket.AF_INET6 if ":" in remote else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect((remote, 9))
                host = str(probe.getsockname()[0])
            except OSError:
                host = "127.0.0.1"
        self._route_cache[remote] = host
        return host

    def via(self, dest: Address, branch: str) -> str:
        host, port = self.sent_by(dest)
        host = f"[{host}]" if ":" in host else host
        return f"SIP/2.0/{dest.transport.upper()} {host}:{port};branch={branch};rport"

    def contact_uri(self, dest: Address, user: str | None = None) -> str:
        host, port = self.sent_by(dest)
        host = f"[{host}]" if ":" in host else host
        userpart = f"{user}@" if user else ""
        scheme = "sips" if dest.transport == "tls" else "sip"
        tp = "" if dest.transport == "udp" else f";transport={dest.transport}"
        return f"{scheme}:{userpart}{host}:{port}{tp}"

    # -- TU API ---------------------------------------------------------------------------------
    def now(self) -> float:
        return self._loop.time()

    def send_request(self, request: Request, dest: Address,
                     context: object = None) -> ClientTransaction:
        tx = self.endpoint.send_request(request, dest, self.now(), context)
        self.flush()
        return tx

    def respond(self, tx: ServerTransaction, response: Response) -> None:
        self.endpoint.respond(tx, response, self.now())
        self.flush()

    def reply(self, tx: ServerTransaction, status: int, *, reason: str | None = None,
              to_tag: str | None = None, headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.endpoint.reply(tx, status, self.now(), reason=reason, to_tag=to_tag,
                            headers=headers)
        self.flush()

    def send_ack(self, ack: Request, dest: Address) -> None:
        self.endpoint.layer.send_ack_2xx(ack, dest)
        self.flush()

    # -- the pump --------------------------------------------------------------------------------
    def _receive(self, data: bytes, source: Address, exc: ParseError | None = None) -> None:
        try:
            if exc is not None:
                self.endpoint.reject_malformed(data, exc, source)
            else:
                self.endpoint.receive(data, source, self.now())
        except Exception:
            log.exception("SIP core failed on a message from %s", source)
        self.flush()

    def flush(self) -> None:
        """Send what the core wants sent, hand its events on, re-arm its timer."""
        if self._flushing:
            return
        self._flushing = True
        try:
            while True:
                out = self.endpoint.datagrams_to_send()
                for data, dest in out:
                    self._send(data, dest)
                events = self.endpoint.events()
                for event in events:
                    if isinstance(event, CloseConnection):
                        conn = self._connections.get(event.conn)
                        if conn is not None:
                            conn.close()
                        continue
                    try:
                        self.handler(event)
                    except Exception:
                        log.exception("SIP event handler failed on %s",
                                      type(event).__name__)
                if not out and not events:
                    break
        finally:
            self._flushing = False
        self._arm_timer()

    def _arm_timer(self) -> None:
        deadline = self.endpoint.next_timer()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        try:
            self.endpoint.handle_timer(self.now())
        except Exception:
            log.exception("SIP timer handling failed")
        self.flush()

    def _send(self, data: bytes, dest: Address) -> None:
        if dest.transport == "udp":
            if self._udp is not None and self._udp.transport is not None:
                try:
                    self._udp.transport.sendto(data, (dest.host, dest.port))
                except OSError as exc:
                    log.info("UDP send to %s failed: %s", dest, exc)
            return
        conn = self._connections.get(dest.conn) if dest.conn is not None else None
        if conn is None:
            conn = self._by_peer.get((dest.transport, dest.host, dest.port))
        if conn is not None and conn.transport is not None and not conn.transport.is_closing():
            conn.transport.write(data)
            return
        key = (dest.transport, dest.host, dest.port)
        if key in self._pending:
            self._pending[key].append(data)
            return
        self._pending[key] = [data]
        task = self._loop.create_task(self._connect(dest, key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, dest: Address, key: tuple[str, str, int]) -> None:
        try:
            ctx = None
            if dest.transport == "tls":
                ctx = self.client_ssl or ssl.create_default_context()
            _, conn = await asyncio.wait_for(
                self._loop.create_connection(lambda: _Stream(self, dest.transport),
                                             dest.host, dest.port, ssl=ctx),
                timeout=10)
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            log.info("could not connect to %s: %s", dest, exc)
            self._pending.pop(key, None)
            self.endpoint.transport_error(dest, self.now())
            self.flush()
            return
        # Known by the name we dialled too: the peername is the resolved address, which
        # differs for a host name ("localhost") or an IPv6 literal written another way.
        self._by_peer[key] = conn
        for data in self._pending.pop(key, []):
            if conn.transport is not None:
                conn.transport.write(data)

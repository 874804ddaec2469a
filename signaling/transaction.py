"""SIP transactions (RFC 3261 section 17, with the RFC 6026 Accepted state).

Sans-I/O: the layer is fed parsed messages and the time, and is asked what to send
(``datagrams_to_send``), when to wake up (``next_timer``) and what happened
(``events``). Four state machines, each a transition table next to the RFC text:

    INVITE client      17.1.1  Calling -> Proceeding -> Completed | Accepted -> Terminated
    non-INVITE client  17.1.2  Trying -> Proceeding -> Completed -> Terminated
    INVITE server      17.2.1  Proceeding -> Completed -> Confirmed | Accepted -> Terminated
    non-INVITE server  17.2.2  Trying -> Proceeding -> Completed -> Terminated

The server INVITE transaction retransmits its 2xx itself until the ACK arrives
(the TU's duty in RFC 3261 13.3.1.4, kept here so every TU gets it for free).
"""

from __future__ import annotations

import enum
import heapq
import itertools
import logging
import secrets
from dataclasses import dataclass, field

from .headers import MAGIC_COOKIE
from .message import Request, Response, header_tag, make_response

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Address:
    """Where a message came from or goes to. ``conn`` names a stream connection."""

    host: str
    port: int
    transport: str = "udp"
    conn: int | None = None

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Timers:
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0


class State(enum.Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"
    TERMINATED = "terminated"


# --- events to the transaction user --------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new server transaction."""

    transaction: ServerTransaction
    """The transaction to answer through :meth:`TransactionLayer.respond`."""
    request: Request
    """The request as received (Via already stamped with received/rport)."""


@dataclass(frozen=True, slots=True)
class AckReceived:
    """An ACK for a 2xx (RFC 3261 13.2.2.4): it belongs to the dialog, not a transaction."""

    request: Request
    """The ACK."""
    source: Address
    """Where it came from."""


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    transaction: ClientTransaction
    """The client transaction the response matched."""
    response: Response
    """The response; a 2xx retransmission to an accepted INVITE is reported too."""


@dataclass(frozen=True, slots=True)
class TransactionTimedOut:
    """Timer B/F for a client transaction; H or L (no ACK for our 2xx) for a server one."""

    transaction: ClientTransaction | ServerTransaction
    """The transaction that gave up."""


@dataclass(frozen=True, slots=True)
class StrayResponse:
    """A response that matched no client transaction (e.g. a late 2xx retransmission)."""

    response: Response
    """The response."""
    source: Address
    """Where it came from."""


Event = RequestReceived | AckReceived | ResponseReceived | TransactionTimedOut | StrayResponse


# --- transactions ---------------------------------------------------------------------


@dataclass(eq=False)
class ClientTransaction:
    key: tuple[str, str]
    request: Request
    dest: Address
    state: State
    wire: bytes
    created: float
    interval: float = 0.0
    timers: dict[str, float] = field(default_factory=dict)
    ack_wire: bytes | None = None
    last_response: Response | None = None
    context: object = None
    """Free slot for the TU (e.g. the call leg that sent the request)."""

    @property
    def is_invite(self) -> bool:
        return self.request.method == "INVITE"


@dataclass(eq=False)
class ServerTransaction:
    key: tuple[str, str, str]
    request: Request
    source: Address
    state: State
    created: float
    interval: float = 0.0
    timers: dict[str, float] = field(default_factory=dict)
    last_wire: bytes | None = None
    last_response: Response | None = None
    to_tag: str = ""
    context: object = None

    @property
    def is_invite(self) -> bool:
        return self.request.method == "INVITE"


_branch_counter = itertools.count(1)
_branch_salt = secrets.token_hex(4)


def new_branch() -> str:
    """A fresh RFC 3261 branch: magic cookie, a per-process salt and a counter."""
    return f"{MAGIC_COOKIE}{_branch_salt}{next(_branch_counter):x}"


class TransactionLayer:
    """All transactions of one SIP endpoint."""

    def __init__(self, timers: Timers | None = None) -> None:
        self.timers = timers or Timers()
        self._clients: dict[tuple[str, str], ClientTransaction] = {}
        self._servers: dict[tuple[str, str, str], ServerTransaction] = {}
        # (call-id, cseq number, from-tag) -> INVITE server transaction awaiting ACK of 2xx
        self._accepted: dict[tuple[str, int, str], ServerTransaction] = {}
        # (call-id, cseq, from-tag, method) -> branch key, for merged requests (8.2.2.2)
        self._recent: dict[tuple[str, int, str, str], tuple[str, str, str]] = {}
        self._heap: list[tuple[float, int, object]] = []
        self._seq = itertools.count()
        self._out: list[tuple[bytes, Address]] = []
        self._events: list[Event] = []

    # -- outputs -------------------------------------------------------------------------
    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        out, self._out = self._out, []
        return out

    def events(self) -> list[Event]:
        ev, self._events = self._events, []
        return ev

    def next_timer(self) -> float | None:
        while self._heap:
            deadline, _, tx = self._heap[0]
            if self._is_live(tx):
                return deadline
            heapq.heappop(self._heap)
        return None

    @property
    def counts(self) -> tuple[int, int]:
        return len(self._clients), len(self._servers)

    def _is_live(self, tx: object) -> bool:
        if isinstance(tx, ClientTransaction):
            return self._clients.get(tx.key) is tx and bool(tx.timers)
        if isinstance(tx, ServerTransaction):
            return self._servers.get(tx.key) is tx and bool(tx.timers)
        return False

    def _arm(self, tx: ClientTransaction | ServerTransaction, name: str, at: float) -> None:
        tx.timers[name] = at
        heapq.heappush(self._heap, (at, next(self._seq), tx))

    # -- client side -----------------------------------------------------------------------
    def send_request(self, request: Request, dest: Address, now: float,
                     context: object = None) -> ClientTransaction:
        """Start a client transaction. The request's top Via must carry a fresh branch."""
        branch = request.top_via.branch or ""
        key = (branch, "INVITE" if request.method == "ACK" else request.method)
        wire = request.encode()
        t1 = self.timers.t1
        if request.method == "INVITE":
            tx = ClientTransaction(key, request, dest, State.CALLING, wire, now, t1,
                                   context=context)
            if not dest.reliable:
                self._arm(tx, "A", now + t1)  # RFC 3261 17.1.1.2
            self._arm(tx, "B", now + 64 * t1)
        else:
            tx = ClientTransaction(key, request, dest, State.TRYING, wire, now, t1,
                                   context=context)
            if not dest.reliable:
                self._arm(tx, "E", now + t1)  # RFC 3261 17.1.2.2
            self._arm(tx, "F", now + 64 * t1)
        self._clients[key] = tx
        self._out.append((wire, dest))
        return tx

    def send_ack_2xx(self, ack: Request, dest: Address) -> None:
        """An ACK for a 2xx is sent outside any transaction (RFC 3261 13.2.2.4)."""
        self._out.append((ack.encode(), dest))

    def send_stateless(self, message: Request | Response, dest: Address) -> None:
        self._out.append((message.encode(), dest))

    def receive_response(self, response: Response, source: Address, now: float) -> None:
        try:
            via = response.top_via
            key = (via.branch or "", response.cseq.method)
        except ValueError:
            return
        tx = self._clients.get(key)
        if tx is None:
            self._events.append(StrayResponse(response, source))
            return
        code = response.status
        if tx.is_invite:
            self._invite_client_response(tx, response, code, now)
        else:
            self._non_invite_client_response(tx, response, code, now)

    def _invite_client_response(self, tx: ClientTransaction, resp: Response, code: int,
                                now: float) -> None:
        # RFC 3261 17.1.1.2 with RFC 6026 7.2
        state = tx.state
        if state in (State.CALLING, State.PROCEEDING):
            tx.timers.pop("A", None)
            if code < 200:
                tx.state = State.PROCEEDING
                # Timer B only guards the Calling state: a callee may ring for longer
                # than 64*T1, and the TU ends that with a CANCEL (RFC 3261 17.1.1.2).
                tx.timers.pop("B", None)
            elif code < 300:
                tx.state = State.ACCEPTED
                tx.timers.clear()
                self._arm(tx, "M", now + 64 * self.timers.t1)
            else:
                tx.state = State.COMPLETED
                tx.timers.clear()
                tx.ack_wire = self._ack_for(tx, resp).encode()
                self._out.append((tx.ack_wire, tx.dest))
                self._arm(tx, "D", now + (0 if tx.dest.reliable else 32.0))
            tx.last_response = resp
            self._events.append(ResponseReceived(tx, resp))
        elif state is State.ACCEPTED and 200 <= code < 300:
            self._events.append(ResponseReceived(tx, resp))  # the TU re-ACKs
        elif state is State.COMPLETED and code >= 300 and tx.ack_wire is not None:
            self._out.append((tx.ack_wire, tx.dest))

    def _non_invite_client_response(self, tx: ClientTransaction, resp: Response, code: int,
                                    now: float) -> None:
        # RFC 3261 17.1.2.2
        if tx.state not in (State.TRYING, State.PROCEEDING):
            return
        if code < 200:
            tx.state = State.PROCEEDING
        else:
            tx.state = State.COMPLETED
            tx.timers.clear()
            self._arm(tx, "K", now + (0 if tx.dest.reliable else self.timers.t4))
        tx.last_response = resp
        self._events.append(ResponseReceived(tx, resp))

    @staticmethod
    def _ack_for(tx: ClientTransaction, resp: Response) -> Request:
        """The ACK for a non-2xx final response (RFC 3261 17.1.1.3)."""
        req = tx.request
        ack = Request(method="ACK", uri=req.uri)
        h = ack.headers
        h.add("Via", req.headers.get_all("Via")[0])
        h.add("Max-Forwards", "70")
        for name in ("From", "Call-ID"):
            h.add(name, req.headers.get(name) or "")
        h.add("To", resp.headers.get("To") or req.headers.get("To") or "")
        h.add("CSeq", f"{req.cseq.number} ACK")
        for value in req.headers.fields("Route"):
            h.add("Route", value)
        return ack

    def cancel_timers(self, tx: ClientTransaction) -> None:
        """Stop retransmitting (e.g. a CANCEL was answered and the INVITE got a 1xx)."""
        tx.timers.pop("A", None)

    def transport_error(self, dest: Address, now: float) -> None:
        """The transport could not send to ``dest``: fail its pending client transactions."""
        for tx in list(self._clients.values()):
            if tx.dest == dest and tx.state in (State.CALLING, State.TRYING, State.PROCEEDING):
                tx.state = State.TERMINATED
                tx.timers.clear()
                self._clients.pop(tx.key, None)
                self._events.append(TransactionTimedOut(tx))

    # -- server side -----------------------------------------------------------------------
    def receive_request(self, request: Request, source: Address, now: float) -> None:
        via = request.top_via
        branch = via.branch or ""
        method = request.method
        if branch.startswith(MAGIC_COOKIE):
            # RFC 3261 17.2.3
            key = (branch, via.sent_by.lower(), "INVITE" if method == "ACK" else method)
        else:
            # RFC 2543 peers: no usable branch, match on the dialog-ish identifiers.
            cseq = request.cseq
            key = (
                f"{request.call_id}|{cseq.number}|{header_tag(request.headers.get('From'))}"
                f"|{request.uri}|{branch}",
                via.sent_by.lower(),
                "INVITE" if method == "ACK" else method,
            )
        tx = self._servers.get(key)
        if method == "ACK":
            self._receive_ack(request, source, tx, now)
            return
        if tx is not None:
            # A retransmission: answer with the last response sent (17.2.1, 17.2.2).
            if tx.last_wire is not None and tx.state is not State.ACCEPTED:
                self._out.append((tx.last_wire, tx.source))
            return
        cseq = request.cseq
        from_tag = header_tag(request.headers.get("From")) or ""
        if header_tag(request.headers.get("To")) is None and method != "CANCEL":
            merge_key = (request.call_id, cseq.number, from_tag, method)
            other = self._recent.get(merge_key)
            if other is not None and other != key and other in self._servers:
                # RFC 3261 8.2.2.2: a forked copy of a request we already handle.
                self._out.append((make_response(request, 482).encode(), source))
                return
            self._recent[merge_key] = key
        state = State.PROCEEDING if method == "INVITE" else State.TRYING
        stx = ServerTransaction(key, request, source, state, now)
        self._servers[key] = stx
        self._events.append(RequestReceived(stx, request))

    def _receive_ack(self, ack: Request, source: Address, tx: ServerTransaction | None,
                     now: float) -> None:
        if tx is not None and tx.state is State.COMPLETED:
            # ACK for our non-2xx final response (17.2.1): Completed -> Confirmed.
            tx.state = State.CONFIRMED
            tx.timers.clear()
            self._arm(tx, "I", now + (0 if tx.source.reliable else self.timers.t4))
            return
        if tx is not None and tx.state is State.CONFIRMED:
            return
        try:
            akey = (ack.call_id, ack.cseq.number, header_tag(ack.headers.get("From")) or "")
        except ValueError:
            return
        accepted = self._accepted.pop(akey, None)
        if accepted is not None:
            accepted.timers.pop("G", None)
        self._events.append(AckReceived(ack, source))

    def respond(self, tx: ServerTransaction, response: Response, now: float) -> None:
        """Send a response through a server transaction."""
        if tx.state in (State.COMPLETED, State.CONFIRMED, State.TERMINATED):
            log.debug("response %s after transaction %s ended: not sent", response.status,
                      tx.key)
            return
        if tx.state is State.ACCEPTED:
            # RFC 6026: further 2xx from the TU pass through (retransmissions).
            if 200 <= response.status < 300:
                self._out.append((response.encode(), tx.source))
            return
        wire = response.encode()
        tx.last_wire = wire
        tx.last_response = response
        self._out.append((wire, tx.source))
        code = response.status
        t1 = self.timers.t1
        reliable = tx.source.reliable
        if code < 200:
            if tx.state is State.TRYING:
                tx.state = State.PROCEEDING
            return
        tx.timers.clear()
        if tx.is_invite:
            if code < 300:
                # RFC 6026 8.5 Accepted; retransmit the 2xx until the ACK (13.3.1.4).
                tx.state = State.ACCEPTED
                self._arm(tx, "L", now + 64 * t1)
                akey = (tx.request.call_id, tx.request.cseq.number,
                        header_tag(tx.request.headers.get("From")) or "")
                self._accepted[akey] = tx
                # Over any transport: a proxy on the way may use UDP (13.3.1.4).
                tx.interval = t1
                self._arm(tx, "G", now + t1)
            else:
                tx.state = State.COMPLETED
                if not reliable:
                    tx.interval = t1
                    self._arm(tx, "G", now + t1)
                self._arm(tx, "H", now + 64 * t1)
        else:
            tx.state = State.COMPLETED
            self._arm(tx, "J", now + (0 if reliable else 64 * t1))

    def stop_2xx_retransmission(self, tx: ServerTransaction) -> None:
        """The dialog ended (BYE) before its ACK came: stop resending the 2xx."""
        tx.timers.pop("G", None)
        akey = (tx.request.call_id, tx.request.cseq.number,
                header_tag(tx.request.headers.get("From")) or "")
        if self._accepted.get(akey) is tx:
            del self._accepted[akey]

    def find_invite_for_cancel(self, cancel: Request) -> ServerTransaction | None:
        """The INVITE server transaction a CANCEL refers to (RFC 3261 9.2)."""
        via = cancel.top_via
        branch = via.branch or ""
        if branch.startswith(MAGIC_COOKIE):
            return self._servers.get((branch, via.sent_by.lower(), "INVITE"))
        for tx in self._servers.values():
            r = tx.request
            if (tx.is_invite and r.call_id == cancel.call_id
                    and r.cseq.number == cancel.cseq.number
                    and header_tag(r.headers.get("From"))
                    == header_tag(cancel.headers.get("From"))):
                return tx
        return None

    # -- timers ------------------------------------------------------------------------------
    def handle_timer(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            deadline, _, tx = heapq.heappop(self._heap)
            if isinstance(tx, ClientTransaction):
                if self._clients.get(tx.key) is not tx:
                    continue
                for name, at in list(tx.timers.items()):
                    if at == deadline:
                        self._client_timer(tx, name, now)
            elif isinstance(tx, ServerTransaction):
                if self._servers.get(tx.key) is not tx:
                    continue
                for name, at in list(tx.timers.items()):
                    if at == deadline:
                        self._server_timer(tx, name, now)

    def _client_timer(self, tx: ClientTransaction, name: str, now: float) -> None:
        tx.timers.pop(name, None)
        if name == "A" and tx.state is State.CALLING:
            self._out.append((tx.wire, tx.dest))
            tx.interval *= 2
            self._arm(tx, "A", now + tx.interval)
        elif name == "E" and tx.state in (State.TRYING, State.PROCEEDING):
            self._out.append((tx.wire, tx.dest))
            tx.interval = (
                min(tx.interval * 2, self.timers.t2) if tx.state is State.TRYING
                else self.timers.t2
            )
            self._arm(tx, "E", now + tx.interval)
        elif name in ("B", "F"):
            if tx.state in (State.CALLING, State.TRYING, State.PROCEEDING):
                self._terminate_client(tx)
                self._events.append(TransactionTimedOut(tx))
        elif name in ("D", "K", "M"):
            self._terminate_client(tx)

    def _terminate_client(self, tx: ClientTransaction) -> None:
        tx.state = State.TERMINATED
        tx.timers.clear()
        self._clients.pop(tx.key, None)

    def _server_timer(self, tx: ServerTransaction, name: str, now: float) -> None:
        tx.timers.pop(name, None)
        if name == "G" and tx.state in (State.COMPLETED, State.ACCEPTED):
            if tx.last_wire is not None:
                self._out.append((tx.last_wire, tx.source))
            tx.interval = min(tx.interval * 2, self.timers.t2)
            self._arm(tx, "G", now + tx.interval)
        elif name == "H" and tx.state is State.COMPLETED:
            self._terminate_server(tx)
            self._events.append(TransactionTimedOut(tx))
        elif name == "L":
            # RFC 6026 Timer L; with no ACK for our 2xx by now the TU must end the
            # dialog (RFC 3261 13.3.1.4).
            akey = (tx.request.call_id, tx.request.cseq.number,
                    header_tag(tx.request.headers.get("From")) or "")
            if self._accepted.get(akey) is tx:
                del self._accepted[akey]
                self._events.append(TransactionTimedOut(tx))
            self._terminate_server(tx)
        elif name in ("I", "J"):
            self._terminate_server(tx)

    def _terminate_server(self, tx: ServerTransaction) -> None:
        tx.state = State.TERMINATED
        tx.timers.clear()
        self._servers.pop(tx.key, None)
        if tx.request.method != "CANCEL":
            try:
                r = tx.request
                mkey = (r.call_id, r.cseq.number, header_tag(r.headers.get("From")) or "",
                        r.method)
                if self._recent.get(mkey) == tx.key:
                    del self._recent[mkey]
            except ValueError:
                pass

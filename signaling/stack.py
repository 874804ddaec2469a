"""The SIP endpoint core: bytes in, validated transactions out (sans-I/O).

Sits between the transports and the transaction user (registrar, B2BUA). It parses,
answers malformed requests as RFC 3261 / RFC 4475 prescribe (or drops them where they
say so), stamps Via with received/rport (RFC 3261 18.2.1, RFC 3581), runs the
transaction layer and checks each new request against what the UAS supports
(RFC 3261 8.2.1-8.2.3) before handing it on.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from .errors import ParseError
from .headers import parse_via
from .message import (
    KNOWN_METHODS,
    REASONS,
    Request,
    Response,
    canonical_name,
    header_tag,
    make_response,
    parse_message,
)
from .transaction import (
    Address,
    ClientTransaction,
    Event,
    RequestReceived,
    ServerTransaction,
    Timers,
    TransactionLayer,
)
from .uri import AbsoluteUri

log = logging.getLogger(__name__)

SUPPORTED_SCHEMES = frozenset({"sip", "sips", "tel"})
ACCEPTED_BODIES = frozenset({"application/sdp", "multipart/mixed"})
# Methods whose bodies we interpret; anything else is carried opaque (INFO, MESSAGE...).
SDP_METHODS = frozenset({"INVITE", "ACK", "UPDATE", "PRACK"})


@dataclass(frozen=True, slots=True)
class CloseConnection:
    """A stream connection must be closed: its framing can't be trusted any more."""

    conn: int
    """The connection id (``Address.conn``)."""
    reason: str
    """Why, for the log."""


StackEvent = Event | CloseConnection


class SipEndpoint:
    """One SIP endpoint's core. Feed ``receive``/``handle_timer``; drain outputs."""

    def __init__(
        self,
        *,
        timers: Timers | None = None,
        allowed_methods: frozenset[str] = frozenset(
            {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "INFO", "UPDATE",
             "REFER", "NOTIFY", "MESSAGE"}
        ),
        supported_extensions: frozenset[str] = frozenset(),
        server_name: str = "dispatch-hub",
        request_filter: Callable[[Request, Address], bool] | None = None,
    ) -> None:
        self.layer = TransactionLayer(timers)
        self.allowed_methods = allowed_methods
        self.supported_extensions = supported_extensions
        self.server_name = server_name
        self.request_filter = request_filter
        self._events: list[StackEvent] = []
        self._out: list[tuple[bytes, Address]] = []
        self.stats = {"received": 0, "malformed": 0, "dropped": 0, "rejected": 0}

    # -- outputs ------------------------------------------------------------------------------
    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        out = self._out + self.layer.datagrams_to_send()
        self._out = []
        return out

    def events(self) -> list[StackEvent]:
        ev, self._events = self._events, []
        return ev

    def next_timer(self) -> float | None:
        return self.layer.next_timer()

    def handle_timer(self, now: float) -> None:
        self.layer.handle_timer(now)
        self._collect(now)

    # -- TU API ---------------------------------------------------------------------------------
    def send_request(self, request: Request, dest: Address, now: float,
                     context: object = None) -> ClientTransaction:
        tx = self.layer.send_request(request, dest, now, context)
        return tx

    def transport_error(self, dest: Address, now: float) -> None:
        self.layer.transport_error(dest, now)
        self._collect(now)

    def respond(self, tx: ServerTransaction, response: Response, now: float) -> None:
        if "Server" not in response.headers:
            response.headers.add("Server", self.server_name)
        self.layer.respond(tx, response, now)

    def reply(self, tx: ServerTransaction, status: int, now: float, *, reason: str | None = None,
              to_tag: str | None = None, headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.respond(tx, make_response(tx.request, status, reason, to_tag=to_tag,
                                       headers=headers), now)

    # -- input -----------------------------------------------------------------------------------
    def receive(self, data: bytes, source: Address, now: float) -> None:
        self.stats["received"] += 1
        if not data.strip(b"\r\n"):
            if source.reliable and data.startswith(b"\r\n\r\n"):
                self._out.append((b"\r\n", source))  # RFC 5626 3.5.1 pong
            return
        try:
            message = parse_message(data, stream=source.reliable)
        except ParseError as exc:
            self.stats["malformed"] += 1
            self.reject_malformed(data, exc, source)
            return
        try:
            if isinstance(message, Response):
                self._receive_response(message, source, now)
            else:
                self._receive_request(message, source, now)
        except ParseError as exc:
            # Typed access found a fault the up-front checks let through.
            self.stats["malformed"] += 1
            self.reject_malformed(data, exc, source)
        self._collect(now)

    def _receive_response(self, response: Response, source: Address, now: float) -> None:
        if len(response.headers.get_all("Via")) != 1:
            # RFC 3261 8.1.3.3: more than one Via means it was not meant for us.
            self.stats["dropped"] += 1
            log.debug("dropped response with several Vias from %s", source)
            return
        self.layer.receive_response(response, source, now)

    def _receive_request(self, request: Request, source: Address, now: float) -> None:
        if self.request_filter is not None and self.request_filter(request, source):
            self.stats["dropped"] += 1
            return
        reply_to = self._stamp_via(request, source)
        self.layer.receive_request(request, reply_to, now)

    def _stamp_via(self, request: Request, source: Address) -> Address:
        """Add received/rport (RFC 3261 18.2.1, RFC 3581 4) and pick where replies go."""
        values = request.headers.get_all("Via")
        via = parse_via(values[0])
        if via.host.strip("[]").lower() != source.host.lower():
            via.params["received"] = source.host
        symmetric = "rport" in via.params
        if symmetric:
            via.params["rport"] = str(source.port)
            via.params["received"] = source.host
        request.headers.remove("Via")
        request.headers.add("Via", str(via))
        for value in values[1:]:
            request.headers.add("Via", value)
        if source.reliable or symmetric:
            return source
        # RFC 3261 18.2.2: unreliable, no rport: the received address, the Via port.
        return Address(source.host, via.port or 5060, source.transport, source.conn)

    def _collect(self, now: float) -> None:
        """Validate new server transactions before the TU sees them (RFC 3261 8.2)."""
        for event in self.layer.events():
            if isinstance(event, RequestReceived):
                refusal = self._check_request(event.request)
                if refusal is not None:
                    _add_to_tag(refusal, event.transaction)
                    self.stats["rejected"] += 1
                    self.respond(event.transaction, refusal, now)
                    continue
            self._events.append(event)

    def _check_request(self, request: Request) -> Response | None:
        method = request.method
        if method not in self.allowed_methods:
            status = 405 if method in KNOWN_METHODS else 501
            return make_response(request, status, headers=(("Allow", self.allow_header),))
        if request.cseq.method != method:
            return make_response(request, 400, "CSeq method does not match")
        uri = request.uri
        if isinstance(uri, AbsoluteUri) and uri.scheme not in SUPPORTED_SCHEMES:
            return make_response(request, 416)
        if method != "REGISTER":
            for addr in (request.to, request.from_):
                if (isinstance(addr.uri, AbsoluteUri)
                        and addr.uri.scheme not in SUPPORTED_SCHEMES):
                    return make_response(request, 416)
        if method not in ("ACK", "CANCEL"):
            required = [t.strip() for t in request.headers.get_all("Require")]
            unknown = [t for t in required if t and t.lower() not in self.supported_extensions]
            if unknown:
                return make_response(request, 420,
                                     headers=(("Unsupported", ", ".join(unknown)),))
        if request.body and method in SDP_METHODS:
            ctype = request.content_type
            encoding = (request.headers.get("Content-Encoding") or "identity").strip().lower()
            if ctype not in ACCEPTED_BODIES or encoding not in ("identity", ""):
                return make_response(
                    request, 415,
                    headers=(("Accept", "application/sdp"), ("Accept-Encoding", "identity")),
                )
        if method in ("INVITE", "OPTIONS") and "Accept" in request.headers:
            accepted = {a.split(";", 1)[0].strip().lower()
                        for a in request.headers.get_all("Accept")}
            if accepted and not accepted & {"application/sdp", "application/*", "*/*"}:
                return make_response(request, 406, headers=(("Accept", "application/sdp"),))
        return None

    @property
    def allow_header(self) -> str:
        return ", ".join(sorted(self.allowed_methods))

    # -- malformed input ------------------------------------------------------------------------
    def reject_malformed(self, data: bytes, exc: ParseError, source: Address) -> None:
        close = exc.close and source.reliable and source.conn is not None
        if exc.drop:
            log.debug("dropped malformed message from %s: %s", source, exc)
        else:
            response = _stateless_error(data, exc)
            if response is not None:
                self._out.append((response, source))
                log.info("answered malformed request from %s with %d: %s", source,
                         exc.status, exc)
            else:
                log.info("dropped malformed message from %s: %s", source, exc)
        if close and source.conn is not None:
            self._events.append(CloseConnection(source.conn, str(exc)))


def _add_to_tag(response: Response, tx: ServerTransaction) -> None:
    """RFC 3261 8.2.6.2: a UAS's final response carries a To tag."""
    to = response.headers.get("To")
    if to is not None and header_tag(to) is None:
        tx.to_tag = tx.to_tag or secrets.token_hex(5)
        response.headers.set("To", f"{to};tag={tx.to_tag}")


def _stateless_error(data: bytes, exc: ParseError) -> bytes | None:
    """Build the error response for a request we could not fully parse, or None.

    Needs the request line to be a request and the headers a response copies (Via,
    From, To, Call-ID, CSeq), taken raw and tolerant of the very faults being reported.
    """
    head = data.lstrip(b"\r\n").split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    text = head.decode("utf-8", "replace").replace("\r\n", "\n")
    lines = text.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines or lines[0].upper().startswith("SIP/") or " " not in lines[0].strip():
        return None
    if lines[0].split(" ", 1)[0] == "ACK":
        return None  # ACK is never answered
    fields: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and fields:
            fields[-1] = (fields[-1][0], fields[-1][1] + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        if colon:
            fields.append((canonical_name(name.strip()), value.strip()))
    copied = [(n, v) for n, v in fields if n in ("Via", "From", "To", "Call-ID", "CSeq")]
    if not any(n == "Via" for n, _ in copied):
        return None
    reason = REASONS.get(exc.status, "Bad Request")
    if exc.status == 400:
        reason = f"Bad Request ({exc.reason})"
    out = [f"SIP/2.0 {exc.status} {reason}"]
    out += [f"{n}: {v}" for n, v in copied]
    out += [f"{n}: {v}" for n, v in exc.extra_headers]
    out.append("Content-Length: 0")
    return ("\r\n".join(out) + "\r\n\r\n").encode()

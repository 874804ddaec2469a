"""A scripted SIP phone for tests that need what baresip 1.0 cannot send (a REFER with
Replaces, RFC 5589 attended transfer): one UDP socket on 127.0.0.1 speaking just enough
SIP to register, place and answer calls, hold, REFER, and answer the hub's NOTIFYs and
BYEs. Its media is an :class:`~tests.peers.rtp_phone.RtpPhone` per call (a PCMU tone).

Nothing here retransmits: loopback loses nothing, and the hub's transactions
retransmit on their own side. Every request and response it receives is kept
(``received``) so a test can assert on exactly what the hub sent::

    ua = SipUa("alice", "pw-alice", ("127.0.0.1", 5060))
    await ua.start()
    await ua.register()
    call = await ua.invite("bob", tone_hz=2400)
    await ua.hold(call)
    ...
    notify = await ua.wait_request("NOTIFY", lambda r: b"200 OK" in r.body)
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

from signaling.digest import DigestClient
from signaling.headers import parse_auth
from signaling.message import Request, Response, header_tag, parse_message
from tests.peers import LOOPBACK, scaled
from tests.peers.rtp_phone import RtpPhone

Message = Request | Response


def _tag() -> str:
    return secrets.token_hex(4)


@dataclass(eq=False)
class UaCall:
    """One dialog of the UA with the hub, and the RTP endpoint of its audio."""

    call_id: str
    local_tag: str
    local_uri: str
    remote_uri: str
    remote_tag: str = ""
    remote_target: str = ""
    cseq: int = 1
    rtp: RtpPhone | None = None
    byed: bool = False
    """The hub sent BYE in this dialog (and we answered 200)."""
    incoming: bool = False

    def replaces_value(self, *, early_only: bool = False, swap: bool = False) -> str:
        """This dialog as a Replaces value (RFC 3891): ``to-tag`` is the hub's tag (the
        receiver's own), ``from-tag`` ours; ``swap`` gets them the wrong way round."""
        to_tag, from_tag = (self.local_tag, self.remote_tag) if swap else (
            self.remote_tag, self.local_tag)
        value = f"{self.call_id};to-tag={to_tag};from-tag={from_tag}"
        return value + ";early-only" if early_only else value

    def replaces(self, *, early_only: bool = False, swap: bool = False) -> str:
        """The Replaces value escaped for a Refer-To URI (RFC 5589 7.1)."""
        return quote(self.replaces_value(early_only=early_only, swap=swap), safe="")


def sdp(port: int, direction: str = "sendrecv") -> bytes:
    return (f"v=0\r\no=ua 1 1 IN IP4 {LOOPBACK}\r\ns=-\r\nc=IN IP4 {LOOPBACK}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
            f"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na={direction}\r\n"
            ).encode()


def sdp_address(body: bytes) -> tuple[str, int]:
    text = body.decode()
    host = re.search(r"^c=IN IP4 (\S+)", text, re.M)
    port = re.search(r"^m=audio (\d+)", text, re.M)
    assert host and port, text
    return host.group(1), int(port.group(1))


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, ua: SipUa) -> None:
        self.ua = ua

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.ua._received(data)


class SipUa:
    def __init__(self, user: str, password: str, hub: tuple[str, int], *,
                 auto_answer: bool = True) -> None:
        self.user = user
        self.password = password
        self.hub = hub
        self.auto_answer = auto_answer
        self.port = 0
        self.received: list[Message] = []
        self.calls: list[UaCall] = []
        self._transport: asyncio.DatagramTransport | None = None
        self._changed = asyncio.Event()
        self._answered: dict[str, UaCall] = {}
        self.incoming_tone_hz: float | None = None
        """The tone an incoming call's RTP endpoint sends (None: silence)."""

    # -- plumbing -------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(LOOPBACK, 0))
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]

    def close(self) -> None:
        for call in self.calls:
            if call.rtp is not None:
                call.rtp.close()
                call.rtp = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    @property
    def contact(self) -> str:
        return f"<sip:{self.user}@{LOOPBACK}:{self.port}>"

    def _send(self, text: str, body: bytes = b"") -> None:
        assert self._transport is not None
        head = text.rstrip("\r\n").replace("\n", "\r\n").replace("\r\r\n", "\r\n")
        data = f"{head}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
        self._transport.sendto(data, self.hub)

    def _via(self, branch: str) -> str:
        return f"Via: SIP/2.0/UDP {LOOPBACK}:{self.port};branch={branch};rport"

    def _received(self, data: bytes) -> None:
        message = parse_message(data)
        self.received.append(message)
        if isinstance(message, Request):
            self._on_request(message)
        self._changed.set()

    async def _wait(self, found: Callable[[], Message | None], timeout: float,
                    what: str) -> Message:
        deadline = asyncio.get_running_loop().time() + scaled(timeout)
        while True:
            message = found()
            if message is not None:
                return message
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"{self.user}: no {what} within {timeout} s")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass

    async def wait_request(self, method: str, match: Callable[[Request], bool] = lambda r: True,
                           *, timeout: float = 10.0) -> Request:
        def found() -> Request | None:
            return next((m for m in self.received if isinstance(m, Request)
                         and m.method == method and match(m)), None)

        result = await self._wait(found, timeout, method)
        assert isinstance(result, Request)
        return result

    def requests(self, method: str, call: UaCall | None = None) -> list[Request]:
        return [m for m in self.received if isinstance(m, Request) and m.method == method
                and (call is None or m.call_id == call.call_id)]

    async def _final(self, call_id: str, cseq: int, method: str,
                     timeout: float = 10.0) -> Response:
        def found() -> Response | None:
            return next((m for m in self.received if isinstance(m, Response)
                         and m.call_id == call_id and m.cseq.number == cseq
                         and m.cseq.method == method and m.status >= 200), None)

        result = await self._wait(found, timeout, f"final response to {method} {cseq}")
        assert isinstance(result, Response)
        return result

    # -- answering the hub -------------------------------------------------------------------
    def _respond(self, request: Request, status: int, reason: str, *, to_tag: str | None = None,
                 extra: str = "", body: bytes = b"") -> None:
        lines = [f"SIP/2.0 {status} {reason}"]
        lines += [f"Via: {v}" for v in request.headers.get_all("Via")]
        to = request.headers.get("To") or ""
        if to_tag and header_tag(to) is None:
            to += f";tag={to_tag}"
        lines += [f"From: {request.headers.get('From')}", f"To: {to}",
                  f"Call-ID: {request.call_id}", f"CSeq: {request.headers.get('CSeq')}"]
        if extra:
            lines.append(extra)
        self._send("\r\n".join(lines), body)

    def _on_request(self, request: Request) -> None:
        method = request.method
        if method == "ACK":
            return
        if method == "BYE":
            for call in self.calls:
                if call.call_id == request.call_id:
                    call.byed = True
                    if call.rtp is not None:
                        call.rtp.sending = False
            self._respond(request, 200, "OK")
        elif method == "INVITE" and header_tag(request.headers.get("To")) is None:
            self._incoming(request)
        elif method == "INVITE":
            call = next((c for c in self.calls if c.call_id == request.call_id), None)
            port = call.rtp.port if call is not None and call.rtp is not None else 9
            self._respond(request, 200, "OK", extra=f"Contact: {self.contact}\r\n"
                          "Content-Type: application/sdp", body=sdp(port))
        else:  # NOTIFY, OPTIONS, INFO, UPDATE...
            self._respond(request, 200, "OK")

    def _incoming(self, request: Request) -> None:
        existing = self._answered.get(request.call_id)
        if existing is None:
            if not self.auto_answer:
                self._respond(request, 486, "Busy Here", to_tag=_tag())
                return
            contact = request.contacts[0].uri if request.contacts else ""
            existing = UaCall(request.call_id, _tag(), request.headers.get("To") or "",
                              request.headers.get("From") or "",
                              remote_tag=header_tag(request.headers.get("From")) or "",
                              remote_target=str(contact), incoming=True)
            existing.local_uri = existing.local_uri.split(";tag=")[0]
            existing.remote_uri = existing.remote_uri.split(";tag=")[0]
            existing.rtp = RtpPhone(self.incoming_tone_hz)
            existing.rtp.dest = sdp_address(request.body)
            existing.rtp.start(600)
            self._answered[request.call_id] = existing
            self.calls.append(existing)
        self._respond(request, 200, "OK", to_tag=existing.local_tag,
                      extra=f"Contact: {self.contact}\r\nContent-Type: application/sdp",
                      body=sdp(existing.rtp.port if existing.rtp else 9))

    # -- requests of our own ---------------------------------------------------------------
    async def register(self) -> None:
        call_id = secrets.token_hex(8)
        tag = _tag()
        uri = f"sip:{self.hub[0]}:{self.hub[1]}"
        auth = ""
        for cseq in (1, 2):
            self._send(f"REGISTER {uri} SIP/2.0\n{self._via('z9hG4bK' + _tag())}\n"
                       f"Max-Forwards: 70\nFrom: <sip:{self.user}@{LOOPBACK}>;tag={tag}\n"
                       f"To: <sip:{self.user}@{LOOPBACK}>\nCall-ID: {call_id}\n"
                       f"CSeq: {cseq} REGISTER\nContact: {self.contact}\nExpires: 600\n{auth}")
            response = await self._final(call_id, cseq, "REGISTER")
            if response.status == 200:
                return
            assert response.status == 401 and cseq == 1, response.status
            auth = self._authorization(response, "WWW-Authenticate", "Authorization",
                                       "REGISTER", uri)
        raise AssertionError("REGISTER failed")

    def _authorization(self, response: Response, challenge_name: str, header: str,
                       method: str, uri: str) -> str:
        challenge = DigestClient.choose_challenge(
            [parse_auth(v) for v in response.headers.get_all(challenge_name)])
        assert challenge is not None, response.headers.get_all(challenge_name)
        answer = DigestClient.authorize(challenge, method=method, uri=uri, username=self.user,
                                        password=self.password, cnonce=_tag(), nc=1)
        return f"{header}: {answer}\n"

    async def invite(self, user: str, *, tone_hz: float | None = None,
                     extra: str = "") -> UaCall:
        """Call ``user`` through the hub (answering its 407), ACK the 200, start the tone."""
        response, call = await self.try_invite(user, tone_hz=tone_hz, extra=extra)
        assert response.status == 200, f"INVITE {user}: {response.status} {response.reason}"
        return call

    async def try_invite(self, user: str, *, tone_hz: float | None = None,
                         extra: str = "") -> tuple[Response, UaCall]:
        """``invite`` that returns a refusal (ACKed) too; ``extra`` header lines end with
        a newline."""
        uri = f"sip:{user}@{self.hub[0]}:{self.hub[1]}"
        call = UaCall(secrets.token_hex(8) + f"@{LOOPBACK}", _tag(),
                      f"<sip:{self.user}@{LOOPBACK}>", f"<sip:{user}@{LOOPBACK}>")
        call.rtp = RtpPhone(tone_hz)
        self.calls.append(call)
        auth = ""
        for attempt in (1, 2):
            branch = "z9hG4bK" + _tag()
            head = (f"INVITE {uri} SIP/2.0\n{self._via(branch)}\nMax-Forwards: 70\n"
                    f"From: {call.local_uri};tag={call.local_tag}\nTo: {call.remote_uri}\n"
                    f"Call-ID: {call.call_id}\nCSeq: {call.cseq} INVITE\n"
                    f"Contact: {self.contact}\nContent-Type: application/sdp\n{extra}{auth}")
            self._send(head, sdp(call.rtp.port))
            response = await self._final(call.call_id, call.cseq, "INVITE", timeout=15)
            if response.status >= 300:
                # The ACK of a non-2xx: same branch, To with the response's tag.
                self._send(f"ACK {uri} SIP/2.0\n{self._via(branch)}\nMax-Forwards: 70\n"
                           f"From: {call.local_uri};tag={call.local_tag}\n"
                           f"To: {response.headers.get('To')}\nCall-ID: {call.call_id}\n"
                           f"CSeq: {call.cseq} ACK")
            if response.status == 407 and attempt == 1:
                auth = self._authorization(response, "Proxy-Authenticate",
                                           "Proxy-Authorization", "INVITE", uri)
                call.cseq += 1
                continue
            if response.status != 200:
                self.calls.remove(call)
                call.rtp.close()
                call.rtp = None
                return response, call
            call.remote_tag = header_tag(response.headers.get("To")) or ""
            call.remote_target = str(response.contacts[0].uri)
            self._ack(call, call.cseq)
            call.rtp.dest = sdp_address(response.body)
            call.rtp.start(600)
            return response, call
        raise AssertionError("INVITE failed")

    def _ack(self, call: UaCall, cseq: int) -> None:
        self._send(f"ACK {call.remote_target} SIP/2.0\n{self._via('z9hG4bK' + _tag())}\n"
                   f"Max-Forwards: 70\nFrom: {call.local_uri};tag={call.local_tag}\n"
                   f"To: {call.remote_uri};tag={call.remote_tag}\nCall-ID: {call.call_id}\n"
                   f"CSeq: {cseq} ACK")

    def _in_dialog(self, call: UaCall, method: str, extra: str = "",
                   body: bytes = b"") -> int:
        call.cseq += 1
        self._send(f"{method} {call.remote_target} SIP/2.0\n{self._via('z9hG4bK' + _tag())}\n"
                   f"Max-Forwards: 70\nFrom: {call.local_uri};tag={call.local_tag}\n"
                   f"To: {call.remote_uri};tag={call.remote_tag}\nCall-ID: {call.call_id}\n"
                   f"CSeq: {call.cseq} {method}\nContact: {self.contact}\n{extra}", body)
        return call.cseq

    async def reinvite(self, call: UaCall, direction: str) -> Response:
        """Hold (``sendonly``) or resume (``sendrecv``) with a re-INVITE; the tone stops
        while holding (a phone on hold sends nothing)."""
        assert call.rtp is not None
        cseq = self._in_dialog(call, "INVITE", "Content-Type: application/sdp\n",
                               sdp(call.rtp.port, direction))
        response = await self._final(call.call_id, cseq, "INVITE")
        if response.status == 200:
            self._ack(call, cseq)
            call.rtp.sending = direction == "sendrecv"
        return response

    async def refer(self, call: UaCall, refer_to: str) -> Response:
        cseq = self._in_dialog(call, "REFER", f"Refer-To: {refer_to}\n"
                               f"Referred-By: <sip:{self.user}@{LOOPBACK}>\n")
        return await self._final(call.call_id, cseq, "REFER")

    async def bye(self, call: UaCall) -> Response:
        cseq = self._in_dialog(call, "BYE")
        return await self._final(call.call_id, cseq, "BYE")

    def notifies(self, call: UaCall) -> list[str]:
        """The sipfrag status lines of the NOTIFYs received in ``call``'s dialog."""
        return [r.body.decode().strip() for r in self.requests("NOTIFY", call)]

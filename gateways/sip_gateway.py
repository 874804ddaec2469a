"""SIP phones and trunks as legs: the hub's back-to-back user agent.

Every call through the hub is two dialogs joined by a :class:`~bridges.model.Bridge`:
the caller's (we are its UAS, side A) and the callee's (we are its UAC, side B, forked
to every registered contact). RTP flows through a relay session, so the hub can
later record, barge into or monitor any call. In-dialog requests and responses on one
side become their counterpart on the other.

Transfers (RFC 3515 REFER): blind, the Refer-To user dialled into the call; attended
(RFC 5589, a Refer-To with Replaces, RFC 3891), the party of the transferor's other call
through the hub moved into this call's bridge, nobody dialled; an INVITE with Replaces
takes over a dialog of its sender's own user.

Authentication: REGISTER is challenged with 401, INVITE with 407, unless the request
comes from a trunk's ``inbound_from`` address (carriers authenticate by IP). Nothing
unauthenticated rings a phone or reaches a trunk.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bridges.events import DtmfPressed, EventBus, RegistrationChanged, SecurityAlert
from bridges.events import TalkerChanged as BusTalkerChanged
from bridges.model import Bridge, Leg, LegState
from media.engine import (
    DtmfReceived,
    LegTimedOut,
    MediaBridge,
    MediaEngine,
    MediaEvent,
    MediaLeg,
    TalkerChanged,
)
from media.tones import RINGBACK_CN, Player, cadence_signal, music_on_hold
from signaling.dialog import Dialog, DialogState, dialog_id_of_request, new_call_id, new_tag
from signaling.digest import DigestServer
from signaling.errors import ParseError
from signaling.headers import parse_name_addr, quote_string
from signaling.message import Request, Response, header_tag, make_cancel, make_response
from signaling.registrar import Registrar
from signaling.replaces import Replaces, parse_replaces, replaces_in_uri
from signaling.stack import CloseConnection, StackEvent
from signaling.transaction import (
    AckReceived,
    Address,
    ClientTransaction,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    StrayResponse,
    TransactionTimedOut,
    new_branch,
)
from signaling.transport import SipTransport
from signaling.uri import SipUri

from .media_sdp import Negotiated, SdpSession, apply_negotiated, extract_sdp
from .originate import Originator, OutboundLeg, Outcome
from .queue import DispatchQueue
from .rooms import RoomManager
from .routing import Route, Target
from .security import AuthThrottle, is_scanner

log = logging.getLogger(__name__)

REINVITE_TIMEOUT = 180.0
"""Seconds an in-dialog request may stay unanswered after a 1xx (like Timer C)."""
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, INFO, UPDATE, REFER"


class CallLog(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: object, kwargs: object) -> tuple[object, object]:  # type: ignore[override]
        return f"[{self.extra['call'] if self.extra else '?'}] {msg}", kwargs


@dataclass(eq=False)
class Branch:
    """One INVITE we sent for a call (a fork to one contact or a trunk)."""

    target: Target
    request: Request
    media: MediaLeg
    sdp: SdpSession
    tx: ClientTransaction | None = None
    leg: Leg | None = None
    dialog: Dialog | None = None
    provisional: bool = False
    final: int = 0
    cancel_wanted: bool = False
    cancelled: bool = False


@dataclass(eq=False)
class PendingReinvite:
    """A re-INVITE (or other in-dialog request) we forwarded and await an answer for."""

    from_side: str
    server_tx: ServerTransaction
    client_tx: ClientTransaction | None = None
    answer: bytes = b""
    """Our SDP answer to the requester, sent once the other side has answered."""
    timer: asyncio.TimerHandle | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an attended transfer cannot be done, with the SIP status that says so."""

    status: int
    why: str

    @property
    def status_line(self) -> str:
        """``481 Call/Transaction Does Not Exist``: for a sipfrag (RFC 3420)."""
        return f"{self.status} {_REASONS.get(self.status, 'Failed')}"

    def __str__(self) -> str:
        return f"{self.status_line}: {self.why}"


@dataclass(eq=False)
class HubOffer:
    """A re-INVITE the hub sent one side on its own (taking it off hold after a transfer)."""

    call: Call
    side: str


@dataclass(eq=False)
class Call:
    id: str
    bridge: Bridge
    media: MediaBridge
    a_media: MediaLeg
    a_sdp: SdpSession
    a_answer: bytes
    a_tx: ServerTransaction
    a_dialog: Dialog
    a_dest: Address
    a_leg: Leg
    log: CallLog
    caller: str
    branches: list[Branch] = field(default_factory=list)
    b: Branch | None = None
    state: str = "routing"  # routing -> ringing -> answered -> ended
    ring_timer: asyncio.TimerHandle | None = None
    pending: PendingReinvite | None = None
    moh: Player | None = None
    created: float = field(default_factory=time.monotonic)
    answered_at: float | None = None
    early_media: bool = False
    transfer: OutboundLeg | None = None
    """The party a transfer (REFER or the API) is bringing in for one side."""
    released: set[str] = field(default_factory=set)
    """Sides replaced by a transfer: their dialog is over, the call goes on without them."""
    transfer_keep: str | None = None
    ringback: Player | None = None
    offering: set[str] = field(default_factory=set)
    """Sides with a re-INVITE of the hub's own outstanding (``HubOffer``): theirs is glare."""

    @property
    def ended(self) -> bool:
        return self.state == "ended"


class SipGateway:
    """The transaction user of the hub's SIP endpoint."""

    def __init__(
        self,
        *,
        store: object,
        transport: SipTransport,
        engine: MediaEngine,
        bus: EventBus,
        digest: DigestServer,
        registrar: Registrar,
        throttle: AuthThrottle | None = None,
        ring_timeout: float = 60.0,
        clock: Callable[[], float] = time.time,
        recorder_factory: Callable[[str, int], object] | None = None,
    ) -> None:
        self.store = store
        self.transport = transport
        self.engine = engine
        self.bus = bus
        self.digest = digest
        self.registrar = registrar
        self.throttle = throttle or AuthThrottle()
        self.ring_timeout = ring_timeout
        self.clock = clock
        self.originator = Originator(transport, self.resolve,
                                     lambda: self.engine.advertised_host)
        self.media_listeners: list[Callable[[MediaEvent], None]] = []
        """Owners of other bridges (dispatch calls) hear the engine's events here."""
        self.rooms = RoomManager(transport=transport, engine=engine, bus=bus,
                                 recorder_factory=recorder_factory)
        self.rooms.on_close = self.originator.hang_up_bridge
        self.queue = DispatchQueue(transport=transport, engine=engine, bus=bus,
                                   on_close=self.originator.hang_up_bridge,
                                   recorder_factory=recorder_factory)
        self.calls: dict[str, Call] = {}
        self._by_bridge: dict[str, Call] = {}
        self._dialogs: dict[tuple[str, str, str], tuple[Call, str]] = {}
        self._ids = 0
        self.stats = {"calls_total": 0, "answered": 0, "failed": 0, "auth_failures": 0}

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def _store(self):  # type: ignore[no-untyped-def]
        return self.store

    def request_filter(self, request: Request, source: Address) -> bool:
        """True drops the request silently (scanners, blocked sources)."""
        if is_scanner(request.headers.get("User-Agent")):
            log.info("dropped %s from scanner %r at %s", request.method,
                     request.headers.get("User-Agent"), source)
            return True
        return self.throttle.blocked(source.host, self.clock())

    def handle(self, event: StackEvent) -> None:
        if isinstance(event, RequestReceived):
            self._on_request(event.transaction, event.request)
        elif isinstance(event, ResponseReceived):
            self._on_response(event.transaction, event.response)
        elif isinstance(event, AckReceived):
            self._on_ack(event.request)
        elif isinstance(event, TransactionTimedOut):
            self._on_timeout(event.transaction)
        elif isinstance(event, StrayResponse):
            self._on_stray(event.response, event.source)
        elif isinstance(event, CloseConnection):
            pass

    def health(self) -> dict[str, object]:
        return {
            "calls": sum(1 for c in self.calls.values() if not c.ended),
            "media": self.engine.snapshot(),
            "rooms": self.rooms.snapshot(),
            "queue": len(self.queue.waiting()),
            **self.stats,
        }

    def _reply(self, tx: ServerTransaction, status: int, reason: str | None = None,
               headers: tuple[tuple[str, str], ...] = (), to_tag: str | None = None,
               body: bytes = b"", content_type: str | None = None) -> None:
        resp = make_response(tx.request, status, reason, to_tag=to_tag or tx.to_tag or None,
                             headers=headers, body=body)
        if content_type:
            resp.headers.add("Content-Type", content_type)
        self.transport.respond(tx, resp)

    # -- requests -----------------------------------------------------------------------------
    def _on_request(self, tx: ServerTransaction, request: Request) -> None:
        method = request.method
        if not tx.to_tag:
            tx.to_tag = new_tag()
        if method != "INVITE" and request.headers.get("Replaces") is not None:
            # RFC 3891 section 3: Replaces belongs in an INVITE only.
            self._reply(tx, 400, "Replaces in a request other than INVITE")
            return
        if dialog_id_of_request(request) is not None and method != "CANCEL":
            self._in_dialog(tx, request)
        elif method == "INVITE":
            self._new_call(tx, request)
        elif method == "REGISTER":
            self._register(tx, request)
        elif method == "OPTIONS":
            self._reply(tx, 200, headers=(("Allow", ALLOW), ("Accept", "application/sdp"),
                                          ("Supported", "replaces")))
        elif method == "CANCEL":
            self._cancel(tx, request)
        elif method == "BYE":
            self._reply(tx, 481)
        else:
            self._reply(tx, 405, headers=(("Allow", ALLOW),))

    # -- authentication ---------------------------------------------------------------------
    def _authenticate(self, tx: ServerTransaction, request: Request, *, proxy: bool) -> str | None:
        """The authenticated user, or None after answering 401/407 (or 403)."""
        now = self.clock()
        source = tx.source.host
        header = "Proxy-Authorization" if proxy else "Authorization"
        realm = self.digest.realm
        creds = [c for c in request.auth(header) if c.params.get("realm") == realm]
        stale = False
        if creds:
            result = self.digest.verify(creds[0], request.method, self._lookup_ha1, now)
            if result.ok and result.username is not None:
                self.throttle.success(source)
                return result.username
            stale = result.stale
            if not stale:
                self.stats["auth_failures"] += 1
                log.warning("failed %s authentication for %r from %s: %s", request.method,
                            creds[0].params.get("username"), tx.source, result.reason)
                if self.throttle.failure(source, now, result.reason):
                    self.bus.publish(SecurityAlert(source=source,
                                                   what="blocked after failed authentication"))
        challenge_name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        headers = tuple((challenge_name, str(c)) for c in self.digest.challenge(now, stale=stale))
        self._reply(tx, 407 if proxy else 401, headers=headers)
        return None

    def _lookup_ha1(self, username: str, algorithm: str) -> str | None:
        user = self.store.get_user(username)  # type: ignore[attr-defined]
        if user is None:
            return None
        value: str | None = user.ha1(algorithm)
        return value

    # -- REGISTER ------------------------------------------------------------------------------
    def _register(self, tx: ServerTransaction, request: Request) -> None:
        user = self._authenticate(tx, request, proxy=False)
        if user is None:
            return
        source = tx.source
        response = self.registrar.handle(request, user=user, source=(source.host, source.port),
                                         transport=source.transport, now=self.clock())
        self.transport.respond(tx, response)
        if response.status == 200:
            self.bus.publish(RegistrationChanged(user=user,
                                                 contacts=len(response.contacts)))

    # -- new calls ------------------------------------------------------------------------------
    def _new_call(self, tx: ServerTransaction, request: Request) -> None:
        trunk = self.store.trunk_for_source(tx.source.host, tx.source.port)  # type: ignore[attr-defined]
        if trunk is not None:
            caller = request.from_.sip_uri.user_unescaped if isinstance(
                request.from_.uri, SipUri) else None
            caller = caller or "anonymous"
            caller_display = request.from_.display_name
        else:
            user = self._authenticate(tx, request, proxy=True)
            if user is None:
                return
            record = self.store.get_user(user)  # type: ignore[attr-defined]
            caller = user
            caller_display = record.display_name if record is not None else None
        max_forwards = request.max_forwards
        if max_forwards is not None and max_forwards <= 0:
            self._reply(tx, 483)
            return
        self._reply(tx, 100)
        offer = extract_sdp(request)
        if offer is None:
            self._reply(tx, 488, "An SDP offer is required in the INVITE")
            return
        try:
            offered = SdpSession.read_offer(offer)
        except ParseError as exc:
            self._reply(tx, 488, exc.reason)
            return
        if request.headers.get_all("Replaces"):
            self._invite_replaces(tx, request, None if trunk is not None else caller, offer)
            return
        dialled = _dialled(request)
        room = self.store.get_room(dialled) if dialled else None  # type: ignore[attr-defined]
        if room is not None:
            self.rooms.join(tx, request, caller, room, offer)
            return
        if dialled and dialled == getattr(self.store, "dispatch_number", None) and (
                self.store.get_user(dialled) is None):  # type: ignore[attr-defined]
            rate = 16000 if offered.codec.sample_rate >= 16000 else 8000
            self.queue.enqueue(tx, request, caller, caller_display, offer, rate)
            return
        route = self._route(request, trunk_call=trunk is not None)
        if not route.targets:
            self._reply(tx, route.status, route.reason or None)
            return
        self._ids += 1
        call_id = f"C{self._ids}"
        rate = 16000 if offered.codec.sample_rate >= 16000 else 8000
        bridge = Bridge(self.bus, "call")
        a_leg = bridge.add_leg("sip-trunk" if trunk else "sip-user", caller)
        try:
            media_bridge = self.engine.create_bridge(bridge.id, rate)
        except ValueError as exc:
            log.error("cannot open a media bridge: %s", exc)
            self._reply(tx, 503, "Media engine unavailable")
            bridge.close("no media")
            return
        a_sdp = SdpSession(self.engine.advertised_host, rate)
        try:
            a_media = media_bridge.add_leg(a_leg.id, None, peer=caller, join=False)
            a_answer, neg = a_sdp.answer(offer, a_media.pair.rtp_port)
        except ParseError as exc:
            media_bridge.close()
            bridge.close("bad sdp")
            self._reply(tx, exc.status if exc.status == 488 else 488, exc.reason)
            return
        except Exception as exc:  # ports exhausted, socket errors
            log.error("cannot open media for a call: %s", exc)
            media_bridge.close()
            bridge.close("no media")
            self._reply(tx, 503, "No media ports available")
            return
        apply_negotiated(a_media, neg)
        media_bridge.join(a_leg.id)
        a_dialog = Dialog.from_uas(request, tx.to_tag) if request.contacts else Dialog(
            call_id=request.call_id, local_tag=tx.to_tag,
            remote_tag=header_tag(request.headers.get("From")) or "",
            local_uri=request.headers.get("To") or "", remote_uri=request.headers.get("From") or "",
            remote_target=request.uri, remote_seq=request.cseq.number)
        call = Call(
            id=call_id, bridge=bridge, media=media_bridge, a_media=a_media, a_sdp=a_sdp,
            a_answer=a_answer, a_tx=tx, a_dialog=a_dialog, a_dest=tx.source, a_leg=a_leg,
            log=CallLog(log, {"call": call_id}), caller=caller,
        )
        self._by_bridge[bridge.id] = call
        tx.context = call
        self.calls[call_id] = call
        self._dialogs[(a_dialog.call_id, a_dialog.local_tag, a_dialog.remote_tag)] = (call, "a")
        self.stats["calls_total"] += 1
        call.log.info("%s -> %s (%d target%s, Call-ID %s)", caller, route.targets[0].peer,
                      len(route.targets), "" if len(route.targets) == 1 else "s",
                      request.call_id)
        forward_mf = str((max_forwards if max_forwards is not None else 70) - 1)
        for target in route.targets:
            self._fork(call, target, request, caller, caller_display, forward_mf)
        if all(b.final for b in call.branches):
            self._all_failed(call)
            return
        call.ring_timer = asyncio.get_running_loop().call_later(
            self.ring_timeout, self._ring_timeout, call)

    def _route(self, request: Request, *, trunk_call: bool) -> Route:
        number = _dialled(request)
        if not number:
            return Route(status=404, reason="No user in the Request-URI")
        return self.resolve(number)

    def resolve(self, number: str) -> Route:
        """Where a user name or number can be reached now: its contacts, or a trunk."""
        user = self.store.get_user(number)  # type: ignore[attr-defined]
        if user is not None:
            bindings = self.store.bindings(number, self.clock())  # type: ignore[attr-defined]
            targets = []
            for b in bindings:
                if not b.received_host or not b.received_port:
                    continue
                dest = Address(b.received_host, b.received_port, b.transport.lower())
                targets.append(Target(uri=b.contact, dest=dest, peer=number, kind="sip-user",
                                      to_uri=f"sip:{number}@{dest.host}"))
            if not targets:
                return Route(status=480, reason="Not registered")
            return Route(tuple(targets))
        found = self.store.trunk_for_number(number)  # type: ignore[attr-defined]
        if found is not None:
            trunk, dialled = found
            host = f"[{trunk.host}]" if ":" in trunk.host else trunk.host
            dest = Address(trunk.host, trunk.port, trunk.transport)
            uri_text = f"sip:{dialled}@{host}:{trunk.port}"
            if trunk.transport != "udp":
                uri_text += f";transport={trunk.transport}"
            return Route((Target(uri=uri_text, dest=dest, peer=dialled, kind="sip-trunk",
                                 to_uri=uri_text),))
        return Route(status=404, reason="No such user or number")

    def _fork(self, call: Call, target: Target, request: Request, caller: str,
              caller_display: str | None, max_forwards: str) -> None:
        dest = target.dest
        host, port = self.transport.sent_by(dest)
        host_ref = f"[{host}]" if ":" in host else host
        invite = Request(method="INVITE", uri=_parse_target_uri(target.uri))
        h = invite.headers
        h.add("Via", self.transport.via(dest, new_branch()))
        h.add("Max-Forwards", max_forwards)
        display = f"{quote_string(caller_display)} " if caller_display else ""
        h.add("From", f"{display}<sip:{caller}@{host_ref}>;tag={new_tag()}")
        h.add("To", f"<{target.to_uri}>")
        h.add("Call-ID", new_call_id(host_ref))
        h.add("CSeq", "1 INVITE")
        h.add("Contact", f"<{self.transport.contact_uri(dest, 'hub')}>")
        h.add("Allow", ALLOW)
        for name in ("Alert-Info", "Call-Info", "Priority", "Subject"):
            for value in request.headers.fields(name):
                h.add(name, value)
        h.add("Content-Type", "application/sdp")
        leg = call.bridge.add_leg(target.kind, target.peer)
        try:
            media = call.media.add_leg(leg.id, None, peer=target.peer, join=False)
        except Exception as exc:
            call.log.error("no media port for %s: %s", target.peer, exc)
            leg.set_state(LegState.ENDED, "no media")
            return
        sdp = SdpSession(self.engine.advertised_host, call.media.rate)
        invite.body = sdp.offer(media.pair.rtp_port)
        branch = Branch(target=target, request=invite, media=media, sdp=sdp)
        branch.leg = leg
        call.branches.append(branch)
        branch.tx = self.transport.send_request(invite, dest, context=(call, branch))

    # -- responses on side B ----------------------------------------------------------------------
    def _on_response(self, tx: ClientTransaction, response: Response) -> None:
        ctx = tx.context
        if self.originator.owns(ctx):
            self.originator.on_response(ctx, tx, response)
            return
        if isinstance(ctx, tuple) and len(ctx) == 2 and ctx[0] == "reinvite" and isinstance(
                ctx[1], OutboundLeg):
            self.originator.on_reinvite_response(ctx[1], tx, response)
            return
        if isinstance(ctx, tuple) and len(ctx) == 2 and isinstance(ctx[1], Branch):
            call, branch = ctx
            if tx.request.method == "INVITE":
                self._branch_response(call, branch, response)
            return
        if isinstance(ctx, PendingReinvite):
            self._forwarded_response(ctx, tx, response)
        elif isinstance(ctx, HubOffer):
            self._hub_offer_response(ctx, tx, response)

    def _branch_response(self, call: Call, branch: Branch, response: Response) -> None:
        code = response.status
        if code < 200:
            # Any provisional, 100 included, lets a CANCEL go out (RFC 3261 9.1).
            branch.provisional = True
            if branch.cancel_wanted and not branch.cancelled:
                self._send_cancel(branch)
                return
            if code == 100:
                return
            if call.state not in ("routing", "ringing"):
                return
            call.state = "ringing"
            if branch.leg is not None and branch.leg.state is LegState.NEW:
                branch.leg.set_state(LegState.RINGING, str(code))
            if call.a_leg.state is LegState.NEW:
                call.a_leg.set_state(LegState.RINGING, str(code))
            body = b""
            answer = extract_sdp(response)
            if answer is not None and call.b is None:
                neg = _read_answer(branch.sdp, answer)
                if neg is not None:
                    apply_negotiated(branch.media, neg)
                    call.media.join(branch.media.id)
                    body = call.a_answer
                    call.early_media = True
            status = 183 if body else (180 if code in (180, 183) and not body else code)
            resp = make_response(call.a_tx.request, status, to_tag=call.a_tx.to_tag,
                                 body=body, headers=(("Contact", self._a_contact(call)),))
            if body:
                resp.headers.add("Content-Type", "application/sdp")
            self.transport.respond(call.a_tx, resp)
            return
        if code < 300 and branch.dialog is not None:
            # A retransmitted 2xx: our ACK was lost, send it again (RFC 3261 13.2.2.4).
            self._send_ack(branch, branch.dialog)
            return
        branch.final = code
        if code < 300:
            self._branch_answered(call, branch, response)
            return
        if branch.leg is not None and not branch.leg.ended:
            branch.leg.set_state(LegState.ENDED, str(code))
        if call.b is None:
            call.media.remove_leg(branch.media.id)
        if call.state in ("routing", "ringing") and all(b.final for b in call.branches):
            self._all_failed(call)

    def _branch_answered(self, call: Call, branch: Branch, response: Response) -> None:
        dialog = Dialog.from_uac(branch.request, response)
        branch.dialog = dialog
        self._send_ack(branch, dialog)
        if call.ended or (call.b is not None and call.b is not branch):
            # A second fork answered, or the caller gave up: this one must go.
            call.log.info("late answer from %s: releasing it", branch.target.peer)
            self._send_bye_dialog(dialog, branch.target.dest, context=None)
            if branch.leg is not None and not branch.leg.ended:
                branch.leg.set_state(LegState.ENDED, "not needed")
            return
        answer = extract_sdp(response)
        neg = _read_answer(branch.sdp, answer) if answer is not None else branch.sdp.current
        if neg is None:
            call.log.warning("answer without usable SDP from %s", branch.target.peer)
            self._send_bye_dialog(dialog, branch.target.dest, context=None)
            branch.final = 488
            if all(b.final for b in call.branches):
                self._all_failed(call)
            return
        call.b = branch
        call.state = "answered"
        call.answered_at = time.monotonic()
        self.stats["answered"] += 1
        if call.ring_timer is not None:
            call.ring_timer.cancel()
        apply_negotiated(branch.media, neg)
        call.media.join(branch.media.id)
        self._dialogs[(dialog.call_id, dialog.local_tag, dialog.remote_tag)] = (call, "b")
        for other in call.branches:
            if other is not branch:
                if not other.final:
                    self._cancel_branch(other)
                call.media.remove_leg(other.media.id)
        body = call.a_answer
        resp = make_response(call.a_tx.request, 200, to_tag=call.a_tx.to_tag, body=body,
                             headers=(("Contact", self._a_contact(call)), ("Allow", ALLOW),
                                      ("Content-Type", "application/sdp")))
        self.transport.respond(call.a_tx, resp)
        call.a_dialog.state = DialogState.CONFIRMED
        for leg in (call.a_leg, branch.leg):
            if leg is not None and leg.state in (LegState.NEW, LegState.RINGING):
                leg.set_state(LegState.UP, "answered")
        call.log.info("answered by %s", branch.target.peer)

    def _a_contact(self, call: Call) -> str:
        return f"<{self.transport.contact_uri(call.a_dest, 'hub')}>"

    def _all_failed(self, call: Call) -> None:
        codes = [b.final for b in call.branches if b.final]
        status = _best_failure(codes)
        reason = None
        if status == 480 and 408 in codes:
            reason = "No answer"
        call.log.info("failed: %s (branches %s)", status, codes)
        self.stats["failed"] += 1
        self._reply(call.a_tx, status, reason)
        self._end(call, str(status))

    def _ring_timeout(self, call: Call) -> None:
        if call.state not in ("routing", "ringing"):
            return
        call.log.info("no answer within %.0f s", self.ring_timeout)
        for branch in call.branches:
            if not branch.final:
                self._cancel_branch(branch)
                branch.final = 408
        self._all_failed(call)

    def _send_ack(self, branch: Branch, dialog: Dialog) -> None:
        ack = dialog.create_request("ACK", via=self.transport.via(branch.target.dest,
                                                                  new_branch()),
                                    cseq=branch.request.cseq.number)
        self.transport.send_ack(ack, branch.target.dest)

    def _cancel_branch(self, branch: Branch) -> None:
        if branch.final or branch.cancelled:
            return
        branch.cancel_wanted = True
        if branch.provisional:
            self._send_cancel(branch)
        # else: RFC 3261 9.1, wait for a provisional response before cancelling.

    def _send_cancel(self, branch: Branch) -> None:
        branch.cancelled = True
        cancel = make_cancel(branch.request)
        self.transport.send_request(cancel, branch.target.dest, context=None)

    # -- CANCEL from side A -----------------------------------------------------------------------
    def _cancel(self, tx: ServerTransaction, request: Request) -> None:
        invite_tx = self.transport.endpoint.layer.find_invite_for_cancel(request)
        if invite_tx is None:
            self._reply(tx, 481)
            return
        self._reply(tx, 200)
        call = invite_tx.context
        if not isinstance(call, Call):
            if invite_tx.last_response is None or invite_tx.last_response.status < 200:
                self._reply(invite_tx, 487)
            return
        if call.state not in ("routing", "ringing"):
            return
        call.log.info("caller cancelled")
        for branch in call.branches:
            self._cancel_branch(branch)
        self._reply(call.a_tx, 487)
        self._end(call, "cancel")

    # -- ACK --------------------------------------------------------------------------------------
    def _on_ack(self, request: Request) -> None:
        # The 2xx's ACK ends the server transaction's retransmissions, nothing else to do.
        pass

    # -- in-dialog requests -----------------------------------------------------------------------
    def _in_dialog(self, tx: ServerTransaction, request: Request) -> None:
        if self.rooms.handle_in_dialog(tx, request):
            return
        if self.queue.handle_in_dialog(tx, request):
            return
        if self.originator.handle_in_dialog(tx, request, self._reply):
            return
        key = dialog_id_of_request(request)
        found = self._dialogs.get(key) if key is not None else None
        if found is None:
            log.debug("%s for unknown dialog %s from %s: 481", request.method, key, tx.source)
            self._reply(tx, 481)
            return
        call, side = found
        dialog = call.a_dialog if side == "a" else (call.b.dialog if call.b else None)
        if dialog is None:
            self._reply(tx, 481)
            return
        if not dialog.check_remote_cseq(request):
            self._reply(tx, 500, "CSeq out of order")
            return
        method = request.method
        if side in call.released:
            # The transferor's dialog: a BYE crossing ours is fine, nothing else goes on.
            self._reply(tx, 200 if method == "BYE" else 481)
            return
        if method == "BYE" and call.transfer is not None and not call.transfer.ended and (
                side != self._kept_side(call)):
            # Blind transfer: the transferor hangs up after the REFER; the call goes on.
            self._reply(tx, 200)
            call.log.info("transferor (side %s) hung up", side.upper())
            self._release_side(call, side, "transferred", bye=False)
            return
        if method == "REFER":
            self._refer(call, side, tx, request)
            return
        if method in ("INVITE", "UPDATE") and call.released:
            self._answer_locally(call, side, tx, request)
            return
        if method == "BYE":
            self._reply(tx, 200)
            call.log.info("BYE from side %s", side.upper())
            other = "b" if side == "a" else "a"
            self._bye_side(call, other)
            self._end(call, f"bye from {side}")
        elif method in ("INVITE", "UPDATE", "INFO"):
            if call.state != "answered" and method == "INVITE":
                self._reply(tx, 491)
                return
            if call.pending is not None and method != "INFO":
                # RFC 3261 14.2: a re-INVITE while ours is pending: glare. INFO changes
                # no session state, so it passes (DTMF during a hold negotiation).
                self._reply(tx, 491, headers=(("Retry-After", "1"),))
                return
            self._forward_in_dialog(call, side, tx, request)
        elif method == "OPTIONS":
            self._reply(tx, 200, headers=(("Allow", ALLOW),))
        else:
            self._reply(tx, 405, headers=(("Allow", ALLOW),))

    def _forward_in_dialog(self, call: Call, side: str, tx: ServerTransaction,
                           request: Request) -> None:
        body = b""
        our_answer = b""
        if request.method in ("INVITE", "UPDATE"):
            offer = extract_sdp(request)
            if offer is not None:
                my_media, my_sdp = self._side_media(call, side)
                other_media, other_sdp = self._side_media(call, "b" if side == "a" else "a")
                if my_media is None or my_sdp is None or other_media is None or (
                        other_sdp is None):
                    self._reply(tx, 481)
                    return
                try:
                    our_answer, neg = my_sdp.answer(offer, my_media.pair.rtp_port)
                except ParseError as exc:
                    self._reply(tx, 488, exc.reason)
                    return
                apply_negotiated(my_media, neg)
                self._update_hold(call, side, neg.direction)
                # The other side learns of the hold: we offer it what the requester asked.
                held = neg.direction if neg.direction in ("sendonly", "inactive") else "sendrecv"
                body = other_sdp.offer(other_media.pair.rtp_port, direction=held)
        else:
            body = request.body
        dialog, dest = self._side_dialog(call, "b" if side == "a" else "a")
        if dialog is None or dest is None:
            self._reply(tx, 481)
            return
        fwd = dialog.create_request(request.method, via=self.transport.via(dest, new_branch()),
                                    contact=f"<{self.transport.contact_uri(dest, 'hub')}>")
        if body:
            fwd.body = body
            ctype = "application/sdp" if request.method in ("INVITE", "UPDATE") else (
                request.headers.get("Content-Type") or "application/octet-stream")
            fwd.headers.add("Content-Type", ctype)
        pending = PendingReinvite(from_side=side, server_tx=tx, answer=our_answer)
        if request.method != "INFO":
            call.pending = pending
        pending.client_tx = self.transport.send_request(fwd, dest, context=pending)
        # Timer B stops at the first 1xx: an in-dialog request answered 1xx and then
        # never finally must not hold the call (and block re-INVITEs) for ever.
        pending.timer = asyncio.get_running_loop().call_later(
            REINVITE_TIMEOUT, self._pending_timeout, call, pending)
        tx.context = call

    def _forwarded_response(self, pending: PendingReinvite, tx: ClientTransaction,
                            response: Response) -> None:
        code = response.status
        if code < 200:
            return
        call = pending.server_tx.context
        if not isinstance(call, Call):
            return
        if pending.timer is not None:
            pending.timer.cancel()
            pending.timer = None
        if call.pending is pending:
            call.pending = None
        answering = "b" if pending.from_side == "a" else "a"
        dialog, dest = self._side_dialog(call, answering)
        if tx.request.method == "INVITE" and code < 300 and dialog is not None and dest:
            ack = dialog.create_request("ACK", via=self.transport.via(dest, new_branch()),
                                        cseq=tx.request.cseq.number)
            self.transport.send_ack(ack, dest)
        body = b""
        if code < 300 and tx.request.method in ("INVITE", "UPDATE"):
            answer = extract_sdp(response)
            ans_media, ans_sdp = self._side_media(call, answering)
            if answer is not None and ans_media is not None and ans_sdp is not None:
                neg = _read_answer(ans_sdp, answer)
                if neg is not None:
                    apply_negotiated(ans_media, neg)
            body = pending.answer
        elif code < 300:
            body = response.body
        resp = make_response(pending.server_tx.request, code, response.reason,
                             to_tag=pending.server_tx.to_tag or None, body=body)
        if body:
            resp.headers.add("Content-Type",
                             response.headers.get("Content-Type") or "application/sdp")
        if pending.server_tx.request.method == "INVITE" and code < 300:
            dest_a = call.a_dest if pending.from_side == "a" else (
                call.b.target.dest if call.b else call.a_dest)
            resp.headers.add("Contact", f"<{self.transport.contact_uri(dest_a, 'hub')}>")
        self.transport.respond(pending.server_tx, resp)

    def _pending_timeout(self, call: Call, pending: PendingReinvite) -> None:
        pending.timer = None
        if call.pending is pending:
            call.pending = None
        if pending.server_tx.last_response is None or pending.server_tx.last_response.status < 200:
            call.log.info("forwarded %s got no final answer: 408",
                          pending.server_tx.request.method)
            self._reply(pending.server_tx, 408)

    def _update_hold(self, call: Call, side: str, direction: str) -> None:
        leg = self._side_leg(call, side)
        if leg is None:
            return
        other = self._party_media(call, side)
        if direction in ("sendonly", "inactive") and leg.state is LegState.UP:
            leg.set_state(LegState.HELD, direction)
            # The held party hears music, not dead air.
            if call.moh is None and other is not None and other.joined:
                call.moh = call.media.play(music_on_hold(call.media.rate), leg_id=other.id,
                                           loop=True)
        elif direction in ("sendrecv", "recvonly") and leg.state is LegState.HELD:
            leg.set_state(LegState.UP, "resumed")
            if call.moh is not None:
                call.media.stop_player(call.moh)
                call.moh = None

    def _side_leg(self, call: Call, side: str) -> Leg | None:
        return call.a_leg if side == "a" else (call.b.leg if call.b else None)

    def side_peer(self, call: Call, side: str) -> str:
        """Who is on ``side``: the caller (an authenticated user, a trunk's number) or
        the user or number the hub called."""
        if side == "a":
            return call.caller
        return call.b.target.peer if call.b is not None else ""

    def _party_media(self, call: Call, side: str) -> MediaLeg | None:
        """The media of whoever talks with ``side``: the other side, or the party a
        transfer brought in once the other side was released."""
        other = _other(side)
        if other not in call.released:
            return self._side_media(call, other)[0]
        out = call.transfer
        if out is not None and out.outcome is Outcome.ANSWERED and not out.ended:
            return out.media
        return None

    def _side_media(self, call: Call, side: str) -> tuple[MediaLeg | None, SdpSession | None]:
        if side == "a":
            return call.a_media, call.a_sdp
        if call.b is None:
            return None, None
        return call.b.media, call.b.sdp

    def _side_dialog(self, call: Call, side: str) -> tuple[Dialog | None, Address | None]:
        if side == "a":
            return call.a_dialog, call.a_dest
        if call.b is None:
            return None, None
        return call.b.dialog, call.b.target.dest

    # -- transfer (RFC 3515 REFER, or a dispatcher through the API) ----------------------------
    def _kept_side(self, call: Call) -> str | None:
        return call.transfer_keep if call.transfer is not None else None

    def side_of_leg(self, call: Call, leg_id: str) -> str | None:
        if call.a_leg.id == leg_id:
            return "a"
        if call.b is not None and call.b.leg is not None and call.b.leg.id == leg_id:
            return "b"
        return None

    def transfer(self, call: Call, keep: str, target: str,
                 notify_side: str | None = None) -> OutboundLeg:
        """Replace the side that is not ``keep`` by ``target``, dialled by the hub.

        The replaced side is released (BYE) once the target answers; ``notify_side``
        (the REFER's sender) hears the progress as sipfrag NOTIFYs (RFC 3515).
        """
        if call.ended or call.state != "answered":
            raise ValueError(f"call {call.id} is not answered")
        if keep in call.released or (call.transfer is not None and not call.transfer.ended):
            raise ValueError(f"call {call.id} is already being transferred")
        gone = "b" if keep == "a" else "a"
        if gone in call.released:
            raise ValueError(f"call {call.id} has only one party left")
        caller = call.caller if keep == "a" else (call.b.target.peer if call.b else "hub")
        call.transfer_keep = keep

        def changed(out: OutboundLeg) -> None:
            self._transfer_changed(call, keep, gone, out, notify_side)

        call.log.info("transfer: side %s stays, %s replaces side %s", keep.upper(), target,
                      gone.upper())
        out = self.originator.dial(target, call.bridge, call.media, on_change=changed,
                                   ring_timeout=self.ring_timeout, caller=caller,
                                   caller_display=None)
        call.transfer = out
        if out.ended:
            changed(out)
        return out

    def _transfer_changed(self, call: Call, keep: str, gone: str, out: OutboundLeg,
                          notify_side: str | None) -> None:
        if call.ended or call.transfer is not out:
            return
        if out.outcome is Outcome.ANSWERED and not out.ended:
            if gone in call.released and call.ringback is None:
                return  # already handled
            if call.ringback is not None:
                call.media.stop_player(call.ringback)
                call.ringback = None
            if notify_side is not None and gone not in call.released:
                self._notify_refer(call, notify_side, "200 OK", final=True)
            if gone not in call.released:
                self._release_side(call, gone, "transferred", bye=True)
            call.log.info("transfer: %s answered", out.name)
            return
        if not out.ended:
            if notify_side is not None and out.leg.state is LegState.RINGING and (
                    notify_side not in call.released):
                self._notify_refer(call, notify_side, "180 Ringing", final=False)
            return
        if out.outcome is Outcome.ANSWERED:
            call.log.info("transfer target %s hung up", out.name)
            self.hangup(call, "bye from transfer target")
            return
        status = out.status or 480
        call.log.info("transfer to %s failed: %s", out.name, status)
        call.transfer = None
        if call.ringback is not None:
            call.media.stop_player(call.ringback)
            call.ringback = None
        if notify_side is not None and notify_side not in call.released:
            self._notify_refer(call, notify_side, f"{status} {_REASONS.get(status, 'Failed')}",
                               final=True)
        if gone in call.released:
            self.hangup(call, "transfer failed")

    def _release_side(self, call: Call, side: str, reason: str, *, bye: bool) -> None:
        if bye:
            self._bye_side(call, side)
        call.released.add(side)
        media, _ = self._side_media(call, side)
        leg = call.a_leg if side == "a" else (call.b.leg if call.b else None)
        if media is not None:
            call.media.remove_leg(media.id)
        if leg is not None and not leg.ended:
            leg.set_state(LegState.ENDED, reason)
        if call.moh is not None:
            call.media.stop_player(call.moh)
            call.moh = None
        if side == "a":
            self.transport.endpoint.layer.stop_2xx_retransmission(call.a_tx)
        out = call.transfer
        if out is not None and out.outcome is Outcome.PENDING and call.ringback is None:
            keep_media, _ = self._side_media(call, "b" if side == "a" else "a")
            if keep_media is not None:
                call.ringback = call.media.play(cadence_signal(RINGBACK_CN, call.media.rate),
                                                leg_id=keep_media.id, loop=True)

    def _refer(self, call: Call, side: str, tx: ServerTransaction, request: Request) -> None:
        refer_to = request.headers.get("Refer-To") or request.headers.get("r") or ""
        try:
            uri = parse_name_addr(refer_to).uri
            if not isinstance(uri, SipUri):
                raise ParseError(f"not a SIP URI: {uri}")
            replaces = replaces_in_uri(uri)
        except ParseError as exc:
            self._reply(tx, 400, f"Bad Refer-To: {exc.reason}"[:120])
            return
        if replaces is not None:
            self._refer_replaces(call, side, tx, request, replaces)
            return
        target = uri.user_unescaped
        if not target:
            self._reply(tx, 400, "No user in Refer-To")
            return
        if call.state != "answered" or call.transfer is not None and not call.transfer.ended:
            self._reply(tx, 491 if call.transfer is not None else 403,
                        "Call cannot be transferred now")
            return
        route = self.resolve(target)
        if not route.targets:
            self._reply(tx, route.status or 404, route.reason or None)
            return
        self._accept_refer(call, side, tx, request)
        keep = _other(side)
        try:
            self.transfer(call, keep, target, notify_side=side)
        except ValueError as exc:
            call.log.info("REFER refused after 202: %s", exc)
            self._notify_refer(call, side, "503 Service Unavailable", final=True)

    def _accept_refer(self, call: Call, side: str, tx: ServerTransaction,
                      request: Request) -> None:
        """202, and the implicit subscription's first NOTIFY (RFC 3515 2.4.4)."""
        dialog, dest = self._side_dialog(call, side)
        contact = f"<{self.transport.contact_uri(dest or tx.source, 'hub')}>"
        self._reply(tx, 202, headers=(("Contact", contact),))
        if dialog is not None and dest is not None:
            dialog.update_target(request)
        self._notify_refer(call, side, "100 Trying", final=False)

    # -- attended transfer (RFC 5589 7.x: REFER with Replaces; or the API) ------------------
    #
    # The hub is the B2BUA between every pair of phones, so the transferor's two calls
    # both end in it: the transferee B (call 1, where the REFER comes from) and the
    # target C (call 2, named by the Replaces) need no new INVITE at all. C's dialog is
    # handed to the originator as if the hub had dialled C, its media leg moves into
    # call 1's bridge, and from there call 1 is exactly a completed blind transfer:
    # B's side kept, the transferor's side released, C as ``call.transfer``. Call 1
    # goes on (its id, bridge, recording, any monitor); call 2 was the consultation.

    def _refer_replaces(self, call: Call, side: str, tx: ServerTransaction, request: Request,
                        replaces: Replaces) -> None:
        """A REFER whose Refer-To carries Replaces: join the REFER's other party (B) with
        the party of the call the Replaces names (C); the transferor leaves both."""
        keep = _other(side)
        refusal = self.transfer_refusal(call, keep)
        if refusal is not None:
            call.log.info("attended REFER refused: %s", refusal.why)
            self._reply(tx, refusal.status, "Call cannot be transferred now")
            return
        self._accept_refer(call, side, tx, request)
        refusal = self._replaces_refusal(call, side, replaces)
        if refusal is not None:
            # What the target would have answered the transferee's INVITE (RFC 5589 7.x).
            call.log.info("attended REFER (Replaces %s): %s", replaces, refusal)
            self._notify_refer(call, side, refusal.status_line, final=True)
            return
        call2, side2 = self._dialogs[replaces.dialog_key]
        call.log.info("attended transfer: side %s joins %s from %s", keep.upper(),
                      self.side_peer(call2, _other(side2)), call2.id)
        out = self.take_party(call2, side2, call.media, call.bridge, on_change=_ignore_leg)
        self.complete_attended(call, keep, out, notify_side=side)

    def _invite_replaces(self, tx: ServerTransaction, request: Request, user: str | None,
                         offer: bytes) -> None:
        """An INVITE with Replaces (RFC 3891): its sender takes the place of the party of
        the dialog it names (say another device of the same user picking the call up);
        the replaced party gets BYE. The new dialog is the hub's, answered at once."""
        values = request.headers.get_all("Replaces")
        if len(values) > 1:
            self._reply(tx, 400, "More than one Replaces")
            return
        try:
            replaces = parse_replaces(values[0])
        except ParseError as exc:
            self._reply(tx, 400, exc.reason)
            return
        found = self._dialogs.get(replaces.dialog_key)
        refusal: Refusal | None
        if found is None:
            refusal = Refusal(481, "no such dialog")
        else:
            call, side = found
            if call.ended or side in call.released:
                refusal = Refusal(603, f"that dialog of {call.id} has ended")
            elif call.state != "answered":
                refusal = Refusal(481, f"{call.id} is not answered")
            elif replaces.early_only:
                refusal = Refusal(486, f"{call.id} is answered and Replaces says early-only")
            elif user is None or user != self.side_peer(call, side):
                # Section 3: only the replaced user (authenticated) may replace its dialog.
                refusal = Refusal(403, f"{user or 'a trunk'} may not replace "
                                       f"{self.side_peer(call, side)} in {call.id}")
            else:
                refusal = self.transfer_refusal(call, _other(side))
        if refusal is not None:
            log.info("INVITE with Replaces %s from %s: %s", replaces, tx.source, refusal)
            self._reply(tx, refusal.status, _REASONS.get(refusal.status))
            return
        assert found is not None and user is not None
        call, side = found
        leg = call.bridge.add_leg("sip-user", user)
        sdp = SdpSession(self.engine.advertised_host, call.media.rate)
        try:
            media = call.media.add_leg(leg.id, None, peer=user, join=False)
        except Exception as exc:  # ports exhausted
            call.log.error("no media port for %s replacing side %s: %s", user, side, exc)
            leg.set_state(LegState.ENDED, "no media")
            self._reply(tx, 503, "No media ports available")
            return
        try:
            answer, neg = sdp.answer(offer, media.pair.rtp_port)
            dialog = Dialog.from_uas(request, tx.to_tag)
        except ParseError as exc:
            call.media.remove_leg(media.id)
            leg.set_state(LegState.ENDED, str(exc.status))
            self._reply(tx, exc.status, exc.reason)
            return
        apply_negotiated(media, neg)
        self.transport.respond(tx, make_response(request, 200, to_tag=tx.to_tag, body=answer,
                                                 headers=(
            ("Contact", f"<{self.transport.contact_uri(tx.source, 'hub')}>"), ("Allow", ALLOW),
            ("Content-Type", "application/sdp"))))
        leg.set_state(LegState.UP, "replaces")
        call.media.join(media.id)
        target = Target(uri=str(dialog.remote_target), dest=tx.source, peer=user,
                        kind="sip-user", to_uri=str(dialog.remote_target))
        out = self.originator.adopt(leg, media, sdp, dialog, target, request, _ignore_leg)
        call.log.info("%s replaces side %s (INVITE with Replaces)", user, side.upper())
        self.complete_attended(call, _other(side), out)

    def _replaces_refusal(self, call: Call, side: str, replaces: Replaces) -> Refusal | None:
        """Why the dialog ``replaces`` names cannot be taken over, as the status the
        target would answer the transferee's INVITE with (RFC 3891 section 3)."""
        found = self._dialogs.get(replaces.dialog_key)
        if found is None:
            return Refusal(481, "no such dialog")
        call2, side2 = found
        if call2 is call:
            return Refusal(403, "Replaces names the REFER's own call")
        if call2.ended or side2 in call2.released:
            return Refusal(603, f"that dialog of {call2.id} has ended")
        if call2.state != "answered":
            # An early dialog the hub did not initiate (the transferor is calling).
            return Refusal(481, f"{call2.id} is not answered")
        if replaces.early_only:
            return Refusal(486, f"{call2.id} is answered and Replaces says early-only")
        if self.side_peer(call2, side2) != self.side_peer(call, side):
            # Only the transferor's own dialog: the authorisation of section 3.
            return Refusal(403, f"that dialog of {call2.id} is not the transferor's")
        return self.consultation_refusal(call2, side2)

    def transfer_refusal(self, call: Call, keep: str) -> Refusal | None:
        """Why ``call`` cannot take part in an attended transfer keeping side ``keep``
        (None: it can): answered, both sides there, nothing under way."""
        if call.ended or call.state != "answered":
            return Refusal(403, f"call {call.id} is not answered")
        if call.transfer is not None and call.transfer.outcome is Outcome.PENDING:
            return Refusal(491, f"call {call.id} is being transferred")
        if call.released or (call.transfer is not None and not call.transfer.ended):
            return Refusal(403, f"call {call.id} is no longer a two-party call")
        if call.pending is not None or call.offering:
            return Refusal(491, f"call {call.id} has a re-INVITE pending")
        if keep not in ("a", "b") or call.b is None:
            return Refusal(403, f"call {call.id} has no side {keep}")
        return None

    def consultation_refusal(self, call: Call, transferor: str) -> Refusal | None:
        """Why the party opposite ``transferor`` cannot be taken out of ``call`` (the
        consultation call of an attended transfer); None when it can."""
        return self.transfer_refusal(call, _other(transferor))

    def take_party(self, call: Call, transferor: str, media: MediaBridge, bridge: Bridge,
                   on_change: Callable[[OutboundLeg], None]) -> OutboundLeg:
        """Take the party opposite ``transferor`` out of ``call`` into ``media``/``bridge``.

        Its dialog goes to the originator (an answered ``OutboundLeg`` from now on, as
        if the hub had dialled it), its media leg and its leg move without a gap; the
        transferor gets BYE and ``call`` ends. Raises ValueError if it cannot be done.
        """
        refusal = self.consultation_refusal(call, transferor)
        if refusal is not None:
            raise ValueError(refusal.why)
        side = _other(transferor)
        leg = self._side_leg(call, side)
        side_media, sdp = self._side_media(call, side)
        dialog, dest = self._side_dialog(call, side)
        if leg is None or side_media is None or sdp is None or dialog is None or dest is None:
            raise ValueError(f"call {call.id} has no side {side}")
        if call.moh is not None:
            call.media.stop_player(call.moh)
            call.moh = None
        if side == "a":
            request = call.a_tx.request
            target = Target(uri=str(dialog.remote_target), dest=dest, peer=call.caller,
                            kind=leg.kind, to_uri=str(dialog.remote_target))
            self.transport.endpoint.layer.stop_2xx_retransmission(call.a_tx)
        else:
            assert call.b is not None
            request, target = call.b.request, call.b.target
        # Not this call's side any more: nothing here sends it BYE or closes its media.
        self._dialogs.pop(dialog.id, None)
        call.released.add(side)
        call.media.move_leg(side_media.id, media)
        call.bridge.move_leg(leg, bridge, f"attended transfer from {call.id}")
        out = self.originator.adopt(leg, side_media, sdp, dialog, target, request, on_change)
        call.log.info("%s (side %s) handed over to bridge %s; the transferor leaves",
                      out.name, side.upper(), bridge.id)
        self._bye_side(call, transferor)
        self._end(call, "attended transfer")
        return out

    def complete_attended(self, call: Call, keep: str, out: OutboundLeg,
                          notify_side: str | None = None) -> None:
        """``out`` (answered, already in ``call``'s bridge) replaces the side that is not
        ``keep``: that side hears the REFER's final NOTIFY (if it sent one) and BYE."""
        gone = _other(keep)
        call.transfer = out
        call.transfer_keep = keep

        def changed(leg: OutboundLeg) -> None:
            self._transfer_changed(call, keep, gone, leg, notify_side)

        out.on_change = changed
        if notify_side is not None:
            self._notify_refer(call, notify_side, "200 OK", final=True)
        self._release_side(call, gone, "transferred", bye=True)
        # The transferor had put them on hold to consult: they talk to each other now.
        kept_media, _ = self._side_media(call, keep)
        if kept_media is not None and kept_media.direction in ("recvonly", "inactive"):
            self._offer_side(call, keep, "sendrecv")
        if out.media.direction in ("recvonly", "inactive"):
            self.originator.reinvite(out, "sendrecv")
        call.log.info("attended transfer: %s now talks with %s", self.side_peer(call, keep),
                      out.name)

    def _offer_side(self, call: Call, side: str, direction: str) -> None:
        """A re-INVITE of the hub's own to one side (``HubOffer``), e.g. off hold."""
        media, sdp = self._side_media(call, side)
        dialog, dest = self._side_dialog(call, side)
        if media is None or sdp is None or dialog is None or dest is None:
            return
        request = dialog.create_request("INVITE", via=self.transport.via(dest, new_branch()),
                                        contact=f"<{self.transport.contact_uri(dest, 'hub')}>")
        request.body = sdp.offer(media.pair.rtp_port, direction=direction)
        request.headers.add("Content-Type", "application/sdp")
        call.offering.add(side)
        self.transport.send_request(request, dest, context=HubOffer(call, side))

    def _hub_offer_response(self, ctx: HubOffer, tx: ClientTransaction,
                            response: Response) -> None:
        code = response.status
        if code < 200:
            return
        call, side = ctx.call, ctx.side
        call.offering.discard(side)
        dialog, dest = self._side_dialog(call, side)
        if code >= 300:
            call.log.info("side %s refused our re-INVITE: %s", side.upper(), code)
            return
        if dialog is not None and dest is not None:
            ack = dialog.create_request("ACK", via=self.transport.via(dest, new_branch()),
                                        cseq=tx.request.cseq.number)
            self.transport.send_ack(ack, dest)
        media, sdp = self._side_media(call, side)
        answer = extract_sdp(response)
        if call.ended or media is None or sdp is None or answer is None:
            return
        neg = _read_answer(sdp, answer)
        if neg is not None:
            apply_negotiated(media, neg)

    def _notify_refer(self, call: Call, side: str, status_line: str, *, final: bool) -> None:
        dialog, dest = self._side_dialog(call, side)
        if dialog is None or dest is None:
            return
        notify = dialog.create_request(
            "NOTIFY", via=self.transport.via(dest, new_branch()),
            contact=f"<{self.transport.contact_uri(dest, 'hub')}>")
        notify.headers.add("Event", "refer")
        notify.headers.add("Subscription-State",
                           "terminated;reason=noresource" if final else "active;expires=60")
        notify.headers.add("Content-Type", "message/sipfrag;version=2.0")
        notify.body = f"SIP/2.0 {status_line}\r\n".encode()
        self.transport.send_request(notify, dest, context=None)

    def _answer_locally(self, call: Call, side: str, tx: ServerTransaction,
                        request: Request) -> None:
        """A re-INVITE/UPDATE once the other side was transferred away: the hub answers."""
        media, sdp = self._side_media(call, side)
        dialog, dest = self._side_dialog(call, side)
        offer = extract_sdp(request)
        if media is None or sdp is None or dialog is None or dest is None:
            self._reply(tx, 481)
            return
        if offer is None:
            self._reply(tx, 488, "An SDP offer is required")
            return
        if side in call.offering:
            # RFC 3261 14.2: our own re-INVITE to this side is pending (glare).
            self._reply(tx, 491, headers=(("Retry-After", "1"),))
            return
        try:
            answer, neg = sdp.answer(offer, media.pair.rtp_port)
        except ParseError as exc:
            self._reply(tx, 488, exc.reason)
            return
        apply_negotiated(media, neg)
        self._update_hold(call, side, neg.direction)
        dialog.update_target(request)
        resp = make_response(request, 200, to_tag=tx.to_tag or None, body=answer, headers=(
            ("Contact", f"<{self.transport.contact_uri(dest, 'hub')}>"),
            ("Content-Type", "application/sdp")))
        self.transport.respond(tx, resp)

    # -- ending -----------------------------------------------------------------------------------
    def _bye_side(self, call: Call, side: str) -> None:
        if side in call.released:
            return
        dialog, dest = self._side_dialog(call, side)
        if dialog is None or dest is None:
            return
        if side == "a" and call.a_dialog.state is not DialogState.CONFIRMED:
            return
        self._send_bye_dialog(dialog, dest, context=None)

    def _send_bye_dialog(self, dialog: Dialog, dest: Address, context: object) -> None:
        bye = dialog.create_request("BYE", via=self.transport.via(dest, new_branch()))
        self.transport.send_request(bye, dest, context=context)

    def hangup(self, call: Call, reason: str = "hangup") -> None:
        """End a call from the hub's side (RTP timeout, shutdown, a dispatcher)."""
        if call.ended:
            return
        if call.state == "answered":
            self._bye_side(call, "a")
            self._bye_side(call, "b")
        else:
            for branch in call.branches:
                self._cancel_branch(branch)
            self._reply(call.a_tx, 503 if reason == "shutdown" else 480, reason)
        self._end(call, reason)

    def _end(self, call: Call, reason: str) -> None:
        if call.ended:
            return
        call.state = "ended"
        if call.ring_timer is not None:
            call.ring_timer.cancel()
        self.transport.endpoint.layer.stop_2xx_retransmission(call.a_tx)
        if call.pending is not None and call.pending.timer is not None:
            call.pending.timer.cancel()
        self.originator.hang_up_bridge(call.media, reason)
        # The transfer target's on_change closes over the call: let go of it (no cycle).
        call.transfer = None
        call.media.close()
        call.bridge.close(reason)
        self._by_bridge.pop(call.bridge.id, None)
        # Transactions outlive the call by up to 32 s: let go of the call now, so it
        # is freed by reference counting rather than by a (slow) cyclic collection.
        # (A branch's transaction keeps pointing at the call, to ACK and BYE a late 2xx;
        # the call stops pointing at it, so no cycle remains.)
        call.a_tx.context = None
        for branch in call.branches:
            branch.tx = None
        for key in [k for k, v in self._dialogs.items() if v[0] is call]:
            del self._dialogs[key]
        self.calls.pop(call.id, None)

    def on_media_event(self, event: MediaEvent) -> None:
        """Events from the conference engine: DTMF is passed on, dead legs end calls."""
        if isinstance(event, TalkerChanged):
            self.bus.publish(BusTalkerChanged(bridge_id=event.bridge_id, leg_id=event.leg_id,
                                              talking=event.talking))
            return
        if isinstance(event, DtmfReceived):
            self.bus.publish(DtmfPressed(bridge_id=event.bridge_id, leg_id=event.leg_id,
                                         digit=event.digit, duration_ms=event.duration_ms))
        if self.rooms.owns_bridge(event.bridge_id):
            self.rooms.on_media_event(event)
            return
        if isinstance(event, LegTimedOut) and self.queue.owns_bridge(event.bridge_id):
            entry = self.queue.by_leg(event.leg_id)
            if entry is not None:
                log.info("queue: no RTP from %s for %.0f s", entry.caller, event.seconds)
                self.queue.hang_up(entry, "rtp timeout")
                return
        call = self._by_bridge.get(event.bridge_id)
        if call is None:
            for listener in self.media_listeners:
                listener(event)
            return
        if isinstance(event, LegTimedOut):
            if call.state == "answered":
                call.log.info("no RTP from %s for %.0f s: ending the call", event.leg_id,
                              event.seconds)
                self.hangup(call, "rtp timeout")
        elif isinstance(event, DtmfReceived):
            # RFC 4733 events cross the call: the other party hears the key press.
            for leg in call.media.legs.values():
                if leg.id != event.leg_id and leg.joined:
                    leg.send_dtmf(event.digit, max(event.duration_ms, 80))

    # -- failures ---------------------------------------------------------------------------------
    def _on_timeout(self, tx: ClientTransaction | ServerTransaction) -> None:
        ctx = tx.context
        if isinstance(tx, ServerTransaction):
            if self.rooms.on_server_timeout(tx):
                return
            if self.queue.on_server_timeout(tx):
                return
            if isinstance(ctx, Call) and tx is ctx.a_tx and ctx.state == "answered":
                ctx.log.info("caller never ACKed our 200: ending")
                self.hangup(ctx, "no ack")
            return
        if self.originator.on_timeout(ctx):
            return
        if isinstance(ctx, tuple) and len(ctx) == 2 and isinstance(ctx[1], Branch):
            call, branch = ctx
            if tx.request.method == "INVITE" and not branch.final:
                branch.final = 408
                if branch.leg is not None and not branch.leg.ended:
                    branch.leg.set_state(LegState.ENDED, "timeout")
                if call.state in ("routing", "ringing") and all(b.final for b in call.branches):
                    self._all_failed(call)
        elif isinstance(ctx, HubOffer):
            ctx.call.offering.discard(ctx.side)
            ctx.call.log.info("side %s never answered our re-INVITE", ctx.side.upper())
        elif isinstance(ctx, PendingReinvite):
            resp = Response(status=408, reason="Request Timeout")
            resp.headers = make_response(ctx.server_tx.request, 408).headers
            self._forwarded_response(ctx, tx, resp)

    def _on_stray(self, response: Response, source: Address) -> None:
        # A 2xx retransmitted after its transaction ended: ACK it again (RFC 3261 13.2.2.4).
        if not (200 <= response.status < 300) or response.cseq.method != "INVITE":
            return
        if self.originator.on_stray_2xx(response):
            return
        for call in self.calls.values():
            b = call.b
            if b is not None and b.dialog is not None and b.dialog.call_id == response.call_id:
                self._send_ack(b, b.dialog)
                return

    async def shutdown(self) -> None:
        for call in list(self.calls.values()):
            self.hangup(call, "shutdown")
        self.rooms.shutdown()
        self.queue.shutdown()
        self.originator.shutdown()


def _other(side: str) -> str:
    return "b" if side == "a" else "a"


def _ignore_leg(out: OutboundLeg) -> None:
    """The ``on_change`` of a handed-over leg until its new owner sets its own."""


def _dialled(request: Request) -> str | None:
    """The dialled user or number of an INVITE's Request-URI."""
    uri = request.uri
    number = uri.user_unescaped if isinstance(uri, SipUri) else getattr(uri, "user", None)
    return number or None


def _parse_target_uri(text: str) -> SipUri:
    from signaling.uri import parse_sip_uri

    return parse_sip_uri(text.strip("<>"))


def _read_answer(sdp: SdpSession, body: bytes) -> Negotiated | None:
    try:
        return sdp.read_answer(body)
    except ParseError as exc:
        log.info("unusable SDP answer: %s", exc)
        return None



def _best_failure(codes: list[int]) -> int:
    """RFC 3261 16.7 step 6, simplified: 6xx wins, then busy, then the lowest class."""
    if not codes:
        return 480
    six = [c for c in codes if c >= 600]
    if six:
        return min(six)
    if 486 in codes:
        return 486
    mapped = []
    for c in codes:
        if c in (408, 487):
            mapped.append(480)
        elif c in (401, 407):
            mapped.append(403)
        elif c == 503:
            mapped.append(502)  # never pass on 503 (RFC 3261 16.7 step 6)
        else:
            mapped.append(c)
    four = [c for c in mapped if 400 <= c < 500]
    return min(four) if four else min(mapped)


_REASONS = {403: "Forbidden", 404: "Not Found", 408: "Request Timeout",
            480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
            486: "Busy Here", 487: "Request Terminated", 491: "Request Pending",
            603: "Decline"}


def random_id() -> str:
    return secrets.token_hex(4)

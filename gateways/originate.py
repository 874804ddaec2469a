"""Calls the hub places itself: a phone or number brought into a bridge (one click).

A dispatcher's group call, roll call, broadcast or barge-in is the hub dialling out:
an :class:`OutboundLeg` INVITEs every contact of a user (or a number through a
trunk) with the hub's own SDP offer, and the first to answer joins the bridge the
leg was dialled for. The leg reports every change to its ``on_change`` callback;
its ``outcome`` says how it ended (answered, busy, no-answer, unreachable, ...).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from bridges.model import Bridge, Leg, LegState
from media.engine import MediaBridge, MediaLeg
from signaling.dialog import Dialog, dialog_id_of_request, new_call_id, new_tag
from signaling.errors import ParseError
from signaling.headers import quote_string
from signaling.message import Request, Response, make_cancel
from signaling.transaction import ClientTransaction, ServerTransaction, new_branch
from signaling.transport import SipTransport
from signaling.uri import parse_sip_uri

from .local_leg import answer_reoffer
from .media_sdp import SdpSession, apply_negotiated, extract_sdp
from .routing import Route, Target

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE"


class Outcome(enum.Enum):
    PENDING = "pending"
    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    UNREACHABLE = "unreachable"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    FAILED = "failed"


def outcome_for(status: int) -> Outcome:
    if status in (486, 600):
        return Outcome.BUSY
    if status in (408, 480, 487):
        return Outcome.NO_ANSWER
    if status in (404, 410, 484, 604):
        return Outcome.UNREACHABLE
    if status in (403, 603):
        return Outcome.REJECTED
    return Outcome.FAILED


@dataclass(eq=False)
class _Fork:
    target: Target
    request: Request
    tx: ClientTransaction | None = None
    provisional: bool = False
    final: int = 0
    cancel_wanted: bool = False
    cancel_sent: bool = False
    dialog: Dialog | None = None


@dataclass(eq=False)
class OutboundLeg:
    """One party the hub dialled, on its way into a bridge."""

    name: str
    """What was dialled: a user name or a number."""
    leg: Leg
    media: MediaLeg
    sdp: SdpSession
    on_change: Callable[[OutboundLeg], None]
    forks: list[_Fork] = field(default_factory=list)
    answered: _Fork | None = None
    outcome: Outcome = Outcome.PENDING
    status: int = 0
    """The SIP status that decided the outcome (0 while pending)."""
    ring_timer: asyncio.TimerHandle | None = None
    pending_reinvite: bool = False
    auto_join: bool = True
    """Join the bridge's mix on answer (False: the caller decides, e.g. a roll call)."""

    @property
    def id(self) -> str:
        return self.leg.id

    @property
    def ended(self) -> bool:
        return self.leg.ended


class Originator:
    """Places and tracks the hub's own outgoing calls; the gateway hands it their events."""

    def __init__(self, transport: SipTransport, resolve: Callable[[str], Route],
                 advertised_host: Callable[[], str]) -> None:
        self.transport = transport
        self.resolve = resolve
        self.advertised_host = advertised_host
        self.legs: dict[str, OutboundLeg] = {}
        self._dialogs: dict[tuple[str, str, str], OutboundLeg] = {}

    # -- dialling ---------------------------------------------------------------------------
    def dial(self, name: str, bridge: Bridge, media: MediaBridge, *,
             on_change: Callable[[OutboundLeg], None], ring_timeout: float = 30.0,
             caller: str = "dispatch", caller_display: str | None = "调度台 Dispatch",
             auto_answer: bool = False, join: bool = True) -> OutboundLeg:
        """Dial ``name`` for ``bridge``; the leg joins ``media`` when answered (if ``join``)."""
        route = self.resolve(name)
        kind = route.targets[0].kind if route.targets else "sip-user"
        leg = bridge.add_leg(kind, name)
        media_leg = media.add_leg(leg.id, None, peer=name, join=False)
        out = OutboundLeg(name, leg, media_leg, SdpSession(self.advertised_host(), media.rate),
                          on_change, auto_join=join)
        self.legs[leg.id] = out
        if not route.targets:
            self._finish(out, route.status or 404, outcome_for(route.status or 404))
            return out
        offer = out.sdp.offer(media_leg.pair.rtp_port)
        for target in route.targets:
            self._fork(out, target, offer, caller, caller_display, auto_answer)
        out.ring_timer = asyncio.get_running_loop().call_later(ring_timeout, self._no_answer,
                                                                out)
        on_change(out)
        return out

    def _fork(self, out: OutboundLeg, target: Target, offer: bytes, caller: str,
              display: str | None, auto_answer: bool) -> None:
        dest = target.dest
        host, _ = self.transport.sent_by(dest)
        host_ref = f"[{host}]" if ":" in host else host
        invite = Request(method="INVITE", uri=parse_sip_uri(target.uri.strip("<>")))
        h = invite.headers
        h.add("Via", self.transport.via(dest, new_branch()))
        h.add("Max-Forwards", "70")
        shown = f"{quote_string(display)} " if display else ""
        h.add("From", f"{shown}<sip:{caller}@{host_ref}>;tag={new_tag()}")
        h.add("To", f"<{target.to_uri}>")
        h.add("Call-ID", new_call_id(host_ref))
        h.add("CSeq", "1 INVITE")
        h.add("Contact", f"<{self.transport.contact_uri(dest, 'hub')}>")
        h.add("Allow", ALLOW)
        if auto_answer:
            # Broadcast: ask the phone to pick up by itself (RFC 5373 / the common
            # Call-Info answer-after and Alert-Info conventions).
            h.add("Call-Info", f"<sip:{host_ref}>;answer-after=0")
            h.add("Alert-Info", f"<http://{host_ref}/>;info=alert-autoanswer")
        h.add("Content-Type", "application/sdp")
        invite.body = offer
        fork = _Fork(target, invite)
        out.forks.append(fork)
        fork.tx = self.transport.send_request(invite, dest, context=(out, fork))

    def adopt(self, leg: Leg, media: MediaLeg, sdp: SdpSession, dialog: Dialog,
              target: Target, request: Request,
              on_change: Callable[[OutboundLeg], None]) -> OutboundLeg:
        """A party already in a confirmed dialog with the hub, held from now on as if the
        hub had dialled it (answered): an attended transfer takes a phone out of the
        call it was in. Its in-dialog requests come here; ``hang_up`` sends it BYE.

        ``request`` is the INVITE that made the dialog (ours, or the phone's when it
        called in: then no ACK or CANCEL is ever built from it); ``target.dest`` is
        where the dialog's requests go.
        """
        fork = _Fork(target, request, provisional=True, final=200, dialog=dialog)
        out = OutboundLeg(leg.peer, leg, media, sdp, on_change, forks=[fork], answered=fork,
                          outcome=Outcome.ANSWERED, status=200)
        self.legs[leg.id] = out
        self._dialogs[dialog.id] = out
        log.info("%s: leg %s handed over (dialog %s)", out.name, out.id, dialog.call_id)
        return out

    # -- responses -----------------------------------------------------------------------------
    def owns(self, context: object) -> bool:
        return isinstance(context, tuple) and len(context) == 2 and isinstance(
            context[1], _Fork)

    def on_response(self, context: object, tx: ClientTransaction, response: Response) -> None:
        out, fork = _unpack(context)
        code = response.status
        if tx.request.method != "INVITE":
            return
        if code < 200:
            fork.provisional = True
            if fork.cancel_wanted:
                self._send_cancel(fork)
                return
            if out.outcome is Outcome.PENDING and out.leg.state is LegState.NEW and code > 100:
                out.leg.set_state(LegState.RINGING, str(code))
                out.on_change(out)
            return
        if code < 300:
            if fork.dialog is not None:
                self._ack(fork)  # a retransmitted 2xx: our ACK was lost
                return
            fork.final = code
            fork.dialog = Dialog.from_uac(fork.request, response)
            self._ack(fork)
            if out.answered is not None or out.ended:
                self._bye(fork.dialog, fork)
                return
            self._answered(out, fork, response)
            return
        fork.final = code
        if out.outcome is Outcome.PENDING and all(f.final for f in out.forks):
            codes = [f.final for f in out.forks]
            status = 486 if 486 in codes else min(codes)
            self._finish(out, status, outcome_for(status))

    def _answered(self, out: OutboundLeg, fork: _Fork, response: Response) -> None:
        answer = extract_sdp(response)
        try:
            neg = out.sdp.read_answer(answer) if answer is not None else None
        except ParseError as exc:
            log.info("%s answered with unusable SDP: %s", out.name, exc)
            neg = None
        if neg is None:
            assert fork.dialog is not None
            self._bye(fork.dialog, fork)
            self._finish(out, 488, Outcome.FAILED)
            return
        out.answered = fork
        out.outcome = Outcome.ANSWERED
        out.status = response.status
        if out.ring_timer is not None:
            out.ring_timer.cancel()
        assert fork.dialog is not None
        d = fork.dialog
        self._dialogs[(d.call_id, d.local_tag, d.remote_tag)] = out
        for other in out.forks:
            if other is not fork and not other.final:
                self._cancel(other)
        apply_negotiated(out.media, neg)
        if out.auto_join:
            out.media.bridge.join(out.media.id)
        out.leg.set_state(LegState.UP, "answered")
        log.info("%s answered (leg %s)", out.name, out.id)
        out.on_change(out)

    def _no_answer(self, out: OutboundLeg) -> None:
        out.ring_timer = None
        if out.outcome is Outcome.PENDING:
            for fork in out.forks:
                self._cancel(fork)
            self._finish(out, 480, Outcome.NO_ANSWER)

    # -- control ---------------------------------------------------------------------------------
    def hang_up(self, out: OutboundLeg, reason: str = "hangup") -> None:
        """Release the leg: BYE if answered, CANCEL while ringing."""
        if out.ended:
            return
        if out.answered is not None and out.answered.dialog is not None:
            self._bye(out.answered.dialog, out.answered)
            self._finish(out, out.status, out.outcome, reason)
        else:
            for fork in out.forks:
                self._cancel(fork)
            self._finish(out, 487, Outcome.CANCELLED, reason)

    def reinvite(self, out: OutboundLeg, direction: str) -> None:
        """Hold (sendonly) or resume (sendrecv) the leg with a re-INVITE."""
        fork = out.answered
        if fork is None or fork.dialog is None or out.ended:
            return
        request = fork.dialog.create_request(
            "INVITE", via=self.transport.via(fork.target.dest, new_branch()),
            contact=f"<{self.transport.contact_uri(fork.target.dest, 'hub')}>")
        request.body = out.sdp.offer(out.media.pair.rtp_port, direction=direction)
        request.headers.add("Content-Type", "application/sdp")
        out.pending_reinvite = True
        self.transport.send_request(request, fork.target.dest, context=("reinvite", out))

    def on_reinvite_response(self, out: OutboundLeg, tx: ClientTransaction,
                             response: Response) -> None:
        if response.status < 200:
            return
        out.pending_reinvite = False
        fork = out.answered
        if fork is None or fork.dialog is None:
            return
        if response.status < 300:
            ack = fork.dialog.create_request(
                "ACK", via=self.transport.via(fork.target.dest, new_branch()),
                cseq=tx.request.cseq.number)
            self.transport.send_ack(ack, fork.target.dest)
            body = extract_sdp(response)
            if body is not None:
                try:
                    apply_negotiated(out.media, out.sdp.read_answer(body))
                except ParseError as exc:
                    log.info("%s: bad SDP in re-INVITE answer: %s", out.name, exc)
        out.on_change(out)

    def send_dtmf(self, out: OutboundLeg, digit: str) -> None:
        out.media.send_dtmf(digit)

    # -- in-dialog requests from the dialled party --------------------------------------------
    def handle_in_dialog(self, tx: ServerTransaction, request: Request,
                         reply: Callable[..., None]) -> bool:
        key = dialog_id_of_request(request)
        out = self._dialogs.get(key) if key is not None else None
        if out is None or out.answered is None or out.answered.dialog is None:
            return False
        dialog = out.answered.dialog
        if not dialog.check_remote_cseq(request):
            reply(tx, 500, "CSeq out of order")
            return True
        method = request.method
        if method == "BYE":
            reply(tx, 200)
            self._finish(out, out.status, out.outcome, "bye")
        elif method in ("INVITE", "UPDATE"):
            answer_reoffer(self.transport, tx, request, leg=out.leg, media=out.media,
                           sdp=out.sdp, dialog=dialog, dest=out.answered.target.dest,
                           reply=reply)
            out.on_change(out)
        elif method in ("INFO", "OPTIONS"):
            reply(tx, 200)
        else:
            reply(tx, 405)
        return True

    def on_timeout(self, context: object) -> bool:
        if not self.owns(context):
            return False
        out, fork = _unpack(context)
        if not fork.final:
            fork.final = 408
            if out.outcome is Outcome.PENDING and all(f.final for f in out.forks):
                self._finish(out, 408, Outcome.NO_ANSWER)
        return True

    def on_stray_2xx(self, response: Response) -> bool:
        for out in self.legs.values():
            fork = out.answered
            if fork is not None and fork.dialog is not None and (
                    fork.dialog.call_id == response.call_id):
                self._ack(fork)
                return True
        return False

    # -- plumbing ----------------------------------------------------------------------------------
    def _ack(self, fork: _Fork) -> None:
        assert fork.dialog is not None
        ack = fork.dialog.create_request("ACK", via=self.transport.via(fork.target.dest,
                                                                       new_branch()),
                                         cseq=fork.request.cseq.number)
        self.transport.send_ack(ack, fork.target.dest)

    def _bye(self, dialog: Dialog, fork: _Fork) -> None:
        bye = dialog.create_request("BYE", via=self.transport.via(fork.target.dest,
                                                                  new_branch()))
        self.transport.send_request(bye, fork.target.dest)

    def _cancel(self, fork: _Fork) -> None:
        if fork.final:
            return
        fork.cancel_wanted = True
        if fork.provisional:
            self._send_cancel(fork)

    def _send_cancel(self, fork: _Fork) -> None:
        if fork.cancel_sent:
            return
        fork.cancel_sent = True
        cancel = make_cancel(fork.request)
        self.transport.send_request(cancel, fork.target.dest)

    def _finish(self, out: OutboundLeg, status: int, outcome: Outcome,
                reason: str | None = None) -> None:
        if out.ended:
            return
        if out.ring_timer is not None:
            out.ring_timer.cancel()
            out.ring_timer = None
        out.status = status
        out.outcome = outcome
        if out.answered is not None and out.answered.dialog is not None:
            d = out.answered.dialog
            self._dialogs.pop((d.call_id, d.local_tag, d.remote_tag), None)
        out.media.bridge.remove_leg(out.media.id)
        out.leg.set_state(LegState.ENDED, reason or outcome.value)
        self.legs.pop(out.id, None)
        log.info("%s: %s (%s)", out.name, outcome.value, status)
        out.on_change(out)

    def hang_up_bridge(self, media: MediaBridge, reason: str) -> None:
        """The bridge is going away: release every leg the hub dialled into it."""
        for out in list(self.legs.values()):
            if out.media.bridge is media:
                self.hang_up(out, reason)

    def shutdown(self) -> None:
        for out in list(self.legs.values()):
            self.hang_up(out, "shutdown")



def _unpack(context: object) -> tuple[OutboundLeg, _Fork]:
    assert isinstance(context, tuple)
    out, fork = context
    assert isinstance(out, OutboundLeg) and isinstance(fork, _Fork)
    return out, fork

"""The dispatch queue: calls to the dispatch number wait here for a dispatcher.

A caller who may call (an authenticated user, a trunk caller) dialling the dispatch
number (store setting ``dispatch_number``, ``hub dispatch-number set``) is answered at
once: the hub's SDP answer, a media leg in a fresh ``MediaBridge``, and ringback tone
(Chinese cadence) while waiting. The entry is listed (position, caller, waiting since)
until a dispatcher picks it up (``dispatch.calls.CallService.answer_queued`` dials the
dispatcher's phone into the entry's bridge; the tone stops when it answers) or the
caller hangs up. Every change publishes ``QueueChanged`` with the whole queue.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridges.events import Event, EventBus
from bridges.model import Bridge, Leg, LegState
from media.engine import MediaBridge, MediaEngine, MediaLeg
from media.tones import RINGBACK_CN, Player, cadence_signal
from signaling.dialog import Dialog, dialog_id_of_request
from signaling.errors import ParseError
from signaling.message import Request, make_response
from signaling.transaction import Address, ServerTransaction, new_branch
from signaling.transport import SipTransport

from .local_leg import answer_reoffer
from .media_sdp import SdpSession, apply_negotiated

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE"


@dataclass(frozen=True, slots=True)
class QueueChanged(Event):
    queue: list[dict[str, Any]]
    """The whole queue, waiting entries in order (as ``GET /api/queue`` gives it)."""


@dataclass(eq=False)
class QueueEntry:
    id: str
    caller: str
    caller_display: str | None
    bridge: Bridge
    media: MediaBridge
    leg: Leg
    media_leg: MediaLeg
    sdp: SdpSession
    dialog: Dialog
    dest: Address
    tx: ServerTransaction
    since: float = field(default_factory=time.time)
    state: str = "waiting"  # waiting -> answering -> answered -> ended
    answered_by: str | None = None
    answered_at: float | None = None
    tone: Player | None = None
    on_end: Callable[[QueueEntry, str], None] | None = None
    """Told once the caller is gone (the dispatch call that picked it up ends too)."""
    recording_id: str | None = None
    """Every call to the dispatch number is recorded from the moment it is answered."""
    incident_id: int | None = None
    """The incident made from this call, if any (the dispatch call that picks it up
    carries it on)."""

    def as_dict(self, position: int | None) -> dict[str, Any]:
        return {"queue_id": self.id, "position": position, "caller": self.caller,
                "caller_display": self.caller_display, "since": self.since,
                "state": self.state, "answered_by": self.answered_by,
                "leg_id": self.leg.id, "bridge_id": self.bridge.id,
                "recording_id": self.recording_id, "incident_id": self.incident_id}


class DispatchQueue:
    """Every call to the dispatch number, from answer to hang-up."""

    def __init__(self, *, transport: SipTransport, engine: MediaEngine, bus: EventBus,
                 on_close: Callable[[MediaBridge, str], None] | None = None,
                 recorder_factory: Callable[[str, int], object] | None = None) -> None:
        self.transport = transport
        self.recorder_factory = recorder_factory
        self.engine = engine
        self.bus = bus
        self.on_close = on_close
        """Told before an entry's bridge closes (to release the legs dialled into it)."""
        self.entries: dict[str, QueueEntry] = {}
        self._dialogs: dict[tuple[str, str, str], QueueEntry] = {}
        self._by_bridge: dict[str, QueueEntry] = {}
        self._ids = itertools.count(1)

    # -- arriving ----------------------------------------------------------------------------
    def enqueue(self, tx: ServerTransaction, request: Request, caller: str,
                caller_display: str | None, offer: bytes, rate: int) -> QueueEntry | None:
        """Answer the INVITE and put the caller in the queue (None: refused, answered)."""
        bridge = Bridge(self.bus, "queue")
        try:
            media = self.engine.create_bridge(bridge.id, rate)
        except ValueError as exc:
            log.error("queue: cannot open a media bridge: %s", exc)
            bridge.close("no media")
            self._reply(tx, 503, "Media engine unavailable")
            return None
        leg = bridge.add_leg("sip", caller)
        sdp = SdpSession(self.engine.advertised_host, rate)
        try:
            media_leg = media.add_leg(leg.id, None, peer=caller, join=False)
            answer, neg = sdp.answer(offer, media_leg.pair.rtp_port)
        except ParseError as exc:
            leg.set_state(LegState.ENDED, "488")
            media.close()
            bridge.close("bad sdp")
            self._reply(tx, 488, exc.reason)
            return None
        except Exception as exc:  # ports exhausted
            log.error("queue: no media port: %s", exc)
            leg.set_state(LegState.ENDED, "no media")
            media.close()
            bridge.close("no media")
            self._reply(tx, 503, "No media ports available")
            return None
        apply_negotiated(media_leg, neg)
        dialog = Dialog.from_uas(request, tx.to_tag)
        entry = QueueEntry(f"Q{next(self._ids)}", caller, caller_display, bridge, media, leg,
                           media_leg, sdp, dialog, tx.source, tx)
        if self.recorder_factory is not None:
            try:
                recorder = self.recorder_factory(bridge.id, rate)
            except Exception:
                log.exception("queue: cannot record %s's call", caller)
            else:
                media.recorder = recorder  # type: ignore[assignment]
                entry.recording_id = getattr(recorder, "recording_id", None)
        self.entries[entry.id] = entry
        self._by_bridge[bridge.id] = entry
        self._dialogs[(dialog.call_id, dialog.local_tag, dialog.remote_tag)] = entry
        tx.context = entry
        resp = make_response(request, 200, to_tag=tx.to_tag, body=answer, headers=(
            ("Contact", f"<{self.transport.contact_uri(tx.source, 'hub')}>"), ("Allow", ALLOW),
            ("Content-Type", "application/sdp")))
        self.transport.respond(tx, resp)
        leg.set_state(LegState.UP, "queued")
        media.join(leg.id)
        entry.tone = media.play(cadence_signal(RINGBACK_CN, rate), leg_id=leg.id, loop=True)
        log.info("queue: %s from %s waiting (position %d)", entry.id, caller,
                 len(self.waiting()))
        self._changed()
        return entry

    # -- the queue ---------------------------------------------------------------------------
    def waiting(self) -> list[QueueEntry]:
        return sorted((e for e in self.entries.values() if e.state == "waiting"),
                      key=lambda e: (e.since, int(e.id[1:])))

    def snapshot(self) -> list[dict[str, Any]]:
        """The waiting entries in order, then the ones a dispatcher is picking up."""
        waiting = self.waiting()
        rows = [e.as_dict(i + 1) for i, e in enumerate(waiting)]
        rows += [e.as_dict(None) for e in self.entries.values() if e.state == "answering"]
        return rows

    def owns_bridge(self, bridge_id: str) -> bool:
        return bridge_id in self._by_bridge

    def by_leg(self, leg_id: str) -> QueueEntry | None:
        for entry in self.entries.values():
            if entry.leg.id == leg_id:
                return entry
        return None

    def picking_up(self, entry: QueueEntry, operator: str | None) -> None:
        """A dispatcher's phone is being dialled for ``entry``: out of the waiting list."""
        entry.state = "answering"
        entry.answered_by = operator
        self._changed()

    def requeue(self, entry: QueueEntry) -> None:
        """The dispatcher's phone did not answer: the caller waits again (same place)."""
        if entry.state in ("answering",):
            entry.state = "waiting"
            entry.answered_by = None
            self._changed()

    def connected(self, entry: QueueEntry, operator: str | None) -> None:
        """The dispatcher answered: the tone stops and the two talk."""
        if entry.tone is not None:
            entry.media.stop_player(entry.tone)
            entry.tone = None
        entry.state = "answered"
        entry.answered_by = operator
        entry.answered_at = time.time()
        log.info("queue: %s from %s answered by %s", entry.id, entry.caller, operator)
        self._changed()

    def link_incident(self, entry: QueueEntry, incident_id: int) -> None:
        """The caller's report became an incident: every console's queue shows it."""
        entry.incident_id = incident_id
        self._changed()

    def _changed(self) -> None:
        self.bus.publish(QueueChanged(queue=self.snapshot()))

    # -- in-dialog requests --------------------------------------------------------------------
    def handle_in_dialog(self, tx: ServerTransaction, request: Request) -> bool:
        key = dialog_id_of_request(request)
        entry = self._dialogs.get(key) if key is not None else None
        if entry is None:
            return False
        if not entry.dialog.check_remote_cseq(request):
            self._reply(tx, 500, "CSeq out of order")
            return True
        method = request.method
        if method == "BYE":
            self._reply(tx, 200)
            self._leave(entry, "bye")
        elif method in ("INVITE", "UPDATE"):
            answer_reoffer(self.transport, tx, request, leg=entry.leg, media=entry.media_leg,
                           sdp=entry.sdp, dialog=entry.dialog, dest=entry.dest,
                           reply=self._reply)
        elif method in ("INFO", "OPTIONS"):
            self._reply(tx, 200)
        else:
            self._reply(tx, 405, headers=(("Allow", ALLOW),))
        return True

    def on_server_timeout(self, tx: ServerTransaction) -> bool:
        entry = tx.context
        if isinstance(entry, QueueEntry) and entry.tx is tx:
            log.info("queue: %s never ACKed", entry.caller)
            self.hang_up(entry, "no ack")
            return True
        return False

    # -- leaving ---------------------------------------------------------------------------------
    def hang_up(self, entry: QueueEntry, reason: str) -> None:
        """Release the caller from the hub's side (BYE), e.g. a dispatcher ended the call."""
        if entry.state == "ended":
            return
        bye = entry.dialog.create_request("BYE", via=self.transport.via(entry.dest, new_branch()))
        self.transport.send_request(bye, entry.dest)
        self._leave(entry, reason)

    def _leave(self, entry: QueueEntry, reason: str) -> None:
        if entry.state == "ended":
            return
        was_listed = entry.state in ("waiting", "answering")
        entry.state = "ended"
        self.entries.pop(entry.id, None)
        self._by_bridge.pop(entry.bridge.id, None)
        d = entry.dialog
        self._dialogs.pop((d.call_id, d.local_tag, d.remote_tag), None)
        self.transport.endpoint.layer.stop_2xx_retransmission(entry.tx)
        entry.tx.context = None
        if not entry.leg.ended:
            entry.leg.set_state(LegState.ENDED, reason)
        if self.on_close is not None:
            self.on_close(entry.media, reason)
        entry.media.close()
        entry.bridge.close(reason)
        log.info("queue: %s from %s left (%s)", entry.id, entry.caller, reason)
        if entry.on_end is not None:
            entry.on_end(entry, reason)
        if was_listed:
            self._changed()

    def shutdown(self) -> None:
        for entry in list(self.entries.values()):
            self.hang_up(entry, "shutdown")

    def _reply(self, tx: ServerTransaction, status: int, reason: str | None = None,
               headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.transport.respond(tx, make_response(tx.request, status, reason,
                                                 to_tag=tx.to_tag or None, headers=headers))

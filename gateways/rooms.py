"""Conference rooms: callers dial a room's number and meet in one mixing bridge.

A room's bridge exists while someone is in it; the room itself (number, PIN,
recording, rate) lives in the store and outlasts its sessions. A caller to a room
with a PIN is answered, put in the bridge muted and deaf, hears two short beeps and
keys the PIN then ``#`` (RFC 4733); three wrong tries or 30 s of silence end the call.
Each session of a recorded room is one recording.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bridges.events import EventBus
from bridges.model import Bridge, Leg, LegState
from media.engine import DtmfReceived, LegTimedOut, MediaBridge, MediaEngine, MediaEvent, MediaLeg
from media.tones import join_beep, leave_beep, silence, tone
from signaling.dialog import Dialog, dialog_id_of_request
from signaling.errors import ParseError
from signaling.message import Request, make_response
from signaling.transaction import Address, ServerTransaction, new_branch
from signaling.transport import SipTransport

from .local_leg import answer_reoffer
from .media_sdp import SdpSession, apply_negotiated

log = logging.getLogger(__name__)

PIN_TIMEOUT = 30.0
PIN_TRIES = 3
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE"


@dataclass(eq=False)
class Member:
    room: RoomSession
    leg: Leg
    media: MediaLeg
    sdp: SdpSession
    dialog: Dialog
    dest: Address
    tx: ServerTransaction
    peer: str
    admitted: bool = False
    digits: str = ""
    tries: int = 0
    pin_timer: asyncio.TimerHandle | None = None


@dataclass(eq=False)
class RoomSession:
    number: str
    name: str | None
    pin: str | None
    bridge: Bridge
    media: MediaBridge
    members: dict[str, Member] = field(default_factory=dict)
    recording_id: str | None = None
    locked: bool = False
    """A locked room admits nobody new (members stay)."""


class RoomManager:
    """Every live room session of the hub."""

    def __init__(self, *, transport: SipTransport, engine: MediaEngine, bus: EventBus,
                 recorder_factory: Callable[[str, int], Any] | None = None) -> None:
        self.transport = transport
        self.engine = engine
        self.bus = bus
        self.recorder_factory = recorder_factory
        self.sessions: dict[str, RoomSession] = {}
        self._by_bridge: dict[str, RoomSession] = {}
        self._dialogs: dict[tuple[str, str, str], Member] = {}
        self.on_close: Callable[[MediaBridge, str], None] | None = None
        """Told before a session's bridge closes (to release legs dialled into it)."""

    # -- joining --------------------------------------------------------------------------
    def join(self, tx: ServerTransaction, request: Request, caller: str, room: Any,
             offer: bytes) -> None:
        """Answer an INVITE to ``room`` (a hub.store.RoomRecord) and put the caller in."""
        session = self.sessions.get(room.number)
        if session is not None and session.locked:
            self._reply(tx, 403, "Conference locked")
            return
        created = session is None
        if session is None:
            session = self._open(room)
        leg = session.bridge.add_leg("sip", caller)
        sdp = SdpSession(self.engine.advertised_host, session.media.rate)
        try:
            media = session.media.add_leg(leg.id, None, peer=caller, join=False)
        except Exception as exc:
            log.error("room %s: no media port: %s", room.number, exc)
            self._reply(tx, 503, "No media ports available")
            leg.set_state(LegState.ENDED, "no media")
            if created:
                self._close(session, "no media")
            return
        try:
            answer, neg = sdp.answer(offer, media.pair.rtp_port)
        except ParseError as exc:
            session.media.remove_leg(leg.id)
            leg.set_state(LegState.ENDED, "488")
            self._reply(tx, 488, exc.reason)
            if created:
                self._close(session, "bad sdp")
            return
        apply_negotiated(media, neg)
        dialog = Dialog.from_uas(request, tx.to_tag)
        member = Member(session, leg, media, sdp, dialog, tx.source, tx, caller)
        session.members[leg.id] = member
        self._dialogs[(dialog.call_id, dialog.local_tag, dialog.remote_tag)] = member
        tx.context = member
        resp = make_response(request, 200, to_tag=tx.to_tag, body=answer, headers=(
            ("Contact", f"<{self.transport.contact_uri(tx.source, 'hub')}>"), ("Allow", ALLOW),
            ("Content-Type", "application/sdp")))
        self.transport.respond(tx, resp)
        leg.set_state(LegState.UP, f"room {room.number}")
        session.media.join(leg.id)
        if session.pin:
            session.media.mixer.set_muted(leg.id, True)
            session.media.mixer.set_deaf(leg.id, True)
            self._prompt(member)
            member.pin_timer = asyncio.get_running_loop().call_later(
                PIN_TIMEOUT, self._pin_timeout, member)
        else:
            self._admit(member)

    def _open(self, room: Any) -> RoomSession:
        bridge = Bridge(self.bus, "room")
        media = self.engine.create_bridge(bridge.id, room.rate)
        session = RoomSession(room.number, room.name, room.pin, bridge, media)
        if room.record and self.recorder_factory is not None:
            try:
                recorder = self.recorder_factory(bridge.id, room.rate)
                media.recorder = recorder
                session.recording_id = getattr(recorder, "recording_id", None)
            except Exception:
                log.exception("room %s: cannot start its recording", room.number)
        self.sessions[room.number] = session
        self._by_bridge[bridge.id] = session
        log.info("room %s opened (bridge %s, %d Hz%s)", room.number, bridge.id, room.rate,
                 ", recorded" if media.recorder is not None else "")
        return session

    def _admit(self, member: Member) -> None:
        media = member.room.media
        member.admitted = True
        if member.pin_timer is not None:
            member.pin_timer.cancel()
            member.pin_timer = None
        media.mixer.set_muted(member.leg.id, False)
        media.mixer.set_deaf(member.leg.id, False)
        if len(member.room.members) > 1:
            media.play(join_beep(media.rate))
        log.info("room %s: %s joined (%d present)", member.room.number, member.peer,
                 sum(1 for m in member.room.members.values() if m.admitted))

    def _prompt(self, member: Member) -> None:
        rate = member.room.media.rate
        beeps = tone(660.0, 150, rate)
        gap = silence(100, rate)
        member.room.media.play(np.concatenate([beeps, gap, beeps]), leg_id=member.leg.id)

    # -- DTMF and media events ------------------------------------------------------------------
    def owns_bridge(self, bridge_id: str) -> bool:
        return bridge_id in self._by_bridge

    def on_media_event(self, event: MediaEvent) -> None:
        session = self._by_bridge.get(event.bridge_id)
        if session is None:
            return
        member = session.members.get(event.leg_id)
        if member is None:
            return
        if isinstance(event, LegTimedOut):
            log.info("room %s: no RTP from %s for %.0f s", session.number, member.peer,
                     event.seconds)
            self._hang_up(member, "rtp timeout")
        elif isinstance(event, DtmfReceived) and not member.admitted:
            self._pin_digit(member, event.digit)

    def _pin_digit(self, member: Member, digit: str) -> None:
        pin = member.room.pin or ""
        if digit != "#":
            member.digits = (member.digits + digit)[-16:]
            if len(member.digits) < len(pin):
                return
        if member.digits == pin:
            self._admit(member)
            return
        member.tries += 1
        member.digits = ""
        rate = member.room.media.rate
        log.info("room %s: wrong PIN from %s (try %d)", member.room.number, member.peer,
                 member.tries)
        if member.tries >= PIN_TRIES:
            self._hang_up(member, "wrong pin")
            return
        member.room.media.play(tone(300.0, 500, rate), leg_id=member.leg.id)

    def _pin_timeout(self, member: Member) -> None:
        member.pin_timer = None
        if not member.admitted:
            log.info("room %s: no PIN from %s", member.room.number, member.peer)
            self._hang_up(member, "no pin")

    # -- in-dialog requests --------------------------------------------------------------------
    def handle_in_dialog(self, tx: ServerTransaction, request: Request) -> bool:
        key = dialog_id_of_request(request)
        member = self._dialogs.get(key) if key is not None else None
        if member is None:
            return False
        if not member.dialog.check_remote_cseq(request):
            self._reply(tx, 500, "CSeq out of order")
            return True
        method = request.method
        if method == "BYE":
            self._reply(tx, 200)
            self._leave(member, "bye")
        elif method in ("INVITE", "UPDATE"):
            answer_reoffer(self.transport, tx, request, leg=member.leg, media=member.media,
                           sdp=member.sdp, dialog=member.dialog, dest=member.dest,
                           reply=self._reply)
        elif method in ("INFO", "OPTIONS"):
            self._reply(tx, 200)
        else:
            self._reply(tx, 405, headers=(("Allow", ALLOW),))
        return True

    def on_server_timeout(self, tx: ServerTransaction) -> bool:
        member = tx.context
        if isinstance(member, Member) and member.tx is tx:
            log.info("room %s: %s never ACKed", member.room.number, member.peer)
            self._hang_up(member, "no ack")
            return True
        return False

    # -- leaving ----------------------------------------------------------------------------------
    def _hang_up(self, member: Member, reason: str) -> None:
        bye = member.dialog.create_request(
            "BYE", via=self.transport.via(member.dest, new_branch()))
        self.transport.send_request(bye, member.dest)
        self._leave(member, reason)

    def _leave(self, member: Member, reason: str) -> None:
        session = member.room
        if session.members.pop(member.leg.id, None) is None:
            return
        if member.pin_timer is not None:
            member.pin_timer.cancel()
        self.transport.endpoint.layer.stop_2xx_retransmission(member.tx)
        d = member.dialog
        self._dialogs.pop((d.call_id, d.local_tag, d.remote_tag), None)
        session.media.remove_leg(member.leg.id)
        if not member.leg.ended:
            member.leg.set_state(LegState.ENDED, reason)
        log.info("room %s: %s left (%s)", session.number, member.peer, reason)
        if not session.members:
            self._close(session, "empty")
        elif member.admitted:
            session.media.play(leave_beep(session.media.rate))

    def _close(self, session: RoomSession, reason: str) -> None:
        if self.on_close is not None:
            self.on_close(session.media, reason)
        self.sessions.pop(session.number, None)
        self._by_bridge.pop(session.bridge.id, None)
        session.media.close()
        session.bridge.close(reason)
        log.info("room %s closed (%s)", session.number, reason)

    def kick(self, leg_id: str, session: RoomSession) -> None:
        """Release one member (强拆)."""
        member = session.members.get(leg_id)
        if member is not None:
            self._hang_up(member, "kicked")

    def shutdown(self) -> None:
        for session in list(self.sessions.values()):
            for member in list(session.members.values()):
                self._hang_up(member, "shutdown")

    def snapshot(self) -> list[dict[str, Any]]:
        return [
            {"number": s.number, "name": s.name, "bridge_id": s.bridge.id,
             "members": [{"leg_id": m.leg.id, "peer": m.peer, "admitted": m.admitted}
                         for m in s.members.values()],
             "talking": sorted(s.media.talking), "recording_id": s.recording_id,
             "locked": s.locked,
             "media": s.media.snapshot()}
            for s in self.sessions.values()
        ]

    def _reply(self, tx: ServerTransaction, status: int, reason: str | None = None,
               headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.transport.respond(tx, make_response(tx.request, status, reason,
                                                 to_tag=tx.to_tag or None, headers=headers))



def recorder_factory(index: Any, data_dir: Path, io: Any,
                     segment_seconds: float = 60.0) -> Callable[[str, int], Any]:
    """Recording of a room session through recordings.recorder.BridgeRecorder."""
    from recordings.recorder import BridgeRecorder

    def make(bridge_id: str, rate: int) -> Any:
        return BridgeRecorder(index, data_dir, bridge_id, None, rate, io=io, now=time.time(),
                              segment_seconds=segment_seconds)

    return make

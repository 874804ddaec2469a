"""Dispatch calls: what a dispatcher starts with one click, and what can be done to it.

A :class:`DispatchCall` owns a bridge and the legs the hub dialled for it:

- ``single``: one party;
- ``group``: every member rings at once; whoever answers joins the bridge;
- ``broadcast``: members are dialled with auto-answer and hear only the floor holder
  (the dispatcher once joined; nobody else is heard);
- ``rollcall``: members are called one after another, each hears two beeps and
  confirms with ``1``; the outcome table says who confirmed.

Calls the hub did not place (a phone calling a phone, a room) are reachable too, so
barge-in, monitor and whisper work on any live call: the dispatcher's own leg (a
named phone) is dialled into that call's bridge with the relation asked for.

A dispatcher with only a browser and a headset is a leg too: ``join_browser`` answers
the page's WebRTC offer with a leg in the call's bridge (same relations), and
``create_from_browser`` opens a call whose bridge holds the browser's leg first and
then dials the targets. Every change is an event on the bus.

Transfers: ``transfer`` is blind (the hub dials the target into the call and releases
the replaced legs once it answers); ``attended_transfer`` connects a party with the
party of a consultation call, whose leg moves into this call's bridge.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bridges.events import Event, EventBus
from bridges.model import Bridge, Leg, LegState
from gateways.originate import OutboundLeg, Outcome
from gateways.queue import QueueEntry
from gateways.sip_gateway import Call as SipCall
from gateways.sip_gateway import SipGateway
from gateways.webrtc import WebRtcError, WebRtcLegChanged, WebRtcSessions
from media.engine import DtmfReceived, LegTimedOut, MediaBridge, MediaEvent
from media.errors import PortsExhausted
from media.tones import Player, music_on_hold, silence, tone

log = logging.getLogger(__name__)

ROLLCALL_CONFIRM_S = 15.0
MODES = ("single", "group", "broadcast", "rollcall")
ROLL_OVER = frozenset({Outcome.NO_ANSWER, Outcome.UNREACHABLE, Outcome.BUSY, Outcome.FAILED})
LEG_ACTIONS = ("mute", "unmute", "deafen", "undeafen", "kick", "hold", "resume")


class CallError(Exception):
    """A refused request; ``status`` is the HTTP status it maps to."""

    status = 400
    error_id = "call-error"


class CallNotFound(CallError):
    status = 404
    error_id = "not-found"


class CallConflict(CallError):
    status = 409
    error_id = "conflict"


class CallInvalid(CallError):
    status = 422
    error_id = "invalid-input"


@dataclass(frozen=True, slots=True)
class CallChanged(Event):
    call: dict[str, Any]
    """The call's whole state (as ``GET /api/calls/{id}`` gives it)."""


@dataclass(frozen=True, slots=True)
class CallEnded(Event):
    call_id: str
    """The call that ended."""
    reason: str
    """Why."""


def _unowned(out: OutboundLeg) -> None:
    """A handed-over leg's ``on_change`` until its new call takes it (``_arrive``)."""


class Relation(enum.Enum):
    MEMBER = "member"
    BARGE = "barge"
    MONITOR = "monitor"
    WHISPER = "whisper"


@dataclass(eq=False)
class DispatchLeg:
    target: str
    out: OutboundLeg | None
    relation: Relation = Relation.MEMBER
    whisper_to: str | None = None
    muted: bool = False
    deaf: bool = False
    held: bool = False
    confirmed: bool | None = None
    """Roll call: True once the member pressed 1, False if they never did."""
    moh: Player | None = None
    endpoints: list[str] = field(default_factory=list)
    """What can be dialled for this member, preferred first (a person's endpoints)."""
    attempt: int = 0
    """Which of ``endpoints`` is (or was last) being tried."""
    auto_answer: bool = False
    join: bool = True
    browser: Leg | None = None
    """The dispatcher's browser (a WebRTC leg) instead of a dialled phone."""
    browser_outcome: str = "pending"
    """A browser leg's outcome: pending, answered (media flowed) or failed."""
    local: Leg | None = None
    """A caller the hub answered itself (a call from the dispatch queue)."""
    replaces: list[str] = field(default_factory=list)
    """Transfer: the legs released once this one answers."""
    transferred_from: str | None = None
    """Attended transfer: the call this party was moved from (it is a party of this
    call, never the dispatcher's own phone, even in a queued call)."""

    @property
    def id(self) -> str:
        if self.out:
            return self.out.id
        if self.local is not None:
            return self.local.id
        return self.browser.id if self.browser else f"pending-{self.target}"

    def as_dict(self) -> dict[str, Any]:
        out = self.out
        if out is not None:
            state, outcome, status = out.leg.state.value, out.outcome.value, out.status
        elif self.browser is not None:
            state, outcome, status = self.browser.state.value, self.browser_outcome, 0
        elif self.local is not None:
            state, outcome, status = self.local.state.value, "answered", 200
        else:
            state, outcome, status = "new", "pending", 0
        return {
            "leg_id": self.id,
            "target": self.target,
            "kind": "webrtc" if self.browser is not None else "sip",
            "state": state,
            "outcome": outcome,
            "status": status,
            "relation": self.relation.value,
            "whisper_to": self.whisper_to,
            "muted": self.muted,
            "deaf": self.deaf,
            "held": self.held,
            "confirmed": self.confirmed,
            "endpoint": self.endpoints[self.attempt] if self.endpoints else self.target,
            "attempts": self.attempt + 1,
        }


@dataclass(eq=False)
class DispatchCall:
    id: str
    mode: str
    targets: list[str]
    bridge: Bridge
    media: MediaBridge
    operator: str | None
    record: bool
    legs: dict[str, DispatchLeg] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    ended: float | None = None
    recording_id: str | None = None
    incident_id: int | None = None
    queue: list[str] = field(default_factory=list)
    """Roll call: members not called yet."""
    current: DispatchLeg | None = None
    confirm_timer: asyncio.TimerHandle | None = None
    owned: bool = True
    """False for a call the hub did not place (a SIP call we barge into)."""
    answered_by: str | None = None
    """A queued call: the operator who picked it up."""
    entry: QueueEntry | None = None
    """A queued call: the caller's queue entry."""
    locked: bool = False
    """Locked: no member may be added (a room admits no new caller)."""
    confirm: bool = False
    """Every member who answers hears two beeps and confirms with ``1`` (a plan's
    responders); ``confirmed`` says who did."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "mode": self.mode,
            "targets": self.targets,
            "bridge_id": self.bridge.id,
            "state": "ended" if self.ended else "active",
            "operator": self.operator,
            "record": self.record,
            "recording_id": self.recording_id,
            "incident_id": self.incident_id,
            "created": self.created,
            "ended": self.ended,
            "legs": [leg.as_dict() for leg in self.legs.values()],
            "talking": sorted(self.media.talking),
            "answered_by": self.answered_by,
            "locked": self.locked,
            "confirm": self.confirm,
        }


class CallService:
    """Places, tracks and controls dispatch calls."""

    def __init__(self, gateway: SipGateway, bus: EventBus, *,
                 recorder_factory: Callable[[str, int], Any] | None = None,
                 ring_timeout: float = 30.0, webrtc: WebRtcSessions | None = None,
                 endpoints_for: Callable[[str], list[str]] | None = None) -> None:
        self.endpoints_for = endpoints_for or (lambda target: [target])
        """A target (a person's name or id, a SIP user, a number) -> what to dial, in
        order: the next is tried when one is unreachable, busy or unanswered."""
        self.gateway = gateway
        self.engine = gateway.engine
        self.bus = bus
        self.recorder_factory = recorder_factory
        self.ring_timeout = ring_timeout
        self.webrtc = webrtc
        self.calls: dict[str, DispatchCall] = {}
        self._by_bridge: dict[str, DispatchCall] = {}
        self._dirty: set[str] = set()
        self._by_browser_leg: dict[str, DispatchCall] = {}
        self._ids = itertools.count(1)
        gateway.media_listeners.append(self._on_media_event)
        if webrtc is not None:
            webrtc.listeners.append(self._on_webrtc_event)

    # -- creating ------------------------------------------------------------------------------
    def create(self, targets: list[str], mode: str = "group", *, record: bool = False,
               operator: str | None = None, rate: int = 8000,
               incident_id: int | None = None) -> DispatchCall:
        """Open a call and dial its targets; ``incident_id`` attaches it to an incident
        (its legs' outcomes and its recording then go to the incident's timeline)."""
        call = self._open(targets, mode, record=record, operator=operator, rate=rate)
        call.incident_id = incident_id
        self._start(call)
        return call

    def open(self, mode: str = "group", *, record: bool = False, operator: str | None = None,
             rate: int = 8000, incident_id: int | None = None,
             confirm: bool = False) -> DispatchCall:
        """A call with its bridge and nobody dialled yet: members come with
        ``dial_member`` (a plan's response room, filled role by role)."""
        call = self._open([], mode, record=record, operator=operator, rate=rate,
                          allow_empty=True)
        call.incident_id = incident_id
        call.confirm = confirm
        self._changed(call)
        return call

    def dial_member(self, call: DispatchCall, target: str) -> DispatchLeg:
        """Dial one more member into ``call`` on their endpoints in order. Unlike
        ``add_member`` nothing is refused: a target nobody can reach comes back at once
        as an ended leg with its outcome (the caller decides what happens next)."""
        if call.ended is not None:
            raise CallConflict(f"call {call.id} has ended")
        if target not in call.targets:
            call.targets.append(target)
        return self._dial(call, target, auto_answer=call.mode == "broadcast")

    def hang_up_member(self, call: DispatchCall, dleg: DispatchLeg, reason: str) -> None:
        """Release one member's leg (ringing or answered)."""
        if dleg.out is not None and not dleg.out.ended:
            self.gateway.originator.hang_up(dleg.out, reason)

    async def create_from_browser(self, targets: list[str], offer_sdp: str,
                                  mode: str = "single", *, record: bool = False,
                                  operator: str | None = None, rate: int = 8000,
                                  ) -> tuple[DispatchCall, DispatchLeg, str]:
        """A call started from the page: the dispatcher's browser is in the bridge first,
        then the targets are dialled as ``create`` would. Returns the call, the browser's
        leg and the SDP answer for the page. In a broadcast the browser holds the floor.
        """
        self._sessions()
        call = self._open(targets, mode, record=record, operator=operator, rate=rate)
        relation = Relation.BARGE if mode == "broadcast" else Relation.MEMBER
        try:
            dleg, answer = await self._add_browser(call, offer_sdp, relation=relation,
                                                   whisper_to=None, operator=operator)
        except BaseException:
            # Refused before anyone was dialled: the call never existed.
            self.calls.pop(call.id, None)
            self._by_bridge.pop(call.bridge.id, None)
            call.media.close()
            call.bridge.close("browser offer refused")
            raise
        self._start(call)
        return call, dleg, answer

    def _open(self, targets: list[str], mode: str, *, record: bool, operator: str | None,
              rate: int, allow_empty: bool = False) -> DispatchCall:
        """A validated call with its bridges, nobody dialled yet."""
        if mode not in MODES:
            raise CallInvalid(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        names = [t.strip() for t in targets if isinstance(t, str) and t.strip()]
        if (not names and not allow_empty) or len(names) != len(targets):
            raise CallInvalid("targets must be a non-empty list of names or numbers")
        if len(set(names)) != len(names):
            raise CallInvalid("targets must not repeat")
        if mode == "single" and len(names) != 1:
            raise CallInvalid("a single call has exactly one target")
        unknown = [n for n in names if not self._dialable(n)]
        if unknown:
            raise CallInvalid(f"unknown user or number: {', '.join(unknown)}")
        call_id = f"D{next(self._ids)}"
        bridge = Bridge(self.bus, "dispatch")
        media = self.engine.create_bridge(bridge.id, rate)
        call = DispatchCall(call_id, mode, names, bridge, media, operator, record)
        self.calls[call_id] = call
        self._by_bridge[bridge.id] = call
        if record:
            self._start_recording(call)
        if mode == "broadcast":
            # One way: only the floor holder is heard (nobody until a dispatcher joins).
            media.mixer.set_floor(True, None)
        return call

    def _start(self, call: DispatchCall) -> None:
        """Dial the call's targets (one after another for a roll call)."""
        if call.mode == "rollcall":
            call.queue = list(call.targets)
            self._next_rollcall(call)
        else:
            for name in call.targets:
                self._dial(call, name, auto_answer=call.mode == "broadcast")
        log.info("%s: %s call to %s by %s", call.id, call.mode, ", ".join(call.targets),
                 call.operator)
        self._changed(call)

    def _dialable(self, target: str) -> bool:
        for endpoint in self.endpoints_for(target):
            route = self.gateway.resolve(endpoint)
            if route.targets or route.status != 404:
                return True
        return False

    def _dial(self, call: DispatchCall, name: str, *, auto_answer: bool = False,
              relation: Relation = Relation.MEMBER, whisper_to: str | None = None,
              join: bool = True) -> DispatchLeg:
        dleg = DispatchLeg(name, None, relation=relation, whisper_to=whisper_to,
                           endpoints=self.endpoints_for(name) or [name],
                           auto_answer=auto_answer, join=join)
        self._dial_endpoint(call, dleg)
        return dleg

    def _dial_endpoint(self, call: DispatchCall, dleg: DispatchLeg) -> None:
        def changed(out: OutboundLeg) -> None:
            self._leg_changed(call, dleg, out)

        out = self.gateway.originator.dial(
            dleg.endpoints[dleg.attempt], call.bridge, call.media, on_change=changed,
            ring_timeout=self.ring_timeout, auto_answer=dleg.auto_answer, join=dleg.join)
        dleg.out = out
        call.legs[out.id] = dleg
        # dial() may already have finished the leg (nobody to ring): report it now.
        self._leg_changed(call, dleg, out)

    def _leg_changed(self, call: DispatchCall, dleg: DispatchLeg, out: OutboundLeg) -> None:
        if out.id not in call.legs or dleg.out is not out:
            return  # still inside dial(): reported once registered
        if (out.ended and out.outcome in ROLL_OVER and call.ended is None
                and dleg.attempt + 1 < len(dleg.endpoints)):
            # This endpoint failed: roll to the member's next one (mobile, desk phone...).
            del call.legs[out.id]
            dleg.attempt += 1
            log.info("%s: %s %s, trying %s", call.id, dleg.target, out.outcome.value,
                     dleg.endpoints[dleg.attempt])
            self._dial_endpoint(call, dleg)
            return
        if call.entry is not None and self._queue_leg_changed(call, dleg, out):
            return
        if out.outcome is Outcome.ANSWERED and not out.ended:
            self._apply_relation(call, dleg)
            for leg_id in dleg.replaces:
                self._release_leg(call, leg_id, "transferred")
            dleg.replaces = []
            if call.mode == "rollcall" and call.current is dleg and dleg.confirmed is None:
                self._prompt_confirm(call, dleg)
            elif (call.confirm and dleg.relation is Relation.MEMBER
                  and dleg.confirmed is None):
                self._play_prompt(call, dleg)
        if out.ended and call.mode == "rollcall" and call.current is dleg:
            if dleg.confirmed is None and out.outcome is Outcome.ANSWERED:
                dleg.confirmed = False
            self._next_rollcall(call)
        self._changed(call)

    def _apply_relation(self, call: DispatchCall, dleg: DispatchLeg) -> None:
        mixer = call.media.mixer
        leg_id = dleg.id
        if leg_id not in mixer:
            return
        if dleg.relation is Relation.MONITOR:
            mixer.set_monitor(leg_id, True)
        elif dleg.relation is Relation.WHISPER and dleg.whisper_to:
            if dleg.whisper_to in mixer:
                mixer.set_whisper(leg_id, {dleg.whisper_to})
        elif call.mode == "broadcast" and dleg.relation is Relation.BARGE:
            mixer.set_floor(True, leg_id)

    # -- roll call -------------------------------------------------------------------------------
    def _next_rollcall(self, call: DispatchCall) -> None:
        if call.confirm_timer is not None:
            call.confirm_timer.cancel()
            call.confirm_timer = None
        if call.current is not None and call.current.out and not call.current.out.ended:
            self.gateway.originator.hang_up(call.current.out, "roll call: next")
            return  # its end brings us back here
        while call.queue:
            name = call.queue.pop(0)
            dleg = self._dial(call, name)
            if dleg.out is not None and not dleg.out.ended:
                call.current = dleg
                return
            # Nobody to ring (unknown, not registered): on to the next member.
        call.current = None
        if call.ended is None:
            log.info("%s: roll call done", call.id)
            self._changed(call)

    @staticmethod
    def _play_prompt(call: DispatchCall, dleg: DispatchLeg) -> None:
        """Two beeps: press 1 to confirm."""
        rate = call.media.rate
        beeps = np.concatenate([tone(880.0, 150, rate), silence(120, rate),
                                tone(880.0, 150, rate)])
        call.media.play(beeps, leg_id=dleg.id)

    def _prompt_confirm(self, call: DispatchCall, dleg: DispatchLeg) -> None:
        self._play_prompt(call, dleg)
        call.confirm_timer = asyncio.get_running_loop().call_later(
            ROLLCALL_CONFIRM_S, self._confirm_timeout, call, dleg)

    def _confirm_timeout(self, call: DispatchCall, dleg: DispatchLeg) -> None:
        call.confirm_timer = None
        if call.current is dleg and dleg.confirmed is None:
            dleg.confirmed = False
            self._changed(call)
            self._next_rollcall(call)

    def _on_media_event(self, event: MediaEvent) -> None:
        call = self._by_bridge.get(event.bridge_id)
        if call is None:
            return
        dleg = call.legs.get(event.leg_id)
        if dleg is None:
            return
        if isinstance(event, DtmfReceived):
            if call.mode == "rollcall" and call.current is dleg and event.digit == "1":
                dleg.confirmed = True
                log.info("%s: %s confirmed", call.id, dleg.target)
                self._changed(call)
                self._next_rollcall(call)
            elif call.confirm and event.digit == "1" and dleg.confirmed is not True:
                dleg.confirmed = True
                log.info("%s: %s confirmed", call.id, dleg.target)
                self._changed(call)
        elif isinstance(event, LegTimedOut) and dleg.out is not None:
            self.gateway.originator.hang_up(dleg.out, "rtp timeout")
        elif isinstance(event, LegTimedOut) and dleg.browser is not None and self.webrtc:
            self.webrtc.close(dleg.id, "no audio from the browser")

    # -- browsers ---------------------------------------------------------------------------------
    def _sessions(self) -> WebRtcSessions:
        if self.webrtc is None:
            raise CallConflict("browser audio (WebRTC) is not available on this hub")
        return self.webrtc

    async def _add_browser(self, call: DispatchCall, offer_sdp: str, *, relation: Relation,
                           whisper_to: str | None, operator: str | None,
                           ) -> tuple[DispatchLeg, str]:
        """Answer the page's offer with a WebRTC leg in the call's bridge."""
        webrtc = self._sessions()
        if call.media.closed:
            raise CallConflict(f"call {call.id} has ended")
        who = operator or "browser"
        leg = call.bridge.add_leg("webrtc", who)
        dleg = DispatchLeg(who, None, relation=relation, whisper_to=whisper_to, browser=leg)
        try:
            answer = await webrtc.offer(offer_sdp, bridge=call.media, leg_id=leg.id, peer=who)
        except WebRtcError as exc:
            leg.set_state(LegState.ENDED, "offer refused")
            raise CallInvalid(str(exc)) from None
        except PortsExhausted as exc:
            leg.set_state(LegState.ENDED, "no media port")
            raise CallConflict(str(exc)) from None
        except BaseException:
            leg.set_state(LegState.ENDED, "offer failed")
            raise
        call.legs[leg.id] = dleg
        self._by_browser_leg[leg.id] = call
        self._apply_relation(call, dleg)
        self._changed(call)
        return dleg, answer

    def _on_webrtc_event(self, event: WebRtcLegChanged) -> None:
        call = self._by_browser_leg.get(event.leg_id)
        if call is None:
            return
        dleg = call.legs.get(event.leg_id)
        if dleg is None or dleg.browser is None:
            return
        if event.state == "connected":
            dleg.browser_outcome = "answered"
            if dleg.browser.state is LegState.NEW:
                dleg.browser.set_state(LegState.UP, "browser connected")
        elif event.state == "closed":
            del self._by_browser_leg[event.leg_id]
            if dleg.browser_outcome == "pending":
                dleg.browser_outcome = "failed"
            dleg.browser.set_state(LegState.ENDED, event.reason)
        else:
            return
        self._changed(call)

    # -- the dispatch queue -----------------------------------------------------------------------
    def queue_list(self) -> list[dict[str, Any]]:
        """The waiting callers in order (position, caller, since), then those being picked up."""
        return self.gateway.queue.snapshot()

    def answer_queued(self, queue_id: str, phone: str, *,
                      operator: str | None = None) -> DispatchCall:
        """Pick a waiting caller up: ``phone`` (the dispatcher's) is dialled into the
        caller's bridge; the queue entry becomes call ``queue_id`` with ``answered_by``."""
        queue = self.gateway.queue
        entry = queue.entries.get(queue_id)
        if entry is None:
            raise CallNotFound(f"no queued call {queue_id!r}")
        if entry.state != "waiting":
            raise CallConflict(f"queued call {queue_id} is already {entry.state}"
                               + (f" by {entry.answered_by}" if entry.answered_by else ""))
        route = self.gateway.resolve(phone)
        if not route.targets:
            raise CallConflict(f"{phone} cannot be reached now ({route.status})")
        call = self.calls.get(queue_id)
        if call is None or call.ended is not None:
            call = DispatchCall(queue_id, "queue", [entry.caller], entry.bridge, entry.media,
                                operator, entry.recording_id is not None, entry=entry,
                                recording_id=entry.recording_id, incident_id=entry.incident_id)
            call.legs[entry.leg.id] = DispatchLeg(entry.caller, None, local=entry.leg)
            self.calls[queue_id] = call
            self._by_bridge[entry.bridge.id] = call
            entry.on_end = self._queue_caller_left
        call.operator = operator
        queue.picking_up(entry, operator)
        dleg = DispatchLeg(phone, None, endpoints=[phone])
        self._dial_endpoint(call, dleg)
        log.info("%s: queued call from %s picked up by %s (phone %s)", call.id, entry.caller,
                 operator, phone)
        return call

    def _queue_leg_changed(self, call: DispatchCall, dleg: DispatchLeg,
                           out: OutboundLeg) -> bool:
        """The dispatcher's phone for a queued call: True when handled here."""
        entry = call.entry
        if entry is None or dleg.relation is not Relation.MEMBER:
            return False
        if entry.state == "answered" and out.ended and call.ended is None and not any(
                d.out is not None and not d.out.ended and d.relation is Relation.MEMBER
                for d in call.legs.values()):
            # The last one talking to the caller hung up: the call is over.
            self.end(call.id, "the dispatcher hung up")
            return True
        if entry.state != "answering":
            return False
        if out.outcome is Outcome.ANSWERED and not out.ended:
            call.answered_by = entry.answered_by
            self.gateway.queue.connected(entry, entry.answered_by)
        elif out.ended:
            # The dispatcher's phone never answered: the caller waits again.
            self.gateway.queue.requeue(entry)
        else:
            return False
        self._changed(call)
        return True

    def _queue_caller_left(self, entry: QueueEntry, reason: str) -> None:
        call = self.calls.get(entry.id)
        if call is None or call.ended is not None or call.entry is not entry:
            return
        for dleg in list(call.legs.values()):
            if dleg.out is not None and not dleg.out.ended:
                self.gateway.originator.hang_up(dleg.out, reason)
            elif dleg.browser is not None and self.webrtc is not None:
                self.webrtc.close(dleg.id, reason)
        call.ended = time.time()
        self._by_bridge.pop(call.bridge.id, None)
        self.bus.publish(CallEnded(call_id=call.id, reason=f"caller left: {reason}"))
        self._changed(call)

    # -- incidents -------------------------------------------------------------------------------
    def facts(self, call_id: str) -> dict[str, Any] | None:
        """Who called, since when and the recording, for an incident made from a call:
        a queued caller (``Q1``), a dispatch call (``D3``) or a SIP call."""
        entry = self.gateway.queue.entries.get(call_id)
        if entry is not None:
            return {"call_id": call_id, "caller": entry.caller, "started_at": entry.since,
                    "recording_id": entry.recording_id}
        call = self.calls.get(call_id)
        if call is not None:
            caller = call.entry.caller if call.entry is not None else ", ".join(call.targets)
            return {"call_id": call_id, "caller": caller or None, "started_at": call.created,
                    "recording_id": call.recording_id}
        sip_call = self.gateway.calls.get(call_id)
        if sip_call is not None and not sip_call.ended:
            started = time.time() - (time.monotonic() - sip_call.created)
            return {"call_id": call_id, "caller": sip_call.caller, "started_at": started,
                    "recording_id": None}
        return None

    def attach_incident(self, call_id: str, incident_id: int) -> None:
        """From now on the call carries the incident's id (its changes reach the timeline)."""
        entry = self.gateway.queue.entries.get(call_id)
        if entry is not None:
            self.gateway.queue.link_incident(entry, incident_id)
        call = self.calls.get(call_id)
        if call is not None:
            call.incident_id = incident_id
            self._changed(call)

    # -- transfer ------------------------------------------------------------------------------
    def transfer(self, call_id: str, leg_id: str, target: str, *,
                 operator: str | None = None) -> DispatchCall:
        """Blind transfer: ``leg_id``'s party stays, the other side is replaced by
        ``target`` (dialled by the hub; the others are released once it answers)."""
        target = target.strip()
        route = self.gateway.resolve(target)
        if not route.targets:
            if route.status == 404:
                raise CallInvalid(f"unknown user or number: {target}")
            raise CallConflict(f"{target} cannot be reached now ({route.status})")
        sip_call = self.gateway.calls.get(call_id)
        if sip_call is not None and not sip_call.ended:
            side = self.gateway.side_of_leg(sip_call, leg_id)
            if side is None:
                raise CallNotFound(f"no leg {leg_id!r} in call {call_id}")
            try:
                self.gateway.transfer(sip_call, side, target)
            except ValueError as exc:
                raise CallConflict(str(exc)) from None
            log.info("%s: %s transferred to %s (by %s)", call_id, leg_id, target, operator)
            return self.get(call_id)
        call = self.get(call_id)
        if call.ended is not None:
            raise CallConflict(f"call {call_id} has ended")
        if not call.owned:
            raise CallConflict(f"call {call_id} cannot be transferred from here")
        kept = call.legs.get(leg_id)
        if kept is None or leg_id not in call.media.mixer:
            raise CallNotFound(f"no answered leg {leg_id!r} in call {call_id}")
        if any(d.replaces for d in call.legs.values()):
            raise CallConflict(f"call {call_id} is already being transferred")
        others = [d.id for d in call.legs.values()
                  if d is not kept and d.relation is Relation.MEMBER and self._live(d)]
        dleg = DispatchLeg(target, None, endpoints=[target],
                           auto_answer=call.mode == "broadcast", replaces=others)
        self._dial_endpoint(call, dleg)
        log.info("%s: %s transferred to %s (by %s)", call_id, leg_id, target, operator)
        return call

    def attended_transfer(self, call_id: str, leg_id: str, to_call: str, *,
                          operator: str | None = None) -> DispatchCall:
        """Attended transfer: ``leg_id``'s party in ``call_id`` (B, say a caller kept
        waiting) and the party of the consultation call ``to_call`` (C, whom the
        dispatcher called meanwhile) talk to each other; nobody is dialled.

        ``call_id`` goes on (its id, bridge, recording, monitors): C's leg moves into
        its bridge and ``to_call`` ends. The dispatcher leaves both calls: in a dispatch
        call their own legs (browser, barge/monitor/whisper phones, the phone that
        picked a queued caller up), in a SIP call the side opposite the kept one (the
        transferor), whose phone must also be a party of a SIP ``to_call``. A SIP
        phone's dialog that moves is handed to the originator, as if the hub had
        dialled it (``SipGateway.take_party``).
        """
        if to_call == call_id:
            raise CallInvalid("to_call must be another call than the one transferred")
        gateway = self.gateway
        sip1 = self._live_sip(call_id)
        keep: str | None = None
        call: DispatchCall | None = None
        if sip1 is not None:
            keep = gateway.side_of_leg(sip1, leg_id)
            if keep is None:
                raise CallNotFound(f"no leg {leg_id!r} in call {call_id}")
            refusal = gateway.transfer_refusal(sip1, keep)
            if refusal is not None:
                raise CallConflict(refusal.why)
            dispatcher = {gateway.side_peer(sip1, "b" if keep == "a" else "a")}
            media, bridge = sip1.media, sip1.bridge
            view = self.calls.get(call_id)
        else:
            call = self.get(call_id)
            if call.ended is not None:
                raise CallConflict(f"call {call_id} has ended")
            if not call.owned:
                raise CallConflict(f"call {call_id} cannot be transferred from here")
            if call.entry is not None and call.entry.state != "answered":
                raise CallConflict(f"queued call {call_id} is not picked up yet")
            kept = call.legs.get(leg_id)
            if kept is None or leg_id not in call.media.mixer:
                raise CallNotFound(f"no answered leg {leg_id!r} in call {call_id}")
            if self._dispatchers(call, kept):
                raise CallConflict(f"leg {leg_id} is the dispatcher's own, not a party")
            if any(d.replaces for d in call.legs.values()):
                raise CallConflict(f"call {call_id} is already being transferred")
            dispatcher = {d.out.name for d in call.legs.values()
                          if d.out is not None and self._dispatchers(call, d)}
            media, bridge = call.media, call.bridge
            view = call
        # The consultation call and who moves out of it.
        sip2 = self._live_sip(to_call)
        transferor: str | None = None
        movers: list[DispatchLeg] = []
        call2: DispatchCall | None = None
        if sip2 is not None:
            sides = [s for s in ("a", "b") if gateway.side_peer(sip2, s) in dispatcher]
            if len(sides) != 1:
                raise CallConflict(f"none of the phones of {to_call} is the dispatcher's in "
                                   f"{call_id}: cannot tell whom to connect")
            transferor = sides[0]
            refusal = gateway.consultation_refusal(sip2, transferor)
            if refusal is not None:
                raise CallConflict(refusal.why)
        else:
            call2 = self.calls.get(to_call) or self._adopt(to_call)
            if call2 is None:
                raise CallNotFound(f"no call {to_call!r}")
            if call2.ended is not None:
                raise CallConflict(f"call {to_call} has ended")
            if not call2.owned:
                raise CallConflict(f"call {to_call} cannot be transferred from here")
            parties = [d for d in call2.legs.values() if self._live(d)
                       and d.relation is Relation.MEMBER and not self._dispatchers(call2, d)
                       and not (d.out is not None and d.out.name in dispatcher)]
            if any(d.out is None for d in parties):
                raise CallConflict(f"the caller of {to_call} cannot leave the dispatch queue's "
                                   f"call: transfer {call_id}'s party into {to_call} instead")
            movers = [d for d in parties if d.out is not None
                      and d.out.outcome is Outcome.ANSWERED and d.id in call2.media.mixer]
            if not movers:
                raise CallConflict(f"call {to_call} has no answered party to connect")
            if sip1 is not None and len(movers) != 1:
                raise CallConflict(f"{call_id} is a phone call: it can take one party, "
                                   f"{to_call} has {len(movers)}")
        # Checked: now nothing fails half-way.
        reason = f"attended transfer into {call_id}"
        arrivals: list[tuple[OutboundLeg, DispatchLeg | None]] = []
        if sip2 is not None and transferor is not None:
            out = gateway.take_party(sip2, transferor, media, bridge, on_change=_unowned)
            arrivals.append((out, None))
            adopted = self.calls.get(to_call)
            if adopted is not None and adopted.ended is None:
                self._finish_view(adopted, reason)
        elif call2 is not None:
            for dleg in movers:
                assert dleg.out is not None
                del call2.legs[dleg.id]
                call2.media.move_leg(dleg.out.media.id, media)
                call2.bridge.move_leg(dleg.out.leg, bridge, reason)
                arrivals.append((dleg.out, dleg))
            self.end(to_call, reason)
        if sip1 is not None and keep is not None:
            [(out, _)] = arrivals
            gateway.complete_attended(sip1, keep, out)
        elif call is not None:
            for out, before in arrivals:
                self._arrive(call, out, before, to_call)
            kept = call.legs[leg_id]
            if kept.held:
                self._hold(call, leg_id, kept, False)
        if view is not None:
            for dleg in [d for d in view.legs.values()
                         if self._live(d) and self._dispatchers(view, d)]:
                self._release_leg(view, dleg.id, "transferred")
            self._changed(view)
        log.info("%s: %s connected with %s from %s (by %s)", call_id, leg_id,
                 ", ".join(out.name for out, _ in arrivals), to_call, operator)
        return self.get(call_id)

    def _arrive(self, call: DispatchCall, out: OutboundLeg, before: DispatchLeg | None,
                source: str) -> None:
        """An answered party moved into ``call``'s bridge becomes one of its members."""
        dleg = DispatchLeg(before.target if before else out.name, out,
                           endpoints=list(before.endpoints) if before else [out.name],
                           attempt=before.attempt if before else 0, transferred_from=source)

        def changed(leg: OutboundLeg) -> None:
            self._leg_changed(call, dleg, leg)

        out.on_change = changed
        call.legs[out.id] = dleg
        if dleg.target not in call.targets:
            call.targets.append(dleg.target)
        self._apply_relation(call, dleg)
        if out.media.direction in ("recvonly", "inactive"):
            # Held in the consultation call: it talks now.
            self.gateway.originator.reinvite(out, "sendrecv")

    @staticmethod
    def _dispatchers(call: DispatchCall, dleg: DispatchLeg) -> bool:
        """The dispatcher's own leg: the browser, a barge/monitor/whisper phone, or the
        phone that picked a queued caller up (not the caller, not a transferred party)."""
        if dleg.browser is not None or dleg.relation is not Relation.MEMBER:
            return True
        return (call.entry is not None and dleg.local is None
                and dleg.transferred_from is None)

    def _live_sip(self, call_id: str) -> SipCall | None:
        sip_call = self.gateway.calls.get(call_id)
        return sip_call if sip_call is not None and not sip_call.ended else None

    def _finish_view(self, view: DispatchCall, reason: str) -> None:
        """A SIP call seen as a dispatch call is over (its legs went with its bridge)."""
        view.ended = time.time()
        self._by_bridge.pop(view.bridge.id, None)
        self.bus.publish(CallEnded(call_id=view.id, reason=reason))
        self._changed(view)

    @staticmethod
    def _live(dleg: DispatchLeg) -> bool:
        if dleg.out is not None:
            return not dleg.out.ended
        leg = dleg.local or dleg.browser
        return leg is not None and not leg.ended

    def _release_leg(self, call: DispatchCall, leg_id: str, reason: str) -> None:
        dleg = call.legs.get(leg_id)
        if dleg is None:
            return
        if dleg.out is not None and not dleg.out.ended:
            self.gateway.originator.hang_up(dleg.out, reason)
        elif dleg.browser is not None and self.webrtc is not None:
            self.webrtc.close(leg_id, reason)
        elif call.entry is not None and dleg.local is not None:
            self.gateway.queue.hang_up(call.entry, reason)

    # -- control ---------------------------------------------------------------------------------
    def get(self, call_id: str) -> DispatchCall:
        call = self.calls.get(call_id)
        if call is None:
            external = self._adopt(call_id)
            if external is None:
                raise CallNotFound(f"no call {call_id!r}")
            return external
        return call

    def _adopt(self, call_id: str) -> DispatchCall | None:
        """A call the hub did not place (phone to phone, a room), seen as a dispatch call."""
        sip_call = self.gateway.calls.get(call_id)
        if sip_call is not None and not sip_call.ended:
            media, bridge = sip_call.media, sip_call.bridge
        else:
            session = self.gateway.rooms.sessions.get(call_id)
            if session is None:
                return None
            media, bridge = session.media, session.bridge
        call = DispatchCall(call_id, "sip", [], bridge, media, None, False, owned=False)
        self.calls[call_id] = call
        self._by_bridge[bridge.id] = call
        return call

    def list(self) -> list[dict[str, Any]]:
        active = [c.as_dict() for c in self.calls.values() if c.ended is None]
        for sip_call in self.gateway.calls.values():
            if sip_call.id not in self.calls and not sip_call.ended:
                active.append({"id": sip_call.id, "mode": "sip", "bridge_id": sip_call.bridge.id,
                               "state": sip_call.state,
                               "legs": [{"leg_id": leg.id, "target": leg.peer,
                                         "state": leg.state.value}
                                        for leg in sip_call.bridge.legs]})
        return active

    def leg_action(self, call_id: str, leg_id: str, action: str) -> DispatchCall:
        if action not in LEG_ACTIONS:
            raise CallNotFound(f"no action {action!r}; one of {', '.join(LEG_ACTIONS)}")
        call = self.get(call_id)
        if call.ended is not None:
            raise CallConflict(f"call {call_id} has ended")
        mixer = call.media.mixer
        dleg = call.legs.get(leg_id)
        if leg_id not in mixer and dleg is None:
            if not any(leg.id == leg_id for leg in call.bridge.legs):
                raise CallNotFound(f"no leg {leg_id!r} in call {call_id}")
            raise CallConflict(f"leg {leg_id} is not in the conversation (not answered)")
        if leg_id not in mixer:
            raise CallConflict(f"leg {leg_id} is not answered yet")
        if action in ("mute", "unmute"):
            mixer.set_muted(leg_id, action == "mute")
            if dleg:
                dleg.muted = action == "mute"
        elif action in ("deafen", "undeafen"):
            mixer.set_deaf(leg_id, action == "deafen")
            if dleg:
                dleg.deaf = action == "deafen"
        elif action == "kick":
            self._kick(call, leg_id)
        elif action in ("hold", "resume"):
            self._hold(call, leg_id, dleg, action == "hold")
        self._changed(call)
        return call

    def _kick(self, call: DispatchCall, leg_id: str) -> None:
        """强拆: force the leg out of the call."""
        dleg = call.legs.get(leg_id)
        if dleg is not None and dleg.out is not None:
            self.gateway.originator.hang_up(dleg.out, "kicked")
            return
        if dleg is not None and dleg.browser is not None and self.webrtc is not None:
            self.webrtc.close(leg_id, "kicked")
            return
        if dleg is not None and dleg.local is not None and call.entry is not None:
            self.gateway.queue.hang_up(call.entry, "kicked")
            return
        sip_call = self.gateway.calls.get(call.id)
        if sip_call is not None:
            self.gateway.hangup(sip_call, "kicked")
            return
        session = self.gateway.rooms.sessions.get(call.id)
        if session is not None and leg_id in session.members:
            self.gateway.rooms.kick(leg_id, session)
            return
        raise CallConflict(f"leg {leg_id} cannot be released from here")

    def _hold(self, call: DispatchCall, leg_id: str, dleg: DispatchLeg | None,
              hold: bool) -> None:
        mixer = call.media.mixer
        if dleg is not None and dleg.held == hold:
            raise CallConflict(f"leg {leg_id} is already {'held' if hold else 'active'}")
        mixer.set_muted(leg_id, hold)
        mixer.set_deaf(leg_id, hold)
        if dleg is not None:
            dleg.held = hold
            if hold:
                dleg.moh = call.media.play(music_on_hold(call.media.rate), leg_id=leg_id,
                                           loop=True)
            elif dleg.moh is not None:
                call.media.stop_player(dleg.moh)
                dleg.moh = None
            if dleg.out is not None:
                self.gateway.originator.reinvite(dleg.out, "sendonly" if hold else "sendrecv")

    def _joinable(self, call_id: str, relation: str,
                  leg_id: str | None) -> tuple[DispatchCall, Relation]:
        """The call and relation a dispatcher may join with (the checks both joins share)."""
        try:
            rel = Relation(relation)
        except ValueError:
            raise CallInvalid(f"relation must be barge, monitor or whisper: {relation!r}") from None
        call = self.get(call_id)
        if call.ended is not None:
            raise CallConflict(f"call {call_id} has ended")
        if rel is Relation.WHISPER:
            if not leg_id:
                raise CallInvalid("whisper needs the leg_id of the party to whisper to")
            if leg_id not in call.media.mixer:
                raise CallNotFound(f"no answered leg {leg_id!r} in call {call_id}")
        return call, rel

    def join(self, call_id: str, relation: str, phone: str, *,
             leg_id: str | None = None, operator: str | None = None) -> DispatchLeg:
        """Bring the dispatcher's phone into a call: barge, monitor or whisper to a leg."""
        call, rel = self._joinable(call_id, relation, leg_id)
        route = self.gateway.resolve(phone)
        if not route.targets:
            raise CallConflict(f"{phone} cannot be reached now ({route.status})")
        dleg = self._dial(call, phone, relation=rel, whisper_to=leg_id)
        log.info("%s: %s joins as %s (by %s)", call.id, phone, rel.value, operator)
        return dleg

    async def join_browser(self, call_id: str, relation: str, offer_sdp: str, *,
                           leg_id: str | None = None, operator: str | None = None,
                           ) -> tuple[DispatchLeg, str]:
        """``join`` with the dispatcher's browser instead of a phone: answers the page's
        WebRTC offer (returned with the new leg) with a leg in the call's bridge."""
        call, rel = self._joinable(call_id, relation, leg_id)
        dleg, answer = await self._add_browser(call, offer_sdp, relation=rel, whisper_to=leg_id,
                                               operator=operator)
        log.info("%s: browser of %s joins as %s", call.id, operator, rel.value)
        return dleg, answer

    def lock(self, call_id: str, locked: bool) -> DispatchCall:
        """Lock (or unlock) a call or a room: nobody new joins while locked."""
        call = self.get(call_id)
        if call.ended is not None:
            raise CallConflict(f"call {call_id} has ended")
        call.locked = locked
        session = self.gateway.rooms.sessions.get(call_id)
        if session is not None:
            session.locked = locked
        self._changed(call)
        return call

    def add_member(self, call_id: str, target: str) -> DispatchLeg:
        call = self.get(call_id)
        if call.ended is not None:
            raise CallConflict(f"call {call_id} has ended")
        if call.locked:
            raise CallConflict(f"call {call_id} is locked: unlock it to add members")
        if not self.gateway.resolve(target).targets and self.gateway.resolve(
                target).status == 404:
            raise CallInvalid(f"unknown user or number: {target}")
        return self._dial(call, target, auto_answer=call.mode == "broadcast")

    def set_recording(self, call_id: str, on: bool) -> DispatchCall:
        call = self.get(call_id)
        if call.ended is not None:
            raise CallConflict(f"call {call_id} has ended")
        if on and call.media.recorder is None:
            self._start_recording(call)
        elif not on and call.media.recorder is not None:
            call.media.recorder.close(time.time())
            call.media.recorder = None
        call.record = on
        self._changed(call)
        return call

    def _start_recording(self, call: DispatchCall) -> None:
        if self.recorder_factory is None:
            raise CallConflict("recording is not available on this hub")
        recorder = self.recorder_factory(call.bridge.id, call.media.rate)
        call.media.recorder = recorder
        call.recording_id = getattr(recorder, "recording_id", None)

    def end(self, call_id: str, reason: str = "ended by dispatcher") -> DispatchCall:
        call = self.get(call_id)
        if call.ended is not None:
            raise CallConflict(f"call {call_id} has already ended")
        call.queue.clear()
        if call.confirm_timer is not None:
            call.confirm_timer.cancel()
        for dleg in list(call.legs.values()):
            if dleg.out is not None and not dleg.out.ended:
                self.gateway.originator.hang_up(dleg.out, reason)
            elif dleg.browser is not None and self.webrtc is not None:
                self.webrtc.close(dleg.id, reason)
        if call.entry is not None:
            call.entry.on_end = None
            self.gateway.queue.hang_up(call.entry, reason)
        elif not call.owned:
            sip_call = self.gateway.calls.get(call.id)
            if sip_call is not None:
                self.gateway.hangup(sip_call, reason)
        else:
            call.media.close()
            call.bridge.close(reason)
        call.ended = time.time()
        self._by_bridge.pop(call.bridge.id, None)
        self.bus.publish(CallEnded(call_id=call.id, reason=reason))
        self._changed(call)
        return call

    def _changed(self, call: DispatchCall) -> None:
        """Publish the call's state once per loop turn, however many legs changed.

        A 50-member group call changes 50 legs at once: one ``CallChanged`` with the
        final state, not 50 copies of the whole call.
        """
        if call.id in self._dirty:
            return
        self._dirty.add(call.id)
        try:
            asyncio.get_running_loop().call_soon(self._publish, call)
        except RuntimeError:  # no loop (a synchronous caller): publish now
            self._publish(call)

    def _publish(self, call: DispatchCall) -> None:
        self._dirty.discard(call.id)
        self.bus.publish(CallChanged(call=call.as_dict()))

    def shutdown(self) -> None:
        for call in list(self.calls.values()):
            if call.ended is None and call.owned:
                self.end(call.id, "shutdown")

"""Activating a plan on an incident: the command room, the responders, the ack board.

One click (``activate``) does, in order:

1. opens the incident's command room: a recorded dispatch call (``confirm`` mode: each
   responder who answers hears two beeps and presses 1 to confirm);
2. stores the response, its responders (the plan's roles required at the level) and
   its tasks, and puts the activation on the timeline;
3. dials every responder at once, each on their endpoints in preference order (the
   call service rolls over to the next endpoint on no answer, busy or unreachable);
4. arms each responder's deadline (the plan's ``escalate_after_s``).

From then on the board follows the call (``CallChanged``): a responder is ``ringing``,
``answered``, ``confirmed`` (pressed 1), or ``unreachable`` once every endpoint failed
(a text notification goes out then). A responder not answered by the deadline is
``escalated``: their deputy is dialled as a new row of the board (``deputy_for``).
Each change is stored, put on the timeline and published (``ResponseChanged``).

The level can change while the response runs: roles the new level requires are
mobilised, roles it no longer requires are stood down (released, told by text).
Ending the response closes the room and sends the closing notice to everyone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from bridges.events import Event, EventBus
from storage.sql import Database, Row

from . import taxonomy
from .calls import CallChanged, CallEnded, CallService, DispatchCall, DispatchLeg
from .errors import Conflict, InvalidInput, NotFound
from .incidents import IncidentService
from .notify import LogNotifier, Notice, NotificationFailed, Notifier
from .plans import PlanService

log = logging.getLogger(__name__)

#: A responder's states, in the order a dispatcher reads them.
STATES: Final = ("pending", "ringing", "answered", "confirmed", "left", "unreachable",
                 "escalated", "stood-down", "ended")
_SETTLED: Final = frozenset({"answered", "confirmed", "left"})


@dataclass(frozen=True, slots=True)
class ResponseChanged(Event):
    incident_id: int
    """The incident."""
    response: dict[str, Any]
    """The response with its board, as ``GET /api/incidents/{id}/response`` gives it."""


@dataclass(eq=False)
class Responder:
    id: int
    role: str
    person: str
    deputy: str | None
    deputy_for: int | None
    level: int | None
    state: str = "pending"
    escalated: bool = False
    notified: bool = False
    endpoint: str | None = None
    attempts: int = 0
    leg_id: str | None = None
    deadline: float | None = None
    answered_at: float | None = None
    confirmed_at: float | None = None
    updated_at: float = 0.0
    dleg: DispatchLeg | None = None
    timer: asyncio.TimerHandle | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "role": self.role, "person": self.person,
                "deputy": self.deputy, "deputy_for": self.deputy_for, "level": self.level,
                "state": self.state, "escalated": self.escalated, "notified": self.notified,
                "endpoint": self.endpoint, "attempts": self.attempts, "leg_id": self.leg_id,
                "deadline": self.deadline, "answered_at": self.answered_at,
                "confirmed_at": self.confirmed_at, "updated_at": self.updated_at}


@dataclass(eq=False)
class LiveResponse:
    id: int
    incident_id: int
    plan: dict[str, Any]
    level: int
    call: DispatchCall
    started_at: float
    started_by: str | None
    responders: list[Responder] = field(default_factory=list)


def _responder(row: Row) -> Responder:
    return Responder(row["id"], row["role"], row["person"], row["deputy"], row["deputy_for"],
                     row["level"], row["state"], bool(row["escalated"]), bool(row["notified"]),
                     row["endpoint"], row["attempts"], row["leg_id"], row["deadline"],
                     row["answered_at"], row["confirmed_at"], row["updated_at"])


class ResponseService:
    """Plan activations, their ack boards, level changes and endings."""

    def __init__(self, db: Database, incidents: IncidentService, plans: PlanService,
                 calls: CallService, bus: EventBus, *, notifier: Notifier | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.incidents = incidents
        self.plans = plans
        self.calls = calls
        self.bus = bus
        self.notifier: Notifier = notifier or LogNotifier()
        if hasattr(self.notifier, "on_failure"):
            # Delivered later (a webhook): a failure reaches the timeline when known.
            self.notifier.on_failure = self._notice_failed
        self.clock = clock
        self.live: dict[int, LiveResponse] = {}
        """Running responses by incident id."""
        self._by_call: dict[str, LiveResponse] = {}
        bus.subscribe(self._on_event)
        self._interrupted()

    def _interrupted(self) -> None:
        """Responses left running by a previous process: their calls are gone."""
        rows = self.db.query("SELECT id, incident_id FROM responses WHERE state = 'active'")
        if not rows:
            return
        now = self.clock()
        with self.db.transaction() as tx:
            for row in rows:
                tx.execute("UPDATE responses SET state = 'interrupted', ended_at = ?"
                           " WHERE id = ?", (now, row["id"]))
        for row in rows:
            self.incidents.record(row["incident_id"], "response.interrupted",
                                  {"response_id": row["id"],
                                   "reason": "the hub restarted during the response"})

    # -- activation ------------------------------------------------------------------------------
    def activate(self, incident_id: int, plan_id: object, level: object = None, *,
                 operator: str | None = None) -> dict[str, Any]:
        incident = self.incidents.get(incident_id)
        if incident["status"] == "closed":
            raise Conflict(f"incident {incident_id} is closed: reopen it to respond")
        if incident_id in self.live:
            raise Conflict(f"incident {incident_id} already has a response running "
                           f"(plan {self.live[incident_id].plan['name']!r})")
        if isinstance(plan_id, bool) or not isinstance(plan_id, int):
            raise InvalidInput("plan_id must be a plan's id (an integer)")
        try:
            plan = self.plans.get(plan_id)
        except NotFound:
            raise InvalidInput(f"plan_id: no plan {plan_id}") from None
        at = taxonomy.level(level) if level is not None else incident["level"]
        roles = [r for r in plan["roles"] if self._required(r, at)]
        now = self.clock()
        call = self.calls.open("group", record=True, operator=operator,
                               incident_id=incident_id, confirm=True)
        with self.db.transaction() as tx:
            response_id = tx.insert(
                "INSERT INTO responses (incident_id, plan_id, plan_name, level, state, call_id,"
                " started_at, started_by) VALUES (?, ?, ?, ?, 'active', ?, ?, ?)",
                (incident_id, plan_id, plan["name"], at, call.id, now, operator))
            responders = [
                Responder(tx.insert(
                    "INSERT INTO responders (response_id, role, person, deputy, deputy_for,"
                    " level, state, escalated, notified, attempts, deadline, updated_at)"
                    " VALUES (?, ?, ?, ?, NULL, ?, 'pending', 0, 0, 0, ?, ?)",
                    (response_id, r["role"], r["person"], r["deputy"], r["level"],
                     now + plan["escalate_after_s"], now)),
                    r["role"], r["person"], r["deputy"], None, r["level"],
                    deadline=now + plan["escalate_after_s"], updated_at=now)
                for r in roles]
            for task in plan["tasks"]:
                tx.execute("INSERT INTO tasks (incident_id, response_id, title, role, due_at,"
                           " state) VALUES (?, ?, ?, ?, ?, 'open')",
                           (incident_id, response_id, task["title"], task["role"],
                            None if task["deadline_s"] is None else now + task["deadline_s"]))
        live = LiveResponse(response_id, incident_id, plan, at, call, now, operator, responders)
        self.live[incident_id] = live
        self._by_call[call.id] = live
        self.incidents.record(incident_id, "response.activated", {
            "response_id": response_id, "plan_id": plan_id, "plan_name": plan["name"],
            "level": at, "call_id": call.id, "recording_id": call.recording_id,
            "responders": [{"role": r.role, "person": r.person} for r in responders],
            "resources": [r for r in plan["resources"] if self._required(r, at)],
            "tasks": [t["title"] for t in plan["tasks"]]}, actor=operator)
        changes = {"status": "responding"} if incident["status"] != "responding" else {}
        if at != incident["level"]:
            changes["level"] = str(at)
        if changes:
            self.incidents.update(incident_id, changes, operator=operator)
        loop = asyncio.get_running_loop()
        for responder in responders:
            self._dial(live, responder, loop)
        log.info("incident %d: plan %r activated at level %s by %s: %d responders",
                 incident_id, plan["name"], taxonomy.level_label(at), operator, len(responders))
        self._refresh(live)
        return self.as_dict(live)

    @staticmethod
    def _required(item: dict[str, Any], level: int) -> bool:
        return item.get("level") is None or level <= item["level"]

    def _dial(self, live: LiveResponse, responder: Responder,
              loop: asyncio.AbstractEventLoop) -> None:
        responder.dleg = self.calls.dial_member(live.call, responder.person)
        if responder.deadline is not None and responder.deputy_for is None:
            responder.timer = loop.call_at(
                loop.time() + max(0.0, responder.deadline - self.clock()),
                self._deadline, live, responder)

    # -- the board -------------------------------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        if isinstance(event, CallChanged):
            live = self._by_call.get(event.call["id"])
            if live is not None:
                self._refresh(live)
        elif isinstance(event, CallEnded):
            live = self._by_call.get(event.call_id)
            if live is not None and self.live.get(live.incident_id) is live:
                # The command room was hung up from the switchboard: the response ends
                # with it (closing notices and all), rather than running on without a room.
                asyncio.get_running_loop().call_soon(self._room_closed, live, event.reason)

    def _room_closed(self, live: LiveResponse, reason: str) -> None:
        if self.live.get(live.incident_id) is live:
            self.end(live.incident_id, reason=f"command room closed: {reason}")

    @staticmethod
    def _state_of(responder: Responder) -> str:
        dleg = responder.dleg
        if responder.state in ("stood-down", "ended"):
            return responder.state
        if dleg is None:
            return "escalated" if responder.escalated else responder.state
        if dleg.confirmed:
            return "confirmed"
        out = dleg.out
        if out is None:
            state = "pending"
        elif out.outcome.value == "answered":
            state = "left" if out.ended else "answered"
        elif out.ended:
            state = "unreachable"
        else:
            state = "ringing"
        if responder.escalated and state not in _SETTLED:
            return "escalated"
        return state

    def _refresh(self, live: LiveResponse) -> None:
        """Bring the board up to date with the call; store and tell what changed."""
        now = self.clock()
        changed: list[tuple[Responder, str]] = []
        dirty: list[Responder] = []
        for responder in live.responders:
            old = responder.state
            new = self._state_of(responder)
            dleg = responder.dleg
            endpoint = attempts = leg_id = None
            if dleg is not None:
                endpoint = dleg.endpoints[dleg.attempt] if dleg.endpoints else dleg.target
                attempts, leg_id = dleg.attempt + 1, dleg.id
            if (new == old and endpoint == responder.endpoint
                    and attempts in (None, responder.attempts)):
                continue
            responder.state = new
            if endpoint is not None:
                responder.endpoint, responder.leg_id = endpoint, leg_id
                responder.attempts = attempts or 0
            if new in ("answered", "confirmed") and responder.answered_at is None:
                responder.answered_at = now
            if new == "confirmed" and responder.confirmed_at is None:
                responder.confirmed_at = now
            responder.updated_at = now
            if new != old:
                changed.append((responder, old))
            dirty.append(responder)
        if dirty:
            self._store(*dirty)
        entries = [("responder.state", {
            "response_id": live.id, "responder_id": r.id, "role": r.role, "person": r.person,
            "old": old, "new": r.state, "endpoint": r.endpoint, "attempts": r.attempts,
            "deputy_for": r.deputy_for}, None) for r, old in changed]
        if entries:
            self.incidents.record_many(live.incident_id, entries)
        for responder, _ in changed:
            if responder.state == "unreachable" and not responder.notified:
                self._notify(live, responder, "unreachable",
                             live.plan.get("notification") or self._default_notice(live))
        self._publish(live)

    def _store(self, *responders: Responder) -> None:
        """Write the rows in one transaction (a 100-responder board changes at once)."""
        with self.db.transaction() as tx:
            tx.executemany(
                "UPDATE responders SET state = ?, escalated = ?, notified = ?,"
                " endpoint = ?, attempts = ?, leg_id = ?, answered_at = ?,"
                " confirmed_at = ?, updated_at = ? WHERE id = ?",
                [(r.state, int(r.escalated), int(r.notified), r.endpoint, r.attempts,
                  r.leg_id, r.answered_at, r.confirmed_at, r.updated_at, r.id)
                 for r in responders])

    def _default_notice(self, live: LiveResponse) -> str:
        incident = self.incidents.get(live.incident_id)
        return (f"【应急响应】{incident['title']}：已启动{live.plan['name']}"
                f"（{taxonomy.level_label(live.level)}级），请立即与指挥中心联系。")

    def _notify(self, live: LiveResponse, responder: Responder, reason: str,
                text: str) -> None:
        notice = Notice(live.incident_id, responder.person, text, reason)
        try:
            self.notifier.send(notice)
            kind, extra = "notification.sent", {}
        except NotificationFailed as exc:
            kind, extra = "notification.failed", {"error": str(exc)}
        except Exception as exc:
            log.exception("notifier failed for %s", responder.person)
            kind, extra = "notification.failed", {"error": str(exc)}
        responder.notified = responder.notified or kind == "notification.sent"
        self._store(responder)
        self.incidents.record(live.incident_id, kind, {
            "person": responder.person, "role": responder.role, "reason": reason,
            "text": text, "channel": self.notifier.channel, **extra})

    def _notice_failed(self, notice: Notice, reason: str) -> None:
        try:
            self.incidents.record(notice.incident_id, "notification.failed", {
                "person": notice.person, "reason": notice.reason, "text": notice.text,
                "channel": self.notifier.channel, "error": reason})
        except Exception:
            log.exception("incident %d: cannot record a failed notice", notice.incident_id)

    def _deadline(self, live: LiveResponse, responder: Responder) -> None:
        responder.timer = None
        if self.live.get(live.incident_id) is not live:
            return
        if self._state_of(responder) in _SETTLED:
            return
        responder.escalated = True
        log.info("incident %d: %s (%s) not reached in %.0f s: escalating to %s",
                 live.incident_id, responder.person, responder.role,
                 live.plan["escalate_after_s"], responder.deputy)
        deputy = None
        if responder.deputy and not any(r.person == responder.deputy and r.state not in (
                "stood-down", "ended") for r in live.responders):
            now = self.clock()
            with self.db.transaction() as tx:
                deputy_id = tx.insert(
                    "INSERT INTO responders (response_id, role, person, deputy, deputy_for,"
                    " level, state, escalated, notified, attempts, updated_at)"
                    " VALUES (?, ?, ?, NULL, ?, ?, 'pending', 0, 0, 0, ?)",
                    (live.id, responder.role, responder.deputy, responder.id, responder.level,
                     now))
            deputy = Responder(deputy_id, responder.role, responder.deputy, None, responder.id,
                               responder.level, updated_at=now)
            live.responders.append(deputy)
        self.incidents.record(live.incident_id, "responder.escalated", {
            "response_id": live.id, "responder_id": responder.id, "role": responder.role,
            "person": responder.person, "deputy": responder.deputy,
            "deputy_called": deputy is not None})
        if deputy is not None:
            self._dial(live, deputy, asyncio.get_running_loop())
        self._refresh(live)

    # -- level and end ---------------------------------------------------------------------------
    def set_level(self, incident_id: int, level: int, *, operator: str | None = None) -> None:
        """The incident's level changed: mobilise what the plan adds, stand down the rest."""
        live = self.live.get(incident_id)
        if live is None or level == live.level:
            return
        old, live.level = live.level, level
        with self.db.transaction() as tx:
            tx.execute("UPDATE responses SET level = ? WHERE id = ?", (level, live.id))
        active = {r.person for r in live.responders if r.state not in ("stood-down", "ended")}
        added: list[Responder] = []
        now = self.clock()
        for role in live.plan["roles"]:
            if self._required(role, level) and role["person"] not in active:
                with self.db.transaction() as tx:
                    rid = tx.insert(
                        "INSERT INTO responders (response_id, role, person, deputy, deputy_for,"
                        " level, state, escalated, notified, attempts, deadline, updated_at)"
                        " VALUES (?, ?, ?, ?, NULL, ?, 'pending', 0, 0, 0, ?, ?)",
                        (live.id, role["role"], role["person"], role["deputy"], role["level"],
                         now + live.plan["escalate_after_s"], now))
                added.append(Responder(rid, role["role"], role["person"], role["deputy"], None,
                                       role["level"],
                                       deadline=now + live.plan["escalate_after_s"],
                                       updated_at=now))
        stood_down = [r for r in live.responders
                      if r.level is not None and not self._required({"level": r.level}, level)
                      and r.state not in ("stood-down", "ended")]
        live.responders += added
        self.incidents.record(incident_id, "response.level", {
            "response_id": live.id, "old": old, "new": level,
            "mobilised": [r.person for r in added], "stood_down": [r.person for r in stood_down]},
            actor=operator)
        for responder in stood_down:
            self._release(live, responder, "stood-down")
            self._notify(live, responder, "stand-down",
                         f"【应急响应】响应级别调整为{taxonomy.level_label(level)}级，"
                         f"您（{responder.role}）可解除待命。")
        loop = asyncio.get_running_loop()
        for responder in added:
            self._dial(live, responder, loop)
        self._refresh(live)

    def _release(self, live: LiveResponse, responder: Responder, state: str) -> None:
        if responder.timer is not None:
            responder.timer.cancel()
            responder.timer = None
        if responder.dleg is not None:
            self.calls.hang_up_member(live.call, responder.dleg, state)
        responder.state = state
        responder.updated_at = self.clock()
        self._store(responder)

    def end(self, incident_id: int, *, operator: str | None = None,
            reason: str = "response ended") -> dict[str, Any]:
        live = self.live.pop(incident_id, None)
        if live is None:
            raise Conflict(f"incident {incident_id} has no response running")
        self._by_call.pop(live.call.id, None)
        for responder in live.responders:
            if responder.timer is not None:
                responder.timer.cancel()
                responder.timer = None
        if live.call.ended is None:
            self.calls.end(live.call.id, reason)
        now = self.clock()
        with self.db.transaction() as tx:
            tx.execute("UPDATE responses SET state = 'ended', ended_at = ?, ended_by = ?"
                       " WHERE id = ?", (now, operator, live.id))
        self.incidents.record(incident_id, "response.ended", {
            "response_id": live.id, "plan_name": live.plan["name"], "reason": reason},
            actor=operator)
        text = live.plan.get("closing_notice") or (
            f"【应急响应结束】{self.incidents.get(incident_id)['title']}："
            f"{live.plan['name']}响应已结束，感谢参与。")
        for responder in live.responders:
            if responder.state != "stood-down":
                self._notify(live, responder, "closing", text)
        result = self.get(incident_id)
        self.bus.publish(ResponseChanged(incident_id=incident_id, response=result or {}))
        return result or {}

    # -- reading ---------------------------------------------------------------------------------
    def as_dict(self, live: LiveResponse) -> dict[str, Any]:
        board = [r.as_dict() for r in live.responders]
        counts = {s: sum(1 for r in board if r["state"] == s) for s in STATES}
        return {"id": live.id, "incident_id": live.incident_id, "plan_id": live.plan["id"],
                "plan_name": live.plan["name"], "level": live.level,
                "level_label": taxonomy.level_label(live.level), "state": "active",
                "call_id": live.call.id, "recording_id": live.call.recording_id,
                "started_at": live.started_at, "started_by": live.started_by,
                "ended_at": None, "escalate_after_s": live.plan["escalate_after_s"],
                "responders": board, "counts": counts}

    def get(self, incident_id: int) -> dict[str, Any] | None:
        """The incident's running response, else its latest one, else None."""
        live = self.live.get(incident_id)
        if live is not None:
            return self.as_dict(live)
        row = self.db.query_one("SELECT * FROM responses WHERE incident_id = ?"
                                " ORDER BY id DESC LIMIT 1", (incident_id,))
        if row is None:
            return None
        board = [_responder(r).as_dict() for r in self.db.query(
            "SELECT * FROM responders WHERE response_id = ? ORDER BY id", (row["id"],))]
        plan_escalate = self.db.query_one("SELECT escalate_after_s FROM plans WHERE id = ?",
                                          (row["plan_id"],))
        return {"id": row["id"], "incident_id": incident_id, "plan_id": row["plan_id"],
                "plan_name": row["plan_name"], "level": row["level"],
                "level_label": taxonomy.level_label(row["level"]), "state": row["state"],
                "call_id": row["call_id"], "recording_id": None,
                "started_at": row["started_at"], "started_by": row["started_by"],
                "ended_at": row["ended_at"],
                "escalate_after_s": plan_escalate["escalate_after_s"] if plan_escalate else None,
                "responders": board,
                "counts": {s: sum(1 for r in board if r["state"] == s) for s in STATES}}

    def tasks(self, incident_id: int) -> list[dict[str, Any]]:
        now = self.clock()
        rows = self.db.query("SELECT * FROM tasks WHERE incident_id = ? ORDER BY id",
                             (incident_id,))
        return [{**r, "overdue": r["state"] == "open" and r["due_at"] is not None
                 and r["due_at"] < now} for r in rows]

    def set_task(self, incident_id: int, task_id: int, done: bool, *,
                 operator: str | None = None) -> dict[str, Any]:
        row = self.db.query_one("SELECT * FROM tasks WHERE id = ? AND incident_id = ?",
                                (task_id, incident_id))
        if row is None:
            raise NotFound(f"no task {task_id} in incident {incident_id}")
        state = "done" if done else "open"
        if row["state"] != state:
            now = self.clock()
            with self.db.transaction() as tx:
                tx.execute("UPDATE tasks SET state = ?, done_at = ?, done_by = ? WHERE id = ?",
                           (state, now if done else None, operator if done else None, task_id))
            self.incidents.record(incident_id, "task.done" if done else "task.reopened",
                                  {"task_id": task_id, "title": row["title"]}, actor=operator)
        return next(t for t in self.tasks(incident_id) if t["id"] == task_id)

    def _publish(self, live: LiveResponse) -> None:
        self.bus.publish(ResponseChanged(incident_id=live.incident_id,
                                         response=self.as_dict(live)))

    def shutdown(self) -> None:
        for incident_id in list(self.live):
            try:
                self.end(incident_id, reason="shutdown")
            except Exception:
                log.exception("incident %d: cannot end its response", incident_id)

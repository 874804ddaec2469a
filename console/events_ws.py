"""WebSocket ``/api/events``: a snapshot, then every event on the bus, as JSON.

* **Authentication** before anything is sent: ``Authorization: Bearer`` header, a
  ``?token=`` query parameter (browsers can't set headers on a WebSocket), or the
  session cookie (then the ``Origin`` must be this host: no cross-site hijacking).
  Refused connections are accepted and closed at once with 4401 (no or bad
  credentials) or 4403 (cross-origin), so a browser can tell why.
* **Snapshot first.** The first message is ``{"type": "snapshot", ...}`` with the
  directory (with statuses), calls and rooms. The subscription and the snapshot happen
  in the same loop step, so no event falls between them: a reconnecting console
  simply resyncs from it.
* **Events** are ``event.to_dict()`` (``"type"`` is the event class). With
  ``?batch=1`` the events that are waiting when the connection is ready to send go out
  as one message ``{"type": "batch", "events": [...]}`` (in order): a group call's
  burst of 150 events is then a handful of WebSocket messages per console instead of
  150, which is what keeps fan-out to many consoles fast on both ends.
* **Back-pressure**: each connection has a bounded queue. A console that can't keep
  up is dropped (close 1013, try again later) rather than letting the queue grow or
  the publisher block: it reconnects and resyncs from a fresh snapshot.
* The stream closes with 4401 when its session expires or is revoked (logout,
  operator removed, password changed); revocations by the CLI are noticed within
  ``RECHECK_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Final

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from bridges.events import Event, EventBus

from .api import Api, Operation, authenticate, same_origin
from .auth import AuthService, Principal
from .errors import ApiError

log = logging.getLogger(__name__)

QUEUE_LIMIT: Final = 1000
RECHECK_S: Final = 60.0
CLOSE_UNAUTHENTICATED: Final = 4401
CLOSE_FORBIDDEN: Final = 4403
CLOSE_TOO_SLOW: Final = 1013

SnapshotPart = Callable[[], Any]


def _encode(data: Mapping[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)


_ENCODED: dict[int, tuple[Event, str]] = {}
_ENCODED_MAX = 512


def _encode_event(event: Event) -> str:
    """The event's JSON, made once however many consoles it goes to.

    Keyed by identity (the cache holds the event, so its id can't be reused while
    cached); a bounded FIFO, as every console sends an event soon after it is published.
    """
    key = id(event)
    hit = _ENCODED.get(key)
    if hit is not None and hit[0] is event:
        return hit[1]
    text = _encode(event.to_dict())
    if len(_ENCODED) >= _ENCODED_MAX:
        del _ENCODED[next(iter(_ENCODED))]
    _ENCODED[key] = (event, text)
    return text


class _Outbox:
    """A connection's bounded queue of events; ``overflowed`` once it was full."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: deque[Event] = deque()
        self.ready = asyncio.Event()
        self.overflowed = False
        self.revoked = False

    def push(self, event: Event) -> None:
        if self.overflowed:
            return
        if len(self.items) >= self.limit:
            self.overflowed = True
            self.items.clear()
        else:
            self.items.append(event)
        self.ready.set()

    def stop(self) -> None:
        self.revoked = True
        self.ready.set()


def events_routes(
    api: Api,
    auth: AuthService | None,
    bus: EventBus,
    snapshot: Mapping[str, SnapshotPart],
    *,
    queue_limit: int = QUEUE_LIMIT,
    clock: Callable[[], float] = time.time,
) -> list[BaseRoute]:
    """The ``/api/events`` WebSocket (and a 426 for plain HTTP GETs of it).

    ``snapshot`` maps each key of the snapshot message to a function giving its value
    (``{"directory": directory.snapshot, "calls": ..., "rooms": ...}``).
    """

    def take_snapshot() -> dict[str, Any]:
        message: dict[str, Any] = {"type": "snapshot", "at": clock()}
        for key, part in snapshot.items():
            try:
                message[key] = part()
            except Exception:
                log.exception("events: snapshot part %s failed", key)
                message[key] = None
        return message

    async def events(websocket: WebSocket) -> None:
        try:
            principal, how = authenticate(auth, websocket, allow_query=True)
        except ApiError as exc:
            await websocket.accept()
            await websocket.close(CLOSE_UNAUTHENTICATED, exc.message[:120])
            return
        if how == "cookie" and not same_origin(websocket):
            await websocket.accept()
            await websocket.close(CLOSE_FORBIDDEN, "cross-origin: use a token")
            return
        await websocket.accept()
        batch = websocket.query_params.get("batch", "") in ("1", "true", "yes")
        await _stream(websocket, principal, batch)

    async def _stream(websocket: WebSocket, principal: Principal, batch: bool) -> None:
        assert auth is not None
        outbox = _Outbox(queue_limit)
        stop_revoked = auth.on_revoked(
            lambda ids: outbox.stop() if principal.session_id in ids else None)
        # Same loop step: nothing published between subscribing and the snapshot is lost.
        unsubscribe = bus.subscribe(outbox.push)
        first = take_snapshot()
        log.info("events: %s connected", principal.operator)
        code: int | None = None

        async def sending(scope: anyio.CancelScope) -> None:
            nonlocal code
            try:
                code = await _send(websocket, outbox, first, principal, batch)
            except (WebSocketDisconnect, OSError, RuntimeError):
                pass  # the client went away while we were sending
            scope.cancel()

        async def receiving(scope: anyio.CancelScope) -> None:
            await _receive(websocket)
            scope.cancel()

        try:
            async with anyio.create_task_group() as group:
                group.start_soon(sending, group.cancel_scope)
                group.start_soon(receiving, group.cancel_scope)
        finally:
            unsubscribe()
            stop_revoked()
        if code is not None:
            with contextlib.suppress(Exception):
                await websocket.close(code, _REASONS.get(code, ""))
        log.info("events: %s disconnected%s", principal.operator,
                 f" ({_REASONS.get(code, code)})" if code else "")

    async def _send(websocket: WebSocket, outbox: _Outbox, first: dict[str, Any],
                    principal: Principal, batch: bool) -> int:
        """Send until something ends the stream; returns the close code to use."""
        assert auth is not None
        await websocket.send_text(_encode(first))
        while True:
            wait = min(RECHECK_S, max(0.0, principal.expires_at - auth.clock()))
            try:
                await asyncio.wait_for(outbox.ready.wait(), timeout=wait or 0.001)
            except TimeoutError:
                if auth.clock() >= principal.expires_at \
                        or not auth.session_active(principal.session_id):
                    return CLOSE_UNAUTHENTICATED
                continue
            outbox.ready.clear()
            if outbox.revoked:
                return CLOSE_UNAUTHENTICATED
            if outbox.overflowed:
                log.warning("events: %s can't keep up (more than %d queued): dropped",
                            principal.operator, outbox.limit)
                return CLOSE_TOO_SLOW
            if batch and len(outbox.items) > 1:
                events = [_encode_event(e) for e in outbox.items]
                outbox.items.clear()
                await websocket.send_text('{"type":"batch","events":[' + ",".join(events)
                                          + "]}")
                continue
            while outbox.items:
                event = outbox.items.popleft()
                await websocket.send_text(_encode_event(event))
                if outbox.overflowed:
                    break

    async def _receive(websocket: WebSocket) -> None:
        # Clients have nothing to say yet; reading notices them leaving.
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return

    async def not_websocket(request: Request) -> JSONResponse:
        return ApiError(426, "websocket-required",
                        "/api/events is a WebSocket: connect with an Upgrade request").response()

    api.document(Operation(
        "GET", "/api/events", "Live events (WebSocket)", None, tags=("events",),
        operation_id="events",
        description="Upgrade to a WebSocket, authenticated by 'Authorization: Bearer', "
                    "?token= or the session cookie (else closed with 4401). The first "
                    "message is {\"type\": \"snapshot\", \"directory\", \"calls\", \"rooms\", "
                    "\"queue\", \"incidents\"}; then every event on the hub's bus as JSON "
                    "with its \"type\" (e.g. EndpointStatusChanged, LegStateChanged, "
                    "CallChanged, QueueChanged, IncidentChanged, TimelineAppended, "
                    "ResponseChanged). With ?batch=1, events waiting together arrive as one "
                    "{\"type\": \"batch\", \"events\": [...]} message. A client that can't "
                    "keep up is closed with 1013 and should reconnect.",
        responses={101: ("Switching to the WebSocket protocol", None)}, websocket=True))
    return [WebSocketRoute("/api/events", events, name="events"),
            Route("/api/events", not_websocket, methods=["GET"], name="events_http")]


_REASONS: Final = {CLOSE_UNAUTHENTICATED: "session expired or revoked",
                   CLOSE_TOO_SLOW: "too slow: reconnect"}

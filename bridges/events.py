"""Events: every change of state in the hub, on one in-process bus (design.md).

Events are frozen dataclasses; subscribers get them synchronously in publication
order. A subscriber that raises is logged and skipped, never the publisher's problem.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Event:
    at: float = field(default_factory=time.time, kw_only=True)
    """Wall-clock time of the change (seconds since the epoch)."""

    @property
    def kind(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        # Shallow: event fields are plain values (or, for whole-state events, dicts
        # built for the event); asdict's deep copy cost more than the rest of a fan-out.
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["type"] = self.kind
        return data


@dataclass(frozen=True, slots=True)
class LegStateChanged(Event):
    bridge_id: str
    """The bridge the leg belongs to."""
    leg_id: str
    """The leg."""
    old: str
    """State before."""
    new: str
    """State after: new, ringing, up, held, ended."""
    reason: str = ""
    """Why (a SIP status, 'bye', 'cancel', 'timeout'...)."""


@dataclass(frozen=True, slots=True)
class LegMoved(Event):
    leg_id: str
    """The leg, same id and state as before."""
    from_bridge_id: str
    """The bridge it left."""
    to_bridge_id: str
    """The bridge it is in now."""
    reason: str = ""
    """Why (an attended transfer)."""


@dataclass(frozen=True, slots=True)
class BridgeOpened(Event):
    bridge_id: str
    """The new bridge."""
    kind_name: str
    """call (two-party) or room."""


@dataclass(frozen=True, slots=True)
class BridgeClosed(Event):
    bridge_id: str
    """The bridge that ended."""
    reason: str = ""
    """Why it ended."""


@dataclass(frozen=True, slots=True)
class RegistrationChanged(Event):
    user: str
    """The SIP user."""
    contacts: int
    """How many contacts it has now (0 = offline)."""


@dataclass(frozen=True, slots=True)
class SecurityAlert(Event):
    source: str
    """The source address."""
    what: str
    """What happened (auth failures, scanner)."""


@dataclass(frozen=True, slots=True)
class TalkerChanged(Event):
    bridge_id: str
    """The bridge."""
    leg_id: str
    """Who started or stopped talking."""
    talking: bool
    """True at the start of a talk spurt, False after its hang time."""


@dataclass(frozen=True, slots=True)
class DtmfPressed(Event):
    bridge_id: str
    """The bridge."""
    leg_id: str
    """Who pressed."""
    digit: str
    """0-9, *, #, A-D."""
    duration_ms: int
    """How long the key was held."""


Subscriber = Callable[[Event], None]


class EventBus:
    """In-process publish/subscribe. Keeps a short history for late joiners."""

    def __init__(self, history: int = 1000) -> None:
        self._subscribers: list[Subscriber] = []
        self.history: deque[Event] = deque(maxlen=history)

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        self._subscribers.append(fn)

        def unsubscribe() -> None:
            if fn in self._subscribers:
                self._subscribers.remove(fn)

        return unsubscribe

    def publish(self, event: Event) -> None:
        self.history.append(event)
        for fn in list(self._subscribers):
            try:
                fn(event)
            except Exception:
                log.exception("event subscriber failed on %s", event.kind)

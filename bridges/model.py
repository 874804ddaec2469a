"""Legs and bridges: every party is a Leg, every meeting of parties a Bridge.

A leg's state moves only through :meth:`Leg.set_state`, which checks the move against
the table below, logs ``old -> new`` and publishes a :class:`LegStateChanged`.
"""

from __future__ import annotations

import enum
import itertools
import logging
from dataclasses import dataclass, field

from .events import BridgeClosed, BridgeOpened, EventBus, LegMoved, LegStateChanged

log = logging.getLogger(__name__)


class LegState(enum.Enum):
    NEW = "new"
    RINGING = "ringing"
    UP = "up"
    HELD = "held"
    ENDED = "ended"


_ALLOWED: dict[LegState, frozenset[LegState]] = {
    LegState.NEW: frozenset({LegState.RINGING, LegState.UP, LegState.ENDED}),
    LegState.RINGING: frozenset({LegState.UP, LegState.ENDED}),
    LegState.UP: frozenset({LegState.HELD, LegState.ENDED}),
    LegState.HELD: frozenset({LegState.UP, LegState.ENDED}),
    LegState.ENDED: frozenset(),
}

_ids = itertools.count(1)


class IllegalTransition(ValueError):
    pass


@dataclass(eq=False)
class Leg:
    """One party in a bridge: a SIP phone, a trunk call, later a browser or a radio."""

    bridge: Bridge
    kind: str
    """sip-user, sip-trunk, webrtc..."""
    peer: str
    """Who: the user name or the dialled number."""
    id: str = field(default_factory=lambda: f"L{next(_ids)}")
    state: LegState = LegState.NEW

    def set_state(self, new: LegState, reason: str = "") -> None:
        old = self.state
        if new is old:
            return
        if new not in _ALLOWED[old]:
            raise IllegalTransition(f"leg {self.id}: {old.value} -> {new.value}")
        self.state = new
        log.info("[%s/%s] %s -> %s %s", self.bridge.id, self.id, old.value, new.value, reason)
        self.bridge.bus.publish(
            LegStateChanged(bridge_id=self.bridge.id, leg_id=self.id, old=old.value,
                            new=new.value, reason=reason))

    @property
    def ended(self) -> bool:
        return self.state is LegState.ENDED


@dataclass(eq=False)
class Bridge:
    """A room where legs meet. A two-party call is a bridge with two legs."""

    bus: EventBus
    kind: str = "call"
    id: str = field(default_factory=lambda: f"B{next(_ids)}")
    legs: list[Leg] = field(default_factory=list)
    closed: bool = False

    def __post_init__(self) -> None:
        self.bus.publish(BridgeOpened(bridge_id=self.id, kind_name=self.kind))

    def add_leg(self, kind: str, peer: str) -> Leg:
        leg = Leg(self, kind, peer)
        self.legs.append(leg)
        return leg

    def move_leg(self, leg: Leg, to: Bridge, reason: str = "") -> None:
        """``leg`` now belongs to ``to`` (an attended transfer joins two calls): same id,
        same state; publishes ``LegMoved``."""
        if leg.bridge is not self or leg not in self.legs:
            raise ValueError(f"leg {leg.id} is not in bridge {self.id}")
        if to.closed or to is self:
            raise ValueError(f"bridge {to.id} cannot take leg {leg.id}")
        self.legs.remove(leg)
        to.legs.append(leg)
        leg.bridge = to
        log.info("[%s/%s] moved to %s %s", self.id, leg.id, to.id, reason)
        self.bus.publish(LegMoved(leg_id=leg.id, from_bridge_id=self.id, to_bridge_id=to.id,
                                  reason=reason))

    def close(self, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        for leg in self.legs:
            if not leg.ended:
                leg.set_state(LegState.ENDED, reason)
        self.bus.publish(BridgeClosed(bridge_id=self.id, reason=reason))
        # Legs point at their bridge; once it is closed, the bridge lets go of them so
        # no reference cycle outlives the call (the cyclic collector's pauses are long).
        self.legs = []

"""Text notifications to people: the pluggable sender a plan's response uses.

A response sends text when a responder no call reached (after every endpoint failed),
when a responder is stood down, and when the response ends (the closing notice).
What carries the text is a :class:`Notifier`; the default, :class:`LogNotifier`, only
writes it to the log (the response puts every notice on the incident's timeline
whatever the sender). An SMS provider is another ``Notifier``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Notice:
    incident_id: int
    """The incident it is about."""
    person: str
    """Who it is for (a directory name)."""
    text: str
    """What it says."""
    reason: str
    """Why it is sent: unreachable, stand-down, closing."""


class NotificationFailed(Exception):
    """The sender could not deliver (the response records that, and goes on)."""


class Notifier(Protocol):
    channel: str
    """What the timeline calls this sender (log, sms...)."""

    def send(self, notice: Notice) -> None:
        """Deliver ``notice`` or raise NotificationFailed; must not block the loop."""
        ...


class LogNotifier:
    """Writes every notice to the log; the timeline holds it too."""

    channel = "log"

    def __init__(self) -> None:
        self.sent: list[Notice] = []

    def send(self, notice: Notice) -> None:
        self.sent.append(notice)
        del self.sent[:-1000]
        log.info("notice for %s (incident %d, %s): %s", notice.person, notice.incident_id,
                 notice.reason, notice.text)

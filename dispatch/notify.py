"""Text notifications to people: the pluggable sender a plan's response uses.

A response sends text when a responder no call reached (after every endpoint failed),
when a responder is stood down, and when the response ends (the closing notice).
What carries the text is a :class:`Notifier`; the default, :class:`LogNotifier`, only
writes it to the log (the response puts every notice on the incident's timeline
whatever the sender). :class:`WebhookNotifier` POSTs each notice as JSON to a URL (an
SMS gateway, a paging system, an integrator's service); an SMS provider is another
``Notifier``. ``hub serve --notifier`` chooses: ``log`` or ``webhook:URL``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass
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


class WebhookNotifier:
    """POSTs each notice as JSON (``incident_id``, ``person``, ``text``, ``reason``) to
    ``url``; any 2xx answer is a delivery.

    Delivery runs in a worker thread so the event loop never waits on the network;
    ``send`` returns at once and a failure reaches ``on_failure`` (the response puts
    it on the timeline) and the log.
    """

    channel = "webhook"

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"a webhook URL must be http:// or https://, not {url!r}")
        self.url = url
        self.timeout = timeout
        self.on_failure: Callable[[Notice, str], None] | None = None

    def send(self, notice: Notice) -> None:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, self._post, notice)
        future.add_done_callback(lambda done: self._done(notice, done))

    def _post(self, notice: Notice) -> None:
        body = json.dumps(asdict(notice), ensure_ascii=False).encode()
        request = urllib.request.Request(self.url, data=body, method="POST", headers={
            "content-type": "application/json; charset=utf-8"})
        with urllib.request.urlopen(request, timeout=self.timeout) as answer:
            if not 200 <= answer.status < 300:
                raise NotificationFailed(f"{self.url} answered {answer.status}")

    def _done(self, notice: Notice, done: asyncio.Future[None] | Future[None]) -> None:
        if done.cancelled():
            return
        error = done.exception()
        if error is None:
            log.info("notice for %s delivered to %s", notice.person, self.url)
            return
        reason = f"{type(error).__name__}: {error}"
        log.warning("notice for %s not delivered to %s: %s", notice.person, self.url, reason)
        if self.on_failure is not None:
            try:
                self.on_failure(notice, reason)
            except Exception:
                log.exception("notice failure handler failed")


def notifier_from_spec(spec: str) -> LogNotifier | WebhookNotifier:
    """``log`` or ``webhook:URL`` (``hub serve --notifier``)."""
    if spec == "log":
        return LogNotifier()
    if spec.startswith("webhook:"):
        return WebhookNotifier(spec.removeprefix("webhook:"))
    raise ValueError(f"unknown notifier {spec!r}: use log or webhook:URL")

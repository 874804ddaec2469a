"""Defences against toll fraud and scanning, sans-I/O (time is an argument).

- Known scanner user agents (sipvicious, friendly-scanner, sipcli...) are dropped
  without a word: any answer tells the scanner a SIP server lives here.
- Failed digest attempts are counted per source address; past ``max_failures`` in
  ``window`` seconds the source is blocked for ``block_for`` seconds and its requests
  are dropped. Each block is logged once.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

SCANNER_AGENTS = re.compile(
    r"friendly-scanner|sipvicious|sipcli|sip-scan|sipsak|smap|VaxSIPUserAgent|"
    r"iWar|sundayddr|sipscan|pplsip|Gulp|fake ?user|SIPBomber|Cisco-SIPGateway/IOS-12\.x",
    re.IGNORECASE,
)


def is_scanner(user_agent: str | None) -> bool:
    return bool(user_agent) and SCANNER_AGENTS.search(user_agent or "") is not None


@dataclass
class AuthThrottle:
    max_failures: int = 10
    window: float = 60.0
    block_for: float = 300.0
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _blocked: dict[str, float] = field(default_factory=dict)

    def blocked(self, source: str, now: float) -> bool:
        until = self._blocked.get(source)
        if until is None:
            return False
        if now >= until:
            del self._blocked[source]
            return False
        return True

    def failure(self, source: str, now: float, what: str = "") -> bool:
        """Count a failure; True when this one got the source blocked."""
        times = self._failures.setdefault(source, deque())
        times.append(now)
        while times and times[0] < now - self.window:
            times.popleft()
        if len(times) >= self.max_failures and source not in self._blocked:
            self._blocked[source] = now + self.block_for
            times.clear()
            log.warning("blocking %s for %.0f s after %d failed authentications (%s)",
                        source, self.block_for, self.max_failures, what)
            return True
        if len(self._failures) > 10000:
            self._prune(now)
        return False

    def success(self, source: str) -> None:
        self._failures.pop(source, None)

    def _prune(self, now: float) -> None:
        for key in [k for k, v in self._failures.items() if not v or v[-1] < now - self.window]:
            del self._failures[key]

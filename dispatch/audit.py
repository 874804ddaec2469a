"""The audit log: who did what to which call or target, when, and how it ended.

Append-only (``audit_log`` has triggers refusing UPDATE and DELETE), written by the
console for every action an operator attempts (success or refusal) and for every
login attempt; read by supervisors (``GET /api/audit``). Entries are kept by operator
*name*, not a foreign key: they must outlive the operator.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from .db import Database
from .errors import InvalidInput

log = logging.getLogger(__name__)

MAX_LIMIT: Final = 1000
_MAX_FIELD: Final = 256
_MAX_DETAIL: Final = 4096


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the audit log."""

    id: int
    """Increasing with time; ``before=id`` pages backwards."""
    at: float
    """Unix time of the action."""
    operator: str
    """Who (an operator name; for a failed login, the name that was tried)."""
    role: str | None
    """The operator's role at the time, if known."""
    action: str
    """What: ``auth.login``, ``directory.person.create``, ``call.hangup``..."""
    target: str | None
    """Which call or object (``p3``, ``sip:1001``, ``C12``...), if any."""
    result: str
    """``ok``, or the ``error_id`` the action was refused with."""
    status: int | None
    """The HTTP status the action was answered with."""
    source: str | None
    """The client's address."""
    detail: Mapping[str, Any] | None
    """Anything else worth keeping (small)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "at": self.at, "operator": self.operator, "role": self.role,
            "action": self.action, "target": self.target, "result": self.result,
            "status": self.status, "source": self.source,
            "detail": None if self.detail is None else dict(self.detail),
        }


def _clip(value: str | None) -> str | None:
    return None if value is None else value[:_MAX_FIELD]


class AuditLog:
    """Writes and reads ``audit_log``."""

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock
        self.listeners: list[Callable[[AuditEntry], None]] = []
        """Told of every entry once written (an incident's timeline takes the actions
        on its calls)."""

    def record(
        self,
        *,
        operator: str,
        action: str,
        result: str = "ok",
        role: str | None = None,
        target: str | None = None,
        status: int | None = None,
        source: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        """Append one entry (its own transaction) and return it."""
        at = self._clock()
        text = None
        if detail is not None:
            text = json.dumps(dict(detail), ensure_ascii=False, default=str)
            if len(text) > _MAX_DETAIL:
                text = json.dumps({"truncated": text[:_MAX_DETAIL]}, ensure_ascii=False)
        values = (at, _clip(operator) or "", role, _clip(action) or "", _clip(target),
                  _clip(result) or "", status, _clip(source), text)
        with self._db.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO audit_log (at, operator, role, action, target, result, status,"
                " source, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
            entry_id = int(cursor.lastrowid or 0)
        log.info("audit #%d %s %s %s -> %s", entry_id, operator, action, target or "-", result)
        entry = AuditEntry(entry_id, at, values[1] or "", role, values[3] or "", values[4],
                           values[5] or "", status, values[7],
                           None if text is None else json.loads(text))
        for listener in list(self.listeners):
            try:
                listener(entry)
            except Exception:
                log.exception("audit listener failed on #%d", entry_id)
        return entry

    def entries(
        self,
        *,
        operator: str | None = None,
        action: str | None = None,
        target: str | None = None,
        result: str | None = None,
        since: float | None = None,
        until: float | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """Entries matching every filter given, newest first.

        ``action`` matches exactly or, ending in ``.*``, as a prefix (``directory.*``);
        ``since``/``until`` bound ``at`` (inclusive/exclusive); ``before`` pages by id.
        """
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidInput(f"limit must be 1-{MAX_LIMIT}, got {limit}", "invalid-limit")
        clauses: list[str] = []
        params: list[object] = []
        for column, value in (("operator", operator), ("target", target), ("result", result)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if action is not None:
            if action.endswith(".*"):
                clauses.append("substr(action, 1, ?) = ?")
                params += [len(action) - 1, action[:-1]]
            else:
                clauses.append("action = ?")
                params.append(action)
        if since is not None:
            clauses.append("at >= ?")
            params.append(since)
        if until is not None:
            clauses.append("at < ?")
            params.append(until)
        if before is not None:
            clauses.append("id < ?")
            params.append(before)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.query(
            f"SELECT * FROM audit_log{where} ORDER BY id DESC LIMIT ?", [*params, limit])
        return [
            AuditEntry(
                id=int(r["id"]), at=float(r["at"]), operator=r["operator"], role=r["role"],
                action=r["action"], target=r["target"], result=r["result"],
                status=None if r["status"] is None else int(r["status"]), source=r["source"],
                detail=None if r["detail"] is None else json.loads(r["detail"]),
            )
            for r in rows
        ]

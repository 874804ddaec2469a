"""``GET /api/audit``: the audit log, newest first, for supervisors and admins."""

from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute

from dispatch.audit import MAX_LIMIT, AuditLog

from .api import Api, ApiCall, Param
from .auth import Role

ENTRY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "at": {"type": "number", "description": "Unix time"},
        "operator": {"type": "string"},
        "role": {"type": "string", "nullable": True},
        "action": {"type": "string", "description": "auth.login, directory.person.create..."},
        "target": {"type": "string", "nullable": True,
                   "description": "The call or object acted on"},
        "result": {"type": "string", "description": "ok, or the error_id of the refusal"},
        "status": {"type": "integer", "nullable": True},
        "source": {"type": "string", "nullable": True},
        "detail": {"type": "object", "nullable": True},
    },
}
PAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "entries": {"type": "array", "items": ENTRY_SCHEMA},
        "next_before": {"type": "integer", "nullable": True,
                        "description": "Pass as before= for the next (older) page"},
    },
}


def audit_routes(api: Api, audit: AuditLog) -> list[BaseRoute]:
    async def list_audit(call: ApiCall) -> Any:
        q = call.query
        limit = q.get("limit", 100)
        entries = audit.entries(
            operator=q.get("operator"), action=q.get("action"), target=q.get("target"),
            result=q.get("result"), since=q.get("since"), until=q.get("until"),
            before=q.get("before"), limit=limit)
        return {"entries": [e.to_dict() for e in entries],
                "next_before": entries[-1].id if len(entries) == limit else None}

    text = {"type": "string", "maxLength": 256}
    return [
        api.route(
            "GET", "/api/audit", list_audit, role=Role.SUPERVISOR, tags=("audit",),
            summary="Read the audit log (newest first)",
            params=(
                Param("operator", text, "Only this operator's actions"),
                Param("action", text, "An action, or a prefix ending in .* (directory.*)"),
                Param("target", text, "Only actions on this call or object"),
                Param("result", text, "ok, or an error_id"),
                Param("since", {"type": "number"}, "Unix time, inclusive"),
                Param("until", {"type": "number"}, "Unix time, exclusive"),
                Param("before", {"type": "integer", "minimum": 1, "maximum": 10**18 - 1},
                      "Entries older than this id"),
                Param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                      f"At most this many (default 100, at most {MAX_LIMIT})"),
            ),
            responses={200: ("A page of entries", PAGE_SCHEMA)}),
    ]

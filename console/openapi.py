"""``GET /openapi.json``: the REST API described from the routes' own declarations.

Built by hand (no docstring YAML) from the :class:`~console.api.Operation` every route
registered with the :class:`~console.api.Api`, so a route cannot exist undocumented.
OpenAPI 3.0.3. Each operation says its least role in ``x-hub-role`` and in its
description; error responses share the ``Error`` schema.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .api import Api, Operation

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error_id", "message"],
    "properties": {
        "error_id": {"type": "string", "description": "Stable identifier to branch on"},
        "message": {"type": "string", "description": "What is wrong, for humans"},
        "errors": {
            "type": "array",
            "description": "Import only: every bad line",
            "items": {"type": "object", "properties": {
                "line": {"type": "integer"}, "message": {"type": "string"}}},
        },
    },
}

_ERROR_TEXT = {
    401: "Not authenticated: no, an invalid, an expired or a revoked token or session",
    403: "Authenticated, but the operator's role may not do this",
    404: "No such object",
    409: "Conflicts with the current state",
    413: "The body is too large",
    415: "The body's Content-Type is not accepted",
    422: "Invalid input; the message names the field",
    426: "A WebSocket upgrade is required",
    429: "Too many failed logins from this address; see Retry-After",
    503: "The database is busy; try again",
}


def _operation(op: Operation) -> dict[str, Any]:
    role_text = "Public." if op.role is None else \
        f"Needs the `{op.role.value}` role or higher."
    doc: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "description": f"{op.description}\n\n{role_text}".strip(),
        "tags": list(op.tags),
        "x-hub-role": None if op.role is None else op.role.value,
        "security": [] if op.role is None else [{"bearerAuth": []}, {"cookieAuth": []}],
    }
    if op.action is not None:
        doc["x-hub-audit-action"] = op.action
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True,
         "schema": {"type": "integer" if f"{{{name}:int}}" in op.path else "string"}}
        for name in op.path_params
    ]
    parameters += [
        {"name": p.name, "in": "query", "required": p.required, "schema": dict(p.schema),
         "description": p.description}
        for p in op.params
    ]
    if parameters:
        doc["parameters"] = parameters
    if op.body is not None:
        doc["requestBody"] = {
            "required": op.body_required,
            "content": {
                media: {"schema": dict(op.body) if media != "text/csv"
                        else {"type": "string"}}
                for media in op.body_media
            },
        }
    responses: dict[str, Any] = {}
    for status, (text, schema) in sorted(op.responses.items()):
        entry: dict[str, Any] = {"description": text}
        if schema is not None:
            entry["content"] = {op.response_media: {"schema": dict(schema)}}
        responses[str(status)] = entry
    for status in op.error_statuses():
        responses[str(status)] = {
            "description": _ERROR_TEXT.get(status, "Error"),
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    doc["responses"] = responses
    return doc


def build_openapi(operations: Sequence[Operation], *, title: str, version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    websockets: dict[str, Any] = {}
    for op in operations:
        if op.websocket:
            websockets[op.path] = {"summary": op.summary, "description": op.description,
                                   "security": [{"bearerAuth": []}, {"cookieAuth": []},
                                                {"tokenQuery": []}]}
        else:
            # Starlette's converters ({id:int}) are not part of an OpenAPI path template.
            path = re.sub(r"\{(\w+):\w+\}", r"{\1}", op.path)
            paths.setdefault(path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": title,
            "version": version,
            "description": (
                "REST API of the dispatch hub's console. Authenticate with "
                "`POST /api/auth/token` and send `Authorization: Bearer <token>`; the page "
                "uses the `hub_session` cookie from `POST /api/auth/login`. Errors are JSON "
                "`{error_id, message}`. Live events: WebSocket `/api/events`."),
        },
        "paths": dict(sorted(paths.items())),
        # OpenAPI 3.0 has no WebSockets: they are described here (a plain GET gets 426).
        "x-websockets": websockets,
        "components": {
            "schemas": {"Error": ERROR_SCHEMA},
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer"},
                "cookieAuth": {"type": "apiKey", "in": "cookie", "name": "hub_session"},
                "tokenQuery": {"type": "apiKey", "in": "query", "name": "token",
                               "description": "WebSockets only (browsers can't set headers)"},
            },
        },
    }


def openapi_route(api: Api, *, title: str, version: str) -> Route:
    """``GET /openapi.json`` over every operation the ``api`` knows when it is asked."""
    api.document(Operation("GET", "/openapi.json", "This document", None,
                           responses={200: ("The OpenAPI 3.0 description of the API",
                                            {"type": "object"})},
                           tags=("meta",), operation_id="openapi"))

    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(build_openapi(api.operations, title=title, version=version))

    return Route("/openapi.json", openapi, methods=["GET"], name="openapi")

"""Building API routes: authentication, roles, input checks, audit and OpenAPI in one place.

A feature declares each operation once with :meth:`Api.route`; the wrapper around its
handler then, in order:

1. authenticates the request (unless the route is public: ``role=None``) from the
   ``Authorization: Bearer`` header or the ``hub_session`` cookie: 401 if neither
   names a live session; a cookie-carried unsafe request from another origin is 403;
2. checks the operator's role against the route's least role: 403, saying which;
3. converts and checks query parameters and the body against the declared schemas
   (415 wrong content type, 413 too large, 422 with the offending field);
4. calls the handler with an :class:`ApiCall`; its return value becomes a JSON
   response (status ``call.status``) unless it is already a ``Response``;
5. turns any error into the JSON error body (``console.errors``);
6. for routes with an ``action``, appends to the audit log who did it, to which
   target (``call.target``, by default the path parameters), the result (``ok`` or
   the error_id) and the status, success or refusal alike.

Every operation is also recorded for ``/openapi.json`` (``console.openapi``).
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import QueryParams
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dispatch.audit import AuditLog

from .auth import SESSION_COOKIE, AuthService, Principal, Role
from .errors import ApiError, as_api_error, error_response, forbidden, unauthenticated
from .validation import Schema, convert_query, validate, without_lone_surrogates

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Param:
    """A query parameter."""

    name: str
    schema: Schema
    description: str = ""
    required: bool = False


@dataclass(frozen=True, slots=True)
class Operation:
    """One method on one path, as documented in OpenAPI."""

    method: str
    path: str
    summary: str
    role: Role | None
    """Least role needed; None = public."""
    action: str | None = None
    """Audit action name; None = not audited (reads)."""
    description: str = ""
    params: tuple[Param, ...] = ()
    body: Schema | None = None
    body_media: tuple[str, ...] = (JSON,)
    body_required: bool = True
    responses: Mapping[int, tuple[str, Schema | None]] = field(default_factory=dict)
    response_media: str = JSON
    tags: tuple[str, ...] = ()
    operation_id: str = ""
    documented_errors: tuple[int, ...] = ()
    """Error statuses the route can answer besides those implied by its declaration."""
    websocket: bool = False
    """A WebSocket endpoint: listed under ``x-websockets``, not ``paths``."""

    @property
    def path_params(self) -> list[str]:
        return [part[1:-1].split(":")[0] for part in self.path.split("/")
                if part.startswith("{") and part.endswith("}")]

    def error_statuses(self) -> list[int]:
        statuses = set(self.documented_errors)
        if self.role is not None:
            statuses |= {401, 403}
        if self.body is not None:
            statuses |= {413, 415, 422}
        if self.params:
            statuses.add(422)
        if self.path_params:
            statuses.add(404)
        return sorted(statuses - set(self.responses))


@dataclass
class ApiCall:
    """What a handler gets: the request, who sent it, and its checked input."""

    request: Request
    principal: Principal | None
    path: dict[str, str]
    query: dict[str, Any]
    body: Any = None
    """The parsed, checked JSON (or form) body; raw ``bytes`` for other media types."""
    media_type: str | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    """What the action was done to, for the audit log (default: the path parameters)."""
    detail: dict[str, Any] | None = None
    """Extra facts for the audit log."""

    @property
    def operator(self) -> Principal:
        """The authenticated operator (routes with a role always have one)."""
        assert self.principal is not None, "public route asked for its operator"
        return self.principal

    @property
    def source(self) -> str:
        client = self.request.client
        return client.host if client is not None else "unknown"


Handler = Callable[[ApiCall], Awaitable[Any]]


def credentials(conn: HTTPConnection, *, allow_query: bool = False) -> tuple[str, str] | None:
    """The token a request carries and how: ``(token, "bearer"|"query"|"cookie")``."""
    header = conn.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        return (token.strip(), "bearer") if scheme.lower() == "bearer" else ("", "bearer")
    if allow_query and "token" in conn.query_params:
        return conn.query_params["token"], "query"
    cookie = conn.cookies.get(SESSION_COOKIE)
    if cookie:
        return cookie, "cookie"
    return None


def same_origin(conn: HTTPConnection) -> bool:
    """False if the request names an ``Origin`` other than the host it was sent to."""
    origin = conn.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    parsed = urllib.parse.urlsplit(origin)
    return parsed.netloc.lower() == conn.headers.get("host", "").lower()


def authenticate(auth: AuthService | None, conn: HTTPConnection, *,
                 allow_query: bool = False) -> tuple[Principal, str]:
    """The operator a request is from and how it proved it; 401 ``ApiError`` if none."""
    if auth is None:
        raise unauthenticated("this hub has no operators configured")
    found = credentials(conn, allow_query=allow_query)
    if found is None:
        raise unauthenticated("authentication required: send 'Authorization: Bearer <token>'"
                              " (POST /api/auth/token) or log in (POST /api/auth/login)")
    token, how = found
    principal = auth.authenticate(token) if token else None
    if principal is None:
        raise unauthenticated(f"the {'session cookie' if how == 'cookie' else 'token'} is "
                              "invalid, expired or revoked: log in again")
    return principal, how


class Api:
    """Makes routes that share authentication, roles, validation, audit and OpenAPI."""

    def __init__(self, auth: AuthService | None, audit: AuditLog | None) -> None:
        self.auth = auth
        self.audit = audit
        self.operations: list[Operation] = []

    def document(self, operation: Operation) -> None:
        """Record an operation served by a route built elsewhere (health, WebSocket)."""
        self.operations.append(operation)

    def route(
        self,
        method: str,
        path: str,
        handler: Handler,
        *,
        summary: str,
        role: Role | None,
        action: str | None = None,
        description: str = "",
        params: Sequence[Param] = (),
        body: Schema | None = None,
        body_media: Sequence[str] = (JSON,),
        body_required: bool = True,
        responses: Mapping[int, tuple[str, Schema | None]] | None = None,
        response_media: str = JSON,
        tags: Sequence[str] = (),
        errors: Sequence[int] = (),
        max_body: int = MAX_BODY,
        name: str | None = None,
    ) -> Route:
        """A starlette ``Route`` for ``method path`` (see the module notes)."""
        operation = Operation(
            method=method.upper(), path=path, summary=summary, role=role, action=action,
            description=description, params=tuple(params), body=body,
            body_media=tuple(body_media), body_required=body_required,
            responses=dict(responses or {200: ("Success", None)}),
            response_media=response_media, tags=tuple(tags),
            operation_id=name or handler.__name__, documented_errors=tuple(errors))
        self.operations.append(operation)

        async def endpoint(request: Request) -> Response:
            return await self._handle(operation, handler, request, max_body)

        return Route(path, endpoint, methods=[operation.method], name=operation.operation_id)

    async def _handle(self, op: Operation, handler: Handler, request: Request,
                      max_body: int) -> Response:
        call = ApiCall(request, None, {k: str(v) for k, v in request.path_params.items()}, {})
        try:
            if op.role is not None:
                call.principal, how = authenticate(self.auth, request)
                if how == "cookie" and op.method not in _SAFE_METHODS and not same_origin(
                        request):
                    raise ApiError(403, "cross-origin", "a cookie-authenticated request from "
                                   "another origin is refused; use a bearer token")
                if not call.principal.role.at_least(op.role):
                    raise forbidden(
                        f"{op.method} {op.path} needs the {op.role.value} role or higher; "
                        f"{call.principal.operator} is a {call.principal.role.value}")
            call.query = self._query(op, request.query_params)
            if op.body is not None:
                call.body, call.media_type = await self._body(op, request, max_body)
            result = await handler(call)
            if isinstance(result, Response):
                response = result
            elif call.status == 204:
                response = Response(status_code=204)
            else:
                response = JSONResponse(result, status_code=call.status)
            for key, value in call.headers.items():
                response.headers[key] = value
            response.headers.setdefault("cache-control", "no-store")
        except Exception as exc:
            response = error_response(exc)
        if op.action is not None and call.principal is not None and self.audit is not None:
            self._audit(op, call, response.status_code, None if response.status_code < 400
                        else _error_id(response))
        return response

    def _audit(self, op: Operation, call: ApiCall, status: int, error_id: str | None) -> None:
        assert call.principal is not None and op.action is not None and self.audit is not None
        target = call.target
        if target is None and call.path:
            target = ",".join(call.path.values())
        try:
            self.audit.record(operator=call.principal.operator, role=call.principal.role.value,
                              action=op.action, target=target,
                              result=error_id or "ok", status=status, source=call.source,
                              detail=call.detail)
        except Exception:
            # The action happened (or was refused) already; a lost audit line is logged.
            log.exception("audit: cannot record %s by %s", op.action, call.principal.operator)

    @staticmethod
    def _query(op: Operation, query: QueryParams) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for param in op.params:
            if param.name in query:
                values[param.name] = convert_query(query[param.name], param.schema,
                                                   f"query parameter {param.name!r}")
            elif param.required:
                raise ApiError(422, "invalid-input",
                               f"query parameter {param.name!r} is required")
        return values

    @staticmethod
    async def _body(op: Operation, request: Request, limit: int) -> tuple[Any, str | None]:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower() or None
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, "body-too-large", f"the body is larger than {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "body-too-large", f"the body is larger than {limit} bytes")
            chunks.append(chunk)
        raw = b"".join(chunks)
        if not raw and not op.body_required:
            return None, media
        if media not in op.body_media:
            raise ApiError(415, "unsupported-media-type",
                           f"send the body as {' or '.join(op.body_media)}"
                           f" (got {media or 'no Content-Type'})")
        if media == JSON:
            try:
                body: Any = without_lone_surrogates(json.loads(raw))
            except (UnicodeDecodeError, ValueError) as exc:
                raise ApiError(422, "invalid-json", f"the body is not valid JSON: {exc}") from None
        elif media == FORM:
            try:
                pairs = urllib.parse.parse_qsl(raw.decode(), keep_blank_values=True,
                                               strict_parsing=bool(raw))
            except (UnicodeDecodeError, ValueError):
                raise ApiError(422, "invalid-form", "the form body is malformed") from None
            body = dict(pairs)
        else:
            return raw, media
        assert op.body is not None
        validate(body, op.body)
        return body, media


def _error_id(response: Response) -> str:
    try:
        data = json.loads(bytes(response.body))
        return str(data.get("error_id", f"http-{response.status_code}"))
    except (ValueError, AttributeError):
        return f"http-{response.status_code}"


def require_role(call: ApiCall, role: Role, why: str) -> None:
    """A finer check inside a handler (e.g. fixed groups need a supervisor): 403 if not."""
    principal = call.operator
    if not principal.role.at_least(role):
        raise forbidden(f"{why} needs the {role.value} role or higher; "
                        f"{principal.operator} is a {principal.role.value}")


__all__ = ["Api", "ApiCall", "Operation", "Param", "as_api_error", "authenticate",
           "credentials", "require_role", "same_origin"]

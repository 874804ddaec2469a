"""Logging in and out: ``/api/auth/token``, ``/api/auth/login``, ``/api/auth/logout``, ``/me``.

``POST /api/auth/token`` gives a bearer token for API clients. ``POST /api/auth/login``
(JSON, or an HTML form) opens a page session in the ``hub_session`` cookie: HttpOnly
(scripts can't read it), SameSite=Strict (other sites can't ride it), Secure when the
page was served over TLS; a form login is answered with a redirect to ``next``. Both
are throttled per source address and audited (``auth.login``, success or failure).
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute

from dispatch.audit import AuditLog

from .api import FORM, JSON, Api, ApiCall
from .auth import SESSION_COOKIE, AuthService, IssuedSession, Role
from .errors import ApiError

CREDENTIALS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["username", "password"],
    "additionalProperties": False,
    "properties": {
        "username": {"type": "string", "minLength": 1, "maxLength": 64},
        "password": {"type": "string", "minLength": 1, "maxLength": 256},
    },
}
LOGIN_SCHEMA: dict[str, Any] = {
    **CREDENTIALS_SCHEMA,
    "properties": {
        **CREDENTIALS_SCHEMA["properties"],
        "next": {"type": "string", "maxLength": 2048,
                 "description": "Form logins: where to go next (a path on this site)"},
    },
}
OPERATOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "role": {"type": "string", "enum": ["dispatcher", "supervisor", "admin"]},
        "display_name": {"type": "string", "nullable": True},
        "created_at": {"type": "number"},
    },
}
TOKEN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "token": {"type": "string", "description": "Send as 'Authorization: Bearer <token>'"},
        "expires_at": {"type": "number", "description": "Unix time"},
        "operator": OPERATOR_SCHEMA,
    },
}
ME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "operator": OPERATOR_SCHEMA,
        "session": {"type": "object", "properties": {
            "kind": {"type": "string"}, "expires_at": {"type": "number"}}},
    },
}


def _safe_next(value: object) -> str:
    """A local path to redirect to; anything else (another site, a scheme) becomes '/'."""
    if isinstance(value, str) and value.startswith("/") and not value.startswith("//") \
            and "\\" not in value and not any(ord(c) < 32 for c in value):
        return value
    return "/"


def auth_routes(api: Api, auth: AuthService, audit: AuditLog | None) -> list[BaseRoute]:
    async def issue(call: ApiCall, kind: str, action: str) -> IssuedSession:
        username = call.body.get("username")
        try:
            issued = await auth.login(username, call.body.get("password"),
                                      source=call.source, kind=kind)
        except ApiError as exc:
            if audit is not None and exc.status == 401:
                audit.record(operator=str(username)[:64], action=action, result=exc.error_id,
                             status=exc.status, source=call.source)
            raise
        if audit is not None:
            audit.record(operator=issued.principal.operator,
                         role=issued.principal.role.value, action=action, result="ok",
                         status=200, source=call.source, detail={"kind": kind})
        return issued

    def operator_dict(name: str) -> dict[str, Any]:
        return auth.get_operator(name).to_dict()

    async def create_token(call: ApiCall) -> Any:
        issued = await issue(call, "token", "auth.token")
        return {"token": issued.token, "expires_at": issued.principal.expires_at,
                "operator": operator_dict(issued.principal.operator)}

    async def login(call: ApiCall) -> Response:
        issued = await issue(call, "cookie", "auth.login")
        principal = issued.principal
        response: Response
        if call.media_type == FORM:
            response = RedirectResponse(_safe_next(call.body.get("next")), status_code=303)
        else:
            response = JSONResponse({"operator": operator_dict(principal.operator),
                                     "expires_at": principal.expires_at})
        response.set_cookie(SESSION_COOKIE, issued.token, max_age=int(auth.ttl), path="/",
                            httponly=True, samesite="strict",
                            secure=call.request.url.scheme in ("https", "wss"))
        return response

    async def logout(call: ApiCall) -> Response:
        auth.revoke(call.operator.session_id)
        response = Response(status_code=204)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                               secure=call.request.url.scheme in ("https", "wss"))
        return response

    async def me(call: ApiCall) -> Any:
        principal = call.operator
        return {"operator": operator_dict(principal.operator),
                "session": {"kind": principal.kind, "expires_at": principal.expires_at}}

    tags = ("auth",)
    return [
        api.route("POST", "/api/auth/token", create_token, role=None, tags=tags,
                  summary="Log in: get a bearer token",
                  description="Throttled per source address after repeated failures (429).",
                  body=CREDENTIALS_SCHEMA, errors=(401, 429),
                  responses={200: ("A new token, valid until expires_at", TOKEN_SCHEMA)}),
        api.route("POST", "/api/auth/login", login, role=None, tags=tags,
                  summary="Log in the page: set the session cookie",
                  description="JSON gets the operator back; an HTML form (with an optional "
                              "`next` path) gets a 303 redirect to it.",
                  body=LOGIN_SCHEMA, body_media=(JSON, FORM), errors=(401, 429),
                  responses={200: ("Logged in; the hub_session cookie is set", ME_SCHEMA),
                             303: ("Form login: logged in, go to next", None)}),
        api.route("POST", "/api/auth/logout", logout, role=Role.DISPATCHER,
                  action="auth.logout", tags=tags, summary="Log out: revoke this token/session",
                  responses={204: ("Revoked; the cookie is cleared", None)}),
        api.route("GET", "/api/auth/me", me, role=Role.DISPATCHER, tags=tags,
                  summary="Who am I", responses={200: ("The operator and session", ME_SCHEMA)}),
    ]

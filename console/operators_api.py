"""Managing operators (``/api/operators``) and SIP users (``/api/users``): admins only.

Passwords are hashed in a worker thread (argon2id is deliberately slow). Changing an
operator's password revokes its sessions; removing it revokes them and closes its
event streams. An admin cannot remove or demote itself (409): a hub must not be left
without the operator who could repair it. The SIP users are the hub store's; their
errors map by ``error_id`` (``console.errors``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

from starlette.routing import BaseRoute

from dispatch.directory import DirectoryService

from .api import Api, ApiCall
from .auth import AuthService, Role, validate_password
from .auth_api import OPERATOR_SCHEMA
from .errors import ApiError
from .validation import name_schema, text_schema


class UserStore(Protocol):
    """The SIP-user part of ``hub.store.Store``."""

    def add_user(self, name: str, password: str, display_name: str | None = None) -> Any: ...

    def list_users(self) -> list[Any]: ...

    def get_user(self, name: str) -> Any: ...

    def remove_user(self, name: str) -> None: ...

    def count_bindings(self, now: float, aor: str | None = None) -> int: ...


NEW_OPERATOR: dict[str, Any] = {
    "type": "object",
    "required": ["name", "password", "role"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 64,
                 "pattern": "^[A-Za-z0-9._~@-]+$"},
        "password": {"type": "string", "minLength": 8, "maxLength": 256},
        "role": {"type": "string", "enum": ["dispatcher", "supervisor", "admin"]},
        "display_name": text_schema(128),
    },
}
OPERATOR_CHANGES: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "password": {"type": "string", "minLength": 8, "maxLength": 256},
        "role": {"type": "string", "enum": ["dispatcher", "supervisor", "admin"]},
        "display_name": text_schema(128),
    },
}
OPERATORS: dict[str, Any] = {"type": "object", "properties": {
    "operators": {"type": "array", "items": OPERATOR_SCHEMA}}}
USER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "display_name": {"type": "string", "nullable": True},
        "created_at": {"type": "number"},
        "contacts": {"type": "integer", "description": "Live registrations"},
    },
}
NEW_USER: dict[str, Any] = {
    "type": "object",
    "required": ["name", "password"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 64,
                 "pattern": "^[A-Za-z0-9._~-]+$"},
        "password": {"type": "string", "minLength": 1, "maxLength": 256},
        "display_name": {**name_schema(128), "nullable": True},
    },
}


def operators_routes(api: Api, auth: AuthService) -> list[BaseRoute]:
    async def list_operators(call: ApiCall) -> Any:
        return {"operators": [o.to_dict() for o in auth.list_operators()]}

    async def create_operator(call: ApiCall) -> Any:
        body = call.body
        call.target = body["name"]
        validate_password(body["password"])
        password_hash = await asyncio.to_thread(auth.hash_password, body["password"])
        operator = auth.add_operator(body["name"], body["role"], password_hash=password_hash,
                                     display_name=body.get("display_name"))
        call.status = 201
        call.detail = {"role": operator.role.value}
        return operator.to_dict()

    async def get_operator(call: ApiCall) -> Any:
        return auth.get_operator(call.path["name"]).to_dict()

    async def update_operator(call: ApiCall) -> Any:
        name = call.path["name"]
        body = call.body
        auth.get_operator(name)
        if name == call.operator.operator and body.get("role", "admin") != "admin":
            raise ApiError(409, "self-demotion", "you cannot take the admin role from yourself:"
                           " ask another admin")
        password_hash = None
        if "password" in body:
            password_hash = await asyncio.to_thread(auth.hash_password, body["password"])
        changes: dict[str, Any] = {}
        if "display_name" in body:
            changes["display_name"] = body["display_name"]
        operator = auth.update_operator(name, role=body.get("role"),
                                        password_hash=password_hash, **changes)
        call.detail = {"changed": sorted(body)}
        return operator.to_dict()

    async def remove_operator(call: ApiCall) -> Any:
        name = call.path["name"]
        if name == call.operator.operator:
            raise ApiError(409, "self-removal", "you cannot remove yourself: ask another admin")
        call.detail = {"sessions_revoked": auth.remove_operator(name)}
        call.status = 204
        return None

    tags = ("operators",)
    one = {200: ("The operator", OPERATOR_SCHEMA)}
    return [
        api.route("GET", "/api/operators", list_operators, role=Role.ADMIN, tags=tags,
                  summary="List operators", responses={200: ("Every operator", OPERATORS)}),
        api.route("POST", "/api/operators", create_operator, role=Role.ADMIN,
                  action="operator.create", tags=tags, summary="Add an operator",
                  body=NEW_OPERATOR, errors=(409,),
                  responses={201: ("The new operator", OPERATOR_SCHEMA)}),
        api.route("GET", "/api/operators/{name}", get_operator, role=Role.ADMIN, tags=tags,
                  summary="One operator", responses=one),
        api.route("PATCH", "/api/operators/{name}", update_operator, role=Role.ADMIN,
                  action="operator.update", tags=tags,
                  summary="Change an operator's role, password or display name",
                  description="A new password revokes the operator's sessions.",
                  body=OPERATOR_CHANGES, errors=(409,), responses=one),
        api.route("DELETE", "/api/operators/{name}", remove_operator, role=Role.ADMIN,
                  action="operator.remove", tags=tags,
                  summary="Remove an operator and revoke its sessions", errors=(409,),
                  responses={204: ("Removed", None)}),
    ]


def users_routes(api: Api, store: UserStore, directory: DirectoryService | None = None,
                 clock: Callable[[], float] = time.time) -> list[BaseRoute]:
    def user_dict(user: Any) -> dict[str, Any]:
        return {"name": user.name, "display_name": user.display_name,
                "created_at": user.created_at,
                "contacts": store.count_bindings(clock(), user.name)}

    async def list_users(call: ApiCall) -> Any:
        return {"users": [user_dict(u) for u in store.list_users()]}

    async def create_user(call: ApiCall) -> Any:
        body = call.body
        call.target = body["name"]
        user = store.add_user(body["name"], body["password"], body.get("display_name"))
        if directory is not None:
            directory.user_changed(user.name, "created")
        call.status = 201
        return user_dict(user)

    async def get_user(call: ApiCall) -> Any:
        user = store.get_user(call.path["name"])
        if user is None:
            raise ApiError(404, "user-not-found", f"no SIP user {call.path['name']!r}")
        return user_dict(user)

    async def remove_user(call: ApiCall) -> Any:
        store.remove_user(call.path["name"])
        if directory is not None:
            directory.user_changed(call.path["name"], "removed")
        call.status = 204
        return None

    tags = ("users",)
    users = {"type": "object", "properties": {"users": {"type": "array", "items": USER_SCHEMA}}}
    return [
        api.route("GET", "/api/users", list_users, role=Role.ADMIN, tags=tags,
                  summary="List SIP users", responses={200: ("Every SIP user", users)}),
        api.route("POST", "/api/users", create_user, role=Role.ADMIN, action="user.create",
                  tags=tags, summary="Add a SIP user (it appears in the directory at once)",
                  body=NEW_USER, errors=(409,),
                  responses={201: ("The new user", USER_SCHEMA)}),
        api.route("GET", "/api/users/{name}", get_user, role=Role.ADMIN, tags=tags,
                  summary="One SIP user", responses={200: ("The user", USER_SCHEMA)}),
        api.route("DELETE", "/api/users/{name}", remove_user, role=Role.ADMIN,
                  action="user.remove", tags=tags,
                  summary="Remove a SIP user, its registrations and its directory endpoint",
                  responses={204: ("Removed", None)}),
    ]

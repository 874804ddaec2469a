"""The console's ASGI application: one factory, the composition root of its routes.

``create_app`` takes the services and builds every feature's routes around one
:class:`~console.api.Api` (authentication, roles, input checks, audit, OpenAPI):

* always: ``GET /api/health`` (public) and ``GET /openapi.json`` (public);
* with ``auth``: ``/api/auth/*``, ``/api/operators`` and, with ``users``,
  ``/api/users``; with ``audit`` too: ``GET /api/audit``;
* with ``directory``: ``/api/directory/*``;
* with ``bus``: the ``/api/events`` WebSocket, its snapshot made of ``directory`` and
  the ``snapshot`` parts given (``{"calls": ..., "rooms": ...}``).

**Adding a feature** (calls, incidents, ...): write ``console/<feature>_api.py`` with a
function taking the ``Api`` (and your service) and returning starlette routes built
with ``api.route(...)``, then pass it in ``features`` from the composition root::

    def calls_routes(api: Api, calls: CallService) -> list[BaseRoute]:
        async def hangup(call: ApiCall) -> Any:
            calls.end(call.path["call_id"])      # errors with status/error_id map to JSON
            return calls.get(call.path["call_id"]).as_dict()
        return [api.route("POST", "/api/calls/{call_id}/hangup", hangup,
                          role=Role.DISPATCHER, action="call.hangup",
                          summary="Hang up a call", responses={200: ("The call", CALL)})]

    create_app(hub, auth=auth, audit=audit, directory=directory, bus=bus,
               features=[lambda api: calls_routes(api, calls)])

Routes made with ``api.route`` are authenticated, role-checked, audited (when given an
``action``: who, what, ``call.target``, result) and listed in ``/openapi.json``.
``extra_routes`` takes plain starlette routes as they are (nothing added, nothing
documented): prefer ``features``.

Unknown paths and methods answer JSON errors (404 ``route-not-found``, 405
``method-not-allowed``) like the rest of the API.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bridges.events import EventBus
from console.health import HealthSource, health_route
from dispatch.audit import AuditLog
from dispatch.directory import DirectoryService

from .api import Api, Operation
from .audit_api import audit_routes
from .auth import AuthService
from .auth_api import auth_routes
from .directory_api import directory_routes
from .errors import ApiError
from .events_ws import SnapshotPart, events_routes
from .openapi import openapi_route
from .operators_api import UserStore, operators_routes, users_routes

__all__ = ["Feature", "HealthSource", "create_app"]

Feature = Callable[[Api], Iterable[BaseRoute]]
"""A feature's routes, built with the app's ``Api``."""


def _package_version() -> str:
    try:
        return version("dispatch-hub")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error = ApiError(404, "route-not-found", f"no route {request.url.path}")
    elif exc.status_code == 405:
        # Starlette's Allow names only the first route matching the path; a path served
        # by several routes (one per method) allows all of theirs.
        allowed: set[str] = set()
        for route in request.app.router.routes:
            if isinstance(route, Route) and route.path_regex.match(request.url.path):
                allowed |= set(route.methods or ())
        error = ApiError(405, "method-not-allowed",
                         f"{request.method} is not allowed on {request.url.path}: use "
                         f"{', '.join(sorted(allowed))}",
                         headers={"allow": ", ".join(sorted(allowed))})
    else:
        error = ApiError(exc.status_code, f"http-{exc.status_code}", str(exc.detail))
    return error.response()


def create_app(
    state: HealthSource,
    *,
    version: str | None = None,
    clock: Callable[[], float] = time.monotonic,
    auth: AuthService | None = None,
    audit: AuditLog | None = None,
    directory: DirectoryService | None = None,
    users: UserStore | None = None,
    bus: EventBus | None = None,
    snapshot: Mapping[str, SnapshotPart] | None = None,
    features: Sequence[Feature] = (),
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """Build the console application around the running hub's ``state`` and services.

    ``version`` defaults to the installed package's; uptime is measured with
    ``clock`` from the moment the application is created.
    """
    app_version = _package_version() if version is None else version
    api = Api(auth, audit)
    routes: list[BaseRoute] = [
        health_route(state, version=app_version, clock=clock, started_at=clock()),
    ]
    api.document(Operation(
        "GET", "/api/health", "Liveness and counters", None, tags=("meta",),
        operation_id="health",
        responses={200: ("Healthy", {"type": "object"}),
                   503: ("Degraded or failing", {"type": "object"})}))
    if auth is not None:
        routes += auth_routes(api, auth, audit)
        routes += operators_routes(api, auth)
        if users is not None:
            routes += users_routes(api, users, directory)
        if audit is not None:
            routes += audit_routes(api, audit)
    if directory is not None:
        routes += directory_routes(api, directory)
    if bus is not None:
        parts: dict[str, SnapshotPart] = {}
        if directory is not None:
            parts["directory"] = directory.snapshot
        parts.update(snapshot or {})
        routes += events_routes(api, auth, bus, parts)
    for feature in features:
        routes += list(feature(api))
    routes += list(extra_routes)
    routes.append(openapi_route(api, title="Dispatch hub API", version=app_version))
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    app.state.hub = state
    app.state.api = api
    services: dict[str, Any] = {"auth": auth, "audit": audit, "directory": directory,
                                "bus": bus}
    app.state.services = services
    return app

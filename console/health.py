"""``GET /api/health``: liveness and a few counters, for load balancers and humans."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

logger = logging.getLogger(__name__)


class HealthSource(Protocol):
    """What the running hub tells the health endpoint.

    ``health()`` is called once per request, on the event loop: it must be cheap and
    must not block. The mapping is merged into the response body; the hub is
    expected to provide at least::

        {"sip": {...listeners, transactions...}, "calls": int, "registrations": int}

    It may also set ``"status"`` to something other than ``"ok"`` (e.g.
    ``"degraded"``), which turns the response into a 503.
    """

    def health(self) -> Mapping[str, Any]: ...


def health_route(
    source: HealthSource, version: str, clock: Callable[[], float], started_at: float
) -> Route:
    """The route answering ``GET /api/health`` (HEAD too) from ``source``."""

    async def health(request: Request) -> JSONResponse:
        body: dict[str, Any] = {
            "status": "ok",
            "version": version,
            "uptime_s": round(max(0.0, clock() - started_at), 3),
        }
        try:
            body.update(source.health())
        except Exception:
            # A health check must answer, and say it is unhealthy, not crash.
            logger.exception("health source failed")
            body.update(status="error", error_id="health-source-failed")
        code = 200 if body["status"] == "ok" else 503
        return JSONResponse(body, status_code=code, headers={"cache-control": "no-store"})

    return Route("/api/health", health, methods=["GET"], name="health")

"""The console's ASGI application: one factory, the composition root of its routes."""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version

from starlette.applications import Starlette

from console.health import HealthSource, health_route

__all__ = ["HealthSource", "create_app"]


def _package_version() -> str:
    try:
        return version("dispatch-hub")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def create_app(
    state: HealthSource,
    *,
    version: str | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Starlette:
    """Build the console application around the running hub's ``state``.

    ``version`` defaults to the installed package's; uptime is measured with
    ``clock`` from the moment the application is created.
    """
    app = Starlette(
        routes=[
            health_route(
                state,
                version=_package_version() if version is None else version,
                clock=clock,
                started_at=clock(),
            ),
        ],
    )
    app.state.hub = state
    return app

"""The switchboard page: static files, no build step (served by ``hub serve``)."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"


async def _index(request: Request) -> Response:
    # The page holds no data: it signs in and asks the API, so it may be public.
    return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})


def page_routes() -> list[BaseRoute]:
    return [
        Route("/", _index, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]

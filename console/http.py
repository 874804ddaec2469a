"""Serve an ASGI app with uvicorn inside the hub's running event loop.

``uvicorn.Server.serve()`` normally installs SIGINT/SIGTERM handlers and, when a
signal arrives, re-raises it after shutting down. The hub owns those signals (it
has SIP dialogs and media to wind down first), so the server here captures none;
the hub calls ``stop()``. We also bind the socket ourselves: bind errors surface
as a plain ``OSError`` from ``start_http`` (uvicorn would ``sys.exit``), and port 0
gives an ephemeral port we can report. Logging is left to the hub (uvicorn's
dictConfig is not applied) and the access log is off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator

import uvicorn
from starlette.types import ASGIApp

logger = logging.getLogger(__name__)

#: Seconds open connections get to finish once ``stop()`` is called.
GRACEFUL_SHUTDOWN_S = 5.0


class _HubServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host, and says when it is up."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # Deliberately empty: SIGINT/SIGTERM belong to the hub.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()


class HttpServer:
    """Handle on a running HTTP server; ``await stop()`` shuts it down."""

    def __init__(self, server: _HubServer, task: asyncio.Task[None], host: str, port: int) -> None:
        self._server = server
        self._task = task
        self.host = host
        """The address actually bound."""
        self.port = port
        """The port actually bound (useful when 0 was asked for)."""

    @property
    def url(self) -> str:
        """Base URL of the server, e.g. ``http://127.0.0.1:8080``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        """True until the server has stopped (by ``stop()`` or by failing)."""
        return not self._task.done()

    async def stop(self) -> None:
        """Stop accepting, let open requests finish (bounded), and return. Idempotent."""
        self._server.should_exit = True
        await asyncio.shield(self._task)


async def _bind(bind: str, port: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        bind or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    if not infos:
        raise OSError(f"cannot resolve bind address {bind!r}")
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def start_http(
    app: ASGIApp,
    bind: str,
    port: int,
    *,
    log_level: str = "warning",
) -> HttpServer:
    """Serve ``app`` on ``(bind, port)`` in the running loop; returns once it listens.

    Raises ``OSError`` if the address cannot be bound, ``RuntimeError`` if uvicorn
    fails to start.
    """
    sock = await _bind(bind, port)
    host, bound_port = sock.getsockname()[:2]
    config = uvicorn.Config(
        app,
        log_config=None,
        log_level=log_level,
        access_log=False,
        lifespan="off",  # the hub starts and stops its parts itself
        server_header=False,
        # Events are small and go to many consoles: compressing each console's copy
        # separately cost more CPU than the bytes it saved on a LAN.
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=int(GRACEFUL_SHUTDOWN_S),
    )
    server = _HubServer(config)

    async def serve() -> None:
        try:
            await server.serve(sockets=[sock])
        except SystemExit as exc:
            # uvicorn exits the process on some startup failures; not ours to exit.
            raise RuntimeError(f"HTTP server failed to start (exit {exc.code})") from None
        finally:
            sock.close()

    task = asyncio.create_task(serve(), name=f"http {host}:{bound_port}")
    ready = asyncio.create_task(server.ready.wait())
    try:
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        server.should_exit = True
        ready.cancel()
        await asyncio.gather(task, ready, return_exceptions=True)
        raise
    if not ready.done():
        ready.cancel()
        await asyncio.gather(ready, return_exceptions=True)
        await task  # raises the startup error
        raise RuntimeError("HTTP server stopped during startup")
    logger.info("HTTP console listening on %s:%d", host, bound_port)
    return HttpServer(server, task, host, bound_port)

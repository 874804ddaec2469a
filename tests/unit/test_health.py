"""``GET /api/health``, in-process and through the real uvicorn runner."""

from __future__ import annotations

import asyncio
import signal
import socket
import warnings
from collections.abc import Mapping
from typing import Any

import httpx
import pytest
from starlette.exceptions import StarletteDeprecationWarning

from console.app import create_app
from console.http import start_http

with warnings.catch_warnings():
    # starlette >= 1.x prefers httpx2 for its TestClient and warns when it falls
    # back to httpx (the declared dev dependency). Narrowly silence just that.
    warnings.filterwarnings(
        "ignore",
        message="Using `httpx` with `starlette.testclient`",
        category=StarletteDeprecationWarning,
    )
    from starlette.testclient import TestClient

#: The one unit every timeout in these tests scales from.
TIMEOUT_S = 5.0


class FakeHub:
    def __init__(self, snapshot: Mapping[str, Any] | None = None) -> None:
        self.snapshot: Mapping[str, Any] = snapshot or {
            "sip": {"udp": "0.0.0.0:5060", "transactions": 2},
            "calls": 1,
            "registrations": 3,
        }

    def health(self) -> Mapping[str, Any]:
        return self.snapshot


class BrokenHub:
    def health(self) -> Mapping[str, Any]:
        raise RuntimeError("boom")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_health_ok() -> None:
    clock = Clock()
    app = create_app(FakeHub(), version="1.2.3", clock=clock)
    clock.now += 12.5
    with TestClient(app) as client:
        response = client.get("/api/health")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == {
        "status": "ok",
        "version": "1.2.3",
        "uptime_s": 12.5,
        "sip": {"udp": "0.0.0.0:5060", "transactions": 2},
        "calls": 1,
        "registrations": 3,
    }


def test_health_default_version_is_the_package_version() -> None:
    import hub

    with TestClient(create_app(FakeHub())) as client:
        body = client.get("/api/health").json()
    assert body["version"] == hub.__version__
    assert 0 <= body["uptime_s"] < TIMEOUT_S


def test_health_degraded_is_503() -> None:
    hub = FakeHub({"status": "degraded", "sip": {}, "calls": 0, "registrations": 0})
    with TestClient(create_app(hub, version="x")) as client:
        response = client.get("/api/health")
    assert response.status_code == 503
    assert response.json()["status"] == "degraded"


def test_health_source_failure_is_503_not_500(caplog: pytest.LogCaptureFixture) -> None:
    with TestClient(create_app(BrokenHub(), version="x")) as client:
        response = client.get("/api/health")
    assert response.status_code == 503
    assert response.json()["status"] == "error"
    assert response.json()["error_id"] == "health-source-failed"
    assert "health source failed" in caplog.text


def test_health_is_get_only_and_other_paths_404() -> None:
    with TestClient(create_app(FakeHub(), version="x")) as client:
        assert client.head("/api/health").status_code == 200
        assert client.post("/api/health").status_code == 405
        assert client.get("/api/nope").status_code == 404


async def test_health_through_uvicorn_leaves_signals_alone() -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    async with asyncio.timeout(TIMEOUT_S):
        server = await start_http(create_app(FakeHub(), version="9"), "127.0.0.1", 0)
        try:
            assert server.host == "127.0.0.1" and server.port > 0
            assert server.running
            assert {sig: signal.getsignal(sig) for sig in before} == before
            async with httpx.AsyncClient(base_url=server.url) as client:
                response = await client.get("/api/health")
            assert response.status_code == 200
            assert response.json()["registrations"] == 3
        finally:
            await server.stop()
        assert not server.running
        await server.stop()  # idempotent
    assert {sig: signal.getsignal(sig) for sig in before} == before
    # The port is free again.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", server.port))


async def test_start_http_on_a_busy_port_raises_oserror() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            await start_http(create_app(FakeHub(), version="x"), "127.0.0.1", port)

"""The console through a real ``hub serve`` process: log in, read the directory, watch a
baresip phone's lamp on the ``/api/events`` WebSocket go offline -> idle -> offline."""

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.peers import scaled
from tests.peers.baresip import PhoneFactory
from tests.peers.ports import free_tcp_port, free_udp_port

pytestmark = pytest.mark.peers

HUB = [sys.executable, "-m", "hub"]


def _hub(*args: str, data: Path) -> None:
    done = subprocess.run([*HUB, *args, "--data-dir", str(data)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr


async def _serve(data: Path) -> tuple[asyncio.subprocess.Process, int, int]:
    sip, http = free_udp_port(), free_tcp_port()
    proc = await asyncio.create_subprocess_exec(
        *HUB, "serve", "--data-dir", str(data), "--bind", "127.0.0.1", "--sip-port", str(sip),
        "--http-port", str(http), "--rtp-ports", "26000-26999",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    while True:
        line = await asyncio.wait_for(proc.stderr.readline(), timeout=scaled(15))
        assert line, "hub serve exited before it was ready"
        if line.startswith(b"hub: SIP"):
            return proc, sip, http


async def _stop(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    assert proc.stderr is not None
    rest = await asyncio.wait_for(proc.stderr.read(), timeout=scaled(15))
    return await proc.wait(), rest.decode(errors="replace")


async def _next(ws: ClientConnection, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The next message on the socket that ``match``es (others are skipped)."""
    async with asyncio.timeout(scaled(15)):
        while True:
            message: dict[str, Any] = json.loads(await ws.recv())
            if match(message):
                return message


def _lamp(endpoint: str, status: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: (m.get("type") == "EndpointStatusChanged"
                      and m["endpoint_id"] == endpoint and m["new"] == status)


async def test_console_login_directory_and_live_lamps(tmp_path: Path,
                                                      phone_factory: PhoneFactory) -> None:
    data = tmp_path / "data"
    _hub("user", "add", "alice", "--password", "pw-alice", "--display-name", "Alice", data=data)
    _hub("operator", "add", "op", "--password", "op-pass-1", "--role", "dispatcher", data=data)
    proc, sip, http = await _serve(data)
    base = f"http://127.0.0.1:{http}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=scaled(10)) as client:
            refused = await client.post("/api/auth/token",
                                        json={"username": "op", "password": "wrong-pw"})
            assert refused.status_code == 401
            login = await client.post("/api/auth/token",
                                      json={"username": "op", "password": "op-pass-1"})
            assert login.status_code == 200, login.text
            token = login.json()["token"]
            auth = {"Authorization": f"Bearer {token}"}
            assert (await client.get("/api/directory")).status_code == 401
            directory = (await client.get("/api/directory", headers=auth)).json()
            assert [(p["id"], p["name"], p["status"]) for p in directory["people"]] == [
                ("user:alice", "Alice", "offline")]
            # A dispatcher may not read the audit log.
            assert (await client.get("/api/audit", headers=auth)).status_code == 403

            with pytest.raises(ConnectionClosed) as closed:
                async with connect(f"ws://127.0.0.1:{http}/api/events") as anonymous:
                    await asyncio.wait_for(anonymous.recv(), timeout=scaled(10))
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401

            async with connect(f"ws://127.0.0.1:{http}/api/events",
                               additional_headers=auth) as ws:
                snapshot = json.loads(await asyncio.wait_for(ws.recv(), timeout=scaled(10)))
                assert snapshot["type"] == "snapshot"
                assert {e["id"]: e["status"] for e in snapshot["directory"]["endpoints"]} == {
                    "sip:alice": "offline"}
                assert "calls" in snapshot and "rooms" in snapshot

                phone = await phone_factory("alice", password="pw-alice",
                                            registrar=("127.0.0.1", sip))
                await phone.wait_registered()
                registered = await _next(ws, lambda m: m.get("type") == "RegistrationChanged")
                assert registered["user"] == "alice" and registered["contacts"] == 1
                lamp = await _next(ws, _lamp("sip:alice", "idle"))
                assert (lamp["person_id"], lamp["old"]) == ("user:alice", "offline")
                directory = (await client.get("/api/directory", headers=auth)).json()
                assert directory["endpoints"][0]["status"] == "idle"

                await phone.stop()  # baresip unregisters on the way out
                await _next(ws, _lamp("sip:alice", "offline"))

            assert (await client.post("/api/auth/logout", headers=auth)).status_code == 204
            assert (await client.get("/api/directory", headers=auth)).status_code == 401
    finally:
        code, log = await _stop(proc)
    assert code == 0, log
    assert "Traceback" not in log, log

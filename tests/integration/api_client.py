"""What the API tests do over and over: sign an operator in, wait for a state."""

import asyncio
import time
from typing import Any

import httpx

from hub.server import Hub
from tests.peers import scaled

PASSWORD = "op-password-1"


async def bearer(client: httpx.AsyncClient, username: str = "op",
                 password: str = PASSWORD) -> dict[str, str]:
    """The ``Authorization`` header of a fresh token for an existing operator."""
    resp = await client.post("/api/auth/token",
                             json={"username": username, "password": password})
    assert resp.status_code == 200, resp.text
    return {"Authorization": f"Bearer {resp.json()['token']}"}


async def operator(client: httpx.AsyncClient, hub: Hub, role: str) -> dict[str, str]:
    """A new operator ``op-ROLE`` with that role, signed in."""
    hub.auth.add_operator(f"op-{role}", role, password=PASSWORD)
    return await bearer(client, f"op-{role}")


async def poll(client: httpx.AsyncClient, headers: dict[str, str], path: str, done: Any,
               timeout: float = 10.0) -> Any:
    """GET ``path`` until ``done(body)``; fails with the last body after ``timeout``."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        body = (await client.get(path, headers=headers)).json()
        if done(body):
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.1)

"""Call control through the HTTP API of a running hub, with real phones.

Every action answers with the call's new state; every refusal has its status and a
message: 401 without a token, 404 for unknown ids, 409 for what the call's state
does not allow, 422 for bad input. Every action is in the audit log.
"""

import asyncio
import time
from typing import Any

import httpx
import pytest

from hub.server import Hub
from tests.integration.conftest import sip_port
from tests.peers import scaled
from tests.peers.baresip import PhoneFactory

pytestmark = pytest.mark.peers


async def _token(client: httpx.AsyncClient, user: str, password: str) -> dict[str, str]:
    resp = await client.post("/api/auth/token", json={"username": user, "password": password})
    assert resp.status_code == 200, resp.text
    return {"Authorization": f"Bearer {resp.json()['token']}"}


async def _wait_call(client: httpx.AsyncClient, headers: dict[str, str], call_id: str,
                     done: Any, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + scaled(timeout)
    while True:
        body: dict[str, Any] = (await client.get(f"/api/calls/{call_id}", headers=headers)).json()
        if done(body):
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.1)


def _legs(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {leg["target"]: leg for leg in body["legs"]}


async def test_group_call_through_the_api(hub: Hub, phone_factory: PhoneFactory) -> None:
    hub.auth.add_operator("op", "dispatcher", password="op-password-1")
    registrar = ("127.0.0.1", sip_port(hub))
    phones = {n: await phone_factory(n, password=f"pw-{n}", registrar=registrar)
              for n in ("alice", "bob")}
    for phone in phones.values():
        await phone.wait_registered()
    async with httpx.AsyncClient(base_url=hub.http.url) as client:
        assert (await client.get("/api/calls")).status_code == 401
        headers = await _token(client, "op", "op-password-1")
        bad = await client.post("/api/calls", headers=headers,
                                json={"targets": ["alice"], "mode": "conference"})
        assert bad.status_code == 422 and "mode" in bad.json()["message"]
        bad = await client.post("/api/calls", headers=headers, json={"targets": ["nobody"]})
        assert bad.status_code == 422 and "nobody" in bad.json()["message"]
        assert (await client.get("/api/calls/D999", headers=headers)).status_code == 404

        resp = await client.post("/api/calls", headers=headers,
                                  json={"targets": ["alice", "bob", "carol"], "mode": "group"})
        assert resp.status_code == 201, resp.text
        call_id = resp.json()["id"]
        body = await _wait_call(client, headers, call_id, lambda b: sum(
            1 for leg in b["legs"] if leg["outcome"] != "pending") == 3)
        legs = _legs(body)
        assert legs["alice"]["outcome"] == "answered" and legs["bob"]["outcome"] == "answered"
        assert legs["carol"]["outcome"] in ("unreachable", "no-answer")
        alice_leg = legs["alice"]["leg_id"]
        muted = await client.post(f"/api/calls/{call_id}/legs/{alice_leg}/mute", headers=headers)
        assert muted.status_code == 200 and _legs(muted.json())["alice"]["muted"] is True
        ended_leg = legs["carol"]["leg_id"]
        conflict = await client.post(f"/api/calls/{call_id}/legs/{ended_leg}/mute",
                                     headers=headers)
        assert conflict.status_code in (404, 409), conflict.text
        assert (await client.post(f"/api/calls/{call_id}/legs/{alice_leg}/explode",
                                  headers=headers)).status_code == 404
        kicked = await client.post(f"/api/calls/{call_id}/legs/{alice_leg}/kick", headers=headers)
        assert kicked.status_code == 200
        await phones["alice"].wait_event("CALL_CLOSED", timeout=scaled(10))
        ended = await client.delete(f"/api/calls/{call_id}", headers=headers)
        assert ended.status_code == 200 and ended.json()["state"] == "ended"
        await phones["bob"].wait_event("CALL_CLOSED", timeout=scaled(10))
        again = await client.delete(f"/api/calls/{call_id}", headers=headers)
        assert again.status_code == 409
        spec = (await client.get("/openapi.json")).json()
        assert "/api/calls/{call_id}/legs/{leg_id}/{action}" in spec["paths"]
    actions = [entry.action for entry in hub.audit.entries(limit=50)]
    assert "call.create" in actions and "call.leg" in actions and "call.end" in actions


async def test_recorded_call_plays_back_through_the_api(
        hub: Hub, phone_factory: PhoneFactory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import av
    import numpy as np

    hub.auth.add_operator("op", "dispatcher", password="op-password-1")
    registrar = ("127.0.0.1", sip_port(hub))
    alice = await phone_factory("alice", password="pw-alice", registrar=registrar, tone_hz=440)
    await alice.wait_registered()
    async with httpx.AsyncClient(base_url=hub.http.url, timeout=30) as client:
        headers = await _token(client, "op", "op-password-1")
        created = await client.post("/api/calls", headers=headers,
                                    json={"targets": ["alice"], "mode": "single", "record": True})
        assert created.status_code == 201, created.text
        call = created.json()
        assert call["record"] is True and call["recording_id"]
        await alice.wait_event("CALL_ESTABLISHED", timeout=scaled(10))
        await asyncio.sleep(scaled(2.5))
        await client.delete(f"/api/calls/{call['id']}", headers=headers)
        await alice.wait_event("CALL_CLOSED", timeout=scaled(10))
        await asyncio.to_thread(hub.disk.wait, call["recording_id"], 30.0)
        listed = (await client.get("/api/recordings", headers=headers)).json()
        assert call["recording_id"] in [r["id"] for r in listed]
        assert (await client.get("/api/recordings/R19990101-0001/audio",
                                 headers=headers)).status_code == 404
        audio = await client.get(f"/api/recordings/{call['recording_id']}/audio",
                                 headers=headers)
        assert audio.status_code == 200 and audio.headers["content-type"] == "audio/ogg"
    path = tmp_path / "played.ogg"
    path.write_bytes(audio.content)
    with av.open(str(path)) as container:
        pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
        rate = container.streams.audio[0].rate
    assert pcm.size / rate > 1.5
    spectrum = np.abs(np.fft.rfft(pcm.astype(float) * np.hanning(pcm.size)))
    assert abs(np.fft.rfftfreq(pcm.size, 1 / rate)[spectrum.argmax()] - 440) < 20

"""An incident from a 119 call to its review pack, with real phones (baresip).

A phone calls the dispatch number and waits in the queue; the dispatcher makes an
incident from that call (caller, time and recording carried over), activates the fire
plan at level III. Five responder phones ring, answer and press 1; one responder is
offline: a text notification goes out and, at the plan's deadline, the deputy's phone
is called and confirms too. The ack board, the timeline and the evidence pack (its
recordings in order, each decoding to the tone its phone played) say exactly that.
"""

import asyncio
import io
import time
import zipfile
from html.parser import HTMLParser
from typing import Any

import av
import httpx
import numpy as np
import pytest

from hub.server import Hub
from tests.integration.api_client import operator, poll
from tests.integration.conftest import sip_port
from tests.peers import scaled
from tests.peers.baresip import BaresipPhone, PhoneFactory

pytestmark = pytest.mark.peers

RESPONDERS = {"alice": 440.0, "bob": 1000.0, "carol": 1800.0, "dave": 2400.0, "grace": 600.0}
DEPUTY = ("erin", 700.0)
OFFLINE = "ivan"
REPORTER = ("frank", 1250.0)
ESCALATE_S = 6.0


async def _confirm(phone: BaresipPhone) -> None:
    """Answer (auto), wait for the beeps to start, press 1."""
    await phone.wait_event("CALL_ESTABLISHED", timeout=scaled(30))
    await asyncio.sleep(0.8)
    await phone.command("sndcode", "1", check=False)


def _peak(data: bytes) -> float:
    with av.open(io.BytesIO(data)) as container:
        chunks = [frame.to_ndarray().astype(np.float64).reshape(-1)
                  for frame in container.decode(audio=0)]
        rate = container.streams.audio[0].rate
    samples = np.concatenate(chunks)
    window = np.hanning(samples.size)
    spectrum = np.abs(np.fft.rfft(samples * window))
    bins = np.fft.rfftfreq(samples.size, 1 / rate)
    spectrum[bins < 200] = 0
    return float(bins[int(np.argmax(spectrum))])


class _Audio(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "audio":
            self.sources += [v for k, v in attrs if k == "src" and v]


async def test_call_to_incident_to_plan_to_ack_board_to_evidence(
        hub: Hub, phone_factory: PhoneFactory) -> None:
    for name in ("frank", "grace", "ivan"):
        hub.store.add_user(name, f"pw-{name}")
    registrar = ("127.0.0.1", sip_port(hub))
    phones = {name: await phone_factory(name, password=f"pw-{name}", registrar=registrar,
                                        tone_hz=hz)
              for name, hz in [*RESPONDERS.items(), DEPUTY, REPORTER]}
    for phone in phones.values():
        await phone.wait_registered()
    async with httpx.AsyncClient(base_url=hub.http.url, timeout=30) as client:
        disp = await operator(client, hub, "dispatcher")
        sup = await operator(client, hub, "supervisor")

        # 1. The reporter calls 119 and waits in the queue (recorded from the answer).
        reporter = phones[REPORTER[0]]
        await reporter.dial(f"sip:{hub.store.dispatch_number}@127.0.0.1:{sip_port(hub)}")
        queue = await poll(client, disp, "/api/queue", lambda q: len(q) == 1, timeout=15)
        assert queue[0]["caller"] == "frank" and queue[0]["recording_id"]
        await asyncio.sleep(1.5)  # the reporter speaks (its tone) into the recording

        # 2. One click: an incident from the queued call.
        resp = await client.post("/api/incidents", headers=disp, json={
            "call_id": queue[0]["queue_id"], "title": "仓库火灾", "type": "fire", "level": 3,
            "location": {"lat": 39.9087, "lon": 116.3975, "address": "北京市东城区"}})
        assert resp.status_code == 201, resp.text
        incident = resp.json()
        assert incident["reporter_phone"] == "frank"
        assert incident["source_call"] == queue[0]["queue_id"]
        assert abs(incident["reported_at"] - queue[0]["since"]) < 0.01
        assert [r["recording_id"] for r in incident["recordings"]] == [queue[0]["recording_id"]]

        # A plan naming someone not in the directory is refused whole.
        bad = await client.post("/api/plans", headers=sup, json={
            "name": "bad", "incident_type": "fire", "level": 3,
            "roles": [{"role": "x", "person": "nobody-here"}]})
        assert bad.status_code == 422 and "nobody-here" in bad.json()["message"]
        assert (await client.get("/api/plans", headers=sup)).json() == []

        roles = [{"role": f"role-{n}", "person": n} for n in RESPONDERS]
        roles.append({"role": "现场指挥", "person": OFFLINE, "deputy": DEPUTY[0]})
        resp = await client.post("/api/plans", headers=sup, json={
            "name": "火灾事故应急预案", "incident_type": "fire", "level": 3,
            "escalate_after_s": ESCALATE_S, "roles": roles,
            "tasks": [{"title": "疏散周边群众", "deadline_s": 600}]})
        assert resp.status_code == 201, resp.text
        plan = resp.json()

        # 3. Activate at level III: everyone rings at once.
        confirmers = [asyncio.ensure_future(_confirm(phones[n]))
                      for n in [*RESPONDERS, DEPUTY[0]]]
        t0 = time.monotonic()
        resp = await client.post(f"/api/incidents/{incident['id']}/activate", headers=disp,
                                 json={"plan_id": plan["id"], "level": "III"})
        assert resp.status_code == 201, resp.text
        board = {r["person"]: r for r in resp.json()["responders"]}
        assert set(board) == {*RESPONDERS, OFFLINE}
        await asyncio.gather(*[c for c in confirmers[:-1]])

        def settled(response: dict[str, Any]) -> bool:
            states = {r["person"]: r["state"] for r in response["responders"]}
            return (all(states.get(n) == "confirmed" for n in RESPONDERS)
                    and states.get(DEPUTY[0]) == "confirmed")

        response = await poll(client, disp, f"/api/incidents/{incident['id']}/response",
                               settled, timeout=40)
        await confirmers[-1]
        elapsed = time.monotonic() - t0
        rows = {r["person"]: r for r in response["responders"]}
        assert rows[OFFLINE]["state"] == "escalated" and rows[OFFLINE]["escalated"]
        assert rows[OFFLINE]["notified"]
        assert rows[DEPUTY[0]]["deputy_for"] == rows[OFFLINE]["id"]
        assert rows[DEPUTY[0]]["role"] == "现场指挥"
        # The deputy was called only after the deadline.
        assert elapsed >= ESCALATE_S
        assert rows[DEPUTY[0]]["answered_at"] >= rows[OFFLINE]["deadline"] - 0.05
        for name in RESPONDERS:
            assert rows[name]["confirmed_at"] is not None and not rows[name]["escalated"]
        assert response["counts"]["confirmed"] == 6

        detail = (await client.get(f"/api/incidents/{incident['id']}", headers=disp)).json()
        assert detail["status"] == "responding"
        timeline = detail["timeline"]
        kinds = [e["kind"] for e in timeline]
        assert kinds[:3] == ["incident.created", "call.attached", "recording.attached"]
        assert [e["at"] for e in timeline] == sorted(e["at"] for e in timeline)

        def states_of(person: str) -> list[str]:
            return [e["data"]["new"] for e in timeline
                    if e["kind"] == "responder.state" and e["data"]["person"] == person]

        for name in RESPONDERS:
            assert states_of(name)[-1] == "confirmed", (name, states_of(name))
            assert "answered" in states_of(name) or states_of(name)[-1] == "confirmed"
        assert states_of(OFFLINE) == ["unreachable", "escalated"]
        assert states_of(DEPUTY[0])[-1] == "confirmed"
        i_unreach = next(i for i, e in enumerate(timeline) if e["kind"] == "notification.sent"
                         and e["data"]["person"] == OFFLINE)
        i_escal = kinds.index("responder.escalated")
        i_deputy = next(i for i, e in enumerate(timeline) if e["kind"] == "responder.state"
                        and e["data"]["person"] == DEPUTY[0])
        assert i_unreach < i_escal < i_deputy
        assert timeline[i_escal]["data"]["deputy"] == DEPUTY[0]
        legs = [e for e in timeline if e["kind"] == "call.leg"
                and e["data"]["outcome"] == "answered"]
        assert {e["data"]["target"] for e in legs} >= {*RESPONDERS, DEPUTY[0]}
        assert detail["tasks"][0]["title"] == "疏散周边群众"

        # Let the room record a moment with everyone in it, then end the response.
        await asyncio.sleep(1.5)
        await reporter.hangup()
        ended = await client.post(f"/api/incidents/{incident['id']}/response/end",
                                  headers=disp)
        assert ended.status_code == 200, ended.text
        assert ended.json()["state"] == "ended"
        for name in RESPONDERS:
            await phones[name].wait_event("CALL_CLOSED", timeout=scaled(10))
        detail = await poll(client, disp, f"/api/incidents/{incident['id']}",
                             lambda d: len(d["recordings"]) == 2
                             and any(e["kind"] == "response.ended" for e in d["timeline"]))
        closing = [e for e in detail["timeline"] if e["kind"] == "notification.sent"
                   and e["data"]["reason"] == "closing"]
        assert {e["data"]["person"] for e in closing} == {*RESPONDERS, OFFLINE, DEPUTY[0]}

        # 4. The review pack: the recordings in order, each the audio it should be.
        await asyncio.sleep(0.5)
        resp = await client.get(f"/api/incidents/{incident['id']}/evidence", headers=disp)
        assert resp.status_code == 200, resp.text
        pack = zipfile.ZipFile(io.BytesIO(resp.content))
        names = pack.namelist()
        html = pack.read("report.html").decode()
        parser = _Audio()
        parser.feed(html)
        recordings = [r["recording_id"] for r in detail["recordings"]]
        assert recordings[0] == queue[0]["recording_id"]
        assert len(parser.sources) == 2
        for source, recording_id in zip(parser.sources, recordings, strict=True):
            assert recording_id in source and source in names
        assert html.index(recordings[0]) < html.index(recordings[1])
        # The intake recording holds the reporter's voice.
        assert abs(_peak(pack.read(parser.sources[0])) - REPORTER[1]) < 15
        assert "火灾事故应急预案" in html and OFFLINE in html and DEPUTY[0] in html

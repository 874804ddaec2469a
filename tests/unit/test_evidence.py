"""The review pack: a real incident, real recordings, the zip read back like a reviewer would.

The recordings carry different tones, so the FFT of each file in the zip proves the
right audio went under the right name, in the report's (start time) order.
"""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, cast

import av
import numpy as np
import pytest

from bridges.events import EventBus
from dispatch.errors import NotFound
from dispatch.evidence import (
    EvidenceFailed,
    build_evidence_pack,
    collect_evidence,
    write_evidence_pack,
)
from dispatch.incidents import IncidentService
from dispatch.response import ResponseService
from recordings.errors import ExportFailed
from recordings.export import export
from recordings.index import RecordingIndex
from recordings.writer import SegmentedRecorder
from storage.sql import Database, open_database
from tests.unit.recordings_util import frames, tone

T0 = 1_763_700_000.0  # 2025-11-21 04:40:00 UTC = 12:40:00 +08:00
CST = timezone(timedelta(hours=8))
RATE = 16000
EVIL = '<script>alert("x")</script> 仓库火灾 & <b>'
NO_SUCH = "R20251121-9999"
EVIL_ID = '"><script>x()</script>'


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Dispatch:
    """Shaped like dispatch.resources.Dispatch (the pack reads its ``as_dict``)."""

    name: str
    kind: str
    quantity: int | None
    unit: str | None
    released_at: float | None

    def as_dict(self) -> dict[str, Any]:
        return {"id": 1, "name": self.name, "kind": self.kind, "quantity": self.quantity,
                "unit": self.unit, "note": "<img src=x onerror=alert(1)>", "distance_m": 2345.0,
                "state": "active" if self.released_at is None else "released",
                "dispatched_by": "op1", "dispatched_at": T0 + 300,
                "released_by": "op1" if self.released_at else None,
                "released_at": self.released_at}


class Resources:
    """Stands in for ResourceService (written elsewhere): its records, and a plain dict with
    other keys, which the pack must read as well as it can."""

    def dispatches(self, incident_id: int) -> list[Any]:
        return [Dispatch("消防一中队", "team", None, None, None),
                Dispatch("水泵", "equipment", 4, "台", T0 + 700),
                {"resource": {"name": "帐篷", "kind": "supply"}, "count": 30, "at": T0 + 320}]


class HtmlReport(HTMLParser):
    """What a reviewer sees: tags, headings, audio sources, links, each recording's text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str | None]] = []
        self.headings: dict[str, list[str]] = {"h1": [], "h2": [], "h3": []}
        self.audio: list[str] = []
        self.downloads: list[str] = []
        self.articles: list[str] = []
        self.text: list[str] = []
        self.lang: str | None = None
        self._open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [(tag, name, value) for name, value in attrs]
        values = dict(attrs)
        if tag == "html":
            self.lang = values.get("lang")
        elif tag == "audio":
            assert values.get("preload") == "none" and "controls" in values
            self.audio.append(values["src"] or "")
        elif tag == "a" and "download" in values:
            self.downloads.append(values["href"] or "")
        elif tag == "article":
            self.articles.append("")
        if tag in self.headings:
            self.headings[tag].append("")
        self._open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._open and self._open[-1] == tag:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._open and self._open[-1] in self.headings:
            self.headings[self._open[-1]][-1] += data
        if "article" in self._open:
            self.articles[-1] += data


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(None, default_path=tmp_path / "i.sqlite3")
    yield database
    database.close()


@pytest.fixture
def incidents(db: Database, clock: Clock) -> IncidentService:
    return IncidentService(db, clock=clock)


@pytest.fixture
def index(tmp_path: Path) -> Iterator[RecordingIndex]:
    with RecordingIndex.open(tmp_path / "data") as opened:
        yield opened


def record_tone(index: RecordingIndex, freq: float, started_at: float, peer: str) -> str:
    """1.5 s of ``freq`` Hz at 16 kHz in 1 s FLAC segments, ``peer`` present throughout."""
    recording_id = index.start(kind="bridge", bridge_id=f"b{freq:.0f}", codec="flac",
                               sample_rate=RATE, started_at=started_at, call_id="D1")
    index.participant_joined(recording_id, "L1", peer, started_at)
    recorder = SegmentedRecorder(index.segments_root, recording_id=recording_id,
                                 sample_rate=RATE, codec="flac", segment_seconds=1.0, index=index)
    for number, frame in enumerate(frames(tone(freq, 1.5, RATE), RATE)):
        recorder.write(frame, started_at + number * 0.02)
    recorder.close()
    index.finish(recording_id, started_at + 1.5)
    return recording_id


def decode(data: bytes) -> tuple[np.ndarray[Any, np.dtype[np.float64]], int]:
    """An Ogg/Opus file's audio, mono float, and its rate (as a player would decode it)."""
    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "opus"
        chunks, rate = [], 0
        for frame in container.decode(stream):
            rate = frame.sample_rate
            chunks.append(frame.to_ndarray().astype(np.float64).reshape(-1))
    return np.concatenate(chunks), rate


def peak(signal: np.ndarray[Any, np.dtype[np.float64]], rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    return float(np.argmax(spectrum) * rate / len(signal))


def responses_for(db: Database, incidents: IncidentService, incident_id: int) -> ResponseService:
    """A real ResponseService reading an ended response written as it would have stored it
    (activating one needs the call stack, which the pack never touches)."""
    service = ResponseService(db, incidents, cast(Any, None), cast(Any, None), EventBus(),
                              clock=lambda: T0 + 900)
    with db.transaction() as tx:
        plan = tx.insert("INSERT INTO plans (name, incident_type, level, escalate_after_s, body,"
                         " created_at, updated_at) VALUES ('火灾三级预案', 'fire', 3, 60, '{}',"
                         " ?, ?)", (T0, T0))
        response = tx.insert(
            "INSERT INTO responses (incident_id, plan_id, plan_name, level, state, call_id,"
            " started_at, started_by, ended_at, ended_by) VALUES"
            " (?, ?, '火灾三级预案', 3, 'ended', 'D1', ?, 'op1', ?, 'op1')",
            (incident_id, plan, T0 + 60, T0 + 800))
        columns = ("INSERT INTO responders (response_id, role, person, deputy, deputy_for, level,"
                   " state, escalated, notified, endpoint, attempts, answered_at, confirmed_at,"
                   " updated_at) VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, ?, ?, ?)")
        tx.insert(columns, (response, "总指挥", "王队长", None, None, "confirmed", 0, 0,
                            "sip:1001", 1, T0 + 70, T0 + 75, T0 + 75))
        chief = tx.insert(columns, (response, "现场指挥", "李四", "赵六", None, "escalated", 1, 1,
                                    "mobile:13800138000", 2, None, None, T0 + 130))
        tx.insert(columns, (response, "现场指挥", "赵六", None, chief, "answered", 0, 0,
                            "sip:1002", 1, T0 + 140, None, T0 + 140))
        tx.execute("INSERT INTO tasks (incident_id, response_id, title, role, due_at, state,"
                   " done_at, done_by) VALUES (?, ?, '疏散群众', '现场指挥', ?, 'done', ?, 'op1')",
                   (incident_id, response, T0 + 600, T0 + 500))
        tx.execute("INSERT INTO tasks (incident_id, response_id, title, role, due_at, state)"
                   " VALUES (?, ?, '<i>核查</i>伤亡', NULL, ?, 'open')",
                   (incident_id, response, T0 + 700))
    return service


@pytest.fixture
def scene(db: Database, incidents: IncidentService, index: RecordingIndex,
          clock: Clock) -> dict[str, Any]:
    """An incident with a timeline, a response, and four recordings linked out of order:
    two with audio (440 and 1000 Hz), one the index never heard of, one with no audio."""
    incident = incidents.create({"title": EVIL, "type": "fire", "level": 3,
                                 "location": {"lat": 31.23, "lon": 121.47},
                                 "address": "浦东新区 <XX> 路 8 号", "reporter": "张三",
                                 "reporter_phone": "13900000000"}, operator="op1")
    incident_id = incident["id"]
    late = record_tone(index, 1000, T0 + 100, "现场指挥 李四")
    early = record_tone(index, 440, T0 + 10, "报警人 张三")
    empty = index.start(kind="bridge", bridge_id="b9", codec="opus", sample_rate=8000,
                        started_at=T0 + 200)
    clock.now = T0 + 5
    incidents.update(incident_id, {"status": "verified"}, operator="op1")
    clock.now = T0 + 12
    # The way the service links a call's recording: the table row and the timeline entry.
    with db.transaction() as tx:
        incidents._add_recording(tx, incident_id, late, "D1", T0 + 100, clock.now)
        incidents._add_recording(tx, incident_id, NO_SUCH, "D2", T0 + 50, clock.now)
    # By hand: the row, and the fact through the public API.
    with db.transaction() as tx:
        tx.execute("INSERT INTO incident_recordings (incident_id, recording_id, call_id,"
                   " started_at) VALUES (?, ?, ?, ?)", (incident_id, early, "D1", T0 + 10))
    incidents.record(incident_id, "recording.attached",
                     {"recording_id": early, "call_id": "D1", "started_at": T0 + 10})
    # Only the timeline names this one: it must still be listed.
    incidents.record(incident_id, "call.attached", {"call_id": "D3", "caller": "110",
                                                    "started_at": T0 + 200, "recording_id": empty})
    incidents.record(incident_id, "call.attached", {"call_id": "D4", "started_at": T0 + 300,
                                                    "recording_id": EVIL_ID})
    clock.now = T0 + 70
    incidents.record(incident_id, "call.leg", {
        "call_id": "D1", "leg_id": "L2", "target": "王队长", "endpoint": "sip:1001",
        "state": "up", "outcome": "answered", "status": 200, "confirmed": True})
    incidents.record(incident_id, "responder.state", {
        "role": "现场指挥", "person": "李四", "old": "ringing", "new": "unreachable",
        "endpoint": "mobile:13800138000", "attempts": 2, "deputy_for": None})
    incidents.record(incident_id, "notification.failed", {
        "person": "李四", "reason": "unreachable", "text": "请立即联系", "channel": "sms",
        "error": "gateway down"})
    incidents.add_message(incident_id, "</td><script>steal()</script>", operator="op2")
    incidents.record(incident_id, "resource.dispatched", {
        "dispatch_id": 2, "resource_id": 7, "name": "水泵", "kind": "equipment", "quantity": 4,
        "note": None, "unit": "台", "distance_m": 2345.0}, actor="op1")
    incidents.record(incident_id, "evidence.exported", {"file": "incident-1-evidence.zip"},
                     actor="op1")
    incidents.record(incident_id, "custom.thing", {"a": [1, 2], "b": "<u>"})
    return {"id": incident_id, "early": early, "late": late, "empty": empty}


def test_pack_holds_the_report_the_recordings_and_the_raw_facts(
        db: Database, incidents: IncidentService, index: RecordingIndex, scene: dict[str, Any],
        tmp_path: Path) -> None:
    incident_id, early, late, empty = scene["id"], scene["early"], scene["late"], scene["empty"]
    out = tmp_path / "packs" / "incident.zip"
    out.parent.mkdir()
    result = build_evidence_pack(incident_id, out, incidents=incidents,
                                 responses=responses_for(db, incidents, incident_id),
                                 recordings=index, resources=Resources(),
                                 clock=lambda: T0 + 1000, tz=CST)

    first, third = f"recordings/01-{early}.ogg", f"recordings/03-{late}.ogg"
    assert result.path == out and result.size == out.stat().st_size > 0
    assert result.recordings == (early, late)
    assert set(result.missing) == {NO_SUCH, empty, EVIL_ID}
    assert "not in the recordings index" in result.missing[NO_SUCH]
    assert "no audio yet" in result.missing[empty]
    assert [p.name for p in out.parent.iterdir()] == ["incident.zip"]  # nothing staged left

    with zipfile.ZipFile(out) as zf:
        assert zf.testzip() is None
        assert sorted(zf.namelist()) == sorted(
            ["report.html", "timeline.json", "incident.json", first, third])
        page = zf.read("report.html").decode("utf-8")
        timeline = json.loads(zf.read("timeline.json").decode("utf-8"))
        facts = json.loads(zf.read("incident.json").decode("utf-8"))
        audio = {name: zf.read(name) for name in (first, third)}

    # The recordings: the right tone under the right name, whole.
    for name, freq in ((first, 440), (third, 1000)):
        signal, rate = decode(audio[name])
        assert len(signal) / rate == pytest.approx(1.5, abs=0.05)
        assert peak(signal, rate) == pytest.approx(freq, abs=2)

    # The page: parses, bilingual, self-contained, recordings in start order.
    report = HtmlReport()
    report.feed(page)
    report.close()
    assert page.startswith("<!DOCTYPE html>") and report.lang == "zh-CN"
    assert ("meta", "charset", "utf-8") in report.attrs
    assert "script" not in report.tags and "link" not in report.tags and "img" not in report.tags
    assert not [v for _, n, v in report.attrs if n in ("src", "href") and v and ":" in v]
    assert all(" / " in h for h in report.headings["h1"] + report.headings["h2"])
    assert [h.strip() for h in report.headings["h2"]] == [
        "事件概要 / Incident summary", "响应与确认 / Response and acknowledgements",
        "资源调派 / Resources dispatched", "任务 / Tasks", "时间线 / Timeline",
        "录音 / Recordings"]
    assert report.headings["h3"] == [f"01. {early}", f"02. {NO_SUCH}", f"03. {late}",
                                     f"04. {empty}", f"05. {EVIL_ID}"]
    assert report.audio == [first, third] and report.downloads == [first, third]
    one, missing, three, silent, evil = report.articles
    assert "2025-11-21 12:40:10 +08:00" in one and "报警人 张三" in one and "0:02 (1.5 s)" in one
    assert "现场指挥 李四" in three
    assert "不可用 / Unavailable" in missing and "not in the recordings index" in missing
    assert "不可用 / Unavailable" in silent and "no audio yet" in silent
    assert "不可用" not in one + three
    assert "not in the recordings index" in evil

    # Incident data is text, never markup.
    text = "".join(report.text)
    assert "<script>" not in page and "<img" not in page and "<i>核查" not in page
    for shown in (EVIL, EVIL_ID, "</td><script>steal()</script>", "<img src=x onerror=alert(1)>",
                  "<i>核查</i>伤亡", "浦东新区 <XX> 路 8 号"):
        assert shown in text
    # The summary, the board, resources, tasks in words.
    for shown in ("火灾 / Fire", "III 级（较大） / Level III", "已核实 / Verified",
                  "31.23, 121.47", "2025-11-21 12:40:00 +08:00", "火灾三级预案",
                  "已确认 / Confirmed", "李四 (现场指挥)", "mobile:13800138000",
                  "2025-11-21 12:41:15 +08:00", "消防一中队", "队伍 / Team", "水泵",
                  "疏散群众", "已超期 / overdue"):
        assert shown in text, shown
    resources = page.split('<section id="resources">')[1].split("</section>")[0]
    for shown in ("装备 / Equipment", "4 台", "2.3 km", "已派出 / Out", "已撤回 / Released",
                  "2025-11-21 12:51:40 +08:00", "帐篷", "物资 / Supplies", "<td>30</td>",
                  "&lt;img src=x onerror=alert(1)&gt;"):
        assert shown in resources, shown

    # The timeline: raw and round-tripping; in the page in order, each kind in words.
    assert timeline == incidents.timeline(incident_id)
    assert [e["kind"] for e in timeline][:3] == ["incident.created", "incident.status",
                                                 "recording.attached"]
    for shown in ("接报创建 / Incident created", "状态变更 / Status changed",
                  "已接报 / Reported → 已核实 / Verified", "呼叫分支 / Call leg",
                  "已接听 / Answered (200)", "已按键确认 / confirmed",
                  "振铃中 / Ringing → 未能联系 / Unreachable", "通知失败 / Notification failed",
                  "gateway down", '{"a":[1,2],"b":"<u>"}', "资源调派 / Resource dispatched",
                  "数量 / quantity: 4 台", "距离 / distance: 2.3 km",
                  "导出证据包 / Evidence pack exported"):
        assert shown in text, shown
    rows = page.split('<section id="timeline">')[1].split("</section>")[0].count("<tr>")
    assert rows == len(timeline) + 1  # and the header

    # The raw facts.
    assert facts["incident"]["title"] == EVIL
    assert facts["response"]["plan_name"] == "火灾三级预案"
    assert [t["title"] for t in facts["tasks"]] == ["疏散群众", "<i>核查</i>伤亡"]
    assert [d.get("name") for d in facts["dispatches"]] == ["消防一中队", "水泵", None]
    assert [(r["recording_id"], r["file"]) for r in facts["recordings"]] == [
        (early, first), (NO_SUCH, None), (late, third), (empty, None), (EVIL_ID, None)]


async def test_pack_without_response_resources_or_recordings(
        incidents: IncidentService, index: RecordingIndex, tmp_path: Path) -> None:
    """As the API runs it: facts read on the loop, the pack written in a worker thread."""
    incident_id = incidents.create({"title": "小事", "type": "traffic", "level": 4})["id"]
    out = tmp_path / "p.zip"
    facts = collect_evidence(incident_id, incidents=incidents, responses=None)
    result = await asyncio.to_thread(write_evidence_pack, facts, out, recordings=index)
    assert (result.recordings, result.missing) == ((), {})
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == ["incident.json", "report.html", "timeline.json"]
        page = zf.read("report.html").decode("utf-8")
    for shown in ("未启动预案响应 / No plan was activated", "无资源调派记录",
                  "无任务 / No tasks", "本事件没有录音 / This incident has no recordings"):
        assert shown in page


def test_a_failure_leaves_nothing_behind(
        monkeypatch: pytest.MonkeyPatch, db: Database, incidents: IncidentService,
        index: RecordingIndex, scene: dict[str, Any], tmp_path: Path) -> None:
    incident_id = scene["id"]
    options: dict[str, Any] = {"incidents": incidents, "responses": None, "recordings": index}
    before = sorted(tmp_path.iterdir())

    with pytest.raises(EvidenceFailed, match="no-such-dir") as failed:
        build_evidence_pack(incident_id, tmp_path / "no-such-dir" / "p.zip", **options)
    assert failed.value.error_id == "evidence-failed" and failed.value.status == 500
    with pytest.raises(NotFound):
        build_evidence_pack(incident_id + 1, tmp_path / "p.zip", **options)
    assert sorted(tmp_path.iterdir()) == before

    # Mid-way: the first recording is in the zip when writing the second fails.
    folder = tmp_path / "packs"
    folder.mkdir()
    out = folder / "p.zip"
    out.write_bytes(b"the previous pack")
    calls: list[str] = []

    def failing(index: RecordingIndex, recording_id: str, path: Path) -> Any:
        calls.append(recording_id)
        if len(calls) == 2:
            raise ExportFailed("cannot write: disk full") from OSError(28, "No space left")
        return export(index, recording_id, path)

    monkeypatch.setattr("dispatch.evidence.export", failing)
    with pytest.raises(EvidenceFailed, match="disk full"):
        build_evidence_pack(incident_id, out, **options)
    assert calls == [scene["early"], scene["late"]]
    assert [p.name for p in folder.iterdir()] == ["p.zip"]
    assert out.read_bytes() == b"the previous pack"

    # A bug (not an I/O failure) propagates as itself, and cleans up the same.
    def broken(index: RecordingIndex, recording_id: str, path: Path) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr("dispatch.evidence.export", broken)
    with pytest.raises(RuntimeError, match="bug"):
        build_evidence_pack(incident_id, out, **options)
    assert [p.name for p in folder.iterdir()] == ["p.zip"]
    assert out.read_bytes() == b"the previous pack"

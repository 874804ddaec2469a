"""An incident's review pack (复盘证据包): one zip that stands on its own.

The pack is what leaves the centre after an incident: for a review meeting, an
inquiry, an archive. It must be readable years later on a machine with no hub, so it
holds everything and needs nothing:

* ``report.html``: one self-contained page (inline CSS, no scripts, no links out),
  bilingual, that a browser opens straight from the unzipped folder: the incident,
  the acknowledgement board, resources, tasks, the whole timeline in words, and every
  recording with a player;
* ``recordings/NN-<recording_id>.ogg``: each recording exported to one Ogg/Opus file,
  ``NN`` being its place in the report (by start time);
* ``timeline.json`` and ``incident.json``: the raw facts, for tools.

A recording that cannot be exported (not in the index, no audio yet) is listed in the
report as unavailable with the reason: one bad recording must not cost the others.
Failing to *write* (a missing directory, a full disk) fails the whole pack instead,
as a pack silently short of evidence is worse than an error the operator can retry.

The zip is assembled in a staging directory beside ``out_path`` and renamed into
place, so a failure never leaves half a pack under that name.

Two steps, because of threads: ``collect_evidence`` reads the services (the
``storage.sql`` connection belongs to the event loop's thread and is not to be shared
with a worker); ``write_evidence_pack`` does the slow part (exports, the zip) and
touches only the recordings index, which is thread-safe, so it may run in a worker
thread. ``build_evidence_pack`` is both, in the calling thread.

Incident data is user input: every string reaches the page through ``html.escape``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import logging
import math
import os
import re
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any, ClassVar, Final, Protocol

from recordings.errors import ExportFailed, NoAudio, RecordingError, RecordingNotFound
from recordings.export import export
from recordings.index import RecordingIndex, RecordingInfo

from . import taxonomy
from .incidents import IncidentService

log = logging.getLogger(__name__)

#: Zip members besides the recordings.
REPORT: Final = "report.html"
TIMELINE: Final = "timeline.json"
INCIDENT: Final = "incident.json"
RECORDINGS_DIR: Final = "recordings"


class EvidenceFailed(Exception):
    """The pack could not be written (no such directory, no space ...); nothing was left.

    Not a ``DispatchError``: the console maps those to 4xx, and this is the hub's
    failure, not the request's. ``status`` and ``error_id`` let the console answer it.
    """

    error_id: ClassVar[str] = "evidence-failed"
    status: ClassVar[int] = 500


class ResponseSource(Protocol):
    """What the pack reads of ``ResponseService`` (typed here so that tests and tools
    need not build the whole call stack it imports)."""

    def get(self, incident_id: int) -> dict[str, Any] | None: ...

    def tasks(self, incident_id: int) -> list[dict[str, Any]]: ...


@dataclass(frozen=True, slots=True)
class EvidenceFacts:
    """What the pack tells, as the services said it when it was collected."""

    incident_id: int
    """The incident."""
    incident: dict[str, Any]
    """``IncidentService.get``."""
    timeline: list[dict[str, Any]]
    """``IncidentService.timeline``: every entry, oldest first."""
    linked: list[dict[str, Any]]
    """``IncidentService.recordings``: recording_id, call_id, started_at."""
    response: dict[str, Any] | None
    """``ResponseService.get``: the latest response and its board; None if none."""
    tasks: list[dict[str, Any]]
    """``ResponseService.tasks``."""
    dispatches: list[dict[str, Any]] | None
    """Resources dispatched (as dicts); None when no resources service was given."""


@dataclass(frozen=True, slots=True)
class EvidenceResult:
    """What ``build_evidence_pack`` wrote."""

    path: Path
    """The zip."""
    recordings: tuple[str, ...]
    """Recordings whose audio is in the pack, in the report's order (start time)."""
    missing: dict[str, str] = field(default_factory=dict)
    """Recordings listed as unavailable: id -> the reason shown in the report."""
    size: int = 0
    """Bytes of the zip."""


# ----------------------------------------------------------------------------- labels

def _bi(zh: str, en: str) -> str:
    return f"{zh} / {en}"


KINDS: Final[Mapping[str, tuple[str, str]]] = {
    "incident.created": ("接报创建", "Incident created"),
    "incident.status": ("状态变更", "Status changed"),
    "incident.level": ("级别变更", "Level changed"),
    "incident.updated": ("信息更新", "Details updated"),
    "call.attached": ("关联来电", "Call attached"),
    "call.placed": ("发起呼叫", "Call placed"),
    "call.leg": ("呼叫分支", "Call leg"),
    "call.ended": ("呼叫结束", "Call ended"),
    "recording.attached": ("关联录音", "Recording attached"),
    "response.activated": ("启动预案", "Plan activated"),
    "response.level": ("响应级别调整", "Response level changed"),
    "response.ended": ("响应结束", "Response ended"),
    "response.interrupted": ("响应中断", "Response interrupted"),
    "responder.state": ("响应人状态", "Responder state"),
    "responder.escalated": ("升级至替补", "Escalated to deputy"),
    "notification.sent": ("通知已发送", "Notification sent"),
    "notification.failed": ("通知失败", "Notification failed"),
    "message": ("留言", "Message"),
    "task.done": ("任务完成", "Task done"),
    "task.reopened": ("任务重开", "Task reopened"),
    "resource.dispatched": ("资源调派", "Resource dispatched"),
    "resource.released": ("资源撤回", "Resource released"),
    "resource.contact_called": ("呼叫资源联系人", "Resource contact called"),
    "evidence.exported": ("导出证据包", "Evidence pack exported"),
}
STATUSES: Final[Mapping[str, tuple[str, str]]] = {
    "reported": ("已接报", "Reported"), "verified": ("已核实", "Verified"),
    "responding": ("响应中", "Responding"), "closed": ("已关闭", "Closed"),
}
RESPONDER_STATES: Final[Mapping[str, tuple[str, str]]] = {
    "pending": ("待呼叫", "Pending"), "ringing": ("振铃中", "Ringing"),
    "answered": ("已接听", "Answered"), "confirmed": ("已确认", "Confirmed"),
    "left": ("已离开", "Left"), "unreachable": ("未能联系", "Unreachable"),
    "escalated": ("已升级", "Escalated"), "stood-down": ("已解除", "Stood down"),
    "ended": ("已结束", "Ended"),
}
RESPONSE_STATES: Final[Mapping[str, tuple[str, str]]] = {
    "active": ("进行中", "Active"), "ended": ("已结束", "Ended"),
    "interrupted": ("已中断", "Interrupted"),
}
LEG_STATES: Final[Mapping[str, tuple[str, str]]] = {
    "new": ("新建", "New"), "ringing": ("振铃", "Ringing"), "up": ("通话中", "Connected"),
    "held": ("保持", "On hold"), "ended": ("已结束", "Ended"),
}
OUTCOMES: Final[Mapping[str, tuple[str, str]]] = {
    "pending": ("等待", "Pending"), "answered": ("已接听", "Answered"),
    "busy": ("忙", "Busy"), "no-answer": ("无人接听", "No answer"),
    "unreachable": ("无法接通", "Unreachable"), "rejected": ("拒接", "Rejected"),
    "cancelled": ("已取消", "Cancelled"), "failed": ("失败", "Failed"),
}
RECORDING_STATUSES: Final[Mapping[str, tuple[str, str]]] = {
    "recording": ("录制中", "Still recording"), "complete": ("已完成", "Complete"),
    "interrupted": ("中断（已恢复）", "Interrupted (recovered)"),
}
DISPATCH_STATES: Final[Mapping[str, tuple[str, str]]] = {
    "active": ("已派出", "Out"), "released": ("已撤回", "Released"),
    "dispatched": ("已调派", "Dispatched"),
}
TASK_STATES: Final[Mapping[str, tuple[str, str]]] = {
    "open": ("待办", "Open"), "done": ("已完成", "Done"),
}
RESOURCE_KINDS: Final[Mapping[str, tuple[str, str]]] = {
    "team": ("队伍", "Team"), "expert": ("专家", "Expert"), "supply": ("物资", "Supplies"),
    "equipment": ("装备", "Equipment"), "shelter": ("避难场所", "Shelter"),
    "vehicle": ("车辆", "Vehicle"),
}
FIELDS: Final[Mapping[str, tuple[str, str]]] = {
    "title": ("标题", "title"), "type": ("类型", "type"), "level": ("级别", "level"),
    "status": ("状态", "status"), "location": ("位置", "location"),
    "address": ("地址", "address"), "reporter": ("报警人", "reporter"),
    "reporter_phone": ("报警电话", "reporter phone"),
    "description": ("描述", "description"), "call_id": ("呼叫", "call"),
}


def _label(table: Mapping[str, tuple[str, str]], value: object) -> str:
    """A coded value in both languages; an unknown code as it is."""
    if isinstance(value, str) and value in table:
        return _bi(*table[value])
    return _text(value)


def _level(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4:
        return _text(value)
    return f"{taxonomy.LEVELS[value - 1]} 级（{taxonomy.LEVEL_NAMES_ZH[value - 1]}）" \
           f" / Level {taxonomy.LEVELS[value - 1]}"


# ------------------------------------------------------------------------- formatting

def _compact(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True,
                      default=_json_default)


def _json_default(value: object) -> object:
    """Whatever a resources service hands us that JSON does not know, as best it can."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def _text(value: object) -> str:
    """A value as plain text for the page ('' for nothing)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "是 / yes" if value else "否 / no"
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, Mapping):
        if set(value) == {"lat", "lon"}:
            return f"{value['lat']}, {value['lon']}"
        return _compact(value)
    return str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return ""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
    return f"{clock} ({seconds:.1f} s)"


class _Times:
    """Unix times as local wall-clock time with the UTC offset (``+08:00``), which
    reads unambiguously in any zone and across a daylight-saving change."""

    def __init__(self, tz: tzinfo | None) -> None:
        self.tz = tz

    def __call__(self, value: object) -> str:
        if value is None:
            return ""
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            return _text(value)
        try:
            moment = datetime.fromtimestamp(value, UTC).astimezone(self.tz)
        except (OverflowError, OSError, ValueError):
            return str(value)
        offset = moment.strftime("%z")
        return f"{moment:%Y-%m-%d %H:%M:%S} {offset[:3]}:{offset[3:]}"


# ------------------------------------------------------------------- timeline summaries

Summariser = Callable[[Mapping[str, Any], _Times], str]


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def _f(zh: str, en: str, value: object) -> str:
    """``label: value``, or nothing when there is no value."""
    text = value if isinstance(value, str) else _text(value)
    return f"{zh} / {en}: {text}" if text else ""


def _created(d: Mapping[str, Any], t: _Times) -> str:
    code = d.get("type")
    kind = taxonomy.TYPES.get(code) if isinstance(code, str) else None
    return _join(_text(d.get("title")),
                 _f("类型", "type", _bi(kind.zh, kind.en) if kind else d.get("type")),
                 _f("级别", "level", _level(d.get("level"))),
                 _f("状态", "status", _label(STATUSES, d.get("status"))),
                 _f("位置", "location", d.get("location")),
                 _f("地址", "address", d.get("address")),
                 _f("报警人", "reporter", d.get("reporter")),
                 _f("报警电话", "phone", d.get("reporter_phone")),
                 _f("来电", "call", d.get("call_id")))


def _change(table: Mapping[str, tuple[str, str]] | None) -> Summariser:
    def summary(d: Mapping[str, Any], t: _Times) -> str:
        name = (lambda v: _label(table, v)) if table is not None else _level
        return f"{name(d.get('old'))} → {name(d.get('new'))}"
    return summary


def _updated(d: Mapping[str, Any], t: _Times) -> str:
    return _join(*(_f(*FIELDS.get(k, (k, k)), _level(v) if k == "level" else v)
                   or f"{_bi(*FIELDS.get(k, (k, k)))}: —" for k, v in d.items()))


def _call_attached(d: Mapping[str, Any], t: _Times) -> str:
    return _join(_f("呼叫", "call", d.get("call_id")), _f("来电号码", "caller", d.get("caller")),
                 _f("开始", "started", t(d.get("started_at"))),
                 _f("录音", "recording", d.get("recording_id")))


def _call_placed(d: Mapping[str, Any], t: _Times) -> str:
    return _join(_f("呼叫", "call", d.get("call_id")), _f("方式", "mode", d.get("mode")),
                 _f("被叫", "targets", d.get("targets")),
                 _f("操作员", "operator", d.get("operator")))


def _call_leg(d: Mapping[str, Any], t: _Times) -> str:
    outcome = _label(OUTCOMES, d.get("outcome"))
    if d.get("status") is not None:
        outcome += f" ({_text(d.get('status'))})"
    return _join(_f("呼叫", "call", d.get("call_id")), _f("对象", "target", d.get("target")),
                 _f("终端", "endpoint", d.get("endpoint")),
                 _f("状态", "state", _label(LEG_STATES, d.get("state"))),
                 _f("结果", "outcome", outcome.strip()),
                 "已按键确认 / confirmed" if d.get("confirmed") else "",
                 _f("关系", "relation", d.get("relation")))


def _call_ended(d: Mapping[str, Any], t: _Times) -> str:
    return _join(_f("呼叫", "call", d.get("call_id")), _f("原因", "reason", d.get("reason")))


def _recording(d: Mapping[str, Any], t: _Times) -> str:
    return _join(_f("录音", "recording", d.get("recording_id")),
                 _f("呼叫", "call", d.get("call_id")),
                 _f("开始", "started", t(d.get("started_at"))))


def _people(items: object) -> str:
    if not isinstance(items, list):
        return _text(items)
    return ", ".join(f"{_text(i.get('role'))} {_text(i.get('person'))}".strip()
                     if isinstance(i, Mapping) else _text(i) for i in items)


def _resource_item(item: object) -> str:
    if not isinstance(item, Mapping):
        return _text(item)
    parts = (_label(RESOURCE_KINDS, item.get("kind")), _text(item.get("name")),
             f"×{item['quantity']}" if item.get("quantity") is not None else "")
    return " ".join(p for p in parts if p)


def _activated(d: Mapping[str, Any], t: _Times) -> str:
    resources = d.get("resources")
    listed = ", ".join(_resource_item(r) for r in resources) if isinstance(resources, list) \
        else _text(resources)
    return _join(_f("预案", "plan", d.get("plan_name")),
                 _f("级别", "level", _level(d.get("level"))),
                 _f("响应人", "responders", _people(d.get("responders"))),
                 _f("资源", "resources", listed), _f("任务", "tasks", d.get("tasks")),
                 _f("指挥呼叫", "call", d.get("call_id")),
                 _f("录音", "recording", d.get("recording_id")))


def _response_level(d: Mapping[str, Any], t: _Times) -> str:
    return _join(f"{_level(d.get('old'))} → {_level(d.get('new'))}",
                 _f("增派", "mobilised", d.get("mobilised")),
                 _f("解除", "stood down", d.get("stood_down")))


def _response_ended(d: Mapping[str, Any], t: _Times) -> str:
    return _join(_f("预案", "plan", d.get("plan_name")), _f("原因", "reason", d.get("reason")))


def _responder_state(d: Mapping[str, Any], t: _Times) -> str:
    return _join(f"{_text(d.get('role'))} {_text(d.get('person'))}".strip(),
                 f"{_label(RESPONDER_STATES, d.get('old'))} → "
                 f"{_label(RESPONDER_STATES, d.get('new'))}",
                 _f("终端", "endpoint", d.get("endpoint")),
                 _f("尝试次数", "attempts", d.get("attempts")),
                 _f("替补对象", "deputy for", d.get("deputy_for")))


def _escalated(d: Mapping[str, Any], t: _Times) -> str:
    called = "已呼叫替补 / deputy called" if d.get("deputy_called") else \
        "未呼叫替补 / no deputy called"
    return _join(f"{_text(d.get('role'))} {_text(d.get('person'))}".strip(),
                 _f("替补", "deputy", d.get("deputy")), called)


def _notification(d: Mapping[str, Any], t: _Times) -> str:
    return _join(_f("对象", "to", d.get("person")), _f("角色", "role", d.get("role")),
                 _f("原因", "reason", d.get("reason")), _f("渠道", "channel", d.get("channel")),
                 _f("内容", "text", d.get("text")), _f("错误", "error", d.get("error")))


def _message(d: Mapping[str, Any], t: _Times) -> str:
    return _text(d.get("text"))


def _task(d: Mapping[str, Any], t: _Times) -> str:
    return _join(_text(d.get("title")), _f("任务号", "task", d.get("task_id")))


def _quantity(d: Mapping[str, Any]) -> str:
    quantity = _first(d, "quantity", "count")
    return f"{_text(quantity)} {_text(d.get('unit'))}".strip() if quantity is not None else ""


def _resource(d: Mapping[str, Any], t: _Times) -> str:
    distance = d.get("distance_m")
    return _join(_f("资源", "resource", d.get("name")),
                 _f("类别", "kind", _label(RESOURCE_KINDS, d.get("kind"))),
                 _f("数量", "quantity", _quantity(d)),
                 _f("距离", "distance", f"{distance / 1000:.1f} km"
                    if isinstance(distance, int | float) else distance),
                 _f("联系人", "contact", d.get("contact")), _f("电话", "phone", d.get("phone")),
                 _f("呼叫", "call", d.get("call_id")), _f("备注", "note", d.get("note")),
                 _f("调派单", "dispatch", d.get("dispatch_id")))


def _exported(d: Mapping[str, Any], t: _Times) -> str:
    return _f("文件", "file", d.get("file"))


SUMMARIES: Final[Mapping[str, Summariser]] = {
    "incident.created": _created,
    "incident.status": _change(STATUSES),
    "incident.level": _change(None),
    "incident.updated": _updated,
    "call.attached": _call_attached,
    "call.placed": _call_placed,
    "call.leg": _call_leg,
    "call.ended": _call_ended,
    "recording.attached": _recording,
    "response.activated": _activated,
    "response.level": _response_level,
    "response.ended": _response_ended,
    "response.interrupted": _response_ended,
    "responder.state": _responder_state,
    "responder.escalated": _escalated,
    "notification.sent": _notification,
    "notification.failed": _notification,
    "message": _message,
    "task.done": _task,
    "task.reopened": _task,
    "resource.dispatched": _resource,
    "resource.released": _resource,
    "resource.contact_called": _resource,
    "evidence.exported": _exported,
}


def _summarise(kind: str, data: object, times: _Times) -> str:
    """One timeline entry's data in words; compact JSON for a kind (or a shape) we do
    not know, so the page never loses a fact."""
    summariser = SUMMARIES.get(kind)
    if summariser is not None and isinstance(data, Mapping):
        try:
            text = summariser(data, times)
        except (AttributeError, KeyError, TypeError, ValueError):
            log.debug("timeline %s: unexpected data, shown as JSON", kind, exc_info=True)
        else:
            if text:
                return text
    return _compact(data)


# ------------------------------------------------------------------ resources and board

def _as_dict(item: object) -> dict[str, Any]:
    """A record as a dict: a mapping, an object's ``as_dict()`` (the resources service's
    ``Dispatch``), a dataclass; anything else as a note."""
    if isinstance(item, Mapping):
        return dict(item)
    as_dict = getattr(item, "as_dict", None)
    if callable(as_dict):
        value = as_dict()
        if isinstance(value, Mapping):
            return dict(value)
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return dataclasses.asdict(item)
    return {"note": _text(item)}


def _first(d: Mapping[str, Any], *keys: str) -> object:
    for key in keys:
        if d.get(key) not in (None, ""):
            return d[key]
    return None


def _dispatch_row(d: Mapping[str, Any], t: _Times) -> list[str]:
    """One dispatched resource as the table shows it, read key by key with fallbacks
    (the resources service owns its shape)."""
    nested = d.get("resource")
    source = {**nested, **d} if isinstance(nested, Mapping) else d
    name = _first(source, "name", "resource_name", "title")
    if name is None and isinstance(nested, str):
        name = nested
    distance = source.get("distance_m")
    return [_text(name), _label(RESOURCE_KINDS, _first(source, "kind", "resource_kind")),
            _quantity(source), t(_first(source, "dispatched_at", "at", "created_at")),
            _text(source.get("dispatched_by")),
            _label(DISPATCH_STATES, _first(source, "state", "status")),
            t(source.get("released_at")),
            f"{distance / 1000:.1f} km" if isinstance(distance, int | float) else "",
            _text(_first(source, "note", "notes", "description"))]


# ----------------------------------------------------------------------------- recordings

_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(slots=True)
class _Recording:
    """One recording of the incident on its way into the pack."""

    recording_id: str
    call_id: str | None
    started_at: float | None
    """When the incident says it started (the index's time wins when there is one)."""
    info: RecordingInfo | None = None
    member: str | None = None
    """Its path in the zip, once exported."""
    duration: float | None = None
    sha256: str | None = None
    reason: str | None = None
    """Why it is not in the pack."""

    @property
    def start(self) -> float | None:
        return self.info.started_at if self.info is not None else self.started_at


def _incident_recordings(facts: EvidenceFacts, index: RecordingIndex) -> list[_Recording]:
    """Every recording the incident knows, by start time: its recordings table, and any
    recording id its timeline names (a fact there is evidence even if the link row was
    never written)."""
    found: dict[str, _Recording] = {}
    for row in facts.linked:
        found.setdefault(row["recording_id"], _Recording(
            row["recording_id"], row.get("call_id"), row.get("started_at")))
    for entry in facts.timeline:
        data = entry.get("data")
        if not isinstance(data, Mapping):
            continue
        rid, started = data.get("recording_id"), data.get("started_at")
        if isinstance(rid, str) and rid and rid not in found:
            call_id = data.get("call_id")
            found[rid] = _Recording(
                rid, call_id if isinstance(call_id, str) else None,
                float(started) if isinstance(started, int | float) else entry.get("at"))
    for rec in found.values():
        try:
            rec.info = index.get(rec.recording_id)
        except RecordingNotFound:
            rec.reason = _bi("录音库中没有此录音", "not in the recordings index")
    return sorted(found.values(), key=lambda r: (math.inf if r.start is None else r.start,
                                                 r.recording_id))


def _member_name(number: int, recording_id: str) -> str:
    safe = _UNSAFE.sub("_", recording_id).strip("._")[:80] or "recording"
    return f"{RECORDINGS_DIR}/{number:02d}-{safe}.ogg"


def _export_into(zf: zipfile.ZipFile, index: RecordingIndex, rec: _Recording, member: str,
                 stage: Path, when: tuple[int, int, int, int, int, int]) -> None:
    """Export one recording and add it to the zip; an unavailable one gets its reason."""
    scratch = stage / "export.ogg"
    try:
        result = export(index, rec.recording_id, scratch)
    except NoAudio as exc:
        rec.reason = f"{_bi('尚无可用音频', 'no audio yet')} ({exc})"
        return
    except ExportFailed as exc:
        if isinstance(exc.__cause__, OSError):
            raise  # we could not write: the pack fails, not the recording
        rec.reason = f"{_bi('无法导出', 'cannot be exported')} ({exc})"
        return
    except RecordingError as exc:
        rec.reason = f"{_bi('无法导出', 'cannot be exported')} ({exc})"
        return
    info = zipfile.ZipInfo(member, when)
    info.compress_type = zipfile.ZIP_STORED  # Opus does not shrink
    info.file_size = scratch.stat().st_size  # lets zipfile choose ZIP64 for a huge one
    digest = hashlib.sha256()
    with scratch.open("rb") as src, zf.open(info, "w") as dst:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
            dst.write(chunk)
    scratch.unlink()
    rec.member, rec.duration, rec.sha256 = member, result.duration, digest.hexdigest()


# ---------------------------------------------------------------------------------- page

_CSS: Final = """
body{font:14px/1.5 "PingFang SC","Microsoft YaHei","Noto Sans CJK SC",sans-serif;
margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
h1{font-size:1.6em;border-bottom:3px solid #b00;padding-bottom:.3em}
h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;width:100%;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3}
table.kv th{width:14em}
td.when{white-space:nowrap;font-variant-numeric:tabular-nums}
.rec{border:1px solid #ccc;padding:.5em 1em;margin:1em 0;break-inside:avoid}
.unavailable{color:#b00}
.meta,.hash{color:#666;font-size:.9em}
.hash{font-family:monospace;word-break:break-all}
audio{width:100%;max-width:600px}
@media print{audio{display:none}}
"""


def _e(value: object) -> str:
    return html.escape(_text(value), quote=True)


def _table(headers: Sequence[tuple[str, str]], rows: Iterable[Sequence[str]],
           when: Sequence[int] = ()) -> str:
    """A table of plain-text cells (escaped here); ``when`` marks time columns."""
    head = "".join(f"<th>{_e(_bi(*h))}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="when">{_e(c)}</td>' if i in when else f"<td>{_e(c)}</td>"
                         for i, c in enumerate(row)) + "</tr>\n" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>\n"


def _kv(rows: Iterable[tuple[tuple[str, str], str]]) -> str:
    body = "".join(f"<tr><th>{_e(_bi(*label))}</th><td>{_e(value)}</td></tr>\n"
                   for label, value in rows)
    return f'<table class="kv"><tbody>\n{body}</tbody></table>\n'


def _summary_section(incident: Mapping[str, Any], t: _Times) -> str:
    kind = _bi(_text(incident.get("type_zh")), _text(incident.get("type_en")))
    return "<section id=\"summary\"><h2>事件概要 / Incident summary</h2>\n" + _kv([
        (("编号", "Incident no."), _text(incident.get("id"))),
        (("标题", "Title"), _text(incident.get("title"))),
        (("类型", "Type"), kind),
        (("级别", "Level"), _level(incident.get("level"))),
        (("状态", "Status"), _label(STATUSES, incident.get("status"))),
        (("位置", "Location"), _text(incident.get("location"))),
        (("地址", "Address"), _text(incident.get("address"))),
        (("报警人", "Reporter"), _text(incident.get("reporter"))),
        (("报警电话", "Reporter phone"), _text(incident.get("reporter_phone"))),
        (("描述", "Description"), _text(incident.get("description"))),
        (("来源呼叫", "Source call"), _text(incident.get("source_call"))),
        (("接报时间", "Reported at"), t(incident.get("reported_at"))),
        (("建立时间", "Created at"), t(incident.get("created_at"))),
        (("建立人", "Created by"), _text(incident.get("created_by"))),
        (("最后更新", "Last updated"), t(incident.get("updated_at"))),
        (("关闭时间", "Closed at"), t(incident.get("closed_at"))),
    ]) + "</section>\n"


def _response_section(response: Mapping[str, Any] | None, t: _Times) -> str:
    out = ["<section id=\"response\"><h2>响应与确认 / Response and acknowledgements</h2>\n"]
    if response is None:
        out.append(f"<p>{_e(_bi('未启动预案响应', 'No plan was activated'))}</p>\n")
        return "".join(out) + "</section>\n"
    out.append(_kv([
        (("预案", "Plan"), _text(response.get("plan_name"))),
        (("响应级别", "Level"), _level(response.get("level"))),
        (("状态", "State"), _label(RESPONSE_STATES, response.get("state"))),
        (("启动时间", "Started at"), t(response.get("started_at"))),
        (("启动人", "Started by"), _text(response.get("started_by"))),
        (("结束时间", "Ended at"), t(response.get("ended_at"))),
    ]))
    board = [_as_dict(r) for r in response.get("responders") or ()]
    by_id = {r.get("id"): r for r in board}

    def deputy_for(r: Mapping[str, Any]) -> str:
        original = by_id.get(r.get("deputy_for"))
        if original is None:
            return _text(r.get("deputy_for"))
        return f"{_text(original.get('person'))} ({_text(original.get('role'))})"

    out.append(_table(
        [("角色", "Role"), ("人员", "Person"), ("替补对象", "Deputy for"),
         ("最终状态", "Final state"), ("终端", "Endpoint"), ("呼叫次数", "Attempts"),
         ("接听时间", "Answered at"), ("确认时间", "Confirmed at"), ("已升级", "Escalated"),
         ("已通知", "Notified")],
        ([_text(r.get("role")), _text(r.get("person")), deputy_for(r),
          _label(RESPONDER_STATES, r.get("state")), _text(r.get("endpoint")),
          _text(r.get("attempts")), t(r.get("answered_at")), t(r.get("confirmed_at")),
          _text(bool(r.get("escalated"))), _text(bool(r.get("notified")))] for r in board),
        when=(6, 7)))
    return "".join(out) + "</section>\n"


def _resources_section(dispatches: list[dict[str, Any]] | None, t: _Times) -> str:
    out = "<section id=\"resources\"><h2>资源调派 / Resources dispatched</h2>\n"
    if dispatches is None:
        return out + f"<p>{_e(_bi('无资源调派记录', 'No dispatch records available'))}</p>" \
                     "</section>\n"
    if not dispatches:
        return out + f"<p>{_e(_bi('未调派资源', 'No resources dispatched'))}</p></section>\n"
    return out + _table(
        [("资源", "Resource"), ("类别", "Kind"), ("数量", "Quantity"),
         ("调派时间", "Dispatched at"), ("调派人", "Dispatched by"), ("状态", "State"),
         ("撤回时间", "Released at"), ("距离", "Distance"), ("备注", "Note")],
        (_dispatch_row(d, t) for d in dispatches), when=(3, 6)) + "</section>\n"


def _tasks_section(tasks: list[dict[str, Any]], t: _Times) -> str:
    out = "<section id=\"tasks\"><h2>任务 / Tasks</h2>\n"
    if not tasks:
        return out + f"<p>{_e(_bi('无任务', 'No tasks'))}</p></section>\n"
    return out + _table(
        [("任务", "Task"), ("角色", "Role"), ("期限", "Due"), ("状态", "State"),
         ("完成时间", "Done at"), ("完成人", "Done by")],
        ([_text(k.get("title")), _text(k.get("role")), t(k.get("due_at")),
          _label(TASK_STATES, k.get("state"))
          + (" — 已超期 / overdue" if k.get("overdue") else ""),
          t(k.get("done_at")), _text(k.get("done_by"))] for k in tasks),
        when=(2, 4)) + "</section>\n"


def _timeline_section(timeline: Sequence[Mapping[str, Any]], t: _Times) -> str:
    rows = ([_text(e.get("id")), t(e.get("at")),
             _label(KINDS, e.get("kind")), _text(e.get("actor")),
             _summarise(_text(e.get("kind")), e.get("data"), t)] for e in timeline)
    return ("<section id=\"timeline\"><h2>时间线 / Timeline</h2>\n"
            + _table([("序号", "No."), ("时间", "Time"), ("事件", "Event"), ("操作人", "Actor"),
                      ("详情", "Details")], rows, when=(1,)) + "</section>\n")


def _recordings_section(recs: Sequence[_Recording], t: _Times) -> str:
    out = ["<section id=\"recordings\"><h2>录音 / Recordings</h2>\n"]
    if not recs:
        out.append(f"<p>{_e(_bi('本事件没有录音', 'This incident has no recordings'))}</p>\n")
    for number, rec in enumerate(recs, 1):
        info = rec.info
        participants = ", ".join(
            f"{p.peer or p.leg_id} ({t(p.joined_at)} – {t(p.left_at) or '…'})"
            for p in info.participants) if info is not None else ""
        out.append(f'<article class="rec" id="rec-{number:02d}">'
                   f"<h3>{number:02d}. {_e(rec.recording_id)}</h3>\n")
        out.append(_kv([
            (("开始时间", "Started at"), t(rec.start)),
            (("结束时间", "Ended at"), t(info.ended_at) if info else ""),
            (("时长", "Duration"), _duration(rec.duration if rec.duration is not None
                                            else info.duration if info else None)),
            (("状态", "Status"), _label(RECORDING_STATUSES, info.status) if info else ""),
            (("呼叫", "Call"), _text(rec.call_id or (info.call_id if info else None))),
            (("参与方", "Participants"), participants),
        ]))
        if rec.member is not None:
            src = _e(rec.member)
            out.append(f'<audio controls preload="none" src="{src}"></audio>\n'
                       f'<p><a href="{src}" download>{_e(_bi("下载", "Download"))}: {src}</a></p>\n'
                       f'<p class="hash">SHA-256: {_e(rec.sha256)}</p>\n')
        else:
            out.append(f'<p class="unavailable">{_e(_bi("不可用", "Unavailable"))}: '
                       f"{_e(rec.reason)}</p>\n")
        out.append("</article>\n")
    return "".join(out) + "</section>\n"


def _render_report(facts: EvidenceFacts, recs: Sequence[_Recording], times: _Times,
                   generated_at: float) -> str:
    """The whole page: plain HTML5, inline CSS, nothing to fetch, no script to run."""
    incident = facts.incident
    title = (f"复盘证据包 / Review pack — #{_text(incident.get('id'))} "
             f"{_text(incident.get('title'))}")
    zone = times(generated_at)[-6:]
    return "".join([
        "<!DOCTYPE html>\n<html lang=\"zh-CN\">\n<head>\n<meta charset=\"utf-8\">\n",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n",
        f"<header><h1>{_e(title)}</h1>\n",
        f"<p class=\"meta\">{_e(_bi('生成时间', 'Generated at'))}: {_e(times(generated_at))}"
        f" · {_e(_bi('时间均为本地时间', 'times are local'))} (UTC{_e(zone)})"
        f" · {_e(_bi('原始数据', 'raw data'))}: {TIMELINE}, {INCIDENT}</p></header>\n",
        _summary_section(incident, times),
        _response_section(facts.response, times),
        _resources_section(facts.dispatches, times),
        _tasks_section(facts.tasks, times),
        _timeline_section(facts.timeline, times),
        _recordings_section(recs, times),
        "</body>\n</html>\n",
    ])


# ------------------------------------------------------------------------------ the pack

def _zip_time(ts: float, tz: tzinfo | None) -> tuple[int, int, int, int, int, int]:
    moment = datetime.fromtimestamp(ts, UTC).astimezone(tz)
    if moment.year < 1980:  # the zip format starts in 1980
        return (1980, 1, 1, 0, 0, 0)
    return (moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)


def collect_evidence(incident_id: int, *, incidents: IncidentService,
                     responses: ResponseSource | None,
                     resources: Any | None = None) -> EvidenceFacts:
    """Read what the pack tells from the services; call it on the event loop's thread.

    ``responses`` is the ``ResponseService`` (None: no board, no tasks); ``resources``
    anything with ``dispatches(incident_id)`` (the ``ResourceService``; None: not
    available). ``NotFound`` for an unknown incident.
    """
    incident = incidents.get(incident_id)
    return EvidenceFacts(
        incident_id=incident_id, incident=incident,
        timeline=incidents.timeline(incident_id), linked=incidents.recordings(incident_id),
        response=responses.get(incident_id) if responses is not None else None,
        tasks=responses.tasks(incident_id) if responses is not None else [],
        dispatches=([_as_dict(d) for d in resources.dispatches(incident_id) or ()]
                    if resources is not None else None))


def write_evidence_pack(facts: EvidenceFacts, out_path: Path, *, recordings: RecordingIndex,
                        clock: Callable[[], float] = time.time,
                        tz: tzinfo | None = None) -> EvidenceResult:
    """Write the pack to ``out_path`` (a zip), replacing any file there; any thread.

    ``tz`` is the zone the report shows times in (default: the hub's). Raises
    ``EvidenceFailed`` when the pack cannot be written; nothing is left at ``out_path``
    or beside it then (a file already there stays as it was).
    """
    out_path = Path(out_path)
    recs = _incident_recordings(facts, recordings)
    generated_at = clock()
    times = _Times(tz)
    when = _zip_time(generated_at, tz)
    try:
        with tempfile.TemporaryDirectory(prefix=f".{out_path.name}.",
                                         dir=out_path.parent) as staging:
            stage = Path(staging)
            partial = stage / "pack.zip"
            with partial.open("wb") as raw:
                with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                    for number, rec in enumerate(recs, 1):
                        if rec.info is not None:
                            _export_into(zf, recordings, rec,
                                         _member_name(number, rec.recording_id), stage, when)

                    def add(name: str, text: str) -> None:
                        zf.writestr(zipfile.ZipInfo(name, when), text.encode("utf-8"),
                                    compress_type=zipfile.ZIP_DEFLATED)

                    add(REPORT, _render_report(facts, recs, times, generated_at))
                    add(TIMELINE, json.dumps(facts.timeline, ensure_ascii=False, indent=1))
                    add(INCIDENT, json.dumps({
                        "generated_at": generated_at, "incident": facts.incident,
                        "response": facts.response, "tasks": facts.tasks,
                        "dispatches": facts.dispatches,
                        "recordings": [{
                            "recording_id": r.recording_id, "call_id": r.call_id,
                            "started_at": r.start, "file": r.member, "duration": r.duration,
                            "sha256": r.sha256, "unavailable": r.reason} for r in recs],
                    }, ensure_ascii=False, indent=1, default=_json_default))
                raw.flush()
                os.fsync(raw.fileno())  # evidence: on disk before it takes the name
            os.replace(partial, out_path)
    except (OSError, ExportFailed) as exc:
        raise EvidenceFailed(f"cannot write the evidence pack {os.fspath(out_path)!r}: "
                             f"{exc}") from exc
    result = EvidenceResult(
        path=out_path,
        recordings=tuple(r.recording_id for r in recs if r.member is not None),
        missing={r.recording_id: r.reason or "" for r in recs if r.member is None},
        size=out_path.stat().st_size)
    log.info("incident %d: evidence pack %s: %d recording(s), %d unavailable, %d bytes",
             facts.incident_id, out_path, len(result.recordings), len(result.missing),
             result.size)
    return result


def build_evidence_pack(incident_id: int, out_path: Path, *, incidents: IncidentService,
                        responses: ResponseSource | None, recordings: RecordingIndex,
                        resources: Any | None = None, clock: Callable[[], float] = time.time,
                        tz: tzinfo | None = None) -> EvidenceResult:
    """``collect_evidence`` then ``write_evidence_pack``, in the calling thread.

    ``NotFound`` for an unknown incident (before the disk is touched), ``EvidenceFailed``
    when the pack cannot be written.
    """
    facts = collect_evidence(incident_id, incidents=incidents, responses=responses,
                             resources=resources)
    return write_evidence_pack(facts, out_path, recordings=recordings, clock=clock, tz=tz)


__all__ = ["EvidenceFacts", "EvidenceFailed", "EvidenceResult", "ResponseSource",
           "build_evidence_pack", "collect_evidence", "write_evidence_pack"]

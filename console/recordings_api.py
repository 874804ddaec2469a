"""Recordings over HTTP: the list, one recording's facts, and its audio to play back.

``GET /api/recordings/{id}/audio`` exports the segments (closed ones, and a crashed
recording's recovered open one) into one Ogg/Opus file the page's audio player takes.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from starlette.background import BackgroundTask
from starlette.responses import FileResponse
from starlette.routing import BaseRoute

from recordings.errors import RecordingNotFound
from recordings.export import export
from recordings.index import RecordingIndex, RecordingInfo

from .api import Api, ApiCall, Param
from .auth import Role
from .errors import ApiError

RECORDING: dict[str, Any] = {"type": "object", "properties": {
    "id": {"type": "string"}, "kind": {"type": "string", "enum": ["bridge", "leg"]},
    "bridge_id": {"type": "string"}, "call_id": {"type": "string", "nullable": True},
    "started_at": {"type": "number"}, "ended_at": {"type": "number", "nullable": True},
    "duration": {"type": "number"}, "status": {"type": "string"},
    "codec": {"type": "string"}, "segments": {"type": "integer"},
    "participants": {"type": "array", "items": {"type": "string"}}}}


def _as_dict(info: RecordingInfo) -> dict[str, Any]:
    return {"id": info.id, "kind": info.kind, "bridge_id": info.bridge_id,
            "call_id": info.call_id, "started_at": info.started_at, "ended_at": info.ended_at,
            "duration": round(info.duration, 3), "status": info.status, "codec": info.codec,
            "segments": len(info.segments),
            "participants": [p.peer for p in info.participants]}


def recordings_routes(api: Api, index: RecordingIndex) -> list[BaseRoute]:
    def find(recording_id: str) -> RecordingInfo:
        try:
            return index.get(recording_id)
        except RecordingNotFound:
            raise ApiError(404, "recording-not-found",
                           f"no recording {recording_id!r}") from None

    async def list_recordings(call: ApiCall) -> Any:
        infos = index.list(limit=call.query.get("limit") or 50,
                           bridge_id=call.query.get("bridge_id"))
        return [_as_dict(info) for info in infos]

    async def get_recording(call: ApiCall) -> Any:
        return _as_dict(find(call.path["recording_id"]))

    async def audio(call: ApiCall) -> Any:
        info = find(call.path["recording_id"])
        if not info.segments:
            raise ApiError(409, "recording-empty", f"recording {info.id} has no audio yet")
        folder = Path(tempfile.mkdtemp(prefix="hub-export-"))
        out = folder / f"{info.id}.ogg"
        await asyncio.to_thread(export, index, info.id, out)

        def cleanup() -> None:
            out.unlink(missing_ok=True)
            folder.rmdir()

        return FileResponse(out, media_type="audio/ogg", filename=out.name,
                            background=BackgroundTask(cleanup))

    tags = ("recordings",)
    return [
        api.route("GET", "/api/recordings", list_recordings, role=Role.DISPATCHER, tags=tags,
                  params=[Param("limit", {"type": "integer", "minimum": 1, "maximum": 500}),
                          Param("bridge_id", {"type": "string"})],
                  summary="Recordings, newest first",
                  responses={200: ("Recordings", {"type": "array", "items": RECORDING})}),
        api.route("GET", "/api/recordings/{recording_id}", get_recording,
                  role=Role.DISPATCHER, tags=tags, summary="One recording",
                  responses={200: ("The recording", RECORDING)}),
        api.route("GET", "/api/recordings/{recording_id}/audio", audio, role=Role.DISPATCHER,
                  action="recording.play", tags=tags, errors=(409,), response_media="audio/ogg",
                  summary="The recording as one Ogg/Opus file, for playback",
                  responses={200: ("Ogg/Opus audio", None)}),
    ]

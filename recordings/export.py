"""Export a recording as one playable file.

Every segment is decoded in order (a truncated last one up to where it is good)
and the audio re-encoded once, at the recording's sample rate, into the format the
output's extension names. Segments are joined end to end: the index keeps their
wall-clock times, the export is the audio. The file is written next to its target
and renamed into place, so a failed export never leaves half a file under the
requested name.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import av
import numpy as np
from av.audio.stream import AudioStream
from av.error import FFmpegError

from recordings.audio import SegmentReader
from recordings.errors import ExportFailed, NoAudio, UndecodableSegment, UnsupportedFormat
from recordings.index import RecordingIndex
from recordings.writer import OPUS_BITRATES

log = logging.getLogger(__name__)

#: Extension -> (libavformat muxer, encoder).
FORMATS: Final = {
    ".wav": ("wav", "pcm_s16le"),
    ".flac": ("flac", "flac"),
    ".ogg": ("ogg", "libopus"),
    ".opus": ("ogg", "libopus"),
}


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What ``export`` wrote."""

    path: Path
    """The file written."""
    recording_id: str
    """The recording exported."""
    duration: float
    """Seconds of audio in the file."""
    sample_rate: int
    """Its sample rate (the recording's)."""
    segments: int
    """Segments that went into it."""
    skipped: tuple[str, ...]
    """Segments that did not decode at all (data-dir-relative paths)."""


def export_format(out_path: str | os.PathLike[str]) -> tuple[str, str]:
    """(muxer, encoder) for an output path, or ``UnsupportedFormat``."""
    suffix = Path(out_path).suffix.lower()
    try:
        return FORMATS[suffix]
    except KeyError:
        known = ", ".join(FORMATS)
        raise UnsupportedFormat(
            f"cannot export to {os.fspath(out_path)!r}: unknown extension "
            f"{suffix or '(none)'!r}, use one of {known}"
        ) from None


def export(
    index: RecordingIndex, recording_id: str, out_path: str | os.PathLike[str]
) -> ExportResult:
    """Write ``recording_id`` to ``out_path`` as one file (format from the extension).

    Raises ``UnsupportedFormat`` (extension), ``RecordingNotFound`` (id), ``NoAudio``
    (nothing decodes) or ``ExportFailed`` (cannot write the file).
    """
    muxer, encoder = export_format(out_path)
    info = index.get(recording_id)
    if not info.segments:
        raise NoAudio(f"recording {recording_id} has no segments")
    target = Path(out_path)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.part")
    rate = info.sample_rate
    written = 0
    used = 0
    skipped: list[str] = []
    try:
        with av.open(os.fspath(temporary), "w", format=muxer) as container:
            stream = container.add_stream(encoder, rate=rate, layout="mono")
            assert isinstance(stream, AudioStream)
            if encoder == "libopus":
                stream.codec_context.bit_rate = OPUS_BITRATES[rate]
            stream.codec_context.format = "s16"
            for segment in info.segments:
                try:
                    with SegmentReader(index.segment_path(segment), rate) as reader:
                        before = written
                        for chunk in reader:
                            if not len(chunk):
                                continue
                            frame = av.AudioFrame.from_ndarray(
                                np.ascontiguousarray(chunk).reshape(1, -1),
                                format="s16",
                                layout="mono",
                            )
                            frame.sample_rate = rate
                            frame.pts = written
                            written += len(chunk)
                            container.mux(stream.encode(frame))
                        if reader.bad_packets:
                            log.info(
                                "recording %s: segment %s has a damaged tail (%d packet(s))",
                                recording_id,
                                segment.path,
                                reader.bad_packets,
                            )
                        if written > before:
                            used += 1
                        else:
                            log.warning(
                                "recording %s: segment %s holds no audio",
                                recording_id,
                                segment.path,
                            )
                            skipped.append(segment.path)
                except UndecodableSegment as exc:
                    log.warning("recording %s: skipping segment: %s", recording_id, exc)
                    skipped.append(segment.path)
            container.mux(stream.encode(None))
        if not written:
            raise NoAudio(f"recording {recording_id} has no decodable audio")
        os.replace(temporary, target)
    except (OSError, FFmpegError) as exc:
        raise ExportFailed(f"cannot write {os.fspath(target)!r}: {exc}") from exc
    finally:
        temporary.unlink(missing_ok=True)
    return ExportResult(
        path=target,
        recording_id=recording_id,
        duration=written / rate,
        sample_rate=rate,
        segments=used,
        skipped=tuple(skipped),
    )

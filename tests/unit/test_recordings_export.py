"""Export: one playable file per recording, in the format its extension names."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from recordings.audio import decode_segment
from recordings.errors import ExportFailed, NoAudio, RecordingNotFound, UnsupportedFormat
from recordings.export import export
from recordings.index import RecordingIndex
from recordings.writer import SegmentedRecorder
from tests.unit.recordings_util import FFMPEG, ffmpeg_seconds, frames, peak_frequency, tone

T0 = 1_763_700_000.0


@pytest.fixture
def index(tmp_path: Path) -> Iterator[RecordingIndex]:
    with RecordingIndex.open(tmp_path / "data") as opened:
        yield opened


@pytest.fixture
def recording(index: RecordingIndex) -> str:
    """3.3 s of 440 Hz at 16 kHz in 1 s FLAC segments."""
    recording_id = index.start(
        kind="bridge", bridge_id="b1", codec="flac", sample_rate=16000, started_at=T0
    )
    recorder = SegmentedRecorder(
        index.segments_root,
        recording_id=recording_id,
        sample_rate=16000,
        codec="flac",
        segment_seconds=1.0,
        index=index,
    )
    for number, frame in enumerate(frames(tone(440, 3.3, 16000), 16000)):
        recorder.write(frame, T0 + number * 0.02)
    recorder.close()
    index.finish(recording_id, T0 + 3.3)
    return recording_id


@pytest.mark.parametrize(
    ("name", "magic"),
    [("out.wav", b"RIFF"), ("out.flac", b"fLaC"), ("out.ogg", b"OggS"), ("OUT.OPUS", b"OggS")],
)
def test_export_formats(
    index: RecordingIndex, recording: str, tmp_path: Path, name: str, magic: bytes
) -> None:
    result = export(index, recording, tmp_path / name)
    assert (result.recording_id, result.segments, result.skipped) == (recording, 4, ())
    assert result.sample_rate == 16000
    assert result.duration == pytest.approx(3.3, abs=0.001)
    assert result.path.read_bytes()[:4] == magic
    decoded = decode_segment(result.path, 16000)
    assert decoded.duration == pytest.approx(3.3, abs=0.04)
    assert peak_frequency(decoded.pcm, 16000) == pytest.approx(440, abs=0.5)
    if FFMPEG:
        assert ffmpeg_seconds(result.path) == pytest.approx(3.3, abs=0.04)
    assert {p.name for p in tmp_path.iterdir()} == {"data", name}  # no temp left


def test_export_errors(index: RecordingIndex, recording: str, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedFormat, match=r"'\.mp3'"):
        export(index, recording, tmp_path / "out.mp3")
    with pytest.raises(UnsupportedFormat, match="none"):
        export(index, "R19990101-0001", tmp_path / "out")  # format first, then the id
    with pytest.raises(RecordingNotFound, match="R19990101-0001"):
        export(index, "R19990101-0001", tmp_path / "out.wav")
    with pytest.raises(ExportFailed, match="no-such-dir"):
        export(index, recording, tmp_path / "no-such-dir" / "out.wav")
    empty = index.start(
        kind="bridge", bridge_id="b2", codec="opus", sample_rate=8000, started_at=T0
    )
    with pytest.raises(NoAudio, match=empty):
        export(index, empty, tmp_path / "out.wav")
    assert not (tmp_path / "out.wav").exists()


def test_export_skips_a_segment_that_does_not_decode(
    index: RecordingIndex, recording: str, tmp_path: Path
) -> None:
    broken = index.get(recording).segments[1]
    index.segment_path(broken).write_bytes(b"garbage")
    result = export(index, recording, tmp_path / "out.wav")
    assert result.skipped == (broken.path,)
    assert result.duration == pytest.approx(2.3, abs=0.001)

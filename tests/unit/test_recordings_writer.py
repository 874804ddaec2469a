"""SegmentedRecorder: segments that close, decode and export; the open one after a kill."""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from recordings.audio import decode_segment
from recordings.errors import InvalidInput, RecordingError, RecordingIOError
from recordings.export import export
from recordings.index import RecordingIndex
from recordings.writer import GAP_FILL_MAX, DiskWriter, SegmentedRecorder
from tests.unit.recordings_util import FFMPEG, ffmpeg_seconds, frames, peak_frequency, tone

T0 = 1_763_700_000.0  # 2025-11-21 04:40 UTC
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed")


@pytest.fixture
def index(tmp_path: Path) -> Iterator[RecordingIndex]:
    with RecordingIndex.open(tmp_path / "data") as opened:
        yield opened


class ManualWriter(DiskWriter):
    """A DiskWriter that runs nothing until told: shows what happens when."""

    def __init__(self) -> None:
        super().__init__()
        self.jobs: list[tuple[str, Callable[[], None]]] = []

    def submit(self, key: str, job: Callable[[], None]) -> None:
        self.jobs.append((key, job))

    def run(self) -> None:
        jobs, self.jobs = self.jobs, []
        for _, job in jobs:
            job()

    def wait(self, key: str, timeout: float | None = None) -> bool:
        self.run()
        return True


def record(
    index: RecordingIndex,
    codec: str,
    rate: int,
    pcm: np.ndarray,
    *,
    segment_seconds: float = 2.0,
    flush_seconds: float = 1.0,
) -> str:
    recording_id = index.start(
        kind="bridge", bridge_id="b1", codec=codec, sample_rate=rate, started_at=T0
    )
    recorder = SegmentedRecorder(
        index.segments_root,
        recording_id=recording_id,
        sample_rate=rate,
        codec=codec,
        segment_seconds=segment_seconds,
        flush_seconds=flush_seconds,
        index=index,
    )
    for number, frame in enumerate(frames(pcm, rate)):
        recorder.write(frame, T0 + number * 0.02)
    recorder.close()
    index.finish(recording_id, T0 + len(pcm) / rate)
    return recording_id


@pytest.mark.parametrize(("codec", "rate"), [("opus", 8000), ("flac", 8000), ("opus", 48000)])
def test_five_seconds_in_two_second_segments(
    index: RecordingIndex, tmp_path: Path, codec: str, rate: int
) -> None:
    recording_id = record(index, codec, rate, tone(440, 5.0, rate))
    info = index.get(recording_id)
    assert info.status == "complete"
    assert [s.seq for s in info.segments] == [0, 1, 2]
    assert all(s.closed for s in info.segments)
    assert [s.started_at - T0 for s in info.segments] == pytest.approx([0, 2, 4])
    assert [s.duration for s in info.segments] == pytest.approx([2, 2, 1])
    extension = "opus" if codec == "opus" else "flac"
    assert [s.path for s in info.segments] == [
        f"recordings/{recording_id}/{n:05d}.{extension}" for n in range(3)
    ]
    for segment in info.segments:
        path = index.segment_path(segment)
        assert segment.bytes == path.stat().st_size > 0
        decoded = decode_segment(path, rate)
        assert decoded.bad_packets == 0
        assert decoded.duration == pytest.approx(segment.duration, abs=0.002)
        assert decoded.tags["hub_recording"] == recording_id
        assert float(decoded.tags["hub_started_at"]) == pytest.approx(segment.started_at)
        assert peak_frequency(decoded.pcm, rate) == pytest.approx(440, abs=1)
        if FFMPEG:
            assert ffmpeg_seconds(path) == pytest.approx(segment.duration, abs=0.002)

    result = export(index, recording_id, tmp_path / "out.wav")
    exported = decode_segment(result.path)
    assert exported.sample_rate == rate
    assert result.duration == pytest.approx(5.0, abs=0.04)
    assert exported.duration == pytest.approx(5.0, abs=0.04)
    assert peak_frequency(exported.pcm, rate) == pytest.approx(440, abs=0.5)


def test_write_does_no_io_and_jobs_keep_order(index: RecordingIndex) -> None:
    io = ManualWriter()
    recording_id = index.start(
        kind="bridge", bridge_id="b1", codec="opus", sample_rate=8000, started_at=T0
    )
    recorder = SegmentedRecorder(
        index.segments_root,
        recording_id=recording_id,
        sample_rate=8000,
        segment_seconds=1.0,
        flush_seconds=0.5,
        index=index,
        io=io,
    )
    for number, frame in enumerate(frames(tone(440, 2.6, 8000), 8000)):
        recorder.write(frame, T0 + number * 0.02)
    assert not index.segments_root.exists()  # nothing touched the disk in the tick
    assert index.get(recording_id).segments == ()
    # open, flush at 0.5 s, close at 1 s; twice; then open and a flush for the third.
    assert len(io.jobs) == 8
    io.run()
    info = index.get(recording_id)
    assert [(s.seq, s.closed) for s in info.segments] == [(0, True), (1, True), (2, False)]
    recorder.close()
    assert all(s.closed for s in index.get(recording_id).segments)


@pytest.mark.parametrize("codec", ["opus", "flac"])
def test_open_segment_plays_up_to_its_last_flush(
    index: RecordingIndex, tmp_path: Path, codec: str
) -> None:
    """What a kill -9 leaves: the flushed bytes of the open segment, maybe a torn tail."""
    io = DiskWriter()
    recording_id = index.start(
        kind="bridge", bridge_id="b1", codec=codec, sample_rate=8000, started_at=T0
    )
    recorder = SegmentedRecorder(
        index.segments_root,
        recording_id=recording_id,
        sample_rate=8000,
        codec=codec,
        segment_seconds=10.0,
        flush_seconds=0.5,
        index=index,
        io=io,
    )
    for number, frame in enumerate(frames(tone(440, 1.9, 8000), 8000)):
        recorder.write(frame, T0 + number * 0.02)
    assert io.wait(recording_id, 10)  # the flushes at 0.5, 1.0 and 1.5 s are on disk
    (segment,) = index.get(recording_id).segments
    assert not segment.closed
    snapshot = tmp_path / f"killed.{codec}"
    shutil.copyfile(index.segment_path(segment), snapshot)
    decoded = decode_segment(snapshot, 8000)
    assert 1.5 - 0.11 <= decoded.duration <= 1.9  # FLAC holds back up to one 72 ms block
    assert peak_frequency(decoded.pcm, 8000) == pytest.approx(440, abs=1)

    torn = tmp_path / f"torn.{codec}"
    data = snapshot.read_bytes()
    torn.write_bytes(data[: len(data) - 37])  # a write cut in the middle of the last page
    decoded_torn = decode_segment(torn, 8000)
    assert 0.5 <= decoded_torn.duration <= decoded.duration
    if FFMPEG:
        assert ffmpeg_seconds(snapshot) == pytest.approx(decoded.duration, abs=0.002)
        assert ffmpeg_seconds(torn) > 0.5
    recorder.close()
    io.close(10)


def test_a_stall_is_filled_with_silence_and_a_long_one_starts_a_segment(
    index: RecordingIndex,
) -> None:
    recording_id = index.start(
        kind="bridge", bridge_id="b1", codec="flac", sample_rate=8000, started_at=T0
    )
    recorder = SegmentedRecorder(
        index.segments_root,
        recording_id=recording_id,
        sample_rate=8000,
        codec="flac",
        segment_seconds=60,
        index=index,
    )
    frame = tone(440, 0.02, 8000)
    recorder.write(frame, T0)
    recorder.write(frame, T0 + 0.02 + 0.01)  # jitter: no fill
    recorder.write(frame, T0 + 1.04)  # ~1 s stall: filled
    assert recorder.duration == pytest.approx(1.06)
    recorder.write(frame, T0 + 1.06 + GAP_FILL_MAX + 1)  # a long hole: a new segment
    recorder.close()
    segments = index.get(recording_id).segments
    assert [round(s.started_at - T0, 2) for s in segments] == [0, round(7.06, 2)]
    assert [s.duration for s in segments] == pytest.approx([1.06, 0.02])
    pcm = decode_segment(index.segment_path(segments[0])).pcm
    assert not pcm[400:8000].any()  # the stall is silence


def test_disk_failure_is_logged_and_raised_at_close(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    recorder = SegmentedRecorder(blocker, recording_id="R1", sample_rate=8000)
    with caplog.at_level(logging.ERROR, logger="recordings.writer"):
        for number, frame in enumerate(frames(tone(440, 1.5, 8000), 8000)):
            recorder.write(frame, T0 + number * 0.02)
        with pytest.raises(RecordingIOError, match="R1"):
            recorder.close()
    assert "recording R1: cannot create" in caplog.text
    assert len(recorder.failures) == 1  # the failed segment's later jobs are skipped


def test_refuses_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="sample rate"):
        SegmentedRecorder(tmp_path, recording_id="R1", sample_rate=44100)
    with pytest.raises(InvalidInput, match="codec"):
        SegmentedRecorder(tmp_path, recording_id="R1", sample_rate=8000, codec="mp3")
    with pytest.raises(InvalidInput, match="recording id"):
        SegmentedRecorder(tmp_path, recording_id="../x", sample_rate=8000)
    with pytest.raises(InvalidInput, match="flush_seconds"):
        SegmentedRecorder(tmp_path, recording_id="R1", sample_rate=8000, flush_seconds=0)
    recorder = SegmentedRecorder(tmp_path, recording_id="R1", sample_rate=8000)
    with pytest.raises(InvalidInput, match="int16"):
        recorder.write(np.zeros(160, dtype=np.float32), T0)
    recorder.close()
    with pytest.raises(RecordingError, match="closed"):
        recorder.write(np.zeros(160, dtype=np.int16), T0)


def test_disk_writer_keeps_order_per_key_and_survives_a_failing_job(
    caplog: pytest.LogCaptureFixture,
) -> None:
    writer = DiskWriter(threads=3)
    seen: dict[str, list[int]] = {"a": [], "b": []}
    lock = threading.Lock()

    def job(key: str, number: int) -> Callable[[], None]:
        def run() -> None:
            with lock:
                seen[key].append(number)

        return run

    def broken() -> None:
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="recordings.writer"):
        for number in range(200):
            writer.submit("a", job("a", number))
            writer.submit("b", job("b", number))
            if number == 100:
                writer.submit("a", broken)
        assert writer.wait("a", 10) and writer.wait("b", 10)
        assert writer.close(10)
    assert seen == {"a": list(range(200)), "b": list(range(200))}
    assert "a recording I/O job failed" in caplog.text
    with pytest.raises(RecordingError, match="closed"):
        writer.submit("a", job("a", 0))

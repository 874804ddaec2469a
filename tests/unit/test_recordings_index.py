"""The recordings index: schema, ids, queries, and recovery after a crash."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from recordings.errors import IndexSchemaError, InvalidInput, RecordingNotFound
from recordings.index import DB_FILENAME, MIGRATIONS, RecordingIndex
from recordings.writer import DiskWriter, SegmentedRecorder
from tests.unit.recordings_util import frames, tone

T0 = 1_763_700_000.0  # 2025-11-21 04:40:00 UTC


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def index(data_dir: Path) -> Iterator[RecordingIndex]:
    with RecordingIndex.open(data_dir) as opened:
        yield opened


def start(index: RecordingIndex, at: float = T0, bridge: str = "b1", **options: str) -> str:
    return index.start(
        kind=options.get("kind", "bridge"),
        bridge_id=bridge,
        call_id=options.get("call_id"),
        leg_id=options.get("leg_id"),
        codec=options.get("codec", "opus"),
        sample_rate=8000,
        started_at=at,
    )


def test_open_creates_a_private_wal_database_with_a_schema_version(
    index: RecordingIndex, data_dir: Path
) -> None:
    path = data_dir / DB_FILENAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert index.schema_version == len(MIGRATIONS)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"recordings", "recording_segments", "recording_participants"} <= tables
    assert "users" not in tables  # independent of the hub store


def test_a_newer_schema_is_refused(data_dir: Path) -> None:
    RecordingIndex.open(data_dir).close()
    with sqlite3.connect(data_dir / DB_FILENAME) as conn:
        conn.execute("INSERT INTO schema_version VALUES (99, 'future', 0)")
    with pytest.raises(IndexSchemaError, match="newer"):
        RecordingIndex.open(data_dir)


def test_ids_count_per_utc_day(index: RecordingIndex) -> None:
    assert start(index) == "R20251121-0001"
    assert start(index, T0 + 10) == "R20251121-0002"
    assert start(index, T0 + 86400) == "R20251122-0001"
    assert start(index, T0 + 20) == "R20251121-0003"


def test_start_refuses_bad_input(index: RecordingIndex) -> None:
    with pytest.raises(InvalidInput, match="kind"):
        start(index, kind="room")
    with pytest.raises(InvalidInput, match="leg_id"):
        start(index, kind="leg")
    with pytest.raises(InvalidInput, match="leg_id"):
        start(index, leg_id="L1")
    with pytest.raises(InvalidInput, match="codec"):
        start(index, codec="mp3")
    with pytest.raises(InvalidInput, match="sample rate"):
        index.start(kind="bridge", bridge_id="b", codec="opus", sample_rate=11025, started_at=T0)


def test_segments_participants_finish_and_queries(index: RecordingIndex, data_dir: Path) -> None:
    first = start(index, call_id="C7")
    second = start(index, T0 + 60, bridge="b2")
    leg = start(index, T0 + 61, bridge="b2", kind="leg", leg_id="L1")
    index.add_segment(first, 0, data_dir / "recordings" / first / "00000.opus", T0)
    index.close_segment(
        first, 0, path=data_dir / "recordings" / first / "00000.opus",
        started_at=T0, ended_at=T0 + 60, size=1234,
    )  # fmt: skip
    index.add_segment(first, 1, f"recordings/{first}/00001.opus", T0 + 60)
    index.participant_joined(first, "L1", "alice", T0)
    index.participant_joined(first, "L2", "+3312345678", T0 + 5)
    index.participant_left(first, "L1", T0 + 30)
    index.participant_joined(first, "L1", "alice", T0 + 40)  # rejoined: a second row
    index.finish(first, T0 + 90)

    info = index.get(first)
    assert (info.status, info.ended_at, info.call_id) == ("complete", T0 + 90, "C7")
    assert [(s.seq, s.path, s.closed, s.bytes) for s in info.segments] == [
        (0, f"recordings/{first}/00000.opus", True, 1234),
        (1, f"recordings/{first}/00001.opus", False, 0),
    ]
    assert info.duration == 60 and info.size == 1234
    assert [(p.leg_id, p.peer, p.joined_at, p.left_at) for p in info.participants] == [
        ("L1", "alice", T0, T0 + 30),
        ("L2", "+3312345678", T0 + 5, T0 + 90),
        ("L1", "alice", T0 + 40, T0 + 90),
    ]
    assert [r.id for r in index.list()] == [leg, second, first]
    assert [r.id for r in index.list(limit=1, offset=1)] == [second]
    assert [r.id for r in index.list(bridge_id="b2")] == [leg, second]
    assert index.get(leg).leg_id == "L1" and index.get(leg).kind == "leg"
    with pytest.raises(RecordingNotFound, match="R19990101-0001"):
        index.get("R19990101-0001")
    with pytest.raises(RecordingNotFound):
        index.add_segment("R19990101-0001", 0, "x.opus", T0)
    with pytest.raises(RecordingNotFound):
        index.finish("R19990101-0001", T0)


def write_segments(
    index: RecordingIndex, recording_id: str, codec: str, seconds: float, *, close: bool
) -> SegmentedRecorder:
    """Record ``seconds`` of tone in 2 s segments, flushed every 0.5 s; leave it open."""
    io = DiskWriter()
    recorder = SegmentedRecorder(
        index.segments_root,
        recording_id=recording_id,
        sample_rate=8000,
        codec=codec,
        segment_seconds=2.0,
        flush_seconds=0.5,
        index=index,
        io=io,
    )
    for number, frame in enumerate(frames(tone(440, seconds, 8000), 8000)):
        recorder.write(frame, T0 + number * 0.02)
    if close:
        recorder.close()
    assert io.close(10)  # what was flushed is on disk; an open segment stays open
    return recorder


@pytest.mark.parametrize("codec", ["opus", "flac"])
def test_recover_keeps_the_open_segment_with_its_real_duration(
    index: RecordingIndex, codec: str
) -> None:
    recording_id = start(index, codec=codec)
    index.participant_joined(recording_id, "L1", "alice", T0)
    write_segments(index, recording_id, codec, 3.3, close=False)  # as if killed now
    before = index.get(recording_id).segments
    assert [(s.seq, s.closed) for s in before] == [(0, True), (1, False)]
    other = start(index, T0 + 1)
    index.finish(other, T0 + 2)

    report = index.recover(T0 + 100)

    assert report.interrupted == [recording_id]
    assert report.recovered_segments == [before[1].path]
    info = index.get(recording_id)
    assert info.status == "interrupted"
    assert all(s.closed for s in info.segments)
    recovered = info.segments[1]
    assert 1.0 - 0.11 <= recovered.duration <= 1.3  # flushed at 1.0 s into the segment
    assert recovered.bytes == index.segment_path(recovered).stat().st_size
    assert info.ended_at == pytest.approx(recovered.ended_at)
    assert info.participants[0].left_at == pytest.approx(info.ended_at)
    assert index.get(other).status == "complete"
    assert index.recover(T0 + 200).interrupted == []  # idempotent


def test_recover_registers_stray_files_and_drops_empty_ones(
    index: RecordingIndex, data_dir: Path
) -> None:
    recording_id = start(index)
    write_segments(index, recording_id, "opus", 4.0, close=True)  # segments 0, 1
    directory = index.segment_dir(recording_id)
    # A crash between creating segment 2's file and indexing it: the file is there,
    # the index does not know it. Segment 3 is indexed but its file is empty.
    os.link(directory / "00001.opus", directory / "00002.opus")
    with sqlite3.connect(data_dir / DB_FILENAME) as conn:
        conn.execute(
            "UPDATE recordings SET status = 'recording', ended_at = NULL WHERE id = ?",
            (recording_id,),
        )
    (directory / "00003.opus").write_bytes(b"")
    index.add_segment(recording_id, 3, directory / "00003.opus", T0 + 6)
    (directory / "notes.txt").write_text("not a segment")

    report = index.recover(T0 + 100)

    assert report.registered_files == [f"recordings/{recording_id}/00002.opus"]
    assert report.dropped_segments == [f"recordings/{recording_id}/00003.opus"]
    info = index.get(recording_id)
    assert [s.seq for s in info.segments] == [0, 1, 2]
    # Its start comes from the file's own tag (a hard link of segment 1 here).
    assert info.segments[2].started_at == pytest.approx(T0 + 2)
    assert info.segments[2].duration == pytest.approx(2.0, abs=0.002)
    assert (directory / "00003.opus").exists()  # files are never deleted


def test_paths_are_stored_relative_to_a_relative_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with RecordingIndex.open("data") as index:
        recording_id = start(index)
        write_segments(index, recording_id, "opus", 2.5, close=True)
        segments = index.get(recording_id).segments
        assert [s.path for s in segments] == [
            f"recordings/{recording_id}/00000.opus",
            f"recordings/{recording_id}/00001.opus",
        ]
        assert all(index.segment_path(s).is_file() for s in segments)
    monkeypatch.chdir(tmp_path / "data")  # the data directory can move
    with RecordingIndex.open(".") as index:
        assert all(index.segment_path(s).is_file() for s in index.get(recording_id).segments)

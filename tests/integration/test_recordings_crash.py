"""kill -9 of a recording process: every closed segment plays, at most ~1 s is lost.

Two children record a tone in real time, one in Opus and one in FLAC; both are
SIGKILLed 5.5 s in, mid-way through their third 2 s segment. Recovery must then mark
the recordings interrupted, keep the open segment up to its last flush, and export
the lot as one file.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recordings.audio import decode_segment
from recordings.export import export
from recordings.index import RecordingIndex
from tests.peers import die_with_parent, scaled
from tests.unit.recordings_util import FFMPEG, ffmpeg_seconds, peak_frequency

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("recordings_crash_child.py")
CODECS = ("opus", "flac")
RUN_FOR = 5.5
#: What a kill may cost: the flush interval, plus the encoder's look-ahead and slack.
MAX_LOSS = 1.5


def read_line(child: subprocess.Popen[str], timeout: float) -> str:
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], timeout)
    if not ready:
        raise AssertionError(f"child said nothing within {timeout} s")
    return child.stdout.readline()


def test_kill_9_loses_at_most_the_last_second(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    children = {
        codec: subprocess.Popen(
            [sys.executable, str(CHILD), str(tmp_path / codec), codec],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=die_with_parent,
        )
        for codec in CODECS
    }
    try:
        hello = {
            codec: json.loads(read_line(child, scaled(20))) for codec, child in children.items()
        }
        kill_at = min(h["started_at"] for h in hello.values()) + RUN_FOR
        time.sleep(max(0.0, kill_at - time.time()))  # a deliberate run length, not a wait
        killed_at = {}
        for codec, child in children.items():
            child.send_signal(signal.SIGKILL)
            killed_at[codec] = time.time()
        for child in children.values():
            assert child.wait(scaled(10)) == -signal.SIGKILL
    finally:
        for child in children.values():
            if child.poll() is None:
                child.kill()
                child.wait()
            if child.stdout is not None:
                child.stdout.close()

    for codec in CODECS:
        recording_id = hello[codec]["recording_id"]
        elapsed = killed_at[codec] - hello[codec]["started_at"]
        with RecordingIndex.open(tmp_path / codec) as index:
            before = index.get(recording_id)
            assert before.status == "recording"
            report = index.recover(time.time())
            assert report.interrupted == [recording_id]
            info = index.get(recording_id)

            assert info.status == "interrupted"
            assert [s.seq for s in info.segments] == [0, 1, 2]
            assert all(s.closed for s in info.segments)
            assert [s.closed for s in before.segments] == [True, True, False]
            for segment in info.segments:
                path = index.segment_path(segment)
                decoded = decode_segment(path, 8000)
                assert decoded.duration == pytest.approx(segment.duration, abs=0.002)
                assert peak_frequency(decoded.pcm, 8000) == pytest.approx(440, abs=1)
                if FFMPEG:
                    assert ffmpeg_seconds(path) == pytest.approx(segment.duration, abs=0.002)
            assert [s.duration for s in info.segments[:2]] == pytest.approx([2.0, 2.0])

            assert elapsed - MAX_LOSS <= info.duration <= elapsed + 0.1, (codec, elapsed)
            assert info.ended_at == pytest.approx(info.segments[-1].ended_at)
            assert info.participants[0].left_at == pytest.approx(info.ended_at)

            result = export(index, recording_id, tmp_path / f"{codec}.wav")
            exported = decode_segment(result.path)
            assert exported.duration == pytest.approx(info.duration, abs=0.04)
            assert peak_frequency(exported.pcm, 8000) == pytest.approx(440, abs=0.5)

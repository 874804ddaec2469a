"""BridgeRecorder: the mix, who was present, and each leg on its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from recordings.audio import decode_segment
from recordings.errors import InvalidInput
from recordings.index import RecordingIndex
from recordings.recorder import BridgeRecorder
from recordings.writer import DiskWriter
from tests.unit.recordings_util import frames, peak_frequency, tone

T0 = 1_763_700_000.0
RATE = 8000


@pytest.fixture
def index(tmp_path: Path) -> Iterator[RecordingIndex]:
    with RecordingIndex.open(tmp_path / "data") as opened:
        yield opened


def test_bridge_with_legs_recorded_separately(index: RecordingIndex) -> None:
    io = DiskWriter(threads=2)
    bridge = BridgeRecorder(
        index, index.data_dir, "b1", "C1", RATE, per_leg=True,
        segment_seconds=1.0, io=io, now=T0,
    )  # fmt: skip
    bridge.leg_joined("L1", "alice", T0)
    bridge.leg_joined("L2", "bob", T0)
    alice, bob = frames(tone(440, 3.0, RATE), RATE), frames(tone(660, 3.0, RATE), RATE)
    for number in range(150):
        now = T0 + number * 0.02
        if number == 75:
            bridge.leg_left("L2", now)
        bridge.on_leg("L1", alice[number], now)
        if number < 75:
            bridge.on_leg("L2", bob[number], now)
        mixed = alice[number] // 2 + (bob[number] // 2 if number < 75 else 0)
        bridge.on_mix(mixed.astype(np.int16), now)
    legs = bridge.leg_recordings
    assert set(legs) == {"L1"}
    bridge.close(T0 + 3.0, wait=True)
    assert io.close(10)

    recordings = {info.id: info for info in index.list()}
    mix = recordings[bridge.recording_id]
    assert (mix.kind, mix.bridge_id, mix.call_id, mix.status) == ("bridge", "b1", "C1", "complete")
    assert mix.duration == pytest.approx(3.0)
    assert len(mix.segments) == 3
    assert [(p.leg_id, p.peer, p.joined_at, p.left_at) for p in mix.participants] == [
        ("L1", "alice", T0, T0 + 3.0),
        ("L2", "bob", T0, pytest.approx(T0 + 1.5)),
    ]
    leg_infos = {info.leg_id: info for info in recordings.values() if info.kind == "leg"}
    assert set(leg_infos) == {"L1", "L2"}
    assert leg_infos["L1"].duration == pytest.approx(3.0)
    assert leg_infos["L2"].duration == pytest.approx(1.5)
    assert leg_infos["L1"].id == legs["L1"]
    for leg_id, freq in (("L1", 440), ("L2", 660)):
        info = leg_infos[leg_id]
        assert info.status == "complete" and info.call_id == "C1"
        assert [p.leg_id for p in info.participants] == [leg_id]
        pcm = decode_segment(index.segment_path(info.segments[0]), RATE).pcm
        assert peak_frequency(pcm, RATE) == pytest.approx(freq, abs=1)


def test_mix_only_ignores_legs_and_owns_its_writer(index: RecordingIndex) -> None:
    bridge = BridgeRecorder(index, index.data_dir, "b2", None, RATE, now=T0)
    bridge.leg_joined("L1", None, T0)
    for number, frame in enumerate(frames(tone(440, 0.5, RATE), RATE)):
        bridge.on_leg("L1", frame, T0 + number * 0.02)
        bridge.on_mix(frame, T0 + number * 0.02)
    bridge.close(T0 + 0.5, wait=True)
    bridge.on_mix(frame, T0 + 0.6)  # after close: ignored
    (info,) = index.list()
    assert (info.status, info.call_id) == ("complete", None)
    assert info.duration == pytest.approx(0.5)
    assert info.participants[0].peer is None and info.participants[0].left_at == T0 + 0.5
    assert bridge.leg_recordings == {}


def test_data_dir_must_be_the_index_one(index: RecordingIndex, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="data_dir"):
        BridgeRecorder(index, tmp_path / "elsewhere", "b1", None, RATE)

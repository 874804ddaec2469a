"""``hub recording list`` and ``hub recording export``, in-process through ``main(argv)``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hub.cli import main
from recordings.audio import decode_segment
from recordings.index import RecordingIndex
from recordings.recorder import BridgeRecorder
from tests.unit.recordings_util import frames, peak_frequency, tone

T0 = 1_763_700_000.0


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def recorded(data: Path) -> list[str]:
    """Two recordings: a 2.5 s bridge with alice and bob, then a later empty one."""
    with RecordingIndex.open(data) as index:
        bridge = BridgeRecorder(index, data, "b1", "C1", 8000, segment_seconds=1.0, now=T0)
        bridge.leg_joined("L1", "alice", T0)
        bridge.leg_joined("L2", "bob", T0 + 0.5)
        for number, frame in enumerate(frames(tone(440, 2.5, 8000), 8000)):
            bridge.on_mix(frame, T0 + number * 0.02)
        bridge.close(T0 + 2.5, wait=True)
        later = index.start(
            kind="bridge", bridge_id="b2", codec="opus", sample_rate=8000, started_at=T0 + 60
        )
    return [bridge.recording_id, later]


def test_list_empty(capsys: pytest.CaptureFixture[str], data: Path) -> None:
    assert run(capsys, "recording", "list", "--data-dir", str(data)) == (0, "no recordings\n", "")


def test_list(capsys: pytest.CaptureFixture[str], data: Path, recorded: list[str]) -> None:
    code, out, err = run(capsys, "--data-dir", str(data), "recording", "list")
    assert (code, err) == (0, "")
    header, first, second, summary = out.splitlines()
    assert header.split()[:3] == ["ID", "BRIDGE/CALL", "STARTED"]
    assert "PARTICIPANTS" in header
    columns = [re.split(r"\s{2,}", line) for line in (first, second)]
    assert [row[0] for row in columns] == [recorded[1], recorded[0]]  # newest first
    assert [columns[0][1], *columns[0][4:]] == ["b2/-", "0:00", "recording", "0", "-"]
    assert [columns[1][1], *columns[1][4:]] == ["b1/C1", "0:03", "complete", "3", "alice, bob"]
    assert summary == "2 recording(s)"

    code, out, _ = run(capsys, "recording", "list", "--limit", "1", "--data-dir", str(data))
    assert code == 0 and out.splitlines()[1].startswith(recorded[1])
    assert out.splitlines()[-1] == "1 recording(s) (newest first; --limit N shows more)"


def test_export(
    capsys: pytest.CaptureFixture[str], data: Path, recorded: list[str], tmp_path: Path
) -> None:
    target = tmp_path / "call.flac"
    code, out, err = run(
        capsys, "recording", "export", recorded[0], str(target), "--data-dir", str(data)
    )
    assert (code, err) == (0, "")
    assert out == f"exported {recorded[0]} to {target}: 0:03, 3 segment(s), 8000 Hz\n"
    decoded = decode_segment(target)
    assert decoded.duration == pytest.approx(2.5, abs=0.04)
    assert peak_frequency(decoded.pcm, 8000) == pytest.approx(440, abs=1)


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (
            ["R19990101-0001", "x.wav"],
            1,
            "hub recording export: error: no recording 'R19990101-0001'",
        ),
        (["{id}", "x.mp3"], 2, "unknown extension '.mp3'"),
        (["{later}", "x.wav"], 1, "has no segments"),
        (["{id}", "missing/x.wav"], 1, "cannot write"),
        (["{id}"], 2, "the following arguments are required: FILE"),
    ],
)
def test_export_errors(
    capsys: pytest.CaptureFixture[str],
    data: Path,
    recorded: list[str],
    tmp_path: Path,
    argv: list[str],
    code: int,
    message: str,
) -> None:
    recording_id = argv[0].format(id=recorded[0], later=recorded[1])
    args = [recording_id, *(str(tmp_path / name) for name in argv[1:])]
    got_code, out, err = run(capsys, "recording", "export", *args, "--data-dir", str(data))
    assert (got_code, out) == (code, "")
    assert message in err and err.count("\n") == 1  # one line


def test_list_bad_limit(capsys: pytest.CaptureFixture[str], data: Path) -> None:
    code, _, err = run(capsys, "recording", "list", "--limit", "zero", "--data-dir", str(data))
    assert code == 2 and "--limit" in err

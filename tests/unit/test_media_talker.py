"""media.talker: start on voice, hysteresis, hang time, leaving legs, vectorised over many legs."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest

from media.talker import TalkerDetector

TICK = 0.02
SAMPLES = 160


def frame_at(dbfs: float, samples: int = SAMPLES) -> npt.NDArray[np.int16]:
    """A square-ish frame whose RMS is ``dbfs`` relative to 32768."""
    amplitude = 32768 * 10 ** (dbfs / 20)
    signs = np.where(np.arange(samples) % 2, 1.0, -1.0)
    return np.rint(signs * amplitude).astype(np.int16)


def frames_at(levels: Sequence[float | None]) -> npt.NDArray[np.int16]:
    """One row per leg; None is digital silence."""
    return np.stack([np.zeros(SAMPLES, np.int16) if lv is None else frame_at(lv) for lv in levels])


def run(
    detector: TalkerDetector, levels_per_tick: Sequence[float | None], start: float = 0.0
) -> list[tuple[float, bool]]:
    """Drive leg 0 through a level per tick; return (time, started) of its changes."""
    events = []
    for tick, level in enumerate(levels_per_tick):
        now = start + tick * TICK
        for index, started in detector.update(frames_at([level]), np.array([True]), now):
            assert index == 0
            events.append((round(now, 3), started))
    return events


def test_levels_measured() -> None:
    detector = TalkerDetector(3)
    detector.update(frames_at([-20.0, None, -45.0]), np.array([True, True, True]), 0.0)
    levels = detector.levels_dbfs
    assert levels[0] == pytest.approx(-20, abs=0.05)
    assert levels[1] == pytest.approx(-120, abs=0.1)
    assert levels[2] == pytest.approx(-45, abs=0.1)


def test_start_then_hang_then_stop() -> None:
    detector = TalkerDetector(1, threshold_dbfs=-40, hang_ms=400)
    # 5 ticks of speech, then silence: talking from the first loud frame, until
    # 400 ms after the last one.
    events = run(detector, [None, -30.0, -30, -30, -30, -30] + [None] * 30)
    assert events == [(0.02, True), (0.5, False)]


def test_pauses_shorter_than_hang_do_not_flicker() -> None:
    detector = TalkerDetector(1, hang_ms=400)
    pattern: list[float | None] = ([-25.0] * 10 + [None] * 15) * 3 + [None] * 30
    events = run(detector, pattern)
    assert events == [(0.0, True), (1.58, False)]  # 400 ms after the last loud tick (1.18)


def test_hysteresis_keeps_a_fading_voice() -> None:
    detector = TalkerDetector(1, threshold_dbfs=-40, hang_ms=100, hysteresis_db=6)
    # Starts at -35, then hovers at -43 (under the threshold, above the -46 keep level).
    events = run(detector, [-35.0] + [-43.0] * 40 + [-50.0] * 10)
    assert events == [(0.0, True), (0.9, False)]
    # Without talking first, -43 never starts anything.
    assert run(TalkerDetector(1, threshold_dbfs=-40), [-43.0] * 20) == []


def test_attack_ignores_clicks() -> None:
    detector = TalkerDetector(1, attack_ms=40, hang_ms=100)
    assert run(detector, [-20.0, None, -20.0, None, None]) == []  # isolated clicks
    detector = TalkerDetector(1, attack_ms=40, hang_ms=100)
    assert run(detector, [-20.0, -20.0, -20.0, None]) == [(0.04, True)]


def test_zero_hang_stops_on_the_first_quiet_frame() -> None:
    detector = TalkerDetector(1, hang_ms=0)
    assert run(detector, [-20.0, -20.0, None, -20.0]) == [(0.0, True), (0.04, False), (0.06, True)]


def test_inactive_and_missing_rows_stop_at_once() -> None:
    detector = TalkerDetector(4, hang_ms=400)
    assert detector.update(frames_at([-20.0, -20.0, -20.0]), np.array([True, True, True]), 0.0) == [
        (0, True),
        (1, True),
        (2, True),
    ]
    # Leg 1 leaves (inactive), leg 2's slot is no longer in the array: both stop now.
    changes = detector.update(frames_at([-20.0, -20.0]), np.array([True, False]), 0.02)
    assert changes == [(1, False), (2, False)]
    assert detector.talking.tolist() == [True, False, False, False]
    with pytest.raises(ValueError):
        detector.talking[0] = False  # a read-only view


def test_reset_slot() -> None:
    detector = TalkerDetector(2)
    detector.update(frames_at([-20.0, -20.0]), np.array([True, True]), 0.0)
    detector.reset(1)
    assert detector.talking.tolist() == [True, False]
    # The new leg in slot 1 starts fresh.
    assert detector.update(frames_at([-20.0, -20.0]), np.array([True, True]), 0.02) == [(1, True)]
    detector.reset()
    assert not detector.talking.any()


def test_bad_shapes() -> None:
    detector = TalkerDetector(2)
    with pytest.raises(ValueError, match=r"N <= 2"):
        detector.update(np.zeros((3, 160), np.int16), np.ones(3, bool), 0.0)
    with pytest.raises(ValueError, match=r"active_mask must have shape \(2,\)"):
        detector.update(np.zeros((2, 160), np.int16), np.ones(3, bool), 0.0)
    with pytest.raises(ValueError, match="n_max"):
        TalkerDetector(0)


def test_many_legs_in_one_call() -> None:
    legs = 1000
    detector = TalkerDetector(legs)
    rng = np.random.default_rng(11)
    frames = (rng.standard_normal((legs, SAMPLES)) * 30).astype(np.int16)  # about -61 dBFS
    talkers = [3, 500, 999]
    frames[talkers] = frame_at(-20.0)
    active = np.ones(legs, bool)
    assert detector.update(frames, active, 0.0) == [(i, True) for i in talkers]
    start = time.perf_counter()
    for tick in range(1, 51):
        detector.update(frames, active, tick * TICK)
    per_tick = (time.perf_counter() - start) / 50
    assert per_tick < 0.01  # about 0.15 ms here: far under the 20 ms tick

"""Who is talking in a bridge: vectorised voice-activity with hysteresis and hang time.

The mixer already holds every leg's decoded frame for the tick in one (N, samples)
array, so the detector works on that array in a handful of numpy operations,
whatever N is, and returns only the legs whose state changed (the console lights
a speaker icon on "talker started" and dims it on "stopped").

Per leg, per tick:
- level: RMS of the frame in dBFS (relative to a full-scale square wave, so a
  full-scale sine reads -3 dBFS), one ``einsum`` for all legs;
- start: level at or above ``threshold_dbfs`` for ``attack_ms`` (default: one
  frame is enough);
- stay: every frame above ``threshold_dbfs - hysteresis_db`` keeps the leg
  talking, so a voice fading in and out around the threshold does not flicker;
- stop: after ``hang_ms`` without such a frame, which bridges the pauses between
  words (400 ms by default);
- a leg that leaves (``active_mask`` false) stops at once.

State lives in fixed arrays of ``n_max`` slots indexed like the mixer's rows; a
slot given to a new leg is cleared with ``reset(index)``. Time is an argument.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["TalkerDetector"]

_FULL_SCALE_SQ = 32768.0 * 32768.0
_FLOOR = 1e-12  # level of digital silence: -120 dBFS rather than log(0)


class TalkerDetector:
    """Talker detection for up to ``n_max`` legs of one bridge."""

    def __init__(
        self,
        n_max: int,
        threshold_dbfs: float = -40.0,
        hang_ms: float = 400.0,
        *,
        hysteresis_db: float = 6.0,
        attack_ms: float = 0.0,
    ) -> None:
        if n_max <= 0:
            raise ValueError(f"n_max must be positive, got {n_max}")
        if hang_ms < 0 or attack_ms < 0 or hysteresis_db < 0:
            raise ValueError("hang_ms, attack_ms and hysteresis_db must not be negative")
        self.n_max = n_max
        self.threshold_dbfs = threshold_dbfs
        self.hysteresis_db = hysteresis_db
        self.hang = hang_ms / 1000
        self.attack = attack_ms / 1000
        # Compare mean squares, not dB: no log on the hot path.
        self._on_power = _FULL_SCALE_SQ * 10 ** (threshold_dbfs / 10)
        self._keep_power = _FULL_SCALE_SQ * 10 ** ((threshold_dbfs - hysteresis_db) / 10)
        self._talking = np.zeros(n_max, dtype=bool)
        self._loud_since = np.full(n_max, np.nan)  # start of the current run above threshold
        self._last_voice = np.full(n_max, -np.inf)  # last frame above the keep threshold
        self._power = np.zeros(n_max, dtype=np.float64)

    @property
    def talking(self) -> npt.NDArray[np.bool_]:
        """Per slot: talking now (a read-only view)."""
        view = self._talking.view()
        view.flags.writeable = False
        return view

    @property
    def levels_dbfs(self) -> npt.NDArray[np.float64]:
        """Per slot: the level measured at the last update, in dBFS (-120 for silence)."""
        levels: npt.NDArray[np.float64] = 10 * np.log10(self._power / _FULL_SCALE_SQ + _FLOOR)
        return levels

    def reset(self, index: int | None = None) -> None:
        """Forget one slot (a new leg takes it) or all of them, without emitting anything."""
        where = slice(None) if index is None else index
        self._talking[where] = False
        self._loud_since[where] = np.nan
        self._last_voice[where] = -np.inf
        self._power[where] = 0.0

    def update(
        self,
        frames: npt.NDArray[np.int16],
        active_mask: npt.NDArray[np.bool_],
        now: float,
    ) -> list[tuple[int, bool]]:
        """Feed one tick: ``frames`` (N, samples) for slots 0..N-1; return (slot, started) changes.

        ``active_mask`` (N,) marks the slots holding a leg that is sending; the rest,
        and slots N..n_max-1, count as silent and stop at once if they were talking.
        """
        if frames.ndim != 2 or frames.shape[0] > self.n_max:
            raise ValueError(f"frames must be (N <= {self.n_max}, samples), got {frames.shape}")
        rows = frames.shape[0]
        if active_mask.shape != (rows,):
            raise ValueError(f"active_mask must have shape ({rows},), got {active_mask.shape}")
        power = np.zeros(self.n_max, dtype=np.float64)
        if rows and frames.shape[1]:
            samples = frames.astype(np.float32)
            # One pass for all legs; float64 accumulation of float32 products is exact
            # enough for a level and cheaper than squaring in int64.
            power[:rows] = np.einsum("ij,ij->i", samples, samples, dtype=np.float64)
            power[:rows] /= frames.shape[1]
        active = np.zeros(self.n_max, dtype=bool)
        active[:rows] = active_mask
        self._power = np.where(active, power, 0.0)

        loud = active & (self._power >= self._on_power)
        voiced = active & (self._power >= self._keep_power)
        self._last_voice[voiced] = now
        starting_run = loud & np.isnan(self._loud_since)
        self._loud_since[starting_run] = now
        self._loud_since[~loud] = np.nan

        was = self._talking
        with np.errstate(invalid="ignore"):  # NaN loud_since compares False, as wanted
            attacked = loud & (now - self._loud_since >= self.attack - 1e-9)
        hung_up = ~voiced & (now - self._last_voice >= self.hang - 1e-9)
        stays = was & active & ~hung_up
        started = ~was & attacked
        now_talking = stays | started
        stopped = was & ~now_talking
        self._talking = now_talking

        changes = [(int(i), True) for i in np.flatnonzero(started)]
        changes += [(int(i), False) for i in np.flatnonzero(stopped)]
        changes.sort()
        return changes

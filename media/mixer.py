"""The mixing core of a bridge: who hears whom, and one vectorised mix per tick.

Pure numpy, no I/O. A :class:`Mixer` has a fixed number of slots (one per leg);
``mix`` takes every slot's frame for this tick as one ``(slots, samples)`` array and
returns what each slot must hear, also ``(slots, samples)``.

The relation matrix is never built as an N x N product (that is 40 M multiply-adds a
tick at 500 legs). Instead, the common case is one weighted sum, mix-minus by a
subtraction, and only the legs with a special relation get a row of their own:

    heard_by_all = sum of speakers not muted, not monitors, not whisperers (floor:
                   only the holder)
    out[i]       = heard_by_all - own[i]          (the default listener)
    out[deaf]    = 0
    out[i]      -= speakers i must not hear       (one-way pair mute)
    out[i]      += whisperers whispering to i
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

Pcm = npt.NDArray[np.int16]


@dataclass
class SlotState:
    leg_id: str
    muted: bool = False
    deaf: bool = False
    monitor: bool = False
    whisper_to: frozenset[str] = frozenset()
    not_hearing: set[str] = field(default_factory=set)
    """Speakers this slot must not hear (one-way pair mute)."""


class Mixer:
    """Relations and the mix of one bridge at one sample rate."""

    def __init__(self, frame_samples: int, capacity: int = 16) -> None:
        self.frame_samples = frame_samples
        self._slots: dict[str, int] = {}
        self._state: list[SlotState | None] = [None] * capacity
        self._free: list[int] = list(range(capacity - 1, -1, -1))
        self.floor_mode = False
        self.floor_holder: str | None = None
        self._gain = np.zeros(capacity, dtype=np.float32)
        self._dirty = True
        self._specials: list[tuple[int, list[int], list[int]]] = []
        self._plain = True
        self._deaf = np.zeros(capacity, dtype=bool)
        self.last_total: npt.NDArray[np.float32] = np.zeros(frame_samples, dtype=np.float32)
        """What a listener hearing every default speaker heard in the last mix
        (the bridge's recording)."""

    # -- membership ---------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return len(self._state)

    def slot(self, leg_id: str) -> int:
        return self._slots[leg_id]

    def __contains__(self, leg_id: object) -> bool:
        return leg_id in self._slots

    def __len__(self) -> int:
        return len(self._slots)

    def legs(self) -> list[str]:
        return list(self._slots)

    def add(self, leg_id: str) -> int:
        if leg_id in self._slots:
            return self._slots[leg_id]
        if not self._free:
            self._grow(max(16, self.capacity))
        index = self._free.pop()
        self._slots[leg_id] = index
        self._state[index] = SlotState(leg_id)
        self._dirty = True
        return index

    def remove(self, leg_id: str) -> None:
        index = self._slots.pop(leg_id, None)
        if index is None:
            return
        self._state[index] = None
        self._free.append(index)
        for state in self._state:
            if state is not None:
                state.not_hearing.discard(leg_id)
                if leg_id in state.whisper_to:
                    state.whisper_to = state.whisper_to - {leg_id}
        if self.floor_holder == leg_id:
            self.floor_holder = None
        self._dirty = True

    def _grow(self, extra: int) -> None:
        old = self.capacity
        self._state.extend([None] * extra)
        self._free = list(range(old + extra - 1, old - 1, -1)) + self._free
        self._gain = np.zeros(old + extra, dtype=np.float32)
        self._deaf = np.zeros(old + extra, dtype=bool)
        self._dirty = True

    def state(self, leg_id: str) -> SlotState:
        state = self._state[self._slots[leg_id]]
        assert state is not None
        return state

    # -- relations -------------------------------------------------------------------
    def set_muted(self, leg_id: str, muted: bool) -> None:
        self.state(leg_id).muted = muted
        self._dirty = True

    def set_deaf(self, leg_id: str, deaf: bool) -> None:
        self.state(leg_id).deaf = deaf
        self._dirty = True

    def set_monitor(self, leg_id: str, monitor: bool) -> None:
        """Hears everything the bridge hears, is heard by nobody."""
        self.state(leg_id).monitor = monitor
        self._dirty = True

    def set_whisper(self, leg_id: str, targets: frozenset[str] | set[str]) -> None:
        """Heard only by ``targets`` (empty: back to normal). Hears the bridge as usual."""
        unknown = set(targets) - set(self._slots)
        if unknown:
            raise KeyError(f"whisper targets not in the bridge: {sorted(unknown)}")
        self.state(leg_id).whisper_to = frozenset(targets)
        self._dirty = True

    def set_pair_mute(self, speaker: str, listener: str, muted: bool) -> None:
        """One way: ``listener`` stops (or resumes) hearing ``speaker``."""
        self.state(speaker)
        state = self.state(listener)
        if muted:
            state.not_hearing.add(speaker)
        else:
            state.not_hearing.discard(speaker)
        self._dirty = True

    def set_floor(self, enabled: bool, holder: str | None = None) -> None:
        """Push-to-talk: with the floor on, only its holder (if any) is heard."""
        if holder is not None:
            self.state(holder)
        self.floor_mode = enabled
        self.floor_holder = holder if enabled else None
        self._dirty = True

    def hears(self, listener: str, speaker: str) -> bool:
        """Whether ``listener`` hears ``speaker`` (the relation matrix, one cell)."""
        if listener == speaker:
            return False
        ls, sp = self.state(listener), self.state(speaker)
        if ls.deaf or sp.muted or speaker in ls.not_hearing:
            return False
        if sp.whisper_to:
            return listener in sp.whisper_to
        if sp.monitor:
            return False
        if self.floor_mode and self.floor_holder != speaker:
            return False
        return True

    @property
    def plain(self) -> bool:
        """No relation but the default: everyone hears everyone else."""
        if self._dirty:
            self._prepare()
        return self._plain

    # -- mixing ------------------------------------------------------------------------
    def _prepare(self) -> None:
        gain = self._gain
        gain[:] = 0.0
        self._deaf[:] = False
        specials: dict[int, tuple[list[int], list[int]]] = {}
        for leg_id, index in self._slots.items():
            st = self._state[index]
            assert st is not None
            if st.deaf:
                self._deaf[index] = True
            default_speaker = not (st.muted or st.monitor or st.whisper_to) and (
                not self.floor_mode or self.floor_holder == leg_id)
            if default_speaker:
                gain[index] = 1.0
        for leg_id, index in self._slots.items():
            st = self._state[index]
            assert st is not None
            if st.deaf:
                continue
            minus = [self._slots[s] for s in st.not_hearing
                     if s in self._slots and gain[self._slots[s]]]
            if minus:
                specials.setdefault(index, ([], []))[1].extend(minus)
            if st.whisper_to and not st.muted:
                for target in st.whisper_to:
                    t = self._slots[target]
                    ts = self._state[t]
                    if ts is not None and not ts.deaf and leg_id not in ts.not_hearing:
                        specials.setdefault(t, ([], []))[0].append(index)
        self._specials = [(i, plus, minus) for i, (plus, minus) in specials.items()]
        self._plain = not specials and not self._deaf.any() and not self.floor_mode and all(
            gain[i] for i in self._slots.values())
        self._dirty = False

    def mix(self, frames: npt.NDArray[np.int16] | npt.NDArray[np.float32]) -> Pcm:
        """``frames[slot]`` is what the slot's leg said this tick (zeros if silent)."""
        if self._dirty:
            self._prepare()
        n = self.capacity
        x = frames[:n].astype(np.float32, copy=False)
        gain = self._gain[:n]
        total = gain @ x
        self.last_total = total
        out = total[None, :] - gain[:, None] * x
        for index, plus, minus in self._specials:
            if plus:
                out[index] += x[plus].sum(axis=0)
            if minus:
                out[index] -= x[minus].sum(axis=0)
        out[self._deaf[:n]] = 0.0
        np.clip(out, -32768.0, 32767.0, out=out)
        return out.astype(np.int16)

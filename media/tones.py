"""Tones, prompts and a frame player: the sounds a bridge plays into its legs.

Everything is int16 mono at the rate asked for, so a bridge renders a tone once
at its mixing rate and plays it into any number of legs. Tones are generated
whole and then looped by a ``Player``:

- ``tone`` (one or more sines summed, e.g. a DTMF pair), ``beep``, ``silence``;
- ``Cadence``: a tone switched on and off in a pattern. The Chinese national
  tones (GB/T 3380, YD/T 1082) are all 450 Hz: dial tone continuous, ringback
  1 s on 4 s off, busy 0.35 s on 0.35 s off, congestion 0.7 s on 0.7 s off;
- ``join_beep`` / ``leave_beep``: a rising and a falling pair of notes for a
  participant entering or leaving a conference.

Every burst of tone is shaped with a 5 ms raised-cosine ramp at both ends: a
sine switched on at full amplitude clicks, and a cadence's loop point falls in
silence, so looping it is seamless.

``load_audio_file`` decodes any file FFmpeg reads (wav, mp3, ogg, flac...) via
PyAV, mixed down to mono and resampled to the bridge's rate, for prompts and
music on hold.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Final

import numpy as np
import numpy.typing as npt

from media.errors import AudioFileError

__all__ = [
    "BUSY_CN",
    "CONGESTION_CN",
    "DIAL_TONE_CN",
    "RINGBACK_CN",
    "Cadence",
    "Player",
    "beep",
    "cadence_signal",
    "join_beep",
    "leave_beep",
    "load_audio_file",
    "silence",
    "tone",
]

Pcm = npt.NDArray[np.int16]

DEFAULT_LEVEL_DBFS: Final = -16.0
"""Per-component peak level of generated tones: about -13 dBm0, a comfortable telephone level."""
RAMP_MS: Final = 5.0


def _samples(duration_ms: float, rate: int) -> int:
    if rate <= 0:
        raise ValueError(f"sample rate must be positive, got {rate}")
    if duration_ms < 0:
        raise ValueError(f"duration must not be negative, got {duration_ms} ms")
    return round(duration_ms * rate / 1000)


def silence(duration_ms: float, rate: int) -> Pcm:
    """``duration_ms`` of digital silence."""
    return np.zeros(_samples(duration_ms, rate), dtype=np.int16)


def tone(
    freqs: float | Sequence[float],
    duration_ms: float,
    rate: int,
    *,
    level_dbfs: float = DEFAULT_LEVEL_DBFS,
    ramp_ms: float = RAMP_MS,
) -> Pcm:
    """Sine(s) of ``freqs`` Hz for ``duration_ms``, each at ``level_dbfs`` peak, summed.

    ``level_dbfs`` is per component, as telephone tone plans specify them; the sum
    is clipped only if the levels ask for more than full scale. Frequencies at or
    above the Nyquist frequency of ``rate`` are refused rather than aliased.
    """
    components = [float(freqs)] if isinstance(freqs, int | float) else [float(f) for f in freqs]
    if not components:
        raise ValueError("tone needs at least one frequency")
    for freq in components:
        if not 0 < freq < rate / 2:
            raise ValueError(f"{freq} Hz cannot be played at {rate} Hz (Nyquist {rate / 2})")
    count = _samples(duration_ms, rate)
    t = np.arange(count, dtype=np.float64) / rate
    amplitude = 32767.0 * 10 ** (level_dbfs / 20)
    wave = np.zeros(count, dtype=np.float64)
    for freq in components:
        wave += np.sin(2 * np.pi * freq * t)
    wave *= amplitude
    ramp = min(_samples(ramp_ms, rate), count // 2)
    if ramp:
        # Raised cosine: starts and ends at zero with zero slope, so no click.
        shape = 0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp) + 0.5) / ramp)
        wave[:ramp] *= shape
        wave[count - ramp :] *= shape[::-1]
    return np.clip(np.rint(wave), -32768, 32767).astype(np.int16)


def beep(
    rate: int,
    *,
    freq: float = 1000.0,
    duration_ms: float = 200.0,
    level_dbfs: float = DEFAULT_LEVEL_DBFS,
) -> Pcm:
    """A single beep (by default the 1 kHz, 200 ms "recording" or "attention" beep)."""
    return tone(freq, duration_ms, rate, level_dbfs=level_dbfs)


def join_beep(rate: int, *, level_dbfs: float = DEFAULT_LEVEL_DBFS) -> Pcm:
    """Someone joined: two short rising notes (C5 then G5)."""
    return _two_notes(523.25, 783.99, rate, level_dbfs)


def leave_beep(rate: int, *, level_dbfs: float = DEFAULT_LEVEL_DBFS) -> Pcm:
    """Someone left: the same two notes falling (G5 then C5)."""
    return _two_notes(783.99, 523.25, rate, level_dbfs)


def _two_notes(first: float, second: float, rate: int, level_dbfs: float) -> Pcm:
    return np.concatenate(
        (
            tone(first, 90, rate, level_dbfs=level_dbfs),
            silence(30, rate),
            tone(second, 120, rate, level_dbfs=level_dbfs),
        )
    )


@dataclass(frozen=True, slots=True)
class Cadence:
    """A tone switched on and off: ``pattern`` alternates on and off durations in ms."""

    freqs: tuple[float, ...]
    """Frequencies summed while on."""
    pattern: tuple[int, ...]
    """on, off, on, off... in ms; a single entry means continuous."""
    name: str = ""
    """For logs."""

    @property
    def period_ms(self) -> int:
        """Length of one cycle."""
        return sum(self.pattern)


DIAL_TONE_CN: Final = Cadence((450.0,), (1000,), "dial tone (CN)")
RINGBACK_CN: Final = Cadence((450.0,), (1000, 4000), "ringback (CN)")
BUSY_CN: Final = Cadence((450.0,), (350, 350), "busy (CN)")
CONGESTION_CN: Final = Cadence((450.0,), (700, 700), "congestion (CN)")


def cadence_signal(cadence: Cadence, rate: int, *, level_dbfs: float = DEFAULT_LEVEL_DBFS) -> Pcm:
    """One period of ``cadence``, to loop with ``Player(..., loop=True)``.

    A continuous tone (one entry) is rendered without ramps and with a whole
    number of cycles of each frequency where the period allows, so its loop point
    does not click either.
    """
    if not cadence.pattern or any(ms <= 0 for ms in cadence.pattern):
        raise ValueError(f"cadence pattern must be positive durations, got {cadence.pattern}")
    if len(cadence.pattern) == 1:
        count = _samples(cadence.pattern[0], rate)
        t = np.arange(count, dtype=np.float64) / rate
        # Round each frequency to a whole number of cycles per period (at most
        # 0.5 Hz off for a 1 s period) so the end meets the start.
        period = count / rate
        wave = sum(np.sin(2 * np.pi * (round(f * period) / period) * t) for f in cadence.freqs)
        amplitude = 32767.0 * 10 ** (level_dbfs / 20)
        return np.clip(np.rint(np.asarray(wave) * amplitude), -32768, 32767).astype(np.int16)
    parts = []
    for index, ms in enumerate(cadence.pattern):
        if index % 2 == 0:
            parts.append(tone(cadence.freqs, ms, rate, level_dbfs=level_dbfs))
        else:
            parts.append(silence(ms, rate))
    return np.concatenate(parts)


def load_audio_file(path: str | PathLike[str], rate: int, *, max_seconds: float = 600.0) -> Pcm:
    """Decode an audio file (anything FFmpeg reads) to int16 mono at ``rate``.

    AudioFileError if it cannot be opened, has no audio stream, fails to decode,
    or is longer than ``max_seconds`` (a prompt or hold-music file, not a
    recording: the limit keeps a wrong path from filling memory).
    """
    import av
    from av.error import FFmpegError

    if rate <= 0:
        raise ValueError(f"sample rate must be positive, got {rate}")
    limit = int(max_seconds * rate)
    chunks: list[Pcm] = []
    total = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioFileError(f"{path}: no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunk = np.asarray(out.to_ndarray()).reshape(-1).astype(np.int16, copy=False)
                    chunks.append(chunk)
                    total += chunk.size
                if total > limit:
                    raise AudioFileError(f"{path}: longer than {max_seconds} s")
            for out in resampler.resample(None):  # flush the resampler's tail
                chunks.append(np.asarray(out.to_ndarray()).reshape(-1).astype(np.int16, copy=False))
    except (FFmpegError, OSError) as exc:
        raise AudioFileError(f"{path}: cannot decode audio: {exc}") from exc
    if not chunks:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate(chunks)


class Player:
    """Hands out a buffer as fixed-size frames, once or looping (tones, prompts, hold music).

    The buffer is copied once and made read-only; frames that do not cross the end
    are views into it, so playing to many legs costs no copies. Without ``loop``
    the last frame is padded with silence and then the player is done.
    """

    def __init__(self, samples: npt.NDArray[np.int16], frame_samples: int, *, loop: bool = False):
        if frame_samples <= 0:
            raise ValueError(f"frame size must be positive, got {frame_samples}")
        data = np.array(samples, dtype=np.int16).reshape(-1)
        if loop and data.size == 0:
            raise ValueError("cannot loop an empty buffer")
        data.flags.writeable = False
        self._data = data
        self.frame_samples = frame_samples
        self.loop = loop
        self._position = 0

    @classmethod
    def for_rate(
        cls, samples: npt.NDArray[np.int16], rate: int, *, ptime_ms: int = 20, loop: bool = False
    ) -> Player:
        """A player of ``ptime_ms`` frames at ``rate`` (160 samples at 8 kHz, 20 ms)."""
        return cls(samples, rate * ptime_ms // 1000, loop=loop)

    @property
    def done(self) -> bool:
        """True once a non-looping player has handed out its last frame."""
        return not self.loop and self._position >= self._data.size

    @property
    def position(self) -> int:
        """Index of the next sample to play."""
        return self._position

    def rewind(self) -> None:
        """Start again from the beginning."""
        self._position = 0

    def read(self) -> Pcm | None:
        """The next frame, or None when a non-looping player is done."""
        n, size, start = self.frame_samples, self._data.size, self._position
        if self.loop:
            if start + n <= size:
                self._position = (start + n) % size
                return self._data[start : start + n]
            # Crosses the loop point (perhaps several times, for a tiny buffer).
            index = (start + np.arange(n)) % size
            self._position = int((start + n) % size)
            return self._data[index]
        if start >= size:
            return None
        self._position = start + n
        if start + n <= size:
            return self._data[start : start + n]
        frame = np.zeros(n, dtype=np.int16)
        frame[: size - start] = self._data[start:]
        return frame

    def __iter__(self) -> Iterator[Pcm]:
        return self

    def __next__(self) -> Pcm:
        frame = self.read()
        if frame is None:
            raise StopIteration
        return frame

    def __len__(self) -> int:
        """Frames in one pass over the buffer."""
        return math.ceil(self._data.size / self.frame_samples)


def music_on_hold(rate: int, *, level_dbfs: float = -24.0) -> Pcm:
    """A soft, looping phrase for a caller on hold (generated: no file to ship).

    A slow arpeggio of a major chord and a pause, five seconds; play it looped.
    """
    notes = (261.63, 329.63, 392.0, 523.25, 392.0, 329.63)
    phrase = [tone(f, 600, rate, level_dbfs=level_dbfs, ramp_ms=60) for f in notes]
    phrase.append(silence(1400, rate))
    return np.concatenate(phrase)

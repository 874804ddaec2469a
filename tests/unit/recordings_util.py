"""Helpers for the recordings tests: tones in, peak frequency and duration out.

Not collected by pytest (no ``test_`` prefix); also used by the crash test's child.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import numpy.typing as npt

Pcm = npt.NDArray[np.int16]

FFMPEG = shutil.which("ffmpeg")


def tone(freq: float, seconds: float, rate: int, *, start: int = 0) -> Pcm:
    """A sine at half scale; ``start`` is the index of its first sample (phase continuity)."""
    t = (np.arange(round(seconds * rate)) + start) / rate
    return np.round(16383 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def frames(pcm: Pcm, rate: int, ms: int = 20) -> list[Pcm]:
    """``pcm`` cut into ``ms`` frames (the mixer's tick)."""
    size = rate * ms // 1000
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]


def peak_frequency(pcm: Pcm, rate: int) -> float:
    """The strongest frequency, to the FFT bin (Hann window)."""
    signal = pcm.astype(np.float64) * np.hanning(len(pcm))
    spectrum = np.abs(np.fft.rfft(signal))
    return float(np.argmax(spectrum) * rate / len(pcm))


def ffmpeg_seconds(path: Path, rate: int = 8000) -> float:
    """Seconds of audio the ffmpeg command line decodes from ``path`` (it must exit 0)."""
    assert FFMPEG is not None
    result = subprocess.run(
        [FFMPEG, "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1", "-ar", str(rate), "-"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return len(result.stdout) / 2 / rate

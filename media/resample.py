"""Stateful polyphase FIR resampling between the hub's rates (8, 16, 48 kHz).

A bridge mixes at one rate while its legs run at 8 kHz (G.711), 16 kHz (G.722)
or 48 kHz (Opus), so every leg that differs is resampled twice a tick. The ratios
are integers (2, 3, 6), which keeps the filter a plain polyphase FIR with no
fractional phase to track:

- up by L: each input sample yields L outputs, one per polyphase branch;
- down by M: one output every M inputs.

For a frame (20 ms) the whole operation is one banded matrix, shared by every
resampler with that ratio and frame size, so resampling one leg or all the legs
of a bridge (``rows``) is a single BLAS product per tick. Long inputs (a whole
file) use the equivalent windowed polyphase product, whose memory stays linear.

The filter keeps its last inputs between calls, so a stream cut into 20 ms
frames gives the same samples as the whole stream resampled at once: nothing
clicks at frame boundaries, and every frame yields exactly ``n * to / from``
samples (160 at 8 kHz, 320 at 16 kHz, 960 at 48 kHz).

The low-pass is a Kaiser-windowed sinc designed once per ratio: flat to 85 % of
the lower rate's Nyquist frequency (3.4 kHz for 8 kHz, the telephone band),
60 dB down from that Nyquist frequency on, so nothing aliases audibly. It costs
about 3 ms of delay (``delay_seconds``).

``rows`` lets one resampler carry many legs at once, one filter state per row,
so a bridge resamples all its 8 kHz legs in one call per tick. numpy is the only
dependency: scipy's ``resample_poly`` is stateless and could not stitch frames.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Final, overload

import numpy as np
import numpy.typing as npt

from media.errors import CodecError

__all__ = ["SUPPORTED_RATES", "Resampler", "design_lowpass"]

SUPPORTED_RATES: Final = (8000, 16000, 48000)

_PASS_FRACTION: Final = 0.85
"""Passband edge as a fraction of the lower rate's Nyquist frequency."""
_STOPBAND_DB: Final = 60.0

Float = npt.NDArray[np.float32]


@lru_cache(maxsize=16)
def design_lowpass(high_rate: int, low_rate: int) -> Float:
    """Kaiser-windowed sinc low-pass at ``high_rate``, cut for resampling to/from ``low_rate``.

    The -6 dB point sits midway between the passband edge (0.85 x low Nyquist) and
    the stopband edge (the low Nyquist itself), the length follows Kaiser's formula
    for 60 dB and is rounded up to a multiple of the ratio so every polyphase branch
    has the same number of taps. Unity DC gain; cached and read-only (shared).
    """
    ratio = high_rate // low_rate
    nyquist_low = low_rate / 2
    pass_edge = _PASS_FRACTION * nyquist_low
    transition = (nyquist_low - pass_edge) / high_rate * 2 * math.pi  # rad/sample
    beta = 0.1102 * (_STOPBAND_DB - 8.7)
    taps = math.ceil((_STOPBAND_DB - 8.0) / (2.285 * transition)) + 1
    taps = ratio * math.ceil(taps / ratio)
    cutoff = (pass_edge + nyquist_low) / 2 / high_rate  # cycles/sample
    n = np.arange(taps) - (taps - 1) / 2
    h = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(taps, beta)
    h /= h.sum()
    out: Float = h.astype(np.float32)
    out.flags.writeable = False
    return out


class Resampler:
    """Resample int16 (or float) frames from ``from_rate`` to ``to_rate``, keeping state.

    ``rows=None`` takes 1-D frames; ``rows=R`` takes (R, n) arrays, one independent
    stream per row. int16 in gives int16 out (rounded, clipped); float in gives
    float32 out (unclipped, for a mixer summing in float).
    """

    def __init__(self, from_rate: int, to_rate: int, *, rows: int | None = None) -> None:
        if from_rate <= 0 or to_rate <= 0:
            raise CodecError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
        high, low = max(from_rate, to_rate), min(from_rate, to_rate)
        if high % low:
            raise CodecError(
                f"resampling {from_rate} -> {to_rate} Hz is not an integer ratio "
                f"(supported: any two of {SUPPORTED_RATES})"
            )
        if rows is not None and rows <= 0:
            raise CodecError(f"rows must be positive, got {rows}")
        self.from_rate = from_rate
        self.to_rate = to_rate
        self.rows = rows
        self._up = to_rate // from_rate if to_rate > from_rate else 1
        self._down = from_rate // to_rate if from_rate > to_rate else 1
        self._skip = self._down - 1  # input index (in the next frame) of the next output
        if high == low:
            self._taps: Float = np.ones(1, dtype=np.float32)
            self._branches: Float = np.ones((1, 1), dtype=np.float32)
            history = 0
        else:
            self._taps = design_lowpass(high, low)
            if self._up > 1:
                # Branch p, tap k is h[p + kL], scaled by L (zero stuffing divides the
                # gain by L); reversed in k so a window (oldest first) dots with it.
                k_taps = self._taps.shape[0] // self._up
                poly = (self._taps * self._up).reshape(k_taps, self._up)
                self._branches = np.ascontiguousarray(poly[::-1, :])
                history = k_taps - 1
            else:
                self._branches = np.ones((1, 1), dtype=np.float32)
                history = self._taps.shape[0] - 1
        self._reversed_taps: Float = np.ascontiguousarray(self._taps[::-1])
        self._history: Float = np.zeros((rows or 1, history), dtype=np.float32)

    @property
    def ratio(self) -> float:
        """Output samples per input sample."""
        return self.to_rate / self.from_rate

    @property
    def delay_seconds(self) -> float:
        """Group delay of the linear-phase filter (zero when the rates are equal)."""
        if self.from_rate == self.to_rate:
            return 0.0
        return float(self._taps.shape[0] - 1) / 2 / max(self.from_rate, self.to_rate)

    def output_length(self, input_length: int) -> int:
        """Samples the next ``process`` of ``input_length`` samples will return."""
        if self._down == 1:
            return input_length * self._up
        if input_length <= self._skip:
            return 0
        return (input_length - self._skip - 1) // self._down + 1

    def reset(self, row: int | None = None) -> None:
        """Forget the past (all rows, or one row when a new leg takes its slot)."""
        if row is None:
            self._history[:] = 0
            self._skip = self._down - 1
        else:
            self._history[row] = 0

    @overload
    def process(self, frame: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]: ...

    @overload
    def process(self, frame: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float32]: ...

    def process(self, frame: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Resample the next frame(s): 1-D (n,) or, with ``rows``, (rows, n)."""
        data = np.asarray(frame)
        expected_ndim = 1 if self.rows is None else 2
        if data.ndim != expected_ndim or (self.rows is not None and data.shape[0] != self.rows):
            want = "(n,)" if self.rows is None else f"({self.rows}, n)"
            raise CodecError(f"resampler wants frames shaped {want}, got {data.shape}")
        if self.from_rate == self.to_rate:
            return data
        is_int = data.dtype == np.int16
        if not is_int and not np.issubdtype(data.dtype, np.floating):
            raise CodecError(f"resampler takes int16 or float samples, got {data.dtype}")
        x = data.astype(np.float32, copy=False).reshape(self.rows or 1, -1)
        out = self._up_by(x) if self._up > 1 else self._down_by(x)
        if self.rows is None:
            out = out[0]
        if is_int:
            return np.clip(np.rint(out), -32768, 32767).astype(np.int16)
        return out

    def _extend(self, x: Float) -> Float:
        """History and new input as one buffer; the history becomes its tail."""
        keep = self._history.shape[1]
        buf = np.concatenate((self._history, x), axis=1)
        if keep:
            self._history = buf[:, buf.shape[1] - keep :].copy()
        return buf

    def _up_by(self, x: Float) -> Float:
        rows, n = x.shape
        buf = self._extend(x)
        if self._use_matrix(n):
            return _matmul(buf, self._frame_matrix(n, 0))
        k_taps = self._branches.shape[0]
        windows = np.lib.stride_tricks.sliding_window_view(buf, k_taps, axis=1)
        # (rows, n, K) @ (K, L): every input sample's L outputs at once.
        return _matmul(windows, self._branches).reshape(rows, n * self._up)

    def _down_by(self, x: Float) -> Float:
        n = x.shape[1]
        skip = self._skip
        use_matrix = self._use_matrix(n)
        self._skip = skip + self.output_length(n) * self._down - n
        buf = self._extend(x)
        if use_matrix:
            return _matmul(buf, self._frame_matrix(n, skip))
        taps = self._reversed_taps.shape[0]
        windows = np.lib.stride_tricks.sliding_window_view(buf, taps, axis=1)
        # Window i ends at input sample i of this frame; outputs fall every M-th one.
        return _matmul(windows[:, skip :: self._down, :], self._reversed_taps)

    def _use_matrix(self, n: int) -> bool:
        size = (self._history.shape[1] + n) * self.output_length(n)
        return bool(size <= _MATRIX_MAX_ELEMENTS)

    def _frame_matrix(self, n: int, skip: int) -> Float:
        return _frame_matrix(self.from_rate, self.to_rate, n, skip)


def _matmul(a: Float, b: Float) -> Float:
    out: Float = np.matmul(a, b)
    return out


# A frame whose filter matrix stays under this many elements (4 MB; a 20 ms frame
# needs 0.2-0.4 M) goes through one dense matrix product; longer inputs (whole
# files) through the windowed form, whose memory grows linearly, not squared.
_MATRIX_MAX_ELEMENTS: Final = 1 << 20


@lru_cache(maxsize=8)
def _frame_matrix(from_rate: int, to_rate: int, n: int, skip: int) -> Float:
    """The whole filter for one frame as a (history + n, outputs) matrix, banded.

    Multiplying the (rows, history + n) buffer by it is a single BLAS GEMM, two
    to ten times faster than the windowed product for one row or for many (the
    band wastes multiplications, BLAS more than pays for them). Frames always
    have the same length, so a handful of these are built once and shared by every
    resampler in the process; read-only.
    """
    high, low = max(from_rate, to_rate), min(from_rate, to_rate)
    taps = design_lowpass(high, low)
    if to_rate > from_rate:
        up = to_rate // from_rate
        k_taps = taps.shape[0] // up
        branches = (taps * up).reshape(k_taps, up)[::-1, :]
        matrix = np.zeros((k_taps - 1 + n, n * up), dtype=np.float32)
        # Output i*L + p reads inputs i..i+K-1 of the buffer with branch p's weights.
        i, j, p = np.meshgrid(np.arange(n), np.arange(k_taps), np.arange(up), indexing="ij")
        matrix[i + j, i * up + p] = branches[j, p]
    else:
        down = from_rate // to_rate
        count = 0 if n <= skip else (n - skip - 1) // down + 1
        length = taps.shape[0]
        matrix = np.zeros((length - 1 + n, count), dtype=np.float32)
        # Output m is the window of the buffer starting at skip + m*M.
        out_m, tap_j = np.meshgrid(np.arange(count), np.arange(length), indexing="ij")
        matrix[skip + out_m * down + tap_j, out_m] = taps[::-1][tap_j]
    matrix.flags.writeable = False
    return matrix

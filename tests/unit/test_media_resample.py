"""media.resample: frequency response, aliasing, exact lengths, seamless frames, batched rows."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from media.errors import CodecError
from media.resample import Resampler, design_lowpass

RATES = [(8000, 16000), (8000, 48000), (16000, 48000), (16000, 8000), (48000, 8000), (48000, 16000)]


def sine(freq: float, rate: int, samples: int, amplitude: float = 10000.0) -> npt.NDArray[np.int16]:
    t = np.arange(samples) / rate
    return np.rint(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def level_db(pcm: npt.NDArray[np.generic], rate: int, freq: float) -> float:
    """Amplitude at ``freq`` in dB relative to full scale (Hann-windowed FFT)."""
    data = np.asarray(pcm, dtype=np.float64)
    window = np.hanning(data.size)
    spectrum = np.abs(np.fft.rfft(data * window)) / (window.sum() / 2)
    freqs = np.fft.rfftfreq(data.size, 1 / rate)
    i = int(np.argmin(np.abs(freqs - freq)))
    return float(20 * np.log10(spectrum[max(i - 2, 0) : i + 3].max() / 32768 + 1e-12))


def peak_hz(pcm: npt.NDArray[np.generic], rate: int) -> float:
    data = np.asarray(pcm, dtype=np.float64)
    spectrum = np.abs(np.fft.rfft(data * np.hanning(data.size)))
    return float(np.fft.rfftfreq(data.size, 1 / rate)[int(np.argmax(spectrum))])


def by_frames(
    resampler: Resampler, signal: npt.NDArray[np.int16], frame: int
) -> npt.NDArray[np.int16]:
    return np.concatenate(
        [resampler.process(signal[i : i + frame]) for i in range(0, signal.size, frame)]
    )


@pytest.mark.parametrize(("src", "dst"), RATES)
def test_tone_keeps_frequency_and_level(src: int, dst: int) -> None:
    signal = sine(1000, src, src // 2)
    out = by_frames(Resampler(src, dst), signal, src // 50)
    assert out.size == dst // 2
    steady = out[dst // 20 :]  # past the filter's start-up
    assert peak_hz(steady, dst) == pytest.approx(1000, abs=dst / steady.size * 2)
    assert level_db(steady, dst, 1000) == pytest.approx(
        level_db(signal[src // 20 :], src, 1000), abs=0.2
    )


@pytest.mark.parametrize(
    ("src", "dst", "samples_in", "samples_out"),
    [
        (8000, 16000, 160, 320),
        (16000, 8000, 320, 160),
        (8000, 48000, 160, 960),
        (48000, 8000, 960, 160),
        (16000, 48000, 320, 960),
        (48000, 16000, 960, 320),
    ],
)
def test_exact_frame_lengths(src: int, dst: int, samples_in: int, samples_out: int) -> None:
    resampler = Resampler(src, dst)
    for _ in range(3):
        assert resampler.output_length(samples_in) == samples_out
        out = resampler.process(np.zeros(samples_in, dtype=np.int16))
        assert out.shape == (samples_out,) and out.dtype == np.int16


def test_no_aliasing_when_decimating() -> None:
    resampler = Resampler(48000, 8000)
    # 6 kHz at 48 kHz folds to 2 kHz at 8 kHz if the low-pass lets it through.
    out = resampler.process(sine(6000, 48000, 48000))
    assert level_db(out[800:], 8000, 2000) < -70
    # 4.5 kHz, just above the new Nyquist frequency, would fold to 3.5 kHz.
    resampler.reset()
    out = resampler.process(sine(4500, 48000, 48000))
    assert level_db(out[800:], 8000, 3500) < -60
    # In-band 3 kHz passes untouched; the telephone band's edge (3.4 kHz) within 1 dB.
    reference = level_db(sine(3000, 48000, 48000), 48000, 3000)
    for freq in (3000, 3400):
        resampler.reset()
        out = resampler.process(sine(freq, 48000, 48000))
        assert level_db(out[800:], 8000, freq) == pytest.approx(reference, abs=1.0)


def test_no_images_when_interpolating() -> None:
    # 3 kHz at 8 kHz upsampled: the image at 8 - 3 = 5 kHz must be filtered away.
    out = Resampler(8000, 48000).process(sine(3000, 8000, 8000))
    assert level_db(out[4800:], 48000, 5000) < -60
    assert level_db(out[4800:], 48000, 11000) < -60


@pytest.mark.parametrize(("src", "dst"), RATES)
def test_frames_stitch_seamlessly(src: int, dst: int) -> None:
    rng = np.random.default_rng(7)
    signal = (rng.standard_normal(src // 5) * 3000).astype(np.int16)
    whole = Resampler(src, dst).process(signal)  # one long input: the windowed path
    framed = by_frames(Resampler(src, dst), signal, src // 50)  # the per-frame matrix path
    odd = by_frames(Resampler(src, dst), signal, 77)  # frames not a multiple of the ratio
    assert framed.size == whole.size == odd.size
    # Same filter, same samples: only float rounding may differ (one LSB).
    assert np.abs(framed.astype(np.int32) - whole).max() <= 1
    assert np.abs(odd.astype(np.int32) - whole).max() <= 1


@pytest.mark.parametrize(("src", "dst"), RATES)
def test_no_discontinuity_at_frame_boundaries(src: int, dst: int) -> None:
    amplitude, freq = 10000.0, 440.0
    out = by_frames(Resampler(src, dst), sine(freq, src, src // 4, amplitude), src // 50)
    steps = np.abs(np.diff(out[dst // 50 :].astype(np.int32)))
    # A sine's steepest sample-to-sample step; a click at a boundary would exceed it.
    assert steps.max() <= amplitude * 2 * np.pi * freq / dst * 1.05 + 2


def test_float_in_float_out_unclipped() -> None:
    resampler = Resampler(8000, 16000)
    loud = np.full(400, 50000.0, dtype=np.float64)
    out = resampler.process(loud)
    assert out.dtype == np.float32
    assert out[-100:] == pytest.approx(50000.0, rel=1e-3)  # DC gain 1, no int16 clip
    clipped = Resampler(8000, 16000).process(np.full(400, 32767, dtype=np.int16))
    assert clipped.dtype == np.int16 and clipped.max() == 32767


def test_rows_match_independent_resamplers() -> None:
    rng = np.random.default_rng(3)
    legs = (rng.standard_normal((3, 480)) * 4000).astype(np.int16)
    batch = Resampler(8000, 48000, rows=3)
    singles = [Resampler(8000, 48000) for _ in range(3)]
    for start in range(0, 480, 160):
        together = batch.process(legs[:, start : start + 160])
        assert together.shape == (3, 960)
        for row, single in enumerate(singles):
            alone = single.process(legs[row, start : start + 160])
            assert np.abs(together[row].astype(np.int32) - alone).max() <= 1


def test_reset_one_row() -> None:
    batch = Resampler(16000, 8000, rows=2)
    batch.process(np.full((2, 320), 10000, dtype=np.int16))
    batch.reset(1)
    out = batch.process(np.zeros((2, 320), dtype=np.int16))
    assert np.abs(out[0]).max() > 1000  # row 0 still rings out its history
    assert not out[1].any()  # row 1 starts from silence


def test_same_rate_is_identity() -> None:
    frame = sine(1000, 16000, 320)
    resampler = Resampler(16000, 16000)
    assert resampler.process(frame) is frame
    assert resampler.delay_seconds == 0.0


def test_filter_properties() -> None:
    taps = design_lowpass(48000, 8000)
    assert taps.size % 6 == 0
    assert float(taps.sum()) == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(taps, taps[::-1])  # linear phase
    assert not taps.flags.writeable
    assert 0.002 < Resampler(48000, 8000).delay_seconds < 0.004


def test_errors() -> None:
    with pytest.raises(CodecError, match="not an integer ratio"):
        Resampler(44100, 48000)
    with pytest.raises(CodecError, match="must be positive"):
        Resampler(0, 8000)
    with pytest.raises(CodecError, match="rows must be positive"):
        Resampler(8000, 16000, rows=0)
    with pytest.raises(CodecError, match=r"frames shaped \(n,\), got \(2, 160\)"):
        Resampler(8000, 16000).process(np.zeros((2, 160), dtype=np.int16))
    with pytest.raises(CodecError, match=r"frames shaped \(4, n\), got \(3, 160\)"):
        Resampler(8000, 16000, rows=4).process(np.zeros((3, 160), dtype=np.int16))
    with pytest.raises(CodecError, match="int16 or float"):
        Resampler(8000, 16000).process(np.zeros(160, dtype=np.int32))

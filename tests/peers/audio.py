"""Test tones in, tone detection out: proves audio crossed a call.

Each phone plays a WAV of its own tone as its microphone; what the other side recorded
must then have that tone as its strongest frequency. Analysis skips silence (call setup,
jitter-buffer fill, hangup) so the result does not depend on timing.
"""

import struct
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# Segments quieter than this (RMS, full scale = 1.0) are silence: about -60 dBFS.
SILENCE_RMS = 1e-3
# ... and so are segments more than 20 dB below the loudest one (comfort noise, fades).
RELATIVE_SILENCE = 0.1
# Analysis segment: 0.25 s gives 4 Hz bins, refined by interpolation.
SEGMENT_SECONDS = 0.25


def write_tone_wav(
    path: Path,
    freq_hz: float,
    seconds: float,
    rate: int = 8000,
    amplitude: float = 0.5,
    channels: int = 1,
) -> Path:
    """Write a 16-bit PCM WAV of a sine tone (the same in every channel); ``amplitude`` is
    a fraction of full scale."""
    if not 0.0 <= amplitude <= 1.0:
        raise ValueError(f"amplitude must be within 0..1, got {amplitude}")
    if freq_hz < 0 or freq_hz >= rate / 2:
        raise ValueError(f"freq_hz must be within 0..{rate / 2} for rate {rate}, got {freq_hz}")
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    t = np.arange(round(seconds * rate), dtype=np.float64) / rate
    samples = np.round(amplitude * 32767.0 * np.sin(2.0 * np.pi * freq_hz * t)).astype("<i2")
    if channels > 1:
        samples = np.repeat(samples, channels)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return path


_PCM = 1
_IEEE_FLOAT = 3
_EXTENSIBLE = 0xFFFE
# A data size of 0 (or all ones) is what a WAV writer leaves until it closes the file:
# baresip's dumps read that way while their call is still being torn down.
_UNFINISHED_SIZES = (0, 0xFFFFFFFF)


def read_wav(path: Path) -> tuple[int, FloatArray]:
    """Return ``(rate, samples)``: a WAV of any rate and channel count, mixed down to mono
    and scaled to -1..1. PCM 8/16/24/32-bit and 32/64-bit float, plain or extensible;
    a file whose writer has not finalised the header yet is read to its end.
    """
    blob = path.read_bytes()
    if len(blob) < 12 or blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a RIFF/WAVE file")
    fmt: tuple[int, int, int, int] | None = None  # format, channels, rate, bits
    pos = 12
    while pos + 8 <= len(blob):
        chunk_id = blob[pos : pos + 4]
        (size,) = struct.unpack_from("<I", blob, pos + 4)
        body = pos + 8
        if chunk_id == b"fmt ":
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", blob, body)
            if tag == _EXTENSIBLE and size >= 40:
                (tag,) = struct.unpack_from("<H", blob, body + 24)  # sub-format GUID
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise ValueError(f"{path}: data chunk before fmt chunk")
            end = len(blob) if size in _UNFINISHED_SIZES else min(len(blob), body + size)
            return fmt[2], _decode(path, blob[body:end], *fmt)
        pos = body + size + (size & 1)
    raise ValueError(f"{path}: no data chunk")


def _decode(path: Path, raw: bytes, tag: int, channels: int, rate: int, bits: int) -> FloatArray:
    width = bits // 8
    raw = raw[: len(raw) - len(raw) % (width * channels)] if width and channels else b""
    if tag == _PCM and width == 1:  # 8-bit WAV is unsigned
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    elif tag == _PCM and width == 2:
        data = np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0
    elif tag == _PCM and width == 3:
        bytes3 = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = bytes3[:, 0] | (bytes3[:, 1] << 8) | (bytes3[:, 2] << 16)
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
        data = ints.astype(np.float64) / float(1 << 23)
    elif tag == _PCM and width == 4:
        data = np.frombuffer(raw, dtype="<i4").astype(np.float64) / float(1 << 31)
    elif tag == _IEEE_FLOAT and width in (4, 8):
        data = np.frombuffer(raw, dtype="<f4" if width == 4 else "<f8").astype(np.float64)
    else:
        raise ValueError(f"{path}: unsupported WAV format {tag:#x} with {bits}-bit samples")
    if channels < 1:
        raise ValueError(f"{path}: {channels} channels")
    mono: FloatArray = data.reshape(-1, channels).mean(axis=1)
    return mono


def _active_segments(path: Path, skip_seconds: float) -> tuple[int, FloatArray]:
    """Non-silent analysis segments of the file after ``skip_seconds``, one per row."""
    rate, samples = read_wav(path)
    samples = samples[int(skip_seconds * rate) :]
    size = max(1, int(SEGMENT_SECONDS * rate))
    count = len(samples) // size
    if count == 0:
        raise ValueError(
            f"{path}: shorter than {SEGMENT_SECONDS} s after skipping {skip_seconds} s"
        )
    segments = samples[: count * size].reshape(count, size)
    segments = segments - segments.mean(axis=1, keepdims=True)
    rms = np.sqrt(np.mean(segments**2, axis=1))
    threshold = max(SILENCE_RMS, RELATIVE_SILENCE * float(rms.max()))
    active = segments[rms >= threshold]
    if len(active) == 0:
        raise ValueError(f"{path}: silent after {skip_seconds} s (peak RMS {rms.max():.2e})")
    return rate, active


def _power_spectrum(path: Path, skip_seconds: float) -> tuple[FloatArray, FloatArray]:
    """Averaged power spectrum of the active segments, and its bin frequencies."""
    rate, active = _active_segments(path, skip_seconds)
    size = active.shape[1]
    spectra: FloatArray = np.abs(np.fft.rfft(active * np.hanning(size), axis=1)) ** 2
    power: FloatArray = spectra.mean(axis=0)
    freqs: FloatArray = np.fft.rfftfreq(size, 1.0 / rate).astype(np.float64)
    return freqs, power


def dominant_frequency(path: Path, skip_seconds: float = 0.5) -> float:
    """The strongest frequency (Hz) in the non-silent part of a WAV after ``skip_seconds``.

    Raises ``ValueError`` if nothing but silence is left.
    """
    freqs, power = _power_spectrum(path, skip_seconds)
    power[0] = 0.0  # DC
    peak = int(np.argmax(power))
    if 0 < peak < len(power) - 1:
        # Parabolic interpolation on log power refines the peak between bins.
        a, b, c = np.log(power[peak - 1 : peak + 2] + 1e-300)
        denominator = a - 2.0 * b + c
        offset = 0.5 * (a - c) / denominator if denominator != 0 else 0.0
        return float(freqs[peak] + offset * (freqs[1] - freqs[0]))
    return float(freqs[peak])


def band_energy_ratio(
    path: Path, freq: float, width: float = 30.0, skip_seconds: float = 0.5
) -> float:
    """Share (0..1) of the non-silent signal's energy within ``width`` Hz either side of ``freq``.

    A clean tone gives about 1.0; a mix of two equal tones about 0.5 for each.
    """
    freqs, power = _power_spectrum(path, skip_seconds)
    power[0] = 0.0
    total = float(power.sum())
    if total == 0.0:
        return 0.0
    band = (freqs >= freq - width) & (freqs <= freq + width)
    return float(power[band].sum()) / total


def active_seconds(path: Path, skip_seconds: float = 0.0) -> float:
    """How many seconds of the WAV (after ``skip_seconds``) are not silence; 0.0 if none."""
    try:
        rate, active = _active_segments(path, skip_seconds)
    except ValueError:
        return 0.0
    return active.size / rate

"""media.tones: tone levels and frequencies, Chinese cadences, clickless edges, files, Player."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from media.errors import AudioFileError, MediaError
from media.tones import (
    BUSY_CN,
    CONGESTION_CN,
    DIAL_TONE_CN,
    RINGBACK_CN,
    Cadence,
    Player,
    beep,
    cadence_signal,
    join_beep,
    leave_beep,
    load_audio_file,
    silence,
    tone,
)


def spectrum_peaks(pcm: npt.NDArray[np.int16], rate: int, count: int) -> list[float]:
    data = pcm.astype(np.float64) * np.hanning(pcm.size)
    magnitude = np.abs(np.fft.rfft(data))
    freqs = np.fft.rfftfreq(pcm.size, 1 / rate)
    peaks: list[float] = []
    for index in np.argsort(magnitude)[::-1]:
        if all(abs(freqs[index] - p) > 50 for p in peaks):
            peaks.append(float(freqs[index]))
        if len(peaks) == count:
            break
    return sorted(peaks)


def on_off(pcm: npt.NDArray[np.int16], rate: int, block_ms: int = 50) -> str:
    """One character per block: # where the tone is on, . where silent."""
    block = rate * block_ms // 1000
    return "".join(
        "#" if np.abs(pcm[i : i + block]).max() > 100 else "." for i in range(0, pcm.size, block)
    )


def test_tone_frequency_level_and_length() -> None:
    pcm = tone(450, 1000, 8000, level_dbfs=-6)
    assert pcm.dtype == np.int16 and pcm.shape == (8000,)
    assert spectrum_peaks(pcm, 8000, 1) == pytest.approx([450], abs=2)
    assert int(np.abs(pcm).max()) == pytest.approx(32767 * 10 ** (-6 / 20), rel=0.01)


def test_dual_tone() -> None:
    pcm = tone([697, 1209], 200, 16000)  # DTMF "1"
    assert spectrum_peaks(pcm, 16000, 2) == pytest.approx([697, 1209], abs=6)


def test_edges_are_ramped() -> None:
    pcm = tone(1000, 100, 48000, level_dbfs=0)
    assert abs(int(pcm[0])) < 100 and abs(int(pcm[-1])) < 100
    steps = np.abs(np.diff(pcm.astype(np.int32)))
    # No step larger than a full-scale 1 kHz sine's own slope at 48 kHz.
    assert steps.max() <= 32767 * 2 * np.pi * 1000 / 48000 * 1.01


def test_tone_errors() -> None:
    with pytest.raises(ValueError, match="Nyquist"):
        tone(5000, 100, 8000)
    with pytest.raises(ValueError, match="at least one frequency"):
        tone([], 100, 8000)
    with pytest.raises(ValueError, match="negative"):
        tone(440, -1, 8000)
    with pytest.raises(ValueError, match="sample rate"):
        silence(10, 0)


def test_beeps() -> None:
    assert beep(8000).shape == (1600,)
    assert spectrum_peaks(beep(16000, freq=800), 16000, 1) == pytest.approx([800], abs=6)
    join, leave = join_beep(16000), leave_beep(16000)
    assert join.shape == leave.shape == (16000 * 240 // 1000,)
    # Rising versus falling: the first note of one is the second of the other.
    first_half, second_half = slice(0, 1440), slice(1920, 3840)
    assert (
        spectrum_peaks(join[first_half], 16000, 1)[0]
        < spectrum_peaks(join[second_half], 16000, 1)[0]
    )
    assert (
        spectrum_peaks(leave[first_half], 16000, 1)[0]
        > spectrum_peaks(leave[second_half], 16000, 1)[0]
    )
    assert not silence(20, 8000).any()


def test_chinese_cadences() -> None:
    ringback = cadence_signal(RINGBACK_CN, 8000)
    assert ringback.shape == (5 * 8000,)
    assert on_off(ringback, 8000) == "#" * 20 + "." * 80
    assert spectrum_peaks(ringback[:8000], 8000, 1) == pytest.approx([450], abs=2)
    busy = cadence_signal(BUSY_CN, 8000)
    assert busy.shape == (int(0.7 * 8000),)
    assert on_off(busy, 8000) == "#" * 7 + "." * 7
    assert on_off(cadence_signal(CONGESTION_CN, 8000), 8000) == "#" * 14 + "." * 14
    assert RINGBACK_CN.period_ms == 5000 and BUSY_CN.freqs == (450.0,)


def test_continuous_dial_tone_loops_without_click() -> None:
    period = cadence_signal(DIAL_TONE_CN, 8000)
    looped = np.concatenate((period, period))
    steps = np.abs(np.diff(looped.astype(np.int32)))
    amplitude = np.abs(period).max()
    assert steps.max() <= amplitude * 2 * np.pi * 451 / 8000 * 1.05


def test_cadence_errors() -> None:
    with pytest.raises(ValueError, match="positive durations"):
        cadence_signal(Cadence((450.0,), ()), 8000)
    with pytest.raises(ValueError, match="positive durations"):
        cadence_signal(Cadence((450.0,), (100, 0)), 8000)


# --------------------------------------------------------------------------- files


def write_wav(path: Path, rate: int, channels: int, seconds: float, freq: float) -> None:
    t = np.arange(int(rate * seconds)) / rate
    mono = (10000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
    frames = np.repeat(mono, channels) if channels > 1 else mono
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames.tobytes())


def write_with_pyav(path: Path, codec: str, rate: int, seconds: float, freq: float) -> None:
    import av

    t = np.arange(int(rate * seconds)) / rate
    samples = (10000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        assert isinstance(stream, av.AudioStream)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def test_load_stereo_wav_resampled(tmp_path: Path) -> None:
    path = tmp_path / "prompt.wav"
    write_wav(path, 44100, 2, 0.5, 1000)
    pcm = load_audio_file(path, 8000)
    assert pcm.dtype == np.int16 and pcm.ndim == 1
    assert pcm.size == pytest.approx(4000, abs=40)
    assert spectrum_peaks(pcm, 8000, 1) == pytest.approx([1000], abs=20)
    assert np.abs(pcm).max() == pytest.approx(10000, rel=0.1)


@pytest.mark.parametrize(("name", "codec"), [("hold.mp3", "libmp3lame"), ("hold.ogg", "libopus")])
def test_load_compressed(tmp_path: Path, name: str, codec: str) -> None:
    path = tmp_path / name
    write_with_pyav(path, codec, 48000, 0.5, 600)
    pcm = load_audio_file(path, 16000)
    assert pcm.size == pytest.approx(8000, abs=1200)  # encoder padding varies by codec
    assert spectrum_peaks(pcm, 16000, 1) == pytest.approx([600], abs=20)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(AudioFileError, match="cannot decode") as info:
        load_audio_file(tmp_path / "missing.wav", 8000)
    assert isinstance(info.value, MediaError)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF" + bytes(range(256)) * 4)
    with pytest.raises(AudioFileError):
        load_audio_file(garbage, 8000)
    long_file = tmp_path / "long.wav"
    write_wav(long_file, 8000, 1, 2.0, 440)
    with pytest.raises(AudioFileError, match="longer than 1.0 s"):
        load_audio_file(long_file, 8000, max_seconds=1.0)


# --------------------------------------------------------------------------- Player


def test_player_once_pads_the_last_frame() -> None:
    samples = np.arange(1, 401, dtype=np.int16)
    player = Player(samples, 160)
    assert len(player) == 3
    frames = list(player)
    assert [f.size for f in frames] == [160, 160, 160]
    assert frames[0][0] == 1 and frames[2][79] == 400 and not frames[2][80:].any()
    assert player.done and player.read() is None
    player.rewind()
    first = player.read()
    assert first is not None and first[0] == 1


def test_player_loops_seamlessly() -> None:
    samples = np.arange(250, dtype=np.int16)
    player = Player.for_rate(samples, 8000, loop=True)
    frames = [player.read() for _ in range(4)]
    played = np.concatenate([f for f in frames if f is not None])
    assert np.array_equal(played, np.resize(samples, 640))
    assert not player.done and player.position == 640 % 250


def test_player_loops_a_buffer_shorter_than_a_frame() -> None:
    player = Player(np.array([1, 2, 3], dtype=np.int16), 8, loop=True)
    frame = player.read()
    assert frame is not None and frame.tolist() == [1, 2, 3, 1, 2, 3, 1, 2]
    assert player.position == 2


def test_player_frames_are_read_only_views() -> None:
    source = np.ones(320, dtype=np.int16)
    player = Player(source, 160)
    source[:] = 0  # the player took its own copy
    frame = player.read()
    assert frame is not None and frame.all()
    with pytest.raises(ValueError):
        frame[0] = 5


def test_player_errors() -> None:
    with pytest.raises(ValueError, match="frame size"):
        Player(np.zeros(10, dtype=np.int16), 0)
    with pytest.raises(ValueError, match="empty"):
        Player(np.zeros(0, dtype=np.int16), 160, loop=True)
    assert Player(np.zeros(0, dtype=np.int16), 160).read() is None


def test_ringback_through_a_player() -> None:
    player = Player.for_rate(cadence_signal(RINGBACK_CN, 8000), 8000, loop=True)
    frames = [player.read() for _ in range(500)]  # two periods, 10 s
    loud = ["#" if f is not None and np.abs(f).max() > 100 else "." for f in frames]
    assert "".join(loud) == ("#" * 50 + "." * 200) * 2

"""media.codecs: registry, exact G.711 tables against audioop, PyAV G.722/Opus, concealment."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from types import ModuleType

import numpy as np
import numpy.typing as npt
import pytest

from media.codecs import (
    G722,
    OPUS,
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    CodecSpec,
    Decoder,
    Encoder,
    G711Decoder,
    OpusEncoder,
    alaw_decode,
    alaw_encode,
    codec_for_payload_type,
    find_codec,
    get_codec,
    new_decoder,
    new_encoder,
    parse_rtpmap,
    ulaw_decode,
    ulaw_encode,
)
from media.errors import CodecError, MediaError

Pcm = npt.NDArray[np.int16]

ALL_INT16 = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
ALL_CODES = np.arange(256, dtype=np.uint8)


def sine(freq: float, rate: int, samples: int, amplitude: float = 8000.0, phase: int = 0) -> Pcm:
    t = (np.arange(samples) + phase) / rate
    return np.rint(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def peak_hz(pcm: Pcm, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(pcm.size)))
    return float(np.fft.rfftfreq(pcm.size, 1 / rate)[int(np.argmax(spectrum))])


def rms(pcm: npt.NDArray[np.generic]) -> float:
    return float(np.sqrt(np.mean(np.asarray(pcm, dtype=np.float64) ** 2)))


def audioop_module() -> ModuleType:
    with warnings.catch_warnings():
        # audioop is deprecated since 3.11 (gone in 3.13); it is only the reference here.
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop
    return audioop


# --------------------------------------------------------------------------- registry


def test_specs() -> None:
    assert (PCMU.payload_type, PCMU.clock_rate, PCMU.sample_rate) == (0, 8000, 8000)
    assert (PCMA.payload_type, PCMA.clock_rate) == (8, 8000)
    # RFC 3551 4.5.2: G.722 samples at 16 kHz but its RTP clock says 8000.
    assert (G722.payload_type, G722.clock_rate, G722.sample_rate) == (9, 8000, 16000)
    assert G722.samples_per_frame() == 320
    assert G722.timestamp_step() == 160
    assert (OPUS.payload_type, OPUS.clock_rate, OPUS.sample_rate) == (None, 48000, 48000)
    assert OPUS.samples_per_frame() == 960
    assert OPUS.samples_per_frame(10) == 480
    assert PCMU.samples_per_frame(30) == 240
    assert OPUS.rtpmap == "opus/48000/2"
    assert G722.rtpmap == "G722/8000"
    assert PCMU.ptime_ms == 20 and PCMU.channels == 1
    assert not TELEPHONE_EVENT.is_audio and PCMU.is_audio


def test_bad_ptime() -> None:
    with pytest.raises(CodecError, match="ptime 0 ms"):
        PCMU.samples_per_frame(0)
    with pytest.raises(CodecError, match="ptime 20 ms is not a whole number of samples at 11025"):
        CodecSpec("L16", None, 11025, 11025).samples_per_frame()


def test_get_codec_case_insensitive() -> None:
    assert get_codec("pcmu") is PCMU
    assert get_codec("OPUS") is OPUS
    assert get_codec("Telephone-Event") is TELEPHONE_EVENT
    with pytest.raises(CodecError, match="unknown codec 'G729'") as info:
        get_codec("G729")
    assert isinstance(info.value, MediaError) and isinstance(info.value, ValueError)


def test_find_codec_from_rtpmap() -> None:
    assert find_codec("pcma", 8000) is PCMA
    assert find_codec("PCMU", 16000) is None  # the clock is part of the format
    assert find_codec("G722", 16000) is None  # the quirk: only 8000 is G.722
    assert find_codec("opus", 48000, 2) is OPUS
    assert find_codec("opus", 48000, 1) is OPUS
    assert find_codec("opus", 48000, 3) is None
    assert find_codec("L16", 8000) is None
    event48 = find_codec("telephone-event", 48000)
    assert event48 is not None and event48.clock_rate == 48000 and event48.name == "telephone-event"
    assert find_codec("telephone-event", 8000) is TELEPHONE_EVENT


def test_parse_rtpmap() -> None:
    assert parse_rtpmap("PCMU/8000") is PCMU
    assert parse_rtpmap(" opus/48000/2 ") is OPUS
    assert parse_rtpmap("telephone-event/16000").clock_rate == 16000
    with pytest.raises(CodecError, match="expected name/rate"):
        parse_rtpmap("PCMU")
    with pytest.raises(CodecError, match="must be integers"):
        parse_rtpmap("PCMU/eight")
    with pytest.raises(CodecError, match="unsupported codec 'G729/8000'"):
        parse_rtpmap("G729/8000")


def test_static_payload_types() -> None:
    assert codec_for_payload_type(0) is PCMU
    assert codec_for_payload_type(8) is PCMA
    assert codec_for_payload_type(9) is G722
    assert codec_for_payload_type(18) is None


def test_factories() -> None:
    for spec in (PCMU, PCMA, G722, OPUS):
        encoder, decoder = new_encoder(spec), new_decoder(spec)
        assert isinstance(encoder, Encoder) and isinstance(decoder, Decoder)
        assert encoder.spec is spec and decoder.spec is spec
    with pytest.raises(CodecError, match="media.dtmf"):
        new_encoder(TELEPHONE_EVENT)
    with pytest.raises(CodecError, match="no decoder for L16"):
        new_decoder(CodecSpec("L16", 11, 44100, 44100))


# --------------------------------------------------------------------------- G.711


def test_ulaw_known_values() -> None:
    assert ulaw_decode(np.array([0xFF, 0x7F, 0x00, 0x80], dtype=np.uint8)).tolist() == [
        0,
        0,
        -32124,
        32124,
    ]
    # -1 is the smallest negative step, not "negative zero" (0x7F is never produced).
    assert ulaw_encode(np.array([0, -1, 32767, -32768], dtype=np.int16)).tolist() == [
        0xFF,
        0x7E,
        0x80,
        0x00,
    ]


def test_alaw_known_values() -> None:
    assert alaw_decode(np.array([0xD5, 0x55, 0xAA, 0x2A], dtype=np.uint8)).tolist() == [
        8,
        -8,
        32256,
        -32256,
    ]
    assert alaw_encode(np.array([0, -1, 32767, -32768], dtype=np.int16)).tolist() == [
        0xD5,
        0x55,
        0xAA,
        0x2A,
    ]


def test_g711_matches_audioop_everywhere() -> None:
    audioop = audioop_module()
    raw = ALL_INT16.tobytes()
    assert ulaw_encode(ALL_INT16).tobytes() == audioop.lin2ulaw(raw, 2)
    assert alaw_encode(ALL_INT16).tobytes() == audioop.lin2alaw(raw, 2)
    codes = ALL_CODES.tobytes()
    assert ulaw_decode(ALL_CODES).tobytes() == audioop.ulaw2lin(codes, 2)
    assert alaw_decode(ALL_CODES).tobytes() == audioop.alaw2lin(codes, 2)


@pytest.mark.parametrize(
    ("encode", "decode"), [(ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)]
)
def test_g711_round_trip_error_bound(
    encode: Callable[[Pcm], npt.NDArray[np.uint8]], decode: Callable[[npt.NDArray[np.uint8]], Pcm]
) -> None:
    back = decode(encode(ALL_INT16)).astype(np.int32)
    error = np.abs(back - ALL_INT16.astype(np.int32))
    # Logarithmic companding: the error grows with the magnitude, 1/32 of it at most
    # (plus the smallest step near zero).
    assert np.all(error <= np.abs(ALL_INT16.astype(np.int32)) / 32 + 8)
    # Decoding then re-encoding every code is the identity (the decoded values are
    # the quantiser's reconstruction points), except μ-law's negative zero.
    codes = encode(decode(ALL_CODES))
    mismatched = ALL_CODES[codes != ALL_CODES].tolist()
    assert mismatched in ([], [0x7F])


def test_g711_batch_shapes_and_out() -> None:
    rng = np.random.default_rng(1)
    frames = rng.integers(-32768, 32768, size=(500, 160), dtype=np.int16)
    codes = ulaw_encode(frames)
    assert codes.shape == (500, 160) and codes.dtype == np.uint8
    out = np.empty((500, 160), dtype=np.int16)
    decoded = ulaw_decode(codes, out=out)
    assert decoded is out
    assert np.array_equal(out[3], ulaw_decode(codes[3]))
    code_out = np.empty((500, 160), dtype=np.uint8)
    assert alaw_encode(frames, out=code_out) is code_out
    assert np.array_equal(code_out, alaw_encode(frames))


def test_g711_encode_clips_wider_types() -> None:
    sums = np.array([40000, -40000, 1000, 12.6], dtype=np.float64)
    assert (
        ulaw_encode(sums).tolist()
        == ulaw_encode(np.array([32767, -32768, 1000, 13], dtype=np.int16)).tolist()
    )
    wide = np.array([70000, -70000], dtype=np.int32)
    assert alaw_encode(wide).tolist() == [0xAA, 0x2A]


def test_g711_decode_rejects_wrong_dtype() -> None:
    with pytest.raises(CodecError, match="uint8"):
        ulaw_decode(np.array([1, 2], dtype=np.int16))


@pytest.mark.parametrize("spec", [PCMU, PCMA])
def test_g711_codec_round_trip(spec: CodecSpec) -> None:
    encoder, decoder = new_encoder(spec), new_decoder(spec)
    pcm = sine(1000, 8000, 160)
    payload = encoder.encode(pcm)
    assert len(payload) == 160
    decoded = decoder.decode(payload)
    assert decoded.dtype == np.int16 and decoded.shape == (160,)
    noise = rms(decoded.astype(np.int32) - pcm)
    assert 20 * np.log10(rms(pcm) / noise) > 35  # G.711's SNR is about 38 dB
    with pytest.raises(CodecError, match="1-D frame"):
        encoder.encode(np.zeros((2, 80), dtype=np.int16))


# --------------------------------------------------------------------------- concealment


def test_g711_concealment_continues_then_fades() -> None:
    encoder, decoder = new_encoder(PCMU), new_decoder(PCMU)
    signal = sine(200, 8000, 160 * 6)
    frames = [decoder.decode(encoder.encode(signal[i * 160 : (i + 1) * 160])) for i in range(3)]
    first = decoder.conceal(160)
    # Pitch repetition: the first 10 ms are the repeated period at full level, and
    # the junction with the last good sample is smooth (200 Hz moves at most ~0.16
    # of its amplitude per sample at 8 kHz).
    assert abs(int(first[0]) - int(frames[-1][-1])) < 0.2 * 8000
    assert rms(first[:80]) == pytest.approx(rms(signal), rel=0.1)
    second, third, fourth = decoder.conceal(160), decoder.conceal(160), decoder.conceal(160)
    assert rms(third) < rms(second) < rms(first)
    assert abs(int(third[-1])) < 50  # faded out at 60 ms of loss
    assert not fourth.any()  # and silent after
    # Recovery is faded in from the silence, not a hard jump to mid-swing.
    recovered = decoder.decode(encoder.encode(signal[210:370]))
    assert abs(int(signal[210])) > 7000
    assert abs(int(recovered[0])) < 1000
    assert recovered[100] == decoder.decode(encoder.encode(signal[210:370]))[100]


def test_g711_recovery_crossfade_is_smooth() -> None:
    decoder = G711Decoder(PCMU)
    encoder = new_encoder(PCMU)
    signal = sine(250, 8000, 160 * 4)
    for i in range(2):
        decoder.decode(encoder.encode(signal[i * 160 : (i + 1) * 160]))
    concealed = decoder.conceal(160)
    resumed = decoder.decode(encoder.encode(signal[480:640]))
    # The signal resumes out of phase with the repetition; the 2 ms crossfade keeps
    # the step between the two frames far below a full swing.
    assert abs(int(resumed[0]) - int(concealed[-1])) < 3000


def test_conceal_zero_samples() -> None:
    assert new_decoder(PCMA).conceal(0).shape == (0,)
    assert new_decoder(OPUS).conceal(0).shape == (0,)


# --------------------------------------------------------------------------- G.722


def test_g722_round_trip() -> None:
    encoder, decoder = new_encoder(G722), new_decoder(G722)
    signal = sine(1000, 16000, 320 * 10)
    decoded = []
    for i in range(10):
        payload = encoder.encode(signal[i * 320 : (i + 1) * 320])
        assert len(payload) == 160  # 64 kbit/s: 8 bytes per ms
        pcm = decoder.decode(payload)
        assert pcm.dtype == np.int16 and pcm.shape == (320,)
        decoded.append(pcm)
    out = np.concatenate(decoded)[640:]
    assert peak_hz(out, 16000) == pytest.approx(1000, abs=10)
    assert rms(out) == pytest.approx(rms(signal), rel=0.1)


def test_g722_other_ptime_and_errors() -> None:
    encoder = new_encoder(G722, ptime_ms=10)
    assert len(encoder.encode(np.zeros(160, dtype=np.int16))) == 80
    with pytest.raises(CodecError, match="wants 160 samples per frame, got 320"):
        encoder.encode(np.zeros(320, dtype=np.int16))
    decoder = new_decoder(G722)
    assert decoder.decode(b"").shape == (0,)  # never handed to FFmpeg (would end the stream)
    assert decoder.decode(b"\x00" * 160).shape == (320,)
    lost = decoder.conceal(320)
    assert lost.shape == (320,) and lost.dtype == np.int16


# --------------------------------------------------------------------------- Opus


def opus_stream(frames: int, freq: float = 440.0) -> tuple[Pcm, list[bytes]]:
    encoder = new_encoder(OPUS)
    signal = sine(freq, 48000, 960 * frames)
    return signal, [encoder.encode(signal[i * 960 : (i + 1) * 960]) for i in range(frames)]


def test_opus_round_trip() -> None:
    signal, payloads = opus_stream(20, 1000)
    assert all(0 < len(p) < 200 for p in payloads)
    decoder = new_decoder(OPUS)
    decoded = np.concatenate([decoder.decode(p) for p in payloads])
    assert decoded.shape == signal.shape and decoded.dtype == np.int16
    assert peak_hz(decoded[9600:], 48000) == pytest.approx(1000, abs=10)
    assert rms(decoded[9600:]) == pytest.approx(rms(signal), rel=0.2)


def test_opus_plc_continues_the_signal() -> None:
    _, payloads = opus_stream(15)
    decoder = new_decoder(OPUS)
    for payload in payloads[:10]:
        decoder.decode(payload)
    lost = decoder.conceal(960)
    assert lost.shape == (960,)
    # libopus's PLC extrapolates the 440 Hz tone rather than going silent at once.
    assert rms(lost) > 1000
    assert peak_hz(lost, 48000) == pytest.approx(440, abs=60)
    longer = [decoder.conceal(960) for _ in range(10)]
    assert rms(longer[-1]) < rms(lost) / 4  # and fades over a long loss
    # Odd sizes are served from a continuous PLC signal.
    assert decoder.conceal(500).shape == (500,)
    assert decoder.conceal(500).shape == (500,)
    assert decoder.decode(payloads[11]).shape == (960,)


def test_opus_conceal_before_any_packet_is_silence() -> None:
    assert not new_decoder(OPUS).conceal(960).any()


def test_opus_bad_payload_is_codec_error_and_decoder_survives() -> None:
    _, payloads = opus_stream(3)
    decoder = new_decoder(OPUS)
    with pytest.raises(CodecError, match="opus payload rejected"):
        decoder.decode(bytes([0x4B, 0xFF, 0xFF, 0xFF]))  # code 3 with an impossible count
    assert decoder.decode(payloads[0]).shape == (960,)
    assert decoder.decode(b"").shape == (0,)
    assert decoder.decode(payloads[1]).shape == (960,)


def test_opus_encoder_options() -> None:
    encoder = OpusEncoder(ptime_ms=10, bitrate=24000, fec=True, expected_loss_percent=10)
    assert encoder.frame_samples == 480
    assert encoder.encode(sine(300, 48000, 480))
    with pytest.raises(CodecError, match="2.5-60 ms, not 30 ms"):
        OpusEncoder(ptime_ms=30)
    with pytest.raises(CodecError, match="outside 0-100"):
        OpusEncoder(expected_loss_percent=101)
    assert OpusEncoder(complexity=0).encode(sine(300, 48000, 960))
    with pytest.raises(CodecError, match="complexity 11 outside 0-10"):
        OpusEncoder(complexity=11)
    with pytest.raises(CodecError, match="wants 960 samples"):
        new_encoder(OPUS).encode(np.zeros(480, dtype=np.int16))

"""Audio codecs behind one small interface, and a registry keyed by SDP name.

The mixer sees every leg as int16 PCM frames at the leg's ``CodecSpec.sample_rate``
(8, 16 or 48 kHz); a codec turns one frame into one RTP payload and back. Three
implementations sit behind the ``Encoder``/``Decoder`` protocols:

- G.711 (PCMU, PCMA) in numpy: exact ITU-T tables built once at import, and batch
  functions (``ulaw_decode``, ``alaw_encode``...) that take arrays of any shape, so
  a bridge decodes all its G.711 legs in one call per tick instead of one per leg.
- G.722 and Opus through PyAV (FFmpeg's ``g722`` and ``libopus``). Neither can be
  vectorised across legs (ADPCM and Opus are sequential), so each leg owns a
  codec context; the benchmark in ``bench/bench_codecs.py`` gives their cost.
- ``telephone-event`` has a spec (for SDP) but no codec: its payloads are events,
  handled by ``media.dtmf``.

Packet-loss concealment is the decoder's job (``conceal(samples)``), since only it
knows the codec: libopus runs its own PLC when fed a TOC-only packet (RFC 6716
3.2.1, a zero-length frame means "lost"); the others repeat the last pitch period
with a fade, after ITU-T G.711 Appendix I.

Nothing here touches sockets or clocks; a codec context is pure state.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from media.errors import CodecError

if TYPE_CHECKING:
    from av import AudioFrame
    from av.audio.codeccontext import AudioCodecContext

__all__ = [
    "ALL_CODECS",
    "G722",
    "OPUS",
    "PCMA",
    "PCMU",
    "TELEPHONE_EVENT",
    "RepeatConcealer",
    "CodecSpec",
    "Decoder",
    "Encoder",
    "G711Decoder",
    "G711Encoder",
    "G722Decoder",
    "G722Encoder",
    "OpusDecoder",
    "OpusEncoder",
    "alaw_decode",
    "alaw_encode",
    "codec_for_payload_type",
    "find_codec",
    "get_codec",
    "new_decoder",
    "new_encoder",
    "parse_rtpmap",
    "ulaw_decode",
    "ulaw_encode",
]

Pcm = npt.NDArray[np.int16]
"""int16 samples, mono."""

DEFAULT_PTIME_MS: Final = 20


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True, slots=True)
class CodecSpec:
    """What the hub knows about one RTP audio payload format."""

    name: str
    """Encoding name as written in ``a=rtpmap`` (RFC 4855: compared case-insensitively)."""
    payload_type: int | None
    """RFC 3551 static payload type, or None for a dynamic one (negotiated in SDP)."""
    clock_rate: int
    """RTP timestamp clock. G.722 says 8000 though it samples at 16 kHz (RFC 3551 4.5.2)."""
    sample_rate: int
    """Rate of the PCM the codec consumes and produces: 8000, 16000 or 48000."""
    channels: int = 1
    """PCM channels the hub encodes and decodes: always mono."""
    ptime_ms: int = DEFAULT_PTIME_MS
    """Default packetisation time."""
    sdp_channels: int | None = None
    """The rtpmap's channel parameter when it must be written (RFC 7587: ``opus/48000/2``)."""

    @property
    def rtpmap(self) -> str:
        """The ``a=rtpmap`` value without the payload type, e.g. ``G722/8000``."""
        base = f"{self.name}/{self.clock_rate}"
        return base if self.sdp_channels is None else f"{base}/{self.sdp_channels}"

    @property
    def is_audio(self) -> bool:
        """False for telephone-event, which has a clock but no PCM."""
        return self.name.lower() != "telephone-event"

    def samples_per_frame(self, ptime_ms: int | None = None) -> int:
        """PCM samples in one frame of ``ptime_ms`` (default: the spec's ptime)."""
        return _per_ms(self.sample_rate, self.ptime_ms if ptime_ms is None else ptime_ms)

    def timestamp_step(self, ptime_ms: int | None = None) -> int:
        """RTP timestamp increment per frame: differs from samples for G.722 (160 vs 320)."""
        return _per_ms(self.clock_rate, self.ptime_ms if ptime_ms is None else ptime_ms)


def _per_ms(rate: int, ptime_ms: int) -> int:
    if ptime_ms <= 0 or (rate * ptime_ms) % 1000:
        raise CodecError(f"ptime {ptime_ms} ms is not a whole number of samples at {rate} Hz")
    return rate * ptime_ms // 1000


PCMU: Final = CodecSpec("PCMU", 0, 8000, 8000)
PCMA: Final = CodecSpec("PCMA", 8, 8000, 8000)
G722: Final = CodecSpec("G722", 9, 8000, 16000)
OPUS: Final = CodecSpec("opus", None, 48000, 48000, sdp_channels=2)
TELEPHONE_EVENT: Final = CodecSpec("telephone-event", None, 8000, 8000)

ALL_CODECS: Final[tuple[CodecSpec, ...]] = (PCMU, PCMA, G722, OPUS, TELEPHONE_EVENT)
_BY_NAME: Final = {spec.name.lower(): spec for spec in ALL_CODECS}
_BY_STATIC_PT: Final = {
    spec.payload_type: spec for spec in ALL_CODECS if spec.payload_type is not None
}


def get_codec(name: str) -> CodecSpec:
    """The spec registered under ``name`` (case-insensitive); CodecError if unknown."""
    spec = _BY_NAME.get(name.lower())
    if spec is None:
        known = ", ".join(s.name for s in ALL_CODECS)
        raise CodecError(f"unknown codec {name!r}; known: {known}")
    return spec


def find_codec(encoding: str, clock_rate: int, channels: int = 1) -> CodecSpec | None:
    """Match one SDP ``a=rtpmap`` (already split) against the registry, or None.

    The clock must match too: ``PCMU/16000`` is not PCMU. telephone-event is the
    exception, since RFC 4733 lets it run at the audio codec's clock (8000 with
    G.711, 48000 next to Opus); the spec returned carries that clock. Opus is
    always announced with 2 channels (RFC 7587 7) but 1 is accepted too, as some
    peers write it.
    """
    spec = _BY_NAME.get(encoding.lower())
    if spec is None:
        return None
    if spec is TELEPHONE_EVENT:
        if clock_rate <= 0 or channels != 1:
            return None
        return (
            spec
            if clock_rate == spec.clock_rate
            else dataclasses.replace(spec, clock_rate=clock_rate, sample_rate=clock_rate)
        )
    if clock_rate != spec.clock_rate:
        return None
    allowed = {1} if spec.sdp_channels is None else {1, spec.sdp_channels}
    return spec if channels in allowed else None


def parse_rtpmap(text: str) -> CodecSpec:
    """``"PCMU/8000"`` or ``"opus/48000/2"`` to its spec; CodecError if malformed or unknown."""
    parts = text.strip().split("/")
    if len(parts) not in (2, 3) or not parts[0]:
        raise CodecError(f"bad rtpmap {text!r}: expected name/rate[/channels]")
    try:
        rate = int(parts[1])
        channels = int(parts[2]) if len(parts) == 3 else 1
    except ValueError:
        raise CodecError(f"bad rtpmap {text!r}: rate and channels must be integers") from None
    spec = find_codec(parts[0], rate, channels)
    if spec is None:
        raise CodecError(f"unsupported codec {text.strip()!r}")
    return spec


def codec_for_payload_type(payload_type: int) -> CodecSpec | None:
    """The codec of a static payload type (an SDP without rtpmap, RFC 3551 table 4)."""
    return _BY_STATIC_PT.get(payload_type)


# --------------------------------------------------------------------------- interface


@runtime_checkable
class Encoder(Protocol):
    """Turns one PCM frame at ``spec.sample_rate`` into one RTP payload."""

    @property
    def spec(self) -> CodecSpec: ...

    def encode(self, pcm: Pcm) -> bytes:
        """Encode one 1-D int16 frame of exactly ``frame_samples`` samples."""
        ...


@runtime_checkable
class Decoder(Protocol):
    """Turns one RTP payload into PCM, and conjures PCM for a payload that never came."""

    @property
    def spec(self) -> CodecSpec: ...

    def decode(self, payload: bytes) -> Pcm:
        """Decode one payload; an empty payload decodes to no samples."""
        ...

    def conceal(self, samples: int) -> Pcm:
        """``samples`` samples standing in for a lost payload (packet-loss concealment)."""
        ...


def _frame_check(pcm: npt.NDArray[np.generic], expected: int | None, spec: CodecSpec) -> Pcm:
    """One mono int16 frame, contiguous (PyAV and tobytes need that), or CodecError."""
    if pcm.ndim != 1:
        raise CodecError(f"{spec.name} encoder wants a 1-D frame, got shape {pcm.shape}")
    if expected is not None and pcm.shape[0] != expected:
        raise CodecError(
            f"{spec.name} encoder wants {expected} samples per frame, got {pcm.shape[0]}"
        )
    return _as_int16(pcm)


def _as_int16(pcm: npt.NDArray[np.generic]) -> Pcm:
    """int16 view when possible; other dtypes are rounded and clipped, not wrapped."""
    if pcm.dtype == np.int16:
        return np.ascontiguousarray(pcm, dtype=np.int16)
    data = np.asarray(pcm)
    if np.issubdtype(data.dtype, np.floating):
        data = np.rint(data)
    return np.clip(data, -32768, 32767).astype(np.int16)


# --------------------------------------------------------------------------- G.711
#
# The algorithms of ITU-T G.711 as written in the reference C (Sun's g711.c, which
# CPython's audioop also follows), run once over every code and every int16 value.
# After that, encoding and decoding are a single fancy-indexing lookup.

_SEG_MASK = 0x70
_SEG_SHIFT = 4
_QUANT_MASK = 0x0F
_SIGN_BIT = 0x80
_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159
_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])


def _build_ulaw_decode() -> Pcm:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = ((u & _QUANT_MASK) << 3) + _ULAW_BIAS
    t <<= (u & _SEG_MASK) >> _SEG_SHIFT
    return np.where(u & _SIGN_BIT, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


def _build_alaw_decode() -> Pcm:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    t = (a & _QUANT_MASK) << 4
    seg = (a & _SEG_MASK) >> _SEG_SHIFT
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & _SIGN_BIT, t, -t).astype(np.int16)


def _all_int16_by_bits() -> npt.NDArray[np.int32]:
    """Every int16 value, placed at the index of its uint16 bit pattern."""
    return np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)


def _build_ulaw_encode() -> npt.NDArray[np.uint8]:
    pcm = _all_int16_by_bits() >> 2
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(pcm), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = np.searchsorted(_ULAW_SEG_END, mag, side="left")
    code = (seg << 4) | ((mag >> (seg + 1)) & _QUANT_MASK)
    code = np.where(seg >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


def _build_alaw_encode() -> npt.NDArray[np.uint8]:
    pcm = _all_int16_by_bits() >> 3
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    mag = np.where(pcm >= 0, pcm, -pcm - 1)
    seg = np.searchsorted(_ALAW_SEG_END, mag, side="left")
    shift = np.where(seg < 2, 1, seg)
    code = (seg << 4) | ((mag >> shift) & _QUANT_MASK)
    code = np.where(seg >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


ULAW_DECODE_TABLE: Final = _build_ulaw_decode()
ALAW_DECODE_TABLE: Final = _build_alaw_decode()
ULAW_ENCODE_TABLE: Final = _build_ulaw_encode()
ALAW_ENCODE_TABLE: Final = _build_alaw_encode()
for _table in (ULAW_DECODE_TABLE, ALAW_DECODE_TABLE, ULAW_ENCODE_TABLE, ALAW_ENCODE_TABLE):
    # Shared by every leg: a stray in-place write would corrupt every call at once.
    _table.flags.writeable = False


def _lookup_decode(table: Pcm, codes: npt.NDArray[np.uint8], out: Pcm | None) -> Pcm:
    if codes.dtype != np.uint8:
        raise CodecError(f"G.711 codes must be uint8, got {codes.dtype}")
    if out is None:
        return table[codes]
    np.take(table, codes, out=out)
    return out


def _lookup_encode(
    table: npt.NDArray[np.uint8],
    pcm: npt.NDArray[np.generic],
    out: npt.NDArray[np.uint8] | None,
) -> npt.NDArray[np.uint8]:
    bits = (pcm if pcm.dtype == np.int16 else _as_int16(pcm)).view(np.uint16)
    if out is None:
        return table[bits]
    np.take(table, bits, out=out)
    return out


def ulaw_decode(codes: npt.NDArray[np.uint8], out: Pcm | None = None) -> Pcm:
    """μ-law codes (uint8, any shape) to int16 PCM of the same shape; one table lookup.

    ``out`` (int16, same shape) avoids an allocation in the mixer's tick.
    """
    return _lookup_decode(ULAW_DECODE_TABLE, codes, out)


def alaw_decode(codes: npt.NDArray[np.uint8], out: Pcm | None = None) -> Pcm:
    """A-law codes (uint8, any shape) to int16 PCM of the same shape."""
    return _lookup_decode(ALAW_DECODE_TABLE, codes, out)


def ulaw_encode(
    pcm: npt.NDArray[np.generic], out: npt.NDArray[np.uint8] | None = None
) -> npt.NDArray[np.uint8]:
    """int16 PCM (any shape) to μ-law codes; other dtypes are clipped to int16 first.

    The mixer's int32 sums can be passed as they are: clipping, not wrapping.
    """
    return _lookup_encode(ULAW_ENCODE_TABLE, pcm, out)


def alaw_encode(
    pcm: npt.NDArray[np.generic], out: npt.NDArray[np.uint8] | None = None
) -> npt.NDArray[np.uint8]:
    """int16 PCM (any shape) to A-law codes; other dtypes are clipped to int16 first."""
    return _lookup_encode(ALAW_ENCODE_TABLE, pcm, out)


# --------------------------------------------------------------------------- concealment


class RepeatConcealer:
    """Packet-loss concealment by pitch repetition with fade (after G.711 Appendix I).

    Keeps the last 30 ms of output. On a loss it finds the pitch period of that
    history by autocorrelation (2.5-15 ms) and repeats the last period, which keeps
    voiced speech continuous instead of the click a whole-frame repeat makes. The
    gain holds for 10 ms, then falls linearly to silence at 60 ms: repeating longer
    sounds robotic. The first good frame after a loss is cross-faded from the
    repetition so the junction does not click either.
    """

    _HOLD_MS: Final = 10
    _MUTE_MS: Final = 60
    _HISTORY_MS: Final = 30

    def __init__(self, sample_rate: int) -> None:
        self._rate = sample_rate
        self._history: npt.NDArray[np.float32] = np.zeros(
            sample_rate * self._HISTORY_MS // 1000, dtype=np.float32
        )
        self._min_period = sample_rate // 400
        self._max_period = sample_rate * 15 // 1000
        self._hold = sample_rate * self._HOLD_MS // 1000
        self._mute = sample_rate * self._MUTE_MS // 1000
        self._period: npt.NDArray[np.float32] | None = None
        self._phase = 0
        self._lost = 0  # samples concealed in the current loss burst

    def _find_period(self) -> int:
        history = self._history
        window = self._max_period
        target = history[-window:]
        # Candidate segments ending `lag` samples before the end of history.
        segs = np.lib.stride_tricks.sliding_window_view(history[:-1], window)
        lags = np.arange(self._min_period, self._max_period + 1)
        starts = history.shape[0] - window - lags
        valid = starts >= 0
        lags, starts = lags[valid], starts[valid]
        if lags.size == 0:
            return self._max_period
        cands = segs[starts]
        energy = np.einsum("ij,ij->i", cands, cands) + 1e-3
        corr = (cands @ target) / np.sqrt(energy)
        return int(lags[int(np.argmax(corr))])

    def good(self, pcm: Pcm) -> Pcm:
        """Record a decoded frame; returns it, cross-faded if it ends a loss burst."""
        if self._lost and pcm.size:
            n = min(pcm.size, max(self._rate // 500, 1))  # 2 ms
            tail = self._continue(n).astype(np.float32)
            ramp = np.linspace(0.0, 1.0, n + 2, dtype=np.float32)[1:-1]
            head = pcm[:n].astype(np.float32) * ramp + tail * (1.0 - ramp)
            pcm = pcm.copy()
            pcm[:n] = np.clip(np.rint(head), -32768, 32767).astype(np.int16)
        self._lost = 0
        self._period = None
        self._remember(pcm)
        return pcm

    def _remember(self, pcm: Pcm) -> None:
        size = self._history.shape[0]
        data = pcm.astype(np.float32)
        if data.size >= size:
            self._history = data[-size:].copy()
        else:
            self._history = np.concatenate((self._history[data.size :], data))

    def _continue(self, samples: int) -> Pcm:
        """The next ``samples`` of the repetition, with the fade applied; advances the state."""
        if self._period is None:
            period_len = self._find_period()
            self._period = self._history[-period_len:].copy()
            self._phase = 0
        period = self._period
        idx = (self._phase + np.arange(samples)) % period.shape[0]
        self._phase = int((self._phase + samples) % period.shape[0])
        position = self._lost + np.arange(samples, dtype=np.float32)
        gain = np.clip(1.0 - (position - self._hold) / (self._mute - self._hold), 0.0, 1.0)
        self._lost += samples
        out: Pcm = np.rint(period[idx] * gain).astype(np.int16)
        return out

    def conceal(self, samples: int) -> Pcm:
        """``samples`` of concealment; silence once the loss outlasts 60 ms."""
        if samples <= 0:
            return np.zeros(0, dtype=np.int16)
        out = self._continue(samples)
        # The concealment is itself history: a second loss repeats from it, not from
        # the frame before the first loss, and stays continuous.
        self._remember(out)
        return out


# --------------------------------------------------------------------------- G.711 codecs


class G711Encoder:
    """PCMU or PCMA encoder: a table lookup; frames of any length are accepted."""

    def __init__(self, spec: CodecSpec) -> None:
        if spec.name not in ("PCMU", "PCMA"):
            raise CodecError(f"{spec.name} is not G.711")
        self._spec = spec
        self._table = ULAW_ENCODE_TABLE if spec.name == "PCMU" else ALAW_ENCODE_TABLE

    @property
    def spec(self) -> CodecSpec:
        return self._spec

    def encode(self, pcm: Pcm) -> bytes:
        frame = _frame_check(pcm, None, self._spec)
        return self._table[frame.view(np.uint16)].tobytes()


class G711Decoder:
    """PCMU or PCMA decoder with pitch-repetition concealment."""

    def __init__(self, spec: CodecSpec) -> None:
        if spec.name not in ("PCMU", "PCMA"):
            raise CodecError(f"{spec.name} is not G.711")
        self._spec = spec
        self._table = ULAW_DECODE_TABLE if spec.name == "PCMU" else ALAW_DECODE_TABLE
        self._plc = RepeatConcealer(spec.sample_rate)

    @property
    def spec(self) -> CodecSpec:
        return self._spec

    def decode(self, payload: bytes) -> Pcm:
        pcm = self._table[np.frombuffer(payload, dtype=np.uint8)]
        return self._plc.good(pcm)

    def conceal(self, samples: int) -> Pcm:
        return self._plc.conceal(samples)


# --------------------------------------------------------------------------- PyAV codecs


_AvCodecName = Literal["adpcm_g722", "libopus"]


def _av_context(
    name: _AvCodecName, mode: Literal["r", "w"], rate: int, options: dict[str, str] | None = None
) -> AudioCodecContext:
    """An opened PyAV codec context for mono s16 at ``rate``; CodecError if FFmpeg lacks it."""
    import av  # Imported here so G.711-only users (and the mixer's tests) need no FFmpeg.
    from av.error import FFmpegError

    try:
        ctx = av.CodecContext.create(name, mode)
        ctx.sample_rate = rate
        ctx.layout = "mono"
        ctx.format = "s16"
        if options:
            ctx.options = options
        ctx.open()
    except (FFmpegError, ValueError) as exc:
        raise CodecError(f"FFmpeg cannot open {name} ({mode}) at {rate} Hz: {exc}") from exc
    return ctx


class _AvEncoder:
    """Shared PyAV encoding: one frame in, one packet out, pts counted in samples."""

    def __init__(
        self, spec: CodecSpec, codec: _AvCodecName, ptime_ms: int, options: dict[str, str]
    ) -> None:
        self._spec = spec
        self._frame_samples = spec.samples_per_frame(ptime_ms)
        self._ctx = _av_context(codec, "w", spec.sample_rate, options)
        self._pts = 0

    @property
    def spec(self) -> CodecSpec:
        return self._spec

    @property
    def frame_samples(self) -> int:
        """Samples per frame this encoder was opened for (from the ptime)."""
        return self._frame_samples

    def encode(self, pcm: Pcm) -> bytes:
        from av import AudioFrame
        from av.error import FFmpegError

        frame_pcm = _frame_check(pcm, self._frame_samples, self._spec)
        frame = AudioFrame.from_ndarray(frame_pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self._spec.sample_rate
        frame.pts = self._pts
        self._pts += self._frame_samples
        try:
            packets = self._ctx.encode(frame)
        except FFmpegError as exc:
            raise CodecError(f"{self._spec.name} encoding failed: {exc}") from exc
        # The frame size is the codec's, so FFmpeg returns exactly one packet per frame.
        return b"".join(bytes(packet) for packet in packets)


class _AvDecoder:
    """Shared PyAV decoding; subclasses choose the concealment."""

    def __init__(self, spec: CodecSpec, codec: _AvCodecName) -> None:
        self._spec = spec
        self._ctx = _av_context(codec, "r", spec.sample_rate)

    @property
    def spec(self) -> CodecSpec:
        return self._spec

    def _decode_raw(self, payload: bytes) -> Pcm:
        from av import Packet
        from av.error import FFmpegError

        if not payload:
            # An empty AVPacket means "end of stream" to FFmpeg and would leave the
            # context refusing every later packet.
            return np.zeros(0, dtype=np.int16)
        try:
            frames = self._ctx.decode(Packet(payload))
        except FFmpegError as exc:
            raise CodecError(f"{self._spec.name} payload rejected: {exc}") from exc
        arrays = [self._to_pcm(frame) for frame in frames]
        if not arrays:
            return np.zeros(0, dtype=np.int16)
        return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)

    @staticmethod
    def _to_pcm(frame: AudioFrame) -> Pcm:
        data = np.asarray(frame.to_ndarray())
        if data.dtype == np.int16:
            return data.reshape(-1).view(np.int16)
        # A decoder that ignored the s16 request hands planar float: keep the first
        # channel and scale it back.
        mono = data.reshape(data.shape[0], -1)[0].astype(np.float32)
        return _as_int16(mono * np.float32(32768.0))


class G722Encoder(_AvEncoder):
    """G.722 at 64 kbit/s: 16 kHz PCM, 8 bytes per ms, 160 bytes per 20 ms frame."""

    def __init__(self, spec: CodecSpec = G722, *, ptime_ms: int | None = None) -> None:
        ptime = spec.ptime_ms if ptime_ms is None else ptime_ms
        # FFmpeg's G.722 encoder defaults to 320-sample frames; the option makes it
        # take exactly one ptime's worth, so PyAV never rebuffers.
        frame_samples = spec.samples_per_frame(ptime)
        super().__init__(spec, "adpcm_g722", ptime, {"frame_size": str(frame_samples)})


class G722Decoder(_AvDecoder):
    """G.722 decoder; FFmpeg has no G.722 PLC, so losses get pitch repetition."""

    def __init__(self, spec: CodecSpec = G722) -> None:
        super().__init__(spec, "adpcm_g722")
        self._plc = RepeatConcealer(spec.sample_rate)

    def decode(self, payload: bytes) -> Pcm:
        return self._plc.good(self._decode_raw(payload))

    def conceal(self, samples: int) -> Pcm:
        return self._plc.conceal(samples)


_OPUS_FRAME_MS: Final = (2.5, 5, 10, 20, 40, 60)


class OpusEncoder(_AvEncoder):
    """Opus (libopus), mono, VOIP application.

    ``fec`` turns on in-band forward error correction, sized for
    ``expected_loss_percent``; it costs bitrate and only helps peers whose
    decoder uses it (browsers do; our PyAV decoder cannot, see OpusDecoder).
    ``complexity`` (0-10, libopus's default 10) trades quality for CPU: a bridge
    encodes one mix-minus per Opus leg per tick, so it may want less.
    """

    def __init__(
        self,
        spec: CodecSpec = OPUS,
        *,
        ptime_ms: int | None = None,
        bitrate: int = 32000,
        fec: bool = False,
        expected_loss_percent: int = 0,
        complexity: int | None = None,
    ) -> None:
        ptime = spec.ptime_ms if ptime_ms is None else ptime_ms
        if ptime not in _OPUS_FRAME_MS:
            raise CodecError(f"Opus frames are 2.5-60 ms, not {ptime} ms")
        if not 0 <= expected_loss_percent <= 100:
            raise CodecError(f"expected loss {expected_loss_percent}% outside 0-100")
        options = {
            "application": "voip",
            "frame_duration": str(ptime),
            "b": str(bitrate),
            "fec": "1" if fec else "0",
            "packet_loss": str(expected_loss_percent),
        }
        if complexity is not None:
            if not 0 <= complexity <= 10:
                raise CodecError(f"Opus complexity {complexity} outside 0-10")
            # FFmpeg maps its generic compression level onto libopus's complexity.
            options["compression_level"] = str(complexity)
        super().__init__(spec, "libopus", ptime, options)


class OpusDecoder(_AvDecoder):
    """Opus (libopus) decoder to 48 kHz mono, concealing with libopus's own PLC.

    FFmpeg neither accepts "no packet" (an empty packet ends the stream) nor
    exposes ``decode_fec``. It does pass a TOC-only packet to libopus, and RFC 6716
    3.2.1 says a zero-length frame is a lost frame: libopus then runs its PLC,
    extrapolating from its own state (far better than repetition). We build that
    TOC from the last good packet's mode and bandwidth, with a 20 ms duration.
    """

    def __init__(self, spec: CodecSpec = OPUS) -> None:
        super().__init__(spec, "libopus")
        self._last_config: int | None = None
        self._pending = np.zeros(0, dtype=np.int16)

    def decode(self, payload: bytes) -> Pcm:
        pcm = self._decode_raw(payload)
        if payload:
            self._last_config = payload[0] >> 3
        self._pending = np.zeros(0, dtype=np.int16)
        return pcm

    @staticmethod
    def _plc_toc(config: int) -> int:
        """A code-0 mono TOC byte with ``config``'s mode and bandwidth and 20 ms frames."""
        if config < 12:  # SILK: 10/20/40/60 ms per bandwidth
            config = (config & ~3) | 1
        elif config < 16:  # Hybrid: 10/20 ms
            config = (config & ~1) | 1
        else:  # CELT: 2.5/5/10/20 ms
            config = (config & ~3) | 3
        return config << 3

    def conceal(self, samples: int) -> Pcm:
        if samples <= 0:
            return np.zeros(0, dtype=np.int16)
        if self._last_config is None:
            return np.zeros(samples, dtype=np.int16)  # nothing to extrapolate from yet
        toc = bytes([self._plc_toc(self._last_config)])
        chunks = [self._pending]
        have = self._pending.size
        while have < samples:
            chunk = self._decode_raw(toc)
            if chunk.size == 0:  # should not happen; never loop forever on it
                chunk = np.zeros(samples - have, dtype=np.int16)
            chunks.append(chunk)
            have += chunk.size
        out = np.concatenate(chunks)
        # A request that is not a whole 20 ms keeps the rest for the next call, so
        # the PLC signal stays continuous.
        self._pending = out[samples:]
        return out[:samples]


# --------------------------------------------------------------------------- factory


def new_encoder(spec: CodecSpec, *, ptime_ms: int | None = None) -> Encoder:
    """A fresh encoder for ``spec`` with default options; one per leg (they hold state)."""
    name = spec.name.upper()
    if name in ("PCMU", "PCMA"):
        return G711Encoder(spec)
    if name == "G722":
        return G722Encoder(spec, ptime_ms=ptime_ms)
    if name == "OPUS":
        return OpusEncoder(spec, ptime_ms=ptime_ms)
    raise CodecError(f"no encoder for {spec.name}" + _event_hint(spec))


def new_decoder(spec: CodecSpec) -> Decoder:
    """A fresh decoder for ``spec``; one per leg (it holds state for concealment)."""
    name = spec.name.upper()
    if name in ("PCMU", "PCMA"):
        return G711Decoder(spec)
    if name == "G722":
        return G722Decoder(spec)
    if name == "OPUS":
        return OpusDecoder(spec)
    raise CodecError(f"no decoder for {spec.name}" + _event_hint(spec))


def _event_hint(spec: CodecSpec) -> str:
    return "" if spec.is_audio else " (telephone-event payloads are handled by media.dtmf)"

"""SDP offer/answer for legs whose media ends in the hub's conference engine.

Each leg negotiates with the hub on its own (RFC 3264): the caller's offer is
answered with the hub's address and the best codec we share; the callee gets the
hub's own offer. Legs may end up with different codecs; the engine transcodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from media.codecs import CodecSpec, find_codec
from media.engine import MediaLeg
from signaling.errors import ParseError
from signaling.message import Request, Response
from signaling.sdp import (
    MediaDescription,
    SdpOrigin,
    SessionDescription,
    build_answer,
    build_offer,
    media_is_held,
    parse_sdp,
)

NARROWBAND = ("PCMU/8000", "PCMA/8000", "G722/8000", "opus/48000/2", "telephone-event/8000")
WIDEBAND = ("G722/8000", "opus/48000/2", "PCMU/8000", "PCMA/8000", "telephone-event/8000")


def extract_sdp(message: Request | Response) -> bytes | None:
    """The SDP body of a message (also out of a multipart/mixed body), or None."""
    if not message.body:
        return None
    ctype = message.content_type
    if ctype == "application/sdp":
        return message.body
    if ctype == "multipart/mixed":
        raw = message.headers.get("Content-Type") or ""
        boundary = None
        for param in raw.split(";")[1:]:
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "boundary":
                boundary = value.strip().strip('"')
        if not boundary:
            return None
        for part in message.body.split(b"--" + boundary.encode()):
            head, sep, body = part.partition(b"\r\n\r\n")
            if sep and b"application/sdp" in head.lower():
                return body.rstrip(b"\r\n") + b"\r\n"
    return None


def codecs_for(rate: int) -> Sequence[str]:
    """Our preference: a narrowband bridge favours G.711 (no resampling on its legs)."""
    return NARROWBAND if rate <= 8000 else WIDEBAND


class NotAcceptable(ParseError):
    """No stream of the offer or answer can be used: 488."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=488)


@dataclass(frozen=True, slots=True)
class Negotiated:
    """What a leg's SDP settled: codec, payload types, where its RTP goes, its direction."""

    codec: CodecSpec
    payload_type: int
    dtmf_payload_type: int | None
    host: str
    port: int
    rtcp_port: int | None
    direction: str
    """The remote party's direction: sendonly means it holds us."""


def _first_audio(sd: SessionDescription) -> MediaDescription | None:
    for m in sd.media:
        if m.media == "audio" and m.port != 0:
            return m
    return None


def negotiated(sd: SessionDescription, formats: Sequence[str] | None = None) -> Negotiated:
    """The codec and address of the first live audio stream of ``sd``.

    ``formats`` restricts the payload types considered (those our answer accepted).
    """
    m = _first_audio(sd)
    if m is None:
        raise NotAcceptable("no audio stream")
    rtpmap = m.rtpmap()
    allowed = set(formats) if formats is not None else None
    codec: CodecSpec | None = None
    pt = 0
    dtmf: int | None = None
    for fmt in m.formats:
        if allowed is not None and fmt not in allowed:
            continue
        if not fmt.isdigit():
            continue
        mapping = rtpmap.get(int(fmt))
        if mapping is None:
            continue
        spec = find_codec(mapping.encoding, mapping.clock_rate, mapping.channels)
        if spec is None:
            continue
        if spec.name == "telephone-event":
            if dtmf is None:
                dtmf = int(fmt)
        elif codec is None:
            codec, pt = spec, int(fmt)
    if codec is None:
        raise NotAcceptable("no codec in common")
    address = sd.media_address(m)
    if address is None:
        raise NotAcceptable("audio stream without a connection address")
    rtcp = m.attribute("rtcp")
    rtcp_port = int(rtcp.split()[0]) if rtcp and rtcp.split()[0].isdigit() else None
    direction = "inactive" if media_is_held(sd, m) and m.direction == "sendrecv" else m.direction
    return Negotiated(codec, pt, dtmf, address[0], address[1], rtcp_port, direction)


class SdpSession:
    """The hub's side of one leg's offer/answer exchanges (one ``o=`` for its life)."""

    def __init__(self, address: str, rate: int) -> None:
        self.address = address
        self.codecs = codecs_for(rate)
        self.origin = SdpOrigin(address, username="hub")
        self.current: Negotiated | None = None

    def answer(self, offer: bytes, port: int, *, direction: str = "sendrecv") -> tuple[
            bytes, Negotiated]:
        """Answer ``offer`` (raises ParseError on bad SDP, NotAcceptable for 488)."""
        sd = parse_sdp(offer)
        answer = build_answer(sd, address=self.address, port=port, codecs=self.codecs,
                              session_id=self.origin.session_id, version=self.origin.version,
                              direction=direction, username="hub")
        if answer is None:
            raise NotAcceptable("no codec in common")
        accepted = _first_audio(answer)
        if accepted is None:
            raise NotAcceptable("no audio stream accepted")
        result = negotiated(sd, accepted.formats)
        self.current = result
        return self.origin.stamp(answer).encode(), result

    def offer(self, port: int, *, direction: str = "sendrecv") -> bytes:
        codecs = list(self.codecs)
        if self.current is not None:
            # A re-offer keeps the codec in use first (RFC 3264 8.3.2 wants no surprise).
            current = next((c for c in codecs if c.split("/")[0].lower()
                            == self.current.codec.name.lower()), None)
            if current is not None:
                codecs.remove(current)
                codecs.insert(0, current)
        sd = build_offer(address=self.address, port=port, codecs=codecs,
                         session_id=self.origin.session_id, version=self.origin.version,
                         direction=None if direction == "sendrecv" else direction,
                         username="hub")
        return self.origin.stamp(sd).encode()

    def read_answer(self, answer: bytes) -> Negotiated:
        result = negotiated(parse_sdp(answer))
        self.current = result
        return result

    @staticmethod
    def read_offer(offer: bytes) -> Negotiated:
        return negotiated(parse_sdp(offer))


def apply_negotiated(leg: MediaLeg, neg: Negotiated) -> None:
    """Point a media leg at what its SDP negotiated (codec, address, direction)."""
    leg.configure(neg.codec, neg.payload_type, neg.dtmf_payload_type)
    leg.set_remote(neg.host, neg.port, neg.rtcp_port)
    leg.set_direction(neg.direction)

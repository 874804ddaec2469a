"""SDP (RFC 4566) and the offer/answer model (RFC 3264).

``parse_sdp`` and :meth:`SessionDescription.encode` are a lossless pair: a body in the
RFC's line order with CRLF endings re-encodes byte for byte, lines we do not understand
included. The parser is lenient where real phones are sloppy (LF-only endings, blank
lines, a missing ``s=`` or ``t=``, unknown attributes) and precise where the body cannot
be used: every refusal is an :class:`SdpError` naming the line, with the SIP status it
implies (400, or 413 for an oversized body).

The offer/answer helpers are pure functions of an offer and our capabilities;
:class:`SdpOrigin` keeps one side's ``o=`` line across re-offers (RFC 3264 8).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from .errors import ParseError

MAX_SDP_SIZE = 65535
MAX_SDP_LINES = 1024
MAX_MEDIA = 64
MAX_FORMATS = 256

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
# (we send, we receive) for each direction attribute, RFC 3264 5.1.
_DIRECTION_BITS: dict[str, tuple[bool, bool]] = {
    "sendrecv": (True, True),
    "sendonly": (True, False),
    "recvonly": (False, True),
    "inactive": (False, False),
}
_BITS_DIRECTION = {bits: name for name, bits in _DIRECTION_BITS.items()}

# Transport protocols we can answer: plain RTP (no SRTP keys are ever negotiated here).
SUPPORTED_PROTOS = frozenset({"RTP/AVP", "RTP/AVPF"})
# Payload formats that carry no voice: an answer needs at least one other codec.
_AUXILIARY_CODECS = frozenset({"telephone-event", "cn"})
DEFAULT_FMTP: Mapping[str, str] = {"telephone-event": "0-16"}


class SdpError(ParseError):
    """An SDP body we cannot use. ``status`` is the SIP response it implies (400)."""


@dataclass(slots=True, frozen=True)
class RtpMap:
    """One ``a=rtpmap`` mapping: encoding name, clock rate and channel count."""

    encoding: str
    clock_rate: int
    channels: int = 1

    def __str__(self) -> str:
        base = f"{self.encoding}/{self.clock_rate}"
        return base if self.channels == 1 else f"{base}/{self.channels}"

    @classmethod
    def parse(cls, text: str) -> RtpMap:
        """Parse ``PCMU/8000`` or ``opus/48000/2``; raise ValueError otherwise."""
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not parts[0] or " " in parts[0]:
            raise ValueError(f"bad codec {text!r}: expected name/rate[/channels]")
        rate = _small_int(parts[1])
        channels = _small_int(parts[2]) if len(parts) == 3 else 1
        if rate is None or rate == 0 or channels is None or channels == 0:
            raise ValueError(f"bad codec {text!r}: rate and channels must be positive integers")
        return cls(parts[0], rate, channels)

    def same_codec(self, other: RtpMap) -> bool:
        """Encoding names compare case-insensitively (RFC 4855 3)."""
        return (
            self.encoding.lower() == other.encoding.lower()
            and self.clock_rate == other.clock_rate
            and self.channels == other.channels
        )


# RFC 3551 tables 4 and 5: the static payload types, used when no a=rtpmap is given.
STATIC_PAYLOAD_TYPES: Mapping[int, RtpMap] = {
    0: RtpMap("PCMU", 8000),
    3: RtpMap("GSM", 8000),
    4: RtpMap("G723", 8000),
    5: RtpMap("DVI4", 8000),
    6: RtpMap("DVI4", 16000),
    7: RtpMap("LPC", 8000),
    8: RtpMap("PCMA", 8000),
    9: RtpMap("G722", 8000),
    10: RtpMap("L16", 44100, 2),
    11: RtpMap("L16", 44100),
    12: RtpMap("QCELP", 8000),
    13: RtpMap("CN", 8000),
    14: RtpMap("MPA", 90000),
    15: RtpMap("G728", 8000),
    16: RtpMap("DVI4", 11025),
    17: RtpMap("DVI4", 22050),
    18: RtpMap("G729", 8000),
    25: RtpMap("CelB", 90000),
    26: RtpMap("JPEG", 90000),
    28: RtpMap("nv", 90000),
    31: RtpMap("H261", 90000),
    32: RtpMap("MPV", 90000),
    33: RtpMap("MP2T", 90000),
    34: RtpMap("H263", 90000),
}


def _small_int(text: str, max_digits: int = 10) -> int | None:
    """A non-negative ASCII decimal, or None (str.isdigit alone accepts '²')."""
    if not text or len(text) > max_digits or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def _addrtype(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


@dataclass(slots=True)
class Origin:
    """The ``o=`` line: ``username sess-id sess-version nettype addrtype address``."""

    username: str
    session_id: str
    session_version: int
    nettype: str
    addrtype: str
    address: str

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )

    def copy(self) -> Origin:
        return replace(self)


@dataclass(slots=True)
class Connection:
    """A ``c=`` line. ``address`` is kept as sent (multicast ``/ttl/count`` included)."""

    nettype: str
    addrtype: str
    address: str

    @classmethod
    def for_address(cls, address: str) -> Connection:
        """``IN IP4``/``IN IP6`` for a unicast address, chosen by its syntax."""
        return cls("IN", _addrtype(address), address)

    @property
    def host(self) -> str:
        """The address without multicast ``/ttl`` or ``/count`` suffixes."""
        return self.address.split("/", 1)[0]

    @property
    def is_unspecified(self) -> bool:
        """0.0.0.0 (RFC 2543 hold, RFC 3264 8.4) or its IPv6 twin ``::``."""
        return self.host in ("0.0.0.0", "::")

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"

    def copy(self) -> Connection:
        return replace(self)


@dataclass(slots=True)
class Timing:
    """A ``t=`` line and the ``r=`` lines that follow it (kept as text)."""

    start: int = 0
    stop: int = 0
    repeats: list[str] = field(default_factory=list)

    def copy(self) -> Timing:
        return Timing(self.start, self.stop, list(self.repeats))


Attribute = tuple[str, str | None]


class _AttributeList:
    """Attribute helpers shared by the session and media levels."""

    __slots__ = ()
    attributes: list[Attribute]

    def has_attribute(self, name: str) -> bool:
        lname = name.lower()
        return any(key.lower() == lname for key, _ in self.attributes)

    def attribute(self, name: str) -> str | None:
        """The first value of attribute ``name``; None if absent or a flag."""
        values = self.attribute_values(name)
        return values[0] if values else None

    def attribute_values(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for key, v in self.attributes if key.lower() == lname and v is not None]

    def add_attribute(self, name: str, value: str | None = None) -> None:
        self.attributes.append((name, value))

    def set_attribute(self, name: str, value: str | None = None) -> None:
        """Replace every ``name`` attribute by one, where the first one was."""
        lname = name.lower()
        out: list[Attribute] = []
        placed = False
        for key, old in self.attributes:
            if key.lower() != lname:
                out.append((key, old))
            elif not placed:
                out.append((name, value))
                placed = True
        if not placed:
            out.append((name, value))
        self.attributes[:] = out

    def remove_attribute(self, name: str) -> None:
        lname = name.lower()
        self.attributes[:] = [a for a in self.attributes if a[0].lower() != lname]

    def own_direction(self) -> str | None:
        """The direction attribute written at this level, if any (the last one wins)."""
        found: str | None = None
        for key, value in self.attributes:
            if value is None and key.lower() in _DIRECTION_BITS:
                found = key.lower()
        return found

    def _set_direction(self, direction: str) -> None:
        if direction not in _DIRECTION_BITS:
            raise ValueError(f"bad direction {direction!r}, expected one of {DIRECTIONS}")
        out: list[Attribute] = []
        placed = False
        for key, value in self.attributes:
            if value is None and key.lower() in _DIRECTION_BITS:
                if not placed:
                    out.append((direction, None))
                    placed = True
            else:
                out.append((key, value))
        if not placed:
            out.append((direction, None))
        self.attributes[:] = out


@dataclass(slots=True, kw_only=True)
class MediaDescription(_AttributeList):
    """One ``m=`` section and its ``i= c= b= k= a=`` lines."""

    media: str
    """Media type: audio, video, application, ..."""
    port: int
    """Transport port; 0 means the stream is rejected or removed (RFC 3264 6, 8.2)."""
    port_count: int | None = None
    """The ``/2`` of ``m=video 49170/2``; None when absent."""
    proto: str = "RTP/AVP"
    formats: list[str] = field(default_factory=list)
    """Payload formats as sent (RTP payload type numbers for RTP profiles)."""
    information: str | None = None
    connection: Connection | None = None
    """The media-level ``c=``; None means the session-level one applies."""
    extra_connections: list[Connection] = field(default_factory=list)
    """Further ``c=`` lines (layered multicast, RFC 4566 5.7), rarely seen."""
    bandwidths: list[tuple[str, int]] = field(default_factory=list)
    key: str | None = None
    attributes: list[Attribute] = field(default_factory=list)
    other_lines: list[tuple[str, str]] = field(default_factory=list)
    """Lines of types SDP does not define, kept (type letter, value) for relaying."""
    inherited_direction: str | None = field(default=None, compare=False, repr=False)
    """The session-level direction, used when this media has none of its own; set by
    :func:`parse_sdp` and by the :attr:`SessionDescription.direction` setter."""

    @property
    def direction(self) -> str:
        """sendrecv/sendonly/recvonly/inactive: own attribute, else the session's, else
        sendrecv (RFC 3264 5.1). Setting writes a media-level attribute."""
        return self.own_direction() or self.inherited_direction or "sendrecv"

    @direction.setter
    def direction(self, value: str) -> None:
        self._set_direction(value)

    @property
    def payload_types(self) -> list[int]:
        """The formats that are RTP payload type numbers, in order."""
        out: list[int] = []
        for fmt in self.formats:
            pt = _small_int(fmt, 3)
            if pt is not None and pt <= 127:
                out.append(pt)
        return out

    def rtpmap(self) -> dict[int, RtpMap]:
        """Payload type -> codec for each listed format, in the m-line's order.

        ``a=rtpmap`` wins; static payload types fall back to RFC 3551; a dynamic type
        without a usable rtpmap is left out (we could not know what it is).
        """
        mapped: dict[int, RtpMap] = {}
        for value in self.attribute_values("rtpmap"):
            pt_text, _, codec = value.strip().partition(" ")
            pt = _small_int(pt_text, 3)
            if pt is None or pt in mapped:
                continue
            try:
                mapped[pt] = RtpMap.parse(codec)
            except ValueError:
                continue
        out: dict[int, RtpMap] = {}
        for pt in self.payload_types:
            known = mapped.get(pt) or STATIC_PAYLOAD_TYPES.get(pt)
            if known is not None:
                out[pt] = known
        return out

    def fmtp(self, pt: int | str) -> str | None:
        """The parameters of ``a=fmtp:<pt> ...``, or None."""
        wanted = str(pt)
        for value in self.attribute_values("fmtp"):
            fmt, _, params = value.strip().partition(" ")
            if fmt == wanted:
                return params.strip()
        return None

    def encode_lines(self) -> list[str]:
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        lines = [" ".join([f"m={self.media}", port, self.proto, *self.formats])]
        if self.information is not None:
            lines.append(f"i={self.information}")
        if self.connection is not None:
            lines.append(f"c={self.connection}")
        lines.extend(f"c={c}" for c in self.extra_connections)
        lines.extend(f"b={kind}:{value}" for kind, value in self.bandwidths)
        if self.key is not None:
            lines.append(f"k={self.key}")
        lines.extend(f"{kind}={value}" for kind, value in self.other_lines)
        lines.extend(_attribute_line(a) for a in self.attributes)
        return lines

    def copy(self) -> MediaDescription:
        return replace(
            self,
            formats=list(self.formats),
            connection=self.connection.copy() if self.connection else None,
            extra_connections=[c.copy() for c in self.extra_connections],
            bandwidths=list(self.bandwidths),
            attributes=list(self.attributes),
            other_lines=list(self.other_lines),
        )


def _attribute_line(attribute: Attribute) -> str:
    name, value = attribute
    return f"a={name}" if value is None else f"a={name}:{value}"


@dataclass(slots=True, kw_only=True)
class SessionDescription(_AttributeList):
    """A whole SDP body (RFC 4566 5)."""

    version: int = 0
    origin: Origin
    session_name: str = "-"
    information: str | None = None
    uri: str | None = None
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    connection: Connection | None = None
    bandwidths: list[tuple[str, int]] = field(default_factory=list)
    times: list[Timing] = field(default_factory=lambda: [Timing()])
    zone: str | None = None
    key: str | None = None
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    other_lines: list[tuple[str, str]] = field(default_factory=list)
    """Session-level lines of types SDP does not define, kept for relaying."""

    @property
    def direction(self) -> str:
        """The session-level direction (sendrecv when none is written)."""
        return self.own_direction() or "sendrecv"

    @direction.setter
    def direction(self, value: str) -> None:
        self._set_direction(value)
        for m in self.media:
            m.inherited_direction = value

    def media_connection(self, media: MediaDescription) -> Connection | None:
        """The ``c=`` that applies to ``media``: its own, else the session's."""
        return media.connection or self.connection

    def media_address(self, media: MediaDescription) -> tuple[str, int] | None:
        """Where to send RTP for ``media``; None if rejected or without a connection."""
        conn = self.media_connection(media)
        if media.port == 0 or conn is None:
            return None
        return conn.host, media.port

    def encode(self) -> bytes:
        lines = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name}"]
        if self.information is not None:
            lines.append(f"i={self.information}")
        if self.uri is not None:
            lines.append(f"u={self.uri}")
        lines.extend(f"e={e}" for e in self.emails)
        lines.extend(f"p={p}" for p in self.phones)
        if self.connection is not None:
            lines.append(f"c={self.connection}")
        lines.extend(f"b={kind}:{value}" for kind, value in self.bandwidths)
        for timing in self.times:
            lines.append(f"t={timing.start} {timing.stop}")
            lines.extend(f"r={r}" for r in timing.repeats)
        if self.zone is not None:
            lines.append(f"z={self.zone}")
        if self.key is not None:
            lines.append(f"k={self.key}")
        lines.extend(f"{kind}={value}" for kind, value in self.other_lines)
        lines.extend(_attribute_line(a) for a in self.attributes)
        for m in self.media:
            lines.extend(m.encode_lines())
        for line in lines:
            if "\r" in line or "\n" in line or "\x00" in line:
                raise ValueError(f"SDP value with CR, LF or NUL: {line[:60]!r}")
        return ("\r\n".join(lines) + "\r\n").encode("utf-8")

    def copy(self) -> SessionDescription:
        return replace(
            self,
            origin=self.origin.copy(),
            emails=list(self.emails),
            phones=list(self.phones),
            connection=self.connection.copy() if self.connection else None,
            bandwidths=list(self.bandwidths),
            times=[t.copy() for t in self.times],
            attributes=list(self.attributes),
            media=[m.copy() for m in self.media],
            other_lines=list(self.other_lines),
        )


# --- parsing ----------------------------------------------------------------------------

_SESSION_ONLY = frozenset("vosuepzrt")
_ONCE_PER_SESSION = frozenset("vosiuczk")
_ONCE_PER_MEDIA = frozenset("ik")


def parse_sdp(data: bytes | str) -> SessionDescription:
    """Parse an SDP body; raise :class:`SdpError` saying which line is wrong and why."""
    if len(data) > MAX_SDP_SIZE:
        raise SdpError(f"SDP body larger than {MAX_SDP_SIZE} bytes", status=413)
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            # Old phones send Latin-1 session names; the structure is ASCII anyway.
            text = data.decode("latin-1")
    else:
        text = data
    if "\x00" in text:
        raise SdpError("NUL character in SDP")
    raw_lines = text.split("\n")
    if len(raw_lines) > MAX_SDP_LINES:
        raise SdpError(f"more than {MAX_SDP_LINES} SDP lines")
    return _Parser().parse(raw_lines)


class _Parser:
    def __init__(self) -> None:
        self.origin: Origin | None = None
        self.fields: dict[str, str] = {}
        self.sd: SessionDescription | None = None
        self.times: list[Timing] = []
        self.session_seen: set[str] = set()
        self.media_seen: set[str] = set()
        self.current: MediaDescription | None = None
        self.lineno = 0

    def error(self, message: str) -> SdpError:
        return SdpError(f"SDP line {self.lineno}: {message}")

    def parse(self, raw_lines: list[str]) -> SessionDescription:
        sd = SessionDescription(origin=Origin("-", "0", 0, "IN", "IP4", "0.0.0.0"), times=[])
        self.sd = sd
        first = True
        for self.lineno, raw in enumerate(raw_lines, start=1):
            line = raw[:-1] if raw.endswith("\r") else raw
            if not line.strip():
                continue  # blank lines (a trailing CRLF, LF-only bodies) carry nothing
            if "\r" in line:
                raise self.error("stray CR inside a line")
            if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
                raise self.error(f"expected '<type>=<value>', got {line[:40]!r}")
            kind, value = line[0], line[2:]
            if first:
                if kind != "v":
                    raise self.error("an SDP body must start with v=0")
                first = False
            if self.current is None:
                self.session_line(sd, kind, value)
            else:
                self.media_line(self.current, kind, value)
        if first:
            raise SdpError("empty SDP body")
        if self.origin is None:
            raise SdpError("SDP without an o= line")
        sd.origin = self.origin
        # Lenient about what RFC 4566 makes mandatory but nothing here needs.
        if "s" not in self.session_seen:
            sd.session_name = "-"
        sd.times = self.times or [Timing()]
        inherited = sd.own_direction()
        if inherited is not None:
            for m in sd.media:
                m.inherited_direction = inherited
        return sd

    def session_line(self, sd: SessionDescription, kind: str, value: str) -> None:
        if kind in _ONCE_PER_SESSION:
            if kind in self.session_seen:
                raise self.error(f"more than one {kind}= line in the session section")
        self.session_seen.add(kind)
        if kind == "v":
            if value.strip() != "0":
                raise self.error(f"unsupported SDP version {value[:20]!r}")
            sd.version = 0
        elif kind == "o":
            self.origin = self.parse_origin(value)
        elif kind == "s":
            sd.session_name = value
        elif kind == "i":
            sd.information = value
        elif kind == "u":
            sd.uri = value
        elif kind == "e":
            sd.emails.append(value)
        elif kind == "p":
            sd.phones.append(value)
        elif kind == "c":
            sd.connection = self.parse_connection(value)
        elif kind == "b":
            sd.bandwidths.append(self.parse_bandwidth(value))
        elif kind == "t":
            self.times.append(self.parse_timing(value))
        elif kind == "r":
            if not self.times:
                raise self.error("r= line before any t= line")
            self.times[-1].repeats.append(value)
        elif kind == "z":
            sd.zone = value
        elif kind == "k":
            sd.key = value
        elif kind == "a":
            sd.attributes.append(self.parse_attribute(value))
        elif kind == "m":
            self.start_media(sd, value)
        else:
            sd.other_lines.append((kind, value))

    def media_line(self, m: MediaDescription, kind: str, value: str) -> None:
        if kind in _SESSION_ONLY:
            raise self.error(f"{kind}= line inside a media section")
        if kind in _ONCE_PER_MEDIA:
            if kind in self.media_seen:
                raise self.error(f"more than one {kind}= line in a media section")
            self.media_seen.add(kind)
        if kind == "m":
            assert self.sd is not None
            self.start_media(self.sd, value)
        elif kind == "i":
            m.information = value
        elif kind == "c":
            conn = self.parse_connection(value)
            if m.connection is None:
                m.connection = conn
            else:
                m.extra_connections.append(conn)
        elif kind == "b":
            m.bandwidths.append(self.parse_bandwidth(value))
        elif kind == "k":
            m.key = value
        elif kind == "a":
            m.attributes.append(self.parse_attribute(value))
        else:
            m.other_lines.append((kind, value))

    def start_media(self, sd: SessionDescription, value: str) -> None:
        if len(sd.media) >= MAX_MEDIA:
            raise self.error(f"more than {MAX_MEDIA} media sections")
        parts = value.split()
        if len(parts) < 3:
            raise self.error(f"m= needs '<media> <port> <proto> <fmt>...', got {value[:60]!r}")
        media, port_text, proto, *formats = parts
        if len(formats) > MAX_FORMATS:
            raise self.error(f"more than {MAX_FORMATS} formats in an m= line")
        port_part, slash, count_part = port_text.partition("/")
        port = _small_int(port_part, 5)
        if port is None or port > 65535:
            raise self.error(f"bad port {port_text!r} in m= line")
        port_count: int | None = None
        if slash:
            port_count = _small_int(count_part, 5)
            if port_count is None or port_count == 0:
                raise self.error(f"bad port count {port_text!r} in m= line")
        m = MediaDescription(
            media=media, port=port, port_count=port_count, proto=proto, formats=formats
        )
        sd.media.append(m)
        self.current = m
        self.media_seen = set()

    def parse_origin(self, value: str) -> Origin:
        parts = value.split()
        if len(parts) != 6:
            raise self.error(
                "o= needs '<username> <sess-id> <sess-version> <nettype> <addrtype> "
                f"<address>', got {value[:80]!r}"
            )
        version = _small_int(parts[2], 20)
        if version is None:
            raise self.error(f"bad session version {parts[2][:24]!r} in o= line")
        return Origin(parts[0], parts[1], version, parts[3], parts[4], parts[5])

    def parse_connection(self, value: str) -> Connection:
        parts = value.split()
        if len(parts) != 3:
            raise self.error(f"c= needs '<nettype> <addrtype> <address>', got {value[:60]!r}")
        return Connection(parts[0], parts[1], parts[2])

    def parse_bandwidth(self, value: str) -> tuple[str, int]:
        kind, colon, amount = value.partition(":")
        number = _small_int(amount.strip(), 12)
        if not colon or not kind.strip() or number is None:
            raise self.error(f"b= needs '<bwtype>:<bandwidth>', got {value[:40]!r}")
        return kind.strip(), number

    def parse_timing(self, value: str) -> Timing:
        parts = value.split()
        start = _small_int(parts[0], 20) if len(parts) == 2 else None
        stop = _small_int(parts[1], 20) if len(parts) == 2 else None
        if start is None or stop is None:
            raise self.error(f"t= needs '<start> <stop>', got {value[:40]!r}")
        return Timing(start, stop)

    def parse_attribute(self, value: str) -> Attribute:
        name, colon, attr_value = value.partition(":")
        if not name or " " in name:
            raise self.error(f"bad attribute {value[:40]!r}")
        return (name, attr_value if colon else None)


# --- offer / answer (RFC 3264) ------------------------------------------------------------


def _parse_codecs(codecs: Iterable[str]) -> list[RtpMap]:
    return [RtpMap.parse(c) for c in codecs]


def _media_fmtp(codec: RtpMap, fmtp: Mapping[str, str] | None) -> str | None:
    table = DEFAULT_FMTP if fmtp is None else fmtp
    for name, params in table.items():
        if name.lower() == codec.encoding.lower():
            return params
    return None


def _new_description(
    *, address: str, session_id: int | str, version: int, username: str, session_name: str
) -> SessionDescription:
    return SessionDescription(
        origin=Origin(username, str(session_id), version, "IN", _addrtype(address), address),
        session_name=session_name,
        connection=Connection.for_address(address),
    )


def build_offer(
    *,
    address: str,
    port: int,
    codecs: Sequence[str],
    session_id: int | str,
    version: int,
    direction: str | None = None,
    username: str = "-",
    session_name: str = "-",
    ptime: int | None = 20,
    fmtp: Mapping[str, str] | None = None,
    payload_types: Mapping[str, int] | None = None,
) -> SessionDescription:
    """An audio offer (RFC 3264 5) for ``codecs`` like ``["PCMU/8000", "PCMA/8000",
    "telephone-event/8000"]``, in our order of preference.

    Static codecs get their RFC 3551 number; others get ``payload_types[codec]`` if
    given, else 101 for telephone-event (what most phones expect), else the next free
    dynamic number from 96. ``fmtp`` maps an encoding name to its ``a=fmtp`` (default:
    telephone-event ``0-16``).
    """
    wanted = _parse_codecs(codecs)
    if not wanted:
        raise ValueError("an offer needs at least one codec")
    chosen: list[tuple[int, RtpMap]] = []
    used: set[int] = set()
    pending: list[RtpMap] = []
    explicit = {k.lower(): v for k, v in (payload_types or {}).items()}
    for codec in wanted:
        static = next((pt for pt, rm in STATIC_PAYLOAD_TYPES.items() if rm.same_codec(codec)), None)
        pt = explicit.get(str(codec).lower(), static)
        if pt is None and codec.encoding.lower() == "telephone-event" and 101 not in used:
            pt = 101
        if pt is None:
            pending.append(codec)
            chosen.append((-1, codec))
        else:
            if pt in used or not 0 <= pt <= 127:
                raise ValueError(f"payload type {pt} for {codec} is invalid or taken")
            used.add(pt)
            chosen.append((pt, codec))
    free = (pt for pt in range(96, 128) if pt not in used)
    assigned: list[tuple[int, RtpMap]] = []
    for pt, codec in chosen:
        if pt < 0:
            pt = next(free, -1)
            if pt < 0:
                raise ValueError("out of dynamic payload types")
        assigned.append((pt, codec))
    sd = _new_description(
        address=address,
        session_id=session_id,
        version=version,
        username=username,
        session_name=session_name,
    )
    m = MediaDescription(media="audio", port=port, proto="RTP/AVP")
    for pt, codec in assigned:
        m.formats.append(str(pt))
        m.add_attribute("rtpmap", f"{pt} {codec}")
        params = _media_fmtp(codec, fmtp)
        if params is not None:
            m.add_attribute("fmtp", f"{pt} {params}")
    if ptime is not None:
        m.add_attribute("ptime", str(ptime))
    m.direction = direction or "sendrecv"
    sd.media.append(m)
    return sd


def answer_direction(offered: str, wanted: str = "sendrecv") -> str:
    """RFC 3264 6.1: we send only what the offerer receives, and receive only what it
    sends; ``wanted`` narrows it further (e.g. sendonly when we hold)."""
    offer_send, offer_recv = _DIRECTION_BITS[offered]
    our_send, our_recv = _DIRECTION_BITS[wanted]
    return _BITS_DIRECTION[(our_send and offer_recv, our_recv and offer_send)]


def _rejected(m: MediaDescription) -> MediaDescription:
    # RFC 3264 6: same media type and at least one format, port zero.
    return MediaDescription(media=m.media, port=0, proto=m.proto, formats=list(m.formats) or ["0"])


def build_answer(
    offer: SessionDescription,
    *,
    address: str,
    port: int,
    codecs: Sequence[str],
    session_id: int | str,
    version: int,
    direction: str | None = None,
    username: str = "-",
    session_name: str = "-",
    ptime: int | None = 20,
    fmtp: Mapping[str, str] | None = None,
) -> SessionDescription | None:
    """Our answer to ``offer`` (RFC 3264 6), or None when no stream can be accepted
    (the caller answers 488 Not Acceptable Here).

    The answer has the offer's m-lines in the offer's order. We accept the first audio
    stream over plain RTP that has a voice codec in common (we have one ``port``);
    every other stream (video, a second audio, SRTP, no common codec, already port 0)
    is rejected with port 0. The accepted stream lists the offerer's payload type
    numbers of the common codecs in the offerer's order, dynamic numbers included.
    Direction is the RFC 3264 6.1 complement of the offer's, narrowed by
    ``direction``; an offer with c=0.0.0.0 (RFC 2543 hold) is taken as not receiving.
    """
    wanted_dir = direction or "sendrecv"
    if wanted_dir not in _DIRECTION_BITS:
        raise ValueError(f"bad direction {wanted_dir!r}")
    ours = _parse_codecs(codecs)
    answer = _new_description(
        address=address,
        session_id=session_id,
        version=version,
        username=username,
        session_name=session_name,
    )
    accepted = False
    for m in offer.media:
        chosen = _common_codecs(m, ours) if not accepted else []
        if not chosen:
            answer.media.append(_rejected(m))
            continue
        accepted = True
        a = MediaDescription(media=m.media, port=port, proto=m.proto)
        for pt, codec in chosen:
            a.formats.append(str(pt))
            a.add_attribute("rtpmap", f"{pt} {codec}")
            params = _media_fmtp(codec, fmtp)
            if params is None:
                params = m.fmtp(pt)
            if params is not None:
                a.add_attribute("fmtp", f"{pt} {params}")
        if ptime is not None:
            a.add_attribute("ptime", str(ptime))
        offered = m.direction
        conn = offer.media_connection(m)
        if conn is not None and conn.is_unspecified:
            offered = _BITS_DIRECTION[(_DIRECTION_BITS[offered][0], False)]
        a.direction = answer_direction(offered, wanted_dir)
        answer.media.append(a)
    if offer.media and not accepted:
        return None
    return answer


def _common_codecs(m: MediaDescription, ours: list[RtpMap]) -> list[tuple[int, RtpMap]]:
    if m.port == 0 or m.media.lower() != "audio" or m.proto.upper() not in SUPPORTED_PROTOS:
        return []
    chosen = [
        (pt, codec)
        for pt, codec in m.rtpmap().items()
        if any(codec.same_codec(mine) for mine in ours)
    ]
    if not any(codec.encoding.lower() not in _AUXILIARY_CODECS for _, codec in chosen):
        return []
    return chosen


def media_is_held(sd: SessionDescription, m: MediaDescription) -> bool:
    """The sender of ``sd`` will not receive on ``m``: sendonly, inactive or c=0.0.0.0."""
    conn = sd.media_connection(m)
    return m.direction in ("sendonly", "inactive") or (conn is not None and conn.is_unspecified)


def is_hold(sd: SessionDescription) -> bool:
    """True when every live (port != 0) stream of ``sd`` puts the other side on hold
    (RFC 3264 8.4: sendonly or inactive, or the RFC 2543 c=0.0.0.0)."""
    live = [m for m in sd.media if m.port != 0]
    return bool(live) and all(media_is_held(sd, m) for m in live)


class SdpOrigin:
    """One side's ``o=`` line for the life of a session (RFC 3264 5, 8).

    The session id never changes; the version goes up by one each time we send a
    description that differs from the previous one, and stays when we re-send the same
    (RFC 3264 8: a re-offer with nothing changed keeps the version).
    """

    __slots__ = ("username", "session_id", "version", "address", "_last")

    def __init__(
        self,
        address: str,
        *,
        username: str = "-",
        session_id: int | None = None,
        version: int | None = None,
    ) -> None:
        self.address = address
        self.username = username
        # RFC 3264 5: both fit a signed 64-bit integer, the first version < 2**62 - 1.
        self.session_id = secrets.randbelow(2**62) if session_id is None else session_id
        self.version = 0 if version is None else version
        self._last: bytes | None = None

    @property
    def origin(self) -> Origin:
        return Origin(
            self.username,
            str(self.session_id),
            self.version,
            "IN",
            _addrtype(self.address),
            self.address,
        )

    def bump(self) -> Origin:
        """Force a new version (for a description we know is new)."""
        self.version += 1
        self._last = None
        return self.origin

    def stamp(self, sd: SessionDescription) -> SessionDescription:
        """Set ``sd.origin``, with a new version if ``sd`` differs from the last one
        stamped. Returns ``sd`` (changed in place)."""
        body = replace(sd, origin=_PLACEHOLDER_ORIGIN).encode()
        if self._last is not None and body != self._last:
            self.version += 1
        self._last = body
        sd.origin = self.origin
        return sd


_PLACEHOLDER_ORIGIN = Origin("-", "0", 0, "IN", "IP4", "0.0.0.0")

"""SDP as the B2BUA passes it on: same codecs, our relay's address and port.

The rewrite is line-based on purpose: everything the endpoints negotiate (codecs,
fmtp, telephone-event, ptime) passes through byte for byte; only what names the
media address changes. Only the first audio stream is relayed; other streams are
declined (port 0) so no media can bypass the hub.
"""

from __future__ import annotations

from dataclasses import dataclass

from signaling.errors import ParseError
from signaling.message import Request, Response

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


@dataclass(frozen=True, slots=True)
class MediaTarget:
    host: str
    port: int
    rtcp_port: int | None
    direction: str


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
            if name.lower() == "boundary":
                boundary = value.strip('"')
        if not boundary:
            return None
        for part in message.body.split(b"--" + boundary.encode()):
            head, sep, body = part.partition(b"\r\n\r\n")
            if sep and b"application/sdp" in head.lower():
                return body.rstrip(b"\r\n") + b"\r\n"
    return None


def _lines(sdp: bytes) -> list[str]:
    try:
        text = sdp.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError("SDP is not UTF-8") from exc
    return [ln for ln in text.replace("\r\n", "\n").split("\n") if ln]


def audio_target(sdp: bytes) -> MediaTarget | None:
    """Where the first audio stream wants its RTP, or None if there is none."""
    session_c: str | None = None
    session_dir = "sendrecv"
    in_audio = False
    seen_audio = False
    port = 0
    media_c: str | None = None
    media_dir: str | None = None
    rtcp: int | None = None
    for line in _lines(sdp):
        if len(line) < 2 or line[1] != "=":
            raise ParseError(f"bad SDP line {line[:40]!r}")
        kind, value = line[0], line[2:].strip()
        if kind == "m":
            if in_audio:
                break
            parts = value.split()
            if len(parts) < 4 or not parts[1].split("/")[0].isdigit():
                raise ParseError(f"bad m= line {value!r}")
            if parts[0] == "audio" and not seen_audio:
                in_audio = seen_audio = True
                port = int(parts[1].split("/")[0])
                if port > 65535:
                    raise ParseError(f"bad port in m= line {value!r}")
            continue
        if kind == "c":
            parts = value.split()
            if len(parts) != 3:
                raise ParseError(f"bad c= line {value!r}")
            address = parts[2].split("/")[0]
            if in_audio:
                media_c = address
            elif not seen_audio:
                session_c = address
        elif kind == "a":
            name, _, attr = value.partition(":")
            if name in DIRECTIONS:
                if in_audio:
                    media_dir = name
                elif not seen_audio:
                    session_dir = name
            elif name == "rtcp" and in_audio:
                first = attr.split()[0] if attr.split() else ""
                rtcp = int(first) if first.isdigit() and int(first) <= 65535 else None
    if not seen_audio or port == 0:
        return None
    host = media_c or session_c
    if host is None:
        raise ParseError("no connection address for the audio stream")
    direction = media_dir or session_dir
    if host in ("0.0.0.0", "::"):
        direction = "inactive"  # RFC 2543 hold
    return MediaTarget(host, port, rtcp, direction)


def rewrite(sdp: bytes, host: str, port: int, *, session_version: int) -> bytes:
    """The same session with our relay's address and port for the first audio stream."""
    addrtype = "IP6" if ":" in host else "IP4"
    out: list[str] = []
    in_audio = False
    seen_audio = False
    media_has_c = False
    rfc2543_hold = False
    for line in _lines(sdp):
        kind, value = line[0], line[2:]
        if kind == "o":
            parts = value.split()
            if len(parts) == 6:
                parts[2] = str(session_version)
                parts[4], parts[5] = addrtype, host
                line = "o=" + " ".join(parts)
        elif kind == "c":
            if value.split()[-1].split("/")[0] in ("0.0.0.0", "::"):
                rfc2543_hold = True
            line = f"c=IN {addrtype} {host}"
            media_has_c = True
        elif kind == "m":
            if in_audio and rfc2543_hold:
                out.append("a=inactive")
            parts = value.split()
            in_audio = parts[0] == "audio" and not seen_audio and parts[1] != "0"
            media_has_c = False
            if in_audio:
                seen_audio = True
                parts[1] = str(port)
            else:
                parts[1] = "0"
            line = "m=" + " ".join(parts)
        elif kind == "a" and in_audio and value.startswith("rtcp:"):
            line = f"a=rtcp:{port + 1}"
        elif kind == "a" and value.startswith("candidate:"):
            continue
        out.append(line)
    if in_audio and rfc2543_hold:
        out.append("a=inactive")
    del media_has_c
    return ("\r\n".join(out) + "\r\n").encode()

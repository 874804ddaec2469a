"""SIP messages: parsing, typed access and serialisation (RFC 3261 section 7, 25).

``parse_message`` turns one datagram (or one framed stream message) into a
:class:`Request` or :class:`Response`, or raises :class:`ParseError` carrying the
outcome the RFC prescribes. Header values are kept as text and parsed on access, so a
message relayed unchanged keeps every byte of the headers we do not understand.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from .errors import ParseError
from .headers import (
    TOKEN,
    AuthHeader,
    CSeq,
    NameAddr,
    Via,
    parse_auth,
    parse_cseq,
    parse_name_addr,
    parse_via,
    split_commas,
)
from .uri import SipUri, Uri, parse_uri

MAX_MESSAGE_SIZE = 65535
MAX_HEADER_LINES = 256
MAX_LINE_LENGTH = 16384
SIP_VERSION = "SIP/2.0"

COMPACT_FORMS = {
    "a": "Accept-Contact", "b": "Referred-By", "c": "Content-Type", "d": "Request-Disposition",
    "e": "Content-Encoding", "f": "From", "i": "Call-ID", "j": "Reject-Contact",
    "k": "Supported", "l": "Content-Length", "m": "Contact", "n": "Identity-Info",
    "o": "Event", "r": "Refer-To", "s": "Subject", "t": "To", "u": "Allow-Events",
    "v": "Via", "x": "Session-Expires", "y": "Identity",
}
_CANONICAL = {
    name.lower(): name
    for name in (
        "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Allow-Events",
        "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
        "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
        "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires", "From",
        "In-Reply-To", "Max-Forwards", "Min-Expires", "MIME-Version", "Organization",
        "P-Asserted-Identity", "Priority", "Proxy-Authenticate", "Proxy-Authorization",
        "Proxy-Require", "RAck", "Record-Route", "Refer-To", "Referred-By", "Reply-To",
        "Require", "Retry-After", "Route", "RSeq", "Server", "Session-Expires", "Subject",
        "Subscription-State", "Supported", "Timestamp", "To", "Unsupported", "User-Agent",
        "Via", "Warning", "WWW-Authenticate",
    )
}
# Headers whose values are comma-separated lists (RFC 3261 7.3.1).
LIST_HEADERS = frozenset(
    {
        "via", "contact", "route", "record-route", "allow", "supported", "require",
        "proxy-require", "unsupported", "accept", "accept-encoding", "accept-language",
        "allow-events", "content-encoding", "content-language", "in-reply-to",
    }
)
# Headers that may appear once only; a second value is a 400 (RFC 4475 3.3.9).
SINGLE_HEADERS = frozenset(
    {"to", "from", "call-id", "cseq", "max-forwards", "content-length", "content-type",
     "expires", "min-expires"}
)

REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 300: "Multiple Choices",
    301: "Moved Permanently", 302: "Moved Temporarily", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    406: "Not Acceptable", 407: "Proxy Authentication Required", 408: "Request Timeout",
    410: "Gone", 413: "Request Entity Too Large", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 421: "Extension Required",
    423: "Interval Too Brief", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    484: "Address Incomplete", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 491: "Request Pending", 500: "Server Internal Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Server Time-out", 505: "Version Not Supported", 513: "Message Too Large",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}


@functools.lru_cache(maxsize=1024)
def canonical_name(name: str) -> str:
    """The usual spelling of a header name (compact forms expanded)."""
    lname = name.lower()
    if len(lname) == 1 and lname in COMPACT_FORMS:
        return COMPACT_FORMS[lname]
    return _CANONICAL.get(lname, name)


class Headers:
    """An ordered multimap of header fields, names compared case-insensitively."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str, str]] = []
        for name, value in items:
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        cname = canonical_name(name)
        self._items.append((cname.lower(), cname, value))

    def prepend(self, name: str, value: str) -> None:
        cname = canonical_name(name)
        self._items.insert(0, (cname.lower(), cname, value))

    def set(self, name: str, value: str) -> None:
        """Replace every field of that name by one, at the first one's position."""
        cname = canonical_name(name)
        key = cname.lower()
        for i, item in enumerate(self._items):
            if item[0] == key:
                self._items[i] = (key, cname, value)
                self._items = [it for j, it in enumerate(self._items) if j <= i or it[0] != key]
                return
        self._items.append((key, cname, value))

    def remove(self, name: str) -> None:
        key = canonical_name(name).lower()
        self._items = [it for it in self._items if it[0] != key]

    def get(self, name: str, default: str | None = None) -> str | None:
        key = canonical_name(name).lower()
        for item in self._items:
            if item[0] == key:
                return item[2]
        return default

    def fields(self, name: str) -> list[str]:
        """Each field's raw value, unsplit."""
        key = canonical_name(name).lower()
        return [it[2] for it in self._items if it[0] == key]

    def get_all(self, name: str) -> list[str]:
        """Every value, list headers split on their commas."""
        key = canonical_name(name).lower()
        values = [it[2] for it in self._items if it[0] == key]
        if key not in LIST_HEADERS:
            return values
        return [v for field_value in values for v in split_commas(field_value) if v]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = canonical_name(name).lower()
        return any(it[0] == key for it in self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((it[1], it[2]) for it in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def copy(self) -> Headers:
        new = Headers()
        new._items = list(self._items)
        return new


@dataclass(slots=True)
class Message:
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    # -- typed access ----------------------------------------------------------------
    @property
    def vias(self) -> list[Via]:
        return [parse_via(v) for v in self.headers.get_all("Via")]

    @property
    def top_via(self) -> Via:
        values = self.headers.get_all("Via")
        if not values:
            raise ParseError("missing Via")
        return parse_via(values[0])

    @property
    def from_(self) -> NameAddr:
        return parse_name_addr(self._required("From"))

    @property
    def to(self) -> NameAddr:
        return parse_name_addr(self._required("To"))

    @property
    def call_id(self) -> str:
        return self._required("Call-ID").strip()

    @property
    def cseq(self) -> CSeq:
        return parse_cseq(self._required("CSeq"))

    @property
    def contacts(self) -> list[NameAddr]:
        return [parse_name_addr(v) for v in self.headers.get_all("Contact") if v != "*"]

    @property
    def record_routes(self) -> list[NameAddr]:
        return [parse_name_addr(v) for v in self.headers.get_all("Record-Route")]

    @property
    def routes(self) -> list[NameAddr]:
        return [parse_name_addr(v) for v in self.headers.get_all("Route")]

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("Content-Type")
        return value.split(";", 1)[0].strip().lower() if value else None

    def auth(self, name: str) -> list[AuthHeader]:
        return [parse_auth(v) for v in self.headers.fields(name)]

    def _required(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise ParseError(f"missing {name}")
        return value

    # -- serialisation ---------------------------------------------------------------
    def start_line(self) -> str:
        raise NotImplementedError  # pragma: no cover - abstract

    def encode(self) -> bytes:
        lines = [self.start_line()]
        for name, value in self.headers:
            if name == "Content-Length":
                continue
            lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


@dataclass(slots=True)
class Request(Message):
    method: str = "OPTIONS"
    uri: Uri = field(default_factory=lambda: SipUri(host="invalid"))

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {SIP_VERSION}"

    @property
    def max_forwards(self) -> int | None:
        value = self.headers.get("Max-Forwards")
        if value is None:
            return None
        value = value.strip()
        if not _is_digits(value) or len(value) > 10 or int(value) > 255:
            raise ParseError(f"bad Max-Forwards {value!r}")
        return int(value)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


@dataclass(slots=True)
class Response(Message):
    status: int = 200
    reason: str = "OK"

    def start_line(self) -> str:
        return f"{SIP_VERSION} {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


# --- parsing ----------------------------------------------------------------------------

_REQUEST_LINE = re.compile(r"^([^ ]+) ([^ ]+) ([^ ]+)$")
_STATUS_LINE = re.compile(r"^([^ ]+) ([0-9]+) ?(.*)$")
_VERSION = re.compile(r"^SIP/\d+\.\d+$", re.IGNORECASE)


def parse_message(data: bytes, *, stream: bool = False) -> Request | Response:
    """Parse one message. Over a datagram, bytes past Content-Length are ignored.

    ``stream`` says the bytes were framed by :class:`StreamFramer`, which already
    checked Content-Length against the body.
    """
    if len(data) > MAX_MESSAGE_SIZE:
        raise ParseError("message too large", status=513)
    # RFC 3261 7.5: CRLFs before the start line are ignored; left in, two of them
    # would be taken for the end of the headers.
    data = data.lstrip(b"\r\n")
    if not data:
        raise ParseError("empty message", drop=True)
    # The headers end at the first empty line, whichever line ending it uses (a body
    # may hold CRLFCRLF after bare-LF headers).
    crlf_end, lf_end = data.find(b"\r\n\r\n"), data.find(b"\n\n")
    if crlf_end < 0 and lf_end < 0:
        raise ParseError("no end of headers")
    if lf_end < 0 or 0 <= crlf_end < lf_end:
        head, body = data[:crlf_end], data[crlf_end + 4 :]
    else:
        head, body = data[:lf_end], data[lf_end + 2 :]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head.decode("latin-1")
    raw_lines = text.replace("\r\n", "\n").split("\n")
    # RFC 3261 7.5: leading blank lines before the start line are ignored.
    while raw_lines and not raw_lines[0].strip():
        raw_lines.pop(0)
    if not raw_lines:
        raise ParseError("empty message", drop=True)
    start = raw_lines[0].strip()
    lines: list[str] = []
    for line in raw_lines[1:]:
        if len(line) > MAX_LINE_LENGTH:
            raise ParseError("header line too long")
        if line[:1] in (" ", "\t"):
            if not lines:
                raise ParseError("continuation line before any header")
            lines[-1] = lines[-1] + " " + line.strip()
        else:
            lines.append(line)
    if len(lines) > MAX_HEADER_LINES:
        raise ParseError("too many header fields")

    is_response = start.upper().startswith("SIP/")
    try:
        headers = _parse_headers(lines)
        body = _cut_body(headers, body, stream)
    except ParseError as exc:
        if is_response:
            exc.drop = True
        raise
    if is_response:
        return _parse_status_line(start, headers, body)
    return _parse_request_line(start, headers, body)


def _parse_headers(lines: list[str]) -> Headers:
    headers = Headers()
    seen_single: set[str] = set()
    for line in lines:
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not name or not TOKEN.match(name):
            raise ParseError(f"malformed header line {line[:60]!r}")
        value = value.strip()
        cname = canonical_name(name)
        key = cname.lower()
        if key in SINGLE_HEADERS:
            if key in seen_single:
                raise ParseError(f"more than one {cname} header", close=key == "content-length")
            seen_single.add(key)
        headers.add(cname, value)
    return headers


def _cut_body(headers: Headers, body: bytes, stream: bool) -> bytes:
    value = headers.get("Content-Length")
    if value is None:
        return body
    value = value.strip()
    if not _is_digits(value) or len(value) > 9:
        raise ParseError(f"bad Content-Length {value!r}", close=True)
    length = int(value)
    if length > len(body):
        raise ParseError("Content-Length larger than the body", close=True)
    if stream and length != len(body):
        raise ParseError("Content-Length does not match the framed body", close=True)
    return body[:length]


def _parse_status_line(start: str, headers: Headers, body: bytes) -> Response:
    m = _STATUS_LINE.match(start)
    if not m or not _VERSION.match(m.group(1)):
        raise ParseError(f"bad status line {start[:60]!r}", drop=True)
    if m.group(1).upper() != SIP_VERSION:
        raise ParseError(f"unsupported version {m.group(1)!r}", drop=True)
    code = m.group(2)
    if len(code) != 3 or not 100 <= int(code) <= 699:
        raise ParseError(f"bad status code {code!r}", drop=True)
    resp = Response(headers=headers, body=body, status=int(code), reason=m.group(3))
    try:
        _check_common(resp)
    except ParseError as exc:
        exc.drop = True
        raise
    return resp


def _parse_request_line(start: str, headers: Headers, body: bytes) -> Request:
    m = _REQUEST_LINE.match(start)
    if not m:
        raise ParseError(f"malformed request line {start[:80]!r}")
    method, uri_text, version = m.groups()
    if not TOKEN.match(method):
        raise ParseError(f"bad method {method!r}")
    if not _VERSION.match(version):
        raise ParseError(f"bad version {version!r}")
    if version.upper() != SIP_VERSION:
        raise ParseError(f"SIP version {version} not supported", status=505)
    if uri_text.startswith("<"):
        raise ParseError("Request-URI must not be enclosed in <>")
    uri = parse_uri(uri_text)
    req = Request(headers=headers, body=body, method=method, uri=uri)
    _check_common(req)
    return req


def _check_common(msg: Message) -> None:
    """Checks that make a message unusable by any layer (RFC 3261 8.1.1, 8.2.*)."""
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if name not in msg.headers:
            raise ParseError(f"missing mandatory header {name}")
    for value in msg.headers.get_all("Via"):
        parse_via(value)
    for name in ("From", "To"):
        parse_name_addr(msg.headers.get(name) or "")
    for value in msg.headers.get_all("Contact"):
        if value != "*":
            parse_name_addr(value)
    for name in ("Route", "Record-Route"):
        for value in msg.headers.get_all(name):
            parse_name_addr(value)
    cseq = msg.cseq
    if isinstance(msg, Request):
        if cseq.method != msg.method and TOKEN.match(cseq.method):
            # RFC 4475 3.1.2.x: a mismatch is a 400 for a known method; an unknown
            # method gets its 501 first (decided by the server layer).
            if msg.method.upper() in KNOWN_METHODS:
                raise ParseError("CSeq method does not match the request method")
        msg.max_forwards  # noqa: B018 - validates the value
        expires = msg.headers.get("Expires")
        if expires is not None and not _is_digits(expires.strip()):
            raise ParseError(f"bad Expires {expires!r}")


KNOWN_METHODS = frozenset(
    {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "INFO", "UPDATE", "PRACK",
     "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "PUBLISH"}
)


# --- stream framing ---------------------------------------------------------------------

class StreamFramer:
    """Cut a TCP/TLS byte stream into messages (RFC 3261 18.3).

    ``feed`` returns complete messages' bytes; a framing error raises ParseError with
    ``close`` set: the connection cannot be resynchronised and must be closed. Messages
    framed ahead of the fault in the same chunk are returned first, the fault kept in
    :attr:`error` and raised by the next ``feed``.
    CRLF keep-alives (RFC 5626 3.5.1) are reported as ``b"\\r\\n\\r\\n"`` pings.
    """

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self._buf = bytearray()
        self._max = max_size
        self._error: ParseError | None = None

    @property
    def error(self) -> ParseError | None:
        """A framing error found behind messages already returned; the next feed raises it."""
        return self._error

    @property
    def pending(self) -> bool:
        """Part of a message is buffered, waiting for the rest."""
        return bool(self._buf.strip(b"\r\n"))

    def feed(self, data: bytes) -> list[bytes]:
        if self._error is not None:
            raise self._error
        self._buf += data
        out: list[bytes] = []
        try:
            self._cut(out)
        except ParseError as exc:
            if not out:
                raise
            # Hand over the good messages framed before the fault; raise it next time.
            self._error = exc
        return out

    def _cut(self, out: list[bytes]) -> None:
        while True:
            if self._buf.startswith(b"\r\n\r\n"):
                del self._buf[:4]
                out.append(b"\r\n\r\n")
                continue
            stripped = len(self._buf) - len(self._buf.lstrip(b"\r\n"))
            if stripped and (stripped < len(self._buf) or stripped >= 4):
                del self._buf[:stripped]
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > self._max:
                    raise ParseError("header section too large", close=True)
                return
            head = bytes(self._buf[:end])
            length = _stream_content_length(head)
            total = end + 4 + length
            if total > self._max:
                raise ParseError("message too large", status=513, close=True)
            if len(self._buf) < total:
                return
            out.append(bytes(self._buf[:total]))
            del self._buf[:total]


_CL_LINE = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(.*?)[ \t]*$", re.IGNORECASE | re.M)


def _stream_content_length(head: bytes) -> int:
    values = _CL_LINE.findall(head.replace(b"\r\n", b"\n"))
    if not values:
        # RFC 3261 18.3: mandatory over streams; a message without it cannot be framed.
        raise ParseError("missing Content-Length on a stream transport", close=True)
    if len(values) > 1:
        raise ParseError("more than one Content-Length", close=True)
    value = values[0].strip()
    if not value.isdigit() or len(value) > 9:
        raise ParseError("bad Content-Length", close=True)
    return int(value)


# --- building messages ------------------------------------------------------------------

def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> Response:
    """A response to ``request`` as RFC 3261 8.2.6.2 builds it."""
    resp = Response(status=status, reason=reason or REASONS.get(status, "Unknown"))
    h = resp.headers
    for value in request.headers.fields("Via"):
        h.add("Via", value)
    for name in ("From", "To", "Call-ID", "CSeq"):
        field_value = request.headers.get(name)
        if field_value is not None:
            h.add(name, field_value)
    if to_tag is not None and status != 100:
        to = request.headers.get("To")
        if to is not None and header_tag(to) is None:
            h.set("To", f"{to};tag={to_tag}")
    if status == 100 and "Timestamp" in request.headers:
        h.add("Timestamp", request.headers.get("Timestamp") or "")
    for name, value in headers:
        h.add(name, value)
    resp.body = body
    return resp


def _is_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


_TAG = re.compile(r";\s*tag\s*=\s*([^;>\s,]+)", re.IGNORECASE)


def make_cancel(invite: Request) -> Request:
    """The CANCEL for an INVITE we sent (RFC 3261 9.1): same Request-URI, top Via,
    From, To, Call-ID and CSeq number, and the INVITE's Route set."""
    cancel = Request(method="CANCEL", uri=invite.uri)
    h = cancel.headers
    h.add("Via", invite.headers.get_all("Via")[0])
    h.add("Max-Forwards", "70")
    for name in ("From", "To", "Call-ID"):
        h.add(name, invite.headers.get(name) or "")
    h.add("CSeq", f"{invite.cseq.number} CANCEL")
    for value in invite.headers.fields("Route"):
        h.add("Route", value)
    return cancel


def header_tag(value: str | None) -> str | None:
    """The tag of a From/To value without a full parse (hot path of matching).

    Only header parameters count: a ``tag`` inside ``<...>`` is a URI parameter.
    """
    if not value:
        return None
    gt = value.rfind(">")
    m = _TAG.search(value, gt + 1 if gt >= 0 else 0)
    return m.group(1) if m else None

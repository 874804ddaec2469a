"""Typed SIP header values (RFC 3261 section 20, ABNF in 25.1).

Each parser takes one header *value* (already unfolded and split from its siblings)
and either returns a typed object or raises :class:`ParseError` saying what is wrong.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from .errors import ParseError
from .uri import AbsoluteUri, SipUri, Uri, parse_hostport, parse_uri

TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_DISPLAY_TOKENS = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+(?:[ \t]+[A-Za-z0-9\-.!%*_+`'~]+)*$")
_GEN_VALUE = re.compile(r"^(?:[A-Za-z0-9\-.!%*_+`'~:\[\]]+|\"(?:[^\"\\]|\\.)*\")$")
MAGIC_COOKIE = "z9hG4bK"


def split_commas(value: str) -> Iterator[str]:
    """Split a list header on commas outside quotes and angle brackets."""
    if '"' not in value and "<" not in value:
        # The common case (Via, Allow, Supported): no quoting to respect.
        for part in value.split(","):
            yield part.strip()
        return
    depth = 0
    quoted = False
    start = 0
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == "<":
            depth += 1
        elif c == ">":
            depth = max(0, depth - 1)
        elif c == "," and depth == 0:
            yield value[start:i].strip()
            start = i + 1
        i += 1
    if quoted:
        raise ParseError("unbalanced quotes in header value")
    yield value[start:].strip()


def parse_params(text: str, context: str) -> dict[str, str | None]:
    """Parse ``;name=value;flag`` (text starts after the first ``;``)."""
    params: dict[str, str | None] = {}
    if not text.strip():
        raise ParseError(f"empty parameter in {context}")
    for part in _split_semicolons(text):
        name, eq, value = part.partition("=")
        name = name.strip()
        value = value.strip()
        if not name or not TOKEN.match(name):
            raise ParseError(f"bad parameter {part!r} in {context}")
        if eq and not _GEN_VALUE.match(value):
            raise ParseError(f"bad value for parameter {name!r} in {context}")
        params[name.lower()] = value if eq else None
    return params


def _split_semicolons(text: str) -> list[str]:
    parts: list[str] = []
    quoted = escaped = False
    start = 0
    for i, c in enumerate(text):
        if quoted:
            # A quoted-pair escapes the next character, a backslash included (25.1).
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == ";":
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def unquote_string(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


def quote_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(slots=True)
class NameAddr:
    """From, To, Contact, Route, Record-Route, Refer-To: ``"Name" <uri>;params``."""

    uri: Uri
    display_name: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @property
    def sip_uri(self) -> SipUri:
        if not isinstance(self.uri, SipUri):
            raise ParseError(f"unsupported URI scheme {self.uri.scheme!r}", status=416)
        return self.uri

    def __str__(self) -> str:
        name = f"{quote_string(self.display_name)} " if self.display_name else ""
        return f"{name}<{self.uri}>{_format_params(self.params)}"

    def copy(self) -> NameAddr:
        uri = self.uri.copy() if isinstance(self.uri, SipUri) else self.uri
        return NameAddr(uri, self.display_name, dict(self.params))


def parse_name_addr(value: str) -> NameAddr:
    """Parse From/To/Contact/Route values. The same value is parsed once: a message
    is handled by several layers, each asking for its From and To."""
    return _parse_name_addr_cached(value).copy()


@functools.lru_cache(maxsize=4096)
def _parse_name_addr_cached(value: str) -> NameAddr:
    text = value.strip()
    if not text:
        raise ParseError("empty address")
    lt = _find_unquoted(text, "<")
    if lt >= 0:
        gt = text.find(">", lt)
        if gt < 0:
            raise ParseError(f"missing '>' in {value!r}")
        display = text[:lt].strip()
        uri_text = text[lt + 1 : gt]
        if uri_text != uri_text.strip():
            raise ParseError(f"whitespace inside <> in {value!r}")
        name: str | None = None
        if display:
            if display.startswith('"'):
                if len(display) < 2 or not display.endswith('"'):
                    raise ParseError(f"unbalanced quotes in display name {display!r}")
                name = unquote_string(display)
            elif _DISPLAY_TOKENS.match(display):
                name = display
            else:
                raise ParseError(f"display name {display!r} must be quoted")
        rest = text[gt + 1 :].strip()
        uri = parse_uri(uri_text)
    else:
        if '"' in text:
            raise ParseError(f"unbalanced quotes in {value!r}")
        name = None
        # Without <>, a ';' starts header parameters and the URI may not carry headers
        # or commas (RFC 3261 20.10): such a value is ambiguous and refused.
        semi = text.find(";")
        uri_text, rest = (text, "") if semi < 0 else (text[:semi].rstrip(), text[semi:])
        if any(c in uri_text for c in "?, "):
            raise ParseError(f"URI with '?', ',' or space must be enclosed in <>: {value!r}")
        uri = parse_uri(uri_text)
    params: dict[str, str | None] = {}
    if rest:
        if not rest.startswith(";"):
            raise ParseError(f"garbage after address in {value!r}")
        params = parse_params(rest[1:], "address")
    return NameAddr(uri, name, params)


def _find_unquoted(text: str, char: str) -> int:
    quoted = escaped = False
    for i, c in enumerate(text):
        if quoted:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == char:
            return i
    if quoted:
        raise ParseError(f"unbalanced quotes in {text!r}")
    return -1


@dataclass(slots=True)
class Via:
    """One Via value: ``SIP/2.0/UDP host:port;branch=...;rport``."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"SIP/2.0/{self.transport} {self.sent_by}{_format_params(self.params)}"


_VIA_PROTO = re.compile(r"^SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s+(.*)$", re.IGNORECASE)


def parse_via(value: str) -> Via:
    cached = _parse_via_cached(value)
    return Via(cached.transport, cached.host, cached.port, dict(cached.params))


@functools.lru_cache(maxsize=4096)
def _parse_via_cached(value: str) -> Via:
    text = re.sub(r"\([^)]*\)", "", value).strip()  # comments carry nothing we use
    m = _VIA_PROTO.match(text)
    if not m:
        raise ParseError(f"bad Via {value!r}")
    transport, rest = m.group(1).upper(), m.group(2).strip()
    hostport, _, params_text = rest.partition(";")
    hostport = re.sub(r"\s*:\s*", ":", hostport.strip()) if "[" not in hostport else hostport
    host, port = parse_hostport(hostport.strip())
    params = parse_params(params_text, "Via") if ";" in rest else {}
    return Via(transport, host, port, params)


@dataclass(slots=True, frozen=True)
class CSeq:
    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


_CSEQ = re.compile(r"^\s*([0-9]{1,10})\s+([A-Za-z0-9\-.!%*_+`'~]+)\s*$")


@functools.lru_cache(maxsize=4096)
def parse_cseq(value: str) -> CSeq:
    m = _CSEQ.match(value)
    if not m or int(m.group(1)) > 0xFFFFFFFF:
        raise ParseError(f"bad CSeq {value!r}")
    return CSeq(int(m.group(1)), m.group(2))


@dataclass(slots=True)
class AuthHeader:
    """WWW-/Proxy-Authenticate and (Proxy-)Authorization: scheme and parameters.

    Values are stored unquoted; ``quoted`` names the parameters that go back in quotes.
    """

    scheme: str
    params: dict[str, str]

    def __str__(self) -> str:
        # RFC 2617/7616 quirk: qop is quoted in a challenge, bare in credentials.
        bare = {"algorithm", "nc", "stale"}
        if "response" in self.params:
            bare.add("qop")
        parts = [f"{k}={v}" if k in bare else f"{k}={quote_string(v)}"
                 for k, v in self.params.items()]
        return f"{self.scheme} " + ", ".join(parts)


def parse_auth(value: str) -> AuthHeader:
    text = value.strip()
    scheme, _, rest = text.replace("\t", " ").partition(" ")
    if not scheme or not TOKEN.match(scheme):
        raise ParseError(f"bad auth scheme in {value!r}")
    params: dict[str, str] = {}
    for item in split_commas(rest):
        if not item:
            continue
        name, eq, val = item.partition("=")
        name = name.strip().lower()
        if not eq or not TOKEN.match(name):
            raise ParseError(f"bad auth parameter {item!r}")
        params[name] = unquote_string(val.strip())
    return AuthHeader(scheme, params)


def uri_user(uri: Uri) -> str | None:
    """The dialled user/number of a URI, unescaped."""
    if isinstance(uri, SipUri):
        return uri.user_unescaped
    if isinstance(uri, AbsoluteUri):
        return uri.user
    return None

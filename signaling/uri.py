"""SIP and other URIs (RFC 3261 19.1, 25.1; IPv6 references per RFC 5118).

User parts are kept escaped exactly as received, so a URI re-serialises byte for byte
and is never unescaped twice; comparisons go through :meth:`SipUri.user_unescaped`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from urllib.parse import unquote

from .errors import ParseError

_HOSTNAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9])?\.?$")
_IPV6_BODY = re.compile(r"^[0-9A-Fa-f:.]+$")
# RFC 3261 25.1 user / password / param characters, escapes included.
_USER_CHARS = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+$")
_PASSWORD_CHARS = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()&=+$,]|%[0-9A-Fa-f]{2})*$")
_PARAM_CHARS = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})+$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+\-.]*$")

SIP_SCHEMES = frozenset({"sip", "sips"})


@dataclass(slots=True)
class SipUri:
    """A sip: or sips: URI. ``host`` keeps IPv6 brackets; ``params`` keep their order."""

    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    scheme: str = "sip"
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str | None = None

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        for name, value in self.params.items():
            out.append(f";{name}" if value is None else f";{name}={value}")
        if self.headers is not None:
            out.append("?" + self.headers)
        return "".join(out)

    @property
    def user_unescaped(self) -> str | None:
        return None if self.user is None else unquote(self.user)

    @property
    def host_bare(self) -> str:
        """The host without IPv6 brackets, lower-cased (for sockets and comparisons)."""
        return self.host.strip("[]").lower()

    @property
    def transport(self) -> str | None:
        value = self.param("transport")
        return value.lower() if value else None

    def param(self, name: str) -> str | None:
        lname = name.lower()
        for key, value in self.params.items():
            if key.lower() == lname:
                return value
        return None

    def has_param(self, name: str) -> bool:
        lname = name.lower()
        return any(key.lower() == lname for key in self.params)

    def with_(self, **changes: object) -> SipUri:
        return replace(self, **changes)  # type: ignore[arg-type]

    def copy(self) -> SipUri:
        return replace(self, params=dict(self.params))


@dataclass(slots=True, frozen=True)
class AbsoluteUri:
    """Any URI of a scheme other than sip/sips (tel:, mailto:, urn:...), kept opaque."""

    scheme: str
    rest: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"

    @property
    def user(self) -> str | None:
        # tel:+8610... -> the number, so routing can treat it like a dialled user part.
        if self.scheme.lower() == "tel":
            return self.rest.split(";", 1)[0]
        return None


Uri = SipUri | AbsoluteUri


def parse_hostport(text: str) -> tuple[str, int | None]:
    """Split ``host[:port]`` with IPv6 references; raise ParseError on anything else."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ParseError(f"unterminated IPv6 reference in {text!r}")
        host, rest = text[: end + 1], text[end + 1 :]
        if not _IPV6_BODY.match(host[1:-1]):
            raise ParseError(f"bad IPv6 reference {host!r}")
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise ParseError(f"garbage after IPv6 reference in {text!r}")
        return host, _parse_port(rest[1:], text)
    host, sep, port = text.partition(":")
    if not host or not _HOSTNAME.match(host):
        raise ParseError(f"bad host {host!r}")
    return host, (_parse_port(port, text) if sep else None)


def _parse_port(port: str, context: str) -> int:
    if not (port.isascii() and port.isdigit()) or len(port) > 5 or int(port) > 65535:
        raise ParseError(f"bad port in {context!r}")
    return int(port)


def parse_uri(text: str) -> Uri:
    """Parse a URI as found in a Request-URI or inside ``<>``."""
    scheme, sep, rest = text.partition(":")
    if not sep or not _SCHEME.match(scheme):
        raise ParseError(f"not a URI: {text!r}")
    if any(c in text for c in " \t\r\n<>\""):
        raise ParseError(f"illegal character in URI {text!r}")
    if scheme.lower() not in SIP_SCHEMES:
        return AbsoluteUri(scheme.lower(), rest)
    return _parse_sip(scheme.lower(), rest)


def _parse_sip(scheme: str, rest: str) -> SipUri:
    headers: str | None = None
    if "?" in rest:
        # '?' is legal inside the user part, so look for it only after the '@'.
        at = rest.find("@")
        q = rest.find("?", at + 1 if at >= 0 else 0)
        if q >= 0:
            rest, headers = rest[:q], rest[q + 1 :]
    user: str | None = None
    password: str | None = None
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, psep, pw = userinfo.partition(":")
        if psep:
            password = pw
            if not _PASSWORD_CHARS.match(pw):
                raise ParseError(f"bad password characters in URI user info {userinfo!r}")
        if not user or not _USER_CHARS.match(user):
            raise ParseError(f"bad user part {user!r}")
    hostport, *param_parts = rest.split(";")
    host, port = parse_hostport(hostport)
    params: dict[str, str | None] = {}
    for part in param_parts:
        name, eq, value = part.partition("=")
        if not name or not _PARAM_CHARS.match(name) or (eq and not _PARAM_CHARS.match(value)):
            raise ParseError(f"bad URI parameter {part!r}")
        params[name] = value if eq else None
    return SipUri(
        host=host,
        user=user,
        password=password,
        port=port,
        scheme=scheme,
        params=params,
        headers=headers,
    )


def parse_sip_uri(text: str) -> SipUri:
    uri = parse_uri(text)
    if not isinstance(uri, SipUri):
        raise ParseError(f"unsupported URI scheme {uri.scheme!r}", status=416)
    return uri

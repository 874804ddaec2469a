"""RFC 3891 Replaces: the dialog a new INVITE asks to take over (attended transfer).

A transferor puts it in the Refer-To URI of its REFER as an escaped URI header
(``<sip:carol@hub?Replaces=abc%40host%3Bto-tag%3D1%3Bfrom-tag%3D2>``, RFC 5589 section 7);
the transferee copies it into the INVITE it sends. Either way the receiver matches it
"as if the tags were present in an incoming request" (RFC 3891 section 3): ``to_tag``
against its own (local) tag, ``from_tag`` against the other party's, so
:meth:`Replaces.dialog_key` is what ``signaling.dialog.dialog_id_of_request`` gives for a
request in that dialog. Sans-I/O: text in, a value or a :class:`ParseError` (400) out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from .errors import ParseError
from .headers import TOKEN
from .uri import SipUri

# RFC 3261 25.1 callid = word [ "@" word ]
_WORD = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+"
_CALL_ID = re.compile(f"^{_WORD}(?:@{_WORD})?$")


@dataclass(frozen=True, slots=True)
class Replaces:
    """One parsed Replaces value (RFC 3891 section 6.1)."""

    call_id: str
    """The Call-ID of the dialog to replace."""
    to_tag: str
    """The tag of the receiver's own side of that dialog (its local tag)."""
    from_tag: str
    """The tag of the other party of that dialog (the receiver's remote tag)."""
    early_only: bool = False
    """Replace the dialog only while it is early (486 once it is confirmed)."""

    @property
    def dialog_key(self) -> tuple[str, str, str]:
        """(Call-ID, local tag, remote tag): the receiver's id of the dialog."""
        return (self.call_id, self.to_tag, self.from_tag)

    def __str__(self) -> str:
        early = ";early-only" if self.early_only else ""
        return f"{self.call_id};to-tag={self.to_tag};from-tag={self.from_tag}{early}"


def parse_replaces(value: str) -> Replaces:
    """Parse a Replaces header value (already unescaped if it came in a URI)."""
    call_id, *params = [part.strip() for part in value.strip().split(";")]
    if not call_id or not _CALL_ID.match(call_id):
        raise ParseError(f"bad Call-ID in Replaces {value!r}")
    tags: dict[str, str] = {}
    early_only = False
    for param in params:
        name, eq, tag = param.partition("=")
        name = name.strip().lower()
        tag = tag.strip()
        if name in ("to-tag", "from-tag"):
            if not eq or not TOKEN.match(tag):
                raise ParseError(f"bad {name} in Replaces {value!r}")
            if name in tags:
                raise ParseError(f"{name} twice in Replaces {value!r}")
            tags[name] = tag
        elif name == "early-only" and not eq:
            early_only = True
        elif not name or not TOKEN.match(name):
            raise ParseError(f"bad parameter {param!r} in Replaces")
    # 6.1: exactly one to-tag and one from-tag, "required for unique dialog matching".
    for needed in ("to-tag", "from-tag"):
        if needed not in tags:
            raise ParseError(f"Replaces without {needed}: {value!r}")
    return Replaces(call_id, tags["to-tag"], tags["from-tag"], early_only)


def uri_headers(uri: SipUri) -> list[tuple[str, str]]:
    """The headers of a SIP URI (RFC 3261 19.1.1 ``?name=value&...``), unescaped."""
    if not uri.headers:
        return []
    out = []
    for part in uri.headers.split("&"):
        name, eq, value = part.partition("=")
        if not eq or not name:
            raise ParseError(f"bad URI header {part!r}")
        out.append((unquote(name), unquote(value)))
    return out


def replaces_in_uri(uri: SipUri) -> Replaces | None:
    """The Replaces a Refer-To URI carries (None: a blind transfer).

    More than one is a 400, as for an INVITE carrying several (RFC 3891 section 3).
    """
    values = [value for name, value in uri_headers(uri) if name.lower() == "replaces"]
    if not values:
        return None
    if len(values) > 1:
        raise ParseError("more than one Replaces")
    return parse_replaces(values[0])

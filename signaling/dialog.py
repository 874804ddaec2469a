"""SIP dialogs (RFC 3261 section 12): the state two UAs share after an INVITE.

A dialog builds the in-dialog requests of its side (Route set, remote target, CSeq)
and checks the requests of the other side (CSeq ordering). Sans-I/O.
"""

from __future__ import annotations

import enum
import logging
import secrets
from dataclasses import dataclass, field

from .errors import ParseError
from .headers import NameAddr, parse_name_addr
from .message import Request, Response, header_tag
from .uri import SipUri, Uri, parse_uri

log = logging.getLogger(__name__)


def new_tag() -> str:
    return secrets.token_hex(5)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(10)}@{host}"


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(eq=False)
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    """Our From (as UAC) / To (as UAS) value without its tag."""
    remote_uri: str
    remote_target: Uri
    route_set: list[str] = field(default_factory=list)
    local_seq: int = 0
    remote_seq: int | None = None
    state: DialogState = DialogState.EARLY
    secure: bool = False

    @property
    def id(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)

    # -- creation -------------------------------------------------------------------------
    @classmethod
    def from_uas(cls, request: Request, local_tag: str) -> Dialog:
        """The dialog of the UAS that answers ``request`` with a To tag (RFC 3261 12.1.1)."""
        contacts = request.contacts
        if not contacts:
            raise ParseError("dialog-creating request without Contact")
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=header_tag(request.headers.get("From")) or "",
            local_uri=_without_tag(request.headers.get("To") or ""),
            remote_uri=_without_tag(request.headers.get("From") or ""),
            remote_target=contacts[0].uri,
            route_set=list(request.headers.get_all("Record-Route")),
            local_seq=0,
            remote_seq=request.cseq.number,
        )

    @classmethod
    def from_uac(cls, request: Request, response: Response) -> Dialog:
        """The dialog of the UAC, from a 1xx-with-tag or 2xx (RFC 3261 12.1.2)."""
        contacts = response.contacts
        target: Uri = contacts[0].uri if contacts else request.uri
        return cls(
            call_id=request.call_id,
            local_tag=header_tag(request.headers.get("From")) or "",
            remote_tag=header_tag(response.headers.get("To")) or "",
            local_uri=_without_tag(request.headers.get("From") or ""),
            remote_uri=_without_tag(request.headers.get("To") or ""),
            remote_target=target,
            route_set=list(reversed(response.headers.get_all("Record-Route"))),
            local_seq=request.cseq.number,
            state=DialogState.CONFIRMED if 200 <= response.status < 300 else DialogState.EARLY,
        )

    # -- requests ---------------------------------------------------------------------------
    def create_request(self, method: str, *, via: str, contact: str | None = None,
                       cseq: int | None = None) -> Request:
        """A request inside the dialog (RFC 3261 12.2.1.1). ACK and CANCEL reuse a CSeq."""
        if cseq is None:
            self.local_seq += 1
            cseq = self.local_seq
        req = Request(method=method, uri=self.request_uri())
        h = req.headers
        h.add("Via", via)
        h.add("Max-Forwards", "70")
        h.add("From", f"{self.local_uri};tag={self.local_tag}")
        # A peer without tags (RFC 2543) gets no tag, not an empty one (12.2.1.1).
        h.add("To", f"{self.remote_uri};tag={self.remote_tag}" if self.remote_tag
              else self.remote_uri)
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{cseq} {method}")
        for route in self._routes():
            h.add("Route", route)
        if contact is not None:
            h.add("Contact", contact)
        return req

    def request_uri(self) -> Uri:
        if self.route_set and not self._loose(self.route_set[0]):
            # Strict routing (RFC 3261 12.2.1.1): first route becomes the Request-URI.
            return parse_name_addr(self.route_set[0]).uri
        return self.remote_target

    def _routes(self) -> list[str]:
        if self.route_set and not self._loose(self.route_set[0]):
            return [*self.route_set[1:], f"<{self.remote_target}>"]
        return list(self.route_set)

    @staticmethod
    def _loose(route: str) -> bool:
        uri = parse_name_addr(route).uri
        return isinstance(uri, SipUri) and uri.has_param("lr")

    def next_hop(self) -> Uri:
        """Where the next in-dialog request goes (first Route if any, else the target)."""
        if self.route_set:
            return parse_name_addr(self.route_set[0]).uri
        return self.remote_target

    # -- the other side's requests -----------------------------------------------------------
    def check_remote_cseq(self, request: Request) -> bool:
        """False for an out-of-order request, which gets a 500 (RFC 3261 12.2.2)."""
        number = request.cseq.number
        if request.method in ("ACK", "CANCEL"):
            return True
        if self.remote_seq is not None and number <= self.remote_seq:
            return False
        self.remote_seq = number
        return True

    def update_target(self, message: Request | Response) -> None:
        """A target refresh (re-INVITE, UPDATE, their 2xx) moves the remote target."""
        contacts = message.contacts
        if contacts:
            self.remote_target = contacts[0].uri

    def matches(self, message: Request | Response) -> bool:
        return message.call_id == self.call_id


def _without_tag(value: str) -> str:
    addr = parse_name_addr(value)
    addr.params.pop("tag", None)
    return str(addr)


def dialog_id_of_request(request: Request) -> tuple[str, str, str] | None:
    """(Call-ID, our tag, their tag) of an in-dialog request we receive; None if not one."""
    to_tag = header_tag(request.headers.get("To"))
    if to_tag is None:
        return None
    return (request.call_id, to_tag, header_tag(request.headers.get("From")) or "")


def dialog_id_of_response(response: Response) -> tuple[str, str, str]:
    """(Call-ID, our tag, their tag) of a response to a request we sent."""
    return (
        response.call_id,
        header_tag(response.headers.get("From")) or "",
        header_tag(response.headers.get("To")) or "",
    )


def name_addr(uri: str | Uri, display_name: str | None = None) -> NameAddr:
    return NameAddr(parse_uri(uri) if isinstance(uri, str) else uri, display_name)

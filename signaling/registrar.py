"""Registrar (RFC 3261 10.3), sans-I/O.

:meth:`Registrar.process` turns one already-authenticated REGISTER into its response,
reading and writing bindings through a :class:`LocationStore`. The steps follow
RFC 3261 10.3 and are cited where they happen. Every change a request asks for is
checked first (423, out-of-order CSeq, too many contacts) and only then applied, so a
request either takes effect entirely or not at all (10.3 step 7, last paragraph).

``now`` is wall-clock seconds (``time.time()``): it stamps the Date header, and
bindings may outlive the process in a persistent store.
"""

from __future__ import annotations

import ipaddress
import math
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Protocol

from .errors import ParseError
from .message import Request, Response, make_response
from .uri import SipUri, parse_uri


@dataclass(frozen=True, slots=True)
class Binding:
    """One contact registered for an address-of-record."""

    aor: str
    """The user name of the address-of-record (To user part, unescaped)."""
    contact: str
    """The Contact URI as sent, without <> or header parameters."""
    expires_at: float
    """Wall-clock second at which the binding lapses."""
    received: str
    """Where the REGISTER came from, ``ip:port`` (``[ip6]:port``)."""
    transport: str
    """udp, tcp, tls, ws or wss, lower-case."""
    call_id: str
    cseq: int
    q: float | None = None
    """The Contact's q parameter (0 to 1), None when absent."""
    user_agent: str | None = None

    def expires_in(self, now: float) -> int:
        """Whole seconds left, rounded up so a live binding never says 0."""
        return max(0, math.ceil(self.expires_at - now))


class LocationStore(Protocol):
    """Where bindings live. Keys are (aor, contact string); implementations must not
    return bindings whose ``expires_at`` is at or before ``now``."""

    def bindings(self, aor: str, now: float) -> list[Binding]: ...

    def save_binding(self, b: Binding) -> None: ...

    def remove_binding(self, aor: str, contact: str) -> None: ...

    def remove_all_bindings(self, aor: str) -> None: ...


class MemoryLocationStore:
    """A dict-backed :class:`LocationStore`, for tests and single-process use."""

    __slots__ = ("_by_aor",)

    def __init__(self) -> None:
        self._by_aor: dict[str, dict[str, Binding]] = {}

    def bindings(self, aor: str, now: float) -> list[Binding]:
        table = self._by_aor.get(aor)
        if not table:
            return []
        for contact in [c for c, b in table.items() if b.expires_at <= now]:
            del table[contact]
        if not table:
            del self._by_aor[aor]
        return list(table.values())

    def save_binding(self, b: Binding) -> None:
        self._by_aor.setdefault(b.aor, {})[b.contact] = b

    def remove_binding(self, aor: str, contact: str) -> None:
        table = self._by_aor.get(aor)
        if table is not None:
            table.pop(contact, None)
            if not table:
                del self._by_aor[aor]

    def remove_all_bindings(self, aor: str) -> None:
        self._by_aor.pop(aor, None)

    def expire(self, now: float) -> list[Binding]:
        """Drop every lapsed binding and return them (for "registration went" events)."""
        gone: list[Binding] = []
        for aor in list(self._by_aor):
            table = self._by_aor[aor]
            for contact, b in list(table.items()):
                if b.expires_at <= now:
                    gone.append(b)
                    del table[contact]
            if not table:
                del self._by_aor[aor]
        return gone

    def aors(self) -> list[str]:
        return list(self._by_aor)


@dataclass(frozen=True, slots=True)
class RegisterOutcome:
    """What one REGISTER did."""

    response: Response
    """The response to send."""
    aor: str | None
    """The address-of-record concerned; None if the request was refused before."""
    added: tuple[Binding, ...] = ()
    """Contacts that were not bound before."""
    refreshed: tuple[Binding, ...] = ()
    """Contacts bound before, with their new state."""
    removed: tuple[Binding, ...] = ()
    """Contacts unbound by this request (expires 0 or ``*``)."""


_QVALUE = re.compile(r"^(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)$")


class _Refusal(Exception):
    """A response decided mid-way (internal to this module)."""

    def __init__(self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers


class Registrar:
    """Binds contacts to users (RFC 3261 10.3).

    ``domain_check(host)`` says whether we are the registrar for a domain (Request-URI
    and To host); None accepts any. Expiry intervals are clamped to
    ``[min_expires, max_expires]``; shorter non-zero ones are refused with 423.
    """

    def __init__(
        self,
        store: LocationStore,
        *,
        domain_check: Callable[[str], bool] | None = None,
        min_expires: int = 60,
        max_expires: int = 3600,
        default_expires: int = 3600,
        max_bindings_per_aor: int = 16,
    ) -> None:
        if not 0 < min_expires <= default_expires <= max_expires:
            raise ValueError("need 0 < min_expires <= default_expires <= max_expires")
        self.store = store
        self.domain_check = domain_check
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = default_expires
        self.max_bindings_per_aor = max_bindings_per_aor

    def handle(
        self,
        request: Request,
        *,
        user: str,
        source: tuple[str, int],
        transport: str,
        now: float,
        to_tag: str | None = None,
    ) -> Response:
        """The response to ``request``, sent by ``user`` (already authenticated)."""
        return self.process(
            request, user=user, source=source, transport=transport, now=now, to_tag=to_tag
        ).response

    def process(
        self,
        request: Request,
        *,
        user: str,
        source: tuple[str, int],
        transport: str,
        now: float,
        to_tag: str | None = None,
    ) -> RegisterOutcome:
        """Like :meth:`handle`, also saying which bindings came and went."""
        tag = to_tag or secrets.token_hex(6)
        if request.method.upper() != "REGISTER":
            resp = make_response(request, 405, to_tag=tag, headers=(("Allow", "REGISTER"),))
            return RegisterOutcome(resp, None)
        try:
            return self._process(request, user, source, transport.lower(), now, tag)
        except _Refusal as refusal:
            resp = make_response(
                request, refusal.status, refusal.reason, to_tag=tag, headers=refusal.headers
            )
            return RegisterOutcome(resp, None)
        except ParseError as exc:
            resp = make_response(
                request, exc.status, exc.reason, to_tag=tag, headers=exc.extra_headers
            )
            return RegisterOutcome(resp, None)

    # -- the steps of RFC 3261 10.3 ----------------------------------------------------
    def _process(
        self,
        request: Request,
        user: str,
        source: tuple[str, int],
        transport: str,
        now: float,
        tag: str,
    ) -> RegisterOutcome:
        # Step 1: is the Request-URI a domain we keep bindings for?
        if not isinstance(request.uri, SipUri):
            raise _Refusal(416, f"Request-URI scheme {request.uri.scheme!r} not supported")
        self._check_domain(request.uri.host_bare)
        # Steps 2-3 (Require, authentication) happen before, in the stack.
        # Step 5: the address-of-record, from To.
        to_uri = request.to.uri
        if not isinstance(to_uri, SipUri):
            # RFC 4475 3.3.8 (unksm2): a To URI of an unknown scheme is a 400.
            raise _Refusal(400, f"To URI scheme {to_uri.scheme!r} not supported in REGISTER")
        self._check_domain(to_uri.host_bare)
        aor = to_uri.user_unescaped
        if not aor:
            raise _Refusal(404, "no user part in the To URI")
        # Step 4: may this user modify this address-of-record's bindings?
        if aor != user:
            raise _Refusal(403, f"{user!r} may not register {aor!r}")

        call_id = request.call_id
        cseq = request.cseq.number
        header_expires = _expires_header(request)
        raw_contacts = request.headers.get_all("Contact")
        existing = self.store.bindings(aor, now)

        # Step 6: Contact "*" removes everything, and only with Expires: 0.
        if any(v.strip() == "*" for v in raw_contacts):
            if len(raw_contacts) != 1 or header_expires != 0:
                raise _Refusal(400, "Contact * needs Expires: 0 and no other Contact")
            for b in existing:
                _check_order(b, call_id, cseq)
            self.store.remove_all_bindings(aor)
            resp = self._ok(request, tag, [], now)
            return RegisterOutcome(resp, aor, removed=tuple(existing))

        # Step 7: work out every change before applying any.
        planned = self._plan(
            request, aor, existing, header_expires, call_id, cseq, source, transport, now
        )
        if len(planned) > self.max_bindings_per_aor:
            raise _Refusal(403, f"more than {self.max_bindings_per_aor} contacts for {aor!r}")
        kept = {b.contact for b in planned}
        before = {b.contact: b for b in existing}
        removed = tuple(b for b in existing if b.contact not in kept)
        for b in removed:
            self.store.remove_binding(aor, b.contact)
        added: list[Binding] = []
        refreshed: list[Binding] = []
        for b in planned:
            old = before.get(b.contact)
            if old is None:
                added.append(b)
                self.store.save_binding(b)
            elif old != b:
                refreshed.append(b)
                self.store.save_binding(b)
        # Step 8: 200 with every current binding.
        resp = self._ok(request, tag, self.store.bindings(aor, now), now)
        return RegisterOutcome(resp, aor, tuple(added), tuple(refreshed), removed)

    def _plan(
        self,
        request: Request,
        aor: str,
        existing: list[Binding],
        header_expires: int | None,
        call_id: str,
        cseq: int,
        source: tuple[str, int],
        transport: str,
        now: float,
    ) -> list[Binding]:
        """The bindings the AOR will have once this request is applied."""
        working = list(existing)
        too_brief = False
        received = _hostport(source)
        user_agent = request.headers.get("User-Agent")
        for contact in request.contacts:
            uri = contact.uri
            if not isinstance(uri, SipUri):
                raise _Refusal(400, f"Contact URI scheme {uri.scheme!r} not supported")
            # The expires parameter overrides the Expires header (10.2.1.1).
            expires = _contact_expires(contact.params.get("expires"), header_expires)
            if expires is None:
                expires = self.default_expires
            if 0 < expires < self.min_expires:
                too_brief = True
                continue
            expires = min(expires, self.max_expires)
            stored = next((b for b in existing if _same_uri(b.contact, uri)), None)
            if stored is not None:
                _check_order(stored, call_id, cseq)
            working = [b for b in working if not _same_uri(b.contact, uri)]
            if expires == 0:
                continue
            working.append(
                Binding(
                    aor=aor,
                    # Keep the stored spelling of an equivalent URI, so the store's key
                    # does not change under a phone that re-cases its host.
                    contact=stored.contact if stored is not None else str(uri),
                    expires_at=now + expires,
                    received=received,
                    transport=transport,
                    call_id=call_id,
                    cseq=cseq,
                    q=_qvalue(contact.params.get("q")),
                    user_agent=user_agent,
                )
            )
        if too_brief:
            # RFC 3261 10.3 step 7 / 20.23: say the shortest interval we accept.
            raise _Refusal(423, "Interval Too Brief", (("Min-Expires", str(self.min_expires)),))
        return working

    def _check_domain(self, host: str) -> None:
        if self.domain_check is not None and not self.domain_check(host):
            raise _Refusal(404, f"domain {host!r} is not served here")

    def _ok(self, request: Request, tag: str, bindings: list[Binding], now: float) -> Response:
        headers = [("Contact", _contact_value(b, now)) for b in bindings]
        headers.append(("Date", formatdate(now, usegmt=True)))
        return make_response(request, 200, to_tag=tag, headers=headers)


def _check_order(b: Binding, call_id: str, cseq: int) -> None:
    # RFC 3261 10.3 step 7: same Call-ID with a CSeq not above the stored one means
    # this request is older than what we hold: abort the whole update.
    if b.call_id == call_id and cseq <= b.cseq:
        raise _Refusal(500, f"out-of-order REGISTER (CSeq {cseq} <= {b.cseq})")


def _ascii_int(text: str) -> int | None:
    text = text.strip()
    if not text or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def _expires_header(request: Request) -> int | None:
    value = request.headers.get("Expires")
    if value is None:
        return None
    number = _ascii_int(value)
    if number is None:
        raise _Refusal(400, f"bad Expires {value[:20]!r}")
    return number


def _contact_expires(param: str | None, header_expires: int | None) -> int | None:
    if param is None:
        return header_expires
    # RFC 3261 20.19: a malformed value is taken as 3600, i.e. our default.
    return _ascii_int(param)


def _qvalue(text: str | None) -> float | None:
    if text is None:
        return None
    if not _QVALUE.match(text):
        raise _Refusal(400, f"bad q value {text[:10]!r} in Contact")
    return float(text)


def _format_q(q: float) -> str:
    return f"{q:.3f}".rstrip("0").rstrip(".")


def _contact_value(b: Binding, now: float) -> str:
    value = f"<{b.contact}>;expires={b.expires_in(now)}"
    if b.q is not None:
        value += f";q={_format_q(b.q)}"
    return value


def _hostport(source: tuple[str, int]) -> str:
    host, port = source
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# URI parameters that, present in one URI only, make two URIs differ (RFC 3261 19.1.4).
_STRICT_PARAMS = ("user", "ttl", "method", "maddr", "transport")


def _same_uri(stored: str, uri: SipUri) -> bool:
    try:
        other = parse_uri(stored)
    except ParseError:
        return False
    return isinstance(other, SipUri) and uri_equivalent(other, uri)


def _host_key(host: str) -> str:
    bare = host.strip("[]").lower()
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        return bare


def uri_equivalent(a: SipUri, b: SipUri) -> bool:
    """SIP URI comparison per RFC 3261 19.1.4 (what "the same contact" means)."""
    if a.scheme != b.scheme or a.user_unescaped != b.user_unescaped:
        return False
    if a.password != b.password or a.port != b.port:
        return False
    if _host_key(a.host) != _host_key(b.host):
        return False
    pa = {k.lower(): (v or "").lower() for k, v in a.params.items()}
    pb = {k.lower(): (v or "").lower() for k, v in b.params.items()}
    for name in _STRICT_PARAMS:
        if pa.get(name) != pb.get(name):
            return False
    if any(pa[k] != pb[k] for k in pa.keys() & pb.keys()):
        return False
    return sorted((a.headers or "").split("&")) == sorted((b.headers or "").split("&"))

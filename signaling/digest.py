"""HTTP Digest authentication for SIP (RFC 2617, RFC 7616, RFC 8760), qop=auth only.

Design: the server keeps no per-challenge state. A nonce is
``base64(timestamp | salt | HMAC-SHA256(secret, timestamp | salt | realm))``: it proves
itself genuine and says its own age, so any node sharing ``secret`` can verify it. The
only state is the last ``nc`` seen per nonce (replay protection), in a bounded table;
when an entry has to be evicted, every untracked nonce at least as old as it is
answered "stale" from then on, so eviction can never re-open a replay.

We require qop=auth: RFC 2069 credentials (no qop) carry no cnonce or nc, so with a
stateless nonce nothing would stop a captured request from being replayed for the
nonce's whole lifetime. Every SIP phone of the last twenty years sends qop=auth when
offered it. auth-int and the ``-sess`` algorithms are not offered.

Time is the caller's ``now`` (seconds, wall clock if nonces must outlive a restart or
be shared between nodes).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .errors import SipError
from .headers import AuthHeader

# RFC 7616 3.2 / RFC 8760 2.2 names -> hashlib names. The -sess variants share the hash.
_HASHES = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}
# Client preference when a server offers several (RFC 8760 2.4: the strongest first).
_PREFERENCE = ("SHA-512-256", "SHA-256", "MD5")
_NONCE_SALT = 8
_NONCE_MAC = 32
_NONCE_LEN = 8 + _NONCE_SALT + _NONCE_MAC
# A genuine nonce from the future means the clock stepped back; tolerate a little.
_CLOCK_SKEW = 5.0


class DigestError(SipError, ValueError):
    """A challenge we cannot answer (unsupported algorithm or qop)."""


def _hash_name(algorithm: str) -> str:
    base = algorithm.upper()
    if base.endswith("-SESS"):
        base = base[:-5]
    name = _HASHES.get(base)
    if name is None:
        raise DigestError(f"unsupported digest algorithm {algorithm!r}")
    return name


def _h(hash_name: str, text: str) -> str:
    return hashlib.new(hash_name, text.encode("utf-8")).hexdigest()


def ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """H(username:realm:password) as lower-case hex: what a user database stores."""
    return _h(_hash_name(algorithm), f"{username}:{realm}:{password}")


def _response(
    algorithm: str,
    ha1_hex: str,
    *,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None,
    nc: str | None,
    cnonce: str | None,
) -> str:
    """RFC 7616 3.4.1 (RFC 2617 3.2.2.1 for no qop)."""
    name = _hash_name(algorithm)
    ha2 = _h(name, f"{method}:{uri}")
    if qop is None:
        return _h(name, f"{ha1_hex}:{nonce}:{ha2}")
    return _h(name, f"{ha1_hex}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def _canonical_algorithm(value: str | None, supported: Iterable[str]) -> str | None:
    wanted = (value or "MD5").upper()
    for name in supported:
        if name.upper() == wanted:
            return name
    return None


@dataclass(frozen=True, slots=True)
class DigestResult:
    """The outcome of checking one set of credentials."""

    ok: bool
    """The credentials are valid: the request is authenticated as ``username``."""
    username: str | None
    """The proven user name (when ``ok`` or ``stale``); None otherwise."""
    stale: bool
    """The response was right but the nonce has expired: re-challenge with stale=true
    (RFC 7616 3.3) so the client retries without asking its user again."""
    reason: str
    """What was wrong (or "ok"), for logs only, never for the wire."""


class DigestServer:
    """Challenges and verifies Digest credentials for one realm.

    ``secret`` signs the nonces; nodes sharing it accept each other's nonces.
    ``algorithms`` are offered in this order (SHA-256 first, MD5 for older phones).
    """

    def __init__(
        self,
        realm: str,
        secret: bytes,
        nonce_ttl: float = 300.0,
        algorithms: tuple[str, ...] = ("SHA-256", "MD5"),
        max_tracked_nonces: int = 10000,
        *,
        opaque: str | None = None,
        token_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        if not secret:
            raise ValueError("the nonce secret must not be empty")
        if not algorithms:
            raise ValueError("at least one algorithm is needed")
        for name in algorithms:
            if name.upper().endswith("-SESS"):
                raise ValueError(f"{name}: the -sess algorithms are not offered")
            _hash_name(name)
        if max_tracked_nonces < 1:
            raise ValueError("max_tracked_nonces must be positive")
        self.realm = realm
        self.nonce_ttl = nonce_ttl
        self.algorithms = algorithms
        self.max_tracked_nonces = max_tracked_nonces
        self.opaque = opaque
        self._secret = secret
        self._token_bytes = token_bytes
        # nonce -> (issued at, last nc), oldest first use first.
        self._nc: OrderedDict[str, tuple[float, int]] = OrderedDict()
        # Untracked nonces issued at or before this time may have been evicted.
        self._evicted_up_to = float("-inf")

    # -- nonces ------------------------------------------------------------------------
    def make_nonce(self, now: float) -> str:
        stamp = struct.pack(">d", now)
        salt = self._token_bytes(_NONCE_SALT)
        if len(salt) != _NONCE_SALT:
            raise ValueError("token_bytes returned the wrong length")
        return base64.urlsafe_b64encode(stamp + salt + self._mac(stamp + salt)).decode("ascii")

    def _mac(self, data: bytes) -> bytes:
        return hmac.new(self._secret, data + self.realm.encode("utf-8"), hashlib.sha256).digest()

    def nonce_time(self, nonce: str) -> float | None:
        """When a genuine nonce was issued; None if it is not one of ours."""
        try:
            raw = base64.urlsafe_b64decode(nonce.encode("ascii"))
        except (binascii.Error, ValueError, UnicodeEncodeError):
            return None
        # Only the canonical spelling: b64decode skips stray characters, and two
        # spellings of one nonce would get two nc counters.
        if len(raw) != _NONCE_LEN or base64.urlsafe_b64encode(raw).decode("ascii") != nonce:
            return None
        body, mac = raw[:-_NONCE_MAC], raw[-_NONCE_MAC:]
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        (issued,) = struct.unpack(">d", body[:8])
        return float(issued)

    # -- challenges --------------------------------------------------------------------
    def challenge(self, now: float, *, stale: bool = False) -> list[AuthHeader]:
        """One WWW-/Proxy-Authenticate value per algorithm, sharing one fresh nonce."""
        nonce = self.make_nonce(now)
        out: list[AuthHeader] = []
        for algorithm in self.algorithms:
            params = {"realm": self.realm, "nonce": nonce, "algorithm": algorithm, "qop": "auth"}
            if self.opaque is not None:
                params["opaque"] = self.opaque
            if stale:
                params["stale"] = "true"
            out.append(AuthHeader("Digest", params))
        return out

    # -- verification ------------------------------------------------------------------
    def verify(
        self,
        creds: AuthHeader,
        method: str,
        lookup_ha1: Callable[[str, str], str | None],
        now: float,
    ) -> DigestResult:
        """Check ``creds`` (an Authorization or Proxy-Authorization value) for a request
        of ``method``. ``lookup_ha1(username, algorithm)`` returns the stored HA1 for that
        algorithm, or None for an unknown user. The ``uri`` parameter is only required
        to be present; comparing it with the Request-URI is the SIP layer's business.
        """
        if creds.scheme.lower() != "digest":
            return _fail(f"scheme {creds.scheme!r} is not Digest")
        p = creds.params
        for name in ("username", "realm", "nonce", "uri", "response"):
            if name not in p:
                return _fail(f"missing {name} parameter")
        username = p["username"]
        if p["realm"] != self.realm:
            return _fail(f"realm {p['realm']!r} is not ours")
        algorithm = _canonical_algorithm(p.get("algorithm"), self.algorithms)
        if algorithm is None:
            return _fail(f"algorithm {p.get('algorithm')!r} not offered")
        if p.get("userhash", "false").lower() == "true":
            return _fail("userhash is not supported")
        if self.opaque is not None and p.get("opaque") != self.opaque:
            return _fail("opaque does not match")
        qop = p.get("qop")
        if qop is None:
            return _fail("qop missing (RFC 2069 credentials are refused)")
        if qop.lower() != "auth":
            return _fail(f"qop {qop!r} not offered")
        cnonce, nc_text = p.get("cnonce"), p.get("nc")
        if not cnonce or nc_text is None:
            return _fail("qop=auth without cnonce or nc")
        nc = _parse_nc(nc_text)
        if nc is None:
            return _fail(f"bad nc {nc_text[:16]!r}")
        issued = self.nonce_time(p["nonce"])
        if issued is None or issued > now + _CLOCK_SKEW:
            return _fail("nonce not issued by us")

        stored = lookup_ha1(username, algorithm)
        expected = _response(
            algorithm,
            # Unknown user: still compute, so the answer takes the same time.
            stored if stored is not None else "0" * 64,
            nonce=p["nonce"],
            method=method,
            uri=p["uri"],
            qop=qop.lower(),
            nc=nc_text,
            cnonce=cnonce,
        )
        right = hmac.compare_digest(expected.encode(), p["response"].lower().encode("utf-8"))
        if stored is None:
            return _fail(f"unknown user {username!r}")
        if not right:
            return _fail(f"wrong response for {username!r}")
        if now - issued > self.nonce_ttl:
            return DigestResult(False, username, True, "nonce expired")
        return self._check_nc(p["nonce"], issued, nc, username, now)

    def _check_nc(
        self, nonce: str, issued: float, nc: int, username: str, now: float
    ) -> DigestResult:
        entry = self._nc.get(nonce)
        if entry is None:
            if issued <= self._evicted_up_to:
                # It may have been used and forgotten: make the client take a new one.
                return DigestResult(False, username, True, "nonce state evicted")
            self._prune(now)
        elif nc <= entry[1]:
            return _fail(f"nc {nc} replayed (last {entry[1]}) for {username!r}")
        self._nc[nonce] = (issued, nc)
        return DigestResult(True, username, False, "ok")

    def _prune(self, now: float) -> None:
        """Make room for one more nonce: drop expired ones, then the oldest used."""
        for nonce in [n for n, (t, _) in self._nc.items() if now - t > self.nonce_ttl]:
            del self._nc[nonce]  # expired nonces are refused anyway, no watermark needed
        while len(self._nc) >= self.max_tracked_nonces:
            _, (issued, _) = self._nc.popitem(last=False)
            self._evicted_up_to = max(self._evicted_up_to, issued)

    @property
    def tracked_nonces(self) -> int:
        return len(self._nc)


def _fail(reason: str) -> DigestResult:
    return DigestResult(False, None, False, reason)


def _parse_nc(text: str) -> int | None:
    # RFC 7616 3.4: exactly 8 hex digits.
    if len(text) != 8 or not text.isascii():
        return None
    try:
        return int(text, 16)
    except ValueError:
        return None


class DigestClient:
    """Answers Digest challenges (for registering to trunks, calling through proxies).

    Stateless: the caller supplies ``cnonce`` and ``nc`` (1 for the first use of a
    nonce, then 2, 3...), so the output is deterministic and testable.
    """

    @staticmethod
    def choose_challenge(challenges: Iterable[AuthHeader]) -> AuthHeader | None:
        """The Digest challenge to answer: the strongest algorithm we support
        (SHA-512-256, SHA-256, MD5) whose qop we can satisfy (auth, or none at all)."""
        best: AuthHeader | None = None
        best_rank = len(_PREFERENCE)
        for ch in challenges:
            if ch.scheme.lower() != "digest" or "nonce" not in ch.params:
                continue
            algorithm = ch.params.get("algorithm", "MD5").upper()
            if algorithm not in _PREFERENCE:
                continue
            qop = ch.params.get("qop")
            if qop is not None and "auth" not in _qop_options(qop):
                continue
            rank = _PREFERENCE.index(algorithm)
            if rank < best_rank:
                best, best_rank = ch, rank
        return best

    @staticmethod
    def authorize(
        challenge: AuthHeader,
        *,
        method: str,
        uri: str,
        username: str,
        password: str,
        cnonce: str,
        nc: int,
    ) -> AuthHeader:
        """The Authorization / Proxy-Authorization value answering ``challenge``."""
        if challenge.scheme.lower() != "digest":
            raise DigestError(f"cannot answer a {challenge.scheme!r} challenge")
        p = challenge.params
        realm = p.get("realm", "")
        nonce = p.get("nonce")
        if nonce is None:
            raise DigestError("challenge without a nonce")
        algorithm = p.get("algorithm", "MD5")
        name = _hash_name(algorithm)
        if not 0 < nc <= 0xFFFFFFFF:
            raise ValueError(f"nc {nc} out of range")
        qop: str | None = None
        if "qop" in p:
            if "auth" not in _qop_options(p["qop"]):
                raise DigestError(f"qop {p['qop']!r} not supported (auth only)")
            qop = "auth"
        nc_text = f"{nc:08x}"
        secret = _h(name, f"{username}:{realm}:{password}")
        if algorithm.upper().endswith("-SESS"):
            secret = _h(name, f"{secret}:{nonce}:{cnonce}")
        response = _response(
            algorithm,
            secret,
            nonce=nonce,
            method=method,
            uri=uri,
            qop=qop,
            nc=nc_text,
            cnonce=cnonce,
        )
        params = {
            "username": username,
            "realm": realm,
            "nonce": nonce,
            "uri": uri,
            "response": response,
        }
        if "algorithm" in p:
            params["algorithm"] = algorithm
        if qop is not None:
            params.update({"cnonce": cnonce, "qop": qop, "nc": nc_text})
        if "opaque" in p:
            params["opaque"] = p["opaque"]
        return AuthHeader("Digest", params)


def _qop_options(value: str) -> list[str]:
    return [q.strip().lower() for q in value.split(",")]

"""Operators, their passwords, sessions and roles.

Design notes:

* **Operators** (the people at the console) are not SIP users: a name, a role and an
  argon2id hash of the password (argon2-cffi's RFC 9106 low-memory profile: 64 MiB,
  3 passes, so a stolen database is costly to crack). Hashing is CPU-heavy: the API
  runs it in a worker thread, never on the event loop that carries media.
* **Roles** are ordered: ``dispatcher`` < ``supervisor`` < ``admin``; a route names the
  least role it needs. Dispatchers run calls and read the directory; supervisors also
  edit the directory and read the audit log; admins also manage operators and users.
* **Sessions**: a login issues a random 32-byte token (base64url). The database keeps
  only its SHA-256 (256 random bits need no slow hash), who it is for, its expiry, and
  when it was revoked (logout, password change, operator removed: the rows cascade).
  A bearer token (``POST /api/auth/token``) and a page session (the ``hub_session``
  cookie, ``POST /api/auth/login``) are the same thing carried differently.
* **Failed logins** are throttled per source address: ``LoginThrottle`` blocks an
  address after ``max_failures`` failures within ``window`` seconds, for ``block_for``.
  An unknown name costs the same hash as a wrong password, so timing tells nothing.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import hashlib
import logging
import re
import secrets
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from dispatch.db import Database
from dispatch.directory import UNSET, Unset
from dispatch.errors import Conflict, InvalidInput, NotFound

from .errors import ApiError

log = logging.getLogger(__name__)

SESSION_COOKIE: Final = "hub_session"
DEFAULT_TTL_S: Final = 12 * 3600.0
"""How long a token or page session lasts: one dispatcher's shift."""
MIN_PASSWORD: Final = 8
MAX_PASSWORD: Final = 256
_NAME_RE: Final = re.compile(r"[A-Za-z0-9._~@-]{1,64}")
_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9_-]{20,128}")


class Role(enum.Enum):
    DISPATCHER = "dispatcher"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def at_least(self, other: Role) -> bool:
        return self.rank >= other.rank

    @classmethod
    def parse(cls, value: object) -> Role:
        for role in cls:
            if role.value == value:
                return role
        raise InvalidInput(f"invalid role {value!r}: one of {', '.join(ROLES)}", "invalid-role")


_RANKS: Final = {Role.DISPATCHER: 0, Role.SUPERVISOR: 1, Role.ADMIN: 2}
ROLES: Final = tuple(role.value for role in Role)


@dataclass(frozen=True, slots=True)
class Operator:
    name: str
    role: Role
    display_name: str | None
    created_at: float
    password_hash: str = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role.value, "display_name": self.display_name,
                "created_at": self.created_at}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is from: an authenticated operator and the session it came with."""

    operator: str
    role: Role
    session_id: int
    kind: str
    """How the session was issued: ``token`` or ``cookie``."""
    expires_at: float


@dataclass(frozen=True, slots=True)
class IssuedSession:
    token: str = field(repr=False)
    """The secret; shown once, stored only as a hash."""
    principal: Principal


@dataclass
class LoginThrottle:
    """Failed logins per source address; sans-I/O (time is an argument)."""

    max_failures: int = 5
    window: float = 60.0
    block_for: float = 300.0
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _blocked: dict[str, float] = field(default_factory=dict)

    def retry_after(self, source: str, now: float) -> float:
        """Seconds ``source`` must still wait (0 if it may try)."""
        until = self._blocked.get(source)
        if until is None:
            return 0.0
        if now >= until:
            del self._blocked[source]
            return 0.0
        return until - now

    def failure(self, source: str, now: float) -> bool:
        """Count a failure; True when this one got the source blocked."""
        times = self._failures.setdefault(source, deque())
        times.append(now)
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) >= self.max_failures:
            self._blocked[source] = now + self.block_for
            times.clear()
            log.warning("console: blocking logins from %s for %.0f s after %d failures",
                        source, self.block_for, self.max_failures)
            return True
        if len(self._failures) > 10_000:
            for key in [k for k, v in self._failures.items() if not v or v[-1] < now - self.window]:
                del self._failures[key]
        return False

    def success(self, source: str) -> None:
        self._failures.pop(source, None)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def validate_operator_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidInput(f"invalid operator name {name!r}: use 1-64 characters from "
                           "A-Z a-z 0-9 . _ ~ @ -", "invalid-operator-name")
    return name


def validate_password(password: object) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidInput(f"invalid password: must be {MIN_PASSWORD}-{MAX_PASSWORD} characters",
                           "invalid-password")
    return password


def _display_name(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value.strip()) > 128 or any(
            ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidInput("invalid display name: at most 128 characters without control "
                           "characters", "invalid-display-name")
    return value.strip() or None


def _operator(row: sqlite3.Row) -> Operator:
    return Operator(row["name"], Role(row["role"]), row["display_name"],
                    float(row["created_at"]), row["password_hash"])


class AuthService:
    """Operators and sessions on the hub's database."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], float] = time.time,
        hasher: PasswordHasher | None = None,
        ttl: float = DEFAULT_TTL_S,
        throttle: LoginThrottle | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self.clock = clock
        """What sessions' ``expires_at`` are measured against."""
        self.hasher = hasher or PasswordHasher()
        self.ttl = ttl
        self.throttle = throttle or LoginThrottle()
        self._dummy_hash: str | None = None
        self._revoked: list[Callable[[set[int]], None]] = []

    # -- operators ---------------------------------------------------------------------

    def hash_password(self, password: str) -> str:
        """argon2id hash of a valid password (slow: run it off the event loop)."""
        return self.hasher.hash(validate_password(password))

    def add_operator(self, name: str, role: Role | str, *, password: str | None = None,
                     password_hash: str | None = None,
                     display_name: str | None = None) -> Operator:
        """Add an operator from a password (hashed here) or an already computed hash."""
        validate_operator_name(name)
        role = role if isinstance(role, Role) else Role.parse(role)
        shown = _display_name(display_name)
        if password_hash is None:
            if password is None:
                raise InvalidInput("a password is needed", "invalid-password")
            password_hash = self.hash_password(password)
        now = self._clock()
        with self._db.transaction() as conn:
            try:
                conn.execute(
                    "INSERT INTO operators (name, display_name, role, password_hash, created_at)"
                    " VALUES (?, ?, ?, ?, ?)", (name, shown, role.value, password_hash, now))
            except sqlite3.IntegrityError:
                raise Conflict(f"operator {name!r} already exists", "operator-exists") from None
        log.info("operator %s added (%s)", name, role.value)
        return Operator(name, role, shown, now, password_hash)

    def list_operators(self) -> list[Operator]:
        return [_operator(r) for r in self._db.query("SELECT * FROM operators ORDER BY name")]

    def get_operator(self, name: str) -> Operator:
        rows = self._db.query("SELECT * FROM operators WHERE name = ?", (name,))
        if not rows:
            raise NotFound(f"no operator {name!r}", "operator-not-found")
        return _operator(rows[0])

    def update_operator(self, name: str, *, role: Role | str | None = None,
                        password_hash: str | None = None,
                        display_name: str | None | Unset = UNSET) -> Operator:
        """Change role, password (revoking every session of the operator) or display name.

        ``display_name=None`` clears it; not given leaves it alone.
        """
        revoked: set[int] = set()
        with self._db.transaction() as conn:
            if conn.execute("SELECT 1 FROM operators WHERE name = ?", (name,)).fetchone() is None:
                raise NotFound(f"no operator {name!r}", "operator-not-found")
            if role is not None:
                parsed = role if isinstance(role, Role) else Role.parse(role)
                conn.execute("UPDATE operators SET role = ? WHERE name = ?", (parsed.value, name))
            if not isinstance(display_name, Unset):
                shown = _display_name(display_name)
                conn.execute("UPDATE operators SET display_name = ? WHERE name = ?",
                             (shown, name))
            if password_hash is not None:
                conn.execute("UPDATE operators SET password_hash = ? WHERE name = ?",
                             (password_hash, name))
                revoked = self._revoke_where(conn, "operator = ?", (name,))
        self._notify(revoked)
        return self.get_operator(name)

    def remove_operator(self, name: str) -> int:
        """Remove an operator and revoke its sessions; returns how many were live."""
        with self._db.transaction() as conn:
            revoked = self._revoke_where(conn, "operator = ?", (name,))
            if conn.execute("DELETE FROM operators WHERE name = ?", (name,)).rowcount == 0:
                raise NotFound(f"no operator {name!r}", "operator-not-found")
        self._notify(revoked)
        log.info("operator %s removed (%d session(s) revoked)", name, len(revoked))
        return len(revoked)

    # -- sessions ------------------------------------------------------------------------

    async def login(self, username: object, password: object, *, source: str,
                    kind: str = "token") -> IssuedSession:
        """Check a name and password and open a session; ``ApiError`` 401 or 429 if not.

        The hash is verified in a worker thread; the database is used on the caller's.
        """
        now = self._clock()
        wait = self.throttle.retry_after(source, now)
        if wait > 0:
            raise ApiError(429, "too-many-failures",
                           f"too many failed logins from {source}: try again in {wait:.0f} s",
                           {"retry-after": str(max(1, int(wait + 0.999)))})
        if not isinstance(username, str) or not isinstance(password, str) or not password:
            raise ApiError(422, "invalid-input", "username and password must be non-empty strings")
        rows = self._db.query("SELECT * FROM operators WHERE name = ?", (username,)) \
            if _NAME_RE.fullmatch(username) else []
        operator = _operator(rows[0]) if rows else None
        stored = operator.password_hash if operator else await self._dummy()
        ok = await asyncio.to_thread(self._verify, stored, password[:MAX_PASSWORD])
        now = self._clock()
        if not ok or operator is None:
            self.throttle.failure(source, now)
            raise ApiError(401, "invalid-credentials", "unknown operator or wrong password")
        self.throttle.success(source)
        if self.hasher.check_needs_rehash(operator.password_hash):
            new_hash = await asyncio.to_thread(self.hasher.hash, password)
            with self._db.transaction() as conn:
                conn.execute("UPDATE operators SET password_hash = ? WHERE name = ?",
                             (new_hash, operator.name))
        return self.open_session(operator.name, kind=kind, source=source)

    def open_session(self, operator: str, *, kind: str = "token",
                     source: str | None = None) -> IssuedSession:
        """Issue a session for an operator (no password check: callers have done it)."""
        if kind not in ("token", "cookie"):
            raise ValueError(f"unknown session kind {kind!r}")
        record = self.get_operator(operator)
        token = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
        now = self._clock()
        expires = now + self.ttl
        with self._db.transaction() as conn:
            # Keep the table small: sessions dead for a day go.
            conn.execute("DELETE FROM sessions WHERE expires_at < ?", (now - 86400,))
            cursor = conn.execute(
                "INSERT INTO sessions (token_hash, operator, kind, source, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (token_hash(token), operator, kind, source, now, expires))
            session_id = int(cursor.lastrowid or 0)
        return IssuedSession(token, Principal(operator, record.role, session_id, kind, expires))

    def authenticate(self, token: str) -> Principal | None:
        """The live session a token belongs to, or None (unknown, expired, revoked)."""
        if not _TOKEN_RE.fullmatch(token):
            return None
        rows = self._db.query(
            "SELECT s.id, s.operator, s.kind, s.expires_at, o.role FROM sessions s"
            " JOIN operators o ON o.name = s.operator"
            " WHERE s.token_hash = ? AND s.revoked_at IS NULL AND s.expires_at > ?",
            (token_hash(token), self._clock()))
        if not rows:
            return None
        r = rows[0]
        return Principal(r["operator"], Role(r["role"]), int(r["id"]), r["kind"],
                         float(r["expires_at"]))

    def session_active(self, session_id: int) -> bool:
        return bool(self._db.query(
            "SELECT 1 FROM sessions s JOIN operators o ON o.name = s.operator"
            " WHERE s.id = ? AND s.revoked_at IS NULL AND s.expires_at > ?",
            (session_id, self._clock())))

    def revoke(self, session_id: int) -> bool:
        """Revoke one session (logout); True if it was live."""
        with self._db.transaction() as conn:
            revoked = self._revoke_where(conn, "id = ?", (session_id,))
        self._notify(revoked)
        return bool(revoked)

    def on_revoked(self, listener: Callable[[set[int]], None]) -> Callable[[], None]:
        """Call ``listener(session_ids)`` whenever sessions are revoked in this process."""
        self._revoked.append(listener)

        def unsubscribe() -> None:
            if listener in self._revoked:
                self._revoked.remove(listener)

        return unsubscribe

    def _revoke_where(self, conn: sqlite3.Connection, where: str,
                      params: tuple[object, ...]) -> set[int]:
        now = self._clock()
        ids = {int(r[0]) for r in conn.execute(
            f"SELECT id FROM sessions WHERE {where} AND revoked_at IS NULL AND expires_at > ?",
            (*params, now))}
        conn.execute(f"UPDATE sessions SET revoked_at = ? WHERE {where} AND revoked_at IS NULL",
                     (now, *params))
        return ids

    def _notify(self, revoked: set[int]) -> None:
        if not revoked:
            return
        for listener in list(self._revoked):
            try:
                listener(revoked)
            except Exception:
                log.exception("session revocation listener failed")

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return bool(self.hasher.verify(stored, password))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await asyncio.to_thread(
                self.hasher.hash, secrets.token_urlsafe(16))
        return self._dummy_hash

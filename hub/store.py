"""The hub's data layer: users, trunks, settings and the location service on SQLite.

Design notes:

* One file, ``DATA_DIR/hub.sqlite3``, in WAL mode so the running server reads while
  the ``hub`` CLI writes from another process. ``synchronous=NORMAL`` is durable
  enough under WAL (a power cut may lose the last commits, never corrupt the file).
* The connection runs in autocommit mode and every write is one explicit
  ``BEGIN IMMEDIATE`` ... ``COMMIT``: nothing is ever half-written, and a writer
  takes the write lock up front instead of failing half-way on a busy database.
* Lookups simply query SQLite (microseconds on these tables), so a running server
  sees CLI changes at once. ``changed()`` exposes ``PRAGMA data_version`` for callers
  that cache something derived (it moves when *another* connection commits).
* Time is an argument wherever expiry matters, so tests are deterministic.
* Schema changes are numbered migrations applied at open inside one transaction.
  Never edit a released migration: append a new one.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import os
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Final

DB_FILENAME: Final = "hub.sqlite3"
DEFAULT_REALM: Final = "hub"
DEFAULT_DISPATCH_NUMBER: Final = "119"
DEFAULT_TRUNK_PORT: Final = 5060

#: Transports a trunk can be reached over.
TRUNK_TRANSPORTS: Final = ("udp", "tcp", "tls")
#: Transports a REGISTER can arrive over.
BINDING_TRANSPORTS: Final = ("udp", "tcp", "tls", "ws", "wss")

# A SIP user-part token (RFC 3261 25.1 "unreserved" minus the marks that need care
# in URIs and shells); also used for trunk names.
_NAME_RE: Final = re.compile(r"[A-Za-z0-9._~-]{1,64}")
_PREFIX_RE: Final = re.compile(r"[0-9]{0,16}")
# What a dialled number may look like to be routed to a trunk.
_NUMBER_RE: Final = re.compile(r"\+?[0-9*#]{1,32}")
_HOSTNAME_RE: Final = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
# The realm goes inside a quoted-string in Digest challenges: no quote, no backslash.
_REALM_RE: Final = re.compile(r"[!#-\[\]-~]{1,128}")
_MAX_PASSWORD: Final = 256
_MAX_DISPLAY_NAME: Final = 128
_MAX_HEADER_VALUE: Final = 1024
_MAX_CSEQ: Final = 2**31 - 1


# --------------------------------------------------------------------------- errors


class StoreError(Exception):
    """Base of every error the data layer raises on purpose.

    ``error_id`` is stable (API clients and the CLI may branch on it); the message
    is for humans.
    """

    error_id: ClassVar[str] = "store-error"


class InvalidInput(StoreError):
    """A value was refused before touching the database (bad name, port, ...)."""

    error_id: ClassVar[str] = "invalid-input"


class AlreadyExists(StoreError):
    """A user or trunk of that name already exists."""

    error_id: ClassVar[str] = "already-exists"


class NotFound(StoreError):
    """No user or trunk of that name."""

    error_id: ClassVar[str] = "not-found"


class Busy(StoreError):
    """Another process held the write lock for longer than the timeout."""

    error_id: ClassVar[str] = "store-busy"


class SchemaError(StoreError):
    """The database file was written by a newer hub, or is not a hub database."""

    error_id: ClassVar[str] = "schema-error"


# -------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A SIP user (an address of record ``name@realm``)."""

    name: str
    """User part of the address of record; also the Digest username."""
    display_name: str | None
    """Human name shown to callees, if any."""
    ha1_md5: str = field(repr=False)
    """Hex ``MD5(name:realm:password)``; never logged."""
    ha1_sha256: str = field(repr=False)
    """Hex ``SHA-256(name:realm:password)``; never logged."""
    created_at: float
    """Unix time the user was added."""

    def ha1(self, algorithm: str) -> str | None:
        """The stored HA1 for a Digest ``algorithm`` (RFC 8760 names), else ``None``.

        The ``-sess`` variants start from the same HA1 (RFC 7616 3.4.2).
        """
        base = algorithm.upper().removesuffix("-SESS")
        if base == "MD5":
            return self.ha1_md5
        if base == "SHA-256":
            return self.ha1_sha256
        return None


@dataclass(frozen=True, slots=True)
class RoomRecord:
    """A conference room: callers dialling ``number`` meet in one bridge."""

    number: str
    """The number dialled to join (digits)."""
    name: str | None
    """What people call it ("指挥大厅", "Fire team 3")."""
    pin: str | None = field(repr=False)
    """Digits a caller keys in (then #) before joining; None = open room."""
    record: bool
    """Record every session of the room."""
    rate: int
    """The mix's sample rate: 8000, or 16000/48000 for wideband."""
    created_at: float


@dataclass(frozen=True, slots=True)
class TrunkRecord:
    """A SIP trunk (a PSTN provider or another PBX)."""

    name: str
    """Unique name of the trunk."""
    host: str
    """Where calls are sent: hostname or IP address (IPv6 without brackets)."""
    port: int
    """Port calls are sent to."""
    prefix: str
    """Digits a dialled number starts with to be routed here ('' = any number)."""
    strip_prefix: bool
    """Whether the prefix is removed before the number is sent to the trunk."""
    inbound_from: str | None
    """Source of calls accepted from this trunk: ``addr``, ``addr:port`` or
    ``[v6addr]:port``; ``None`` means the trunk is outbound only."""
    transport: str
    """``udp``, ``tcp`` or ``tls``."""
    created_at: float
    """Unix time the trunk was added."""


@dataclass(frozen=True, slots=True)
class BindingRecord:
    """One contact bound to an address of record (RFC 3261 10.3)."""

    aor: str
    """User name the binding belongs to."""
    contact: str
    """Contact URI, as the registrar normalised it (it is half the primary key)."""
    expires_at: float
    """Unix time the binding expires."""
    received_host: str
    """Source IP address the REGISTER came from."""
    received_port: int
    """Source port the REGISTER came from."""
    transport: str
    """Transport the REGISTER came over (udp, tcp, tls, ws, wss)."""
    call_id: str
    """Call-ID of the REGISTER that last refreshed the binding."""
    cseq: int
    """CSeq number of that REGISTER."""
    instance: str | None = None
    """``+sip.instance`` of the device (RFC 5626), if given."""
    user_agent: str | None = None
    """User-Agent header of the REGISTER, if given."""
    q: float | None = None
    """Contact preference 0..1, if given."""


# ----------------------------------------------------------------------- migrations


_ROOM_NUMBER_RE = re.compile(r"[0-9]{1,16}")
_PIN_RE = re.compile(r"[0-9]{1,12}")


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema; ``sql`` may hold several statements."""

    version: int
    description: str
    sql: str


MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        1,
        "settings, users, trunks, registrations",
        """
        CREATE TABLE settings (
            key   TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
        INSERT INTO settings (key, value) VALUES ('realm', 'hub');

        CREATE TABLE users (
            name         TEXT PRIMARY KEY,
            display_name TEXT,
            ha1_md5      TEXT NOT NULL,
            ha1_sha256   TEXT NOT NULL,
            created_at   REAL NOT NULL
        );

        CREATE TABLE trunks (
            name         TEXT PRIMARY KEY,
            host         TEXT NOT NULL,
            port         INTEGER NOT NULL DEFAULT 5060 CHECK (port BETWEEN 1 AND 65535),
            prefix       TEXT NOT NULL DEFAULT '',
            strip_prefix INTEGER NOT NULL DEFAULT 1 CHECK (strip_prefix IN (0, 1)),
            inbound_from TEXT,
            transport    TEXT NOT NULL DEFAULT 'udp'
                         CHECK (transport IN ('udp', 'tcp', 'tls')),
            created_at   REAL NOT NULL
        );
        CREATE INDEX trunks_inbound_from ON trunks (inbound_from);

        CREATE TABLE registrations (
            aor           TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
            contact       TEXT NOT NULL,
            expires_at    REAL NOT NULL,
            received_host TEXT NOT NULL,
            received_port INTEGER NOT NULL,
            transport     TEXT NOT NULL
                          CHECK (transport IN ('udp', 'tcp', 'tls', 'ws', 'wss')),
            call_id       TEXT NOT NULL,
            cseq          INTEGER NOT NULL,
            instance      TEXT,
            user_agent    TEXT,
            q             REAL,
            PRIMARY KEY (aor, contact)
        );
        CREATE INDEX registrations_expires_at ON registrations (expires_at);
        """,
    ),
    Migration(
        2,
        "conference rooms",
        """
        CREATE TABLE rooms (
            number     TEXT PRIMARY KEY,
            name       TEXT,
            pin        TEXT,
            record     INTEGER NOT NULL DEFAULT 0 CHECK (record IN (0, 1)),
            rate       INTEGER NOT NULL DEFAULT 8000 CHECK (rate IN (8000, 16000, 48000)),
            created_at REAL NOT NULL
        );
        """,
    ),
    Migration(
        3,
        "console operators, their sessions, the audit log",
        """
        CREATE TABLE operators (
            name          TEXT PRIMARY KEY,
            display_name  TEXT,
            role          TEXT NOT NULL CHECK (role IN ('dispatcher', 'supervisor', 'admin')),
            password_hash TEXT NOT NULL,
            created_at    REAL NOT NULL
        );

        -- Bearer tokens and page sessions; only SHA-256 of the random token is kept.
        CREATE TABLE sessions (
            id         INTEGER PRIMARY KEY,
            token_hash TEXT NOT NULL UNIQUE,
            operator   TEXT NOT NULL REFERENCES operators (name) ON DELETE CASCADE,
            kind       TEXT NOT NULL CHECK (kind IN ('token', 'cookie')),
            source     TEXT,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            revoked_at REAL
        );
        CREATE INDEX sessions_operator ON sessions (operator);
        CREATE INDEX sessions_expires_at ON sessions (expires_at);

        -- Append-only: no foreign key (entries outlive operators), no UPDATE, no DELETE.
        CREATE TABLE audit_log (
            id       INTEGER PRIMARY KEY AUTOINCREMENT,
            at       REAL NOT NULL,
            operator TEXT NOT NULL,
            role     TEXT,
            action   TEXT NOT NULL,
            target   TEXT,
            result   TEXT NOT NULL,
            status   INTEGER,
            source   TEXT,
            detail   TEXT
        );
        CREATE INDEX audit_log_at ON audit_log (at);
        CREATE INDEX audit_log_operator ON audit_log (operator, id);
        CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
        BEGIN
            SELECT RAISE(ABORT, 'audit_log is append-only');
        END;
        CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
        BEGIN
            SELECT RAISE(ABORT, 'audit_log is append-only');
        END;
        """,
    ),
    Migration(
        4,
        "directory: units, people, endpoints, groups",
        """
        CREATE TABLE units (
            id         INTEGER PRIMARY KEY,
            name       TEXT NOT NULL,
            parent_id  INTEGER REFERENCES units (id) ON DELETE RESTRICT,
            created_at REAL NOT NULL
        );
        CREATE UNIQUE INDEX units_parent_name ON units (COALESCE(parent_id, 0), name);

        CREATE TABLE people (
            id         INTEGER PRIMARY KEY,
            name       TEXT NOT NULL,
            kind       TEXT NOT NULL DEFAULT 'person' CHECK (kind IN ('person', 'device')),
            title      TEXT,
            unit_id    INTEGER REFERENCES units (id) ON DELETE RESTRICT,
            created_at REAL NOT NULL
        );
        CREATE INDEX people_unit ON people (unit_id);

        -- One row per way of reaching a person, in preferred order (position).
        -- A SIP endpoint is a hub user and goes when the user is removed.
        CREATE TABLE endpoints (
            id        INTEGER PRIMARY KEY,
            person_id INTEGER NOT NULL REFERENCES people (id) ON DELETE CASCADE,
            kind      TEXT NOT NULL CHECK (kind IN ('sip', 'mobile', 'browser', 'app', 'radio')),
            address   TEXT NOT NULL,
            sip_user  TEXT REFERENCES users (name) ON DELETE CASCADE,
            position  INTEGER NOT NULL,
            label     TEXT,
            CHECK ((kind = 'sip') = (sip_user IS NOT NULL)),
            CHECK (sip_user IS NULL OR sip_user = address),
            UNIQUE (kind, address)
        );
        CREATE INDEX endpoints_person ON endpoints (person_id, position);
        CREATE INDEX endpoints_sip_user ON endpoints (sip_user);

        CREATE TABLE groups (
            id         INTEGER PRIMARY KEY,
            name       TEXT NOT NULL UNIQUE,
            kind       TEXT NOT NULL CHECK (kind IN ('fixed', 'temporary')),
            created_by TEXT,
            created_at REAL NOT NULL
        );

        CREATE TABLE group_members (
            group_id  INTEGER NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
            person_id INTEGER NOT NULL REFERENCES people (id) ON DELETE CASCADE,
            position  INTEGER NOT NULL,
            PRIMARY KEY (group_id, person_id)
        );
        CREATE INDEX group_members_person ON group_members (person_id);
        """,
    ),
)


def _statements(script: str) -> Iterator[str]:
    """Split a script into statements (``executescript`` would COMMIT first)."""
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            statement = buffer.strip()
            if statement.strip(";").strip():
                yield statement
            buffer = ""
    if buffer.strip(";").strip():
        raise ValueError(f"incomplete SQL statement: {buffer.strip()!r}")


def _rollback(conn: sqlite3.Connection) -> None:
    # Some errors (SQLITE_FULL, SQLITE_IOERR, ...) already rolled the transaction back.
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _migrate(conn: sqlite3.Connection, migrations: tuple[Migration, ...], now: float) -> int:
    """Bring the schema up to the last migration; returns the resulting version."""
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise ValueError(f"migrations out of order at version {migration.version}")
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version INTEGER PRIMARY KEY,"
            " description TEXT NOT NULL,"
            " applied_at REAL NOT NULL)"
        )
        row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
        current = int(row[0])
        if current > len(migrations):
            raise SchemaError(
                f"database schema version {current} is newer than this hub "
                f"(knows up to {len(migrations)}); upgrade the hub"
            )
        for migration in migrations[current:]:
            for statement in _statements(migration.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.description, now),
            )
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    return max(current, len(migrations))


# ----------------------------------------------------------------------- validation


def validate_name(name: str, what: str = "user name") -> str:
    """Check a user or trunk name is a SIP user-part token; returns it."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidInput(f"invalid {what} {name!r}: use 1-64 characters from A-Z a-z 0-9 . _ ~ -")
    return name


def _validate_port(port: int, what: str) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidInput(f"invalid {what} {port!r}: must be 1-65535")
    return port


def _no_controls(value: str, what: str, limit: int) -> str:
    if not value or len(value) > limit or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidInput(
            f"invalid {what}: must be 1-{limit} characters without control characters"
        )
    return value


def _normalise_ip(text: str) -> str | None:
    """Canonical text of an IP address (IPv4-mapped IPv6 becomes IPv4), else None."""
    try:
        address = ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _join_host_port(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def normalise_inbound_from(value: str) -> str:
    """Canonical form of ``addr``, ``addr:port``, ``v6addr`` or ``[v6addr]:port``."""
    text = value.strip()
    port: int | None = None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise InvalidInput(f"invalid inbound-from {value!r}: expected [v6addr]:port")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, None
    if port_text is not None:
        if not port_text.isdigit():
            raise InvalidInput(f"invalid inbound-from {value!r}: bad port {port_text!r}")
        port = _validate_port(int(port_text), "inbound-from port")
    ip = _normalise_ip(host)
    if ip is None:
        raise InvalidInput(
            f"invalid inbound-from {value!r}: must be an IP address, optionally with :port"
        )
    return ip if port is None else _join_host_port(ip, port)


def _normalise_host(host: str) -> str:
    text = host.strip()
    ip = _normalise_ip(text)
    if ip is not None:
        return ip
    if _HOSTNAME_RE.fullmatch(text) and not text.startswith("["):
        return text.lower()
    raise InvalidInput(f"invalid trunk host {host!r}: must be a hostname or an IP address")


def ha1(algorithm: str, name: str, realm: str, password: str) -> str:
    """Digest HA1 = H(name:realm:password) for ``MD5`` or ``SHA-256`` (RFC 7616 3.4.2)."""
    data = f"{name}:{realm}:{password}".encode()
    if algorithm == "MD5":
        return hashlib.md5(data, usedforsecurity=False).hexdigest()
    if algorithm == "SHA-256":
        return hashlib.sha256(data).hexdigest()
    raise ValueError(f"unsupported digest algorithm {algorithm!r}")


# ---------------------------------------------------------------------------- store


class Store:
    """The hub's data on one SQLite connection. Not thread-safe: one per thread/process.

    Use ``Store.open(data_dir)``, and ``close()`` it (or use it as a context manager).
    """

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        """Wrap an already-configured and migrated connection; prefer ``Store.open``."""
        self._conn = conn
        self.path = path
        self._data_version = self._read_data_version()

    # -- lifecycle

    @classmethod
    def open(cls, data_dir: str | os.PathLike[str], *, timeout: float = 5.0) -> Store:
        """Open (creating if needed) ``data_dir/hub.sqlite3`` and migrate it.

        ``timeout`` is how long a write waits for another process's write lock.
        """
        directory = Path(data_dir)
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create data directory {directory}: {exc}") from exc
        path = directory / DB_FILENAME
        try:
            # The file holds password hashes: owner only (SQLite gives the -wal and
            # -shm files the same mode). O_CREAT leaves an existing file's mode alone.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            # check_same_thread=False: the connection may be handed to another thread
            # (starlette's test client runs the app in its own), never used by two at once.
            conn = sqlite3.connect(path, timeout=timeout, isolation_level=None,
                                   check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open {path}: {exc}") from exc
        try:
            conn.row_factory = sqlite3.Row
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"cannot put {path} in WAL mode (got {mode!r})")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            _migrate(conn, MIGRATIONS, time.time())
        except sqlite3.OperationalError as exc:
            conn.close()
            raise Busy(f"cannot open {path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise SchemaError(f"{path} is not a usable hub database: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return cls(conn, path)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        """Version of the last migration applied to this database."""
        row = self._conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0])

    # -- plumbing

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it commits, or none of it."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise Busy(f"database {self.path} is busy: {exc}") from exc
        try:
            yield self._conn
            self._conn.execute("COMMIT")
        except BaseException:
            _rollback(self._conn)
            raise

    def _read_data_version(self) -> int:
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    # -- for feature code above hub/ (dispatch/, console/): its tables' SQL lives with
    #    the feature, the schema here in MIGRATIONS.

    def query(
        self, sql: str, params: Sequence[object] | Mapping[str, object] = ()
    ) -> list[sqlite3.Row]:
        """The rows of one read statement."""
        return self._conn.execute(sql, params).fetchall()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``); ``Busy`` if locked."""
        with self._write() as conn:
            yield conn

    def changed(self) -> bool:
        """True if another connection committed since the last call (or since open).

        Commits made through this ``Store`` do not count: the caller knows of them.
        """
        current = self._read_data_version()
        if current == self._data_version:
            return False
        self._data_version = current
        return True

    # -- settings

    @property
    def realm(self) -> str:
        """The Digest realm of every user's HA1 (setting ``realm``, default "hub")."""
        row = self._conn.execute("SELECT value FROM settings WHERE key = 'realm'").fetchone()
        return DEFAULT_REALM if row is None else str(row[0])

    def set_realm(self, realm: str) -> None:
        """Change the realm; refused while users exist (their HA1s would all go stale)."""
        if not _REALM_RE.fullmatch(realm):
            raise InvalidInput(
                f"invalid realm {realm!r}: 1-128 printable ASCII characters, no quote or backslash"
            )
        with self._write() as conn:
            count = conn.execute("SELECT COUNT(*) FROM users").fetchone()[0]
            if count and realm != self.realm:
                raise InvalidInput(
                    f"cannot change the realm while {count} user(s) exist: "
                    "their password hashes include the realm"
                )
            conn.execute(
                "INSERT INTO settings (key, value) VALUES ('realm', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (realm,),
            )

    @property
    def dispatch_number(self) -> str:
        """The number callers dial to queue for the dispatchers (setting ``dispatch_number``,
        default "119")."""
        row = self._conn.execute(
            "SELECT value FROM settings WHERE key = 'dispatch_number'").fetchone()
        return DEFAULT_DISPATCH_NUMBER if row is None else str(row[0])

    def set_dispatch_number(self, number: str) -> None:
        """Change the dispatch number: 1-16 digits, not a user's name nor a room's number."""
        if not _ROOM_NUMBER_RE.fullmatch(number):
            raise InvalidInput(f"invalid dispatch number {number!r}: must be 1-16 digits")
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM users WHERE name = ?", (number,)).fetchone():
                raise AlreadyExists(f"{number!r} is already a user's number")
            if conn.execute("SELECT 1 FROM rooms WHERE number = ?", (number,)).fetchone():
                raise AlreadyExists(f"{number!r} is already a conference room's number")
            conn.execute(
                "INSERT INTO settings (key, value) VALUES ('dispatch_number', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (number,),
            )

    # -- users

    def add_user(
        self,
        name: str,
        password: str,
        display_name: str | None = None,
        *,
        now: float | None = None,
    ) -> UserRecord:
        """Add a user; stores only the Digest HA1s of the password, never the password."""
        validate_name(name)
        if not isinstance(password, str) or not 1 <= len(password) <= _MAX_PASSWORD:
            raise InvalidInput(f"invalid password: must be 1-{_MAX_PASSWORD} characters")
        if display_name is not None:
            display_name = display_name.strip()
            _no_controls(display_name, "display name", _MAX_DISPLAY_NAME)
        created_at = time.time() if now is None else now
        with self._write() as conn:
            realm = self.realm
            record = UserRecord(
                name=name,
                display_name=display_name,
                ha1_md5=ha1("MD5", name, realm, password),
                ha1_sha256=ha1("SHA-256", name, realm, password),
                created_at=created_at,
            )
            if conn.execute("SELECT 1 FROM rooms WHERE number = ?", (name,)).fetchone():
                raise AlreadyExists(f"{name!r} is already a conference room's number")
            if name == self.dispatch_number:
                raise AlreadyExists(f"{name!r} is the dispatch number")
            try:
                conn.execute(
                    "INSERT INTO users (name, display_name, ha1_md5, ha1_sha256, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (name, display_name, record.ha1_md5, record.ha1_sha256, created_at),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"user {name!r} already exists") from None
        return record

    def get_user(self, name: str) -> UserRecord | None:
        """The user called ``name`` (case-sensitive, as SIP user parts are), or None."""
        row = self._conn.execute("SELECT * FROM users WHERE name = ?", (name,)).fetchone()
        return None if row is None else _user(row)

    def list_users(self) -> list[UserRecord]:
        """All users, by name."""
        rows = self._conn.execute("SELECT * FROM users ORDER BY name").fetchall()
        return [_user(row) for row in rows]

    def remove_user(self, name: str) -> None:
        """Remove a user and all its registrations; ``NotFound`` if there is none."""
        with self._write() as conn:
            conn.execute("DELETE FROM registrations WHERE aor = ?", (name,))
            if conn.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 0:
                raise NotFound(f"no user {name!r}")

    # -- trunks

    def add_trunk(
        self,
        name: str,
        host: str,
        *,
        port: int = DEFAULT_TRUNK_PORT,
        prefix: str = "",
        strip_prefix: bool = True,
        inbound_from: str | None = None,
        transport: str = "udp",
        now: float | None = None,
    ) -> TrunkRecord:
        """Add a trunk. ``inbound_from`` is normalised (see ``TrunkRecord``)."""
        validate_name(name, "trunk name")
        host = _normalise_host(host)
        _validate_port(port, "trunk port")
        if not _PREFIX_RE.fullmatch(prefix):
            raise InvalidInput(f"invalid prefix {prefix!r}: must be 0-16 digits")
        if transport not in TRUNK_TRANSPORTS:
            raise InvalidInput(
                f"invalid transport {transport!r}: one of {', '.join(TRUNK_TRANSPORTS)}"
            )
        inbound = None if inbound_from is None else normalise_inbound_from(inbound_from)
        record = TrunkRecord(
            name=name,
            host=host,
            port=port,
            prefix=prefix,
            strip_prefix=bool(strip_prefix),
            inbound_from=inbound,
            transport=transport,
            created_at=time.time() if now is None else now,
        )
        with self._write() as conn:
            try:
                conn.execute(
                    "INSERT INTO trunks (name, host, port, prefix, strip_prefix, inbound_from,"
                    " transport, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.name,
                        record.host,
                        record.port,
                        record.prefix,
                        int(record.strip_prefix),
                        record.inbound_from,
                        record.transport,
                        record.created_at,
                    ),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"trunk {name!r} already exists") from None
        return record

    def get_trunk(self, name: str) -> TrunkRecord | None:
        """The trunk called ``name``, or None."""
        row = self._conn.execute("SELECT * FROM trunks WHERE name = ?", (name,)).fetchone()
        return None if row is None else _trunk(row)

    def list_trunks(self) -> list[TrunkRecord]:
        """All trunks, by name."""
        rows = self._conn.execute("SELECT * FROM trunks ORDER BY name").fetchall()
        return [_trunk(row) for row in rows]

    def remove_trunk(self, name: str) -> None:
        """Remove a trunk; ``NotFound`` if there is none."""
        with self._write() as conn:
            if conn.execute("DELETE FROM trunks WHERE name = ?", (name,)).rowcount == 0:
                raise NotFound(f"no trunk {name!r}")

    # -- rooms ------------------------------------------------------------------------
    def add_room(self, number: str, *, name: str | None = None, pin: str | None = None,
                 record: bool = False, rate: int = 8000, now: float | None = None) -> RoomRecord:
        """Add a conference room; its number may not be a user's name."""
        if not _ROOM_NUMBER_RE.fullmatch(number):
            raise InvalidInput(f"invalid room number {number!r}: must be 1-16 digits")
        if pin is not None and not _PIN_RE.fullmatch(pin):
            raise InvalidInput("invalid PIN: must be 1-12 digits")
        if rate not in (8000, 16000, 48000):
            raise InvalidInput(f"invalid rate {rate}: one of 8000, 16000, 48000")
        if name is not None:
            name = _no_controls(name, "room name", 128)
        record_ = RoomRecord(number, name, pin, bool(record), rate,
                             time.time() if now is None else now)
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM users WHERE name = ?", (number,)).fetchone():
                raise AlreadyExists(f"{number!r} is already a user's number")
            if number == self.dispatch_number:
                raise AlreadyExists(f"{number!r} is the dispatch number")
            try:
                conn.execute(
                    "INSERT INTO rooms (number, name, pin, record, rate, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (number, name, pin, int(record_.record), rate, record_.created_at))
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"room {number!r} already exists") from None
        return record_

    def get_room(self, number: str) -> RoomRecord | None:
        row = self._conn.execute("SELECT * FROM rooms WHERE number = ?", (number,)).fetchone()
        return None if row is None else _room(row)

    def list_rooms(self) -> list[RoomRecord]:
        rows = self._conn.execute("SELECT * FROM rooms ORDER BY number").fetchall()
        return [_room(row) for row in rows]

    def remove_room(self, number: str) -> None:
        with self._write() as conn:
            if conn.execute("DELETE FROM rooms WHERE number = ?", (number,)).rowcount == 0:
                raise NotFound(f"no room {number!r}")

    def trunk_for_number(self, number: str) -> tuple[TrunkRecord, str] | None:
        """The trunk a dialled number routes to, and the number to send it.

        The longest matching prefix wins (ties: first trunk by name). A trunk that
        strips its prefix only matches if digits remain after stripping. Numbers are
        ``+``? then 1-32 of ``0-9 * #``; anything else (a user name) routes nowhere.
        """
        if not _NUMBER_RE.fullmatch(number):
            return None
        row = self._conn.execute(
            "SELECT * FROM trunks"
            " WHERE substr(:n, 1, length(prefix)) = prefix"
            " AND (strip_prefix = 0 OR length(:n) > length(prefix))"
            " ORDER BY length(prefix) DESC, name LIMIT 1",
            {"n": number},
        ).fetchone()
        if row is None:
            return None
        trunk = _trunk(row)
        dialled = number[len(trunk.prefix) :] if trunk.strip_prefix else number
        return trunk, dialled

    def trunk_for_source(self, ip: str, port: int) -> TrunkRecord | None:
        """The trunk whose ``inbound_from`` matches a request's source address.

        An ``addr:port`` entry beats an ``addr`` entry (which matches any port); ties
        go to the first trunk by name. IPv4-mapped IPv6 sources match IPv4 entries.
        """
        address = _normalise_ip(ip)
        if address is None:
            return None
        row = self._conn.execute(
            "SELECT * FROM trunks WHERE inbound_from IN (:exact, :any)"
            " ORDER BY inbound_from = :exact DESC, name LIMIT 1",
            {"exact": _join_host_port(address, port), "any": address},
        ).fetchone()
        return None if row is None else _trunk(row)

    # -- location service (RFC 3261 10.3)

    def save_binding(self, binding: BindingRecord) -> None:
        """Insert or refresh one binding; ``NotFound`` if the user does not exist."""
        self.update_bindings(binding.aor, save=(binding,))

    def update_bindings(
        self,
        aor: str,
        *,
        save: Iterable[BindingRecord] = (),
        remove: Iterable[str] = (),
    ) -> None:
        """Apply one REGISTER's changes to an AOR atomically (RFC 3261 10.3 step 8).

        ``save`` bindings are inserted or replaced, then ``remove`` contacts deleted.
        """
        to_save = list(save)
        to_remove = list(remove)
        for binding in to_save:
            _validate_binding(binding, aor)
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM users WHERE name = ?", (aor,)).fetchone() is None:
                raise NotFound(f"no user {aor!r}")
            conn.executemany(
                "INSERT OR REPLACE INTO registrations (aor, contact, expires_at, received_host,"
                " received_port, transport, call_id, cseq, instance, user_agent, q)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        b.aor,
                        b.contact,
                        b.expires_at,
                        b.received_host,
                        b.received_port,
                        b.transport,
                        b.call_id,
                        b.cseq,
                        b.instance,
                        b.user_agent,
                        b.q,
                    )
                    for b in to_save
                ],
            )
            conn.executemany(
                "DELETE FROM registrations WHERE aor = ? AND contact = ?",
                [(aor, contact) for contact in to_remove],
            )

    def remove_binding(self, aor: str, contact: str) -> bool:
        """Remove one binding; True if it existed."""
        with self._write() as conn:
            cursor = conn.execute(
                "DELETE FROM registrations WHERE aor = ? AND contact = ?", (aor, contact)
            )
            return cursor.rowcount > 0

    def remove_all_bindings(self, aor: str) -> int:
        """Remove every binding of an AOR (``Contact: *``); returns how many."""
        with self._write() as conn:
            return conn.execute("DELETE FROM registrations WHERE aor = ?", (aor,)).rowcount

    def bindings(self, aor: str, now: float) -> list[BindingRecord]:
        """Unexpired bindings of an AOR, most preferred first (q, then latest expiry)."""
        rows = self._conn.execute(
            "SELECT * FROM registrations WHERE aor = ? AND expires_at > ?"
            " ORDER BY COALESCE(q, 1.0) DESC, expires_at DESC, contact",
            (aor, now),
        ).fetchall()
        return [_binding(row) for row in rows]

    def count_bindings(self, now: float, aor: str | None = None) -> int:
        """Number of unexpired bindings, of one AOR or of everyone."""
        if aor is None:
            row = self._conn.execute(
                "SELECT COUNT(*) FROM registrations WHERE expires_at > ?", (now,)
            ).fetchone()
        else:
            row = self._conn.execute(
                "SELECT COUNT(*) FROM registrations WHERE aor = ? AND expires_at > ?",
                (aor, now),
            ).fetchone()
        return int(row[0])

    def purge_expired(self, now: float) -> int:
        """Delete bindings that expired at or before ``now``; returns how many."""
        with self._write() as conn:
            return conn.execute("DELETE FROM registrations WHERE expires_at <= ?", (now,)).rowcount


# -------------------------------------------------------------------- row mapping


def _user(row: sqlite3.Row) -> UserRecord:
    return UserRecord(
        name=row["name"],
        display_name=row["display_name"],
        ha1_md5=row["ha1_md5"],
        ha1_sha256=row["ha1_sha256"],
        created_at=float(row["created_at"]),
    )


def _room(row: sqlite3.Row) -> RoomRecord:
    return RoomRecord(row["number"], row["name"], row["pin"], bool(row["record"]), row["rate"],
                      row["created_at"])


def _trunk(row: sqlite3.Row) -> TrunkRecord:
    return TrunkRecord(
        name=row["name"],
        host=row["host"],
        port=int(row["port"]),
        prefix=row["prefix"],
        strip_prefix=bool(row["strip_prefix"]),
        inbound_from=row["inbound_from"],
        transport=row["transport"],
        created_at=float(row["created_at"]),
    )


def _binding(row: sqlite3.Row) -> BindingRecord:
    return BindingRecord(
        aor=row["aor"],
        contact=row["contact"],
        expires_at=float(row["expires_at"]),
        received_host=row["received_host"],
        received_port=int(row["received_port"]),
        transport=row["transport"],
        call_id=row["call_id"],
        cseq=int(row["cseq"]),
        instance=row["instance"],
        user_agent=row["user_agent"],
        q=None if row["q"] is None else float(row["q"]),
    )


def _validate_binding(binding: BindingRecord, aor: str) -> None:
    if binding.aor != aor:
        raise InvalidInput(f"binding for {binding.aor!r} in an update of {aor!r}")
    _no_controls(binding.contact, "contact", _MAX_HEADER_VALUE)
    _no_controls(binding.call_id, "call-id", _MAX_HEADER_VALUE)
    if binding.instance is not None:
        _no_controls(binding.instance, "instance", _MAX_HEADER_VALUE)
    if binding.user_agent is not None:
        _no_controls(binding.user_agent, "user-agent", _MAX_HEADER_VALUE)
    if _normalise_ip(binding.received_host) is None:
        raise InvalidInput(f"invalid received address {binding.received_host!r}")
    _validate_port(binding.received_port, "received port")
    if binding.transport not in BINDING_TRANSPORTS:
        raise InvalidInput(f"invalid transport {binding.transport!r}")
    if isinstance(binding.cseq, bool) or not 0 <= binding.cseq <= _MAX_CSEQ:
        raise InvalidInput(f"invalid cseq {binding.cseq!r}")
    if not math.isfinite(binding.expires_at):
        raise InvalidInput(f"invalid expiry {binding.expires_at!r}")
    if binding.q is not None and not 0.0 <= binding.q <= 1.0:
        raise InvalidInput(f"invalid q {binding.q!r}: must be 0-1")

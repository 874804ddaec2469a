"""The PostgreSQL backend of :mod:`storage.sql` (psycopg 3, synchronous).

Why it looks the way it does: the features are written and tested once, against
:class:`storage.sql.Database`, and must behave the same on the embedded SQLite file and on
a site's PostgreSQL. So this module hides PostgreSQL's differences rather than exposing
them:

* ``?`` placeholders become ``%s``; rows are ``dict``s; ``numeric`` results (``SUM`` of a
  ``BIGINT``, ``AVG``) load as ``int`` or ``float`` as on SQLite, not ``Decimal`` (which
  JSON cannot encode).
* Reads run in autocommit; ``transaction()`` is an explicit ``BEGIN``/``COMMIT``.
* SQLite undoes only the failed *statement* of a transaction, and a caller may catch the
  :class:`~storage.sql.Conflict` and go on. PostgreSQL aborts the whole transaction and
  then turns the ``COMMIT`` into a silent ``ROLLBACK``. So every statement inside a
  transaction runs under a savepoint, sent in the same pipeline (no extra round trip),
  and a failed one is rolled back to it: the transaction stays usable, as on SQLite.
* Driver errors become :class:`~storage.sql.Conflict` (integrity) or
  :class:`~storage.sql.DatabaseError`; a password never appears in a message or ``url``.
* A connection the server dropped (restart, idle kill) is reopened on the next read or
  transaction, never in the middle of one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Final, TypeVar
from urllib.parse import unquote

import psycopg
from psycopg.abc import Buffer
from psycopg.adapt import Loader
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row, tuple_row

from .sql import Conflict, Database, DatabaseError, Params, Row, Tx

T = TypeVar("T")
Connection = psycopg.Connection[Row]

#: Seconds to wait for the server when connecting, unless the URL says otherwise.
CONNECT_TIMEOUT: Final = 5
_SAVEPOINT: Final = "hub_statement"
_USERINFO = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:@/?#]*):(?P<pw>[^@/?#]*)@")
_PASSWORD_PARAM = re.compile(r"(?P<head>[?&]password=)(?P<pw>[^&#]*)")


def mask_password(url: str) -> str:
    """``url`` with its password (``user:PASSWORD@`` or ``?password=``) shown as ``***``."""
    url = _USERINFO.sub(r"\g<head>:***@", url, count=1)
    return _PASSWORD_PARAM.sub(r"\g<head>***", url)


def _passwords(url: str) -> list[str]:
    found = [m.group("pw") for m in (_USERINFO.match(url), *_PASSWORD_PARAM.finditer(url)) if m]
    # Short ones would mangle a message more than they could leak through it.
    return [p for pw in found for p in {pw, unquote(pw)} if len(p) >= 4]


def _pg_sql(sql: str) -> str:
    """The ``?``-placeholder ``sql`` in psycopg's ``%s`` style (a literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


def _message(exc: psycopg.Error) -> str:
    """The server's primary message (not its DETAIL, which quotes row values)."""
    primary = exc.diag.message_primary if isinstance(exc, psycopg.DatabaseError) else None
    return primary or " ".join(str(exc).split()) or type(exc).__name__


def _translate(exc: psycopg.Error) -> DatabaseError:
    if isinstance(exc, psycopg.IntegrityError):
        return Conflict(_message(exc))
    return DatabaseError(f"postgresql: {_message(exc)}")


def _call(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except psycopg.Error as exc:
        raise _translate(exc) from exc


class _NumberLoader(Loader):
    """``numeric`` as SQLite would give it: ``int`` when integral, else ``float``."""

    def load(self, data: Buffer) -> int | float:
        text = bytes(data)
        return int(text) if text.lstrip(b"-").isdigit() else float(text)


class _PostgresTx:
    __slots__ = ("_conn",)

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Params = ()) -> int:
        cursor = _statement(self._conn, lambda: self._conn.execute(_pg_sql(sql), tuple(params)))
        return cursor.rowcount

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        def run() -> psycopg.Cursor[Row]:
            cursor = self._conn.cursor()
            cursor.executemany(_pg_sql(sql), [tuple(row) for row in rows])
            return cursor

        _statement(self._conn, run)

    def query(self, sql: str, params: Params = ()) -> list[Row]:
        return _rows(_statement(self._conn,
                                lambda: self._conn.execute(_pg_sql(sql), tuple(params))))

    def insert(self, sql: str, params: Params = ()) -> int:
        rows = self.query(sql + " RETURNING id", params)
        return int(rows[0]["id"])


def _rows(cursor: psycopg.Cursor[Row]) -> list[Row]:
    """The cursor's rows (none for a statement that returns none, as on SQLite)."""
    return _call(cursor.fetchall) if cursor.description is not None else []


def _status(conn: Connection) -> TransactionStatus:
    return conn.info.transaction_status


def _pipeline(conn: Connection) -> AbstractContextManager[Any]:
    return conn.pipeline() if psycopg.Pipeline.is_supported() else nullcontext()


def _statement(conn: Connection, run: Callable[[], psycopg.Cursor[Row]]) -> psycopg.Cursor[Row]:
    """Run one statement of an open transaction under a savepoint; undo only it on error.

    The three commands go in one pipeline: one round trip, as for the statement alone."""
    try:
        with _pipeline(conn):
            conn.execute("SAVEPOINT " + _SAVEPOINT)
            cursor = run()
            conn.execute("RELEASE SAVEPOINT " + _SAVEPOINT)
        return cursor
    except psycopg.Error as exc:
        if not conn.closed and _status(conn) == TransactionStatus.INERROR:
            try:
                conn.execute("ROLLBACK TO SAVEPOINT " + _SAVEPOINT)
                conn.execute("RELEASE SAVEPOINT " + _SAVEPOINT)
            except psycopg.Error:
                pass  # the transaction stays aborted: its commit refuses (see transaction())
        raise _translate(exc) from exc


class PostgresDatabase(Database):
    """One psycopg connection: autocommit reads, explicit ``BEGIN``/``COMMIT`` writes."""

    dialect = "postgresql"

    def __init__(self, url: str, *, connect_timeout: int = CONNECT_TIMEOUT) -> None:
        self.url = mask_password(url)
        self._raw_url = url
        self._connect_timeout = connect_timeout
        self._closed = False
        self._conn = self._connect()

    def _connect(self) -> Connection:
        try:
            given = conninfo_to_dict(self._raw_url)
            options: dict[str, Any] = {}
            if "connect_timeout" not in given:
                options["connect_timeout"] = self._connect_timeout
            if "application_name" not in given:
                options["application_name"] = "dispatch-hub"
            conn = psycopg.connect(self._raw_url, autocommit=True, row_factory=dict_row,
                                   **options)
        except (psycopg.Error, ValueError) as exc:
            message = " ".join(str(exc).split()).replace(self._raw_url, self.url)
            for password in _passwords(self._raw_url):
                message = message.replace(password, "***")
            raise DatabaseError(f"cannot connect to {self.url}: {message}") from exc
        conn.adapters.register_loader("numeric", _NumberLoader)
        return conn

    def _connection(self) -> Connection:
        """The open connection, reopened if the server dropped it."""
        if self._closed:
            raise DatabaseError(f"{self.url}: the database was closed")
        if self._conn.closed:
            self._conn = self._connect()
        return self._conn

    def query(self, sql: str, params: Params = ()) -> list[Row]:
        conn = self._connection()
        if _status(conn) != TransactionStatus.IDLE:
            # Inside transaction(): the statement must not abort the transaction.
            return _PostgresTx(conn).query(sql, params)
        return _rows(_call(lambda: conn.execute(_pg_sql(sql), tuple(params))))

    def query_tuples(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        conn = self._connection()

        def run() -> list[tuple[Any, ...]]:
            with conn.cursor(row_factory=tuple_row) as cursor:
                cursor.execute(_pg_sql(sql), tuple(params))
                return cursor.fetchall()

        return _call(run)

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        conn = self._connection()
        if _status(conn) != TransactionStatus.IDLE:
            # SQLite refuses a nested BEGIN too: keep the backends alike.
            raise DatabaseError("cannot start a transaction within a transaction")
        _call(lambda: conn.execute("BEGIN"))
        try:
            yield _PostgresTx(conn)
        except BaseException:
            self._rollback(conn)
            raise
        if _status(conn) == TransactionStatus.INERROR:
            self._rollback(conn)
            raise DatabaseError("postgresql: transaction aborted by an earlier error; "
                                "rolled back")
        _call(lambda: conn.execute("COMMIT"))

    @staticmethod
    def _rollback(conn: Connection) -> None:
        if conn.closed or _status(conn) == TransactionStatus.IDLE:
            return
        try:
            conn.execute("ROLLBACK")
        except psycopg.Error:
            conn.close()  # in an unknown state: the next use opens a fresh one

    def close(self) -> None:
        self._closed = True
        self._conn.close()

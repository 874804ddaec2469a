"""storage.sql's contract, checked on both backends (the ``database`` fixture runs each
test on SQLite and on the private PostgreSQL server of tests/pg.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from storage.postgres import PostgresDatabase, mask_password
from storage.sql import Conflict, Database, DatabaseError, Migration, open_database
from tests.pg import PostgresServer

PEOPLE = [
    Migration(1, "people", "CREATE TABLE people (id {pk}, name TEXT NOT NULL UNIQUE,"
                           " score {float}, born {bigint})"),
    Migration(2, "pets", "CREATE TABLE pets (id {pk},"
                         " owner INTEGER NOT NULL REFERENCES people (id), name TEXT NOT NULL);"
                         " CREATE INDEX pets_owner ON pets (owner)"),
]


def _count(db: Database, table: str) -> int:
    row = db.query_one(f"SELECT COUNT(*) AS n FROM {table}")
    assert row is not None
    return int(row["n"])


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ------------------------------------------------------------------------- migrations


def test_migrations_apply_once_and_are_idempotent_on_reopen(
        database: Database, tmp_path: Path) -> None:
    assert database.migrate("people", PEOPLE, now=1000.0) == 2
    assert database.schema_version("people") == 2
    with database.transaction() as tx:
        tx.insert("INSERT INTO people (name) VALUES (?)", ("ada",))

    again = open_database(database.url, default_path=tmp_path / "unused.sqlite3")
    try:
        assert again.dialect == database.dialect
        assert again.migrate("people", PEOPLE, now=2000.0) == 2
        assert again.migrate("people", PEOPLE, now=3000.0) == 2
        rows = again.query("SELECT version, description, applied_at FROM component_schema"
                           " WHERE component = ? ORDER BY version", ("people",))
        # Recorded once each, at the first run: the re-runs applied nothing.
        assert rows == [{"version": 1, "description": "people", "applied_at": 1000.0},
                        {"version": 2, "description": "pets", "applied_at": 1000.0}]
        assert [r["name"] for r in again.query("SELECT name FROM people")] == ["ada"]

        third = [*PEOPLE, Migration(3, "nick", "ALTER TABLE people ADD COLUMN nick TEXT")]
        assert again.migrate("people", third, now=4000.0) == 3
        assert again.query("SELECT name, nick FROM people") == [{"name": "ada", "nick": None}]
        assert again.query_one("SELECT applied_at FROM component_schema WHERE version = 3") \
            == {"applied_at": 4000.0}
    finally:
        again.close()


def test_migration_versions_are_per_component(database: Database) -> None:
    assert database.migrate("people", PEOPLE) == 2
    other = [Migration(1, "things", "CREATE TABLE things (id {pk}, label TEXT)")]
    assert database.migrate("things", other) == 1
    assert database.schema_version("people") == 2
    assert database.schema_version("things") == 1
    assert database.schema_version("nobody") == 0
    # Adding a migration to one component leaves the other's version alone.
    more = [*other, Migration(2, "more", "ALTER TABLE things ADD COLUMN extra TEXT")]
    assert database.migrate("things", more) == 2
    assert database.schema_version("people") == 2


def test_a_newer_schema_is_refused(database: Database) -> None:
    database.migrate("people", PEOPLE)
    with pytest.raises(DatabaseError, match=r"schema version 2 is newer .*\(1\)"):
        database.migrate("people", PEOPLE[:1])
    assert database.schema_version("people") == 2


def test_a_failing_migration_is_not_recorded(database: Database) -> None:
    broken = [*PEOPLE, Migration(3, "broken", "ALTER TABLE nowhere ADD COLUMN x TEXT")]
    with pytest.raises(DatabaseError):
        database.migrate("people", broken)
    assert database.schema_version("people") == 2
    assert database.migrate("people", PEOPLE) == 2


def test_migrations_out_of_order_are_refused(database: Database) -> None:
    with pytest.raises(ValueError, match="out of order"):
        database.migrate("people", [PEOPLE[1]])


# ---------------------------------------------------------------------- writes, rows


def test_insert_returns_increasing_ids(database: Database) -> None:
    database.migrate("people", PEOPLE)
    with database.transaction() as tx:
        ids = [tx.insert("INSERT INTO people (name) VALUES (?)", (f"p{i}",)) for i in range(5)]
    with database.transaction() as tx:
        ids.append(tx.insert("INSERT INTO people (name) VALUES (?)", ("last",)))
    assert all(isinstance(i, int) for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == 6
    assert database.query("SELECT id FROM people WHERE name = ?", ("last",)) == [{"id": ids[-1]}]


def test_execute_returns_rowcount_and_executemany_writes_all(database: Database) -> None:
    database.migrate("people", PEOPLE)
    with database.transaction() as tx:
        tx.executemany("INSERT INTO people (name, score) VALUES (?, ?)",
                       [("a", 1.0), ("b", 2.0), ("c", 3.0)])
        assert tx.execute("UPDATE people SET score = score * 2 WHERE score >= ?", (2.0,)) == 2
        assert tx.execute("DELETE FROM people WHERE name = ?", ("nobody",)) == 0
        # Reads inside the transaction see its own writes.
        assert tx.query("SELECT name, score FROM people ORDER BY name") == [
            {"name": "a", "score": 1.0}, {"name": "b", "score": 4.0},
            {"name": "c", "score": 6.0}]


def test_rows_are_dicts_keyed_by_column(database: Database) -> None:
    database.migrate("people", PEOPLE)
    with database.transaction() as tx:
        pid = tx.insert("INSERT INTO people (name, score, born) VALUES (?, ?, ?)",
                        ("grace", 2.5, 1906))
    rows = database.query("SELECT id, name AS who, score, born FROM people")
    assert rows == [{"id": pid, "who": "grace", "score": 2.5, "born": 1906}]
    assert type(rows[0]) is dict
    assert database.query_one("SELECT name FROM people WHERE id = ?", (pid,)) == {"name": "grace"}
    assert database.query_one("SELECT name FROM people WHERE id = ?", (pid + 1,)) is None
    assert database.query("SELECT name FROM people WHERE name = ?", ("nobody",)) == []


def test_aggregates_are_plain_numbers(database: Database) -> None:
    """SUM/AVG come back as int/float on both (PostgreSQL's numeric is not a Decimal)."""
    database.migrate("people", PEOPLE)
    with database.transaction() as tx:
        tx.executemany("INSERT INTO people (name, born, score) VALUES (?, ?, ?)",
                       [("a", 2, 0.5), ("b", 3, 0.25), ("c", 4, None)])
    row = database.query_one("SELECT COUNT(*) AS n, SUM(born) AS total, AVG(born) AS mean,"
                             " SUM(score) AS scores, MAX(born) AS top FROM people")
    assert row == {"n": 3, "total": 9, "mean": 3.0, "scores": 0.75, "top": 4}
    assert [type(row[k]) for k in ("n", "total", "mean", "scores", "top")] == [
        int, int, float, float, int]
    big = database.query_one("SELECT SUM(born) AS total FROM people WHERE born > ?", (2,))
    assert big == {"total": 7} and type(big["total"]) is int


def test_float_columns_round_trip(database: Database) -> None:
    database.migrate("people", PEOPLE)
    values = [0.1, 1 / 3, -12345.678901234, 1e-300, 1.7976931348623157e308, 0.0, 1e15 + 0.5]
    with database.transaction() as tx:
        for i, value in enumerate(values):
            tx.insert("INSERT INTO people (name, score) VALUES (?, ?)", (f"f{i}", value))
    rows = database.query("SELECT score FROM people ORDER BY id")
    assert [r["score"] for r in rows] == values
    assert all(type(r["score"]) is float for r in rows)
    # A float column also stores and compares exactly through parameters.
    assert database.query("SELECT name FROM people WHERE score = ?", (1 / 3,)) == [
        {"name": "f1"}]


def test_bigint_columns_hold_64_bit_values(database: Database) -> None:
    database.migrate("people", PEOPLE)
    with database.transaction() as tx:
        tx.insert("INSERT INTO people (name, born) VALUES (?, ?)", ("big", 2**62 + 1))
    assert database.query("SELECT born FROM people") == [{"born": 2**62 + 1}]


def test_unicode_text_round_trips(database: Database) -> None:
    database.migrate("people", PEOPLE)
    names = ["调度中心", "消防队 第3分队", "Zoë ☎ 🚒", "a%b?c'd"]
    with database.transaction() as tx:
        for name in names:
            tx.insert("INSERT INTO people (name) VALUES (?)", (name,))
    assert [r["name"] for r in database.query("SELECT name FROM people ORDER BY id")] == names
    assert database.query("SELECT name FROM people WHERE name = ?", ("调度中心",)) == [
        {"name": "调度中心"}]
    assert database.query("SELECT LENGTH(name) AS n FROM people WHERE name LIKE ?",
                          ("消防%",)) == [{"n": 8}]


def test_percent_in_sql_text_is_literal(database: Database) -> None:
    database.migrate("people", PEOPLE)
    with database.transaction() as tx:
        tx.executemany("INSERT INTO people (name) VALUES (?)", [("50% off",), ("full",)])
    assert database.query("SELECT name FROM people WHERE name LIKE '%off' AND name <> ?",
                          ("x",)) == [{"name": "50% off"}]


# ----------------------------------------------------------------------- transactions


def test_exception_in_transaction_rolls_back_everything(database: Database) -> None:
    database.migrate("people", PEOPLE)

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with database.transaction() as tx:
            tx.insert("INSERT INTO people (name) VALUES (?)", ("ghost",))
            tx.execute("UPDATE people SET score = 1")
            assert tx.query("SELECT name FROM people") == [{"name": "ghost"}]
            raise Boom
    assert _count(database, "people") == 0
    # And the connection goes on normally.
    with database.transaction() as tx:
        tx.insert("INSERT INTO people (name) VALUES (?)", ("real",))
    assert database.query("SELECT name FROM people") == [{"name": "real"}]


def test_unique_violation_is_a_conflict(database: Database) -> None:
    database.migrate("people", PEOPLE)
    with database.transaction() as tx:
        tx.insert("INSERT INTO people (name) VALUES (?)", ("ada",))
    with pytest.raises(Conflict) as caught:
        with database.transaction() as tx:
            tx.insert("INSERT INTO people (name) VALUES (?)", ("bob",))
            tx.insert("INSERT INTO people (name) VALUES (?)", ("ada",))
    assert caught.value.status == 409 and caught.value.error_id == "conflict"
    assert isinstance(caught.value, DatabaseError)
    assert [r["name"] for r in database.query("SELECT name FROM people")] == ["ada"]


def test_foreign_key_violation_is_a_conflict(database: Database) -> None:
    database.migrate("people", PEOPLE)
    with database.transaction() as tx:
        owner = tx.insert("INSERT INTO people (name) VALUES (?)", ("ada",))
        tx.insert("INSERT INTO pets (owner, name) VALUES (?, ?)", (owner, "rex"))
    with pytest.raises(Conflict):
        with database.transaction() as tx:
            tx.insert("INSERT INTO pets (owner, name) VALUES (?, ?)", (owner + 99, "stray"))
    with pytest.raises(Conflict):
        with database.transaction() as tx:
            tx.execute("DELETE FROM people WHERE id = ?", (owner,))
    assert _count(database, "pets") == 1 and _count(database, "people") == 1


def test_not_null_violation_is_a_conflict(database: Database) -> None:
    database.migrate("people", PEOPLE)
    with pytest.raises(Conflict):
        with database.transaction() as tx:
            tx.execute("INSERT INTO people (name) VALUES (?)", (None,))


def test_other_failures_are_database_errors_not_conflicts(database: Database) -> None:
    with pytest.raises(DatabaseError) as caught:
        database.query("SELECT * FROM no_such_table")
    assert not isinstance(caught.value, Conflict) and caught.value.status == 503
    with pytest.raises(DatabaseError) as caught:
        with database.transaction() as tx:
            tx.execute("THIS IS NOT SQL")
    assert not isinstance(caught.value, Conflict)
    assert database.query("SELECT 1 AS one") == [{"one": 1}]


def test_connection_is_usable_after_a_failed_statement_in_a_transaction(
        database: Database) -> None:
    database.migrate("people", PEOPLE)
    with database.transaction() as tx:
        tx.insert("INSERT INTO people (name) VALUES (?)", ("ada",))
    for bad in ("INSERT INTO people (name) VALUES ('ada')", "SELECT nope FROM people"):
        with pytest.raises(DatabaseError):
            with database.transaction() as tx:
                tx.insert("INSERT INTO people (name) VALUES (?)", ("lost",))
                tx.execute(bad)
        assert database.query("SELECT name FROM people") == [{"name": "ada"}]
        with database.transaction() as tx:
            tx.execute("UPDATE people SET score = ? WHERE name = ?", (7.5, "ada"))
        assert database.query("SELECT score FROM people") == [{"score": 7.5}]


def test_a_caught_failure_undoes_only_its_statement(database: Database) -> None:
    """As on SQLite, a caller may catch a Conflict and go on: the rest commits."""
    database.migrate("people", PEOPLE)
    with database.transaction() as tx:
        tx.insert("INSERT INTO people (name) VALUES (?)", ("ada",))
    with database.transaction() as tx:
        tx.insert("INSERT INTO people (name) VALUES (?)", ("bob",))
        with pytest.raises(Conflict):
            tx.insert("INSERT INTO people (name) VALUES (?)", ("ada",))
        with pytest.raises(DatabaseError):
            tx.query("SELECT nope FROM people")
        with pytest.raises(DatabaseError):
            database.query("SELECT nope FROM people")  # on the connection, mid-transaction
        tx.insert("INSERT INTO people (name) VALUES (?)", ("cyd",))
    names = [r["name"] for r in database.query("SELECT name FROM people ORDER BY id")]
    assert names == ["ada", "bob", "cyd"]


def test_transactions_do_not_nest(database: Database) -> None:
    database.migrate("people", PEOPLE)
    with pytest.raises(DatabaseError):
        with database.transaction() as tx:
            tx.insert("INSERT INTO people (name) VALUES (?)", ("outer",))
            with database.transaction():
                pass
    assert _count(database, "people") == 0


def test_a_second_connection_sees_only_committed_writes(
        database: Database, tmp_path: Path) -> None:
    database.migrate("people", PEOPLE)
    other = open_database(database.url, default_path=tmp_path / "unused.sqlite3")
    try:
        with database.transaction() as tx:
            tx.insert("INSERT INTO people (name) VALUES (?)", ("ada",))
            assert _count(other, "people") == 0
        assert _count(other, "people") == 1
    finally:
        other.close()


# --------------------------------------------------------------------------- opening


@pytest.mark.parametrize("url", ["mysql://hub@localhost/hub", "sqlite://relative.db",
                                 "postgresql://[broken/hub", "postgresql://h:notaport/x"])
def test_open_database_refuses_bad_urls(url: str, tmp_path: Path) -> None:
    with pytest.raises(DatabaseError):
        open_database(url, default_path=tmp_path / "hub.sqlite3")


def test_open_database_defaults_to_the_sqlite_file(tmp_path: Path) -> None:
    db = open_database(None, default_path=tmp_path / "d" / "hub.sqlite3")
    try:
        assert db.dialect == "sqlite" and (tmp_path / "d" / "hub.sqlite3").exists()
    finally:
        db.close()


def test_unreachable_postgres_is_a_database_error_without_the_password() -> None:
    port = _closed_port()
    url = f"postgresql://hub:S3cret-pw@127.0.0.1:{port}/hubdb"
    with pytest.raises(DatabaseError) as caught:
        open_database(url, default_path="/nonexistent/never-used.sqlite3")
    message = str(caught.value)
    assert message.startswith(f"cannot connect to postgresql://hub:***@127.0.0.1:{port}/hubdb: ")
    assert "S3cret-pw" not in message
    assert "refused" in message.lower()
    assert not isinstance(caught.value, Conflict) and caught.value.status == 503


def test_a_password_echoed_by_the_driver_is_masked() -> None:
    # libpq quotes the whole URI when it cannot parse it.
    with pytest.raises(DatabaseError) as caught:
        PostgresDatabase("postgresql://hub:S3cret-pw@[::1/hubdb")
    assert "S3cret-pw" not in str(caught.value) and "hub:***@" in str(caught.value)


@pytest.mark.parametrize(("url", "masked"), [
    ("postgresql://u:pw@h:5/d", "postgresql://u:***@h:5/d"),
    ("postgres://u:@h/d", "postgres://u:***@h/d"),
    ("postgresql://u@h/d?sslmode=require&password=x%40y", "postgresql://u@h/d?sslmode=require"
                                                          "&password=***"),
    ("postgresql://u@h/d", "postgresql://u@h/d"),
    ("postgresql://h/d?password=pw", "postgresql://h/d?password=***"),
])
def test_mask_password(url: str, masked: str) -> None:
    assert mask_password(url) == masked


def test_postgres_reconnects_after_the_server_drops_it(postgres_server: PostgresServer) -> None:
    with postgres_server.fresh_database() as url:
        db = PostgresDatabase(url)
        admin = PostgresDatabase(url)
        try:
            db.migrate("people", PEOPLE)
            pid = db.query_one("SELECT pg_backend_pid() AS pid")
            assert pid is not None
            admin.query("SELECT pg_terminate_backend(?)", (pid["pid"],))
            with pytest.raises(DatabaseError):
                db.query("SELECT 1 AS one")  # the dropped connection fails once...
            assert db.query("SELECT 1 AS one") == [{"one": 1}]  # ...then is reopened
            with db.transaction() as tx:
                tx.insert("INSERT INTO people (name) VALUES (?)", ("ada",))
            assert _count(admin, "people") == 1
        finally:
            db.close()
            admin.close()
        with pytest.raises(DatabaseError, match="closed"):
            db.query("SELECT 1 AS one")

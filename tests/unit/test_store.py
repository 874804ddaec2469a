"""The SQLite data layer: schema, users, trunks, routing, location service."""

from __future__ import annotations

import hashlib
import sqlite3
import stat
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from hub.store import (
    DB_FILENAME,
    MIGRATIONS,
    AlreadyExists,
    BindingRecord,
    Busy,
    InvalidInput,
    Migration,
    NotFound,
    SchemaError,
    Store,
    StoreError,
    UserRecord,
    _migrate,
    normalise_inbound_from,
)

NOW = 1_700_000_000.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "data") as s:
        yield s


def binding(contact: str = "sip:alice@192.0.2.10:5060", **changes: object) -> BindingRecord:
    base = BindingRecord(
        aor="alice",
        contact=contact,
        expires_at=NOW + 3600,
        received_host="192.0.2.10",
        received_port=5060,
        transport="udp",
        call_id="call-1",
        cseq=1,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


# ------------------------------------------------------------------- schema, file


def test_open_creates_directory_and_private_wal_database(tmp_path: Path) -> None:
    data_dir = tmp_path / "a" / "b"
    with Store.open(data_dir) as store:
        assert store.path == data_dir / DB_FILENAME
        assert store.schema_version == len(MIGRATIONS)
    assert stat.S_IMODE((data_dir / DB_FILENAME).stat().st_mode) == 0o600
    conn = sqlite3.connect(data_dir / DB_FILENAME)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_connection_pragmas(store: Store) -> None:
    conn = store._conn
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_reopen_does_not_reapply_migrations(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        store.add_user("alice", "secret", now=NOW)
    with Store.open(tmp_path) as store:
        assert store.schema_version == len(MIGRATIONS)
        rows = store._conn.execute("SELECT version FROM schema_version").fetchall()
        assert [r[0] for r in rows] == [m.version for m in MIGRATIONS]
        assert store.get_user("alice") is not None
        assert store.realm == "hub"


def test_new_migration_applies_on_reopen(tmp_path: Path) -> None:
    with Store.open(tmp_path):
        pass
    conn = sqlite3.connect(tmp_path / DB_FILENAME, isolation_level=None)
    try:
        extra = Migration(
            len(MIGRATIONS) + 1, "notes", "CREATE TABLE notes (id INTEGER PRIMARY KEY);"
        )
        assert _migrate(conn, (*MIGRATIONS, extra), NOW) == extra.version
        assert _migrate(conn, (*MIGRATIONS, extra), NOW) == extra.version  # idempotent
        assert conn.execute("SELECT COUNT(*) FROM notes").fetchone()[0] == 0
    finally:
        conn.close()


def test_failed_migration_leaves_nothing_behind(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.sqlite3", isolation_level=None)
    try:
        bad = Migration(len(MIGRATIONS) + 1, "broken", "CREATE TABLE oops (x DEFAULT 'open)")
        with pytest.raises(ValueError, match="incomplete SQL"):
            _migrate(conn, (*MIGRATIONS, bad), NOW)
        bad = Migration(len(MIGRATIONS) + 1, "broken", "CREATE TABLE users (x);")
        with pytest.raises(sqlite3.OperationalError, match="already exists"):
            _migrate(conn, (*MIGRATIONS, bad), NOW)
        tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        assert tables == []
    finally:
        conn.close()


def test_database_from_a_newer_hub_is_refused(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        store._conn.execute(
            "INSERT INTO schema_version VALUES (?, 'future', 0)", (len(MIGRATIONS) + 1,)
        )
    with pytest.raises(SchemaError, match="newer than this hub"):
        Store.open(tmp_path)


def test_not_a_database_is_refused(tmp_path: Path) -> None:
    (tmp_path / DB_FILENAME).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(SchemaError, match="not a usable hub database"):
        Store.open(tmp_path)


def test_data_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot"):
        Store.open(tmp_path / "file")


def test_write_lock_held_elsewhere_raises_busy(tmp_path: Path) -> None:
    with Store.open(tmp_path) as holder, Store.open(tmp_path, timeout=0.05) as store:
        holder._conn.execute("BEGIN IMMEDIATE")
        with pytest.raises(Busy, match="busy"):
            store.add_user("alice", "pw")
        holder._conn.execute("ROLLBACK")
        store.add_user("alice", "pw")


# ------------------------------------------------------------------ change detection


def test_changed_sees_commits_of_other_connections_only(tmp_path: Path) -> None:
    with Store.open(tmp_path) as server, Store.open(tmp_path) as cli:
        assert server.changed() is False
        cli.add_user("alice", "pw")
        assert server.changed() is True
        assert server.changed() is False  # reported once
        assert server.get_user("alice") is not None  # no restart, no cache
        server.add_trunk("t", "192.0.2.1")
        assert server.changed() is False  # its own commit
        assert cli.changed() is True
        cli.remove_trunk("t")
        assert server.get_trunk("t") is None
        assert server.changed() is True


# ------------------------------------------------------------------------- users


def test_add_user_stores_digest_ha1s_only(store: Store) -> None:
    user = store.add_user("alice", "s3cret", "Alice Liddell", now=NOW)
    assert user == UserRecord(
        name="alice",
        display_name="Alice Liddell",
        ha1_md5=hashlib.md5(b"alice:hub:s3cret").hexdigest(),
        ha1_sha256=hashlib.sha256(b"alice:hub:s3cret").hexdigest(),
        created_at=NOW,
    )
    assert store.get_user("alice") == user
    assert "s3cret" not in repr(user) and user.ha1_md5 not in repr(user)
    dump = "\n".join(store._conn.iterdump())
    assert "s3cret" not in dump


def test_ha1_by_algorithm(store: Store) -> None:
    user = store.add_user("alice", "pw")
    assert user.ha1("MD5") == user.ha1("md5-sess") == user.ha1_md5
    assert user.ha1("SHA-256") == user.ha1("SHA-256-sess") == user.ha1_sha256
    assert user.ha1("SHA-512-256") is None


def test_ha1_uses_the_realm(store: Store) -> None:
    store.set_realm("example.org")
    user = store.add_user("bob", "pw")
    assert user.ha1_md5 == hashlib.md5(b"bob:example.org:pw").hexdigest()
    assert store.realm == "example.org"


def test_realm_cannot_change_under_existing_users(store: Store) -> None:
    store.add_user("alice", "pw")
    with pytest.raises(InvalidInput, match="1 user"):
        store.set_realm("other")
    store.set_realm("hub")  # unchanged: fine
    with pytest.raises(InvalidInput, match="invalid realm"):
        store.set_realm('bad"realm')


def test_list_and_remove_users(store: Store) -> None:
    store.add_user("carol", "pw", now=NOW)
    store.add_user("alice", "pw", now=NOW)
    store.add_user("Bob", "pw", now=NOW)
    assert [u.name for u in store.list_users()] == ["Bob", "alice", "carol"]
    store.remove_user("alice")
    assert store.get_user("alice") is None
    assert [u.name for u in store.list_users()] == ["Bob", "carol"]
    with pytest.raises(NotFound, match="no user 'alice'"):
        store.remove_user("alice")


def test_user_names_are_case_sensitive(store: Store) -> None:
    store.add_user("alice", "pw")
    store.add_user("Alice", "pw")
    assert store.get_user("ALICE") is None


def test_duplicate_user(store: Store) -> None:
    store.add_user("alice", "pw")
    with pytest.raises(AlreadyExists, match="user 'alice' already exists"):
        store.add_user("alice", "other")


@pytest.mark.parametrize(
    "name",
    ["", "a b", "alice@example.org", "sip:alice", "a;b", "ä", "a" * 65, "a\n", "x:y", "a/b"],
)
def test_invalid_user_names(store: Store, name: str) -> None:
    with pytest.raises(InvalidInput, match="invalid user name"):
        store.add_user(name, "pw")
    assert store.list_users() == []


@pytest.mark.parametrize("name", ["a", "alice.smith", "ALICE_1", "desk-101", "~x", "1" * 64])
def test_valid_user_names(store: Store, name: str) -> None:
    assert store.add_user(name, "pw").name == name


def test_invalid_password_and_display_name(store: Store) -> None:
    with pytest.raises(InvalidInput, match="password"):
        store.add_user("alice", "")
    with pytest.raises(InvalidInput, match="display name"):
        store.add_user("alice", "pw", "Evil\r\nVia: x")
    with pytest.raises(InvalidInput, match="display name"):
        store.add_user("alice", "pw", "   ")
    assert store.add_user("alice", "pw", "  Alice  ").display_name == "Alice"


# ------------------------------------------------------------------------ trunks


def test_add_get_list_remove_trunks(store: Store) -> None:
    trunk = store.add_trunk("pstn", "SIP.Example.COM", prefix="9", now=NOW)
    assert trunk.host == "sip.example.com"
    assert (trunk.port, trunk.transport, trunk.strip_prefix) == (5060, "udp", True)
    assert trunk.inbound_from is None
    assert store.get_trunk("pstn") == trunk
    store.add_trunk("alt", "[2001:DB8::1]", port=5080, transport="tcp", strip_prefix=False)
    assert store.get_trunk("alt") is not None
    assert store.get_trunk("alt").host == "2001:db8::1"  # type: ignore[union-attr]
    assert [t.name for t in store.list_trunks()] == ["alt", "pstn"]
    store.remove_trunk("pstn")
    assert [t.name for t in store.list_trunks()] == ["alt"]
    with pytest.raises(NotFound, match="no trunk 'pstn'"):
        store.remove_trunk("pstn")
    with pytest.raises(AlreadyExists, match="trunk 'alt'"):
        store.add_trunk("alt", "192.0.2.1")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "bad name"}, "invalid trunk name"),
        ({"host": "bad host"}, "invalid trunk host"),
        ({"host": ""}, "invalid trunk host"),
        ({"host": "-x.example"}, "invalid trunk host"),
        ({"port": 0}, "invalid trunk port"),
        ({"port": 70000}, "invalid trunk port"),
        ({"prefix": "9a"}, "invalid prefix"),
        ({"prefix": "+49"}, "invalid prefix"),
        ({"transport": "sctp"}, "invalid transport"),
        ({"inbound_from": "sip.example.com"}, "must be an IP address"),
        ({"inbound_from": "192.0.2.1:x"}, "bad port"),
        ({"inbound_from": "192.0.2.1:0"}, "port"),
        ({"inbound_from": "[2001:db8::1"}, "expected"),
    ],
)
def test_invalid_trunks(store: Store, kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"name": "t", "host": "192.0.2.1", **kwargs}
    with pytest.raises(InvalidInput, match=message):
        store.add_trunk(**args)  # type: ignore[arg-type]
    assert store.list_trunks() == []


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("192.0.2.1:5080", "192.0.2.1:5080"),
        ("2001:DB8:0::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:5080", "[2001:db8::1]:5080"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
    ],
)
def test_inbound_from_is_normalised(given: str, stored: str) -> None:
    assert normalise_inbound_from(given) == stored


def test_trunk_for_number_longest_prefix_wins_and_strips(store: Store) -> None:
    store.add_trunk("default", "192.0.2.1")
    store.add_trunk("national", "192.0.2.2", prefix="0")
    store.add_trunk("intl", "192.0.2.3", prefix="00")
    store.add_trunk("keep", "192.0.2.4", prefix="7", strip_prefix=False)

    def route(number: str) -> tuple[str, str] | None:
        found = store.trunk_for_number(number)
        return None if found is None else (found[0].name, found[1])

    assert route("0049301234") == ("intl", "49301234")
    assert route("0301234") == ("national", "301234")
    assert route("5551234") == ("default", "5551234")
    assert route("+4930123") == ("default", "+4930123")
    assert route("7123") == ("keep", "7123")
    assert route("7") == ("keep", "7")
    # Stripping "00" from "00" leaves nothing to dial: the next trunk takes it.
    assert route("00") == ("national", "0")
    assert route("alice") is None
    assert route("") is None
    assert route("12 34") is None


def test_trunk_for_number_without_default(store: Store) -> None:
    store.add_trunk("national", "192.0.2.2", prefix="0")
    assert store.trunk_for_number("123") is None
    assert store.trunk_for_number("0") is None


def test_trunk_for_number_tie_goes_to_first_name(store: Store) -> None:
    store.add_trunk("b", "192.0.2.2", prefix="9")
    store.add_trunk("a", "192.0.2.1", prefix="9")
    found = store.trunk_for_number("912")
    assert found is not None and found[0].name == "a"


def test_trunk_for_source(store: Store) -> None:
    store.add_trunk("any-port", "sip.example.com", inbound_from="192.0.2.1")
    store.add_trunk("exact", "sip.example.com", inbound_from="192.0.2.1:5080")
    store.add_trunk("v6", "sip.example.com", inbound_from="[2001:db8::1]:5060")
    store.add_trunk("outbound-only", "192.0.2.9")

    def source(ip: str, port: int) -> str | None:
        trunk = store.trunk_for_source(ip, port)
        return None if trunk is None else trunk.name

    assert source("192.0.2.1", 5060) == "any-port"
    assert source("192.0.2.1", 5080) == "exact"
    assert source("::ffff:192.0.2.1", 5080) == "exact"
    assert source("192.0.2.2", 5060) is None
    assert source("2001:db8:0::1", 5060) == "v6"
    assert source("2001:db8::1", 5061) is None
    assert source("192.0.2.9", 5060) is None  # host alone does not admit inbound calls
    assert source("not-an-ip", 5060) is None


# ---------------------------------------------------------------- location service


def test_bindings_several_contacts_and_expiry(store: Store) -> None:
    store.add_user("alice", "pw")
    store.save_binding(binding("sip:alice@desk", expires_at=NOW + 60, q=0.5))
    store.save_binding(binding("sip:alice@app", expires_at=NOW + 120))
    store.save_binding(binding("sip:alice@old", expires_at=NOW + 10, q=1.0))
    assert [b.contact for b in store.bindings("alice", NOW)] == [
        "sip:alice@app",  # no q counts as 1.0; later expiry first
        "sip:alice@old",
        "sip:alice@desk",
    ]
    assert [b.contact for b in store.bindings("alice", NOW + 10)] == [
        "sip:alice@app",
        "sip:alice@desk",
    ]
    assert store.bindings("alice", NOW + 120) == []
    assert store.count_bindings(NOW) == 3
    assert store.count_bindings(NOW + 60, "alice") == 1
    assert store.bindings("nobody", NOW) == []


def test_binding_round_trips_every_field(store: Store) -> None:
    store.add_user("alice", "pw")
    full = binding(
        instance="<urn:uuid:00000000-0000-1000-8000-000000000001>",
        user_agent="baresip v3",
        q=0.7,
        transport="wss",
        received_host="2001:db8::5",
        received_port=443,
        cseq=42,
    )
    store.save_binding(full)
    assert store.bindings("alice", NOW) == [full]


def test_refresh_replaces_binding(store: Store) -> None:
    store.add_user("alice", "pw")
    store.save_binding(binding(cseq=1))
    store.save_binding(binding(cseq=2, expires_at=NOW + 7200, received_port=5070))
    (only,) = store.bindings("alice", NOW)
    assert (only.cseq, only.expires_at, only.received_port) == (2, NOW + 7200, 5070)


def test_remove_bindings(store: Store) -> None:
    store.add_user("alice", "pw")
    for contact in ("sip:a@1", "sip:a@2", "sip:a@3"):
        store.save_binding(binding(contact))
    assert store.remove_binding("alice", "sip:a@1") is True
    assert store.remove_binding("alice", "sip:a@1") is False
    assert store.remove_all_bindings("alice") == 2
    assert store.bindings("alice", NOW) == []


def test_purge_expired(store: Store) -> None:
    store.add_user("alice", "pw")
    store.save_binding(binding("sip:a@1", expires_at=NOW))
    store.save_binding(binding("sip:a@2", expires_at=NOW + 1))
    assert store.purge_expired(NOW) == 1
    assert store.purge_expired(NOW) == 0
    assert store.count_bindings(NOW - 100) == 1


def test_removing_user_drops_its_bindings(store: Store) -> None:
    store.add_user("alice", "pw")
    store.save_binding(binding())
    store.remove_user("alice")
    store.add_user("alice", "pw")
    assert store.bindings("alice", NOW) == []


def test_binding_for_unknown_user(store: Store) -> None:
    with pytest.raises(NotFound, match="no user 'alice'"):
        store.save_binding(binding())


def test_update_bindings_is_atomic(store: Store) -> None:
    store.add_user("alice", "pw")
    store.save_binding(binding("sip:a@old"))
    with pytest.raises(InvalidInput, match="invalid q"):
        store.update_bindings(
            "alice", save=[binding("sip:a@new"), binding("sip:a@bad", q=2.0)], remove=["sip:a@old"]
        )
    assert [b.contact for b in store.bindings("alice", NOW)] == ["sip:a@old"]
    store.update_bindings("alice", save=[binding("sip:a@new")], remove=["sip:a@old"])
    assert [b.contact for b in store.bindings("alice", NOW)] == ["sip:a@new"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"aor": "bob"}, "binding for 'bob'"),
        ({"contact": ""}, "invalid contact"),
        ({"contact": "sip:a@b\r\nX: y"}, "invalid contact"),
        ({"call_id": ""}, "invalid call-id"),
        ({"received_host": "host.example"}, "invalid received address"),
        ({"received_port": 0}, "invalid received port"),
        ({"transport": "sctp"}, "invalid transport"),
        ({"cseq": -1}, "invalid cseq"),
        ({"cseq": 2**31}, "invalid cseq"),
        ({"expires_at": float("nan")}, "invalid expiry"),
        ({"q": -0.1}, "invalid q"),
    ],
)
def test_invalid_bindings(store: Store, changes: dict[str, Any], message: str) -> None:
    store.add_user("alice", "pw")
    with pytest.raises(InvalidInput, match=message):
        store.update_bindings("alice", save=[binding(**changes)])
    assert store.bindings("alice", NOW) == []


def test_migration_scripts_split_on_statement_boundaries_only() -> None:
    from hub.store import _statements

    script = """
        CREATE TABLE t (x TEXT DEFAULT 'a;b');
        CREATE TRIGGER t_ins AFTER INSERT ON t BEGIN
            UPDATE t SET x = 'c;d' WHERE rowid = new.rowid;
        END;
        -- trailing comment
    """
    statements = list(_statements(script))
    assert len(statements) == 3
    assert statements[1].startswith("CREATE TRIGGER") and statements[1].endswith("END;")

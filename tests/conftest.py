"""Shared fixtures: factories for real peers that are always stopped at teardown, and the
``database`` fixture that runs a test on SQLite and on a private PostgreSQL server."""

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from storage.postgres import PostgresDatabase
from storage.sql import Database, SqliteDatabase
from tests.peers.baresip import BaresipPhone, PhoneFactory
from tests.peers.sipp import Sipp, SippFactory
from tests.pg import PostgresServer, find_bindir


@pytest_asyncio.fixture
async def phone_factory(tmp_path: Path) -> AsyncIterator[PhoneFactory]:
    """``await phone_factory("alice", registrar=(...), password=...)`` gives a started phone.

    Options are :class:`BaresipPhone`'s; every phone is stopped when the test ends.
    """
    phones: list[BaresipPhone] = []

    async def make(username: str, **options: Any) -> BaresipPhone:
        phone = BaresipPhone(tmp_path, username, **options)
        phones.append(phone)
        await phone.start()
        return phone

    try:
        yield make
    finally:
        await asyncio.gather(*(phone.stop() for phone in phones))


@pytest_asyncio.fixture
async def sipp_factory(tmp_path: Path) -> AsyncIterator[SippFactory]:
    """``await sipp_factory("uas")`` gives a started SIPp; all are stopped when the test ends."""
    runs: list[Sipp] = []

    async def make(scenario: str | Path = "uac", **options: Any) -> Sipp:
        sipp = Sipp(tmp_path, scenario, **options)
        runs.append(sipp)
        await sipp.start()
        return sipp

    try:
        yield make
    finally:
        await asyncio.gather(*(sipp.stop() for sipp in runs if sipp.running))


# ------------------------------------------------------------------------- databases


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL server for the session (see tests/pg.py), stopped and removed
    at the end; never the cluster Debian's package may run on port 5432."""
    bindir = find_bindir()
    if bindir is None:
        reason = ("PostgreSQL server binaries not installed (no /usr/lib/postgresql/*/bin/"
                  "initdb): `make setup` installs Debian's postgresql package")
        if os.environ.get("CI"):
            pytest.fail(reason + "; CI must test the PostgreSQL backend", pytrace=False)
        pytest.skip(reason)
    server = PostgresServer(bindir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A fresh, empty :class:`storage.sql.Database`: each test using it runs twice, on a
    SQLite file in ``tmp_path`` and on a new database of the private PostgreSQL server
    (``-k sqlite`` / ``-k postgresql`` pick one; only the latter starts the server).

    It is closed (and the PostgreSQL database dropped) after the test. A second
    connection to the same database: ``open_database(database.url, default_path=...)``.
    """
    if request.param == "sqlite":
        db: Database = SqliteDatabase(tmp_path / "hub.sqlite3")
        try:
            yield db
        finally:
            db.close()
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    with server.fresh_database() as url:
        db = PostgresDatabase(url)
        try:
            yield db
        finally:
            db.close()

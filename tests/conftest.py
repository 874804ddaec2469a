"""Shared fixtures: factories for real peers that are always stopped at teardown."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio

from tests.peers.baresip import BaresipPhone, PhoneFactory
from tests.peers.sipp import Sipp, SippFactory


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

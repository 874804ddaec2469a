"""A real hub (``hub serve`` in-process, on loopback, ephemeral ports) for integration tests."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from hub.config import ServeConfig
from hub.server import Hub, start


@pytest_asyncio.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    """A started hub with users alice/bob/carol (passwords pw-alice, ...)."""
    # The hub's relay takes its own range: the peers' allocator (15000-15999) is for phones.
    config = ServeConfig(
        data_dir=tmp_path / "hubdata",
        bind="127.0.0.1",
        sip_port=0,
        http_port=0,
        rtp_ports=(20000, 24999),
    )
    running = await start(config)
    for name in ("alice", "bob", "carol", "dave", "erin"):
        running.store.add_user(name, f"pw-{name}", display_name=name.title())
    try:
        yield running
    finally:
        await running.stop()


def sip_port(hub: Hub) -> int:
    return hub.sip_addresses["udp"][1]

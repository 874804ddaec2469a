"""A real hub (``hub serve`` in-process, on loopback, ephemeral ports) for integration tests."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from hub.config import ServeConfig
from hub.server import Hub, start
from tests.peers.ports import free_port_block


@pytest_asyncio.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    """A started hub with users alice/bob/carol (passwords pw-alice, ...)."""
    block = free_port_block(200)
    config = ServeConfig(
        data_dir=tmp_path / "hubdata",
        bind="127.0.0.1",
        sip_port=0,
        http_port=0,
        rtp_ports=(block[0], block[-1]),
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

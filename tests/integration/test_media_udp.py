"""media.udp.BatchedUdpEndpoint over real loopback sockets."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from media.udp import DEFAULT_RCVBUF, Batch, BatchedUdpEndpoint, open_udp_socket

TIMEOUT = float(os.environ.get("MEDIA_TEST_TIMEOUT", "2.0"))


async def until(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.001)


@pytest.fixture
async def client() -> AsyncIterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


async def test_drains_in_batches_of_at_most_64(client: socket.socket) -> None:
    batches: list[Batch] = []
    endpoint = BatchedUdpEndpoint.bind("127.0.0.1", 0, batches.append)
    try:
        dest = endpoint.local_address
        # All 100 are queued before the loop runs the reader once.
        for i in range(100):
            client.sendto(i.to_bytes(2, "big"), dest)
        await until(lambda: endpoint.rx_packets == 100)
        assert [len(b) for b in batches] == [64, 36]
        assert endpoint.rx_batches == 2
        received = [data for batch in batches for data, _ in batch]
        assert received == [i.to_bytes(2, "big") for i in range(100)]
        assert all(addr == client.getsockname() for batch in batches for _, addr in batch)
    finally:
        endpoint.close()


async def test_empty_datagrams_are_delivered_in_order(client: socket.socket) -> None:
    # An empty datagram reads as "nothing queued" to FIONREAD; it must not be lost.
    received: list[bytes] = []
    endpoint = BatchedUdpEndpoint.bind(
        "127.0.0.1", 0, lambda batch: received.extend(d for d, _ in batch)
    )
    try:
        sent = [b"a", b"", b"b", b"", b"", b"c", b""]
        for data in sent:
            client.sendto(data, endpoint.local_address)
        await until(lambda: len(received) == len(sent))
        assert received == sent
    finally:
        endpoint.close()


async def test_max_batch_is_configurable(client: socket.socket) -> None:
    sizes: list[int] = []
    endpoint = BatchedUdpEndpoint.bind(
        "127.0.0.1", 0, lambda batch: sizes.append(len(batch)), max_batch=4
    )
    try:
        for _ in range(10):
            client.sendto(b"x", endpoint.local_address)
        await until(lambda: endpoint.rx_packets == 10)
        assert sizes == [4, 4, 2]
    finally:
        endpoint.close()


async def test_handler_exception_is_logged_and_contained(
    client: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    loop = asyncio.get_running_loop()
    escaped: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: escaped.append(context))
    seen: list[bytes] = []

    def handler(batch: Batch) -> None:
        for data, _ in batch:
            if data == b"boom":
                raise RuntimeError("handler bug")
            seen.append(data)

    endpoint = BatchedUdpEndpoint.bind("127.0.0.1", 0, handler, name="under-test")
    try:
        with caplog.at_level(logging.ERROR, logger="media.udp"):
            client.sendto(b"boom", endpoint.local_address)
            await until(lambda: endpoint.handler_errors == 1)
            client.sendto(b"after", endpoint.local_address)
            await until(lambda: seen == [b"after"])
        assert escaped == []
        [record] = [r for r in caplog.records if r.name == "media.udp"]
        assert record.getMessage() == "under-test: batch handler failed on 1 datagrams"
        assert record.exc_info is not None and record.exc_info[0] is RuntimeError
    finally:
        endpoint.close()
        loop.set_exception_handler(None)


async def test_send(client: socket.socket) -> None:
    endpoint = BatchedUdpEndpoint.bind("127.0.0.1", 0, lambda batch: None)
    try:
        assert endpoint.send(b"hello", client.getsockname())
        client.settimeout(TIMEOUT)
        data, addr = client.recvfrom(100)
        assert (data, addr) == (b"hello", endpoint.local_address)
        assert endpoint.tx_packets == 1
    finally:
        endpoint.close()


class _FullSocket(socket.socket):
    """A socket whose send buffer is always full."""

    def sendto(self, *args: Any) -> int:
        raise BlockingIOError


class _UnreachableSocket(socket.socket):
    def sendto(self, *args: Any) -> int:
        raise OSError(101, "Network is unreachable")


async def test_send_drops_when_buffer_full() -> None:
    sock = _FullSocket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    endpoint = BatchedUdpEndpoint(sock, lambda batch: None)
    try:
        assert endpoint.send(b"x", ("127.0.0.1", 9)) is False
        assert (endpoint.tx_dropped, endpoint.tx_errors, endpoint.tx_packets) == (1, 0, 0)
    finally:
        endpoint.close()


async def test_send_error_is_counted_not_raised() -> None:
    sock = _UnreachableSocket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    endpoint = BatchedUdpEndpoint(sock, lambda batch: None)
    try:
        assert endpoint.send(b"x", ("127.0.0.1", 9)) is False
        assert (endpoint.tx_dropped, endpoint.tx_errors) == (0, 1)
    finally:
        endpoint.close()


async def test_receive_buffer_is_raised() -> None:
    endpoint = BatchedUdpEndpoint.bind("127.0.0.1", 0, lambda batch: None)
    try:
        rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())
        granted = endpoint.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        # Linux reports twice what it accepted, and accepts at most rmem_max.
        assert granted >= min(DEFAULT_RCVBUF, rmem_max)
        assert granted > 212992
    finally:
        endpoint.close()


async def test_close_is_idempotent_and_frees_the_port() -> None:
    endpoint = BatchedUdpEndpoint.bind("127.0.0.1", 0, lambda batch: None)
    host, port = endpoint.local_address
    endpoint.close()
    endpoint.close()
    assert endpoint.closed
    assert endpoint.socket.fileno() == -1
    again = open_udp_socket(host, port)
    again.close()


async def test_on_batch_can_be_swapped(client: socket.socket) -> None:
    first: list[bytes] = []
    second: list[bytes] = []
    endpoint = BatchedUdpEndpoint.bind(
        "127.0.0.1", 0, lambda batch: first.extend(d for d, _ in batch)
    )
    try:
        client.sendto(b"1", endpoint.local_address)
        await until(lambda: first == [b"1"])
        endpoint.on_batch = lambda batch: second.extend(d for d, _ in batch)
        client.sendto(b"2", endpoint.local_address)
        await until(lambda: second == [b"2"])
        assert first == [b"1"]
    finally:
        endpoint.close()


async def test_rejects_zero_batch() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with pytest.raises(ValueError, match="max_batch must be at least 1, got 0"):
            BatchedUdpEndpoint(sock, lambda batch: None, max_batch=0)
    finally:
        sock.close()

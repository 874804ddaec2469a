"""media.ports.PortAllocator binding real loopback ports (range 16000-16099)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from media.errors import PortsExhausted
from media.ports import PortAllocator, PortPair


@pytest.fixture
def held() -> Iterator[list[PortPair]]:
    pairs: list[PortPair] = []
    yield pairs
    for pair in pairs:
        pair.rtp_sock.close()
        pair.rtcp_sock.close()


def squat(port: int) -> socket.socket:
    """Hold ``port`` the way another process would."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    return sock


def test_pair_is_even_rtp_and_next_rtcp(held: list[PortPair]) -> None:
    ports = PortAllocator("127.0.0.1", 16000, 16009)
    pair = ports.allocate()
    held.append(pair)
    assert pair.rtp_port % 2 == 0
    assert pair.rtcp_port == pair.rtp_port + 1
    assert pair.rtp_sock.getsockname() == ("127.0.0.1", pair.rtp_port)
    assert pair.rtcp_sock.getsockname() == ("127.0.0.1", pair.rtcp_port)
    assert not pair.rtp_sock.getblocking()
    assert ports.in_use == 1


def test_odd_lower_bound_rounds_up() -> None:
    ports = PortAllocator("127.0.0.1", 16011, 16016)
    assert ports.port_range == (16012, 16015)
    assert ports.capacity == 2


@pytest.mark.parametrize(
    ("low", "high", "message"),
    [
        (16021, 16022, "port range 16021-16022 holds no even/odd pair"),
        (16020, 16019, "invalid port range 16020-16019"),
        (0, 10, "invalid port range 0-10"),
        (65534, 65536, "invalid port range 65534-65536"),
    ],
)
def test_bad_ranges(low: int, high: int, message: str) -> None:
    with pytest.raises(ValueError) as info:
        PortAllocator("127.0.0.1", low, high)
    assert str(info.value) == message


def test_skips_ports_held_elsewhere(held: list[PortPair]) -> None:
    rtp_squatter = squat(16030)
    rtcp_squatter = squat(16033)
    try:
        ports = PortAllocator("127.0.0.1", 16030, 16039)
        pair = ports.allocate()
        held.append(pair)
        # 16030 is taken outright; 16032 is free but its RTCP port 16033 is not.
        assert pair.rtp_port == 16034
    finally:
        rtp_squatter.close()
        rtcp_squatter.close()
    # The half-bound pair was not leaked: 16032 binds again.
    squat(16032).close()


def test_exhaustion_then_release(held: list[PortPair]) -> None:
    ports = PortAllocator("127.0.0.1", 16040, 16043)
    first = ports.allocate()
    second = ports.allocate()
    assert {first.rtp_port, second.rtp_port} == {16040, 16042}
    with pytest.raises(PortsExhausted) as info:
        ports.allocate()
    assert str(info.value) == (
        "no free RTP port pair in 16040-16043 on 127.0.0.1 (2 of 2 held by this hub)"
    )
    ports.release(first)
    assert ports.in_use == 1
    third = ports.allocate()
    held.extend([second, third])
    assert third.rtp_port == 16040


def test_release_closes_and_frees_both_ports() -> None:
    ports = PortAllocator("127.0.0.1", 16050, 16059)
    pair = ports.allocate()
    ports.release(pair)
    ports.release(pair)  # idempotent
    assert ports.in_use == 0
    assert pair.rtp_sock.fileno() == -1 and pair.rtcp_sock.fileno() == -1
    squat(pair.rtp_port).close()
    squat(pair.rtcp_port).close()


def test_released_port_is_not_reused_at_once(held: list[PortPair]) -> None:
    ports = PortAllocator("127.0.0.1", 16060, 16069)
    first = ports.allocate()
    ports.release(first)
    second = ports.allocate()
    held.append(second)
    assert second.rtp_port == first.rtp_port + 2


def test_unusable_address_is_an_error_not_a_skip() -> None:
    # 192.0.2.1 (TEST-NET-1) is not configured here: EADDRNOTAVAIL must surface.
    ports = PortAllocator("192.0.2.1", 16070, 16079)
    with pytest.raises(OSError):
        ports.allocate()
    assert ports.in_use == 0

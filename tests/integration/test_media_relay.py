"""media.relay over loopback: two plain sockets act as phones (ports 16100-16399)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import uvloop

from media.errors import PortsExhausted, SessionClosed
from media.ports import PortAllocator
from media.relay import Direction, MediaRelay, RelaySession, Side
from media.rtp import build_rtp_packet

TIMEOUT = float(os.environ.get("MEDIA_TEST_TIMEOUT", "2.0"))
HOST = "127.0.0.1"


async def until(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Wait for the relay to reach a state; the deadline only catches a broken relay."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.001)


class Phone:
    """A bare UDP socket standing in for a phone's RTP (or RTCP) port."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        # Tests send hundreds of packets before reading; the default queue may not hold them.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((HOST, port))
        self.addr: tuple[str, int] = self.sock.getsockname()

    @property
    def port(self) -> int:
        return self.addr[1]

    def send(self, data: bytes, dest: tuple[str, int]) -> None:
        self.sock.sendto(data, dest)

    async def recv(self, timeout: float = TIMEOUT) -> tuple[bytes, tuple[str, int]]:
        try:
            return self.sock.recvfrom(4096)
        except BlockingIOError:
            pass
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        fd = self.sock.fileno()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(fd, wake)
        try:
            await asyncio.wait_for(ready, timeout)
        finally:
            loop.remove_reader(fd)
        return self.sock.recvfrom(4096)

    def pending(self) -> list[bytes]:
        """Whatever is queued now. Loopback delivers in sendto, so 'nothing' is final."""
        out = []
        while True:
            try:
                out.append(self.sock.recvfrom(4096)[0])
            except BlockingIOError:
                return out

    def close(self) -> None:
        self.sock.close()


def rtp(seq: int, payload: bytes = b"\xff" * 160, pt: int = 0, marker: bool = False) -> bytes:
    return build_rtp_packet(pt, seq, seq * 160, 0xABCD, payload, marker=marker)


def rtcp_rr(ssrc: int) -> bytes:
    return struct.pack("!BBHI", 0x80, 201, 1, ssrc)


@pytest.fixture
async def relay() -> AsyncIterator[MediaRelay]:
    relay = MediaRelay(PortAllocator(HOST, 16100, 16399), check_interval=None)
    yield relay
    relay.close()


@pytest.fixture
def phones() -> Iterator[Callable[[int], Phone]]:
    made: list[Phone] = []

    def make(port: int = 0) -> Phone:
        phone = Phone(port)
        made.append(phone)
        return phone

    yield make
    for phone in made:
        phone.close()


def free_pair() -> int:
    """An even port whose +1 is free too, for a phone that needs RTP and RTCP."""
    for port in range(16900, 16999, 2):
        socks = []
        try:
            for p in (port, port + 1):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((HOST, p))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return port
    raise RuntimeError("no free test port pair")


def connect(session: RelaySession, a: Phone, b: Phone) -> None:
    session.set_remote(Side.A, *a.addr)
    session.set_remote(Side.B, *b.addr)


async def test_forwards_both_ways(relay: MediaRelay, phones: Callable[[int], Phone]) -> None:
    a, b = phones(0), phones(0)
    session = relay.create_session("call-1")
    connect(session, a, b)
    to_a, to_b = session.local_address(Side.A), session.local_address(Side.B)
    assert to_a[0] == HOST and to_b[0] == HOST and to_a != to_b

    a.send(rtp(1), to_a)
    data, source = await b.recv()
    # B sees the relay's B address, the one its SDP named: symmetric RTP.
    assert (data, source) == (rtp(1), to_b)

    b.send(rtp(2, b"\x01" * 160), to_b)
    data, source = await a.recv()
    assert (data, source) == (rtp(2, b"\x01" * 160), to_a)

    stats = session.stats()
    assert (stats[Side.A].packets_in, stats[Side.A].bytes_in) == (1, 172)
    assert (stats[Side.B].packets_out, stats[Side.B].bytes_out) == (1, 172)
    assert (stats[Side.B].packets_in, stats[Side.A].packets_out) == (1, 1)
    assert stats[Side.A].dropped == stats[Side.B].dropped == 0
    assert stats[Side.A].last_rx is not None


async def test_burst_arrives_complete_and_in_order(
    relay: MediaRelay, phones: Callable[[int], Phone]
) -> None:
    a, b = phones(0), phones(0)
    session = relay.create_session()
    connect(session, a, b)
    for seq in range(500):
        a.send(rtp(seq), session.local_address(Side.A))
    received = [(await b.recv())[0] for _ in range(500)]
    assert received == [rtp(seq) for seq in range(500)]
    assert session.a.endpoints[0].rx_batches >= 500 // 64


async def test_telephone_events_pass_unchanged(
    relay: MediaRelay, phones: Callable[[int], Phone]
) -> None:
    a, b = phones(0), phones(0)
    session = relay.create_session()
    connect(session, a, b)
    # RFC 4733: digit 1, start with marker, then end packets repeated three times.
    events = [
        rtp(10, struct.pack("!BBH", 1, 10, 160), pt=101, marker=True),
        rtp(11, struct.pack("!BBH", 1, 10, 320), pt=101),
        *[rtp(12, struct.pack("!BBH", 1, 0x80 | 10, 480), pt=101)] * 3,
    ]
    for packet in events:
        a.send(packet, session.local_address(Side.A))
    assert [(await b.recv())[0] for _ in events] == events


async def test_latches_to_observed_source(
    relay: MediaRelay, phones: Callable[[int], Phone]
) -> None:
    sdp_a, nat_a, b = phones(0), phones(0), phones(0)
    session = relay.create_session()
    # Phone A's SDP names one port but its packets come from another (a NAT).
    session.set_remote(Side.A, *sdp_a.addr)
    session.set_remote(Side.B, *b.addr)
    to_a, to_b = session.local_address(Side.A), session.local_address(Side.B)

    b.send(rtp(1), to_b)
    assert (await sdp_a.recv())[0] == rtp(1)  # before latching: the SDP address

    nat_a.send(rtp(100), to_a)
    assert (await b.recv())[0] == rtp(100)
    assert session.a.latched_rtp == nat_a.addr
    assert session.a.rtp_destination == nat_a.addr

    b.send(rtp(2), to_b)
    assert (await nat_a.recv())[0] == rtp(2)  # after: the observed source
    assert sdp_a.pending() == []


async def test_foreign_source_after_latch_is_dropped(
    relay: MediaRelay, phones: Callable[[int], Phone]
) -> None:
    a, intruder, b = phones(0), phones(0), phones(0)
    session = relay.create_session()
    connect(session, a, b)
    to_a = session.local_address(Side.A)
    a.send(rtp(1), to_a)
    intruder.send(rtp(666), to_a)
    a.send(rtp(2), to_a)
    assert [(await b.recv())[0] for _ in range(2)] == [rtp(1), rtp(2)]
    await until(lambda: session.a.foreign == 1)
    assert b.pending() == []
    assert session.a.latched_rtp == a.addr


async def test_new_sdp_address_clears_latch(
    relay: MediaRelay, phones: Callable[[int], Phone]
) -> None:
    first, moved, b = phones(0), phones(0), phones(0)
    session = relay.create_session()
    connect(session, first, b)
    to_a, to_b = session.local_address(Side.A), session.local_address(Side.B)
    first.send(rtp(1), to_a)
    await b.recv()
    assert session.a.latched_rtp == first.addr

    # Same address again (a refresh re-INVITE): the latch stays.
    session.set_remote(Side.A, *first.addr)
    assert session.a.latched_rtp == first.addr

    # A re-INVITE moves phone A: send to the new SDP address, then latch anew.
    session.set_remote(Side.A, *moved.addr)
    assert session.a.latched_rtp is None
    b.send(rtp(2), to_b)
    assert (await moved.recv())[0] == rtp(2)
    moved.send(rtp(3), to_a)
    assert (await b.recv())[0] == rtp(3)
    assert session.a.latched_rtp == moved.addr
    # The old source is now foreign.
    first.send(rtp(4), to_a)
    await until(lambda: session.a.foreign == 1)


async def test_latches_without_any_sdp(relay: MediaRelay, phones: Callable[[int], Phone]) -> None:
    a, b = phones(0), phones(0)
    session = relay.create_session()
    session.set_remote(Side.A, *a.addr)
    to_a, to_b = session.local_address(Side.A), session.local_address(Side.B)
    # B's answer is not in yet: A's media has nowhere to go and is counted.
    a.send(rtp(1), to_a)
    await until(lambda: session.a.dropped == 1)
    # B sends first (early media from a phone whose SDP we lack): B is learned.
    b.send(rtp(2), to_b)
    assert (await a.recv())[0] == rtp(2)
    a.send(rtp(3), to_a)
    assert (await b.recv())[0] == rtp(3)


async def test_rtcp_is_relayed_on_the_next_port(
    relay: MediaRelay, phones: Callable[[int], Phone]
) -> None:
    port_a, port_b = free_pair(), None
    a_rtp, a_rtcp = phones(port_a), phones(port_a + 1)
    port_b = free_pair()
    b_rtp, b_rtcp = phones(port_b), phones(port_b + 1)
    session = relay.create_session()
    connect(session, a_rtp, b_rtp)
    assert session.a.rtcp_port == session.a.rtp_port + 1
    assert session.b.remote_rtcp == (HOST, port_b + 1)

    a_rtcp.send(rtcp_rr(1), (HOST, session.a.rtcp_port))
    assert await b_rtcp.recv() == (rtcp_rr(1), (HOST, session.b.rtcp_port))
    b_rtcp.send(rtcp_rr(2), (HOST, session.b.rtcp_port))
    assert await a_rtcp.recv() == (rtcp_rr(2), (HOST, session.a.rtcp_port))
    assert (session.a.rtcp_packets_in, session.b.rtcp_packets_out) == (1, 1)
    assert session.a.latched_rtcp == a_rtcp.addr
    assert b_rtp.pending() == [] and a_rtp.pending() == []
    assert session.a.packets_in == 0


async def test_rtcp_port_from_sdp_attribute(
    relay: MediaRelay, phones: Callable[[int], Phone]
) -> None:
    a, b_rtp, b_rtcp = phones(0), phones(0), phones(0)
    session = relay.create_session()
    session.set_remote(Side.A, *a.addr)
    # RFC 3605 a=rtcp: B's RTCP port is not RTP+1.
    session.set_remote(Side.B, HOST, b_rtp.port, rtcp_port=b_rtcp.port)
    a.send(rtcp_rr(7), (HOST, session.a.rtcp_port))
    assert (await b_rtcp.recv())[0] == rtcp_rr(7)


async def test_garbage_is_dropped_and_counted_without_disturbing_flow(
    relay: MediaRelay, phones: Callable[[int], Phone]
) -> None:
    a, b = phones(0), phones(0)
    session = relay.create_session()
    connect(session, a, b)
    to_a = session.local_address(Side.A)
    garbage = [
        b"",
        b"\x80",
        rtp(0)[:11],  # one byte short of a header
        b"\x40" + rtp(0)[1:],  # version 1
        b"\x00" * 172,  # version 0
        b"\x16\xfe\xfd" + b"\x00" * 40,  # a DTLS record
    ]
    sent = []
    for seq, junk in enumerate(garbage):
        a.send(junk, to_a)
        a.send(rtp(seq), to_a)
        sent.append(rtp(seq))
    assert [(await b.recv())[0] for _ in sent] == sent
    await until(lambda: session.a.invalid == len(garbage))
    assert b.pending() == []
    assert session.a.packets_in == len(sent)
    # Garbage does not latch: the phone is still the latched source.
    assert session.a.latched_rtp == a.addr

    # On the RTCP port, an RTP packet is garbage too.
    a.send(rtp(99), (HOST, session.a.rtcp_port))
    a.send(b"\x80\xc9\x00", (HOST, session.a.rtcp_port))
    await until(lambda: session.a.invalid == len(garbage) + 2)
    assert session.a.rtcp_packets_in == 0


async def test_inactive_stops_forwarding_both_ways(
    relay: MediaRelay, phones: Callable[[int], Phone]
) -> None:
    a, b = phones(0), phones(0)
    session = relay.create_session()
    connect(session, a, b)
    to_a, to_b = session.local_address(Side.A), session.local_address(Side.B)
    a.send(rtp(1), to_a)
    await b.recv()

    session.set_direction(Side.A, Direction.INACTIVE)
    a.send(rtp(2), to_a)
    b.send(rtp(3), to_b)
    await until(lambda: session.a.dropped == 1 and session.b.dropped == 1)
    assert a.pending() == [] and b.pending() == []

    session.set_direction(Side.A, "sendrecv")
    a.send(rtp(4), to_a)
    assert (await b.recv())[0] == rtp(4)
    b.send(rtp(5), to_b)
    assert (await a.recv())[0] == rtp(5)


async def test_sendonly_hold_keeps_one_direction(
    relay: MediaRelay, phones: Callable[[int], Phone]
) -> None:
    a, b = phones(0), phones(0)
    session = relay.create_session()
    connect(session, a, b)
    to_a, to_b = session.local_address(Side.A), session.local_address(Side.B)
    # A puts B on hold (a=sendonly, music on hold flows A->B); B answers recvonly.
    session.set_direction(Side.A, Direction.SENDONLY)
    session.set_direction(Side.B, Direction.RECVONLY)
    assert session.held
    a.send(rtp(1), to_a)
    assert (await b.recv())[0] == rtp(1)
    b.send(rtp(2), to_b)
    await until(lambda: session.b.dropped == 1)
    assert a.pending() == []


async def test_rtcp_flows_while_inactive(relay: MediaRelay, phones: Callable[[int], Phone]) -> None:
    a, b_rtp, b_rtcp = phones(0), phones(0), phones(0)
    session = relay.create_session()
    session.set_remote(Side.A, *a.addr)
    session.set_remote(Side.B, HOST, b_rtp.port, rtcp_port=b_rtcp.port)
    session.set_direction(Side.A, Direction.INACTIVE)
    session.set_direction(Side.B, Direction.INACTIVE)
    a.send(rtcp_rr(1), (HOST, session.a.rtcp_port))
    assert (await b_rtcp.recv())[0] == rtcp_rr(1)


async def test_disabled_remote_stops_sending(
    relay: MediaRelay, phones: Callable[[int], Phone]
) -> None:
    a, b = phones(0), phones(0)
    session = relay.create_session()
    connect(session, a, b)
    session.set_remote(Side.B, "0.0.0.0", b.port)  # RFC 2543 hold
    assert session.b.rtp_destination is None
    a.send(rtp(1), session.local_address(Side.A))
    await until(lambda: session.a.dropped == 1)
    assert b.pending() == []
    session.set_remote(Side.B, HOST, 0)  # rejected stream
    assert session.b.remote_rtp is None


@pytest.mark.parametrize(
    ("host", "port", "message"),
    [
        (
            "phone.example.com",
            4000,
            "remote media host must be an IP literal, got 'phone.example.com'",
        ),
        ("::1", 4000, "IPv6 remote ::1 for an IPv4 media socket"),
        ("127.0.0.1", 70000, "port 70000 outside 0-65535"),
    ],
)
async def test_set_remote_rejects_bad_addresses(
    relay: MediaRelay, host: str, port: int, message: str
) -> None:
    session = relay.create_session()
    with pytest.raises(ValueError) as info:
        session.set_remote(Side.A, host, port)
    assert str(info.value) == message


async def test_bad_direction_is_rejected(relay: MediaRelay) -> None:
    session = relay.create_session()
    with pytest.raises(ValueError, match="'hold' is not a valid Direction"):
        session.set_direction(Side.A, "hold")


async def test_close_releases_ports(relay: MediaRelay, phones: Callable[[int], Phone]) -> None:
    a, b = phones(0), phones(0)
    session = relay.create_session("to-close")
    connect(session, a, b)
    ports = [session.a.rtp_port, session.a.rtcp_port, session.b.rtp_port, session.b.rtcp_port]
    assert relay.ports.in_use == 2
    session.close()
    session.close()
    assert session.closed
    assert relay.get("to-close") is None and len(relay) == 0
    assert relay.ports.in_use == 0
    for port in ports:
        phones(port)  # binds: the relay let go
    with pytest.raises(SessionClosed, match="relay session to-close is closed"):
        session.set_remote(Side.A, *a.addr)
    with pytest.raises(SessionClosed):
        session.set_direction(Side.A, Direction.SENDRECV)


async def test_relay_close_closes_every_session(relay: MediaRelay) -> None:
    sessions = [relay.create_session() for _ in range(3)]
    assert len(relay) == 3 and relay.ports.in_use == 6
    relay.close()
    assert all(s.closed for s in sessions)
    assert relay.ports.in_use == 0
    with pytest.raises(RuntimeError, match="media relay is closed"):
        relay.create_session()


async def test_session_ids(relay: MediaRelay) -> None:
    first = relay.create_session()
    assert relay.get(first.id) is first and first.id in relay.sessions
    relay.create_session("x")
    with pytest.raises(ValueError, match="relay session x already exists"):
        relay.create_session("x")
    assert list(relay) == [first, relay.sessions["x"]]


async def test_exhaustion_releases_the_half_allocated_session() -> None:
    relay = MediaRelay(PortAllocator(HOST, 16400, 16405), check_interval=None)
    try:
        relay.create_session()  # two pairs of the three
        with pytest.raises(PortsExhausted):
            relay.create_session()
        assert relay.ports.in_use == 2
    finally:
        relay.close()


async def test_wildcard_bind_needs_advertised_host() -> None:
    with pytest.raises(ValueError, match="advertised_host is required"):
        MediaRelay(PortAllocator("0.0.0.0", 16410, 16419), check_interval=None)
    relay = MediaRelay(
        PortAllocator("0.0.0.0", 16410, 16419), advertised_host="203.0.113.7", check_interval=None
    )
    try:
        session = relay.create_session()
        assert session.local_address(Side.A) == ("203.0.113.7", session.a.rtp_port)
    finally:
        relay.close()


async def test_timeouts_are_checked_against_given_time(
    relay: MediaRelay, phones: Callable[[int], Phone], caplog: pytest.LogCaptureFixture
) -> None:
    fired: list[str] = []
    relay.on_timeout = lambda s: fired.append(s.id)
    a, b = phones(0), phones(0)
    session = relay.create_session("quiet")
    connect(session, a, b)
    t0 = session.created_at
    assert relay.check_timeouts(t0 + 59) == []

    # A talks, B never does: the quieter side decides.
    a.send(rtp(1), session.local_address(Side.A))
    await b.recv()
    last_a = session.a.last_rx
    assert last_a is not None
    assert session.a.idle_for(last_a + 5) == 5
    assert session.idle_for(last_a + 5) == session.b.idle_for(last_a + 5)

    with caplog.at_level(logging.WARNING, logger="media.relay"):
        assert relay.check_timeouts(t0 + 61) == [session]
    assert fired == ["quiet"]
    assert any("[relay quiet] no RTP for" in r.getMessage() for r in caplog.records)
    # Reported once per idle spell.
    assert relay.check_timeouts(t0 + 62) == []
    assert fired == ["quiet"]

    # Hold switches to the hold timeout and restarts the clock.
    session.set_direction(Side.B, Direction.RECVONLY)
    now = session.b._quiet_since
    assert relay.check_timeouts(now + 61) == []
    assert relay.check_timeouts(now + relay.hold_timeout) == [session]
    assert fired == ["quiet", "quiet"]


async def test_session_hook_overrides_and_errors_are_contained(
    relay: MediaRelay, caplog: pytest.LogCaptureFixture
) -> None:
    relay.on_timeout = lambda s: pytest.fail("relay hook must not run")

    def broken(session: RelaySession) -> None:
        raise RuntimeError("hook bug")

    session = relay.create_session("s", on_timeout=broken)
    with caplog.at_level(logging.ERROR, logger="media.relay"):
        assert relay.check_timeouts(session.created_at + 600) == [session]
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == "[relay s] timeout hook failed"


async def test_timer_reports_dead_sessions() -> None:
    expired = asyncio.Event()
    relay = MediaRelay(
        PortAllocator(HOST, 16420, 16429),
        rtp_timeout=0.05,
        check_interval=0.01,
        on_timeout=lambda s: expired.set(),
    )
    try:
        relay.create_session()
        await asyncio.wait_for(expired.wait(), TIMEOUT)
    finally:
        relay.close()


async def _forward_scenario() -> int:
    relay = MediaRelay(PortAllocator(HOST, 16430, 16439), check_interval=0.5)
    a, b = Phone(), Phone()
    try:
        session = relay.create_session()
        connect(session, a, b)
        for seq in range(200):
            a.send(rtp(seq), session.local_address(Side.A))
            b.send(rtp(seq), session.local_address(Side.B))
        got_b = [(await b.recv())[0] for _ in range(200)]
        got_a = [(await a.recv())[0] for _ in range(200)]
        assert got_a == got_b == [rtp(seq) for seq in range(200)]
        return session.a.packets_out + session.b.packets_out
    finally:
        relay.close()
        a.close()
        b.close()


def test_relay_under_uvloop() -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert isinstance(runner.get_loop(), uvloop.Loop)
        assert runner.run(_forward_scenario()) == 400

"""signaling.transport over real loopback sockets: two hubs' transports talking.

Only 127.0.0.1 / localhost here (the torture corpus, with its foreign addresses, runs in
a network namespace: test_sip_torture_socket.py).
"""

from __future__ import annotations

import asyncio

from signaling.message import Request, Response, parse_message
from signaling.stack import SipEndpoint, StackEvent
from signaling.transaction import Address, RequestReceived, ResponseReceived, new_branch
from signaling.transport import SipTransport

WAIT = 5.0


class Peer:
    """A transport whose TU answers every request with 200 and records its events."""

    def __init__(self, **options: float) -> None:
        self.events: asyncio.Queue[StackEvent] = asyncio.Queue()
        self.transport = SipTransport(SipEndpoint(), self.handle, **options)

    def handle(self, event: StackEvent) -> None:
        if isinstance(event, RequestReceived):
            self.transport.reply(event.transaction, 200, to_tag="peer")
        self.events.put_nowait(event)

    async def next_event(self) -> StackEvent:
        return await asyncio.wait_for(self.events.get(), WAIT)

    async def close(self) -> None:
        await self.transport.close()
        await asyncio.sleep(0.01)  # let the sockets finish closing


def options(transport: SipTransport, dest: Address, target: str) -> Request:
    msg = parse_message(
        (
            f"OPTIONS sip:peer@{target} SIP/2.0\r\n"
            f"Via: {transport.via(dest, new_branch())}\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:a@example.com>;tag=a\r\n"
            "To: <sip:peer@example.com>\r\n"
            f"Call-ID: {new_branch()}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(msg, Request)
    return msg


async def round_trip(transport_name: str, host: str) -> Response:
    a, b = Peer(), Peer()
    try:
        listen = b.transport.listen_udp if transport_name == "udp" else b.transport.listen_tcp
        _, port = await listen("127.0.0.1", 0)
        if transport_name == "udp":
            await a.transport.listen_udp("127.0.0.1", 0)
        else:
            await a.transport.listen_tcp("127.0.0.1", 0)
        dest = Address(host, port, transport_name)
        a.transport.send_request(options(a.transport, dest, f"{host}:{port}"), dest)
        received = await b.next_event()
        assert isinstance(received, RequestReceived)
        answer = await a.next_event()
        assert isinstance(answer, ResponseReceived)
        return answer.response
    finally:
        await a.close()
        await b.close()


async def test_udp_round_trip() -> None:
    response = await round_trip("udp", "127.0.0.1")
    assert response.status == 200
    assert response.top_via.params["rport"] != ""


async def test_tcp_round_trip() -> None:
    assert (await round_trip("tcp", "127.0.0.1")).status == 200


async def test_tcp_to_a_host_name_delivers_the_request() -> None:
    # The connection's peername is 127.0.0.1, not the name dialled: the queued request
    # must still go out on it.
    assert (await round_trip("tcp", "localhost")).status == 200


async def test_incomplete_message_on_a_stream_is_closed_after_a_while() -> None:
    hub = Peer(partial_message_timeout=0.2)
    try:
        _, port = await hub.transport.listen_tcp("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"OPTIONS sip:hub@127.0.0.1 SIP/2.0\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert await asyncio.wait_for(reader.read(), WAIT) == b""  # EOF: the hub closed
        assert loop.time() - start >= 0.15
        writer.close()
        await writer.wait_closed()
    finally:
        await hub.close()


async def test_complete_messages_keep_a_stream_open() -> None:
    hub = Peer(partial_message_timeout=0.2)
    try:
        _, port = await hub.transport.listen_tcp("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(3):
            writer.write(b"\r\n\r\n")
            await writer.drain()
            assert await asyncio.wait_for(reader.readexactly(2), WAIT) == b"\r\n"
            await asyncio.sleep(0.1)
        writer.write(b"\r\n\r\n")
        assert await asyncio.wait_for(reader.readexactly(2), WAIT) == b"\r\n"
        writer.close()
        await writer.wait_closed()
    finally:
        await hub.close()

"""Child of test_sip_torture_socket.py: the torture corpus against a real SipTransport.

Run inside a network namespace that has only ``lo`` (any non-loopback send fails with
ENETUNREACH), from the repository root with PYTHONPATH=. ; prints one JSON document.
Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import asyncio
import errno
import json
import socket
import sys
import time
from typing import Any

from signaling.message import StreamFramer
from signaling.stack import SipEndpoint, StackEvent
from signaling.transaction import Address, RequestReceived
from signaling.transport import SipTransport
from tests.sip_corpus import expected_rows, is_response, message_files, wire_bytes

HOST = "127.0.0.1"
CLIENT_PORT = 5060  # free in a fresh namespace; most Via-port answers land here
WAIT = 5.0
PARTIAL_TIMEOUT = 0.3


def text(data: bytes) -> str:
    return data.decode("latin-1")


class Hub:
    """A SipTransport with the trivial TU, recording every send it attempts."""

    def __init__(self) -> None:
        self.endpoint = SipEndpoint()
        self.transport = SipTransport(
            self.endpoint, self.handle, partial_message_timeout=PARTIAL_TIMEOUT
        )
        self.tried: list[tuple[bytes, Address]] = []
        real_send = self.transport._send

        def recording_send(data: bytes, dest: Address) -> None:
            self.tried.append((data, dest))
            real_send(data, dest)

        self.transport._send = recording_send  # type: ignore[method-assign]

    def handle(self, event: StackEvent) -> None:
        if isinstance(event, RequestReceived):
            status = 401 if event.request.method == "REGISTER" else 200
            self.transport.reply(event.transaction, status, to_tag="hub")

    async def close(self) -> None:
        await self.transport.close()
        await asyncio.sleep(0)  # let the transports finish closing


class Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        pass


def probe(n: int) -> bytes:
    """An OPTIONS with rport: its answer comes back to the client, after everything the
    hub did with the datagram sent before it (one socket, processed in order)."""
    lines = [
        f"OPTIONS sip:probe@{HOST} SIP/2.0",
        f"Via: SIP/2.0/UDP {HOST}:{CLIENT_PORT};branch=z9hG4bKprobe{n};rport",
        "Max-Forwards: 70",
        f"From: <sip:probe@{HOST}>;tag=probe",
        f"To: <sip:probe@{HOST}>",
        f"Call-ID: probe-{n}",
        "CSeq: 1 OPTIONS",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def udp_case(
    n: int, data: bytes, client: Client, client_tx: asyncio.DatagramTransport
) -> dict[str, Any]:
    hub = Hub()
    try:
        host, port = await hub.transport.listen_udp(HOST, 0)
        marker = f"probe-{n}".encode()
        client_tx.sendto(data, (host, port))
        client_tx.sendto(probe(n), (host, port))
        got: list[bytes] = []
        while True:
            datagram = await asyncio.wait_for(client.queue.get(), WAIT)
            if marker in datagram:
                break
            got.append(datagram)
        tried = [(d, a) for d, a in hub.tried if marker not in d]
        return {
            "tried": [{"data": text(d), "dest": [a.host, a.port, a.transport]} for d, a in tried],
            "client_got": [text(d) for d in got],
            "hub": [host, port],
        }
    finally:
        await hub.close()


async def read_message(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"content-length", b"l"):
            length = int(value.strip())
    body = await asyncio.wait_for(reader.readexactly(length), WAIT) if length else b""
    return head + body


async def read_to_eof(reader: asyncio.StreamReader) -> tuple[bytes, bool, float]:
    start = time.monotonic()
    try:
        data = await asyncio.wait_for(reader.read(), WAIT)
        return data, True, time.monotonic() - start
    except TimeoutError:
        return b"", False, time.monotonic() - start


async def tcp_hub() -> tuple[Hub, int]:
    hub = Hub()
    _, port = await hub.transport.listen_tcp(HOST, 0)
    return hub, port


async def tcp_close_case(data: bytes) -> dict[str, Any]:
    hub, port = await tcp_hub()
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(data)
        await writer.drain()
        received, closed, elapsed = await read_to_eof(reader)
        writer.close()
        await writer.wait_closed()
        return {"received": text(received), "closed": closed, "elapsed": elapsed}
    finally:
        await hub.close()


async def tcp_normal_case(data: bytes) -> dict[str, Any]:
    """A response on the same connection, which stays open (a CRLF ping gets its pong)."""
    hub, port = await tcp_hub()
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(data)
        await writer.drain()
        response = await read_message(reader)
        writer.write(b"\r\n\r\n")
        await writer.drain()
        pong = await asyncio.wait_for(reader.readexactly(2), WAIT)
        writer.close()
        await writer.wait_closed()
        return {
            "response": text(response),
            "pong": text(pong),
            "dest_conns": sorted({a.conn or 0 for _, a in hub.tried}),
        }
    finally:
        await hub.close()


async def tcp_pipelined_case(good: bytes, bad: bytes) -> dict[str, Any]:
    """A good message and a framing error in one segment: answer both, then close."""
    hub, port = await tcp_hub()
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(good + bad)
        await writer.drain()
        received, closed, elapsed = await read_to_eof(reader)
        writer.close()
        await writer.wait_closed()
        return {"received": text(received), "closed": closed}
    finally:
        await hub.close()


def frames_exactly(data: bytes) -> bool:
    try:
        return StreamFramer().feed(data) == [data]
    except ValueError:
        return False


def fails_framing(data: bytes) -> bool:
    try:
        StreamFramer().feed(data)
    except ValueError:
        return True
    return False


def unreachable_probe() -> str:
    """What a send to a foreign address does here: ENETUNREACH in a loopback-only netns."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(b"x", ("192.0.2.1", 5060))
        except OSError as exc:
            return errno.errorcode.get(exc.errno or 0, str(exc))
    return "sent"


async def main() -> dict[str, Any]:
    rows = expected_rows()
    files = message_files()
    loop = asyncio.get_running_loop()
    client_tx, client = await loop.create_datagram_endpoint(Client, local_addr=(HOST, CLIENT_PORT))
    out: dict[str, Any] = {
        "interfaces": sorted(name for _, name in socket.if_nameindex()),
        "foreign_send": unreachable_probe(),
        "udp": {},
        "tcp_close": {},
        "tcp_normal": {},
    }
    try:
        for n, row in enumerate(rows):
            if row.name in files:
                out["udp"][row.name] = await udp_case(
                    n, wire_bytes(files[row.name]), client, client_tx
                )
    finally:
        client_tx.close()
    for row in rows:
        if row.name not in files:
            continue
        data = wire_bytes(files[row.name])
        if row.verdict == "close":
            out["tcp_close"][row.name] = await tcp_close_case(data)
        elif row.verdict == "accept" and not is_response(data) and frames_exactly(data):
            out["tcp_normal"][row.name] = await tcp_normal_case(data)
    # A close row whose framing fails at once (not one that just waits for more bytes).
    broken = [
        r.name
        for r in rows
        if r.verdict == "close"
        and r.name in files
        and not frames_exactly(wire_bytes(files[r.name]))
        and fails_framing(wire_bytes(files[r.name]))
    ]
    if out["tcp_normal"] and broken:
        good_name = sorted(out["tcp_normal"])[0]
        good, bad = wire_bytes(files[good_name]), wire_bytes(files[broken[0]])
        out["tcp_pipelined"] = {
            "good": good_name,
            "bad": broken[0],
            **await tcp_pipelined_case(good, bad),
        }
    await asyncio.sleep(0)
    return out


if __name__ == "__main__":
    result = asyncio.run(main())
    json.dump(result, sys.stdout)

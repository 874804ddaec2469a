"""RFC 4475 / RFC 5118 torture messages fed to the sans-I/O SipEndpoint.

Each message goes to a fresh endpoint as if it came from 127.0.0.1:5099; a trivial TU
answers every request that survives validation with 200 (401 for REGISTER). The outcome
must be the one EXPECTED.tsv lists.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from signaling.message import Response, parse_message
from signaling.stack import CloseConnection, SipEndpoint, StackEvent
from signaling.transaction import Address, RequestReceived
from tests.sip_corpus import (
    CORPUS,
    VERDICTS,
    Row,
    expected_rows,
    is_response,
    message_files,
    status_of,
    wire_bytes,
)

NOW = 1000.0
UDP_SOURCE = Address("127.0.0.1", 5099, "udp")
TCP_SOURCE = Address("127.0.0.1", 5099, "tcp", 1)
ROWS = expected_rows()
FILES = message_files()

pytestmark = pytest.mark.skipif(not ROWS, reason=f"no SIP torture corpus at {CORPUS}")


@dataclass
class Outcome:
    sent: list[tuple[bytes, Address]] = field(default_factory=list)
    events: list[StackEvent] = field(default_factory=list)
    tu_saw: list[str] = field(default_factory=list)

    @property
    def statuses(self) -> list[int]:
        return [status_of(data) for data, _ in self.sent]


def feed(data: bytes, source: Address) -> Outcome:
    """One message into a fresh endpoint with the trivial TU; what came out."""
    endpoint = SipEndpoint()
    endpoint.receive(data, source, NOW)
    outcome = Outcome()
    for event in endpoint.events():
        outcome.events.append(event)
        if isinstance(event, RequestReceived):
            outcome.tu_saw.append(event.request.method)
            status = 401 if event.request.method == "REGISTER" else 200
            endpoint.reply(event.transaction, status, NOW, to_tag="hub")
    outcome.sent = endpoint.datagrams_to_send()
    # Nothing leaves for an address the message named: answers go where it came from
    # (RFC 3261 18.2.2: the received address, with the Via port when there is no rport).
    assert all(dest.host == "127.0.0.1" for _, dest in outcome.sent)
    return outcome


def check(row: Row, data: bytes, outcome: Outcome) -> None:
    statuses = outcome.statuses
    if row.verdict == "accept":
        if is_response(data):
            assert statuses == [], "a response must not be answered"
        else:
            assert len(statuses) == 1 and statuses[0] != 400, statuses
    elif row.verdict == "drop":
        assert statuses == []
    elif row.verdict == "may":
        assert len(statuses) <= 1
    elif row.verdict == "close":
        assert statuses == [400]
    else:
        assert statuses == [row.status]


def test_expected_tsv_is_well_formed() -> None:
    names = [row.name for row in ROWS]
    assert len(names) == len(set(names)), "duplicate rows"
    for row in ROWS:
        assert row.verdict in VERDICTS or row.status is not None, row


def test_every_row_has_a_message() -> None:
    missing = sorted({row.name for row in ROWS} - set(FILES))
    assert missing == [], f"EXPECTED.tsv rows without a message file: {missing}"


def test_every_message_has_a_row() -> None:
    missing = sorted(set(FILES) - {row.name for row in ROWS})
    assert missing == [], f"message files without an EXPECTED.tsv row: {missing}"


@pytest.mark.parametrize("row", [pytest.param(r, id=r.name) for r in ROWS])
def test_torture_message_over_udp(row: Row) -> None:
    path = FILES.get(row.name)
    if path is None:
        pytest.fail(f"no message file for row {row.name!r}")
    data = wire_bytes(path)
    outcome = feed(data, UDP_SOURCE)
    check(row, data, outcome)
    assert not any(isinstance(e, CloseConnection) for e in outcome.events)
    if row.verdict == "accept" and not is_response(data):
        request = parse_message(data)
        response = parse_message(outcome.sent[0][0])
        assert isinstance(response, Response)
        # The answer carries the request's transaction: its top Via came back, stamped.
        assert response.top_via.branch == request.top_via.branch
        assert response.top_via.params.get("received", "127.0.0.1") == "127.0.0.1"
        # RFC 3261 18.2.2 / RFC 3581: to the source port with rport, else the Via port.
        via = request.top_via
        port = UDP_SOURCE.port if "rport" in via.params else (via.port or 5060)
        assert outcome.sent[0][1] == Address("127.0.0.1", port, "udp")


@pytest.mark.parametrize("row", [pytest.param(r, id=r.name) for r in ROWS if r.verdict == "close"])
def test_torture_framing_error_closes_a_stream(row: Row) -> None:
    path = FILES.get(row.name)
    if path is None:
        pytest.fail(f"no message file for row {row.name!r}")
    outcome = feed(wire_bytes(path), TCP_SOURCE)
    closes = [e for e in outcome.events if isinstance(e, CloseConnection)]
    assert [c.conn for c in closes] == [1]
    # The hub still answers what it can before it closes (RFC 3261 18.3 / 4475).
    assert outcome.statuses == [400]
    assert all(dest == TCP_SOURCE for _, dest in outcome.sent)


@pytest.mark.parametrize("row", [pytest.param(r, id=r.name) for r in ROWS if r.verdict == "accept"])
def test_accepted_requests_reach_the_tu_or_get_a_precise_answer(row: Row) -> None:
    path = FILES.get(row.name)
    if path is None:
        pytest.fail(f"no message file for row {row.name!r}")
    data = wire_bytes(path)
    if is_response(data):
        return
    outcome = feed(data, UDP_SOURCE)
    if outcome.tu_saw:
        assert outcome.statuses in ([200], [401])
    else:
        # Only a method the UAS does not implement is refused before the TU (intmeth).
        assert outcome.statuses == [501]


# --- the endpoint's own answers, beyond the corpus -----------------------------------------


def options(*extra: str, via: str = "SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bKe1") -> bytes:
    lines = [
        "OPTIONS sip:hub@127.0.0.1 SIP/2.0",
        f"Via: {via}",
        "Max-Forwards: 70",
        "From: <sip:a@example.com>;tag=f1",
        "To: <sip:hub@example.com>",
        "Call-ID: edge-1",
        "CSeq: 1 OPTIONS",
        *extra,
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_crlf_keepalive_gets_a_pong_on_streams_only() -> None:
    endpoint = SipEndpoint()
    endpoint.receive(b"\r\n\r\n", TCP_SOURCE, NOW)
    assert endpoint.datagrams_to_send() == [(b"\r\n", TCP_SOURCE)]
    endpoint.receive(b"\r\n\r\n", UDP_SOURCE, NOW)
    endpoint.receive(b"\r\n", TCP_SOURCE, NOW)
    assert endpoint.datagrams_to_send() == []
    assert endpoint.events() == []


def test_via_is_stamped_and_replies_follow_rfc3261_18_2_2_and_rfc3581() -> None:
    plain = feed(options(), UDP_SOURCE)
    ((data, dest),) = plain.sent
    response = parse_message(data)
    assert isinstance(response, Response)
    assert response.top_via.params["received"] == "127.0.0.1"
    assert "rport" not in response.top_via.params
    assert dest == Address("127.0.0.1", 5070, "udp")  # the received address, the Via port
    symmetric = feed(options(via="SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bKe2;rport"), UDP_SOURCE)
    ((data, dest),) = symmetric.sent
    response = parse_message(data)
    assert isinstance(response, Response)
    assert response.top_via.params["rport"] == "5099"
    assert dest == UDP_SOURCE
    default_port = feed(options(via="SIP/2.0/UDP 192.0.2.7;branch=z9hG4bKe3"), UDP_SOURCE)
    assert default_port.sent[0][1] == Address("127.0.0.1", 5060, "udp")


def test_stateless_400_copies_the_transaction_headers() -> None:
    data = options("Expires: soon")
    outcome = feed(data, UDP_SOURCE)
    ((answer, dest),) = outcome.sent
    assert dest == UDP_SOURCE  # no transaction could be made: back where it came from
    text = answer.decode()
    assert text.startswith("SIP/2.0 400 Bad Request (bad Expires 'soon')\r\n")
    for header in (
        "Via: SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bKe1",
        "Call-ID: edge-1",
        "CSeq: 1 OPTIONS",
        "From: <sip:a@example.com>;tag=f1",
    ):
        assert f"\r\n{header}\r\n" in text
    # CRLFs ahead of the request line change nothing (RFC 3261 7.5).
    assert feed(b"\r\n\r\n" + data, UDP_SOURCE).sent == outcome.sent
    # A broken ACK is never answered (RFC 3261 17).
    ack = data.replace(b"OPTIONS sip", b"ACK sip").replace(b"1 OPTIONS", b"1 ACK")
    assert feed(ack, UDP_SOURCE).sent == []


def test_too_large_is_513() -> None:
    outcome = feed(options("X-Pad: " + "p" * 70000), UDP_SOURCE)
    assert outcome.statuses == [513]


def test_method_not_allowed_and_unknown_extension_carry_their_headers() -> None:
    endpoint = SipEndpoint(allowed_methods=frozenset({"INVITE", "ACK", "BYE", "CANCEL"}))
    endpoint.receive(options(), UDP_SOURCE, NOW)
    ((data, _),) = endpoint.datagrams_to_send()
    response = parse_message(data)
    assert isinstance(response, Response)
    assert response.status == 405
    assert response.headers.get("Allow") == "ACK, BYE, CANCEL, INVITE"
    assert response.to.tag  # RFC 3261 8.2.6.2: a UAS's final response has a To tag
    outcome = feed(options("Require: 100rel, foo"), UDP_SOURCE)
    response = parse_message(outcome.sent[0][0])
    assert isinstance(response, Response)
    assert response.status == 420
    assert response.headers.get("Unsupported") == "100rel, foo"
    assert response.to.tag


def test_response_with_several_vias_is_dropped_and_stray_ones_reported() -> None:
    endpoint = SipEndpoint()
    ok = (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKnone\r\n"
        b"From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\n"
        b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    endpoint.receive(ok, UDP_SOURCE, NOW)
    (stray,) = endpoint.events()
    assert type(stray).__name__ == "StrayResponse"
    two = ok.replace(b"Via:", b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\nVia:", 1)
    endpoint.receive(two, UDP_SOURCE, NOW)
    assert endpoint.events() == [] and endpoint.datagrams_to_send() == []
    assert endpoint.stats["dropped"] == 1


def test_request_filter_drops_silently() -> None:
    endpoint = SipEndpoint(request_filter=lambda request, source: True)
    endpoint.receive(options(), UDP_SOURCE, NOW)
    assert endpoint.datagrams_to_send() == [] and endpoint.events() == []
    assert endpoint.stats["dropped"] == 1

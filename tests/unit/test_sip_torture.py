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


@pytest.mark.parametrize("name", sorted(set(FILES) - {r.name for r in ROWS}))
def test_unlisted_messages_do_not_crash(name: str) -> None:
    # Whatever EXPECTED.tsv will say of them, neither transport may crash the endpoint.
    data = wire_bytes(FILES[name])
    assert len(feed(data, UDP_SOURCE).sent) <= 1
    assert len(feed(data, TCP_SOURCE).sent) <= 1


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


@pytest.mark.parametrize("row", [pytest.param(r, id=r.name) for r in ROWS
                                 if r.verdict == "close"])
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


@pytest.mark.parametrize("row", [pytest.param(r, id=r.name) for r in ROWS
                                 if r.verdict == "accept"])
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

"""signaling.transaction: RFC 3261 17 / RFC 6026 timers on an injected clock, no sockets.

Time is a float the test advances; ``run`` fires every timer the layer asks for at its
exact deadline, as the asyncio adapter does, and records what was sent when.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signaling.dialog import Dialog, dialog_id_of_request
from signaling.message import Request, Response, make_response, parse_message
from signaling.stack import SipEndpoint, StackEvent
from signaling.transaction import (
    AckReceived,
    Address,
    ClientTransaction,
    Event,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    State,
    StrayResponse,
    Timers,
    TransactionLayer,
    TransactionTimedOut,
    new_branch,
)

T1, T2, T4 = 0.5, 4.0, 5.0
TIMERS = Timers(t1=T1, t2=T2, t4=T4)
# Documentation addresses: nothing here opens a socket.
UAC = Address("192.0.2.10", 5060)
UAS = Address("192.0.2.20", 5060)
UAS_TCP = Address("192.0.2.20", 5060, "tcp", 7)
UAC_TCP = Address("192.0.2.10", 40000, "tcp", 7)


def request(
    method: str = "INVITE",
    *,
    branch: str = "z9hG4bKbranch1",
    cseq: int = 1,
    cseq_method: str | None = None,
    call_id: str = "call-1@192.0.2.10",
    from_tag: str = "fromtag",
    to_tag: str | None = None,
    sent_by: str = "192.0.2.10:5060",
    transport: str = "UDP",
    uri: str = "sip:bob@192.0.2.20",
    extra: tuple[str, ...] = (),
) -> Request:
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    branch_param = f";branch={branch}" if branch else ""  # RFC 2543 peers send none
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/{transport} {sent_by}{branch_param}",
        "Max-Forwards: 70",
        f"From: <sip:alice@example.com>;tag={from_tag}",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {cseq_method or method}",
        "Contact: <sip:alice@192.0.2.10>",
        *extra,
        "Content-Length: 0",
    ]
    msg = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def response(req: Request, status: int, to_tag: str | None = "totag") -> Response:
    """The response as the peer would put it on the wire, parsed back."""
    msg = parse_message(make_response(req, status, to_tag=to_tag).encode())
    assert isinstance(msg, Response)
    return msg


def run(layer: TransactionLayer, until: float) -> list[tuple[float, bytes, Address]]:
    """Fire every timer due up to ``until`` at its deadline; what was sent, and when."""
    sent: list[tuple[float, bytes, Address]] = []
    while (deadline := layer.next_timer()) is not None and deadline <= until:
        layer.handle_timer(deadline)
        sent += [(deadline, data, dest) for data, dest in layer.datagrams_to_send()]
    return sent


def times(sent: list[tuple[float, bytes, Address]]) -> list[float]:
    return [t for t, _, _ in sent]


def first_line(data: bytes) -> str:
    return data.split(b"\r\n", 1)[0].decode()


def only(events: list[Event], kind: type) -> list[Event]:
    return [e for e in events if isinstance(e, kind)]


# --- INVITE client (RFC 3261 17.1.1, RFC 6026 7.2) -----------------------------------------


def test_invite_client_timer_a_doubles_until_timer_b() -> None:
    layer = TransactionLayer(TIMERS)
    tx = layer.send_request(request(), UAS, 0.0)
    ((wire, dest),) = layer.datagrams_to_send()
    assert dest == UAS and wire == tx.wire
    assert tx.state is State.CALLING
    sent = run(layer, 31.99)
    # A fires at T1, then 2*T1, 4*T1... after the previous one: 7 transmissions in all.
    assert times(sent) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert all(data == wire and d == UAS for _, data, d in sent)
    assert layer.events() == []
    assert run(layer, 32.0) == []
    assert layer.events() == [TransactionTimedOut(tx)]
    assert tx.state is State.TERMINATED
    assert layer.counts == (0, 0)
    assert layer.next_timer() is None


def test_invite_client_over_reliable_transport_has_no_timer_a() -> None:
    layer = TransactionLayer(TIMERS)
    tx = layer.send_request(request(transport="TCP"), UAS_TCP, 0.0)
    assert len(layer.datagrams_to_send()) == 1
    assert run(layer, 31.99) == []
    run(layer, 32.0)
    assert layer.events() == [TransactionTimedOut(tx)]


def test_invite_client_provisional_stops_timer_a_and_timer_b() -> None:
    layer = TransactionLayer(TIMERS)
    inv = request()
    tx = layer.send_request(inv, UAS, 0.0)
    layer.datagrams_to_send()
    assert times(run(layer, 0.7)) == [0.5]
    ringing = response(inv, 180)
    layer.receive_response(ringing, UAS, 0.7)
    assert tx.state is State.PROCEEDING
    assert layer.events() == [ResponseReceived(tx, ringing)]
    # No retransmission, and no Timer B timeout once the callee rings (17.1.1.2: B is a
    # Calling-state timer); the TU ends a call that rings for ever (CANCEL).
    assert run(layer, 120.0) == []
    assert layer.events() == []
    assert layer.counts == (1, 0)
    again = response(inv, 183)
    layer.receive_response(again, UAS, 121.0)
    assert layer.events() == [ResponseReceived(tx, again)]


def test_invite_client_non_2xx_is_acked_by_the_transaction() -> None:
    layer = TransactionLayer(TIMERS)
    inv = request(extra=("Route: <sip:proxy.example.com;lr>",))
    tx = layer.send_request(inv, UAS, 0.0)
    layer.datagrams_to_send()
    layer.receive_response(response(inv, 180), UAS, 0.1)
    busy = response(inv, 486)
    layer.receive_response(busy, UAS, 2.0)
    assert tx.state is State.COMPLETED
    assert [type(e) for e in layer.events()] == [ResponseReceived, ResponseReceived]
    ((ack_wire, dest),) = layer.datagrams_to_send()
    assert dest == UAS
    ack = parse_message(ack_wire)
    assert isinstance(ack, Request)
    # RFC 3261 17.1.1.3: same Request-URI, Call-ID, From, top Via (branch) and Route;
    # the To of the response (with its tag); CSeq number of the INVITE with ACK.
    assert ack.method == "ACK"
    assert str(ack.uri) == str(inv.uri)
    assert ack.call_id == inv.call_id
    assert ack.headers.get("From") == inv.headers.get("From")
    assert ack.to.tag == "totag"
    assert ack.headers.get_all("Via") == inv.headers.get_all("Via")[:1]
    assert ack.headers.get_all("Route") == ["<sip:proxy.example.com;lr>"]
    assert (ack.cseq.number, ack.cseq.method) == (1, "ACK")
    # A retransmitted 486 gets the same ACK again, and is not passed to the TU.
    layer.receive_response(busy, UAS, 3.0)
    assert layer.datagrams_to_send() == [(ack_wire, UAS)]
    assert layer.events() == []
    # Timer D (32 s over UDP) keeps the transaction to absorb retransmissions.
    assert run(layer, 33.99) == []
    assert layer.counts == (1, 0)
    run(layer, 34.0)
    assert layer.counts == (0, 0)
    assert tx.state is State.TERMINATED
    assert layer.events() == []
    layer.receive_response(busy, UAS, 35.0)
    assert layer.events() == [StrayResponse(busy, UAS)]
    assert layer.datagrams_to_send() == []


def test_invite_client_timer_d_is_zero_over_reliable_transport() -> None:
    layer = TransactionLayer(TIMERS)
    inv = request(transport="TCP")
    layer.send_request(inv, UAS_TCP, 0.0)
    layer.receive_response(response(inv, 603), UAS_TCP, 1.0)
    run(layer, 1.0)
    assert layer.counts == (0, 0)


def test_invite_client_2xx_is_accepted_and_retransmissions_reach_the_tu() -> None:
    layer = TransactionLayer(TIMERS)
    inv = request()
    tx = layer.send_request(inv, UAS, 0.0)
    layer.datagrams_to_send()
    ok = response(inv, 200)
    layer.receive_response(ok, UAS, 1.0)
    assert tx.state is State.ACCEPTED
    assert layer.events() == [ResponseReceived(tx, ok)]
    assert layer.datagrams_to_send() == []  # the TU ACKs a 2xx, not the transaction
    # RFC 6026: 2xx retransmissions (and 2xx from other forks) go up to the TU to re-ACK.
    layer.receive_response(ok, UAS, 1.5)
    forked = response(inv, 200, to_tag="other-fork")
    layer.receive_response(forked, UAS, 1.6)
    assert layer.events() == [ResponseReceived(tx, ok), ResponseReceived(tx, forked)]
    # A late non-2xx is not for the TU.
    layer.receive_response(response(inv, 500), UAS, 1.7)
    assert layer.events() == []
    assert run(layer, 32.99) == []
    assert layer.counts == (1, 0)
    run(layer, 33.0)  # Timer M = 64*T1
    assert layer.counts == (0, 0)
    layer.receive_response(ok, UAS, 40.0)
    assert layer.events() == [StrayResponse(ok, UAS)]


def test_client_response_without_usable_via_is_ignored() -> None:
    layer = TransactionLayer(TIMERS)
    inv = request()
    layer.send_request(inv, UAS, 0.0)
    bad = response(inv, 200)
    bad.headers.remove("Via")
    layer.receive_response(bad, UAS, 1.0)
    assert layer.events() == []


def test_transport_error_fails_pending_client_transactions() -> None:
    layer = TransactionLayer(TIMERS)
    tx = layer.send_request(request(transport="TCP"), UAS_TCP, 0.0)
    other = layer.send_request(request(branch="z9hG4bKother"), UAC, 0.0)
    layer.transport_error(UAS_TCP, 0.1)
    assert layer.events() == [TransactionTimedOut(tx)]
    assert layer.counts == (1, 0)
    assert other.state is State.CALLING


# --- non-INVITE client (RFC 3261 17.1.2) ----------------------------------------------------


def test_non_invite_client_timer_e_capped_at_t2_then_timer_f() -> None:
    layer = TransactionLayer(TIMERS)
    tx = layer.send_request(request("OPTIONS"), UAS, 0.0)
    assert tx.state is State.TRYING
    layer.datagrams_to_send()
    sent = run(layer, 31.99)
    assert times(sent) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert layer.events() == []
    run(layer, 32.0)
    assert layer.events() == [TransactionTimedOut(tx)]
    assert layer.counts == (0, 0)


def test_non_invite_client_proceeding_retransmits_every_t2_and_still_times_out() -> None:
    layer = TransactionLayer(TIMERS)
    req = request("BYE", to_tag="tt")
    tx = layer.send_request(req, UAS, 0.0)
    layer.datagrams_to_send()
    trying = response(req, 100, to_tag=None)
    layer.receive_response(trying, UAS, 0.2)
    assert tx.state is State.PROCEEDING
    assert layer.events() == [ResponseReceived(tx, trying)]
    assert times(run(layer, 31.99)) == [0.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5]
    run(layer, 32.0)
    assert layer.events() == [TransactionTimedOut(tx)]


def test_non_invite_client_final_response_then_timer_k() -> None:
    layer = TransactionLayer(TIMERS)
    req = request("OPTIONS")
    tx = layer.send_request(req, UAS, 0.0)
    layer.datagrams_to_send()
    ok = response(req, 200)
    layer.receive_response(ok, UAS, 1.0)
    assert tx.state is State.COMPLETED
    assert layer.events() == [ResponseReceived(tx, ok)]
    assert run(layer, 5.99) == []  # no more Timer E
    layer.receive_response(ok, UAS, 2.0)  # absorbed
    assert layer.events() == []
    assert layer.counts == (1, 0)
    run(layer, 6.0)  # Timer K = T4
    assert layer.counts == (0, 0)
    assert layer.events() == []


def test_non_invite_client_over_reliable_transport() -> None:
    layer = TransactionLayer(TIMERS)
    req = request("OPTIONS", transport="TCP")
    tx = layer.send_request(req, UAS_TCP, 0.0)
    layer.datagrams_to_send()
    assert run(layer, 10.0) == []  # no Timer E
    layer.receive_response(response(req, 200), UAS_TCP, 10.0)
    run(layer, 10.0)  # Timer K = 0
    assert layer.counts == (0, 0)
    assert tx.state is State.TERMINATED


# --- INVITE server (RFC 3261 17.2.1, RFC 6026 7.1) ----------------------------------------------


def new_server(
    layer: TransactionLayer, req: Request, source: Address = UAC, now: float = 0.0
) -> ServerTransaction:
    layer.receive_request(req, source, now)
    (event,) = layer.events()
    assert isinstance(event, RequestReceived)
    assert event.request is req
    return event.transaction


def test_invite_server_retransmission_gets_the_last_provisional() -> None:
    layer = TransactionLayer(TIMERS)
    inv = request()
    tx = new_server(layer, inv)
    assert tx.state is State.PROCEEDING
    layer.receive_request(request(), UAC, 0.1)  # nothing sent yet: absorbed
    assert layer.datagrams_to_send() == [] and layer.events() == []
    layer.respond(tx, make_response(inv, 100), 0.2)
    layer.respond(tx, make_response(inv, 180, to_tag="tt"), 0.3)
    sent = layer.datagrams_to_send()
    assert [first_line(d) for d, _ in sent] == ["SIP/2.0 100 Trying", "SIP/2.0 180 Ringing"]
    layer.receive_request(request(), UAC, 1.0)
    assert layer.datagrams_to_send() == [(sent[1][0], UAC)]
    assert layer.events() == []
    assert run(layer, 60.0) == []  # provisionals are not retransmitted by the transaction


def test_invite_server_non_2xx_timer_g_until_timer_h() -> None:
    layer = TransactionLayer(TIMERS)
    inv = request()
    tx = new_server(layer, inv)
    layer.respond(tx, make_response(inv, 486, to_tag="tt"), 1.0)
    ((wire, _),) = layer.datagrams_to_send()
    assert tx.state is State.COMPLETED
    sent = run(layer, 32.99)
    assert times(sent) == [1.5, 2.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5, 32.5]
    assert {data for _, data, _ in sent} == {wire}
    # The request retransmitted meanwhile gets the final response again.
    layer.receive_request(request(), UAC, 32.6)
    assert layer.datagrams_to_send() == [(wire, UAC)]
    assert layer.events() == []
    run(layer, 33.0)  # Timer H = 64*T1: no ACK came
    assert layer.events() == [TransactionTimedOut(tx)]
    assert tx.state is State.TERMINATED
    assert layer.counts == (0, 0)


def test_invite_server_ack_confirms_then_timer_i() -> None:
    layer = TransactionLayer(TIMERS)
    inv = request()
    tx = new_server(layer, inv)
    layer.respond(tx, make_response(inv, 404, to_tag="tt"), 1.0)
    layer.datagrams_to_send()
    assert times(run(layer, 2.0)) == [1.5]
    ack = request("ACK", to_tag="tt", cseq_method="ACK")
    layer.receive_request(ack, UAC, 2.0)
    assert tx.state is State.CONFIRMED
    assert layer.events() == []  # the ACK of a non-2xx stays in the transaction
    layer.receive_request(ack, UAC, 2.1)  # retransmitted ACK: absorbed
    assert layer.events() == [] and layer.datagrams_to_send() == []
    assert run(layer, 6.99) == []  # no more Timer G
    assert layer.counts == (0, 1)
    run(layer, 7.0)  # Timer I = T4
    assert layer.counts == (0, 0)
    assert layer.events() == []


def test_invite_server_reliable_non_2xx_no_timer_g_and_timer_i_zero() -> None:
    layer = TransactionLayer(TIMERS)
    inv = request(transport="TCP")
    tx = new_server(layer, inv, UAC_TCP)
    layer.respond(tx, make_response(inv, 486, to_tag="tt"), 1.0)
    layer.datagrams_to_send()
    assert run(layer, 10.0) == []
    layer.receive_request(
        request("ACK", to_tag="tt", cseq_method="ACK", transport="TCP"), UAC_TCP, 10.0
    )
    run(layer, 10.0)
    assert layer.counts == (0, 0)


def test_invite_server_reliable_non_2xx_timer_h() -> None:
    layer = TransactionLayer(TIMERS)
    inv = request(transport="TCP")
    tx = new_server(layer, inv, UAC_TCP)
    layer.respond(tx, make_response(inv, 486, to_tag="tt"), 1.0)
    run(layer, 33.0)
    assert layer.events() == [TransactionTimedOut(tx)]


def test_invite_server_2xx_retransmitted_until_ack() -> None:
    layer = TransactionLayer(TIMERS)
    inv = request()
    tx = new_server(layer, inv)
    layer.respond(tx, make_response(inv, 200, to_tag="tt"), 1.0)
    ((wire, _),) = layer.datagrams_to_send()
    assert tx.state is State.ACCEPTED
    sent = run(layer, 5.0)
    assert times(sent) == [1.5, 2.5, 4.5]  # T1, doubling to T2 (RFC 3261 13.3.1.4)
    assert {data for _, data, _ in sent} == {wire}
    layer.receive_request(request(), UAC, 5.0)  # INVITE retransmission: absorbed
    assert layer.datagrams_to_send() == [] and layer.events() == []
    # The ACK of a 2xx has a branch of its own and is the dialog's business.
    ack = request("ACK", branch="z9hG4bKack", to_tag="tt", cseq_method="ACK")
    layer.receive_request(ack, UAC, 5.5)
    assert layer.events() == [AckReceived(ack, UAC)]
    assert run(layer, 32.99) == []  # retransmissions stopped
    assert layer.counts == (0, 1)  # Timer L keeps absorbing INVITE retransmissions
    run(layer, 33.0)  # Timer L = 64*T1
    assert layer.counts == (0, 0)
    assert layer.events() == []


def test_invite_server_2xx_without_ack_times_out_at_timer_l() -> None:
    layer = TransactionLayer(TIMERS)
    inv = request()
    tx = new_server(layer, inv)
    layer.respond(tx, make_response(inv, 200, to_tag="tt"), 1.0)
    layer.datagrams_to_send()
    sent = run(layer, 32.99)
    assert times(sent) == [1.5, 2.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5, 32.5]
    run(layer, 33.0)
    assert layer.events() == [TransactionTimedOut(tx)]
    assert layer.counts == (0, 0)


def test_invite_server_2xx_retransmitted_over_reliable_transport_too() -> None:
    # RFC 3261 13.3.1.4: "independent of whatever transport protocols are used".
    layer = TransactionLayer(TIMERS)
    inv = request(transport="TCP")
    tx = new_server(layer, inv, UAC_TCP)
    layer.respond(tx, make_response(inv, 200, to_tag="tt"), 1.0)
    layer.datagrams_to_send()
    assert times(run(layer, 5.0)) == [1.5, 2.5, 4.5]
    layer.receive_request(
        request("ACK", branch="z9hG4bKack", to_tag="tt", cseq_method="ACK", transport="TCP"),
        UAC_TCP,
        5.0,
    )
    assert [type(e) for e in layer.events()] == [AckReceived]
    assert run(layer, 32.0) == []


def test_invite_server_further_2xx_from_the_tu_pass_and_late_responses_do_not() -> None:
    layer = TransactionLayer(TIMERS)
    inv = request()
    tx = new_server(layer, inv)
    ok = make_response(inv, 200, to_tag="tt")
    layer.respond(tx, ok, 1.0)
    layer.datagrams_to_send()
    layer.respond(tx, ok, 1.1)
    assert len(layer.datagrams_to_send()) == 1
    layer.respond(tx, make_response(inv, 500, to_tag="tt"), 1.2)
    assert layer.datagrams_to_send() == []


def test_responses_after_the_final_one_are_not_sent() -> None:
    layer = TransactionLayer(TIMERS)
    inv = request()
    tx = new_server(layer, inv)
    layer.respond(tx, make_response(inv, 486, to_tag="tt"), 1.0)
    layer.datagrams_to_send()
    layer.respond(tx, make_response(inv, 200, to_tag="tt"), 1.1)
    assert layer.datagrams_to_send() == []
    assert tx.state is State.COMPLETED


# --- non-INVITE server (RFC 3261 17.2.2) --------------------------------------------------------


def test_non_invite_server_retransmission_answered_with_last_response_then_timer_j() -> None:
    layer = TransactionLayer(TIMERS)
    req = request("OPTIONS")
    tx = new_server(layer, req)
    assert tx.state is State.TRYING
    layer.receive_request(request("OPTIONS"), UAC, 0.1)  # Trying: absorbed
    assert layer.datagrams_to_send() == [] and layer.events() == []
    layer.respond(tx, make_response(req, 200, to_tag="tt"), 0.2)
    ((wire, _),) = layer.datagrams_to_send()
    assert tx.state is State.COMPLETED
    layer.receive_request(request("OPTIONS"), UAC, 1.0)
    assert layer.datagrams_to_send() == [(wire, UAC)]
    assert layer.events() == []
    assert run(layer, 32.19) == []  # final responses are not retransmitted on their own
    assert layer.counts == (0, 1)
    run(layer, 32.2)  # Timer J = 64*T1
    assert layer.counts == (0, 0)
    assert layer.events() == []


def test_non_invite_server_provisional_is_resent() -> None:
    layer = TransactionLayer(TIMERS)
    req = request("REGISTER", uri="sip:example.com")
    tx = new_server(layer, req)
    layer.respond(tx, make_response(req, 100), 0.1)
    ((wire, _),) = layer.datagrams_to_send()
    assert tx.state is State.PROCEEDING
    layer.receive_request(request("REGISTER", uri="sip:example.com"), UAC, 0.5)
    assert layer.datagrams_to_send() == [(wire, UAC)]


def test_non_invite_server_timer_j_zero_over_reliable_transport() -> None:
    layer = TransactionLayer(TIMERS)
    req = request("OPTIONS", transport="TCP")
    tx = new_server(layer, req, UAC_TCP)
    layer.respond(tx, make_response(req, 200, to_tag="tt"), 0.2)
    run(layer, 0.2)
    assert layer.counts == (0, 0)


# --- CANCEL, merged requests, RFC 2543 peers ---------------------------------------------------


def test_cancel_matches_its_invite() -> None:
    layer = TransactionLayer(TIMERS)
    inv_tx = new_server(layer, request())
    cancel = request("CANCEL")
    cancel_tx = new_server(layer, cancel, now=1.0)
    assert cancel_tx is not inv_tx
    assert layer.find_invite_for_cancel(cancel) is inv_tx
    assert layer.find_invite_for_cancel(request("CANCEL", branch="z9hG4bKelse")) is None
    assert layer.find_invite_for_cancel(request("CANCEL", sent_by="192.0.2.99")) is None
    # Answer the CANCEL and the INVITE it cancelled.
    layer.respond(cancel_tx, make_response(cancel, 200, to_tag="tt"), 1.0)
    layer.respond(inv_tx, make_response(inv_tx.request, 487, to_tag="tt"), 1.0)
    assert [first_line(d) for d, _ in layer.datagrams_to_send()] == [
        "SIP/2.0 200 OK",
        "SIP/2.0 487 Request Terminated",
    ]


def test_cancel_matches_an_rfc2543_invite() -> None:
    layer = TransactionLayer(TIMERS)
    inv_tx = new_server(layer, request(branch="oldstyle"))
    assert layer.find_invite_for_cancel(request("CANCEL", branch="oldstyle")) is inv_tx
    assert layer.find_invite_for_cancel(request("CANCEL", branch="oldstyle", cseq=2)) is None
    assert (
        layer.find_invite_for_cancel(request("CANCEL", branch="oldstyle", from_tag="someone-else"))
        is None
    )


def test_rfc2543_retransmission_and_ack_match_without_magic_cookie() -> None:
    layer = TransactionLayer(TIMERS)
    inv = request(branch="")
    tx = new_server(layer, inv)
    layer.respond(tx, make_response(inv, 486, to_tag="tt"), 0.1)
    ((wire, _),) = layer.datagrams_to_send()
    layer.receive_request(request(branch=""), UAC, 0.2)
    assert layer.datagrams_to_send() == [(wire, UAC)]
    layer.receive_request(request("ACK", branch="", to_tag="tt", cseq_method="ACK"), UAC, 0.3)
    assert tx.state is State.CONFIRMED


def test_merged_request_gets_482() -> None:
    layer = TransactionLayer(TIMERS)
    first = new_server(layer, request(branch="z9hG4bKpath1"))
    # The same request forked back to us over another path (RFC 3261 8.2.2.2).
    merged = request(branch="z9hG4bKpath2", sent_by="192.0.2.30:5060")
    layer.receive_request(merged, Address("192.0.2.30", 5060), 0.1)
    assert layer.events() == []
    ((wire, dest),) = layer.datagrams_to_send()
    assert dest == Address("192.0.2.30", 5060)
    loop = parse_message(wire)
    assert isinstance(loop, Response)
    assert (loop.status, loop.top_via.branch) == (482, "z9hG4bKpath2")
    # A request inside a dialog (To tag) and a new CSeq are not merged.
    new_server(layer, request(branch="z9hG4bKpath3", cseq=2))
    new_server(layer, request("INFO", branch="z9hG4bKpath4", to_tag="tt"))
    new_server(layer, request("INFO", branch="z9hG4bKpath5", to_tag="tt"))
    # Once the first transaction is over, the same identifiers are free again.
    layer.respond(first, make_response(first.request, 486, to_tag="tt"), 1.0)
    layer.receive_request(
        request("ACK", branch="z9hG4bKpath1", to_tag="tt", cseq_method="ACK"), UAC, 1.1
    )
    run(layer, 10.0)
    new_server(layer, request(branch="z9hG4bKpath6"), now=10.0)


def test_new_branch_is_unique_and_has_the_magic_cookie() -> None:
    branches = {new_branch() for _ in range(1000)}
    assert len(branches) == 1000
    assert all(b.startswith("z9hG4bK") for b in branches)


# --- two endpoints shuttling bytes (aioquic style, no sockets) ------------------------------


Handler = Callable[["Node", StackEvent, float], None]


@dataclass
class Node:
    address: Address
    endpoint: SipEndpoint
    handler: Handler
    seen: list[StackEvent] = field(default_factory=list)
    dialog: Dialog | None = None
    acks: dict[str, Request] = field(default_factory=dict)


@dataclass
class Network:
    """Moves bytes between endpoints at the shared clock; ``drop`` loses chosen packets."""

    now: float = 0.0
    nodes: dict[tuple[str, int], Node] = field(default_factory=dict)
    drop: Callable[[bytes], bool] = lambda data: False
    wire: list[tuple[float, str, str]] = field(default_factory=list)

    def add(self, address: Address, handler: Handler) -> Node:
        node = Node(address, SipEndpoint(timers=TIMERS), handler)
        self.nodes[(address.host, address.port)] = node
        return node

    def pump(self) -> None:
        moved = True
        while moved:
            moved = False
            for node in list(self.nodes.values()):
                for event in node.endpoint.events():
                    node.seen.append(event)
                    node.handler(node, event, self.now)
                    moved = True
                for data, dest in node.endpoint.datagrams_to_send():
                    moved = True
                    lost = self.drop(data)
                    self.wire.append(
                        (
                            self.now,
                            str(node.address.port),
                            first_line(data) + (" (lost)" if lost else ""),
                        )
                    )
                    if lost:
                        continue
                    peer = self.nodes[(dest.host, dest.port)]
                    source = Address(node.address.host, node.address.port, dest.transport)
                    peer.endpoint.receive(data, source, self.now)

    def advance(self, until: float) -> None:
        self.pump()
        while True:
            due = [
                (t, n)
                for n in self.nodes.values()
                if (t := n.endpoint.next_timer()) is not None and t <= until
            ]
            if not due:
                break
            self.now = min(t for t, _ in due)
            for t, node in due:
                if t == self.now:
                    node.endpoint.handle_timer(self.now)
            self.pump()
        self.now = until


def via(node: Node) -> str:
    a = node.address
    return f"SIP/2.0/UDP {a.host}:{a.port};branch={new_branch()};rport"


def callee(node: Node, event: StackEvent, now: float) -> None:
    """Answers INVITE with 180 then 200, BYE with 200 inside its dialog."""
    if not isinstance(event, RequestReceived):
        return
    req, tx = event.request, event.transaction
    if req.method == "INVITE":
        node.endpoint.reply(tx, 180, now, to_tag="callee")
        node.dialog = Dialog.from_uas(req, "callee")
        node.endpoint.reply(
            tx, 200, now, to_tag="callee", headers=(("Contact", "<sip:bob@192.0.2.20:5060>"),)
        )
    elif req.method == "BYE":
        dialog = node.dialog
        assert dialog is not None
        assert dialog_id_of_request(req) == dialog.id
        assert dialog.check_remote_cseq(req)
        node.endpoint.reply(tx, 200, now)


def caller(node: Node, event: StackEvent, now: float) -> None:
    """ACKs every 2xx to its INVITE (retransmissions too: RFC 3261 13.2.2.4)."""
    if not isinstance(event, ResponseReceived) or event.transaction.request.method != "INVITE":
        return
    resp = event.response
    if not 200 <= resp.status < 300:
        return
    invite = event.transaction.request
    if node.dialog is None:
        node.dialog = Dialog.from_uac(invite, resp)
    tag = resp.to.tag or ""
    if tag not in node.acks:
        node.acks[tag] = node.dialog.create_request("ACK", via=via(node), cseq=invite.cseq.number)
    node.endpoint.layer.send_ack_2xx(node.acks[tag], event.transaction.dest)


def place_call(net: Network, alice: Node, bob: Node) -> ClientTransaction:
    invite = request(
        branch=new_branch(), sent_by=f"{alice.address.host}:5060", uri="sip:bob@192.0.2.20"
    )
    invite.headers.set("Via", via(alice))
    tx = alice.endpoint.send_request(invite, bob.address, net.now)
    net.pump()
    return tx


def hang_up(net: Network, alice: Node, bob: Node) -> ClientTransaction:
    assert alice.dialog is not None
    bye = alice.dialog.create_request("BYE", via=via(alice))
    tx = alice.endpoint.send_request(bye, bob.address, net.now)
    net.pump()
    return tx


def test_two_endpoints_invite_200_ack_bye() -> None:
    net = Network()
    alice = net.add(UAC, caller)
    bob = net.add(UAS, callee)
    invite_tx = place_call(net, alice, bob)
    assert [line for _, _, line in net.wire] == [
        "INVITE sip:bob@192.0.2.20 SIP/2.0",
        "SIP/2.0 180 Ringing",
        "SIP/2.0 200 OK",
        "ACK sip:bob@192.0.2.20:5060 SIP/2.0",
    ]
    assert invite_tx.state is State.ACCEPTED
    assert [type(e) for e in bob.seen] == [RequestReceived, AckReceived]
    assert alice.dialog is not None and bob.dialog is not None
    assert alice.dialog.id == (bob.dialog.call_id, bob.dialog.remote_tag, bob.dialog.local_tag)
    # Bob's Via got received/rport stamped with Alice's real address.
    stamped = bob.seen[0]
    assert isinstance(stamped, RequestReceived)
    assert stamped.request.top_via.params["rport"] == "5060"
    net.advance(40.0)
    assert net.wire[4:] == []  # the ACK stopped the 200 retransmissions
    assert alice.endpoint.layer.counts == (0, 0)
    assert bob.endpoint.layer.counts == (0, 0)
    bye_tx = hang_up(net, alice, bob)
    assert [line for _, _, line in net.wire[4:]] == [
        "BYE sip:bob@192.0.2.20:5060 SIP/2.0",
        "SIP/2.0 200 OK",
    ]
    assert bye_tx.state is State.COMPLETED
    assert [type(e) for e in alice.seen] == [ResponseReceived] * 3
    net.advance(80.0)
    assert alice.endpoint.layer.counts == (0, 0)
    assert bob.endpoint.layer.counts == (0, 0)
    assert alice.endpoint.next_timer() is None and bob.endpoint.next_timer() is None


def test_two_endpoints_recover_from_lost_invite_and_lost_ack() -> None:
    net = Network()
    alice = net.add(UAC, caller)
    bob = net.add(UAS, callee)
    lost: list[str] = []

    def drop(data: bytes) -> bool:
        line = first_line(data).split(" ", 1)[0]
        if line in ("INVITE", "ACK") and line not in lost:
            lost.append(line)  # the first INVITE and the first ACK vanish
            return True
        return False

    net.drop = drop
    place_call(net, alice, bob)
    assert bob.seen == []
    net.advance(0.5)  # Timer A brings the INVITE through; the ACK of its 200 is lost
    assert [type(e) for e in bob.seen] == [RequestReceived]
    net.advance(1.0)  # Timer G: Bob retransmits the 200; Alice re-ACKs it
    assert [type(e) for e in bob.seen] == [RequestReceived, AckReceived]
    assert [line for _, _, line in net.wire] == [
        "INVITE sip:bob@192.0.2.20 SIP/2.0 (lost)",
        "INVITE sip:bob@192.0.2.20 SIP/2.0",
        "SIP/2.0 180 Ringing",
        "SIP/2.0 200 OK",
        "ACK sip:bob@192.0.2.20:5060 SIP/2.0 (lost)",
        "SIP/2.0 200 OK",
        "ACK sip:bob@192.0.2.20:5060 SIP/2.0",
    ]
    assert [t for t, _, _ in net.wire] == [0.0, 0.5, 0.5, 0.5, 0.5, 1.0, 1.0]
    net.advance(40.0)
    assert len(net.wire) == 7
    hang_up(net, alice, bob)
    assert net.wire[-1][2] == "SIP/2.0 200 OK"


@pytest.mark.parametrize("lose", ["BYE", "SIP/2.0"])
def test_two_endpoints_bye_survives_loss(lose: str) -> None:
    net = Network()
    alice = net.add(UAC, caller)
    bob = net.add(UAS, callee)
    place_call(net, alice, bob)
    net.advance(40.0)
    lost: list[bool] = []

    def drop(data: bytes) -> bool:
        if data.startswith(lose.encode()) and not lost:
            lost.append(True)
            return True
        return False

    net.drop = drop
    bye_tx = hang_up(net, alice, bob)
    net.advance(41.0)  # Timer E retransmits at T1: a lost BYE or a lost 200 is recovered
    assert bye_tx.state is State.COMPLETED
    byes = [e for e in bob.seen if isinstance(e, RequestReceived) and e.request.method == "BYE"]
    assert len(byes) == 1  # a retransmitted BYE is absorbed by Bob's transaction


# --- dialogs (RFC 3261 12) -------------------------------------------------------------------


def test_uac_dialog_reverses_record_route_and_loose_routes() -> None:
    inv = request()
    ok = response(inv, 200)
    ok.headers.add("Record-Route", "<sip:p2.example.com;lr>, <sip:p1.example.com;lr>")
    ok.headers.add("Contact", "<sip:bob@192.0.2.20:5070>")
    dialog = Dialog.from_uac(inv, ok)
    assert dialog.route_set == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    bye = dialog.create_request("BYE", via="SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKb")
    assert str(bye.uri) == "sip:bob@192.0.2.20:5070"
    assert bye.headers.get_all("Route") == dialog.route_set
    assert bye.cseq == type(bye.cseq)(2, "BYE")
    assert str(dialog.next_hop()) == "sip:p1.example.com;lr"
    again = parse_message(bye.encode())
    assert isinstance(again, Request) and again.to.tag == "totag"


def test_uas_dialog_strict_route_and_cseq_order() -> None:
    inv = request(extra=("Record-Route: <sip:strict.example.com>",))
    dialog = Dialog.from_uas(inv, "local")
    bye = dialog.create_request("BYE", via="SIP/2.0/UDP 192.0.2.20;branch=z9hG4bKc")
    # Strict routing: the first route becomes the Request-URI, the target goes last.
    assert str(bye.uri) == "sip:strict.example.com"
    assert bye.headers.get_all("Route") == ["<sip:alice@192.0.2.10>"]
    assert bye.to.tag == "fromtag" and bye.from_.tag == "local"
    assert dialog.check_remote_cseq(request("INFO", cseq=2, to_tag="local"))
    assert not dialog.check_remote_cseq(request("INFO", cseq=2, to_tag="local"))
    assert dialog.check_remote_cseq(request("ACK", cseq=1, to_tag="local"))


def test_dialog_with_an_rfc2543_peer_without_tag() -> None:
    inv = request()
    inv.headers.set("From", "<sip:alice@example.com>")
    dialog = Dialog.from_uas(inv, "local")
    assert dialog.remote_tag == ""
    bye = dialog.create_request("BYE", via="SIP/2.0/UDP 192.0.2.20;branch=z9hG4bKd")
    # RFC 3261 12.2.1.1: a null remote tag means no tag parameter, not an empty one.
    again = parse_message(bye.encode())
    assert isinstance(again, Request)
    assert again.to.tag is None


# --- random interleavings: nothing raises, nothing leaks -------------------------------------

OPS = st.lists(
    st.tuples(
        st.sampled_from(["send", "response", "request", "respond", "ack", "advance"]),
        st.integers(0, 5),  # which transaction / branch
        st.sampled_from([100, 180, 200, 202, 302, 486, 503]),
        st.sampled_from(["INVITE", "OPTIONS", "BYE"]),
        st.floats(0, 40),
        st.booleans(),  # reliable transport
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(OPS)
def test_random_interleavings_leave_no_transaction_behind(
    ops: list[tuple[str, int, int, str, float, bool]],
) -> None:
    layer = TransactionLayer(TIMERS)
    now = 0.0
    clients: list[ClientTransaction] = []
    servers: list[ServerTransaction] = []
    for op, n, status, method, dt, reliable in ops:
        transport = "TCP" if reliable else "UDP"
        dest = UAS_TCP if reliable else UAS
        source = UAC_TCP if reliable else UAC
        branch = f"z9hG4bK{method}{n}{transport}"
        if op == "send":
            clients.append(
                layer.send_request(request(method, branch=branch, transport=transport), dest, now)
            )
        elif op == "response" and clients:
            tx = clients[n % len(clients)]
            layer.receive_response(response(tx.request, status), tx.dest, now)
        elif op == "request":
            layer.receive_request(request(method, branch=branch, transport=transport), source, now)
        elif op == "respond" and servers:
            tx = servers[n % len(servers)]
            layer.respond(tx, make_response(tx.request, status, to_tag="tt"), now)
        elif op == "ack" and servers:
            tx = servers[n % len(servers)]
            ack_branch = tx.request.top_via.branch if status >= 300 else f"z9hG4bKack{n}"
            layer.receive_request(
                request(
                    "ACK",
                    branch=ack_branch or "",
                    to_tag="tt",
                    cseq_method="ACK",
                    transport=transport,
                ),
                tx.source,
                now,
            )
        elif op == "advance":
            now += dt
            run(layer, now)
        servers += [e.transaction for e in layer.events() if isinstance(e, RequestReceived)]
        layer.datagrams_to_send()
    # The TUs finish their work: every server transaction gets a final response, every
    # client transaction still waiting gets one; then time passes.
    for stx in servers:
        layer.respond(stx, make_response(stx.request, 486, to_tag="tt"), now)
    for ctx in clients:
        if ctx.state in (State.CALLING, State.TRYING, State.PROCEEDING):
            layer.receive_response(response(ctx.request, 500), ctx.dest, now)
    run(layer, now + 1000.0)
    assert layer.counts == (0, 0)
    assert layer.next_timer() is None
    assert layer._accepted == {} and layer._recent == {}

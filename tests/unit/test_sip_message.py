"""signaling.message: parsing, typed access, serialisation, framing, down to the exact error."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signaling.errors import ParseError
from signaling.headers import AuthHeader, CSeq, parse_auth, parse_name_addr, parse_via
from signaling.message import (
    MAX_HEADER_LINES,
    MAX_LINE_LENGTH,
    MAX_MESSAGE_SIZE,
    Headers,
    Request,
    Response,
    StreamFramer,
    header_tag,
    make_response,
    parse_message,
)
from signaling.stack import SipEndpoint
from signaling.transaction import Address
from signaling.uri import AbsoluteUri, SipUri, parse_uri

SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"


def crlf(text: str) -> bytes:
    """A message written with newlines, put on the wire with CRLF."""
    return text.replace("\n", "\r\n").encode()


def invite(
    *extra: str,
    body: bytes = b"",
    content_length: int | None = None,
    via: str = "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds",
) -> bytes:
    length = len(body) if content_length is None else content_length
    lines = [
        "INVITE sip:bob@example.com SIP/2.0",
        f"Via: {via}",
        "Max-Forwards: 70",
        'From: "Alice" <sip:alice@example.com>;tag=1928301774',
        "To: Bob <sip:bob@example.com>",
        "Call-ID: a84b4c76e66710@pc33.example.com",
        "CSeq: 314159 INVITE",
        "Contact: <sip:alice@192.0.2.1>",
        *extra,
        f"Content-Length: {length}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def parse_request(data: bytes, **kwargs: bool) -> Request:
    msg = parse_message(data, **kwargs)
    assert isinstance(msg, Request)
    return msg


def parse_response(data: bytes) -> Response:
    msg = parse_message(data)
    assert isinstance(msg, Response)
    return msg


def reason_of(exc: pytest.ExceptionInfo[ParseError]) -> str:
    return str(exc.value)


# --- start lines and basic structure -----------------------------------------------------


def test_request_basic() -> None:
    req = parse_request(invite("Content-Type: application/sdp", body=SDP))
    assert req.method == "INVITE"
    assert isinstance(req.uri, SipUri)
    assert (req.uri.user, req.uri.host, req.uri.port) == ("bob", "example.com", None)
    assert req.body == SDP
    assert req.content_type == "application/sdp"
    assert req.max_forwards == 70
    assert req.call_id == "a84b4c76e66710@pc33.example.com"
    assert req.cseq == CSeq(314159, "INVITE")
    assert repr(req) == "<Request INVITE sip:bob@example.com>"


def test_response_basic() -> None:
    resp = parse_response(
        crlf(
            "SIP/2.0 180 Ringing\n"
            "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\n"
            "From: <sip:a@example.com>;tag=1\n"
            "To: <sip:b@example.com>;tag=2\n"
            "Call-ID: c\n"
            "CSeq: 1 INVITE\n"
            "Content-Length: 0\n\n"
        )
    )
    assert (resp.status, resp.reason) == (180, "Ringing")
    assert resp.to.tag == "2"
    assert repr(resp) == "<Response 180 Ringing>"


def test_response_reason_may_be_empty_or_utf8() -> None:
    base = (
        "\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\nFrom: <sip:a@h>;tag=1\nTo: <sip:b@h>\n"
        "Call-ID: c\nCSeq: 1 INVITE\nContent-Length: 0\n\n"
    )
    assert parse_response(crlf("SIP/2.0 100 " + base)).reason == ""
    assert parse_response(crlf("SIP/2.0 200 Окей" + base)).reason == "Окей"


def test_body_past_content_length_is_ignored_on_datagrams() -> None:
    req = parse_request(invite(body=SDP) + b"junk after the message")
    assert req.body == SDP


def test_content_length_absent_on_datagram_takes_the_rest() -> None:
    data = invite(body=SDP).replace(f"Content-Length: {len(SDP)}\r\n".encode(), b"")
    assert parse_request(data).body == SDP


def test_bare_lf_line_endings_are_tolerated() -> None:
    data = invite().replace(b"\r\n", b"\n")
    assert parse_request(data).call_id == "a84b4c76e66710@pc33.example.com"


def test_bare_lf_headers_with_crlf_blank_lines_in_body() -> None:
    # The end of the headers is the first empty line, whichever line ending it uses.
    body = b"line1\r\n\r\nline3"
    data = invite(body=body).split(b"\r\n\r\n", 1)[0].replace(b"\r\n", b"\n") + b"\n\n" + body
    req = parse_request(data)
    assert req.body == body


def test_leading_blank_lines_before_start_line_are_ignored() -> None:
    # RFC 3261 7.5: CRLFs before the start line are skipped.
    assert parse_request(b"\r\n" + invite()).method == "INVITE"
    assert parse_request(b"\r\n\r\n\r\n" + invite()).method == "INVITE"


def test_encode_round_trip() -> None:
    data = invite("Content-Type: application/sdp", "X-Custom: Some   Value", body=SDP)
    req = parse_request(data)
    again = parse_request(req.encode())
    assert list(again.headers) == list(req.headers)
    assert again.body == req.body
    assert again.start_line() == "INVITE sip:bob@example.com SIP/2.0"
    assert b"X-Custom: Some   Value\r\n" in req.encode()


def test_encode_recomputes_content_length() -> None:
    req = parse_request(invite(body=SDP))
    req.body = b"abc"
    wire = req.encode()
    assert wire.endswith(b"Content-Length: 3\r\n\r\nabc")
    assert wire.count(b"Content-Length") == 1


# --- folding, compact forms, case ----------------------------------------------------------


def test_folded_header_values_are_unfolded() -> None:
    data = invite(
        "Subject: I know you're there,\r\n   pick up the phone\r\n\tand talk to me!",
        "NewFangledHeader:   newfangled value\r\n continued newfangled value",
    )
    req = parse_request(data)
    assert req.headers.get("Subject") == ("I know you're there, pick up the phone and talk to me!")
    assert req.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"


def test_folded_via_and_to_parse_to_their_values() -> None:
    data = crlf(
        "OPTIONS sip:u@example.com SIP/2.0\n"
        "Via  : SIP  /   2.0\n /UDP\n    192.0.2.2;branch=390skdjuw\n"
        "TO :\n sip:vivekg@example.com ;   tag    = 1918181833n\n"
        'from   : "J Rosenberg \\\\\\""       <sip:jdrosen@example.com>\n  ;\n  tag = 98asjd8\n'
        "Call-ID: c\ncseq: 0009\n  OPTIONS\nContent-Length   : 0\n\n"
    )
    req = parse_request(data)
    via = req.top_via
    assert (via.transport, via.host, via.branch) == ("UDP", "192.0.2.2", "390skdjuw")
    assert req.to.tag == "1918181833n"
    assert req.from_.tag == "98asjd8"
    assert req.from_.display_name == 'J Rosenberg \\"'
    assert req.cseq == CSeq(9, "OPTIONS")


def test_continuation_line_before_any_header_is_an_error() -> None:
    with pytest.raises(ParseError, match="continuation line before any header"):
        parse_message(b"OPTIONS sip:a@b SIP/2.0\r\n  folded\r\nVia: x\r\n\r\n")


def test_compact_forms_are_expanded() -> None:
    data = (
        crlf(
            "INVITE sip:bob@example.com SIP/2.0\n"
            "v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKc\n"
            "f: <sip:a@example.com>;tag=1\n"
            "t: <sip:b@example.com>\n"
            "i: compact@example.com\n"
            "CSeq: 1 INVITE\n"
            "m: <sip:a@192.0.2.1>\n"
            "c: application/sdp\n"
            "k: timer\n"
            "s: hello\n"
            f"l: {len(SDP)}\n\n"
        )
        + SDP
    )
    req = parse_request(data)
    assert req.call_id == "compact@example.com"
    assert req.from_.tag == "1"
    assert req.top_via.branch == "z9hG4bKc"
    assert [str(c.uri) for c in req.contacts] == ["sip:a@192.0.2.1"]
    assert req.content_type == "application/sdp"
    assert req.headers.get("Supported") == "timer"
    assert req.headers.get("subject") == "hello"
    assert req.body == SDP
    names = [name for name, _ in req.headers]
    assert names == [
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Content-Type",
        "Supported",
        "Subject",
        "Content-Length",
    ]


def test_header_names_are_case_insensitive() -> None:
    req = parse_request(invite("x-lower: 1").replace(b"Max-Forwards: 70", b"MaX-fOrWaRdS: 0068"))
    assert req.headers.get("X-LOWER") == "1"
    assert "x-lower" in req.headers
    assert 42 not in req.headers
    assert req.headers.fields("max-forwards") == ["0068"]
    assert req.max_forwards == 68


def test_unknown_header_with_odd_value_is_kept() -> None:
    req = parse_request(invite("UnknownHeaderWithUnusualValue: ;;,,;;,;"))
    assert req.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert b"UnknownHeaderWithUnusualValue: ;;,,;;,;\r\n" in req.encode()


# --- escaping ----------------------------------------------------------------------------


def test_escaped_uris_are_kept_verbatim() -> None:
    data = crlf(
        "INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0\n"
        "To: sip:%75se%72@example.com\n"
        "From: <sip:I%20have%20spaces@example.net>;tag=938\n"
        "Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bKkdjuw\n"
        "Call-ID: esc\nCSeq: 1 INVITE\n"
        "Contact:\n  <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>\n"
        "Content-Length: 0\n\n"
    )
    req = parse_request(data)
    assert isinstance(req.uri, SipUri)
    assert req.uri.user == "sips%3Auser%40example.com"
    assert req.uri.user_unescaped == "sips:user@example.com"
    assert str(req.uri) == "sip:sips%3Auser%40example.com@example.net"
    assert req.to.sip_uri.user == "%75se%72"
    assert req.to.sip_uri.user_unescaped == "user"
    contact = req.contacts[0].sip_uri
    assert contact.params == {"%6C%72": None, "n%61me": "v%61lue%25%34%31"}
    assert str(contact) == "sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31"
    wire = req.encode()
    assert b"INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0\r\n" in wire
    assert b"To: sip:%75se%72@example.com\r\n" in wire
    # %2541 unescapes once to %41, never twice to A.
    assert contact.param("n%61me") == "v%61lue%25%34%31"


def test_escaped_null_is_a_distinct_user() -> None:
    a = parse_uri("sip:%00@host5.example.com")
    b = parse_uri("sip:%00%00@host5.example.com")
    assert isinstance(a, SipUri) and isinstance(b, SipUri)
    assert a.user_unescaped == "\x00"
    assert b.user_unescaped == "\x00\x00"


def test_escaped_method_is_not_the_method() -> None:
    req = parse_request(
        crlf(
            "RE%47IST%45R sip:registrar.example.com SIP/2.0\n"
            "Via: SIP/2.0/UDP h;branch=z9hG4bK1\nFrom: <sip:a@h>;tag=1\nTo: <sip:a@h>\n"
            "Call-ID: c\nCSeq: 1 RE%47IST%45R\nContent-Length: 0\n\n"
        )
    )
    assert req.method == "RE%47IST%45R"


def test_quoted_display_names() -> None:
    addr = parse_name_addr('"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam = newvalue')
    assert addr.display_name == 'Quoted string ""'
    assert addr.params == {"newparam": "newvalue"}
    # An escaped backslash just before the closing quote does not escape the quote.
    addr = parse_name_addr('"back\\\\" <sip:a@example.com>;tag=x')
    assert addr.display_name == "back\\"
    assert addr.tag == "x"
    assert str(addr) == '"back\\\\" <sip:a@example.com>;tag=x'
    addr = parse_name_addr('"semi;colon\\\\" <sip:a@example.com>;tag=y')
    assert addr.display_name == "semi;colon\\"
    assert addr.tag == "y"


def test_display_name_tokens_and_lws() -> None:
    assert parse_name_addr("caller<sip:caller@example.com>;tag=323").display_name == "caller"
    assert parse_name_addr("A. Bell <sip:a@example.com>").display_name == "A. Bell"


# --- list headers ----------------------------------------------------------------------------


def test_list_headers_split_on_commas_and_fields() -> None:
    data = invite(
        "Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bK2, SIP/2.0/TCP p2.example.com:5070"
        ";branch=z9hG4bK3",
        'Route: <sip:p1.example.com;lr>, "Proxy, Two" <sip:p2.example.com;lr>',
        "Route: <sip:p3.example.com;lr>",
        "Allow: INVITE, ACK,BYE",
        "Subject: one, two",
    )
    req = parse_request(data)
    assert [v.host for v in req.vias] == ["192.0.2.1", "p1.example.com", "p2.example.com"]
    assert req.vias[2].port == 5070
    assert req.vias[2].transport == "TCP"
    assert [str(r.uri) for r in req.routes] == [
        "sip:p1.example.com;lr",
        "sip:p2.example.com;lr",
        "sip:p3.example.com;lr",
    ]
    assert req.routes[1].display_name == "Proxy, Two"
    assert req.headers.get_all("Allow") == ["INVITE", "ACK", "BYE"]
    # Not a list header: commas stay.
    assert req.headers.get_all("Subject") == ["one, two"]
    assert len(req.headers.fields("Via")) == 2


def test_contacts_with_commas_in_quotes_and_star() -> None:
    req = parse_request(
        invite('Contact: "Doe, John" <sip:j@example.com>;q=0.7;expires=3600, <sip:k@example.com>')
    )
    contacts = req.contacts
    assert [c.display_name for c in contacts] == [None, "Doe, John", None]
    assert contacts[1].params == {"q": "0.7", "expires": "3600"}
    star = parse_request(
        crlf(
            "REGISTER sip:example.com SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\n"
            "From: <sip:a@example.com>;tag=1\nTo: <sip:a@example.com>\nCall-ID: c\n"
            "CSeq: 2 REGISTER\nContact: *\nExpires: 0\nContent-Length: 0\n\n"
        )
    )
    assert star.contacts == []
    assert star.headers.get_all("Contact") == ["*"]


def test_headers_multimap_operations() -> None:
    h = Headers([("v", "a"), ("Via", "b"), ("X-A", "1")])
    h.prepend("Via", "z")
    assert h.fields("via") == ["z", "a", "b"]
    h.set("VIA", "only")
    assert list(h) == [("Via", "only"), ("X-A", "1")]
    h.set("X-New", "n")
    assert h.get("x-new") == "n"
    h.remove("x-a")
    assert "X-A" not in h
    copy = h.copy()
    copy.add("Y", "2")
    assert len(copy) == 3 and len(h) == 2
    assert h.get("missing", "dflt") == "dflt"


# --- IPv6 references (RFC 5118) ---------------------------------------------------------------


def test_ipv6_references() -> None:
    uri = parse_uri("sip:[2001:db8::10]:5070")
    assert isinstance(uri, SipUri)
    assert (uri.host, uri.port, uri.host_bare) == ("[2001:db8::10]", 5070, "2001:db8::10")
    ambiguous = parse_uri("sip:[2001:db8::10:5070]")
    assert isinstance(ambiguous, SipUri)
    assert (ambiguous.host, ambiguous.port) == ("[2001:db8::10:5070]", None)
    mapped = parse_uri("sip:ted@[::ffff:192.0.2.2]")
    assert isinstance(mapped, SipUri) and mapped.host_bare == "::ffff:192.0.2.2"
    three = parse_uri("sip:user@[2001:db8:::192.0.2.1]")
    assert isinstance(three, SipUri) and three.host == "[2001:db8:::192.0.2.1]"


def test_ipv6_in_via_with_received() -> None:
    via = parse_via("SIP/2.0/UDP [2001:db8::9:1]:6050;received=2001:db8::9:255;branch=z9hG4bKa")
    assert (via.host, via.port) == ("[2001:db8::9:1]", 6050)
    assert via.params["received"] == "2001:db8::9:255"
    delim = parse_via("SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=z9hG4bKa")
    assert delim.params["received"] == "[2001:db8::9:255]"
    assert str(via) == ("SIP/2.0/UDP [2001:db8::9:1]:6050;received=2001:db8::9:255;branch=z9hG4bKa")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("sip:2001:db8::10", "bad port"),
        ("sip:[2001:db8::10", "unterminated IPv6 reference"),
        ("sip:[2001:db8::zz]", "bad IPv6 reference"),
        ("sip:[2001:db8::1]x", "garbage after IPv6 reference"),
        ("sip:host:99999", "bad port"),
        ("sip:host:²", "bad port"),
        ("sip:host:١٢", "bad port"),
        ("sip:-host", "bad host"),
        ("sip:user@example.com; lr", "illegal character"),
        ("sip:user@host;a=b=c d", "illegal character"),
        ("sip:us er@host", "illegal character"),
        ("sip:@host", "bad user part"),
        ("sip:a:p@ss@host", "bad"),
        ("nocolon", "not a URI"),
        ("1abc:foo", "not a URI"),
        ("sip:host;a b", "illegal character"),
        ("sip:host;=x", "bad URI parameter"),
    ],
)
def test_bad_uris(text: str, error: str) -> None:
    with pytest.raises(ParseError, match=error):
        parse_uri(text)


def test_absolute_uris_are_opaque() -> None:
    tel = parse_uri("tel:+8610123;phone-context=x")
    assert tel == AbsoluteUri("tel", "+8610123;phone-context=x")
    assert tel.user == "+8610123"
    assert str(parse_uri("urn:service:sos")) == "urn:service:sos"


# --- size limits --------------------------------------------------------------------------------


def test_message_too_large_is_513() -> None:
    with pytest.raises(ParseError) as exc:
        parse_message(invite(body=b"x" * MAX_MESSAGE_SIZE))
    assert exc.value.status == 513


def test_too_many_header_lines() -> None:
    extra = [f"X-H{i}: {i}" for i in range(MAX_HEADER_LINES)]
    with pytest.raises(ParseError, match="too many header fields") as exc:
        parse_message(invite(*extra))
    assert exc.value.status == 400


def test_header_line_too_long() -> None:
    with pytest.raises(ParseError, match="header line too long"):
        parse_message(invite("X-Long: " + "a" * MAX_LINE_LENGTH))


def test_long_but_legal_header_values() -> None:
    req = parse_request(invite("X-Long: " + "a" * 4000, "Subject: " + "b" * 4000))
    assert len(req.headers.get("X-Long") or "") == 4000


# --- malformed messages: the exact error --------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "status", "error"),
    [
        (b"garbage", 400, "no end of headers"),
        (b"INVITE sip:a@b SIP/2.0\r\nno colon here\r\n\r\n", 400, "malformed header line"),
        (b"INVITE sip:a@b SIP/2.0\r\nBad Name: x\r\n\r\n", 400, "malformed header line"),
        (invite().replace(b"SIP/2.0\r\n", b"SIP/7.0\r\n", 1), 505, "SIP version SIP/7.0"),
        (invite().replace(b"SIP/2.0\r\n", b"SIP/2\r\n", 1), 400, "bad version"),
        (
            invite().replace(b"INVITE sip:bob@example.com", b"INVITE <sip:bob@example.com>"),
            400,
            "must not be enclosed",
        ),
        (
            invite().replace(b"INVITE sip:bob@example.com", b"INVITE sip:bob@example.com; lr"),
            400,
            "malformed request line",
        ),
        (invite().replace(b"INVITE sip:", b"INV(TE sip:", 1), 400, "bad method"),
        (
            invite().replace(b"CSeq: 314159 INVITE", b"CSeq: 36893488147419103232 INVITE"),
            400,
            "bad CSeq",
        ),
        (
            invite().replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 OPTIONS"),
            400,
            "CSeq method does not match",
        ),
        (invite().replace(b"Max-Forwards: 70", b"Max-Forwards: 300"), 400, "bad Max-Forwards"),
        (invite("Expires: soon"), 400, "bad Expires"),
        (invite("To: <sip:other@example.com>"), 400, "more than one To header"),
        (invite("Call-ID: second"), 400, "more than one Call-ID header"),
        (
            invite().replace(b"Call-ID: a84b4c76e66710@pc33.example.com\r\n", b""),
            400,
            "missing mandatory header Call-ID",
        ),
        (
            invite().replace(b"To: Bob <sip:bob@example.com>", b'To: "Bob <sip:bob@example.com>'),
            400,
            "unbalanced quotes",
        ),
        (
            invite().replace(b"To: Bob <sip:bob@example.com>", b"To: <sip:bob@example.com >"),
            400,
            "whitespace inside <>",
        ),
        (
            invite().replace(b"To: Bob <sip:bob@example.com>", b"To: Bell, A <sip:b@example.com>"),
            400,
            "must be quoted",
        ),
        (invite(via="SIP/2.0/UDP 192.0.2.15;;,;,,"), 400, "bad parameter"),
        (invite(via="HTTP/1.1 192.0.2.15"), 400, "bad Via"),
        (
            invite("Contact: sip:user@example.com?Route=%3Csip:sip.example.com%3E"),
            400,
            "must be enclosed in <>",
        ),
        (invite(content_length=-5), 400, "bad Content-Length"),
    ],
)
def test_malformed_requests(data: bytes, status: int, error: str) -> None:
    with pytest.raises(ParseError, match=error) as exc:
        parse_message(data)
    assert exc.value.status == status
    assert not exc.value.drop


@pytest.mark.parametrize("data", [b"", b"\r\n\r\n", b"\r\n\n\r\n"])
def test_empty_messages_are_dropped(data: bytes) -> None:
    with pytest.raises(ParseError, match="empty message") as exc:
        parse_message(data)
    assert exc.value.drop


def test_content_length_larger_than_body_closes_streams() -> None:
    with pytest.raises(ParseError, match="Content-Length larger than the body") as exc:
        parse_message(invite(body=SDP, content_length=9999))
    assert exc.value.close and exc.value.status == 400


def test_duplicate_content_length_closes_streams() -> None:
    with pytest.raises(ParseError, match="more than one Content-Length") as exc:
        parse_message(invite("Content-Length: 0"))
    assert exc.value.close


def test_stream_framed_body_must_match_content_length() -> None:
    data = invite(body=SDP)
    assert parse_request(data, stream=True).body == SDP
    with pytest.raises(ParseError, match="does not match the framed body") as exc:
        parse_message(data + b"xx", stream=True)
    assert exc.value.close


@pytest.mark.parametrize(
    ("start", "error"),
    [
        ("SIP/2.0 4294967301 better not break the receiver", "bad status code"),
        ("SIP/2.0 099 Low", "bad status code"),
        ("SIP/2.0 700 High", "bad status code"),
        ("SIP/3.0 200 OK", "unsupported version"),
        ("SIP/x 200 OK", "bad status line"),
    ],
)
def test_malformed_responses_are_dropped(start: str, error: str) -> None:
    data = crlf(
        start + "\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\nFrom: <sip:a@h>;tag=1\n"
        "To: <sip:b@h>\nCall-ID: c\nCSeq: 1 INVITE\nContent-Length: 0\n\n"
    )
    with pytest.raises(ParseError, match=error) as exc:
        parse_message(data)
    assert exc.value.drop


def test_response_with_bad_headers_is_dropped_not_answered() -> None:
    data = crlf(
        "SIP/2.0 503 Service Unavailable\nVia: SIP/2.0/TCP h;branch=z9hG4bKz\n"
        "To: <sip:u@example.com>\nFrom: <sip:o@example.net>;tag=2\n"
        "CSeq: 9292394834772304023312 OPTIONS\nCall-ID: c\nContent-Length: 0\n\n"
    )
    with pytest.raises(ParseError, match="bad CSeq") as exc:
        parse_message(data)
    assert exc.value.drop
    with pytest.raises(ParseError) as exc2:
        parse_message(crlf("SIP/2.0 200 OK\nVia: x\nVia: y\nl: 1\nl: 1\n\n"))
    assert exc2.value.drop


def test_parse_error_reason_is_one_safe_line() -> None:
    exc = ParseError("bad\r\nthing" + "x" * 300)
    assert "\r" not in exc.reason and "\n" not in exc.reason
    assert len(exc.reason) == 120


# --- typed access -----------------------------------------------------------------------------


def test_typed_via() -> None:
    req = parse_request(
        invite(via="SIP/2.0/udp 192.0.2.1:5062 (a comment);branch=z9hG4bKa;rport;ttl=16")
    )
    via = req.top_via
    assert via.transport == "UDP"
    assert (via.host, via.port, via.sent_by) == ("192.0.2.1", 5062, "192.0.2.1:5062")
    assert via.branch == "z9hG4bKa"
    assert via.params == {"branch": "z9hG4bKa", "rport": None, "ttl": "16"}
    assert str(via) == "SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bKa;rport;ttl=16"


def test_typed_from_to() -> None:
    req = parse_request(invite())
    assert req.from_.display_name == "Alice"
    assert req.from_.tag == "1928301774"
    assert str(req.from_.uri) == "sip:alice@example.com"
    assert req.to.display_name == "Bob"
    assert req.to.tag is None
    assert str(req.to) == '"Bob" <sip:bob@example.com>'
    copy = req.from_.copy()
    copy.params["tag"] = "other"
    assert req.from_.tag == "1928301774"


def test_name_addr_without_brackets_takes_header_params() -> None:
    addr = parse_name_addr("sip:+19725552222@gw1.example.net;unknownparam")
    assert str(addr.uri) == "sip:+19725552222@gw1.example.net"
    assert addr.params == {"unknownparam": None}
    addr = parse_name_addr("<sip:+19725552222@gw1.example.net;unknownparam>")
    assert isinstance(addr.uri, SipUri) and addr.uri.params == {"unknownparam": None}
    assert addr.params == {}


def test_name_addr_non_sip_scheme() -> None:
    addr = parse_name_addr("<http://www.example.com>;tag=3234233")
    assert isinstance(addr.uri, AbsoluteUri)
    with pytest.raises(ParseError) as exc:
        _ = addr.sip_uri
    assert exc.value.status == 416


def test_typed_cseq_and_missing_headers() -> None:
    req = parse_request(invite())
    assert req.cseq.number == 314159 and str(req.cseq) == "314159 INVITE"
    req.headers.remove("Call-ID")
    with pytest.raises(ParseError, match="missing Call-ID"):
        _ = req.call_id
    req.headers.remove("Via")
    with pytest.raises(ParseError, match="missing Via"):
        _ = req.top_via


def test_typed_contact_route_record_route() -> None:
    req = parse_request(
        invite(
            "Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr>",
            "Route: <sip:p1.example.com;lr>",
        ).replace(
            b"Contact: <sip:alice@192.0.2.1>",
            b'Contact: "A" <sip:alice@192.0.2.1:5070;transport=tcp>;expires=60',
        )
    )
    contact = req.contacts[0]
    assert contact.display_name == "A"
    assert contact.params == {"expires": "60"}
    assert contact.sip_uri.transport == "tcp"
    assert contact.sip_uri.port == 5070
    assert [str(r.uri) for r in req.record_routes] == [
        "sip:p2.example.com;lr",
        "sip:p1.example.com;lr",
    ]
    route = req.routes[0].sip_uri
    assert route.has_param("LR") and route.param("lr") is None


def test_typed_auth_headers() -> None:
    req = parse_request(
        invite(
            'Authorization: Digest username="alice", realm="hub", nonce="abc,def", '
            'uri="sip:bob@example.com", response="0123", algorithm=MD5, qop=auth, nc=00000001, '
            'cnonce="xyz"',
            "Proxy-Authorization: NoOneKnowsThisScheme opaque-data=here",
        )
    )
    (auth,) = req.auth("Authorization")
    assert auth.scheme == "Digest"
    assert auth.params["username"] == "alice"
    assert auth.params["nonce"] == "abc,def"
    assert auth.params["qop"] == "auth"
    text = str(auth)
    assert 'nonce="abc,def"' in text and "qop=auth" in text and "algorithm=MD5" in text
    (proxy,) = req.auth("Proxy-Authorization")
    assert proxy == AuthHeader("NoOneKnowsThisScheme", {"opaque-data": "here"})
    challenge = AuthHeader(
        "Digest",
        {"realm": "hub", "nonce": "n", "qop": "auth", "algorithm": "MD5", "stale": "FALSE"},
    )
    assert str(challenge) == 'Digest realm="hub", nonce="n", qop="auth", algorithm=MD5, stale=FALSE'
    assert parse_auth(str(challenge)) == challenge
    with pytest.raises(ParseError, match="bad auth parameter"):
        parse_auth("Digest realm")
    with pytest.raises(ParseError, match="bad auth scheme"):
        parse_auth('"Digest" realm=x')


def test_header_tag_fast_path() -> None:
    assert header_tag("<sip:a@b>;tag=abc") == "abc"
    assert header_tag("sip:a@b ; TAG = x1;other") == "x1"
    assert header_tag("<sip:a@b>") is None
    assert header_tag(None) is None


# --- make_response ------------------------------------------------------------------------------


def test_make_response_copies_the_transaction_headers() -> None:
    req = parse_request(
        invite(
            "Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bK2, SIP/2.0/UDP p2.example.com"
            ";branch=z9hG4bK3",
            "Record-Route: <sip:p1.example.com;lr>",
            "Subject: not copied",
        )
    )
    resp = make_response(req, 486, to_tag="tt")
    assert (resp.status, resp.reason) == (486, "Busy Here")
    assert resp.headers.fields("Via") == req.headers.fields("Via")
    assert resp.headers.get("From") == req.headers.get("From")
    assert resp.headers.get("Call-ID") == req.headers.get("Call-ID")
    assert resp.headers.get("CSeq") == req.headers.get("CSeq")
    assert resp.to.tag == "tt"
    assert resp.headers.get("To") == "Bob <sip:bob@example.com>;tag=tt"
    assert "Subject" not in resp.headers
    again = parse_response(resp.encode())
    assert [v.branch for v in again.vias] == ["z9hG4bK776asdhds", "z9hG4bK2", "z9hG4bK3"]


def test_make_response_keeps_an_existing_to_tag() -> None:
    req = parse_request(
        invite().replace(
            b"To: Bob <sip:bob@example.com>", b"To: Bob <sip:bob@example.com> ; tag=existing"
        )
    )
    assert make_response(req, 200, to_tag="new").to.tag == "existing"


def test_make_response_100_has_no_tag_and_echoes_timestamp() -> None:
    req = parse_request(invite("Timestamp: 54"))
    trying = make_response(req, 100, to_tag="tt")
    assert trying.to.tag is None
    assert trying.headers.get("Timestamp") == "54"
    assert "Timestamp" not in make_response(req, 180, to_tag="t").headers


def test_make_response_extras() -> None:
    req = parse_request(invite())
    resp = make_response(req, 299, headers=(("Allow", "INVITE"),), body=b"x")
    assert resp.reason == "Unknown"
    assert resp.headers.get("Allow") == "INVITE"
    assert resp.encode().endswith(b"Content-Length: 1\r\n\r\nx")
    assert make_response(req, 480, "Gone Fishing").reason == "Gone Fishing"


# --- StreamFramer -------------------------------------------------------------------------------


def test_framer_message_split_across_chunks() -> None:
    data = invite("Content-Type: application/sdp", body=SDP)
    framer = StreamFramer()
    out: list[bytes] = []
    for i in range(len(data)):
        out += framer.feed(data[i : i + 1])
        if i < len(data) - 1:
            assert out == []
    assert out == [data]
    assert parse_request(out[0], stream=True).body == SDP


def test_framer_body_containing_blank_lines() -> None:
    body = b"a\r\n\r\nb\r\n\r\n"
    data = invite(body=body)
    assert StreamFramer().feed(data + data) == [data, data]


def test_framer_two_messages_in_one_chunk_and_a_partial_third() -> None:
    one = invite(body=SDP)
    two = invite()
    framer = StreamFramer()
    assert framer.feed(one + two + one[:30]) == [one, two]
    assert framer.feed(one[30:]) == [one]


def test_framer_crlf_keepalives() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == [b"\r\n\r\n"]
    assert framer.feed(b"\r\n\r\n\r\n\r\n") == [b"\r\n\r\n", b"\r\n\r\n"]
    # A lone CRLF (a pong) is swallowed and does not disturb the next message.
    msg = invite()
    assert framer.feed(b"\r\n") == []
    assert framer.feed(msg) == [msg]
    assert framer.feed(b"\r\n" + msg) == [msg]
    assert framer.feed(b"\r\n\r\n" + msg) == [b"\r\n\r\n", msg]


def test_framer_compact_content_length() -> None:
    data = invite(body=SDP).replace(b"Content-Length:", b"l :")
    assert StreamFramer().feed(data) == [data]


def test_framer_missing_content_length_closes() -> None:
    data = invite().replace(b"Content-Length: 0\r\n", b"")
    with pytest.raises(ParseError, match="missing Content-Length") as exc:
        StreamFramer().feed(data)
    assert exc.value.close


@pytest.mark.parametrize("second", [b"Content-Length: 0", b"l: 0", b"content-length:0"])
def test_framer_duplicate_content_length_closes(second: bytes) -> None:
    data = invite(second.decode())
    with pytest.raises(ParseError, match="more than one Content-Length") as exc:
        StreamFramer().feed(data)
    assert exc.value.close


@pytest.mark.parametrize("value", [b"-999", b"abc", b"1234567890", b"\xc2\xb2"])
def test_framer_bad_content_length_closes(value: bytes) -> None:
    data = invite().replace(b"Content-Length: 0", b"Content-Length: " + value)
    with pytest.raises(ParseError, match="bad Content-Length") as exc:
        StreamFramer().feed(data)
    assert exc.value.close


def test_framer_oversize() -> None:
    framer = StreamFramer(max_size=1000)
    with pytest.raises(ParseError, match="message too large") as exc:
        framer.feed(invite(content_length=2000))
    assert exc.value.close and exc.value.status == 513
    endless = StreamFramer(max_size=1000)
    assert endless.feed(b"INVITE sip:a@b SIP/2.0\r\n" + b"X: y\r\n" * 100) == []
    with pytest.raises(ParseError, match="header section too large") as exc:
        endless.feed(b"X: y\r\n" * 100)
    assert exc.value.close


def test_framer_delivers_good_messages_before_a_framing_error() -> None:
    good = invite()
    bad = invite("Content-Length: 5")
    framer = StreamFramer()
    assert framer.feed(good + bad) == [good]
    with pytest.raises(ParseError, match="more than one Content-Length") as exc:
        framer.feed(b"")
    assert exc.value.close


# --- fuzzing ------------------------------------------------------------------------------------

SEEDS = [
    invite("Content-Type: application/sdp", body=SDP),
    invite("Route: <sip:p1.example.com;lr>", 'Contact: "x, y" <sip:[2001:db8::1]:5070>;q=0.5'),
    crlf(
        "SIP/2.0 200 OK\nv: SIP/2.0/UDP [::1];branch=z9hG4bKx;rport=5;received=::1\n"
        'f: <sip:a@h>;tag=1\nt: "q\\"" <sip:b@h>;tag=2\ni: c\nCSeq: 1 INVITE\nl: 0\n\n'
    ),
    crlf(
        "REGISTER sip:example.com SIP/2.0\nVia: SIP/2.0/TCP h:5060;branch=z9hG4bK1\n"
        "From: <sip:a@example.com>;tag=1\nTo: sip:a@example.com\nCall-ID: c\n"
        "CSeq: 2 REGISTER\nContact: *\nExpires: 0\nMax-Forwards: 70\n"
        'Authorization: Digest username="a", nonce="n"\nContent-Length: 0\n\n'
    ),
]
INTERESTING = b' \t\r\n:;,<>"\\[]@%=?/.0123456789\x00\xff'
# Whole tokens that single-byte mutations would rarely assemble: non-ASCII digits
# (str.isdigit accepts them, int() does not), escapes, folding, IPv6 references.
TOKENS = [
    "²",
    "١٢",
    "%00",
    "%",
    ";tag=",
    ";branch=",
    ";rport",
    ";received=[::1]",
    "<",
    ">",
    '"',
    '\\"',
    "[2001:db8::1]",
    ":99999",
    ":0",
    "\r\n ",
    "\r\n\r\n",
    "\n\n",
    ",",
    "Content-Length: 5\r\n",
    "l: 99999\r\n",
    "Via: SIP/2.0/UDP h\r\n",
    "sips:",
    "tel:",
    "4294967296",
    "-1",
    " SIP/2.0",
    "SIP/2.0 ",
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["replace", "insert", "token", "field", "delete", "dup"]))
        byte = draw(st.sampled_from(list(INTERESTING)) | st.integers(0, 255))
        if op == "replace" and pos < len(data):
            data[pos] = byte
        elif op == "insert":
            data.insert(pos, byte)
        elif op == "token":
            data[pos:pos] = draw(st.sampled_from(TOKENS)).encode()
        elif op == "field":
            # Replace one field (a port, a tag, a number...) after a delimiter by a token.
            marks = [i + 1 for i, c in enumerate(data) if c in b":;=<>,@ /"]
            if marks:
                start = draw(st.sampled_from(marks))
                end = start
                while end < len(data) and chr(data[end]).isalnum():
                    end += 1
                data[start:end] = draw(st.sampled_from(TOKENS)).encode()
        elif op == "delete" and pos < len(data):
            del data[pos : pos + draw(st.integers(1, 20))]
        elif op == "dup":
            end = min(len(data), pos + draw(st.integers(1, 40)))
            data[pos:pos] = data[pos:end]
    return bytes(data)


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_parse(data: bytes) -> None:
    for stream in (False, True):
        try:
            msg = parse_message(data, stream=stream)
        except ParseError:
            continue
        # Whatever parsed must serialise and parse back the same way.
        again = parse_message(msg.encode())
        assert type(again) is type(msg)
        assert again.start_line() == msg.start_line()


# Templates with one hole each: a field where numbers, hosts or quoting are parsed.
HOLES = [
    invite(via="SIP/2.0/UDP 192.0.2.1:#HOLE#;branch=z9hG4bKx"),
    invite(via="SIP/2.0/UDP #HOLE#;branch=z9hG4bKx;rport"),
    invite(via="SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx;received=#HOLE#"),
    invite().replace(b"INVITE sip:bob@example.com", b"INVITE sip:bob@example.com:#HOLE#"),
    invite().replace(b"INVITE sip:bob@example.com", b"INVITE sip:bob@#HOLE#"),
    invite().replace(b"Content-Length: 0", b"Content-Length: #HOLE#"),
    invite().replace(b"Max-Forwards: 70", b"Max-Forwards: #HOLE#"),
    invite().replace(b"CSeq: 314159", b"CSeq: #HOLE#"),
    invite("Expires: #HOLE#"),
    invite().replace(
        b"To: Bob <sip:bob@example.com>", b"To: #HOLE# <sip:bob@example.com>;tag=#HOLE#"
    ),
    invite().replace(b"Contact: <sip:alice@192.0.2.1>", b"Contact: <sip:alice@[#HOLE#]>;q=#HOLE#"),
    invite('Authorization: Digest username="#HOLE#", nc=#HOLE#'),
    crlf(
        "SIP/2.0 #HOLE# OK\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\nFrom: <sip:a@h>;tag=1\n"
        "To: <sip:b@h>\nCall-ID: c\nCSeq: 1 INVITE\nContent-Length: 0\n\n"
    ),
]
FIELD_TEXT = st.one_of(
    # Digit-like strings: str.isdigit() accepts superscripts, int() does not.
    st.lists(st.sampled_from(list("0123456789²³١٢०߀")), min_size=1, max_size=6).map("".join),
    st.text(alphabet=st.sampled_from(list('0123456789.:;,<>"\\[]@%=? -+\t')), max_size=12),
    st.text(max_size=12),
)


@FUZZ
@given(st.sampled_from(HOLES), FIELD_TEXT)
def test_fuzz_fields(template: bytes, text: str) -> None:
    data = template.replace(b"#HOLE#", text.encode("utf-8", "surrogatepass"))
    _check_parse(data)
    msg = None
    try:
        msg = parse_message(data)
    except ParseError:
        pass
    if msg is not None:
        for value in msg.headers.fields("Authorization"):
            try:
                parse_auth(value)
            except ParseError:
                pass


@FUZZ
@given(st.binary(max_size=2000))
def test_fuzz_parse_arbitrary_bytes(data: bytes) -> None:
    _check_parse(data)


@FUZZ
@given(mutated())
def test_fuzz_parse_mutated_messages(data: bytes) -> None:
    _check_parse(data)


@FUZZ
@given(mutated())
def test_fuzz_typed_access_raises_only_parse_errors(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except ParseError:
        return
    for access in (
        lambda: msg.vias,
        lambda: msg.from_,
        lambda: msg.to,
        lambda: msg.cseq,
        lambda: msg.contacts,
        lambda: msg.routes,
        lambda: msg.record_routes,
        lambda: msg.auth("Authorization"),
        lambda: msg.content_type,
        lambda: msg.call_id,
    ):
        try:
            access()
        except ParseError:
            pass


@FUZZ
@given(st.lists(st.binary(max_size=300) | mutated(), max_size=6))
def test_fuzz_framer(chunks: list[bytes]) -> None:
    framer = StreamFramer(max_size=4000)
    try:
        for chunk in chunks:
            for message in framer.feed(chunk):
                if message != b"\r\n\r\n":
                    try:
                        parse_message(message, stream=True)
                    except ParseError:
                        pass
    except ParseError as exc:
        assert exc.close


@FUZZ
@given(st.sampled_from(SEEDS), st.lists(st.integers(0, 2000), max_size=8))
def test_fuzz_framer_chunking_does_not_matter(seed: bytes, cuts: list[int]) -> None:
    stream = seed + b"\r\n\r\n" + seed + seed
    points = sorted({c % (len(stream) + 1) for c in cuts})
    framer = StreamFramer()
    out: list[bytes] = []
    start = 0
    for point in [*points, len(stream)]:
        out += framer.feed(stream[start:point])
        start = point
    assert out == [seed, b"\r\n\r\n", seed, seed]


@FUZZ
@given(st.binary(max_size=1500) | mutated(), st.sampled_from(["udp", "tcp"]))
def test_fuzz_endpoint_never_raises(data: bytes, transport: str) -> None:
    endpoint = SipEndpoint()
    source = Address("127.0.0.1", 5099, transport, 1 if transport == "tcp" else None)
    endpoint.receive(data, source, 0.0)
    for out, dest in endpoint.datagrams_to_send():
        assert dest.host == "127.0.0.1"
        assert out == b"\r\n" or out.startswith(b"SIP/2.0 ")

"""signaling.replaces: RFC 3891 Replaces values, alone and escaped in a Refer-To URI."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from signaling.dialog import dialog_id_of_request
from signaling.errors import ParseError
from signaling.headers import parse_name_addr
from signaling.message import parse_message
from signaling.replaces import Replaces, parse_replaces, replaces_in_uri, uri_headers
from signaling.uri import SipUri


def test_parse_the_rfc_example() -> None:
    # RFC 3891 section 6.1
    value = "98732@sip.example.com;from-tag=r33th4x0r;to-tag=ff87ff"
    assert parse_replaces(value) == Replaces("98732@sip.example.com", "ff87ff", "r33th4x0r")
    assert parse_replaces(value + ";early-only").early_only


def test_dialog_key_is_what_a_request_in_that_dialog_gives() -> None:
    # The receiver's local tag is the To tag of a request it receives in the dialog.
    raw = (b"BYE sip:hub@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.2;branch=z9hG4bK1\r\n"
           b"From: <sip:alice@x>;tag=alice-tag\r\nTo: <sip:carol@x>;tag=hub-tag\r\n"
           b"Call-ID: c2@192.0.2.2\r\nCSeq: 3 BYE\r\nMax-Forwards: 70\r\n"
           b"Content-Length: 0\r\n\r\n")
    request = parse_message(raw)
    replaces = parse_replaces("c2@192.0.2.2;to-tag=hub-tag;from-tag=alice-tag")
    assert replaces.dialog_key == dialog_id_of_request(request)  # type: ignore[arg-type]


@pytest.mark.parametrize("value, message", [
    ("", "bad Call-ID"),
    ("a b;to-tag=1;from-tag=2", "bad Call-ID"),
    ("abc;to-tag=1", "without from-tag"),
    ("abc;from-tag=2", "without to-tag"),
    ("abc;to-tag=1;to-tag=3;from-tag=2", "to-tag twice"),
    ("abc;to-tag;from-tag=2", "bad to-tag"),
    ("abc;to-tag=a b;from-tag=2", "bad to-tag"),
    ("abc;to-tag=1;from-tag=2;=x", "bad parameter"),
])
def test_malformed_values_are_400(value: str, message: str) -> None:
    with pytest.raises(ParseError, match=message) as info:
        parse_replaces(value)
    assert info.value.status == 400


def test_unknown_parameters_are_ignored() -> None:
    assert parse_replaces("abc;to-tag=1;from-tag=2;foo=bar;baz") == Replaces("abc", "1", "2")


def test_refer_to_uri_carries_it_escaped() -> None:
    # RFC 5589 section 7.1's form: the value percent-escaped in the URI's headers.
    addr = parse_name_addr("<sip:carol@hub.example?Replaces=090459243588173445%40a.example"
                           "%3Bto-tag%3D7553452%3Bfrom-tag%3D31431&Require=replaces>")
    assert isinstance(addr.uri, SipUri)
    assert uri_headers(addr.uri)[1] == ("Require", "replaces")
    assert replaces_in_uri(addr.uri) == Replaces("090459243588173445@a.example", "7553452",
                                                 "31431")


def test_refer_to_without_replaces_is_blind() -> None:
    addr = parse_name_addr("<sip:carol@hub.example>")
    assert isinstance(addr.uri, SipUri)
    assert replaces_in_uri(addr.uri) is None


def test_two_replaces_in_one_uri_are_400() -> None:
    addr = parse_name_addr("<sip:c@h?Replaces=a%3Bto-tag%3D1%3Bfrom-tag%3D2"
                           "&replaces=b%3Bto-tag%3D1%3Bfrom-tag%3D2>")
    assert isinstance(addr.uri, SipUri)
    with pytest.raises(ParseError, match="more than one"):
        replaces_in_uri(addr.uri)


def test_bad_uri_headers_are_400() -> None:
    with pytest.raises(ParseError, match="bad URI header"):
        uri_headers(SipUri(host="h", user="c", headers="Replaces"))


_TOKEN = st.text("abcdefXYZ0123456789-.!%*_+`'~", min_size=1, max_size=20)


@given(_TOKEN, _TOKEN, _TOKEN, st.booleans())
def test_round_trip(call_id: str, to_tag: str, from_tag: str, early: bool) -> None:
    replaces = Replaces(call_id, to_tag, from_tag, early)
    assert parse_replaces(str(replaces)) == replaces


@given(st.text(max_size=80))
def test_anything_parses_or_is_a_400(text: str) -> None:
    try:
        parse_replaces(text)
    except ParseError as exc:
        assert exc.status == 400

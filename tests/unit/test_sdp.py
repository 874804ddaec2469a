"""SDP parsing/encoding (RFC 4566) and offer/answer (RFC 3264)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signaling.errors import ParseError
from signaling.message import parse_message
from signaling.sdp import (
    Connection,
    MediaDescription,
    RtpMap,
    SdpError,
    SdpOrigin,
    answer_direction,
    build_answer,
    build_offer,
    is_hold,
    parse_sdp,
)
from tests.sip_corpus import CORPUS

CONFORMANCE = CORPUS
OUR_CODECS = ["PCMU/8000", "PCMA/8000", "telephone-event/8000"]


def crlf(text: str) -> bytes:
    return "".join(line + "\r\n" for line in text.strip("\n").split("\n")).encode()


def torture_body(name: str) -> bytes:
    data = (CONFORMANCE / name).read_bytes()
    return data.split(b"\r\n\r\n", 1)[1]


def answer(offer_text: str, **kwargs: object) -> bytes | None:
    params: dict[str, object] = {
        "address": "192.0.2.99",
        "port": 40000,
        "codecs": OUR_CODECS,
        "session_id": 7,
        "version": 1,
    }
    params.update(kwargs)
    sd = build_answer(parse_sdp(crlf(offer_text)), **params)  # type: ignore[arg-type]
    return None if sd is None else sd.encode()


# --- RFC 5118 bodies ----------------------------------------------------------------------


def test_ipv6_in_sdp() -> None:
    body = torture_body("rfc5118/ipv6-in-sdp")
    sd = parse_sdp(body)
    assert sd.origin.username == "assistant"
    assert sd.origin.session_id == "971731711378798081"
    assert sd.origin.session_version == 0
    assert (sd.origin.addrtype, sd.origin.address) == ("IP6", "2001:db8::20")
    assert sd.session_name == "Live video feed for today's meeting"
    assert sd.connection == Connection("IN", "IP6", "2001:db8::20")
    assert [(t.start, t.stop) for t in sd.times] == [(3338481189, 3370017201)]
    audio, video = sd.media
    assert (audio.media, audio.port, audio.proto, audio.formats) == (
        "audio",
        6000,
        "RTP/AVP",
        ["2"],
    )
    assert audio.rtpmap() == {2: RtpMap("G726-32", 8000)}
    assert video.rtpmap() == {107: RtpMap("H263-1998", 90000)}
    assert sd.media_address(audio) == ("2001:db8::20", 6000)
    assert sd.media_address(video) == ("2001:db8::20", 6024)
    assert sd.encode() == body


def test_mult_ip_in_sdp() -> None:
    body = torture_body("rfc5118/mult-ip-in-sdp")
    sd = parse_sdp(body)
    assert sd.session_name == ""
    assert sd.connection is None
    audio, video = sd.media
    assert audio.connection == Connection("IN", "IP4", "192.0.2.1")
    assert video.connection == Connection("IN", "IP6", "2001:db8::1")
    assert sd.media_address(audio) == ("192.0.2.1", 22334)
    assert sd.media_address(video) == ("2001:db8::1", 6024)
    assert audio.rtpmap() == {0: RtpMap("PCMU", 8000)}
    assert sd.encode() == body


def test_ipv4_mapped_ipv6_in_sdp() -> None:
    body = torture_body("rfc5118/ipv4-mapped-ipv6")
    sd = parse_sdp(body)
    assert sd.connection == Connection("IN", "IP6", "::ffff:192.0.2.2")
    assert sd.encode() == body


def _torture_sdp_bodies() -> list[Path]:
    found = []
    for path in sorted(CONFORMANCE.glob("*/*")):
        if path.name in ("EXPECTED.tsv", "NOTICE"):
            continue
        try:
            msg = parse_message(path.read_bytes())
        except ParseError:
            continue
        if msg.content_type == "application/sdp" and msg.body:
            found.append(path)
    return found


@pytest.mark.parametrize("path", _torture_sdp_bodies(), ids=lambda p: p.name)
def test_every_torture_sdp_body_parses_and_round_trips(path: Path) -> None:
    msg = parse_message(path.read_bytes())
    sd = parse_sdp(msg.body)
    assert parse_sdp(sd.encode()) == sd


# --- syntax -------------------------------------------------------------------------------

RFC4566_EXAMPLE = """\
v=0
o=jdoe 2890844526 2890842807 IN IP4 10.47.16.5
s=SDP Seminar
i=A Seminar on the session description protocol
u=http://www.example.com/seminars/sdp.pdf
e=j.doe@example.com (Jane Doe)
c=IN IP4 224.2.17.12/127
t=2873397496 2873404696
a=recvonly
m=audio 49170 RTP/AVP 0
m=video 51372 RTP/AVP 99
a=rtpmap:99 h263-1998/90000
"""


def test_rfc4566_example_round_trips_byte_for_byte() -> None:
    body = crlf(RFC4566_EXAMPLE)
    sd = parse_sdp(body)
    assert sd.information == "A Seminar on the session description protocol"
    assert sd.uri == "http://www.example.com/seminars/sdp.pdf"
    assert sd.emails == ["j.doe@example.com (Jane Doe)"]
    assert sd.connection is not None and sd.connection.host == "224.2.17.12"
    assert sd.encode() == body


def test_every_line_type_in_rfc_order() -> None:
    body = crlf(
        """\
v=0
o=- 1 2 IN IP4 192.0.2.1
s=all
i=info
u=http://example.com/
e=a@example.com
p=+1 555 0100
c=IN IP4 192.0.2.1
b=CT:128
t=0 0
r=604800 3600 0 90000
t=3034423619 3042462419
z=2882844526 -1h 2898848070 0
k=prompt
x=unknown session line
a=tool:test
m=audio 49170/2 RTP/AVP 0 8
i=voice
c=IN IP4 192.0.2.2
b=AS:64
k=prompt
y=unknown media line
a=ptime:20
a=sendonly
"""
    )
    sd = parse_sdp(body)
    assert sd.phones == ["+1 555 0100"]
    assert sd.bandwidths == [("CT", 128)]
    assert [t.repeats for t in sd.times] == [["604800 3600 0 90000"], []]
    assert sd.zone == "2882844526 -1h 2898848070 0"
    assert sd.key == "prompt"
    assert sd.other_lines == [("x", "unknown session line")]
    (m,) = sd.media
    assert (m.port, m.port_count, m.information, m.key) == (49170, 2, "voice", "prompt")
    assert m.bandwidths == [("AS", 64)]
    assert m.other_lines == [("y", "unknown media line")]
    assert m.attribute("ptime") == "20"
    assert m.direction == "sendonly"
    assert sd.encode() == body


def test_lf_only_and_blank_lines_are_tolerated() -> None:
    text = (
        "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\n\nc=IN IP4 192.0.2.1\nt=0 0\nm=audio 5004 RTP/AVP 0\n"
    )
    sd = parse_sdp(text)
    assert sd.media[0].port == 5004
    assert sd.encode() == text.replace("\n\n", "\n").replace("\n", "\r\n").encode()


def test_missing_s_and_t_are_tolerated() -> None:
    # RFC 4475 mismatch02 carries such a body; phones do too.
    sd = parse_sdp(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nc=IN IP4 192.0.2.1\r\nm=audio 1 RTP/AVP 0\r\n"
    )
    assert sd.session_name == "-"
    assert [(t.start, t.stop) for t in sd.times] == [(0, 0)]


def test_ipv6_connection_and_origin() -> None:
    sd = parse_sdp(crlf("v=0\no=- 1 1 IN IP6 2001:db8::20\ns=-\nc=IN IP6 2001:db8::10\nt=0 0"))
    assert sd.connection == Connection("IN", "IP6", "2001:db8::10")
    assert Connection.for_address("2001:db8::10") == Connection("IN", "IP6", "2001:db8::10")
    assert Connection.for_address("192.0.2.1").addrtype == "IP4"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty SDP body"),
        ("o=- 1 1 IN IP4 h\r\n", "SDP line 1: an SDP body must start with v=0"),
        ("v=1\r\n", "SDP line 1: unsupported SDP version '1'"),
        ("v=0\r\ns=-\r\n", "SDP without an o= line"),
        ("v=0\r\no=- 1 1 IN IP4\r\n", "SDP line 2: o= needs"),
        ("v=0\r\no=- 1 x IN IP4 h\r\n", "SDP line 2: bad session version 'x' in o= line"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4\r\n", "SDP line 3: c= needs"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nt=0\r\n", "SDP line 3: t= needs '<start> <stop>'"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nb=AS\r\n", "SDP line 3: b= needs '<bwtype>:<bandwidth>'"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 70000 RTP/AVP 0\r\n", "SDP line 3: bad port"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nm=audio x RTP/AVP 0\r\n", "SDP line 3: bad port 'x'"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 1/0 RTP/AVP 0\r\n", "SDP line 3: bad port count"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 1\r\n", "SDP line 3: m= needs"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nm =video 1 RTP/AVP 0\r\n", "SDP line 3: expected"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ngarbage\r\n", "SDP line 3: expected '<type>=<value>'"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nM=audio 1 RTP/AVP 0\r\n", "SDP line 3: expected"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=a\r\ns=b\r\n", "SDP line 4: more than one s= line"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nr=1 2 3\r\n", "SDP line 3: r= line before any t= line"),
        (
            "v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 1 RTP/AVP 0\r\nt=0 0\r\n",
            "SDP line 4: t= line inside",
        ),
        ("v=0\r\no=- 1 1 IN IP4 h\r\na=\r\n", "SDP line 3: bad attribute ''"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=a\rb\r\n", "SDP line 3: stray CR inside a line"),
        ("v=0\r\no=- 1 1 IN IP4 h\x00\r\n", "NUL character in SDP"),
    ],
)
def test_precise_errors(text: str, message: str) -> None:
    with pytest.raises(SdpError) as info:
        parse_sdp(text)
    assert str(info.value).startswith(message)
    assert info.value.status == 400
    assert isinstance(info.value, ParseError)


def test_oversized_body_is_413() -> None:
    with pytest.raises(SdpError) as info:
        parse_sdp(b"v=0\r\n" + b"a=x\r\n" * 20000)
    assert info.value.status == 413


def test_latin1_session_name_is_accepted() -> None:
    sd = parse_sdp(b"v=0\r\no=- 1 1 IN IP4 h\r\ns=caf\xe9\r\nt=0 0\r\n")
    assert sd.session_name == "café"


# --- media helpers ------------------------------------------------------------------------


def test_rtpmap_static_defaults_and_dynamic() -> None:
    m = parse_sdp(
        crlf(
            """\
v=0
o=- 1 1 IN IP4 h
s=-
t=0 0
m=audio 1 RTP/AVP 0 8 9 18 13 96 101 97 3
a=rtpmap:96 opus/48000/2
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=fmtp:18 annexb=no
a=rtpmap:3 broken
"""
        )
    ).media[0]
    assert m.rtpmap() == {
        0: RtpMap("PCMU", 8000),
        8: RtpMap("PCMA", 8000),
        9: RtpMap("G722", 8000),
        18: RtpMap("G729", 8000),
        13: RtpMap("CN", 8000),
        96: RtpMap("opus", 48000, 2),
        101: RtpMap("telephone-event", 8000),
        3: RtpMap("GSM", 8000),  # a malformed rtpmap falls back on RFC 3551
    }
    assert list(m.rtpmap()) == [0, 8, 9, 18, 13, 96, 101, 3]  # 97 has no rtpmap
    assert m.fmtp(101) == "0-16"
    assert m.fmtp("18") == "annexb=no"
    assert m.fmtp(0) is None
    assert str(RtpMap("opus", 48000, 2)) == "opus/48000/2"


def test_rtpmap_parse_rejects_bad_codec_strings() -> None:
    for bad in ("PCMU", "PCMU/x", "PCMU/0", "/8000", "a/1/2/3"):
        with pytest.raises(ValueError):
            RtpMap.parse(bad)


def test_direction_default_media_and_session_level() -> None:
    sd = parse_sdp(
        crlf(
            """\
v=0
o=- 1 1 IN IP4 h
s=-
t=0 0
a=sendonly
m=audio 1 RTP/AVP 0
m=audio 2 RTP/AVP 0
a=inactive
"""
        )
    )
    inherited, own = sd.media
    assert sd.direction == "sendonly"
    assert inherited.direction == "sendonly"
    assert inherited.own_direction() is None
    assert own.direction == "inactive"
    sd.direction = "recvonly"
    assert inherited.direction == "recvonly"
    assert sd.attributes == [("recvonly", None)]
    own.direction = "sendrecv"
    assert own.attributes == [("sendrecv", None)]
    m = MediaDescription(media="audio", port=1, formats=["0"])
    assert m.direction == "sendrecv"
    m.add_attribute("ptime", "20")
    m.direction = "recvonly"
    m.direction = "sendonly"
    assert m.attributes == [("ptime", "20"), ("sendonly", None)]
    with pytest.raises(ValueError):
        m.direction = "sideways"


def test_attribute_helpers() -> None:
    m = MediaDescription(media="audio", port=1, formats=["0"])
    m.add_attribute("rtcp-mux")
    m.add_attribute("ptime", "20")
    m.add_attribute("ptime", "30")
    assert m.has_attribute("RTCP-MUX")
    assert m.attribute("rtcp-mux") is None
    assert m.attribute_values("ptime") == ["20", "30"]
    m.set_attribute("ptime", "40")
    assert m.attributes == [("rtcp-mux", None), ("ptime", "40")]
    m.remove_attribute("rtcp-mux")
    assert m.attributes == [("ptime", "40")]


def test_copy_is_deep() -> None:
    sd = parse_sdp(torture_body("rfc5118/mult-ip-in-sdp"))
    dup = sd.copy()
    assert dup == sd
    dup.media[0].attributes.append(("sendonly", None))
    dup.media[0].formats.append("8")
    assert dup.media[0].connection is not None
    dup.media[0].connection.address = "192.0.2.9"
    dup.origin.session_version += 1
    dup.times[0].repeats.append("x")
    assert sd == parse_sdp(torture_body("rfc5118/mult-ip-in-sdp"))


def test_encode_refuses_line_breaks_in_values() -> None:
    sd = parse_sdp(crlf("v=0\no=- 1 1 IN IP4 h\ns=-\nt=0 0"))
    sd.session_name = "x\r\na=injected"
    with pytest.raises(ValueError):
        sd.encode()


# --- offer / answer -----------------------------------------------------------------------

PHONE_OFFER = """\
v=0
o=alice 2890844526 2890844526 IN IP4 192.0.2.10
s=-
c=IN IP4 192.0.2.10
t=0 0
m=audio 49170 RTP/AVP 9 8 0 96 101
a=rtpmap:9 G722/8000
a=rtpmap:96 opus/48000/2
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=ptime:20
m=video 51372 RTP/AVP 99
a=rtpmap:99 H264/90000
"""


def test_build_offer() -> None:
    sd = build_offer(
        address="192.0.2.1",
        port=4000,
        codecs=["PCMU/8000", "PCMA/8000", "opus/48000/2", "telephone-event/8000"],
        session_id=42,
        version=3,
    )
    assert sd.encode() == crlf(
        """\
v=0
o=- 42 3 IN IP4 192.0.2.1
s=-
c=IN IP4 192.0.2.1
t=0 0
m=audio 4000 RTP/AVP 0 8 96 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:96 opus/48000/2
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=sendrecv
"""
    )
    assert parse_sdp(sd.encode()) == sd


def test_build_offer_ipv6_and_explicit_payload_types() -> None:
    sd = build_offer(
        address="2001:db8::1",
        port=4000,
        codecs=["PCMA/8000", "telephone-event/8000"],
        session_id=1,
        version=1,
        direction="sendonly",
        payload_types={"telephone-event/8000": 100},
        ptime=None,
    )
    assert sd.origin.addrtype == "IP6"
    assert sd.connection == Connection("IN", "IP6", "2001:db8::1")
    assert sd.media[0].formats == ["8", "100"]
    assert sd.media[0].direction == "sendonly"
    assert not sd.media[0].has_attribute("ptime")


def test_answer_reuses_offer_payload_types_and_order_and_rejects_video() -> None:
    body = answer(PHONE_OFFER)
    assert body == crlf(
        """\
v=0
o=- 7 1 IN IP4 192.0.2.99
s=-
c=IN IP4 192.0.2.99
t=0 0
m=audio 40000 RTP/AVP 8 0 101
a=rtpmap:8 PCMA/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=sendrecv
m=video 0 RTP/AVP 99
"""
    )


def test_answer_dynamic_telephone_event_number_is_the_offerers() -> None:
    offer = PHONE_OFFER.replace("96 101", "96 97").replace("rtpmap:101", "rtpmap:97")
    offer = offer.replace("fmtp:101", "fmtp:97")
    sd = build_answer(
        parse_sdp(crlf(offer)),
        address="192.0.2.99",
        port=40000,
        codecs=OUR_CODECS,
        session_id=7,
        version=1,
        fmtp={},
    )
    assert sd is not None
    audio = sd.media[0]
    assert audio.formats == ["8", "0", "97"]
    assert audio.fmtp(97) == "0-15"  # no fmtp of our own configured: the offer's echoed
    assert audio.rtpmap()[97] == RtpMap("telephone-event", 8000)


def test_answer_none_when_nothing_in_common() -> None:
    offer = "v=0\no=- 1 1 IN IP4 h\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\nm=audio 1 RTP/AVP 9\n"
    assert answer(offer) is None
    assert answer(offer.replace("RTP/AVP 9", "RTP/AVP 0"), codecs=["G729/8000"]) is None


def test_answer_needs_a_voice_codec_not_only_dtmf() -> None:
    offer = """\
v=0
o=- 1 1 IN IP4 h
s=-
c=IN IP4 192.0.2.1
t=0 0
m=audio 1 RTP/AVP 9 101
a=rtpmap:101 telephone-event/8000
"""
    assert answer(offer) is None


def test_answer_keeps_mline_count_and_rejects_extra_audio_and_srtp() -> None:
    offer = """\
v=0
o=- 1 1 IN IP4 h
s=-
c=IN IP4 192.0.2.1
t=0 0
m=audio 1000 RTP/SAVP 0
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:xxx
m=audio 0 RTP/AVP 0
m=audio 2000 RTP/AVP 8 0
m=audio 3000 RTP/AVP 0
m=application 4000 UDP/BFCP *
"""
    body = answer(offer)
    assert body is not None
    sd = parse_sdp(body)
    assert [(m.media, m.port, m.proto, m.formats) for m in sd.media] == [
        ("audio", 0, "RTP/SAVP", ["0"]),
        ("audio", 0, "RTP/AVP", ["0"]),
        ("audio", 40000, "RTP/AVP", ["8", "0"]),
        ("audio", 0, "RTP/AVP", ["0"]),
        ("application", 0, "UDP/BFCP", ["*"]),
    ]
    assert [m.attributes for m in sd.media if m.port == 0] == [[], [], [], []]


def test_answer_to_offer_without_media() -> None:
    body = answer("v=0\no=- 1 1 IN IP4 h\ns=-\nt=0 0\n")
    assert body is not None and b"m=" not in body


@pytest.mark.parametrize(
    ("offered", "wanted", "expected"),
    [
        ("sendrecv", "sendrecv", "sendrecv"),
        ("sendonly", "sendrecv", "recvonly"),
        ("recvonly", "sendrecv", "sendonly"),
        ("inactive", "sendrecv", "inactive"),
        ("sendrecv", "sendonly", "sendonly"),
        ("sendrecv", "recvonly", "recvonly"),
        ("sendonly", "sendonly", "inactive"),
        ("recvonly", "recvonly", "inactive"),
        ("sendrecv", "inactive", "inactive"),
    ],
)
def test_answer_direction_rfc3264_6_1(offered: str, wanted: str, expected: str) -> None:
    assert answer_direction(offered, wanted) == expected
    offer = PHONE_OFFER.replace("a=ptime:20", f"a=ptime:20\na={offered}")
    body = answer(offer, direction=wanted)
    assert body is not None
    assert parse_sdp(body).media[0].direction == expected


def test_answer_to_session_level_direction() -> None:
    offer = PHONE_OFFER.replace("t=0 0", "t=0 0\na=sendonly")
    body = answer(offer)
    assert body is not None
    assert parse_sdp(body).media[0].direction == "recvonly"


def test_rfc2543_hold_with_zero_address() -> None:
    offer = PHONE_OFFER.replace("c=IN IP4 192.0.2.10", "c=IN IP4 0.0.0.0")
    sd = parse_sdp(crlf(offer))
    assert is_hold(sd)
    body = answer(offer)
    assert body is not None
    assert parse_sdp(body).media[0].direction == "recvonly"
    assert sd.media_address(sd.media[0]) == ("0.0.0.0", 49170)


def test_is_hold() -> None:
    sd = parse_sdp(crlf(PHONE_OFFER))
    assert not is_hold(sd)
    sd.media[0].direction = "sendonly"
    assert not is_hold(sd)  # the video stream is still live
    sd.media[1].port = 0
    assert is_hold(sd)
    sd.media[0].direction = "inactive"
    assert is_hold(sd)
    sd.media[0].direction = "recvonly"
    assert not is_hold(sd)
    sd.media[0].port = 0
    assert not is_hold(sd)  # nothing live at all is not a hold


def test_offer_answer_between_two_sides() -> None:
    offer = build_offer(
        address="192.0.2.1",
        port=4000,
        codecs=["PCMA/8000", "PCMU/8000", "telephone-event/8000"],
        session_id=1,
        version=1,
    )
    sd = build_answer(
        parse_sdp(offer.encode()),
        address="192.0.2.2",
        port=5000,
        codecs=["PCMU/8000", "telephone-event/8000"],
        session_id=2,
        version=1,
    )
    assert sd is not None
    assert sd.media[0].formats == ["0", "101"]
    assert sd.media_address(sd.media[0]) == ("192.0.2.2", 5000)


def test_sdp_origin_bumps_only_on_change() -> None:
    origin = SdpOrigin("192.0.2.1", session_id=1234, version=5)
    offer = build_offer(address="192.0.2.1", port=4000, codecs=OUR_CODECS, session_id=0, version=0)
    assert origin.stamp(offer).origin.session_version == 5
    assert str(offer.origin) == "- 1234 5 IN IP4 192.0.2.1"
    assert origin.stamp(offer.copy()).origin.session_version == 5  # same body, same version
    held = offer.copy()
    held.media[0].direction = "sendonly"
    assert origin.stamp(held).origin.session_version == 6
    assert origin.stamp(offer.copy()).origin.session_version == 7
    assert origin.bump().session_version == 8
    assert origin.stamp(offer.copy()).origin.session_version == 8
    assert SdpOrigin("2001:db8::1").origin.addrtype == "IP6"
    assert 0 <= SdpOrigin("h").session_id < 2**62


# --- fuzzing ------------------------------------------------------------------------------

_LINE_TYPES = list("vosiuepcbtrzkam") + ["x", "V", " ", ""]


@st.composite
def sdpish(draw: st.DrawFn) -> str:
    lines = ["v=0", "o=- 1 1 IN IP4 192.0.2.1"] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(_LINE_TYPES))
        value = draw(
            st.one_of(
                st.text(max_size=30),
                st.sampled_from(
                    [
                        "audio 49170 RTP/AVP 0 8 101",
                        "IN IP6 2001:db8::1",
                        "IN IP4 0.0.0.0",
                        "0 0",
                        "rtpmap:101 telephone-event/8000",
                        "sendonly",
                        "AS:64",
                        "- 1 x IN IP4 h",
                    ]
                ),
            )
        )
        lines.append(f"{kind}={value}")
    sep = draw(st.sampled_from(["\r\n", "\n"]))
    return sep.join(lines)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), sdpish()))
def test_fuzz_parse_only_raises_sdp_error(text: str) -> None:
    try:
        sd = parse_sdp(text)
    except SdpError:
        return
    # Whatever parses re-encodes into something that parses to the same description.
    assert parse_sdp(sd.encode()) == sd


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_parse_bytes_only_raises_sdp_error(data: bytes) -> None:
    try:
        parse_sdp(data)
    except SdpError:
        pass


@settings(max_examples=100, deadline=None)
@given(sdpish())
def test_fuzz_answer_never_crashes(text: str) -> None:
    try:
        offer = parse_sdp(text)
    except SdpError:
        return
    sd = build_answer(
        offer, address="192.0.2.1", port=4000, codecs=OUR_CODECS, session_id=1, version=1
    )
    if sd is not None:
        assert len(sd.media) == len(offer.media)
        parse_sdp(sd.encode())

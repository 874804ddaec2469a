"""Registrar (RFC 3261 10.3)."""

from __future__ import annotations

from email.utils import parsedate_to_datetime

import pytest

from signaling.headers import parse_name_addr
from signaling.message import Request, Response, header_tag, parse_message
from signaling.registrar import (
    Binding,
    MemoryLocationStore,
    Registrar,
    uri_equivalent,
)
from signaling.uri import SipUri, parse_sip_uri
from tests.sip_corpus import CORPUS

T0 = 1_700_000_000.0
SOURCE = ("192.0.2.10", 5062)
TORTURE = CORPUS / "rfc4475"


def register(
    *contacts: str,
    user: str = "alice",
    expires: int | str | None = None,
    call_id: str = "reg-1@192.0.2.10",
    cseq: int = 1,
    extra: str = "",
) -> Request:
    lines = [
        "REGISTER sip:hub.example.org SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-1",
        "Max-Forwards: 70",
        f"From: <sip:{user}@hub.example.org>;tag=f1",
        f"To: <sip:{user}@hub.example.org>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        *(f"Contact: {c}" for c in contacts),
    ]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if extra:
        lines.append(extra)
    lines.append("Content-Length: 0")
    msg = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def contacts_of(resp: Response) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for value in resp.headers.get_all("Contact"):
        na = parse_name_addr(value)
        out[str(na.uri)] = na.params.get("expires")
    return out


class Harness:
    def __init__(self, **kwargs: object) -> None:
        self.store = MemoryLocationStore()
        self.registrar = Registrar(self.store, **kwargs)  # type: ignore[arg-type]

    def send(
        self, request: Request, *, now: float = T0, user: str = "alice", transport: str = "UDP"
    ) -> Response:
        return self.registrar.handle(
            request, user=user, source=SOURCE, transport=transport, now=now, to_tag="tt"
        )


@pytest.fixture
def hub() -> Harness:
    return Harness()


def test_register_one_contact(hub: Harness) -> None:
    req = register(
        "<sip:alice@192.0.2.10:5062;transport=udp>;q=0.7",
        expires=600,
        extra="User-Agent: baresip 1.0",
    )
    resp = hub.send(req)
    assert (resp.status, resp.reason) == (200, "OK")
    assert resp.headers.get_all("Contact") == [
        "<sip:alice@192.0.2.10:5062;transport=udp>;expires=600;q=0.7"
    ]
    assert header_tag(resp.headers.get("To")) == "tt"
    assert resp.headers.get("Call-ID") == "reg-1@192.0.2.10"
    assert resp.headers.get("CSeq") == "1 REGISTER"
    date = resp.headers.get("Date")
    assert date == "Tue, 14 Nov 2023 22:13:20 GMT"
    assert parsedate_to_datetime(date).timestamp() == T0
    assert hub.store.bindings("alice", T0) == [
        Binding(
            aor="alice",
            contact="sip:alice@192.0.2.10:5062;transport=udp",
            expires_at=T0 + 600,
            received="192.0.2.10:5062",
            transport="udp",
            call_id="reg-1@192.0.2.10",
            cseq=1,
            q=0.7,
            user_agent="baresip 1.0",
        )
    ]


def test_default_expires_and_max_clamp(hub: Harness) -> None:
    resp = hub.send(register("<sip:alice@192.0.2.10>"))
    assert contacts_of(resp) == {"sip:alice@192.0.2.10": "3600"}
    resp = hub.send(register("<sip:alice@192.0.2.10>", expires=99999999999999999999, cseq=2))
    assert contacts_of(resp) == {"sip:alice@192.0.2.10": "3600"}
    short = Harness(max_expires=120, default_expires=120)
    resp = short.send(register("<sip:alice@192.0.2.10>", expires=600))
    assert contacts_of(resp) == {"sip:alice@192.0.2.10": "120"}


def test_refresh_updates_expiry(hub: Harness) -> None:
    hub.send(register("<sip:alice@192.0.2.10>", expires=600))
    resp = hub.send(register("<sip:alice@192.0.2.10>", expires=600, cseq=2), now=T0 + 500)
    assert contacts_of(resp) == {"sip:alice@192.0.2.10": "600"}
    (b,) = hub.store.bindings("alice", T0 + 500)
    assert (b.expires_at, b.cseq) == (T0 + 1100, 2)
    # Still there after the first registration would have lapsed.
    assert hub.store.bindings("alice", T0 + 1000)


def test_refresh_matches_equivalent_uri_and_keeps_stored_spelling(hub: Harness) -> None:
    hub.send(register("<sip:alice@Phone.Example.COM;transport=UDP>", expires=600))
    outcome = hub.registrar.process(
        register("<sip:alice@phone.example.com;transport=udp>", expires=900, cseq=2),
        user="alice",
        source=SOURCE,
        transport="udp",
        now=T0 + 1,
    )
    assert outcome.response.status == 200
    assert not outcome.added and len(outcome.refreshed) == 1
    (b,) = hub.store.bindings("alice", T0 + 1)
    assert b.contact == "sip:alice@Phone.Example.COM;transport=UDP"
    assert b.expires_at == T0 + 901


def test_several_contacts(hub: Harness) -> None:
    resp = hub.send(
        register(
            "<sip:alice@192.0.2.10:5062>;expires=300",
            "<sip:alice@192.0.2.11:5060>, <sip:alice@[2001:db8::1]:5060>;q=1",
            expires=1800,
        )
    )
    assert resp.status == 200
    assert contacts_of(resp) == {
        "sip:alice@192.0.2.10:5062": "300",
        "sip:alice@192.0.2.11:5060": "1800",
        "sip:alice@[2001:db8::1]:5060": "1800",
    }
    # A second device registers from another Call-ID: bindings accumulate.
    resp = hub.send(register("<sip:alice@198.51.100.7>", call_id="other", expires=60))
    assert len(contacts_of(resp)) == 4
    # Expires in the answer count down with time.
    resp = hub.send(register(), now=T0 + 100)
    assert contacts_of(resp)["sip:alice@192.0.2.10:5062"] == "200"


def test_per_contact_expires_overrides_header(hub: Harness) -> None:
    resp = hub.send(register("<sip:alice@192.0.2.10>;expires=120", expires=0))
    assert contacts_of(resp) == {"sip:alice@192.0.2.10": "120"}


def test_malformed_contact_expires_means_default(hub: Harness) -> None:
    resp = hub.send(register("<sip:alice@192.0.2.10>;expires=soon"))
    assert contacts_of(resp) == {"sip:alice@192.0.2.10": "3600"}


def test_query_without_contact(hub: Harness) -> None:
    assert contacts_of(hub.send(register())) == {}
    hub.send(register("<sip:alice@192.0.2.10>", expires=600))
    resp = hub.send(register(cseq=2), now=T0 + 10)
    assert resp.status == 200
    assert contacts_of(resp) == {"sip:alice@192.0.2.10": "590"}


def test_unregister_one(hub: Harness) -> None:
    hub.send(register("<sip:alice@192.0.2.10>", "<sip:alice@192.0.2.11>", expires=600))
    outcome = hub.registrar.process(
        register("<sip:alice@192.0.2.10>;expires=0", cseq=2),
        user="alice",
        source=SOURCE,
        transport="udp",
        now=T0 + 1,
    )
    assert outcome.response.status == 200
    assert contacts_of(outcome.response) == {"sip:alice@192.0.2.11": "599"}
    assert [b.contact for b in outcome.removed] == ["sip:alice@192.0.2.10"]
    assert outcome.aor == "alice"


def test_unregister_unknown_contact_is_fine(hub: Harness) -> None:
    resp = hub.send(register("<sip:alice@192.0.2.99>", expires=0))
    assert resp.status == 200
    assert contacts_of(resp) == {}


def test_unregister_all_with_star(hub: Harness) -> None:
    hub.send(register("<sip:alice@192.0.2.10>", "<sip:alice@192.0.2.11>", expires=600))
    hub.send(register("<sip:alice@192.0.2.12>", call_id="other", expires=600))
    hub.send(register("<sip:bob@192.0.2.20>", user="bob"), user="bob")
    outcome = hub.registrar.process(
        register("*", expires=0, cseq=2),
        user="alice",
        source=SOURCE,
        transport="udp",
        now=T0,
    )
    assert outcome.response.status == 200
    assert outcome.response.headers.get_all("Contact") == []
    assert len(outcome.removed) == 3
    assert hub.store.bindings("alice", T0) == []
    assert len(hub.store.bindings("bob", T0)) == 1


@pytest.mark.parametrize(
    ("contacts", "expires"),
    [(("*",), None), (("*",), 60), (("*", "<sip:alice@192.0.2.10>"), 0)],
)
def test_star_misuse_is_400(hub: Harness, contacts: tuple[str, ...], expires: int | None) -> None:
    hub.send(register("<sip:alice@192.0.2.10>"))
    resp = hub.send(register(*contacts, expires=expires, cseq=2))
    assert resp.status == 400
    assert resp.reason == "Contact * needs Expires: 0 and no other Contact"
    assert len(hub.store.bindings("alice", T0)) == 1


def test_expiry(hub: Harness) -> None:
    hub.send(register("<sip:alice@192.0.2.10>", expires=60))
    hub.send(register("<sip:alice@192.0.2.11>", call_id="b", expires=600))
    assert len(hub.store.bindings("alice", T0 + 59)) == 2
    assert [b.contact for b in hub.store.bindings("alice", T0 + 60)] == ["sip:alice@192.0.2.11"]
    assert contacts_of(hub.send(register(cseq=5), now=T0 + 61)) == {"sip:alice@192.0.2.11": "539"}
    assert hub.store.bindings("alice", T0 + 600) == []


def test_memory_store_expire_reports_lapsed_bindings(hub: Harness) -> None:
    hub.send(register("<sip:alice@192.0.2.10>", expires=60))
    hub.send(register("<sip:bob@192.0.2.20>", user="bob", expires=600), user="bob")
    assert hub.store.aors() == ["alice", "bob"]
    assert hub.store.expire(T0 + 30) == []
    assert [b.aor for b in hub.store.expire(T0 + 60)] == ["alice"]
    assert hub.store.aors() == ["bob"]


def test_interval_too_brief(hub: Harness) -> None:
    resp = hub.send(register("<sip:alice@192.0.2.10>", "<sip:alice@192.0.2.11>", expires=30))
    assert (resp.status, resp.reason) == (423, "Interval Too Brief")
    assert resp.headers.get("Min-Expires") == "60"
    assert hub.store.bindings("alice", T0) == []
    # One brief contact fails the whole request: nothing is applied.
    resp = hub.send(
        register("<sip:alice@192.0.2.10>", "<sip:alice@192.0.2.11>;expires=5", expires=600)
    )
    assert resp.status == 423
    assert hub.store.bindings("alice", T0) == []
    assert hub.send(register("<sip:alice@192.0.2.10>", expires=60)).status == 200


def test_user_mismatch_is_403(hub: Harness) -> None:
    resp = hub.send(register("<sip:bob@192.0.2.10>", user="bob"), user="alice")
    assert resp.status == 403
    assert resp.reason == "'alice' may not register 'bob'"
    assert hub.store.bindings("bob", T0) == []


def test_out_of_order_cseq_aborts(hub: Harness) -> None:
    hub.send(register("<sip:alice@192.0.2.10>", expires=600, cseq=5))
    for cseq in (5, 4):
        resp = hub.send(register("<sip:alice@192.0.2.10>", expires=0, cseq=cseq))
        assert resp.status == 500
        assert resp.reason.startswith("out-of-order REGISTER")
        resp = hub.send(register("*", expires=0, cseq=cseq))
        assert resp.status == 500
    assert len(hub.store.bindings("alice", T0)) == 1
    # Another Call-ID (the phone rebooted) may replace it, whatever its CSeq.
    resp = hub.send(register("<sip:alice@192.0.2.10>", expires=0, cseq=1, call_id="new"))
    assert resp.status == 200
    assert hub.store.bindings("alice", T0) == []


def test_same_contact_twice_in_one_request(hub: Harness) -> None:
    resp = hub.send(
        register("<sip:alice@192.0.2.10>;expires=100", "<sip:alice@192.0.2.10>;expires=200")
    )
    assert contacts_of(resp) == {"sip:alice@192.0.2.10": "200"}


def test_too_many_contacts() -> None:
    hub = Harness(max_bindings_per_aor=2)
    contacts = [f"<sip:alice@192.0.2.{i}>" for i in range(3)]
    resp = hub.send(register(*contacts))
    assert resp.status == 403
    assert hub.store.bindings("alice", T0) == []


def test_bad_q_value(hub: Harness) -> None:
    resp = hub.send(register("<sip:alice@192.0.2.10>;q=1.5"))
    assert (resp.status, resp.reason) == (400, "bad q value '1.5' in Contact")


def test_non_sip_contact_refused(hub: Harness) -> None:
    resp = hub.send(register("<mailto:alice@example.com>"))
    assert resp.status == 400


def test_domain_check() -> None:
    hub = Harness(domain_check=lambda host: host == "hub.example.org")
    assert hub.send(register("<sip:alice@192.0.2.10>")).status == 200
    req = register("<sip:alice@192.0.2.10>", cseq=2)
    req.uri = parse_sip_uri("sip:elsewhere.example.com")
    resp = hub.send(req)
    assert (resp.status, resp.reason) == (404, "domain 'elsewhere.example.com' is not served here")


def test_not_register_is_405(hub: Harness) -> None:
    req = register()
    req.method = "OPTIONS"
    resp = hub.send(req)
    assert resp.status == 405
    assert resp.headers.get("Allow") == "REGISTER"


def test_ipv6_source_and_transport(hub: Harness) -> None:
    hub.registrar.handle(
        register("<sip:alice@[2001:db8::5]:5060;transport=tcp>"),
        user="alice",
        source=("2001:db8::5", 40001),
        transport="TCP",
        now=T0,
    )
    (b,) = hub.store.bindings("alice", T0)
    assert (b.received, b.transport) == ("[2001:db8::5]:40001", "tcp")


def test_configuration_is_checked() -> None:
    with pytest.raises(ValueError):
        Registrar(MemoryLocationStore(), min_expires=600, default_expires=300)
    with pytest.raises(ValueError):
        Registrar(MemoryLocationStore(), min_expires=0)


# --- RFC 4475 messages ---------------------------------------------------------------------


def torture(name: str) -> Request:
    msg = parse_message((TORTURE / f"{name}.dat").read_bytes())
    assert isinstance(msg, Request)
    return msg


def test_rfc4475_unknown_scheme_in_to_is_400(hub: Harness) -> None:
    resp = hub.send(torture("unksm2"))
    assert (resp.status, resp.reason) == (400, "To URI scheme 'isbn' not supported in REGISTER")


@pytest.mark.parametrize("name", ["cparam01", "cparam02"])
def test_rfc4475_contact_parameters(hub: Harness, name: str) -> None:
    resp = hub.send(torture(name), user="watson")
    assert resp.status == 200
    (b,) = hub.store.bindings("watson", T0)
    if name == "cparam01":
        # Without <>, ";unknownparam" is a header parameter, not part of the URI.
        assert b.contact == "sip:+19725552222@gw1.example.net"
    else:
        assert b.contact == "sip:+19725552222@gw1.example.net;unknownparam"


def test_rfc4475_escaped_route_in_contact_kept(hub: Harness) -> None:
    resp = hub.send(torture("regescrt"), user="user")
    assert resp.status == 200
    (b,) = hub.store.bindings("user", T0)
    assert b.contact == "sip:user@example.com?Route=%3Csip:sip.example.com%3E"
    assert resp.headers.get_all("Contact") == [
        "<sip:user@example.com?Route=%3Csip:sip.example.com%3E>;expires=3600"
    ]


def test_rfc4475_escaped_null_bindings_are_distinct(hub: Harness) -> None:
    resp = hub.send(torture("escnull"), user="null-\x00-null")
    assert resp.status == 200
    assert sorted(b.contact for b in hub.store.bindings("null-\x00-null", T0)) == [
        "sip:%00%00@host5.example.com",
        "sip:%00@host5.example.com",
    ]


# --- URI comparison (RFC 3261 19.1.4) -------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
        ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;newparam=5"),
        ("sip:alice@[2001:db8::1]", "sip:alice@[2001:DB8:0::1]"),
        ("sip:a@h?x=1&y=2", "sip:a@h?y=2&x=1"),
    ],
)
def test_uri_equivalent(a: str, b: str) -> None:
    ua, ub = parse_sip_uri(a), parse_sip_uri(b)
    assert uri_equivalent(ua, ub) and uri_equivalent(ub, ua)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
        ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;newparam=6"),
        ("sip:a@h", "sips:a@h"),
        ("sip:a@h?x=1", "sip:a@h"),
    ],
)
def test_uri_not_equivalent(a: str, b: str) -> None:
    ua, ub = parse_sip_uri(a), parse_sip_uri(b)
    assert isinstance(ua, SipUri)
    assert not uri_equivalent(ua, ub) and not uri_equivalent(ub, ua)

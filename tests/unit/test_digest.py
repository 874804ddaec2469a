"""Digest authentication (RFC 2617, RFC 7616, RFC 8760)."""

from __future__ import annotations

import base64
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signaling.digest import (
    DigestClient,
    DigestError,
    DigestResult,
    DigestServer,
    ha1,
)
from signaling.headers import AuthHeader, parse_auth

REALM = "hub.example.org"
SECRET = b"0123456789abcdef0123456789abcdef"
PASSWORDS = {"alice": "wonderland", "bob": "builder"}
T0 = 1_700_000_000.0


def lookup(username: str, algorithm: str) -> str | None:
    password = PASSWORDS.get(username)
    return None if password is None else ha1(username, REALM, password, algorithm)


def make_server(**kwargs: object) -> DigestServer:
    seq = itertools.count()
    kwargs.setdefault("token_bytes", lambda n: next(seq).to_bytes(n, "big"))
    return DigestServer(REALM, SECRET, **kwargs)  # type: ignore[arg-type]


def login(
    server: DigestServer,
    *,
    now: float = T0,
    username: str = "alice",
    password: str = "wonderland",
    nc: int = 1,
    challenge: AuthHeader | None = None,
    method: str = "REGISTER",
) -> tuple[AuthHeader, DigestResult]:
    if challenge is None:
        challenge = DigestClient.choose_challenge(server.challenge(now))
        assert challenge is not None
    creds = DigestClient.authorize(
        challenge,
        method=method,
        uri="sip:hub.example.org",
        username=username,
        password=password,
        cnonce="0a4f113b",
        nc=nc,
    )
    # Through the wire format, as the stack will see it.
    creds = parse_auth(str(creds))
    return creds, server.verify(creds, method, lookup, now)


# --- known answers ------------------------------------------------------------------------


def test_rfc2617_section_3_5_example() -> None:
    challenge = parse_auth(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    creds = DigestClient.authorize(
        challenge,
        method="GET",
        uri="/dir/index.html",
        username="Mufasa",
        password="Circle Of Life",
        cnonce="0a4f113b",
        nc=1,
    )
    assert creds.params == {
        "username": "Mufasa",
        "realm": "testrealm@host.com",
        "nonce": "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        "uri": "/dir/index.html",
        "response": "6629fae49393a05397450978507c4ef1",
        "cnonce": "0a4f113b",
        "qop": "auth",
        "nc": "00000001",
        "opaque": "5ccc069c403ebaf9f0171e9517f40e41",
    }
    assert str(creds) == (
        'Digest username="Mufasa", realm="testrealm@host.com", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", '
        'response="6629fae49393a05397450978507c4ef1", cnonce="0a4f113b", qop=auth, '
        'nc=00000001, opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )


RFC7616_CHALLENGE = (
    'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={alg}, '
    'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
    'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)


@pytest.mark.parametrize(
    ("algorithm", "response"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_section_3_9_1_example(algorithm: str, response: str) -> None:
    challenge = parse_auth(RFC7616_CHALLENGE.format(alg=algorithm))
    creds = DigestClient.authorize(
        challenge,
        method="GET",
        uri="/dir/index.html",
        username="Mufasa",
        password="Circle of Life",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        nc=1,
    )
    assert creds.params["response"] == response
    assert creds.params["algorithm"] == algorithm
    assert "algorithm=" + algorithm in str(creds)


def test_ha1() -> None:
    assert ha1("Mufasa", "testrealm@host.com", "Circle Of Life") == (
        "939e7578ed9e3c518a452acee763bce9"
    )
    assert len(ha1("Mufasa", "http-auth@example.org", "Circle of Life", "SHA-256")) == 64
    assert ha1("a", "r", "p", "sha-256") == ha1("a", "r", "p", "SHA-256")
    with pytest.raises(DigestError):
        ha1("a", "r", "p", "SHA-1")


# --- challenges ---------------------------------------------------------------------------


def test_challenge_one_per_algorithm_sha256_first() -> None:
    server = make_server(opaque="op")
    challenges = server.challenge(T0)
    assert [c.params["algorithm"] for c in challenges] == ["SHA-256", "MD5"]
    assert len({c.params["nonce"] for c in challenges}) == 1
    first = challenges[0]
    assert first.scheme == "Digest"
    assert first.params["qop"] == "auth"
    assert first.params["realm"] == REALM
    assert first.params["opaque"] == "op"
    assert "stale" not in first.params
    assert 'qop="auth"' in str(first)
    assert server.challenge(T0, stale=True)[0].params["stale"] == "true"
    assert "stale=true" in str(server.challenge(T0, stale=True)[0])


def test_nonces_are_unique_even_at_the_same_instant() -> None:
    server = DigestServer(REALM, SECRET)
    assert server.challenge(T0)[0].params["nonce"] != server.challenge(T0)[0].params["nonce"]


def test_choose_challenge_prefers_sha256() -> None:
    md5 = parse_auth(f'Digest realm="{REALM}", nonce="n1", qop="auth"')
    sha = parse_auth(f'Digest realm="{REALM}", nonce="n2", qop="auth", algorithm=SHA-256')
    odd = parse_auth(f'Digest realm="{REALM}", nonce="n3", qop="auth", algorithm=SHA-1')
    auth_int = parse_auth(f'Digest realm="{REALM}", nonce="n4", qop="auth-int"')
    basic = parse_auth('Basic realm="x"')
    assert DigestClient.choose_challenge([md5, sha]) is sha
    assert DigestClient.choose_challenge([sha, md5]) is sha
    assert DigestClient.choose_challenge([basic, odd, auth_int, md5]) is md5
    assert DigestClient.choose_challenge([basic, odd, auth_int]) is None
    assert DigestClient.choose_challenge([]) is None


def answer_challenge(value: str, nc: int = 1) -> AuthHeader:
    return DigestClient.authorize(
        parse_auth(value),
        method="INVITE",
        uri="sip:x",
        username="u",
        password="p",
        cnonce="c",
        nc=nc,
    )


def test_client_refuses_what_it_cannot_do() -> None:
    for value in (
        'Digest realm="r", nonce="n", algorithm=SHA-1',
        'Digest realm="r", nonce="n", qop="auth-int"',
        'Digest realm="r"',
        'Basic realm="r"',
    ):
        with pytest.raises(DigestError):
            answer_challenge(value)
    with pytest.raises(ValueError):
        answer_challenge('Digest realm="r", nonce="n"', nc=0)
    with pytest.raises(ValueError):
        answer_challenge('Digest realm="r", nonce="n"', nc=2**32)


def test_client_rfc2069_and_sess_variants() -> None:
    # No qop offered (RFC 2069 server): answered without cnonce/nc.
    creds = DigestClient.authorize(
        parse_auth('Digest realm="r", nonce="n"'),
        method="REGISTER",
        uri="sip:r",
        username="u",
        password="p",
        cnonce="c",
        nc=1,
    )
    assert set(creds.params) == {"username", "realm", "nonce", "uri", "response"}
    sess = DigestClient.authorize(
        parse_auth('Digest realm="r", nonce="n", qop="auth", algorithm=MD5-sess'),
        method="REGISTER",
        uri="sip:r",
        username="u",
        password="p",
        cnonce="c",
        nc=1,
    )
    assert sess.params["algorithm"] == "MD5-sess"
    assert sess.params["response"] != creds.params["response"]


# --- verification -------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_round_trip(algorithm: str) -> None:
    server = make_server()
    challenge = next(c for c in server.challenge(T0) if c.params["algorithm"] == algorithm)
    _, result = login(server, challenge=challenge, now=T0 + 10)
    assert result == DigestResult(True, "alice", False, "ok")


def test_nc_increments_on_one_nonce() -> None:
    server = make_server()
    challenge = DigestClient.choose_challenge(server.challenge(T0))
    for nc in (1, 2, 5):
        assert login(server, challenge=challenge, nc=nc)[1].ok


def test_replayed_nc_is_rejected() -> None:
    server = make_server()
    creds, first = login(server)
    assert first.ok
    replay = server.verify(creds, "REGISTER", lookup, T0 + 1)
    assert not replay.ok and not replay.stale
    assert "replayed" in replay.reason
    challenge = AuthHeader("Digest", {k: creds.params[k] for k in ("realm", "nonce")})
    challenge.params.update(qop="auth", algorithm=creds.params["algorithm"])
    assert login(server, challenge=challenge, nc=2)[1].ok
    assert not login(server, challenge=challenge, nc=2)[1].ok
    assert not login(server, challenge=challenge, nc=1)[1].ok


def test_wrong_password() -> None:
    _, result = login(make_server(), password="guess")
    assert not result.ok and not result.stale
    assert result.username is None
    assert "wrong response" in result.reason


def test_unknown_user() -> None:
    _, result = login(make_server(), username="mallory", password="x")
    assert not result.ok and not result.stale
    assert "unknown user" in result.reason


def test_expired_nonce_is_stale_only_if_response_right() -> None:
    server = make_server(nonce_ttl=300.0)
    challenge = DigestClient.choose_challenge(server.challenge(T0))
    _, result = login(server, challenge=challenge, now=T0 + 301)
    assert result == DigestResult(False, "alice", True, "nonce expired")
    _, wrong = login(server, challenge=challenge, now=T0 + 301, password="guess")
    assert not wrong.ok and not wrong.stale
    assert login(server, challenge=challenge, now=T0 + 299)[1].ok


def test_forged_nonce_rejected() -> None:
    server = make_server()
    other = DigestServer(REALM, b"another secret, another hub....")
    challenge = other.challenge(T0)[0]
    _, result = login(server, challenge=challenge)
    assert not result.ok and not result.stale
    assert result.reason == "nonce not issued by us"
    # A genuine nonce with its timestamp changed no longer verifies.
    genuine = server.challenge(T0)[0]
    raw = bytearray(base64.urlsafe_b64decode(genuine.params["nonce"]))
    raw[0] ^= 1
    genuine.params["nonce"] = base64.urlsafe_b64encode(bytes(raw)).decode()
    assert login(server, challenge=genuine)[1].reason == "nonce not issued by us"
    # Another spelling of a genuine nonce (stray characters b64decode would skip).
    spelled = server.challenge(T0)[0]
    spelled.params["nonce"] = spelled.params["nonce"][:10] + "!" + spelled.params["nonce"][10:]
    assert login(server, challenge=spelled)[1].reason == "nonce not issued by us"


def test_nonce_from_another_realm_rejected() -> None:
    server = make_server()
    other = DigestServer("other.example.org", SECRET)
    challenge = other.challenge(T0)[0]
    challenge.params["realm"] = REALM
    assert login(server, challenge=challenge)[1].reason == "nonce not issued by us"


def test_wrong_realm() -> None:
    server = make_server()
    challenge = server.challenge(T0)[0]
    challenge.params["realm"] = "elsewhere"
    _, result = login(server, challenge=challenge)
    assert not result.ok
    assert result.reason == "realm 'elsewhere' is not ours"


def test_future_nonce_rejected() -> None:
    server = make_server()
    challenge = server.challenge(T0 + 3600)[0]
    assert login(server, challenge=challenge, now=T0)[1].reason == "nonce not issued by us"


def base_creds(server: DigestServer) -> AuthHeader:
    creds, _ = login(server)
    return creds


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"scheme": "Basic"}, "scheme 'Basic' is not Digest"),
        ({"-uri": None}, "missing uri parameter"),
        ({"-response": None}, "missing response parameter"),
        ({"-qop": None}, "qop missing (RFC 2069 credentials are refused)"),
        ({"qop": "auth-int"}, "qop 'auth-int' not offered"),
        ({"-cnonce": None}, "qop=auth without cnonce or nc"),
        ({"-nc": None}, "qop=auth without cnonce or nc"),
        ({"nc": "1"}, "bad nc '1'"),
        ({"nc": "0000000g"}, "bad nc '0000000g'"),
        ({"algorithm": "SHA-512-256"}, "algorithm 'SHA-512-256' not offered"),
        ({"algorithm": "MD5-sess"}, "algorithm 'MD5-sess' not offered"),
        ({"userhash": "true"}, "userhash is not supported"),
    ],
)
def test_malformed_credentials(change: dict[str, str | None], reason: str) -> None:
    server = make_server()
    creds = base_creds(server)
    params = dict(creds.params)
    scheme = creds.scheme
    for key, value in change.items():
        if key == "scheme":
            scheme = str(value)
        elif key.startswith("-"):
            params.pop(key[1:])
        else:
            assert value is not None
            params[key] = value
    result = server.verify(AuthHeader(scheme, params), "REGISTER", lookup, T0)
    assert result == DigestResult(False, None, False, reason)


def test_missing_algorithm_means_md5() -> None:
    server = make_server(algorithms=("SHA-256",))
    creds = base_creds(server)
    params = dict(creds.params)
    del params["algorithm"]
    result = server.verify(AuthHeader("Digest", params), "REGISTER", lookup, T0)
    assert result.reason == "algorithm None not offered"
    md5_server = make_server(algorithms=("MD5",))
    challenge = md5_server.challenge(T0)[0]
    del challenge.params["algorithm"]
    creds, result = login(md5_server, challenge=challenge)
    assert "algorithm" not in creds.params
    assert result.ok


def test_method_is_part_of_the_response() -> None:
    server = make_server()
    creds, _ = login(server, method="INVITE")
    creds.params["nc"] = "00000002"
    assert not server.verify(creds, "BYE", lookup, T0).ok


def test_opaque_must_come_back() -> None:
    server = make_server(opaque="xyz")
    creds = base_creds(server)
    creds.params["opaque"] = "abc"
    creds.params["nc"] = "00000002"
    assert server.verify(creds, "REGISTER", lookup, T0).reason == "opaque does not match"


def test_response_hex_case_is_ignored() -> None:
    server = make_server()
    creds, _ = login(server)
    creds = parse_auth(str(creds))
    creds.params["nc"] = "00000002"
    # A fresh client computation for nc=2, upper-cased.
    challenge = AuthHeader(
        "Digest",
        {"realm": REALM, "nonce": creds.params["nonce"], "qop": "auth", "algorithm": "SHA-256"},
    )
    again = DigestClient.authorize(
        challenge,
        method="REGISTER",
        uri="sip:hub.example.org",
        username="alice",
        password="wonderland",
        cnonce="x",
        nc=2,
    )
    again.params["response"] = again.params["response"].upper()
    assert server.verify(again, "REGISTER", lookup, T0).ok


def test_nonce_table_is_bounded_and_eviction_never_reopens_replay() -> None:
    server = make_server(max_tracked_nonces=3)
    used = []
    for i in range(5):
        creds, result = login(server, now=T0 + i)
        assert result.ok
        used.append(creds)
        assert server.tracked_nonces <= 3
    # The oldest nonces were evicted: replaying them is "stale", never "ok".
    oldest = used[0]
    result = server.verify(oldest, "REGISTER", lookup, T0 + 10)
    assert not result.ok and result.stale
    # An evicted nonce with a higher nc is stale too (its old nc is forgotten).
    challenge = AuthHeader(
        "Digest",
        {"realm": REALM, "nonce": oldest.params["nonce"], "qop": "auth", "algorithm": "SHA-256"},
    )
    assert login(server, challenge=challenge, nc=9, now=T0 + 10)[1].stale
    # A nonce issued after the evicted ones still works.
    assert login(server, now=T0 + 20)[1].ok


def test_expired_nonces_are_pruned() -> None:
    server = make_server(max_tracked_nonces=100, nonce_ttl=10)
    for i in range(5):
        assert login(server, now=T0 + i)[1].ok
    assert server.tracked_nonces == 5
    assert login(server, now=T0 + 100)[1].ok
    assert server.tracked_nonces == 1


def test_server_configuration_is_checked() -> None:
    with pytest.raises(ValueError):
        DigestServer(REALM, b"")
    with pytest.raises(ValueError):
        DigestServer(REALM, SECRET, algorithms=())
    with pytest.raises(ValueError):
        DigestServer(REALM, SECRET, algorithms=("SHA-1",))
    with pytest.raises(ValueError):
        DigestServer(REALM, SECRET, algorithms=("MD5-sess",))
    with pytest.raises(ValueError):
        DigestServer(REALM, SECRET, max_tracked_nonces=0)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce", "algorithm"]
        ),
        st.text(max_size=70),
    )
)
def test_fuzz_verify_never_raises(params: dict[str, str]) -> None:
    server = make_server()
    result = server.verify(AuthHeader("Digest", params), "REGISTER", lookup, T0)
    assert not result.ok

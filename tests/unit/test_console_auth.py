"""Console authentication, roles, operators, SIP users and the audit log over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from console.auth import DEFAULT_TTL_S, AuthService, LoginThrottle, Role
from dispatch.audit import AuditLog
from dispatch.errors import Conflict, InvalidInput, NotFound
from hub.store import Store
from tests.unit.console_util import FAST_HASHER, NOW, PASSWORDS, Clock, Console, console

ROLE_NAMES = ("dispatcher", "supervisor", "admin")


@pytest.fixture
def c(tmp_path: Path) -> Iterator[Console]:
    with console(tmp_path) as running:
        yield running


# -------------------------------------------------------------------------- logging in


def test_token_login_gives_a_working_bearer_token(c: Console) -> None:
    response = c.client.post("/api/auth/token",
                             json={"username": "dispatcher", "password": PASSWORDS["dispatcher"]})
    assert response.status_code == 200
    body = response.json()
    assert body["expires_at"] == NOW + DEFAULT_TTL_S
    assert body["operator"] == {"name": "dispatcher", "role": "dispatcher", "display_name": None,
                                "created_at": NOW}
    assert len(body["token"]) >= 43
    me = c.client.get("/api/auth/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.status_code == 200
    assert me.json()["operator"]["name"] == "dispatcher"
    assert me.json()["session"] == {"kind": "token", "expires_at": NOW + DEFAULT_TTL_S}
    [entry] = c.audit_entries(action="auth.token")
    assert (entry["operator"], entry["result"], entry["status"]) == ("dispatcher", "ok", 200)


def test_only_a_hash_of_the_token_and_an_argon2id_hash_of_the_password_are_stored(
        c: Console) -> None:
    token = c.token("admin")
    rows = c.store.query("SELECT token_hash FROM sessions")
    assert rows and all(token not in r[0] for r in rows)
    [row] = c.store.query("SELECT password_hash FROM operators WHERE name = 'admin'")
    assert row[0].startswith("$argon2id$") and PASSWORDS["admin"] not in row[0]


@pytest.mark.parametrize("username, password", [
    ("dispatcher", "wrong-password"),
    ("nobody", "whatever-pw"),
])
def test_bad_credentials_are_401_and_audited(c: Console, username: str, password: str) -> None:
    response = c.client.post("/api/auth/token", json={"username": username, "password": password})
    assert response.status_code == 401
    assert response.json() == {"error_id": "invalid-credentials",
                               "message": "unknown operator or wrong password"}
    [entry] = c.audit_entries(action="auth.token")
    assert (entry["operator"], entry["result"], entry["status"]) == (
        username, "invalid-credentials", 401)


@pytest.mark.parametrize("body, error_id, words", [
    ({"username": "dispatcher"}, "invalid-input", "'password' is required"),
    ({"username": "dispatcher", "password": 5}, "invalid-input",
     "body.password: expected a string"),
    ({"username": "x", "password": "y", "extra": 1}, "invalid-input", "unknown field 'extra'"),
    ([], "invalid-input", "expected an object"),
])
def test_malformed_login_bodies_are_422(c: Console, body: object, error_id: str,
                                        words: str) -> None:
    response = c.client.post("/api/auth/token", json=body)
    assert response.status_code == 422
    assert response.json()["error_id"] == error_id
    assert words in response.json()["message"]


def test_login_body_must_be_json_and_parse(c: Console) -> None:
    response = c.client.post("/api/auth/token", content=b"username=a",
                             headers={"content-type": "text/plain"})
    assert response.status_code == 415
    assert "application/json" in response.json()["message"]
    response = c.client.post("/api/auth/token", content=b"{nope",
                             headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["error_id"] == "invalid-json"


def test_failed_logins_are_throttled_per_source(c: Console) -> None:
    for _ in range(3):
        assert c.client.post("/api/auth/token",
                             json={"username": "admin", "password": "bad-guess"}).status_code == 401
    good = {"username": "admin", "password": PASSWORDS["admin"]}
    blocked = c.client.post("/api/auth/token", json=good)
    assert blocked.status_code == 429
    assert blocked.json()["error_id"] == "too-many-failures"
    assert blocked.headers["retry-after"] == "300"
    assert "testclient" in blocked.json()["message"]
    c.clock.now += 301
    assert c.client.post("/api/auth/token", json=good).status_code == 200


def test_login_throttle_counts_within_its_window() -> None:
    throttle = LoginThrottle(max_failures=3, window=60, block_for=300)
    assert not throttle.failure("a", 0) and not throttle.failure("a", 30)
    assert not throttle.failure("a", 70)  # the first failure left the window
    assert throttle.failure("a", 80)
    assert throttle.retry_after("a", 100) == 280
    assert throttle.retry_after("b", 100) == 0
    assert throttle.retry_after("a", 380) == 0


# ------------------------------------------------------------------ tokens and sessions


@pytest.mark.parametrize("headers, words", [
    ({}, "authentication required"),
    ({"Authorization": "Bearer not-a-real-token-at-all-xxxxxx"}, "invalid, expired or revoked"),
    ({"Authorization": "Basic YWRtaW46eA=="}, "invalid, expired or revoked"),
])
def test_requests_without_a_valid_token_are_401(c: Console, headers: dict[str, str],
                                                 words: str) -> None:
    response = c.client.get("/api/directory", headers=headers)
    assert response.status_code == 401
    assert response.json()["error_id"] == "unauthenticated"
    assert words in response.json()["message"]
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_tokens_expire(c: Console) -> None:
    headers = c.headers("dispatcher")
    assert c.client.get("/api/directory", headers=headers).status_code == 200
    c.clock.now += DEFAULT_TTL_S + 1
    response = c.client.get("/api/directory", headers=headers)
    assert response.status_code == 401
    assert "expired" in response.json()["message"]


def test_logout_revokes_the_token_and_is_audited(c: Console) -> None:
    headers = c.headers("dispatcher")
    response = c.client.post("/api/auth/logout", headers=headers)
    assert response.status_code == 204
    assert c.client.get("/api/auth/me", headers=headers).status_code == 401
    [entry] = c.audit_entries(action="auth.logout")
    assert (entry["operator"], entry["result"]) == ("dispatcher", "ok")
    [row] = c.store.query("SELECT revoked_at FROM sessions")
    assert row[0] == NOW


def test_page_login_sets_a_strict_httponly_cookie(c: Console) -> None:
    response = c.client.post("/api/auth/login", json={"username": "supervisor",
                                                      "password": PASSWORDS["supervisor"]})
    assert response.status_code == 200
    assert response.json()["operator"]["role"] == "supervisor"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("hub_session=")
    for attribute in ("HttpOnly", "SameSite=strict", "Path=/", f"Max-Age={int(DEFAULT_TTL_S)}"):
        assert attribute.lower() in cookie.lower()
    assert "secure" not in cookie.lower()  # served over plain HTTP
    assert "token" not in response.json()
    # The client keeps the cookie: the API now works without a header.
    me = c.client.get("/api/auth/me")
    assert me.status_code == 200 and me.json()["session"]["kind"] == "cookie"
    out = c.client.post("/api/auth/logout", headers={"origin": "http://hub.test"})
    assert out.status_code == 204
    assert 'hub_session=""' in out.headers["set-cookie"] or "Max-Age=0" in out.headers["set-cookie"]
    c.client.cookies.clear()
    assert c.client.get("/api/auth/me").status_code == 401


def test_cookie_is_secure_over_tls(tmp_path: Path) -> None:
    with console(tmp_path) as c:
        c.client.base_url = "https://hub.test"  # type: ignore[assignment]
        response = c.client.post("/api/auth/login", json={"username": "admin",
                                                          "password": PASSWORDS["admin"]})
        assert response.status_code == 200
        assert "secure" in response.headers["set-cookie"].lower()


def test_form_login_redirects_to_a_local_next_only(c: Console) -> None:
    form = {"username": "admin", "password": PASSWORDS["admin"], "next": "/console#calls"}
    response = c.client.post("/api/auth/login", data=form, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/console#calls"
    assert "hub_session=" in response.headers["set-cookie"]
    for evil in ("//evil.example/", "https://evil.example/", "javascript:alert(1)"):
        response = c.client.post("/api/auth/login", data={**form, "next": evil},
                                 follow_redirects=False)
        assert response.headers["location"] == "/"
    bad = c.client.post("/api/auth/login", data={**form, "password": "nope-nope"},
                        follow_redirects=False)
    assert bad.status_code == 401


def test_cookie_requests_from_another_origin_are_refused(c: Console) -> None:
    c.client.post("/api/auth/login", json={"username": "supervisor",
                                           "password": PASSWORDS["supervisor"]})
    body = {"name": "Station 9"}
    refused = c.client.post("/api/directory/units", json=body,
                            headers={"origin": "https://evil.example"})
    assert refused.status_code == 403 and refused.json()["error_id"] == "cross-origin"
    allowed = c.client.post("/api/directory/units", json=body,
                            headers={"origin": "http://hub.test"})
    assert allowed.status_code == 201
    # Reads and bearer tokens are not affected.
    assert c.client.get("/api/directory", headers={"origin": "https://evil.example"}
                        ).status_code == 200


def test_health_and_openapi_need_no_login_and_unknown_routes_are_json(c: Console) -> None:
    assert c.client.get("/api/health").status_code == 200
    assert c.client.get("/openapi.json").status_code == 200
    missing = c.client.get("/api/nope")
    assert missing.status_code == 404 and missing.json()["error_id"] == "route-not-found"
    wrong = c.client.put("/api/auth/token")
    assert wrong.status_code == 405 and wrong.json()["error_id"] == "method-not-allowed"


# -------------------------------------------------------------------------------- roles


@pytest.mark.parametrize("method, path, least", [
    ("GET", "/api/operators", "admin"),
    ("POST", "/api/operators", "admin"),
    ("GET", "/api/operators/admin", "admin"),
    ("PATCH", "/api/operators/admin", "admin"),
    ("DELETE", "/api/operators/dispatcher", "admin"),
    ("GET", "/api/users", "admin"),
    ("POST", "/api/users", "admin"),
    ("GET", "/api/users/1001", "admin"),
    ("DELETE", "/api/users/1001", "admin"),
    ("GET", "/api/audit", "supervisor"),
    ("POST", "/api/directory/units", "supervisor"),
    ("PATCH", "/api/directory/units/u1", "supervisor"),
    ("DELETE", "/api/directory/units/u1", "supervisor"),
    ("POST", "/api/directory/people", "supervisor"),
    ("PATCH", "/api/directory/people/p1", "supervisor"),
    ("DELETE", "/api/directory/people/p1", "supervisor"),
    ("POST", "/api/directory/people/p1/endpoints", "supervisor"),
    ("PATCH", "/api/directory/endpoints/sip:1001", "supervisor"),
    ("DELETE", "/api/directory/endpoints/sip:1001", "supervisor"),
    ("POST", "/api/directory/import", "supervisor"),
])
def test_each_route_refuses_roles_below_its_own(c: Console, method: str, path: str,
                                                least: str) -> None:
    for name in ROLE_NAMES[:ROLE_NAMES.index(least)]:
        response = c.client.request(method, path, headers=c.headers(name), json={})
        assert response.status_code == 403, (name, response.text)
        body = response.json()
        assert body["error_id"] == "forbidden"
        assert f"needs the {least} role" in body["message"] and f"{name} is a {name}" in body[
            "message"]
    # Refusals of actions are audited too (reads are not).
    if method != "GET":
        entries = c.audit_entries(result="forbidden")
        assert entries and entries[0]["status"] == 403


def test_role_ranks() -> None:
    assert Role.ADMIN.at_least(Role.SUPERVISOR) and Role.SUPERVISOR.at_least(Role.DISPATCHER)
    assert not Role.DISPATCHER.at_least(Role.SUPERVISOR)
    with pytest.raises(InvalidInput, match="invalid role 'root'"):
        Role.parse("root")


# ---------------------------------------------------------------------------- operators


def test_admin_manages_operators(c: Console) -> None:
    created = c.post("/api/operators", as_="admin", json={
        "name": "zhang.wei", "password": "night-shift-1", "role": "dispatcher",
        "display_name": "张伟"})
    assert created.status_code == 201
    assert created.json() == {"name": "zhang.wei", "role": "dispatcher", "display_name": "张伟",
                              "created_at": NOW}
    listed = c.get("/api/operators", as_="admin").json()["operators"]
    assert [o["name"] for o in listed] == ["admin", "dispatcher", "supervisor", "zhang.wei"]
    token = c.client.post("/api/auth/token", json={"username": "zhang.wei",
                                                   "password": "night-shift-1"}).json()["token"]
    promoted = c.patch("/api/operators/zhang.wei", as_="admin", json={"role": "supervisor"})
    assert promoted.status_code == 200 and promoted.json()["role"] == "supervisor"
    # The role takes effect on the live token at once.
    audit = c.client.get("/api/audit", headers={"Authorization": f"Bearer {token}"})
    assert audit.status_code == 200
    # A new password revokes the operator's sessions.
    assert c.patch("/api/operators/zhang.wei", as_="admin",
                   json={"password": "another-pw-2"}).status_code == 200
    assert c.client.get("/api/auth/me",
                        headers={"Authorization": f"Bearer {token}"}).status_code == 401
    [entry] = c.audit_entries(action="operator.create")
    assert (entry["operator"], entry["target"], entry["detail"]) == (
        "admin", "zhang.wei", {"role": "dispatcher"})


def test_removing_an_operator_revokes_its_tokens(c: Console) -> None:
    headers = c.headers("dispatcher")
    assert c.delete("/api/operators/dispatcher", as_="admin").status_code == 204
    assert c.client.get("/api/directory", headers=headers).status_code == 401
    assert c.get("/api/operators/dispatcher", as_="admin").status_code == 404
    [entry] = c.audit_entries(action="operator.remove")
    assert entry["target"] == "dispatcher" and entry["detail"] == {"sessions_revoked": 1}


@pytest.mark.parametrize("method, path, body, status, error_id, words", [
    ("POST", "/api/operators", {"name": "admin", "password": "long-enough", "role": "admin"},
     409, "operator-exists", "already exists"),
    ("POST", "/api/operators", {"name": "x", "password": "short", "role": "admin"},
     422, "invalid-input", "body.password: must be at least 8 characters"),
    ("POST", "/api/operators", {"name": "x", "password": "long-enough", "role": "root"},
     422, "invalid-input", "'root' is not one of dispatcher, supervisor, admin"),
    ("POST", "/api/operators", {"name": "bad name", "password": "long-enough", "role": "admin"},
     422, "invalid-input", "body.name"),
    ("GET", "/api/operators/ghost", None, 404, "operator-not-found", "no operator 'ghost'"),
    ("PATCH", "/api/operators/ghost", {"role": "admin"}, 404, "operator-not-found", "ghost"),
    ("DELETE", "/api/operators/ghost", None, 404, "operator-not-found", "ghost"),
    ("DELETE", "/api/operators/admin", None, 409, "self-removal", "cannot remove yourself"),
    ("PATCH", "/api/operators/admin", {"role": "dispatcher"}, 409, "self-demotion",
     "take the admin role from yourself"),
])
def test_operator_refusals(c: Console, method: str, path: str, body: object, status: int,
                           error_id: str, words: str) -> None:
    response = c.client.request(method, path, headers=c.headers("admin"), json=body)
    assert response.status_code == status, response.text
    assert response.json()["error_id"] == error_id
    assert words in response.json()["message"]


def test_auth_service_directly(tmp_path: Path) -> None:
    clock = Clock()
    with Store.open(tmp_path) as store:
        auth = AuthService(store, clock=clock, hasher=FAST_HASHER)
        with pytest.raises(InvalidInput, match="8-256 characters"):
            auth.add_operator("a", "admin", password="short")
        with pytest.raises(InvalidInput, match="invalid operator name"):
            auth.add_operator("a b", "admin", password="long-enough")
        auth.add_operator("a", Role.ADMIN, password="long-enough")
        with pytest.raises(Conflict):
            auth.add_operator("a", "admin", password="long-enough")
        issued = auth.open_session("a")
        revoked: list[set[int]] = []
        auth.on_revoked(revoked.append)
        assert auth.authenticate(issued.token) == issued.principal
        assert auth.session_active(issued.principal.session_id)
        assert auth.remove_operator("a") == 1
        assert revoked == [{issued.principal.session_id}]
        assert auth.authenticate(issued.token) is None
        with pytest.raises(NotFound):
            auth.remove_operator("a")


# ------------------------------------------------------------------------- SIP users


def test_admin_manages_sip_users_and_they_join_the_directory(c: Console) -> None:
    created = c.post("/api/users", as_="admin",
                     json={"name": "1001", "password": "pw", "display_name": "Duty desk"})
    assert created.status_code == 201
    assert created.json() == {"name": "1001", "display_name": "Duty desk",
                              "created_at": created.json()["created_at"], "contacts": 0}
    assert c.post("/api/users", as_="admin", json={"name": "1001", "password": "pw"}
                  ).status_code == 409
    assert [u["name"] for u in c.get("/api/users", as_="admin").json()["users"]] == ["1001"]
    assert c.get("/api/directory/people/user:1001").json()["name"] == "Duty desk"
    assert c.delete("/api/users/1001", as_="admin").status_code == 204
    missing = c.get("/api/users/1001", as_="admin")
    assert missing.status_code == 404 and "1001" in missing.json()["message"]
    assert c.delete("/api/users/1001", as_="admin").status_code == 404
    assert c.get("/api/directory/people/user:1001").status_code == 404
    assert [e["action"] for e in reversed(c.audit_entries(action="user.*"))] == [
        "user.create", "user.create", "user.remove", "user.remove"]


# ------------------------------------------------------------------------------ audit


def test_audit_log_filters_and_pages(c: Console) -> None:
    for name in ("A", "B", "C"):
        assert c.post("/api/directory/units", json={"name": name}).status_code == 201
        c.clock.now += 10
    page = c.get("/api/audit", as_="supervisor",
                 params={"action": "directory.*", "limit": 2}).json()
    assert [e["target"] for e in page["entries"]] == ["u3", "u2"]
    assert page["entries"][0]["action"] == "directory.unit.create"
    assert page["entries"][0]["operator"] == "supervisor"
    assert page["entries"][0]["source"] == "testclient"
    older = c.get("/api/audit", as_="supervisor",
                  params={"action": "directory.*", "before": page["next_before"]}).json()
    assert [e["target"] for e in older["entries"]] == ["u1"] and older["next_before"] is None
    since = c.get("/api/audit", as_="admin", params={"since": NOW + 10, "until": NOW + 20}).json()
    assert [e["target"] for e in since["entries"]] == ["u2"]
    mine = c.get("/api/audit", as_="admin", params={"operator": "nobody"}).json()
    assert mine["entries"] == []


@pytest.mark.parametrize("params, words", [
    ({"limit": "0"}, "query parameter 'limit': must be at least 1"),
    ({"limit": "lots"}, "query parameter 'limit': expected an integer"),
    ({"since": "yesterday"}, "query parameter 'since': expected a number"),
])
def test_audit_bad_query_is_422(c: Console, params: dict[str, str], words: str) -> None:
    response = c.get("/api/audit", as_="supervisor", params=params)
    assert response.status_code == 422
    assert words in response.json()["message"]


def test_audit_log_is_append_only(tmp_path: Path) -> None:
    import sqlite3

    with Store.open(tmp_path) as store:
        audit = AuditLog(store, clock=Clock())
        entry = audit.record(operator="a", action="x.y", target="t", detail={"n": 1})
        assert audit.entries() == [entry]
        for sql in ("UPDATE audit_log SET result = 'forged'", "DELETE FROM audit_log"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"), \
                    store.transaction() as conn:
                conn.execute(sql)
        assert audit.entries() == [entry]
        with pytest.raises(InvalidInput, match="limit must be"):
            audit.entries(limit=0)

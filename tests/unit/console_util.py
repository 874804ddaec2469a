"""A console around a real Store in tmp_path, for the ``test_console_*`` tests.

Not collected by pytest (no ``test_`` prefix). argon2 runs with tiny parameters here
(the production defaults cost ~64 MiB and tens of milliseconds per hash).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher

from bridges.events import Event, EventBus
from bridges.model import Bridge, Leg
from console.app import create_app
from console.auth import AuthService, LoginThrottle
from dispatch.audit import AuditLog
from dispatch.directory import DirectoryService
from hub.store import BindingRecord, Store

with warnings.catch_warnings():
    # starlette >= 1.x prefers httpx2 for its TestClient and warns when it falls
    # back to httpx (the declared dev dependency). Narrowly silence just that.
    from starlette.exceptions import StarletteDeprecationWarning

    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`",
                            category=StarletteDeprecationWarning)
    from starlette.testclient import TestClient

NOW = 1_700_000_000.0
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
PASSWORDS = {"dispatcher": "disp-pass-1", "supervisor": "super-pass-1", "admin": "admin-pass-1"}


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeHub:
    def health(self) -> dict[str, Any]:
        return {"sip": {}, "calls": 0, "registrations": 0}


@dataclass
class Console:
    store: Store
    bus: EventBus
    clock: Clock
    auth: AuthService
    audit: AuditLog
    directory: DirectoryService
    client: TestClient
    bridges: list[Bridge] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)

    def token(self, name: str) -> str:
        """A bearer token for operator ``name`` (logging in once through the API)."""
        if name not in self.tokens:
            role = name if name in PASSWORDS else "dispatcher"
            response = self.client.post("/api/auth/token",
                                        json={"username": name, "password": PASSWORDS[role]})
            assert response.status_code == 200, response.text
            self.tokens[name] = response.json()["token"]
        return self.tokens[name]

    def headers(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(name)}"}

    def _kw(self, as_: str, kw: dict[str, Any]) -> dict[str, Any]:
        return {**kw, "headers": {**self.headers(as_), **kw.get("headers", {})}}

    def get(self, path: str, as_: str = "dispatcher", **kw: Any) -> Any:
        return self.client.get(path, **self._kw(as_, kw))

    def post(self, path: str, as_: str = "supervisor", **kw: Any) -> Any:
        return self.client.post(path, **self._kw(as_, kw))

    def patch(self, path: str, as_: str = "supervisor", **kw: Any) -> Any:
        return self.client.patch(path, **self._kw(as_, kw))

    def delete(self, path: str, as_: str = "supervisor", **kw: Any) -> Any:
        return self.client.delete(path, **self._kw(as_, kw))

    def publish(self, event: Event) -> None:
        """Publish on the app's event loop thread, as the hub does."""
        assert self.client.portal is not None
        self.client.portal.call(self.bus.publish, event)

    def register(self, user: str, expires_in: float = 3600.0) -> None:
        self.store.save_binding(BindingRecord(
            aor=user, contact=f"sip:{user}@192.0.2.10:5060", expires_at=self.clock.now + expires_in,
            received_host="192.0.2.10", received_port=5060, transport="udp",
            call_id=f"reg-{user}", cseq=1))

    def bridge(self) -> Bridge:
        bridge = Bridge(self.bus, "call")
        self.bridges.append(bridge)
        return bridge

    def legs(self) -> list[Leg]:
        return [leg for bridge in self.bridges for leg in bridge.legs]

    def audit_entries(self, **filters: Any) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self.audit.entries(**filters)]


@contextmanager
def console(tmp_path: Path, *, snapshot: dict[str, Any] | None = None) -> Iterator[Console]:
    """A console app with operators dispatcher/supervisor/admin (names = roles)."""
    clock = Clock()
    store = Store.open(tmp_path / "data")
    bus = EventBus()
    auth = AuthService(store, clock=clock, hasher=FAST_HASHER,
                       throttle=LoginThrottle(max_failures=3, window=60, block_for=300))
    for role, password in PASSWORDS.items():
        auth.add_operator(role, role, password=password)
    audit = AuditLog(store, clock=clock)
    holder: list[Console] = []
    directory = DirectoryService(store, bus=bus, clock=clock,
                                 legs=lambda: holder[0].legs() if holder else [])
    app = create_app(FakeHub(), version="test", auth=auth, audit=audit, directory=directory,
                     users=store, bus=bus,
                     snapshot={"calls": lambda: [], "rooms": lambda: []} if snapshot is None
                     else {k: (lambda v=v: v) for k, v in snapshot.items()})
    try:
        with TestClient(app, base_url="http://hub.test") as client:
            holder.append(Console(store, bus, clock, auth, audit, directory, client))
            yield holder[0]
    finally:
        directory.close()
        store.close()

"""The registrar's location service on the hub's SQLite store."""

from __future__ import annotations

from signaling.registrar import Binding

from .store import BindingRecord, Store


def _split_received(received: str) -> tuple[str, int]:
    if received.startswith("["):
        host, _, port = received[1:].partition("]:")
    else:
        host, _, port = received.rpartition(":")
    return host, int(port) if port.isdigit() else 0


class StoreLocation:
    """Adapts :class:`Store` bindings to the registrar's :class:`LocationStore`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def bindings(self, aor: str, now: float) -> list[Binding]:
        return [
            Binding(aor=r.aor, contact=r.contact, expires_at=r.expires_at,
                    received=(f"[{r.received_host}]:{r.received_port}"
                              if ":" in r.received_host
                              else f"{r.received_host}:{r.received_port}"),
                    transport=r.transport, call_id=r.call_id, cseq=r.cseq, q=r.q,
                    user_agent=r.user_agent)
            for r in self.store.bindings(aor, now)
        ]

    def save_binding(self, b: Binding) -> None:
        host, port = _split_received(b.received)
        self.store.save_binding(BindingRecord(
            aor=b.aor, contact=b.contact, expires_at=b.expires_at, received_host=host,
            received_port=port, transport=b.transport, call_id=b.call_id, cseq=b.cseq,
            user_agent=b.user_agent, q=b.q))

    def remove_binding(self, aor: str, contact: str) -> None:
        self.store.remove_binding(aor, contact)

    def remove_all_bindings(self, aor: str) -> None:
        self.store.remove_all_bindings(aor)

"""Where a dialled number goes: a registered user, a trunk, or nowhere.

Pure lookups against the store; the gateway turns a :class:`Route` into INVITEs.
"""

from __future__ import annotations

from dataclasses import dataclass

from signaling.transaction import Address


@dataclass(frozen=True, slots=True)
class Target:
    """One place to send the INVITE: a registered contact or a trunk."""

    uri: str
    """Request-URI to use."""
    dest: Address
    """Where to send it (the flow the contact registered from, or the trunk)."""
    peer: str
    """Who, for the leg (user name or number)."""
    kind: str
    """sip-user or sip-trunk."""
    to_uri: str
    """The To header URI."""


@dataclass(frozen=True, slots=True)
class Route:
    targets: tuple[Target, ...] = ()
    status: int = 0
    """When nothing can be tried: the final status for the caller (404, 480...)."""
    reason: str = ""


def parse_received(received: str, transport: str) -> Address | None:
    """'ip:port' or '[v6]:port' as stored with a binding -> Address."""
    text = received.strip()
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
    else:
        host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        return None
    return Address(host, int(port), transport.lower())

"""What ``hub serve`` was asked to do, as one frozen, validated value."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Final

DEFAULT_DATA_DIR: Final = Path("data")
DEFAULT_BIND: Final = "0.0.0.0"
DEFAULT_SIP_PORT: Final = 5060
DEFAULT_TLS_PORT: Final = 5061
DEFAULT_HTTP_PORT: Final = 8080
DEFAULT_RTP_PORTS: Final = (20000, 29999)
LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")


class ConfigError(ValueError):
    """An inconsistent or out-of-range serve configuration."""

    error_id: ClassVar[str] = "invalid-config"


AUTH_ALGORITHMS = ("MD5", "SHA-256")


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """Everything ``hub serve`` needs; validated on construction (``ConfigError``)."""

    data_dir: Path = DEFAULT_DATA_DIR
    """Directory holding ``hub.sqlite3`` and, later, recordings."""
    bind: str = DEFAULT_BIND
    """Address the SIP, TLS and HTTP listeners bind to."""
    sip_port: int = DEFAULT_SIP_PORT
    """SIP over UDP and TCP (0 = pick a free port, for tests)."""
    http_port: int = DEFAULT_HTTP_PORT
    """HTTP console and ``/api/health`` (0 = pick a free port)."""
    tls_port: int | None = None
    """SIP over TLS, or None for no TLS listener; needs ``tls_cert`` and ``tls_key``."""
    tls_cert: Path | None = None
    """PEM certificate chain for the TLS listener."""
    tls_key: Path | None = None
    """PEM private key for the TLS listener."""
    media_address: str | None = None
    """IP address put in SDP; None = work it out from ``bind`` / the routing table."""
    rtp_ports: tuple[int, int] = DEFAULT_RTP_PORTS
    """Inclusive range RTP (even) and RTCP (odd) ports are taken from."""
    log_level: str = "info"
    """One of ``LOG_LEVELS``."""
    auth_algorithms: tuple[str, ...] = ("MD5",)
    """Digest algorithms challenged with (and accepted), most preferred first. MD5 alone
    is the default because libre-based phones (baresip) reject a challenge list that holds any
    algorithm they lack, instead of skipping it as RFC 8760 2.4 asks."""
    ring_timeout: float = 60.0
    """Seconds a call may ring before the caller gets 480 (no answer)."""
    recording_segment_seconds: float = 60.0
    """Length of a recording's segment files: a kill loses at most the open segment's
    last second, and every closed segment is a complete file."""
    notifier: str = "log"
    """How text notices go out: ``log`` (the log and the incident's timeline only) or
    ``webhook:URL`` (each notice POSTed as JSON)."""
    database_url: str | None = None
    """Where incidents, plans and resources live: ``postgresql://user@host/db`` or
    ``sqlite:///path``; None is the embedded default, ``DATA_DIR/incidents.sqlite3``."""

    def __post_init__(self) -> None:
        if not self.bind:
            raise ConfigError("bind address must not be empty")
        if self.notifier != "log" and not self.notifier.startswith(
                ("webhook:http://", "webhook:https://")):
            raise ConfigError(f"--notifier must be log or webhook:http(s)://..., "
                              f"not {self.notifier!r}")
        for what, port in (
            ("SIP port", self.sip_port),
            ("HTTP port", self.http_port),
            ("TLS port", self.tls_port),
        ):
            if port is not None and not 0 <= port <= 65535:
                raise ConfigError(f"{what} {port} out of range 0-65535")
        tls = (self.tls_port, self.tls_cert, self.tls_key)
        if any(v is not None for v in tls) and any(v is None for v in tls):
            raise ConfigError("TLS needs all of --tls-port, --tls-cert and --tls-key")
        used = [p for p in (self.sip_port, self.http_port, self.tls_port) if p]
        if len(used) != len(set(used)):
            raise ConfigError("SIP, TLS and HTTP ports must differ")
        if self.media_address is not None:
            try:
                ipaddress.ip_address(self.media_address)
            except ValueError:
                raise ConfigError(
                    f"media address {self.media_address!r} is not an IP address"
                ) from None
        low, high = self.rtp_ports
        if not 1024 <= low < high <= 65535:
            raise ConfigError(
                f"RTP port range {low}-{high} must be LOW-HIGH with 1024 <= LOW < HIGH <= 65535"
            )
        unknown = [a for a in self.auth_algorithms if a not in AUTH_ALGORITHMS]
        if not self.auth_algorithms or unknown:
            raise ConfigError(
                f"auth algorithms must be among {', '.join(AUTH_ALGORITHMS)}, got "
                f"{', '.join(self.auth_algorithms) or 'none'}")
        if not 1 <= self.recording_segment_seconds <= 3600:
            raise ConfigError("recording segment length must be 1-3600 s")
        if not 1 <= self.ring_timeout <= 3600:
            raise ConfigError(f"ring timeout {self.ring_timeout} s out of range 1-3600")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log level {self.log_level!r} not one of {', '.join(LOG_LEVELS)}")

    @property
    def tls_enabled(self) -> bool:
        """Whether a TLS listener is configured."""
        return self.tls_port is not None

"""The composition root: ``hub serve`` wires store, SIP, media and HTTP together.

One process, one uvloop event loop: SIP sockets, the media engine, the HTTP API and
the SQLite store all live here (design.md, "Process model").
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from bridges.events import EventBus
from bridges.model import Leg
from console.app import create_app
from console.auth import AuthService
from console.calls_api import calls_routes
from console.http import HttpServer, start_http
from console.incidents_api import incidents_routes
from console.page import page_routes
from console.queue_api import queue_routes
from console.recordings_api import recordings_routes
from console.resources_api import resources_routes
from dispatch.audit import AuditLog
from dispatch.calls import CallService
from dispatch.directory import DirectoryService
from dispatch.evidence import collect_evidence, write_evidence_pack
from dispatch.incidents import CallFacts, IncidentService
from dispatch.notify import notifier_from_spec
from dispatch.plans import PlanService
from dispatch.resources import ResourceService
from dispatch.response import ResponseService
from gateways.rooms import recorder_factory
from gateways.security import AuthThrottle
from gateways.sip_gateway import SipGateway
from gateways.webrtc import WebRtcSessions
from media.engine import MediaEngine
from media.ports import PortAllocator
from recordings.index import RecordingIndex
from recordings.writer import DiskWriter
from signaling.digest import DigestServer
from signaling.registrar import Registrar
from signaling.stack import SipEndpoint
from signaling.transport import SipTransport
from storage.sql import Database, DatabaseError, open_database

from . import __version__
from .config import ServeConfig
from .location import StoreLocation
from .store import Store

log = logging.getLogger("hub")


def _wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::", "")


def primary_address() -> str:
    """The address of the default route, for SDP when bound to a wildcard.

    A connected UDP socket sends nothing; it only asks the kernel which source address
    it would use. Falls back to loopback on a machine with no route.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


@dataclass
class Hub:
    """A running hub; what tests and the CLI hold on to."""

    config: ServeConfig
    store: Store
    bus: EventBus
    endpoint: SipEndpoint
    transport: SipTransport
    engine: MediaEngine
    gateway: SipGateway
    http: HttpServer
    sip_addresses: dict[str, tuple[str, int]]
    started: float
    recordings: RecordingIndex
    disk: DiskWriter
    calls: CallService
    directory: DirectoryService
    """People, groups and every endpoint's live status."""
    auth: AuthService
    """Console operators and their sessions."""
    audit: AuditLog
    db: Database
    """Incidents, plans, responses and resources (SQLite by default, or PostgreSQL)."""
    incidents: IncidentService
    plans: PlanService
    responses: ResponseService
    resources: ResourceService
    webrtc: WebRtcSessions | None = None
    """Browsers' WebRTC legs (ICE candidates on the media address)."""
    stopped: bool = False

    def health(self) -> dict[str, Any]:
        clients, servers = self.endpoint.layer.counts
        return {
            "status": "ok",
            "sip": {
                "listen": {k: f"{h}:{p}" for k, (h, p) in self.sip_addresses.items()},
                "transactions": clients + servers,
                **self.endpoint.stats,
            },
            "calls": self.gateway.health()["calls"],
            "gateway": self.gateway.health(),
            "registrations": self.store.count_bindings(time.time()),
            "media": {"address": self.engine.advertised_host, **self.engine.snapshot()},
        }

    async def stop(self) -> None:
        """End every call with BYE/CANCEL, let the messages go out, close everything."""
        if self.stopped:
            return
        self.stopped = True
        self.responses.shutdown()
        self.calls.shutdown()
        await self.gateway.shutdown()
        await asyncio.sleep(0.2)
        await self.http.stop()
        await self.transport.close()
        self.engine.close()
        if self.webrtc is not None:
            # Closing the bridges took the browsers' legs out: wait for their connections.
            await self.webrtc.aclose()
        # Recordings finish their last segments on the disk threads.
        await asyncio.to_thread(self.disk.close, 30.0)
        self.recordings.close()
        self.directory.close()
        self.db.close()
        self.store.close()


async def start(config: ServeConfig) -> Hub:
    store = Store.open(config.data_dir)
    bus = EventBus()
    media_host = config.media_address or (
        config.bind if not _wildcard(config.bind) else primary_address())
    ports = PortAllocator(config.bind if not _wildcard(config.bind) else "0.0.0.0",
                          config.rtp_ports[0], config.rtp_ports[1])
    engine = MediaEngine(ports, advertised_host=media_host)
    digest = DigestServer(store.realm, os.urandom(32), algorithms=config.auth_algorithms)
    registrar = Registrar(StoreLocation(store))
    # Require: replaces is understood (RFC 3891: an INVITE taking over a dialog).
    endpoint = SipEndpoint(server_name=f"dispatch-hub/{__version__}",
                           supported_extensions=frozenset({"replaces"}))
    transport = SipTransport(endpoint)
    recordings = RecordingIndex.open(config.data_dir)
    report = recordings.recover(time.time())
    if report.interrupted or report.registered_files:
        log.warning("recordings interrupted by a crash, recovered: %s", report)
    disk = DiskWriter(threads=2, name="recording-io")
    gateway = SipGateway(store=store, transport=transport, engine=engine, bus=bus, digest=digest,
                         registrar=registrar, throttle=AuthThrottle(),
                         ring_timeout=config.ring_timeout,
                         recorder_factory=recorder_factory(
                             recordings, config.data_dir, disk,
                             segment_seconds=config.recording_segment_seconds))
    # Browsers get one ICE host candidate: the media address (a NAT's public address).
    webrtc = WebRtcSessions(engine, media_host)
    calls = CallService(gateway, bus, recorder_factory=recorder_factory(
        recordings, config.data_dir, disk, segment_seconds=config.recording_segment_seconds),
        webrtc=webrtc, endpoints_for=lambda target: endpoints_for(directory, target))
    audit = AuditLog(store)
    auth = AuthService(store)
    directory = DirectoryService(store, bus=bus, legs=lambda: _live_legs(gateway, calls))
    db = open_database(config.database_url, default_path=config.data_dir / "incidents.sqlite3")
    incidents = IncidentService(db, bus, call_facts=lambda call_id: _call_facts(calls, call_id),
                                attach_call=calls.attach_incident)
    plans = PlanService(db, person_exists=lambda name: person_exists(directory, store, name))
    responses = ResponseService(db, incidents, plans, calls, bus,
                                notifier=notifier_from_spec(config.notifier))
    resources = ResourceService(db, incidents)
    audit.listeners.append(incidents.on_audit)
    engine.on_event = gateway.on_media_event
    endpoint.request_filter = gateway.request_filter
    transport.handler = gateway.handle
    addresses: dict[str, tuple[str, int]] = {}
    try:
        addresses["udp"] = await transport.listen_udp(config.bind, config.sip_port)
        # With port 0 the UDP port was chosen by the kernel: TCP takes the same number.
        addresses["tcp"] = await transport.listen_tcp(config.bind, addresses["udp"][1])
        if config.tls_enabled and config.tls_cert and config.tls_key and config.tls_port:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(config.tls_cert), str(config.tls_key))
            addresses["tls"] = await transport.listen_tls(config.bind, config.tls_port, ctx)
        hub_ref: list[Hub] = []
        app = create_app(_HealthProxy(hub_ref), version=__version__, auth=auth, audit=audit,
                         directory=directory, users=store, bus=bus,
                         snapshot={"calls": calls.list, "rooms": gateway.rooms.snapshot,
                                   "queue": calls.queue_list,
                                   "incidents": lambda: incidents.find(active=True)},
                         features=[lambda api: queue_routes(api, calls),
                                   lambda api: calls_routes(api, calls, incidents.exists),
                                   lambda api: recordings_routes(api, recordings),
                                   lambda api: resources_routes(api, resources, calls),
                                   lambda api: incidents_routes(
                                       api, incidents, plans, responses, evidence=(
                                           lambda incident_id: collect_evidence(
                                               incident_id, incidents=incidents,
                                               responses=responses, resources=resources),
                                           lambda facts, out: write_evidence_pack(
                                               facts, out, recordings=recordings)),
                                       dispatches=lambda incident_id: [
                                           d.as_dict() for d in resources.dispatches(
                                               incident_id)])],
                         extra_routes=page_routes())
        http = await start_http(app, config.bind, config.http_port)
        directory.start()
    except BaseException:
        directory.close()
        await transport.close()
        engine.close()
        disk.close(5.0)
        recordings.close()
        db.close()
        store.close()
        raise
    hub = Hub(config, store, bus, endpoint, transport, engine, gateway, http, addresses,
              time.time(), recordings, disk, calls, directory=directory, auth=auth, audit=audit,
              db=db, incidents=incidents, plans=plans, responses=responses,
              resources=resources, webrtc=webrtc)
    hub_ref.append(hub)
    return hub


def _call_facts(calls: CallService, call_id: str) -> CallFacts | None:
    facts = calls.facts(call_id)
    return CallFacts(**facts) if facts is not None else None


def person_exists(directory: DirectoryService, store: Store, name: str) -> bool:
    """A plan's person: a directory person (by name or id) or a SIP user."""
    if store.get_user(name) is not None:
        return True
    if name.startswith("user:") or (name[:1] == "p" and name[1:].isdigit()):
        try:
            directory.get_person(name)
            return True
        except Exception:
            return False
    return any(p.name == name for p in directory.list_people())


def _live_legs(gateway: SipGateway, calls: CallService) -> Iterator[Leg]:
    """Every leg of every live bridge (SIP calls, rooms, dispatch calls): the lamps' source."""
    seen: set[str] = set()
    bridges = [call.bridge for call in list(gateway.calls.values())]
    bridges += [session.bridge for session in list(gateway.rooms.sessions.values())]
    bridges += [call.bridge for call in list(calls.calls.values())]
    for bridge in bridges:
        if bridge.id not in seen:
            seen.add(bridge.id)
            yield from list(bridge.legs)


class _HealthProxy:
    def __init__(self, ref: list[Hub]) -> None:
        self._ref = ref

    def health(self) -> dict[str, Any]:
        return self._ref[0].health() if self._ref else {"status": "starting"}


async def serve(config: ServeConfig, *, on_ready: Callable[[Hub], None] | None = None) -> int:
    hub = await start(config)
    for kind, (host, port) in hub.sip_addresses.items():
        log.info("SIP listening on %s %s:%d", kind.upper(), host, port)
    log.info("HTTP listening on %s (GET /api/health)", hub.http.url)
    log.info("media on %s ports %d-%d", hub.engine.advertised_host, *config.rtp_ports)
    print(f"hub: SIP udp/tcp {config.bind}:{hub.sip_addresses['udp'][1]}  "
          f"HTTP {hub.http.url}  media {hub.engine.advertised_host}  data {config.data_dir}",
          file=sys.stderr, flush=True)
    if on_ready is not None:
        on_ready(hub)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("stopping: ending %d call(s)", len(hub.gateway.calls))
        await hub.stop()
    return 0


def _loop_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    log.error("unhandled error in the event loop: %s", context.get("message"),
              exc_info=context.get("exception"))


def endpoints_for(directory: DirectoryService, target: str) -> list[str]:
    """What to dial for a call target, preferred first.

    A person (by id, ``p3`` / ``user:1001``, or by name) gives the addresses of its SIP
    and mobile endpoints in their order; anything else is dialled as it is (a SIP user
    name or a number).
    """
    endpoints: list[tuple[str, str]]
    try:
        if target.startswith("user:") or (target[:1] == "p" and target[1:].isdigit()):
            person = directory.get_person(target)
            endpoints = [(kind, address) for kind, _, address in
                         (e.partition(":") for e in person.endpoints)]
        else:
            named = directory.endpoints_named(target)
            if named is None:
                return [target]
            endpoints = named
    except Exception:  # an unknown id: not a person, dial it as it is
        return [target]
    dialable = [address for kind, address in endpoints if kind in ("sip", "mobile") and address]
    return dialable or [target]


def _tune_gc(hub: Hub) -> None:
    """Keep the cyclic collector's pauses short on a real-time loop.

    Everything alive after start-up is frozen out of collection, and the youngest
    generation collects less often: a full collection scans every call the
    transactions still hold (32 s worth), which at hundreds of calls a second is long
    enough to fire SIP retransmission timers.
    """
    gc.collect()
    gc.freeze()
    # Calls break their reference cycles when they end, so little garbage reaches the
    # oldest generation; its full collections (the whole heap: every transaction alive
    # for 32 s) are what stalls the loop, so they are made rare.
    gc.set_threshold(20_000, 50, 1_000)


def run(config: ServeConfig) -> int:
    logging.basicConfig(
        level=getattr(logging, config.log_level.upper(), logging.INFO),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        uvloop = None  # type: ignore[assignment]

    async def main() -> int:
        asyncio.get_running_loop().set_exception_handler(_loop_exception_handler)
        return await serve(config, on_ready=_tune_gc)

    try:
        if uvloop is not None:
            return uvloop.run(main())
        return asyncio.run(main())
    except (OSError, DatabaseError) as exc:
        log.error("cannot start: %s", exc)
        return 1

"""Incidents: plan activation with 100 responders, and a 10,000-entry timeline.

Issue #5: "Plan activation until all 100 responders' INVITEs have left the hub: under
200 ms. An incident timeline of 10,000 events returned in under 50 ms."

Topology (everything on 127.0.0.1), shared with bench_console.py::

    bench (HTTP client) --POST /api/incidents/{id}/activate--> hub serve
    hub --100 INVITEs--> SIPp uas (answers 180 Ringing only; 200/487 to CANCEL)

``hub serve`` runs as its own process pinned to core 0; SIPp, tshark and this script
on core 1. Set-up through the CLI: 100 SIP users (``hub user add``: each is a person a
plan can name) and two operators. The users register from the uas's port, so every
responder's INVITE goes to SIPp. One plan with the 100 users as its roles.

* **Activation** (each run: a new incident, then the plan activated at level III):
  T0 = ``time.time()`` just before the POST; the figure is the tshark capture time of
  the last of the 100 INVITEs the hub sent (first copy of each Call-ID) minus T0. The
  POST's own round trip is given too. Then the response is ended (CANCELs) and the
  next run waits until the hub has no call left.
* **Timeline**: one incident given 10,000 timeline entries (messages, written through
  the API's service in batches by the bench before the hub starts, in the same
  database file), then ``GET /api/incidents/{id}/timeline`` and
  ``GET /api/incidents/{id}`` (the whole incident with its timeline) timed from the
  client, 30 times each, on SQLite (the default) and, when PostgreSQL's binaries are
  installed, on a private PostgreSQL server (``--database``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_console import (  # noqa: E402
    LOAD_CORE,
    LOOPBACK,
    UAS_XML,
    Children,
    Hub,
    _bindable,
    find_tshark,
    free_port,
    http_json,
    hub_cli,
    machine,
    outgoing_invites,
    pct,
    register_users,
    start_capture,
    update_doc,
)

DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## Incidents: plan activation and timeline (bench/bench_incidents.py)"
VENV_BIN = ROOT / ".venv" / "bin"
HUB_CORE = "0"
TARGET_ACTIVATION_MS = 200.0
TARGET_TIMELINE_MS = 50.0
TIMELINE_ENTRIES = 10_000


@dataclass
class Activation:
    index: int
    t0: float
    post_ms: float
    invites_ms: float = float("nan")
    seen: int = 0


@dataclass
class Timing:
    backend: str
    timeline_ms: list[float] = field(default_factory=list)
    detail_ms: list[float] = field(default_factory=list)
    size: int = 0


def start_hub(children: Children, workdir: Path, data: Path, database: str | None,
              name: str) -> Hub:
    sip, http = free_port(tcp=True), free_port(tcp=True)
    rtp = 30000 + 2000 * (hash(name) % 10)
    argv = [*(["taskset", "-c", HUB_CORE] if shutil.which("taskset") else []),
            str(VENV_BIN / "hub"), "serve", "--data-dir", str(data), "--bind", LOOPBACK,
            "--sip-port", str(sip), "--http-port", str(http),
            "--rtp-ports", f"{rtp}-{rtp + 1999}", "--log-level", "warning",
            *(["--database", database] if database else [])]
    print(f"$ {shlex.join(argv)}", file=sys.stderr, flush=True)
    proc = children.start(argv, workdir, f"hub-{name}")
    hub = Hub(proc, sip, http)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError("hub exited:\n"
                               + (workdir / f"hub-{name}.stderr").read_text()[-2000:])
        try:
            if http_json(f"{hub.url}/api/health", timeout=2).get("status") == "ok":
                return hub
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("hub did not answer /api/health within 30 s")
        time.sleep(0.1)


def token(hub: Hub, name: str, password: str) -> str:
    return str(http_json(f"{hub.url}/api/auth/token", "POST",
                         {"username": name, "password": password})["token"])


def timed_get(url: str, tok: str) -> tuple[float, int]:
    req = urllib.request.Request(url)
    req.add_header("authorization", f"Bearer {tok}")
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=30) as reply:
        size = len(reply.read())
    return (time.perf_counter() - t) * 1000, size


def fill_timeline(database: str | None, data: Path, entries: int) -> int:
    """An incident with ``entries`` timeline entries, written straight to the database."""
    from dispatch.incidents import IncidentService
    from storage.sql import open_database

    db = open_database(database, default_path=data / "incidents.sqlite3")
    try:
        incidents = IncidentService(db)
        created = incidents.create({"title": "timeline bench", "type": "fire", "level": 2,
                                    "location": {"lat": 39.9, "lon": 116.4}})
        for start in range(0, entries - 1, 1000):
            incidents.record_many(created["id"], [
                ("message", {"text": f"进展 {i}: 第三救援队已到达现场，正在疏散群众"}, "bench-op")
                for i in range(start, min(start + 1000, entries - 1))])
        return int(created["id"])
    finally:
        db.close()


def bench_timeline(children: Children, workdir: Path, database: str | None, backend: str,
                   rounds: int) -> Timing:
    data = workdir / f"data-{backend}"
    data.mkdir()
    hub_cli("operator", "add", "bench-op", "--password", "bench-op-password", "--role",
            "dispatcher", data_dir=data)
    incident_id = fill_timeline(database, data, TIMELINE_ENTRIES)
    hub = start_hub(children, workdir, data, database, backend)
    timing = Timing(backend)
    try:
        tok = token(hub, "bench-op", "bench-op-password")
        base = f"{hub.url}/api/incidents/{incident_id}"
        for _ in range(3):  # warm-up
            timed_get(base + "/timeline", tok)
        for _ in range(rounds):
            ms, timing.size = timed_get(base + "/timeline", tok)
            timing.timeline_ms.append(ms)
            ms, _ = timed_get(base, tok)
            timing.detail_ms.append(ms)
    finally:
        children.stop(hub.proc)
    return timing


def bench_activation(children: Children, workdir: Path, responders: int, runs: int,
                     tshark: str | None, pinned: bool) -> list[Activation]:
    data = workdir / "data-activation"
    data.mkdir()
    users = [f"r{i:03d}" for i in range(1, responders + 1)]
    passwords = {u: f"pw-{u}-secret" for u in users}
    for u in users:
        hub_cli("user", "add", u, "--password", passwords[u], data_dir=data)
    hub_cli("operator", "add", "bench-op", "--password", "bench-op-password", "--role",
            "dispatcher", data_dir=data)
    hub_cli("operator", "add", "bench-sup", "--password", "bench-sup-password", "--role",
            "supervisor", data_dir=data)
    hub = start_hub(children, workdir, data, None, "activation")
    uas_port = free_port()
    register_users(hub, users, passwords, uas_port)
    (workdir / "uas").mkdir()
    (workdir / "uas" / "ring.xml").write_text(UAS_XML)
    uas = children.start(
        [*(["taskset", "-c", LOAD_CORE] if pinned else []), "sipp", "-sf", "ring.xml",
         "-i", LOOPBACK, "-p", str(uas_port), "-t", "u1", "-cp", str(free_port()),
         "-mp", str(free_port()), "-nostdin", "-max_recv_loops", "1000"],
        workdir / "uas", "sipp")
    deadline = time.monotonic() + 10
    while _bindable(uas_port, socket.SOCK_DGRAM):
        if uas.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("SIPp uas did not start")
        time.sleep(0.05)
    op = token(hub, "bench-op", "bench-op-password")
    sup = token(hub, "bench-sup", "bench-sup-password")
    plan = http_json(f"{hub.url}/api/plans", "POST", {
        "name": "bench plan", "incident_type": "fire", "level": 3, "escalate_after_s": 600,
        "roles": [{"role": f"role {u}", "person": u} for u in users]}, token=sup)
    capture = start_capture(children, workdir, tshark, hub.sip) if tshark else None
    results: list[Activation] = []
    try:
        for index in range(1, runs + 1):
            incident = http_json(f"{hub.url}/api/incidents", "POST", {
                "title": f"bench {index}", "type": "fire", "level": 3}, token=op)
            url = f"{hub.url}/api/incidents/{incident['id']}"
            time.sleep(0.3)
            t0 = time.time()
            p = time.perf_counter()
            http_json(url + "/activate", "POST", {"plan_id": plan["id"]}, token=op, timeout=30)
            results.append(Activation(index, t0, (time.perf_counter() - p) * 1000))
            time.sleep(1.5)
            http_json(url + "/response/end", "POST", {}, token=op, timeout=30)
            deadline = time.monotonic() + 20
            while http_json(f"{hub.url}/api/calls", token=op) and time.monotonic() < deadline:
                time.sleep(0.2)
        if capture is not None and tshark is not None:
            time.sleep(0.5)
            children.stop(capture, signal.SIGINT, 10)
            invites = outgoing_invites(tshark, workdir, hub.sip)
            bounds = [r.t0 for r in results[1:]] + [float("inf")]
            for run, end in zip(results, bounds, strict=True):
                mine = sorted(t for t, _cid in invites if run.t0 <= t < end)
                run.seen = len(mine)
                if len(mine) >= responders:
                    run.invites_ms = (mine[responders - 1] - run.t0) * 1000
    finally:
        children.stop(uas)
        children.stop(hub.proc)
    return results


def postgres_url(workdir: Path) -> tuple[str | None, object | None]:
    try:
        from tests.pg import PostgresServer, find_bindir
    except ImportError:
        return None, None
    bindir = find_bindir()
    if bindir is None:
        return None, None
    server = PostgresServer(bindir)
    server.start()
    context = server.fresh_database()
    url = context.__enter__()
    return url, (server, context)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--responders", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--install-tshark", action="store_true")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args(argv)
    pinned = bool(shutil.which("taskset")) and (os.cpu_count() or 1) >= 2
    host = machine()
    if pinned:
        os.sched_setaffinity(0, {int(LOAD_CORE)})
    tshark = find_tshark(args.install_tshark)
    command = shlex.join([".venv/bin/python", "bench/bench_incidents.py", *sys.argv[1:]])
    today = dt.date.today().isoformat()
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    children = Children()
    workdir = Path(tempfile.mkdtemp(prefix="bench-incidents-"))
    timings: list[Timing] = []
    activations: list[Activation] = []
    pg: object | None = None
    try:
        activations = bench_activation(children, workdir, args.responders, args.runs, tshark,
                                       pinned)
        for a in activations:
            print(f"  activation {a.index}: POST {a.post_ms:.1f} ms, INVITEs out "
                  f"{a.invites_ms:.1f} ms ({a.seen}/{args.responders})", file=sys.stderr)
        timings.append(bench_timeline(children, workdir, None, "sqlite", args.rounds))
        if not args.no_postgres:
            url, pg = postgres_url(workdir)
            if url is not None:
                timings.append(bench_timeline(children, workdir, url, "postgresql",
                                              args.rounds))
        for t in timings:
            print(f"  timeline {t.backend}: p50 {pct(t.timeline_ms, 0.5):.1f} ms, max "
                  f"{max(t.timeline_ms):.1f} ms; incident p50 {pct(t.detail_ms, 0.5):.1f} ms",
                  file=sys.stderr)
    finally:
        children.kill_all()
        if pg is not None:
            server, context = pg  # type: ignore[misc]
            context.__exit__(None, None, None)
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    invites = [a.invites_ms for a in activations if a.invites_ms == a.invites_ms]
    rows = ["| run | POST /activate answered ms | all 100 INVITEs out ms (seen) |",
            "|---:|---:|---:|"]
    rows += [f"| {a.index} | {a.post_ms:.1f} | {a.invites_ms:.1f} ({a.seen}/{args.responders}) |"
             for a in activations]
    trows = ["| backend | timeline p50 ms | p95 ms | max ms | incident+timeline p50 ms | "
             "p95 ms | max ms | body bytes |", "|:---|---:|---:|---:|---:|---:|---:|---:|"]
    trows += [f"| {t.backend} | {pct(t.timeline_ms, 0.5):.1f} | {pct(t.timeline_ms, 0.95):.1f}"
              f" | {max(t.timeline_ms):.1f} | {pct(t.detail_ms, 0.5):.1f} | "
              f"{pct(t.detail_ms, 0.95):.1f} | {max(t.detail_ms):.1f} | {t.size} |"
              for t in timings]
    worst = max(invites) if invites else float("nan")
    tl_worst = max((pct(t.timeline_ms, 0.95) for t in timings), default=float("nan"))
    body = f"""Last run: {today}, {host}; load average before the run {load}.
Command: `{command}` (hub pinned to core 0, SIPp/tshark/bench on core 1).

**Activation** ({args.responders} responders, plan at level III, {len(activations)} runs):
every INVITE out in median {pct(invites, 0.5):.1f} ms, worst {worst:.1f} ms (target
under {TARGET_ACTIVATION_MS:.0f} ms: {"met" if worst < TARGET_ACTIVATION_MS else "NOT met"}).

{chr(10).join(rows)}

**Timeline** ({TIMELINE_ENTRIES:,} entries, {args.rounds} requests each, client-side time):
p95 {tl_worst:.1f} ms at worst (target under {TARGET_TIMELINE_MS:.0f} ms:
{"met" if tl_worst < TARGET_TIMELINE_MS else "NOT met"}).

{chr(10).join(trows)}

How: the timeline's stored JSON is spliced into the answer (no per-entry decode and
re-encode); responders are dialled synchronously inside the POST, each INVITE handed
to the transport as it is built.
"""
    print(body)
    if not args.no_doc:
        update_doc(DOC, SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Console: a 50-member group call placed from the API, and event fan-out to consoles.

Issue #4: "From the API call of a 50-member group call: until every INVITE has left
the hub (target under 100 ms) and until every connected console shows every member
ringing (under 200 ms); event fan-out to 20 connected consoles, p99 under 50 ms."

Topology (everything on 127.0.0.1)::

    bench (HTTP client + 20 WebSocket consoles) --POST /api/calls--> hub serve
    hub --50 INVITEs--> SIPp uas (one instance, answers 180 Ringing only)
    hub --events (snapshot, then CallChanged, LegStateChanged, ...)--> 20 consoles

``hub serve`` (uvloop) runs as a separate process pinned to core 0 (``taskset -c
0``); SIPp, tshark and this script are pinned to core 1. Set-up goes through the
CLI: 50 SIP users (``hub user add``) and a dispatcher (``hub operator add``). The
users register from this script (REGISTER with MD5 digest, ``DigestClient``), each
with a contact pointing at the SIPp uas, so the group call forks 50 INVITEs to it.
The uas scenario (written to the work dir) answers each INVITE with 180 only, so
every member stays ringing; the DELETE of the call makes the hub CANCEL, which the
uas answers 200 (CANCEL) + 487 (INVITE).

Each run: 20 consoles connect to ``/api/events`` (``Authorization: Bearer``) and read
their snapshot; T0 = ``time.time()`` just before the POST /api/calls of a group call
to the 50 users. Measured:

* (a) **INVITEs out**: tshark captures ``lo`` with ``udp port HUB_SIP_PORT`` for the
  whole bench; the figure is the capture timestamp of the last of the 50 INVITEs the
  hub sent (first copy of each Call-ID) minus T0. tshark's ``frame.time_epoch`` and
  this script's ``time.time()`` are the same wall clock on the same machine.
* (b) **all consoles ringing**: each console notes the arrival (``time.time()`` as
  its ``recv()`` returns) of the first message whose call has all 50 legs in state
  ``ringing``; the figure is the latest over the 20 consoles, minus T0.
* (c) **fan-out**: every event carries ``at``, the hub's ``time.time()`` when it was
  published; per event per console, arrival - ``at``: p50/p99/max over all events of
  the run and all consoles (the snapshot is not an event and is left out). Messages
  are stored raw and decoded after the run, so the consoles' own JSON parsing does
  not delay later arrivals.

Then DELETE /api/calls/{id}; the consoles disconnect; the next run waits until the
hub has no call left. 5 runs by default; the whole bench is bounded (< 5 min).

The consoles share one process (and core 1 with SIPp and tshark): an arrival time
includes this process's own queueing, so the fan-out figures are an upper bound on
the hub's. ``--profile`` adds one run with ``py-spy record`` on the hub.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import random
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from signaling.digest import DigestClient  # noqa: E402
from signaling.headers import parse_auth  # noqa: E402

VENV_BIN = ROOT / ".venv" / "bin"
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## Console: group call and event fan-out (bench/bench_console.py)"
LOOPBACK = "127.0.0.1"
HUB_CORE = "0"
LOAD_CORE = "1"
TARGET_INVITES_MS = 100.0
TARGET_RINGING_MS = 200.0
TARGET_FANOUT_P99_MS = 50.0
OPERATOR = "bench-op"
BATCH = True
"""Consoles connect with ?batch=1, as the switchboard page does (--no-batch: one
message per event)."""
OP_PASSWORD = "bench-op-password"

UAS_XML = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="ring until cancelled">
  <recv request="INVITE">
    <action>
      <ereg regexp="([0-9]+)" search_in="hdr" header="CSeq:" assign_to="cs,num"/>
    </action>
  </recv>
  <send>
    <![CDATA[
      SIP/2.0 180 Ringing
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>
  </send>
  <recv request="CANCEL"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <send>
    <![CDATA[
      SIP/2.0 487 Request Terminated
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      CSeq: [$num] INVITE
      Content-Length: 0

    ]]>
  </send>
  <recv request="ACK" optional="false"/>
  <Reference variables="cs"/>
</scenario>
"""


# -- processes -----------------------------------------------------------------------


class Children:
    """Every process this bench started, each in its own process group."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], cwd: Path, log_name: str) -> subprocess.Popen[bytes]:
        out = open(cwd / f"{log_name}.stdout", "wb")  # noqa: SIM115
        err = open(cwd / f"{log_name}.stderr", "wb")  # noqa: SIM115
        proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=err, start_new_session=True)
        out.close()
        err.close()
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM,
             grace: float = 5.0) -> int | None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        return proc.returncode

    def kill_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc, signal.SIGTERM, 5.0)


def _terminate(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _bindable(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_port(tcp: bool = False) -> int:
    for _ in range(500):
        port = random.randrange(20000, 60000)
        if _bindable(port, socket.SOCK_DGRAM) and (not tcp or _bindable(port, socket.SOCK_STREAM)):
            return port
    raise RuntimeError("no free port")


def hub_cli(*args: str, data_dir: Path) -> None:
    argv = [str(VENV_BIN / "hub"), *args, "--data-dir", str(data_dir)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"$ {shlex.join(argv)}\n{done.stdout}{done.stderr}")


def http_json(url: str, method: str = "GET", body: Any = None,
              token: str | None = None, timeout: float = 10.0) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as reply:
        return json.load(reply)


@dataclass
class Hub:
    proc: subprocess.Popen[bytes]
    sip: int
    http: int

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.http}"


def start_hub(children: Children, workdir: Path, data: Path) -> Hub:
    sip, http = free_port(tcp=True), free_port(tcp=True)
    rtp = random.randrange(30000, 40000, 2)
    argv = [
        *(["taskset", "-c", HUB_CORE] if shutil.which("taskset") else []),
        str(VENV_BIN / "hub"), "serve", "--data-dir", str(data), "--bind", LOOPBACK,
        "--sip-port", str(sip), "--http-port", str(http),
        "--rtp-ports", f"{rtp}-{rtp + 2000}", "--log-level", "warning",
    ]
    print(f"$ {shlex.join(argv)}", file=sys.stderr, flush=True)
    proc = children.start(argv, workdir, "hub")
    hub = Hub(proc, sip, http)
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            raise RuntimeError("hub exited:\n" + (workdir / "hub.stderr").read_text()[-2000:])
        with contextlib.suppress(OSError, ValueError):
            if http_json(f"{hub.url}/api/health", timeout=2).get("status") == "ok":
                return hub
        if time.monotonic() > deadline:
            raise RuntimeError("hub did not answer /api/health within 20 s")
        time.sleep(0.1)


# -- registration (a tiny UDP UA with MD5 digest) ---------------------------------------


def _header(text: str, name: str) -> str | None:
    for line in text.split("\r\n")[1:]:
        if not line:
            break
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def register_users(hub: Hub, users: list[str], passwords: dict[str, str], contact_port: int
                   ) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, contact_port))
        sock.settimeout(3.0)
        local = sock.getsockname()[1]
        for user in users:
            call_id = uuid.uuid4().hex
            tag = uuid.uuid4().hex[:8]
            uri = f"sip:{LOOPBACK}:{hub.sip}"
            auth = ""
            for cseq in (1, 2):
                branch = "z9hG4bK" + uuid.uuid4().hex
                msg = (
                    f"REGISTER {uri} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP {LOOPBACK}:{local};branch={branch};rport\r\n"
                    f"Max-Forwards: 70\r\n"
                    f"From: <sip:{user}@{LOOPBACK}>;tag={tag}\r\n"
                    f"To: <sip:{user}@{LOOPBACK}>\r\n"
                    f"Call-ID: {call_id}\r\n"
                    f"CSeq: {cseq} REGISTER\r\n"
                    f"Contact: <sip:{user}@{LOOPBACK}:{contact_port}>\r\n"
                    f"Expires: 3600\r\n{auth}"
                    f"Content-Length: 0\r\n\r\n"
                )
                sock.sendto(msg.encode(), (LOOPBACK, hub.sip))
                while True:
                    reply = sock.recv(65535).decode(errors="replace")
                    status = int(reply.split(" ", 2)[1])
                    if status >= 200 and branch in reply:
                        break
                if status == 200:
                    break
                if status != 401 or cseq == 2:
                    raise RuntimeError(f"REGISTER {user}: {reply.splitlines()[0]}")
                challenge = DigestClient.choose_challenge(
                    [parse_auth(v) for v in [_header(reply, "WWW-Authenticate") or ""]])
                if challenge is None:
                    raise RuntimeError(f"REGISTER {user}: no usable challenge")
                answer = DigestClient.authorize(
                    challenge, method="REGISTER", uri=uri, username=user,
                    password=passwords[user], cnonce=uuid.uuid4().hex[:16], nc=1)
                auth = f"Authorization: {answer}\r\n"


# -- consoles ----------------------------------------------------------------------------


@dataclass
class Console:
    index: int
    messages: list[tuple[float, str]] = field(default_factory=list)
    snapshot_at: float = 0.0
    error: str | None = None


async def console_client(console: Console, url: str, token: str, ready: asyncio.Event,
                         connected: list[int], stop: asyncio.Event, total: int) -> None:
    import websockets

    try:
        async with websockets.connect(
            url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=None,
            open_timeout=10,
        ) as ws:
            first = await ws.recv()
            console.snapshot_at = time.time()
            if json.loads(first).get("type") != "snapshot":
                console.error = "first message is not a snapshot"
            connected.append(console.index)
            if len(connected) == total:
                ready.set()
            recv = ws.recv
            clock = time.time
            store = console.messages.append
            while True:
                try:
                    text = await asyncio.wait_for(recv(), timeout=0.2)
                except TimeoutError:
                    continue
                store((clock(), text))
                if stop.is_set() and '"CallEnded"' in text:
                    break  # this console has seen the whole call
    except Exception as exc:  # noqa: BLE001 - reported per console
        console.error = f"{type(exc).__name__}: {exc}"
        connected.append(console.index)
        if len(connected) == total:
            ready.set()


@dataclass
class Run:
    index: int
    call_id: str = ""
    t0: float = 0.0
    post_ms: float = float("nan")
    invites_ms: float = float("nan")
    invites_seen: int = 0
    ringing_ms: list[float] = field(default_factory=list)
    consoles_ringing: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    events_per_console: list[int] = field(default_factory=list)
    event_types: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    hub_cpu_s: float = float("nan")
    client_cpu_s: float = float("nan")
    wall_s: float = float("nan")


def _proc_cpu(pid: int) -> float:
    """utime+stime of a process (the hub's ``taskset`` execs it: same pid), seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


async def one_run(hub: Hub, token: str, users: list[str], index: int, consoles: int,
                  settle_s: float) -> Run:
    import httpx

    run = Run(index)
    ws_url = f"ws://{LOOPBACK}:{hub.http}/api/events" + ("?batch=1" if BATCH else "")
    stop = asyncio.Event()
    ready = asyncio.Event()
    connected: list[int] = []
    clients = [Console(i) for i in range(consoles)]
    hub_cpu0 = _proc_cpu(hub.proc.pid)
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    self_cpu0 = usage0.ru_utime + usage0.ru_stime
    wall0 = time.monotonic()
    tasks = [asyncio.create_task(console_client(c, ws_url, token, ready, connected, stop,
                                                consoles)) for c in clients]
    if not consoles:
        ready.set()
    try:
        await asyncio.wait_for(ready.wait(), 15)
        await asyncio.sleep(0.3)  # let the connect-time traffic finish
        async with httpx.AsyncClient(base_url=hub.url, timeout=10) as client:
            headers = {"Authorization": f"Bearer {token}"}
            body = {"targets": users, "mode": "group"}
            run.t0 = time.time()
            resp = await client.post("/api/calls", headers=headers, json=body)
            run.post_ms = (time.time() - run.t0) * 1000
            if resp.status_code != 201:
                raise RuntimeError(f"POST /api/calls: {resp.status_code} {resp.text[:300]}")
            run.call_id = resp.json()["id"]
            await asyncio.sleep(settle_s)
            resp = await client.delete(f"/api/calls/{run.call_id}", headers=headers)
            if resp.status_code != 200:
                run.errors.append(f"DELETE: {resp.status_code} {resp.text[:200]}")
    finally:
        stop.set()
        # Each console stops at the call's CallEnded; those still behind after 15 s are
        # cut off there (what they received so far counts).
        if tasks:
            await asyncio.wait(tasks, timeout=15)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        run.hub_cpu_s = _proc_cpu(hub.proc.pid) - hub_cpu0
        usage = resource.getrusage(resource.RUSAGE_SELF)
        run.client_cpu_s = usage.ru_utime + usage.ru_stime - self_cpu0
        run.wall_s = time.monotonic() - wall0

    n = len(users)
    for c in clients:
        if c.error:
            run.errors.append(f"console {c.index}: {c.error}")
        events = 0
        ringing_at = None
        decoded = []
        for arrived, text in c.messages:
            msg = json.loads(text)
            if msg.get("type") == "batch":
                decoded += [(arrived, m) for m in msg["events"]]
            else:
                decoded.append((arrived, msg))
        for arrived, msg in decoded:
            if "at" in msg and isinstance(msg["at"], (int, float)) and msg["at"] >= run.t0 - 0.01:
                run.latencies_ms.append((arrived - msg["at"]) * 1000)
                events += 1
                run.event_types[msg.get("type", "?")] += 1
            call = msg.get("call")
            if (ringing_at is None and isinstance(call, dict) and call.get("id") == run.call_id
                    and len(call.get("legs", [])) == n
                    and all(leg.get("state") == "ringing" for leg in call["legs"])):
                ringing_at = arrived
        run.events_per_console.append(events)
        if ringing_at is not None:
            run.consoles_ringing += 1
            run.ringing_ms.append((ringing_at - run.t0) * 1000)
    return run


# -- tshark ------------------------------------------------------------------------------


def find_tshark(install: bool) -> str | None:
    path = shutil.which("tshark")
    if path or not install:
        return path
    subprocess.run(["apt-get", "install", "-y", "tshark"], capture_output=True, timeout=240,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    return shutil.which("tshark")


def start_capture(children: Children, workdir: Path, tshark: str, port: int
                  ) -> subprocess.Popen[bytes]:
    pcap = workdir / "sip.pcapng"
    argv = [*(["taskset", "-c", LOAD_CORE] if shutil.which("taskset") else []), tshark,
            "-i", "lo", "-f", f"udp port {port}", "-w", str(pcap), "-q"]
    proc = children.start(argv, workdir, "tshark")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("tshark exited: " + (workdir / "tshark.stderr").read_text())
        if "Capturing on" in (workdir / "tshark.stderr").read_text(errors="replace"):
            time.sleep(0.5)
            return proc
        time.sleep(0.1)
    raise RuntimeError("tshark did not start capturing within 15 s")


def outgoing_invites(tshark: str, workdir: Path, port: int) -> list[tuple[float, str]]:
    """(time, Call-ID) of the first copy of every INVITE the hub sent."""
    done = subprocess.run(
        [tshark, "-r", str(workdir / "sip.pcapng"), "-d", f"udp.port=={port},sip",
         "-Y", f'udp.srcport=={port} && sip.Method=="INVITE"', "-T", "fields",
         "-e", "frame.time_epoch", "-e", "sip.Call-ID"],
        capture_output=True, text=True, timeout=120)
    seen: set[str] = set()
    out = []
    for line in done.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) < 2 or parts[1] in seen:
            continue
        seen.add(parts[1])
        out.append((float(parts[0]), parts[1]))
    return out


# -- profile -----------------------------------------------------------------------------


def summarise_profile(raw: Path, top: int = 15) -> str:
    """Self and inclusive tables from a py-spy ``--format raw`` (collapsed stacks) file."""
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [re.sub(r":\d+\)?$", "", f).replace("(", " (") + (")" if "(" in f else "")
                  for f in stack.split(";")]
        frames = [re.sub(r"\s+\(", " (", f).replace("))", ")") for f in frames]
        if frames:
            self_c[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    if not total:
        return "(no samples)"
    lines = [f"{total} samples.", "", "| self (innermost frame) | % |", "|:---|---:|"]
    lines += [f"| `{k}` | {100 * v / total:.1f} |" for k, v in self_c.most_common(top)]
    lines += ["", "| inclusive | % |", "|:---|---:|"]
    lines += [f"| `{k}` | {100 * v / total:.1f} |" for k, v in incl.most_common(top + 10)]
    return "\n".join(lines)


# -- report ------------------------------------------------------------------------------


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    sipp = subprocess.run(["sipp", "-v"], capture_output=True, text=True).stdout
    m = re.search(r"v(\d+\.\d+\.\d+)", sipp)
    versions = []
    from importlib.metadata import version

    for pkg in ("uvloop", "uvicorn", "websockets"):
        with contextlib.suppress(Exception):
            versions.append(f"{pkg} {version(pkg)}")
    return (f"{nproc} CPUs ({model}), Linux {platform.release()}, Python "
            f"{platform.python_version()}, {', '.join(versions)}, "
            f"SIPp {m.group(1) if m else '?'}")


def update_doc(path: Path, title: str, body: str) -> None:
    """Replace section ``title`` (up to the next ``## ``) or append it; keep the rest."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = f"{title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^{re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")


def fmt(v: float) -> str:
    return "-" if v != v else f"{v:.1f}"


def table(runs: list[Run], n_users: int, n_consoles: int) -> str:
    rows = ["| run | POST answered ms | INVITEs out ms (seen) | all consoles ringing ms "
            "(consoles) | first console ringing ms | fan-out p50 ms | p99 ms | max ms | "
            "events per console | hub CPU s | consoles' CPU s | run wall s |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        epc = sorted(set(r.events_per_console))
        all_ringing = (max(r.ringing_ms) if r.ringing_ms and r.consoles_ringing == n_consoles
                       else float("nan"))
        rows.append(
            f"| {r.index} | {fmt(r.post_ms)} | {fmt(r.invites_ms)} ({r.invites_seen}/{n_users}) "
            f"| {fmt(all_ringing)} "
            f"({r.consoles_ringing}/{n_consoles}) "
            f"| {fmt(min(r.ringing_ms) if r.ringing_ms else float('nan'))} "
            f"| {fmt(pct(r.latencies_ms, 0.5))} | {fmt(pct(r.latencies_ms, 0.99))} "
            f"| {fmt(max(r.latencies_ms) if r.latencies_ms else float('nan'))} "
            f"| {'/'.join(str(e) for e in epc) if epc else '-'} "
            f"| {r.hub_cpu_s:.2f} | {r.client_cpu_s:.2f} | {r.wall_s:.1f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--consoles", type=int, default=20)
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds the call rings before the DELETE (default: %(default)s)")
    parser.add_argument("--install-tshark", action="store_true")
    parser.add_argument("--profile", action="store_true",
                        help="one more run with py-spy (--rate 250) recording the hub")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--no-batch", action="store_true",
                        help="consoles take one WebSocket message per event")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args(argv)
    global BATCH
    BATCH = not args.no_batch
    if not shutil.which("sipp"):
        print("SIPp is missing: apt-get install sip-tester", file=sys.stderr)
        return 2
    pinned = bool(shutil.which("taskset")) and (os.cpu_count() or 1) >= 2
    host = machine()
    if pinned:
        os.sched_setaffinity(0, {int(LOAD_CORE)})  # this script with SIPp, off the hub's core
    tshark = find_tshark(args.install_tshark)
    command = shlex.join([".venv/bin/python", "bench/bench_console.py", *sys.argv[1:]])
    started = time.monotonic()
    today = dt.date.today().isoformat()
    load_start = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"{today}, {host}; loadavg {load_start}", file=sys.stderr, flush=True)

    signal.signal(signal.SIGTERM, _terminate)
    children = Children()
    workdir = Path(tempfile.mkdtemp(prefix="bench-console-"))
    data = workdir / "hubdata"
    users = [f"m{i:03d}" for i in range(1, args.users + 1)]
    passwords = {u: f"pw-{u}-secret" for u in users}
    runs: list[Run] = []
    profile: str | None = None
    error: str | None = None
    hub: Hub | None = None
    uas_port = 0
    try:
        data.mkdir()
        for u in users:
            hub_cli("user", "add", u, "--password", passwords[u], data_dir=data)
        hub_cli("operator", "add", OPERATOR, "--password", OP_PASSWORD, "--role", "dispatcher",
                data_dir=data)
        print(f"CLI: {len(users)} users and operator {OPERATOR} added "
              f"({time.monotonic() - started:.1f} s)", file=sys.stderr, flush=True)
        hub = start_hub(children, workdir, data)
        uas_port = free_port()
        # The hub sends to where a REGISTER came from (its source, like a NAT'd phone):
        # register from the uas's port, then hand the port to SIPp.
        register_users(hub, users, passwords, uas_port)
        (workdir / "uas").mkdir()
        (workdir / "uas" / "ring.xml").write_text(UAS_XML)
        uas = children.start(
            [*(["taskset", "-c", LOAD_CORE] if pinned else []), "sipp", "-sf", "ring.xml",
             "-i", LOOPBACK, "-p", str(uas_port), "-t", "u1", "-cp", str(free_port()),
             "-mp", str(free_port()), "-nostdin",
             "-trace_err", "-error_file", "errors.log", "-max_recv_loops", "1000"],
            workdir / "uas", "sipp")
        deadline = time.monotonic() + 10
        while _bindable(uas_port, socket.SOCK_DGRAM):
            if uas.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("SIPp uas did not start: "
                                   + (workdir / "uas" / "sipp.stderr").read_text()[-1000:])
            time.sleep(0.05)
        regs = http_json(f"{hub.url}/api/health")["registrations"]
        print(f"hub SIP {hub.sip} HTTP {hub.http}, uas {uas_port}; registrations {regs}",
              file=sys.stderr, flush=True)
        token = http_json(f"{hub.url}/api/auth/token", "POST",
                          {"username": OPERATOR, "password": OP_PASSWORD})["token"]
        capture = start_capture(children, workdir, tshark, hub.sip) if tshark else None
        if not tshark:
            print("tshark missing (--install-tshark): no INVITE timing", file=sys.stderr)

        def wait_no_calls() -> None:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if not http_json(f"{hub.url}/api/calls", token=token, timeout=20):
                    return
                time.sleep(0.2)

        for i in range(1, args.runs + 1):
            if time.monotonic() - started > 200:
                print(f"run {i} skipped: over the time budget", file=sys.stderr)
                break
            wait_no_calls()
            run = asyncio.run(one_run(hub, token, users, i, args.consoles, args.settle))
            runs.append(run)
            print(f"  run {i}: call {run.call_id}, consoles ringing {run.consoles_ringing}/"
                  f"{args.consoles}, max {fmt(max(run.ringing_ms, default=float('nan')))} ms, "
                  f"fan-out p99 {fmt(pct(run.latencies_ms, 0.99))} ms"
                  + (f"; errors: {run.errors[:3]}" if run.errors else ""),
                  file=sys.stderr, flush=True)
        if capture is not None:
            time.sleep(0.5)
            children.stop(capture, signal.SIGINT, 10)
            invites = outgoing_invites(tshark, workdir, hub.sip)
            bounds = [r.t0 for r in runs[1:]] + [float("inf")]
            for run, end in zip(runs, bounds, strict=True):
                mine = [t for t, _cid in invites if run.t0 <= t < end]
                run.invites_seen = len(mine)
                if len(mine) >= len(users):
                    run.invites_ms = (sorted(mine)[len(users) - 1] - run.t0) * 1000
        if args.profile and time.monotonic() - started < 230:
            spy = shutil.which("py-spy") or str(VENV_BIN / "py-spy")
            raw = workdir / "profile.txt"
            with contextlib.suppress(Exception):
                wait_no_calls()
            prof = children.start(
                [spy, "record", "--pid", str(hub.proc.pid), "--rate", "250", "--format", "raw",
                 "--output", str(raw), "--nonblocking", "--duration", "40"], workdir, "py-spy")
            time.sleep(1.0)
            try:
                asyncio.run(one_run(hub, token, users, 100, args.consoles, args.settle))
            except Exception as exc:  # noqa: BLE001 - the profile is what matters here
                print(f"profile run: {type(exc).__name__}: {exc}", file=sys.stderr)
            children.stop(prof, signal.SIGINT, 20)
            profile = summarise_profile(raw) if raw.exists() else "(py-spy wrote nothing)"
    except KeyboardInterrupt as exc:
        error = f"interrupted ({exc})"
    except Exception as exc:  # noqa: BLE001 - report what was measured
        error = f"{type(exc).__name__}: {exc}"
    finally:
        if hub is not None:
            children.stop(hub.proc, signal.SIGTERM, 10)
        children.kill_all()
    load_end = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    elapsed = time.monotonic() - started

    n, c = len(users), args.consoles
    inv = [r.invites_ms for r in runs if r.invites_ms == r.invites_ms]
    ring = [max(r.ringing_ms) for r in runs if c and r.consoles_ringing == c]
    all_lat = [x for r in runs for x in r.latencies_ms]
    p99s = [pct(r.latencies_ms, 0.99) for r in runs if r.latencies_ms]
    types: Counter[str] = Counter()
    for r in runs:
        types.update(r.event_types)

    def verdict(values: list[float], target: float, complete: bool) -> str:
        if not values or not complete:
            return "not measured in every run"
        return (f"worst {max(values):.1f} ms, median {statistics.median(values):.1f} ms: "
                + ("met" if max(values) < target else
                   "met at the median, NOT in every run" if statistics.median(values) < target
                   else "NOT met"))

    lines = [
        f"Run {today} on {host}; loadavg {load_start} at start, {load_end} at the end. Hub "
        f"(`hub serve`, uvloop) on core 0 (`taskset -c 0`); SIPp uas, tshark and this "
        f"script (HTTP client and the {c} consoles, one asyncio process) on core 1. "
        f"Bench took {elapsed:.0f} s.",
        "",
        f"    {command}",
        "",
        f"{n} SIP users registered (digest) with contacts on one SIPp uas that answers 180 "
        f"and nothing more (members stay ringing until the DELETE: CANCEL, 487); "
        f"{c} consoles on `/api/events` (Bearer token), connected and past their snapshot "
        f"before T0 = `time.time()` just before `POST /api/calls` "
        f'`{{"targets": [{n} users], "mode": "group"}}`. INVITEs out: tshark on lo, last of the '
        f"{n} INVITEs the hub sent - T0. All consoles ringing: latest over the consoles of the "
        f"first message showing all {n} legs `ringing` - T0. Fan-out: arrival - `at` (the "
        f"hub's publish time) for every event at every console; arrival times are taken in "
        f"one Python process shared by the {c} consoles, so they include its own queueing "
        f"(an upper bound on the hub's). Each call rings {args.settle:g} s, then DELETE.",
        "",
        table(runs, n, c),
        "",
        "Events per run and console: "
        + ", ".join(f"{k} {v // max(1, len(runs) * c)}" for k, v in types.most_common())
        + f" (whole-call `CallChanged` events carry all {n} legs). Over all runs and "
        f"consoles: {len(all_lat)} event deliveries, fan-out p50 {fmt(pct(all_lat, 0.5))} "
        f"ms, p99 {fmt(pct(all_lat, 0.99))} ms, max {fmt(max(all_lat, default=float('nan')))} ms.",
        "",
        f"- **Every INVITE out** (target < {TARGET_INVITES_MS:g} ms): "
        f"{verdict(inv, TARGET_INVITES_MS, len(inv) == len(runs))}.",
        f"- **Every console shows every member ringing** (target < {TARGET_RINGING_MS:g} ms): "
        f"{verdict(ring, TARGET_RINGING_MS, len(ring) == len(runs))}.",
        f"- **Fan-out to {c} consoles, p99** (target < {TARGET_FANOUT_P99_MS:g} ms): "
        f"{verdict(p99s, TARGET_FANOUT_P99_MS, len(p99s) == len(runs))}.",
    ]
    errs = [e for r in runs for e in r.errors]
    if errs:
        lines += ["", f"Errors: {'; '.join(errs[:5])}"]
    if profile:
        lines += ["", "Profile: `py-spy record --rate 250 --nonblocking` on the hub over one "
                  "more run (not in the table):", "", profile]
    if error:
        lines += ["", f"The run ended early: {error}"]
    report = "\n".join(lines)
    print(report)
    if not args.no_doc and runs:
        update_doc(DOC, SECTION, report)
        print(f"\nupdated {DOC.relative_to(ROOT)}", file=sys.stderr)
    if args.keep or error:
        print(f"work directory kept: {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())

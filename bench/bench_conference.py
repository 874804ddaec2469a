"""Conference capacity: G.711 legs at 20 ms on loopback, the hub's mixer against Janus AudioBridge.

    .venv/bin/python bench/bench_conference.py                 # the full run, about 12 min
    .venv/bin/python bench/bench_conference.py --sides hub --scenarios big --steps 100,500

What is measured, for the hub (media.engine) and for Janus 1.1.2's AudioBridge (Debian's
``janus``, plain-RTP PCMU participants) in the same run and the same way:

- the largest number of legs one mixer process carries with under 0.5 % late or
  missing frames at *every* leg (the worst leg is reported);
- the mixer's CPU per leg (utime + stime of the process, all threads, from
  /proc/PID/stat over the measured window; the process is pinned to core 0);
- the latency the mixer adds, packet in to mixed packet out, p50 and p99.

Processes, all on 127.0.0.1:

- the mixer, pinned with ``taskset -c 0``: either ``bench/conference_hub.py`` (uvloop, one
  MediaEngine, 8 kHz bridges, PCMU legs each on its own RTP/RTCP port pair, 4 MB
  receive buffers) or ``janus -C conf/janus.jcfg -F conf -o`` with a copy of /etc/janus
  made loopback-only (``interface``, HTTP ``ip``, AudioBridge ``local_ip`` = 127.0.0.1;
  the mqtt/rabbitmq/nanomsg/pfunix/websockets transports and every plugin but the
  AudioBridge disabled; HTTP API on a free loopback port). Janus rooms are created
  through the API: ``sampling_rate`` 8000, ``allow_rtp_participants``; each participant
  is a handle that joins with ``"codec": "pcmu", "rtp": {"ip", "port"}`` and the
  ``joined`` event names the port Janus expects its RTP on. Janus keeps its default
  6-packet (120 ms) prebuffering per participant.
- the load generator ``bench/conference_load.py``, pinned with ``taskset -c 1``: every
  leg's phone, one 172-byte PCMU packet per leg every 20 ms, paced from an absolute
  clock and spread over the tick; see its docstring for how late/missing frames and
  the latency (a click probe whose position inside the frame names it, timed at the
  listener legs of the room) are measured.
- this process, which starts the others, creates legs/participants, reads CPU
  figures and prints the report.

Scenarios: ``big`` is one room with every leg; ``rooms10`` is rooms of 10 legs. Legs are
added step by step (100, 200, ...) to the same mixer process; after each step the
load runs ``--warmup`` s, then ``--seconds`` s are measured. A step with under 0.5 %
late+missing at every leg passes; the first failing step ends the scenario.

Others share this machine (their tests pin processes to core 0 too), so before each
measurement the bench waits (up to ``--quiet-wait`` s) until threads other than the
mixer's and the generator's use at most ``--disturbed`` of a core on core 0 and on core 1
(per-thread CPU from /proc/*/task/*/stat, by the core each last ran on); a step that
was disturbed all the same is measured once more and the quieter measurement kept.
The "other load" and, for the hub, the share of the window its thread was runnable
but waiting for core 0 (/proc/PID/schedstat) are reported with every step. The whole
run stops by itself within ``--budget`` seconds (steps that would not fit are skipped,
and the report says so).

Root is needed for ``apt-get install janus`` when Janus is missing and for raising
net.core.rmem_max when it is under 4 MB (the bench does both if it can, and says so).

Writes the section "Conference capacity (bench/bench_conference.py)" of
docs/benchmarks.md (``--no-doc`` to skip), keeping the other sections.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import queue
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python")
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## Conference capacity (bench/bench_conference.py)"
CRITERION = 0.5  # % late or missing at the worst leg
HUB_PORTS = (40000, 45999)
JANUS_RTP_PORTS = (46000, 51999)
CLK_TCK = os.sysconf("SC_CLK_TCK")
LISTENERS_BIG = 10
MEASURED_ROOMS = 20


# -- helpers --------------------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_times() -> dict[str, tuple[float, float, float]]:
    """Per CPU: (busy, softirq, steal) seconds from /proc/stat.

    Steal is time the hypervisor gave this virtual CPU's physical core to someone else:
    the guest's processes simply stop meanwhile.
    """
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                parts = line.split()
                vals = [int(v) for v in parts[1:]]
                idle = vals[3] + vals[4]
                out[parts[0]] = ((sum(vals[:7]) - idle) / CLK_TCK, vals[6] / CLK_TCK,
                                 vals[7] / CLK_TCK)
    return out


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


def ensure_rmem(minimum: int) -> str:
    path = Path("/proc/sys/net/core/rmem_max")
    try:
        current = int(path.read_text())
    except OSError:
        return "net.core.rmem_max unreadable"
    if current >= minimum:
        return f"net.core.rmem_max={current} (left as found)"
    try:
        path.write_text(str(minimum))
        return f"net.core.rmem_max raised from {current} to {minimum} by the bench"
    except OSError as exc:
        return f"net.core.rmem_max={current}, raising it failed ({exc})"


class Child:
    """A child process in its own process group, spoken to in JSON lines."""

    def __init__(self, argv: list[str], name: str, log: Path) -> None:
        self.name = name
        self.log = open(log, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, start_new_session=True, cwd=ROOT)
        self._buf = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        self.proc.stdin.flush()

    def recv(self, timeout: float = 60.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no answer in {timeout} s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"{self.name} exited ({self.proc.poll()}); "
                                       f"see {self.log.name}")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        obj = json.loads(line)
        if "error" in obj:
            raise RuntimeError(f"{self.name}: {obj['error']}")
        return dict(obj)

    def ask(self, obj: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        self.send(obj)
        return self.recv(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send({"op": "quit"})
                self.proc.wait(3)
            except Exception:
                pass
        kill_group(self.proc)
        self.log.close()


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


# -- the two mixers --------------------------------------------------------------------------


class HubMixer:
    name = "hub"

    def __init__(self, workdir: Path, root: str | None = None, gc_freeze: bool = False) -> None:
        self.child = Child(["taskset", "-c", "0", PY, str(ROOT / "bench" / "conference_hub.py"),
                            "--port-min", str(HUB_PORTS[0]), "--port-max", str(HUB_PORTS[1]),
                            *(["--root", root] if root else []),
                            *(["--gc-freeze"] if gc_freeze else [])],
                           "hub", workdir / "hub.log")
        ready = self.child.recv(30)
        self.pid = int(ready["pid"])
        self.input_before: list[list[int]] = []

    def add(self, legs: list[dict[str, Any]], gen_ports: list[int], sink: int) -> list[int]:
        specs = [{"room": leg["room"], "remote": gen_ports[leg["sock"]], "rtcp": sink}
                 for leg in legs]
        return [int(p) for p in self.child.ask({"op": "add", "legs": specs}, 120)["ports"]]

    def stats(self) -> dict[str, Any]:
        return self.child.ask({"op": "stats"}, 30)

    def stop(self) -> None:
        self.child.stop()


class JanusMixer:
    name = "janus"

    def __init__(self, workdir: Path) -> None:
        self.conf = workdir / "janus-conf"
        self.http_port = free_port()
        make_janus_conf(self.conf, self.http_port)
        self.log = open(workdir / "janus.log", "wb")
        self.proc = subprocess.Popen(
            ["taskset", "-c", "0", "janus", "-C", str(self.conf / "janus.jcfg"), "-F",
             str(self.conf), "-o", "-s", "0", "-d", "3"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=workdir)
        self.pid = self.proc.pid
        self.conn: http.client.HTTPConnection | None = None
        deadline = time.monotonic() + 30
        while True:
            try:
                self.session = self._post("/janus", {"janus": "create"})["data"]["id"]
                break
            except (OSError, http.client.HTTPException):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"janus did not start: see {self.log.name}") from None
                self.conn = None
                time.sleep(0.2)
        self.admin = self._attach()
        self.rooms: set[int] = set()
        self.handles: list[int] = []
        self._stopping = False
        self._joined: queue.Queue[tuple[int, Any]] = queue.Queue()
        self._poller = threading.Thread(target=self._poll, name="janus-events", daemon=True)
        self._poller.start()

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=30)
        body = dict(body, transaction=f"t{time.monotonic_ns()}")
        self.conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        data = json.loads(resp.read())
        if data.get("janus") == "error":
            raise RuntimeError(f"janus: {data}")
        return dict(data)

    def _attach(self) -> int:
        return int(self._post(f"/janus/{self.session}",
                              {"janus": "attach", "plugin": "janus.plugin.audiobridge"})
                   ["data"]["id"])

    def _message(self, handle: int, body: dict[str, Any]) -> dict[str, Any]:
        return self._post(f"/janus/{self.session}/{handle}", {"janus": "message", "body": body})

    def _poll(self) -> None:
        """Long-poll the session's events for as long as Janus runs (a thread).

        One request is always pending, as Janus's own clients do: a poll abandoned early
        could be answered after its client left, and that event would be lost.
        """
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=60)
        while not self._stopping:
            try:
                conn.request("GET", f"/janus/{self.session}?maxev=5000&rid={time.monotonic_ns()}")
                data = json.loads(conn.getresponse().read())
            except (OSError, http.client.HTTPException, ValueError):
                if self._stopping or self.proc.poll() is not None:
                    return
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=60)
                time.sleep(0.1)
                continue
            for ev in data if isinstance(data, list) else [data]:
                sender = ev.get("sender")
                body = ev.get("plugindata", {}).get("data", {})
                if body.get("audiobridge") == "joined" and "rtp" in body:
                    self._joined.put((sender, int(body["rtp"]["port"])))
                elif "error" in body:
                    self._joined.put((sender, body))
                # Everything else (who joined, who left) is read and dropped.

    def add(self, legs: list[dict[str, Any]], gen_ports: list[int], sink: int) -> list[int]:
        for room in sorted({int(leg["room"]) for leg in legs} - self.rooms):
            r = self._message(self.admin, {
                "request": "create", "room": 1000 + room, "sampling_rate": 8000,
                "allow_rtp_participants": True, "audiolevel_ext": False,
                "audiolevel_event": False, "record": False})
            data = r["plugindata"]["data"]
            if data.get("audiobridge") != "created":
                raise RuntimeError(f"janus create room: {data}")
            self.rooms.add(room)
        handles = []
        for leg in legs:
            h = self._attach()
            handles.append(h)
            self._message(h, {"request": "join", "room": 1000 + int(leg["room"]),
                              "display": f"leg{len(self.handles) + len(handles)}",
                              "codec": "pcmu",
                              "rtp": {"ip": "127.0.0.1", "port": gen_ports[leg["sock"]]}})
        want = set(handles)
        ports: dict[int, int] = {}
        deadline = time.monotonic() + 120
        while want - set(ports):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"janus: {len(want - set(ports))} joins unanswered")
            try:
                sender, what = self._joined.get(timeout=left)
            except queue.Empty:
                continue
            if sender in want:
                if isinstance(what, dict):
                    raise RuntimeError(f"janus join: {what}")
                ports[sender] = what
        self.handles.extend(handles)
        return [ports[h] for h in handles]

    def drain_events(self) -> None:
        """Give the poller a moment with the notifications of the joins just made."""
        time.sleep(0.5)

    def stop(self) -> None:
        self._stopping = True
        try:
            if self.conn is not None:
                self.conn.close()
        finally:
            kill_group(self.proc)
            self.log.close()


def make_janus_conf(conf: Path, http_port: int) -> None:
    """A copy of /etc/janus that binds nothing but 127.0.0.1."""
    if conf.exists():
        shutil.rmtree(conf)
    shutil.copytree("/etc/janus", conf)

    def edit(name: str, subs: list[tuple[str, str]]) -> None:
        path = conf / name
        text = path.read_text()
        for pattern, repl in subs:
            text, n = re.subn(pattern, repl, text, count=1, flags=re.M)
            if n != 1:
                raise RuntimeError(f"janus conf {name}: no match for {pattern!r}")
        path.write_text(text)

    plugins = sorted(p.name for p in Path("/usr/lib/x86_64-linux-gnu/janus/plugins").glob("*.so")
                     if p.name != "libjanus_audiobridge.so")
    edit("janus.jcfg", [
        (r"^\s*configs_folder = .*$", f'\tconfigs_folder = "{conf}"'),
        (r"^\s*#interface = .*$", '\tinterface = "127.0.0.1"'),
        (r"^\s*debug_level = .*$", "\tdebug_level = 3"),
        (r"^\s*#disable = \"libjanus_voicemail.so,libjanus_recordplay.so\"",
         f'\tdisable = "{",".join(plugins)}"'),
        (r"^\s*#disable = \"libjanus_rabbitmq.so\"",
         '\tdisable = "libjanus_mqtt.so,libjanus_rabbitmq.so,libjanus_nanomsg.so,'
         'libjanus_pfunix.so,libjanus_websockets.so"'),
        (r"^\s*#ice_enforce_list = \"eth0\"$", '\tice_enforce_list = "lo"'),
    ])
    edit("janus.transport.http.jcfg", [
        (r"^\s*json = .*$", '\tjson = "compact"'),
        (r"^\s*port = 8088.*$", f"\tport = {http_port}"),
        (r"^\s*#ip = .*$", '\tip = "127.0.0.1"'),
        (r"^\s*#admin_ip = .*$", '\tadmin_ip = "127.0.0.1"'),
    ])
    ab = conf / "janus.plugin.audiobridge.jcfg"
    text = ab.read_text()
    text = text[:text.index("room-1234: {")]  # no demo room: only the bench's rooms
    text = text.replace('#rtp_port_range = "50000-60000"',
                        f'rtp_port_range = "{JANUS_RTP_PORTS[0]}-{JANUS_RTP_PORTS[1]}"')
    text = text.replace('#local_ip = "1.2.3.4"', 'local_ip = "127.0.0.1"')
    ab.write_text(text)
    for name in ("janus.transport.websockets.jcfg", "janus.transport.mqtt.jcfg",
                 "janus.transport.rabbitmq.jcfg", "janus.transport.nanomsg.jcfg",
                 "janus.transport.pfunix.jcfg"):
        (conf / name).unlink(missing_ok=True)  # disabled above as well


def ensure_janus() -> str:
    if shutil.which("janus") is None:
        print("janus missing: apt-get install -y janus", flush=True)
        subprocess.run(["apt-get", "install", "-y", "janus"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    out = subprocess.run(["janus", "--version"], capture_output=True, text=True, timeout=10)
    m = re.search(r"\(([\d.]+)\)", out.stdout + out.stderr)
    return m.group(1) if m else "?"


# -- one scenario ------------------------------------------------------------------------------


@dataclass
class Row:
    side: str
    scenario: str
    legs: int
    res: dict[str, Any]
    cpu: float  # of one core
    gen_cpu: float
    core_busy: tuple[float, float]
    other: tuple[float, float]
    softirq0: float
    load: str
    hub: dict[str, Any] = field(default_factory=dict)
    wait: float = 0.0
    steal: tuple[float, float] = (0.0, 0.0)
    """Share of the window the hypervisor took cores 0 and 1 away (/proc/stat steal)."""
    """Share of the window the mixer's threads were runnable but not running (schedstat)."""
    remeasured: bool = False
    was_disturbed: bool = False

    def disturbance(self, args: argparse.Namespace) -> float:
        """How much others got in the way, in cores (the hub's own wait counts for the hub:
        its single thread should never wait for core 0; Janus's threads wait for each other)."""
        own = self.wait if self.side == "hub" else 0.0
        return max(self.other[0], self.other[1] * 0.5, own, self.steal[0] * 4, self.steal[1] * 2)

    def disturbed(self, args: argparse.Namespace) -> bool:
        return self.disturbance(args) > float(args.disturbed)

    @property
    def bad(self) -> float:
        return float(self.res["worst_bad_pct"])

    @property
    def ok(self) -> bool:
        return self.bad < CRITERION and self.res["lat_n"] > 0


def leg_plan(scenario: str, start: int, count: int, gen_sockets: int) -> list[dict[str, Any]]:
    legs = []
    for i in range(start, start + count):
        if scenario == "big":
            room = 0
            role = "listener" if i % 50 == 1 and i // 50 < LISTENERS_BIG else "prober"
        else:
            room = i // 10
            if room >= MEASURED_ROOMS:
                role = "plain"
            else:
                role = "listener" if i % 10 == 1 else "prober"
        legs.append({"room": room, "role": role, "sock": i % gen_sockets})
    return legs


def thread_cpu() -> dict[tuple[int, int], tuple[float, int]]:
    """Every thread on the machine: (CPU seconds so far, the core it last ran on)."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    x = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[(int(pid), int(tid))] = ((int(x[11]) + int(x[12])) / CLK_TCK, int(x[36]))
    return out


def others(before: dict[tuple[int, int], tuple[float, int]],
           after: dict[tuple[int, int], tuple[float, int]], ours: set[int], span: float
           ) -> tuple[float, float]:
    """CPU (in cores) that threads other than ``ours`` used on core 0 and on core 1."""
    load = [0.0, 0.0]
    for key, (cpu, core) in after.items():
        if key[0] in ours or core > 1:
            continue
        load[core] += cpu - before.get(key, (0.0, core))[0]
    return load[0] / span, load[1] / span


def run_delay(pid: int) -> float:
    """Seconds the process's threads spent runnable but waiting for a core (schedstat)."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
        except OSError:
            pass
    return total / 1e9


def other_load(pids: tuple[int, int], seconds: float) -> tuple[float, float]:
    """Cores 0 and 1 used by others than the mixer, the generator and this process."""
    before, s0, c0, t0 = thread_cpu(), cpu_times(), [proc_cpu(p) for p in pids], time.monotonic()
    time.sleep(seconds)
    after, s1, c1, t1 = thread_cpu(), cpu_times(), [proc_cpu(p) for p in pids], time.monotonic()
    span = t1 - t0
    by_thread = others(before, after, {*pids, os.getpid()}, span)
    by_core = core_others(s0, s1, [c1[0] - c0[0], c1[1] - c0[1]], span)
    steal = [(s1[c][2] - s0[c][2]) / span if c in s1 else 0.0 for c in ("cpu0", "cpu1")]
    return (max(by_thread[0], by_core[0]) + steal[0],
            max(by_thread[1], by_core[1]) + steal[1])


def core_others(s0: dict[str, tuple[float, float, float]],
                s1: dict[str, tuple[float, float, float]],
                ours: list[float], span: float) -> tuple[float, float]:
    """Busy time of cores 0 and 1 (/proc/stat) minus our processes' CPU and softirq.

    Catches processes too short-lived for the per-thread count; the softirq time is left
    out because loopback delivery runs as softirq on the sender's core (ours, mostly).
    """
    out = []
    for k, name in enumerate(("cpu0", "cpu1")):
        if name not in s1:
            out.append(0.0)
            continue
        busy = s1[name][0] - s0[name][0] - (s1[name][1] - s0[name][1])
        out.append(max(busy - ours[k] - 0.0, 0.0) / span)
    return out[0], out[1]


def wait_quiet(pids: tuple[int, int], args: argparse.Namespace, deadline: float,
               hub: bool) -> float:
    """Wait (bounded) until others leave cores 0 and 1 alone; returns the seconds waited."""
    start = time.monotonic()
    while True:
        w0 = run_delay(pids[0])
        other = other_load(pids, 1.0)
        waited = run_delay(pids[0]) - w0 if hub else 0.0
        if max(other[0], other[1] * 0.5, waited) <= args.disturbed:
            break
        if time.monotonic() - start > args.quiet_wait or time.monotonic() + 30 > deadline:
            print(f"  still busy ({other[0]:.2f}/{other[1]:.2f} cores): measuring anyway",
                  flush=True)
            break
    return time.monotonic() - start


def measure(side: str, scenario: str, n: int, mixer: Any, gen: Child, args: argparse.Namespace
            ) -> Row:
    hub_before = mixer.stats() if side == "hub" else None
    time.sleep(0.5)  # whatever answering the stats delayed is out of the window
    ours = {mixer.pid, gen.pid, os.getpid()}
    th0 = thread_cpu()
    c0, g0, s0, w0 = proc_cpu(mixer.pid), proc_cpu(gen.pid), cpu_times(), run_delay(mixer.pid)
    t0 = time.monotonic()
    gen.ask({"op": "measure", "seconds": args.seconds, "allowance": args.allowance / 1000})
    gen.recv(args.seconds + 30)  # window_end
    c1, g1, s1, w1 = proc_cpu(mixer.pid), proc_cpu(gen.pid), cpu_times(), run_delay(mixer.pid)
    t1 = time.monotonic()
    th1 = thread_cpu()
    hub_after = mixer.stats() if side == "hub" else None
    res = gen.recv(120)["results"]
    span = t1 - t0
    cpu = (c1 - c0) / span
    gcpu = (g1 - g0) / span
    busy0 = (s1["cpu0"][0] - s0["cpu0"][0]) / span
    soft0 = (s1["cpu0"][1] - s0["cpu0"][1]) / span
    steal = ((s1["cpu0"][2] - s0["cpu0"][2]) / span,
             (s1["cpu1"][2] - s0["cpu1"][2]) / span if "cpu1" in s1 else 0.0)
    by_thread = others(th0, th1, ours, span)
    by_core = core_others(s0, s1, [c1 - c0, g1 - g0], span)
    other = (max(by_thread[0], by_core[0]), max(by_thread[1], by_core[1]))
    hub: dict[str, Any] = {}
    if hub_before is not None and hub_after is not None:
        worst_conceal = 0.0
        total_in = 0
        total_conc = 0
        for b, a in zip(hub_before["legs"], hub_after["legs"], strict=False):
            pin = a[0] - b[0]
            conc = a[1] - b[1]
            total_in += pin
            total_conc += conc
            frames = max(pin + conc, 1)
            worst_conceal = max(worst_conceal, conc / frames)
        e0, e1 = hub_before["engine"], hub_after["engine"]
        hub = {"worst_conceal_pct": worst_conceal * 100,
               "conceal_pct": total_conc / max(total_in + total_conc, 1) * 100,
               "late_ticks": e1["late_ticks"] - e0["late_ticks"],
               "skipped_ticks": e1["skipped_ticks"] - e0["skipped_ticks"],
               "max_lateness_ms": e1["max_lateness_ms"],
               "mix_us_avg": (hub_after["mix_seconds"] - hub_before["mix_seconds"]) * 1e6
               / max(hub_after["mix_ticks"] - hub_before["mix_ticks"], 1),
               "mix_us_max": hub_after["mix_us_max"],
               "gc_ms_max": hub_after["gc"]["max"] * 1000,
               "gc_ms_per_s": (hub_after["gc"]["total"] - hub_before["gc"]["total"]) * 1000 / span}
    return Row(side, scenario, n, res, cpu, gcpu, (busy0, 0.0), other, soft0, loadavg(), hub,
               wait=(w1 - w0) / span, steal=steal)


def run_scenario(side: str, scenario: str, steps: list[int], args: argparse.Namespace,
                 workdir: Path, deadline: float, partial: list[Row]) -> tuple[list[Row], str]:
    """Step through ``steps``; ``partial`` gets every row as soon as it is measured."""
    rows: list[Row] = []
    note = ""
    gen = Child(["taskset", "-c", "1", PY, str(ROOT / "bench" / "conference_load.py"),
                 "--sockets", str(args.gen_sockets)], "load", workdir / f"load-{side}.log")
    mixer: Any = None
    try:
        hello = gen.recv(30)
        gen_ports = [int(p) for p in hello["ports"]]
        mixer = (HubMixer(workdir, args.hub_root, args.hub_gc_freeze) if side == "hub"
                 else JanusMixer(workdir))
        sink = gen_ports[-1]
        have = 0
        for n in steps:
            per_step = args.warmup + args.seconds + 3 + (n - have) * (0.02 if side == "janus"
                                                                       else 0.003)
            if time.monotonic() + per_step > deadline:
                note = f"stopped before {n} legs: time budget"
                break
            t_step = time.monotonic()
            plan = leg_plan(scenario, have, n - have, args.gen_sockets)
            ports = mixer.add(plan, gen_ports, sink)
            gen.ask({"op": "add", "legs": [dict(p, dest=port, src=port)
                                           for p, port in zip(plan, ports, strict=False)]})
            have = n
            if side == "janus":
                mixer.drain_events()
            time.sleep(max(args.warmup - 1.0, 0.0))
            wait_quiet((mixer.pid, gen.pid), args, deadline, side == "hub")
            row = measure(side, scenario, n, mixer, gen, args)
            # A disturbed measurement is repeated (twice if it failed): the quietest one,
            # and a passing undisturbed one before any other, is kept.
            tries = 0
            while (row.disturbed(args) and tries < (2 if not row.ok else 1)
                   and time.monotonic() + per_step < deadline):
                tries += 1
                print(f"  {side}/{scenario} {n}: other load {row.other[0]:.2f}/"
                      f"{row.other[1]:.2f} cores, mixer waited {row.wait * 100:.0f}%: "
                      "measuring again", flush=True)
                wait_quiet((mixer.pid, gen.pid), args, deadline, side == "hub")
                again = measure(side, scenario, n, mixer, gen, args)
                again.remeasured = True
                if (not again.disturbed(args) and (again.ok or not row.ok)) or (
                        row.disturbed(args)
                        and again.disturbance(args) < row.disturbance(args)):
                    row = again
            row.was_disturbed = row.disturbed(args)
            rows.append(row)
            partial.extend([row])
            r = row.res
            print(f"  {side:5} {scenario:7} {n:5} legs: worst {row.bad:6.2f}% "
                  f"(late {r['worst_late']}, missing {r['worst_missing']} of "
                  f"{r['worst_expected']}), cpu {row.cpu * 100:5.1f}% "
                  f"({row.cpu * 100 / n:.3f}%/leg), lat p50/p99 {fmt(r['lat_p50'])}/"
                  f"{fmt(r['lat_p99'])} ms ({r['lat_n']} probes, "
                  f"{r['probes_found']}/{r['probes_expected']} found), gen lag p99 "
                  f"{r['gen_lag_p99']:.1f} ms, gen cpu {row.gen_cpu * 100:.0f}%, lateness p50/p99/"
                  f"p99.9 {r['lateness_p50']:.1f}/{r['lateness_p99']:.1f}/"
                  f"{r['lateness_p999']:.1f} ms, mixer waited {row.wait * 100:.0f}%, steal "
                  f"{row.steal[0] * 100:.1f}/{row.steal[1] * 100:.1f}%, other "
                  f"{row.other[0]:.2f}/{row.other[1]:.2f}, {row.hub or ''} "
                  f"[{time.monotonic() - t_step:.0f} s]", flush=True)
            if not row.ok:
                break
    finally:
        if mixer is not None:
            mixer.stop()
        gen.stop()
    return rows, note


def fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


# -- report ------------------------------------------------------------------------------------


def max_legs(rows: list[Row]) -> int:
    best = 0
    for row in rows:
        if not row.ok:
            break
        best = row.legs
    return best


def side_by_side(scenario: str, by: dict[tuple[str, str], list[Row]]) -> str:
    hub = {r.legs: r for r in by.get(("hub", scenario), [])}
    jan = {r.legs: r for r in by.get(("janus", scenario), [])}
    lines = ["| legs | hub worst leg late+missing | hub CPU (1 core) | hub CPU/leg | "
             "hub latency p50 / p99 ms | Janus worst leg late+missing | Janus CPU (1 core) | "
             "Janus CPU/leg | Janus latency p50 / p99 ms |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def cells(r: Row | None) -> str:
        if r is None:
            return " | ".join(["-"] * 4)
        mark = ("" if r.ok else " FAIL") + (" (disturbed)" if r.was_disturbed else "")
        return (f"{r.bad:.2f}%{mark} | {r.cpu * 100:.1f}% | {r.cpu * 100 / r.legs:.3f}% | "
                f"{fmt(r.res['lat_p50'])} / {fmt(r.res['lat_p99'])}")

    for n in sorted(set(hub) | set(jan)):
        lines.append(f"| {n} | {cells(hub.get(n))} | {cells(jan.get(n))} |")
    return "\n".join(lines)


def details(rows: list[Row]) -> str:
    lines = ["| side | scenario | legs | worst leg: late / missing of expected | legs over 0.5% | "
             "lateness p99 / max ms | min frames/s (worst leg) | probes found | latency max ms | "
             "hub input concealed (worst leg) | hub late / skipped ticks | hub tick us avg / max | "
             "hub GC max ms | hub waited for its core | core 0 softirq | generator CPU / lag p99 "
             "ms | other load core 0 / 1 | steal core 0 / 1 | loadavg |",
             "|:---|:---" + "|---:" * 17 + "|"]
    for r in rows:
        x = r.res
        hub = r.hub
        conceal = f"{hub['worst_conceal_pct']:.2f}%" if hub else "-"
        ticks = f"{hub['late_ticks']} / {hub['skipped_ticks']}" if hub else "-"
        mix = f"{hub['mix_us_avg']:.0f} / {hub['mix_us_max']:.0f}" if hub else "-"
        gcm = f"{hub['gc_ms_max']:.1f}" if hub else "-"
        wait = f"{r.wait * 100:.0f}%" if hub else "-"
        re_ = " (re-measured)" if r.remeasured else ""
        lines.append(
            f"| {r.side} | {r.scenario} | {r.legs} | {x['worst_late']} / {x['worst_missing']} of "
            f"{x['worst_expected']} | {x['legs_over']} | {x['lateness_p99']:.1f} / "
            f"{x['max_late_ms']:.1f} | {x['min_frames_per_s']} | "
            f"{x['probes_found']}/{x['probes_expected']} | {fmt(x['lat_max'])} | {conceal} | "
            f"{ticks} | {mix} | {gcm} | {wait} | {r.softirq0 * 100:.0f}% | "
            f"{r.gen_cpu * 100:.0f}% / {x['gen_lag_p99']:.1f} | "
            f"{r.other[0]:.2f} / {r.other[1]:.2f}{re_} | "
            f"{r.steal[0] * 100:.1f}% / {r.steal[1] * 100:.1f}% | {r.load} |")
    return "\n".join(lines)


def machine() -> dict[str, str]:
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import numpy
    try:
        import uvloop
        uv = str(getattr(uvloop, "__version__", "?"))
    except Exception:
        uv = "?"
    return {"nproc": str(os.cpu_count()), "cpu": model, "kernel": platform.release(),
            "python": platform.python_version(), "uvloop": uv, "numpy": numpy.__version__}


def update_doc(path: Path, title: str, body: str) -> None:
    """Replace section ``title`` (up to the next ``## ``) or append it; keep the rest."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = f"{title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^{re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    tmp = path.with_suffix(".md.tmp-conference")
    tmp.write_text(text.rstrip("\n") + "\n")
    tmp.replace(path)


# -- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sides", default="hub,janus")
    parser.add_argument("--scenarios", default="big,rooms10")
    parser.add_argument("--steps", default="100,200,300,400,500,600,700,800,900,1000,1200,1400")
    parser.add_argument("--seconds", type=float, default=12.0, help="measured per step")
    parser.add_argument("--warmup", type=float, default=3.0, help="load before measuring")
    parser.add_argument("--allowance", type=float, default=20.0,
                        help="jitter allowance, ms: later than this after its due time = late")
    parser.add_argument("--disturbed", type=float, default=0.08,
                        help="other load (cores) on core 0 or 1 that triggers a re-measure")
    parser.add_argument("--quiet-wait", type=float, default=20.0,
                        help="seconds to wait, per step, for other load to go away")
    parser.add_argument("--gen-sockets", type=int, default=16)
    parser.add_argument("--budget", type=float, default=700.0, help="seconds for the whole run")
    parser.add_argument("--hub-root", help="import the hub's media/ from this directory "
                        "(to measure another version of the engine)")
    parser.add_argument("--hub-gc-freeze", action="store_true",
                        help="the hub process calls gc.freeze() once at start-up")
    parser.add_argument("--json", help="also write every measured step to this file")
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    deadline = started + args.budget
    # A kill (timeout, Ctrl-C) still runs the finally clauses that stop Janus and the rest.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        # Keep this process (its /proc scans, its JSON) off the mixer's core.
        os.sched_setaffinity(0, {1})
    except OSError:
        pass
    sides = [s for s in args.sides.split(",") if s]
    scenarios = [s for s in args.scenarios.split(",") if s]
    steps = [int(s) for s in args.steps.split(",") if s]
    load_start = loadavg()
    rmem = ensure_rmem(4 * 1024 * 1024)
    janus_version = ensure_janus() if "janus" in sides else "-"
    info = machine()
    workdir = Path(tempfile.mkdtemp(prefix="bench-conference-"))
    print(f"{info}; janus {janus_version}; {rmem}; loadavg {load_start}; logs in {workdir}",
          flush=True)
    by: dict[tuple[str, str], list[Row]] = {}
    notes: dict[tuple[str, str], str] = {}
    order = [(side, sc) for sc in scenarios for side in sides]
    try:
        for k, (side, sc) in enumerate(order):
            # Share what is left fairly between the runs still to come.
            left = deadline - time.monotonic()
            run_deadline = time.monotonic() + left / (len(order) - k) * 1.5
            run_deadline = min(run_deadline, deadline)
            print(f"{side} / {sc}:", flush=True)
            partial: list[Row] = []
            try:
                rows, note = run_scenario(side, sc, steps, args, workdir, run_deadline, partial)
            except Exception as exc:
                rows, note = partial, f"stopped after {len(partial)} step(s): {exc!r}"
                print(f"  {note}", flush=True)
            by[(side, sc)] = rows
            notes[(side, sc)] = note
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started
    report = render(by, notes, args, argv, info, janus_version, rmem, load_start, elapsed)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {f"{side}/{sc}": [dict(legs=r.legs, cpu=r.cpu, res=r.res, hub=r.hub, wait=r.wait,
                                   other=r.other, steal=r.steal, disturbed=r.was_disturbed)
                              for r in rows] for (side, sc), rows in by.items()}, indent=1))
    print()
    print(report)
    if not args.no_doc:
        update_doc(DOC, SECTION, report)
        print(f"\nwrote {DOC.relative_to(ROOT)}")
    return 0


def render(by: dict[tuple[str, str], list[Row]], notes: dict[tuple[str, str], str],
           args: argparse.Namespace, argv: list[str] | None, info: dict[str, str],
           janus_version: str, rmem: str, load_start: str, elapsed: float) -> str:
    cmd = " ".join([".venv/bin/python bench/bench_conference.py", *(argv or sys.argv[1:])])
    out = [
        f"Run {datetime.date.today().isoformat()} on {info['nproc']} CPUs ({info['cpu']}), "
        f"Linux {info['kernel']}, Python {info['python']}, uvloop {info['uvloop']}, numpy "
        f"{info['numpy']}, Janus {janus_version} (Debian). Mixer pinned to core 0 "
        f"(`taskset -c 0`), load generator to core 1; {rmem}. loadavg {load_start} at start, "
        f"{loadavg()} at the end (others use this machine, see \"other load\"; Janus's "
        f"hundreds of threads count in loadavg too). "
        f"Took {elapsed:.0f} s.",
        "",
        f"    {cmd}",
        "",
        f"Each leg: one 172-byte PCMU packet every 20 ms each way. Legs are added 100 at a "
        f"time to the same mixer process; {args.warmup:g} s of load, then {args.seconds:g} s "
        f"measured. A step passes with under {CRITERION} % late or missing frames at every "
        f"leg (late: more than {args.allowance:g} ms after the slot's due time, the due times "
        f"anchored on the leg's best-case arrival). Latency: a click probe every 100 ms per "
        f"measured room, timed from the probe packet's send to the mixed packet carrying it "
        f"at the room's listener legs. Janus keeps its default 120 ms prebuffering per "
        f"participant. CPU: utime+stime of the mixer process (all threads) from /proc/PID/stat, "
        f"in % of one core; loopback delivery of what it sends is softirq time on core 0, "
        f"shown apart (\"core 0 softirq\").",
    ]
    for sc in dict.fromkeys(sc for _, sc in by):
        title = "one room, all legs" if sc == "big" else "rooms of 10 legs"
        out += ["", f"**{sc}: {title}**", "", side_by_side(sc, by)]
        for side in ("hub", "janus"):
            if (side, sc) in by:
                note = notes.get((side, sc))
                if note:
                    out.append(f"\n{side}: {note}")
    out += ["", "Details:", "", details([r for rows in by.values() for r in rows])]
    out += ["", "Near its limit a step passes or fails from one run to the next: a single "
            "full garbage collection of the hub process (\"hub GC max ms\"; 20-200 ms seen) "
            "or a few seconds of someone else's load makes a few frames late at every leg, "
            "and 3 late frames in 12 s already fail the 0.5 % criterion. Read the limits as "
            "plus or minus one step."]
    out += ["", "**Capacity under the criterion (max legs on one core):**", ""]
    verdicts = []
    for sc in dict.fromkeys(sc for _, sc in by):
        h = max_legs(by.get(("hub", sc), []))
        j = max_legs(by.get(("janus", sc), []))
        hub_at_max = next((r for r in by.get(("hub", sc), []) if r.legs == h and r.ok), None)
        p99 = hub_at_max.res["lat_p99"] if hub_at_max is not None else None
        under_40 = max((r.legs for r in by.get(("hub", sc), [])
                        if r.ok and r.res["lat_p99"] is not None and r.res["lat_p99"] < 40),
                       default=0)
        ratio = f"{h / j:.2f}" if j else "-"
        hub_last = next((r for r in by.get(("hub", sc), []) if r.legs == h), None)
        jan_last = next((r for r in by.get(("janus", sc), []) if r.legs == j), None)
        per_leg = (f"hub {hub_last.cpu * 100 / h:.3f}%" if hub_last else "hub -") + ", " + (
            f"Janus {jan_last.cpu * 100 / j:.3f}%" if jan_last else "Janus -")
        hit_top = ""
        for side, n in (("hub", h), ("janus", j)):
            rows = by.get((side, sc), [])
            if rows and all(r.ok for r in rows):
                hit_top += f" ({side} never failed: {n} is the last step run, not its limit)"
            failed = next((r for r in rows if not r.ok), None)
            if failed is not None and failed.was_disturbed:
                hit_top += (f" ({side} failed at {failed.legs} legs while others loaded the "
                            "machine: its limit may be higher)")
        out.append(f"- {sc}: hub **{h}** legs, Janus AudioBridge **{j}** legs, ratio hub/Janus "
                   f"**{ratio}**; CPU per leg at those sizes: {per_leg}; hub latency p99 at "
                   f"{h} legs {fmt(p99)} ms (largest passing step with p99 under 40 ms: "
                   f"{under_40} legs).{hit_top}")
        verdicts.append((sc, h, j, p99))
    out += ["", "Targets (at least 500 G.711 legs on one core; added latency p99 under 40 ms; "
            "as many legs per core as Janus AudioBridge or more):", ""]
    for sc, h, j, p99 in verdicts:
        out.append(f"- {sc}: 500 legs {'met' if h >= 500 else 'NOT met'} ({h}); p99 < 40 ms "
                   f"at that size {'met' if p99 is not None and p99 < 40 else 'NOT met'} "
                   f"({fmt(p99)} ms); "
                   f">= Janus {'met' if h >= j and h else 'NOT met'} ({h} vs {j}).")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())

"""Relay capacity on loopback: how many two-party calls one hub process carries.

A hub process (uvloop, one MediaRelay) relays N sessions; this process plays
every phone: 50 packets/s of 172 bytes (G.711 20 ms) in both directions of each
session, phases spread evenly over the 20 ms tick as unsynchronised phones would
be. Each packet carries its send time, so the receiving "phone" measures the
latency through the hub. A direct run (phone to phone, no hub) at the same rate
shows how much of that latency is this generator's own loop.

The generator uses one socket per side for all sessions (like a trunk) so that
its cost stays small next to the hub's, which has its four sockets per session.

    .venv/bin/python bench/bench_relay.py                    # 50,100,200,400 sessions
    .venv/bin/python bench/bench_relay.py --steps 100,800 --seconds 5

Prints a markdown table. Every wait is bounded; a step takes about
warmup + seconds + baseline + 1 s, the default run a little under a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import resource
import select
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

PACKET_SIZE = 172  # 12-byte RTP header + 160 bytes of G.711
PERIOD = 0.020
REPLY_TIMEOUT = 30.0
DRAIN_TIME = 0.3
# RTP header (V=2, PT 0) followed by the send time, at the start of the payload.
STAMPED = struct.Struct("!BBHIId")
STAMP_OFFSET = 12


# -- hub process ---------------------------------------------------------------


def hub_main(conn: Connection, host: str, port_min: int, port_max: int) -> None:
    import uvloop

    uvloop.run(_hub(conn, host, port_min, port_max))


def _cpu_seconds() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def _machine_busy_seconds() -> float:
    """CPU time all cores spent busy since boot, from /proc/stat, in seconds."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


async def _hub(conn: Connection, host: str, port_min: int, port_max: int) -> None:
    from media.ports import PortAllocator
    from media.relay import MediaRelay, Side

    loop = asyncio.get_running_loop()
    relay = MediaRelay(PortAllocator(host, port_min, port_max), check_interval=None)
    done = loop.create_future()
    samples: list[tuple[float, tuple[float, float], float]] = []

    def sample() -> None:
        samples.append((time.monotonic(), _cpu_seconds(), _machine_busy_seconds()))

    def on_command() -> None:
        command, *args = conn.recv()
        if command == "setup":
            count, phone_a, phone_b = args
            ports = []
            for _ in range(count):
                session = relay.create_session()
                session.set_remote(Side.A, *phone_a)
                session.set_remote(Side.B, *phone_b)
                ports.append((session.a.rtp_port, session.b.rtp_port))
            samples.clear()
            conn.send(ports)
        elif command == "measure":
            warmup, seconds = args
            loop.call_later(warmup, sample)
            loop.call_later(warmup + seconds, sample)
        elif command == "teardown":
            totals = {"packets_in": 0, "packets_out": 0, "invalid": 0, "dropped": 0}
            rx_packets = rx_batches = 0
            for session in relay:
                for side in (session.a, session.b):
                    totals["packets_in"] += side.packets_in
                    totals["packets_out"] += side.packets_out
                    totals["invalid"] += side.invalid
                    totals["dropped"] += side.dropped
                    rtp_endpoint = side.endpoints[0]
                    rx_packets += rtp_endpoint.rx_packets
                    rx_batches += rtp_endpoint.rx_batches
                session.close()
            conn.send(
                {
                    **totals,
                    "samples": list(samples),
                    "mean_batch": rx_packets / rx_batches if rx_batches else 0.0,
                }
            )
        elif command == "quit":
            if not done.done():
                done.set_result(None)

    loop.add_reader(conn.fileno(), on_command)
    conn.send("ready")
    try:
        await done
    finally:
        loop.remove_reader(conn.fileno())
        relay.close()


# -- load generator (this process) ------------------------------------------------


@dataclass
class RunResult:
    sent: int
    received: int
    latencies: np.ndarray[Any, np.dtype[np.float64]]
    max_lag: float
    cpu: float
    """Share of a core this generator used during the measured window."""


def _phone_socket(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 * 1024 * 1024)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


def generate(
    phone_a: socket.socket,
    phone_b: socket.socket,
    dest_a: list[tuple[str, int]],
    dest_b: list[tuple[str, int]],
    *,
    warmup: float,
    seconds: float,
) -> RunResult:
    """Play 2 x len(dest_a) phones; phone_a's packets go to dest_a[i], phone_b's to dest_b[i].

    Returns counts over the whole run and latencies of packets sent after the warm-up.
    """
    n = len(dest_a)
    buf = bytearray(PACKET_SIZE)
    pack_into = STAMPED.pack_into
    unpack_stamp = struct.Struct("!d").unpack_from
    send_a, send_b = phone_a.sendto, phone_b.sendto
    recv_a, recv_b = phone_a.recvfrom, phone_b.recvfrom
    phases = [PERIOD * i / n for i in range(n)]
    latencies: list[float] = []
    record = latencies.append
    sent = received = 0
    max_lag = 0.0
    clock = time.monotonic

    start = clock() + 0.05
    measure_from = start + warmup
    stop = start + warmup + seconds
    tick = 0
    index = 0
    due = start
    drain_until = stop + DRAIN_TIME
    cpu_marks: list[tuple[float, float]] = []

    while True:
        now = clock()
        if now >= drain_until:
            break
        if len(cpu_marks) < 2 and now >= (measure_from, stop)[len(cpu_marks)]:
            cpu_marks.append((now, sum(_cpu_seconds())))
        # Send everything that is due (bounded by one tick's worth per pass).
        if due < stop:
            burst = 0
            while due <= now and burst < n:
                lag = now - due
                if lag > max_lag and due >= measure_from:
                    max_lag = lag
                ts = (tick * 160) & 0xFFFFFFFF
                seq = tick & 0xFFFF
                pack_into(buf, 0, 0x80, 0, seq, ts, 2 * index, now)
                try:
                    send_a(buf, dest_a[index])
                    sent += 1
                except BlockingIOError:
                    pass
                pack_into(buf, 0, 0x80, 0, seq, ts, 2 * index + 1, now)
                try:
                    send_b(buf, dest_b[index])
                    sent += 1
                except BlockingIOError:
                    pass
                burst += 1
                index += 1
                if index == n:
                    index = 0
                    tick += 1
                due = start + tick * PERIOD + phases[index]
        # Drain both phones.
        for recv in (recv_a, recv_b):
            for _ in range(256):
                try:
                    data, _addr = recv(2048)
                except BlockingIOError:
                    break
                received += 1
                (stamp,) = unpack_stamp(data, STAMP_OFFSET)
                if stamp >= measure_from:
                    record(clock() - stamp)
        wait = (due if due < stop else drain_until) - clock()
        if wait > 0:
            select.select([phone_a, phone_b], [], [], min(wait, 0.002))

    (t0, cpu0), (t1, cpu1) = cpu_marks
    return RunResult(
        sent, received, np.asarray(latencies, dtype=np.float64), max_lag, (cpu1 - cpu0) / (t1 - t0)
    )


# -- orchestration -----------------------------------------------------------------


def _reply(conn: Connection, what: str) -> Any:
    if not conn.poll(REPLY_TIMEOUT):
        raise TimeoutError(f"hub did not answer {what} within {REPLY_TIMEOUT} s")
    return conn.recv()


def _pct(values: np.ndarray[Any, np.dtype[np.float64]], q: float) -> float:
    return float(np.percentile(values, q) * 1000) if len(values) else float("nan")


def run_step(
    conn: Connection, host: str, n: int, warmup: float, seconds: float, baseline: float
) -> dict[str, Any]:
    phone_a, phone_b = _phone_socket(host), _phone_socket(host)
    try:
        conn.send(("setup", n, phone_a.getsockname(), phone_b.getsockname()))
        ports = _reply(conn, "setup")
        dest_a = [(host, a_port) for a_port, _ in ports]
        dest_b = [(host, b_port) for _, b_port in ports]
        conn.send(("measure", warmup, seconds))
        relayed = generate(phone_a, phone_b, dest_a, dest_b, warmup=warmup, seconds=seconds)
        conn.send(("teardown",))
        hub = _reply(conn, "teardown")

        # The same load phone to phone: the generator's own share of the latency.
        direct = generate(
            phone_a,
            phone_b,
            [phone_b.getsockname()] * n,
            [phone_a.getsockname()] * n,
            warmup=min(warmup, 0.5),
            seconds=baseline,
        )
    finally:
        phone_a.close()
        phone_b.close()

    (t0, (user0, sys0), busy0), (t1, (user1, sys1), busy1) = hub["samples"]
    cpu_share = (user1 - user0 + sys1 - sys0) / (t1 - t0)
    sys_share = (sys1 - sys0) / (t1 - t0)
    # Whatever else ran meanwhile (other test suites on a shared machine) shows here.
    others = (busy1 - busy0) / (t1 - t0) - cpu_share - relayed.cpu
    pps_out = 2 * n / PERIOD
    return {
        "n": n,
        "sent": relayed.sent,
        "received": relayed.received,
        "lost": relayed.sent - relayed.received,
        "cpu": cpu_share,
        "sys": sys_share,
        "generator_cpu": relayed.cpu,
        "others": others,
        "cpu_per_leg": cpu_share / (2 * n),
        "us_per_packet": cpu_share / pps_out * 1e6,
        "mean_batch": hub["mean_batch"],
        "p50": _pct(relayed.latencies, 50),
        "p99": _pct(relayed.latencies, 99),
        "max": float(relayed.latencies.max() * 1000) if len(relayed.latencies) else float("nan"),
        "direct_p50": _pct(direct.latencies, 50),
        "direct_p99": _pct(direct.latencies, 99),
        "lag": relayed.max_lag * 1000,
        "hub": hub,
    }


COLUMNS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("sessions", lambda r: f"{r['n']}"),
    ("legs", lambda r: f"{2 * r['n']}"),
    ("packets relayed/s", lambda r: f"{2 * r['n'] / PERIOD:,.0f}"),
    ("sent", lambda r: f"{r['sent']:,}"),
    ("lost", lambda r: f"{r['lost']:,}"),
    ("loss", lambda r: f"{r['lost'] / max(r['sent'], 1):.3%}"),
    ("hub CPU (of 1 core)", lambda r: f"{r['cpu']:.1%}"),
    ("of which kernel", lambda r: f"{r['sys']:.1%}"),
    ("CPU per leg", lambda r: f"{r['cpu_per_leg']:.3%}"),
    ("CPU us/packet", lambda r: f"{r['us_per_packet']:.1f}"),
    ("mean batch", lambda r: f"{r['mean_batch']:.2f}"),
    ("latency p50 ms", lambda r: f"{r['p50']:.3f}"),
    ("p99 ms", lambda r: f"{r['p99']:.3f}"),
    ("max ms", lambda r: f"{r['max']:.2f}"),
    ("direct p50/p99 ms", lambda r: f"{r['direct_p50']:.3f} / {r['direct_p99']:.3f}"),
    ("generator max lag ms", lambda r: f"{r['lag']:.2f}"),
    ("generator CPU", lambda r: f"{r['generator_cpu']:.0%}"),
    ("other load (cores)", lambda r: f"{max(r['others'], 0.0):.2f}"),
]


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| " + " | ".join(name for name, _ in COLUMNS) + " |",
        "|" + "---:|" * len(COLUMNS),
    ]
    for row in rows:
        lines.append("| " + " | ".join(cell(row) for _, cell in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="50,100,200,400", help="session counts")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured time per step")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--baseline", type=float, default=3.0, help="direct run per step")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--ports",
        default="50000-53999",
        help="hub RTP range; 4 ports per session; busy ports are skipped",
    )
    args = parser.parse_args(argv)
    steps = [int(s) for s in args.steps.split(",")]
    port_min, port_max = (int(p) for p in args.ports.split("-"))
    if 4 * max(steps) > port_max - port_min + 1:
        parser.error(f"--ports {args.ports} too small for {max(steps)} sessions")

    rmem_max = Path("/proc/sys/net/core/rmem_max").read_text().strip()
    from importlib.metadata import version

    print(
        f"Python {platform.python_version()}, uvloop {version('uvloop')}, "
        f"{os.cpu_count()} CPUs, net.core.rmem_max={rmem_max}; "
        f"{PACKET_SIZE}-byte packets, 50 pps each way per session, "
        f"{args.seconds:g} s measured after {args.warmup:g} s warm-up\n",
        flush=True,
    )

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    hub = ctx.Process(
        target=hub_main, args=(child, args.host, port_min, port_max), name="relay-hub"
    )
    hub.start()
    rows = []
    try:
        if _reply(parent, "start") != "ready":
            raise RuntimeError("hub failed to start")
        for n in steps:
            row = run_step(parent, args.host, n, args.warmup, args.seconds, args.baseline)
            rows.append(row)
            print(
                f"  {n} sessions: lost {row['lost']}/{row['sent']}, hub CPU {row['cpu']:.1%}, "
                f"p99 {row['p99']:.2f} ms",
                file=sys.stderr,
                flush=True,
            )
        parent.send(("quit",))
    finally:
        hub.join(5)
        if hub.is_alive():
            hub.terminate()
            hub.join(5)
        parent.close()
        child.close()

    print(markdown_table(rows))
    bad = [r for r in rows if r["hub"]["invalid"] or r["hub"]["dropped"]]
    for r in bad:
        print(
            f"\nstep {r['n']}: hub counted invalid={r['hub']['invalid']} "
            f"dropped={r['hub']['dropped']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

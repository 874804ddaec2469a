"""Load generator of bench/bench_conference.py: every conference leg's phone, in one process.

Started by the bench (pinned with ``taskset -c 1``); driven by JSON lines on stdin,
answers JSON lines on stdout. Pure Python on ``select.epoll``, no asyncio: the
generator must cost little next to the mixer it measures.

Sockets: ``--sockets`` UDP sockets shared by all legs (leg i sends from, and is told
to receive on, socket i % K), like a trunk; each leg's packets come back from the
mixer's own per-leg port, which is how a received packet is told apart.

Sending: every leg sends one 172-byte PCMU packet (12-byte RTP header + 160 codes)
every 20 ms, paced from an absolute clock: tick k of the generator starts at
``t0 + k * 20 ms`` and leg i sends at ``phase_i`` into the tick (phases spread by the
golden ratio over the 20 ms, in 1 ms buckets, so legs added later stay spread).
The payload is low-level noise (about -65 dBFS: a conference of mostly quiet
people, well under any talker threshold and far from clipping even summed over a
thousand legs).

Probes (latency): in each *measured* room, one leg in turn (never a listener)
replaces one frame every 100 ms by a probe: the same noise plus a single click of
+20000 at sample position ``8 + 9 * id`` (``id`` = probe number mod 16). A mixer
that works in 20 ms frames, as both the hub and Janus AudioBridge do at 8 kHz,
keeps a sample's position inside the frame, so the click comes out in one mixed
frame at the same position in every other leg of the room. The generator records
the probe's send time; afterwards it decodes the frames received by the room's
*listener* legs, finds clicks (|x| > 8000, the summed noise stays under 1500),
reads the probe id from the position and takes arrival - send as the latency the
mixer added (packet in to mixed packet out; the generator's own wake-up delay and
loopback transit, tens of microseconds, are included). The id cycle (1.6 s) is far
longer than any latency seen, so a click is never paired with the wrong probe;
a click repeated by packet-loss concealment is only counted once (the first).

Late or missing (per leg, over the measured window): the mixer stamps its packets
with RTP timestamps (160 per frame). Each received packet gets its slot
``(ts - ts_first) / 160`` and an offset ``arrival - slot * 20 ms``; the smallest
offset of the window is the leg's best case, so slot k's due time is
``best + k * 20 ms``. Every slot due inside the window is expected once; it is
*late* if its packet came more than ``allowance`` (default 20 ms, one frame: what a
40 ms receive jitter buffer absorbs) after its due time, *missing* if it never came.
A mixer that stalls and skips ticks keeps its timestamps running slower than the
wall clock, so everything after the stall counts as late: a stall is never hidden.
Per-second counts (50 expected) are reported too.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import select
import socket
import struct
import sys
import time
from array import array
from typing import Any

import numpy as np

PERIOD = 0.020
FRAME = 160
BUCKETS = 20  # 1 ms send buckets inside the tick
PROBE_EVERY = 5  # ticks between probes of a room: 100 ms
PROBE_IDS = 16
PROBE_POS0 = 8
PROBE_STEP = 9
PROBE_AMPLITUDE = 20000
DETECT = 8000
MAX_LATENCY = 1.5
HEADER = struct.Struct("!BBHII")
GOLDEN = (math.sqrt(5) - 1) / 2


def _ulaw_tables() -> tuple[np.ndarray, np.ndarray]:
    """G.711 mu-law decode (256) and encode (65536, by uint16 bit pattern) tables."""
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = ((u & 0x0F) << 3) + 0x84
    t <<= (u & 0x70) >> 4
    dec = np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)
    pcm = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32) >> 2
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(pcm), 8159) + (0x84 >> 2)
    seg = np.searchsorted(np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF]),
                          mag, side="left")
    code = (seg << 4) | ((mag >> (seg + 1)) & 0x0F)
    code = np.where(seg >= 8, 0x7F, code)
    enc = (code ^ mask).astype(np.uint8)
    return dec, enc


ULAW_DEC, ULAW_ENC = _ulaw_tables()


def _encode(pcm: np.ndarray) -> bytes:
    return ULAW_ENC[pcm.astype(np.int16).view(np.uint16)].tobytes()


class Load:
    def __init__(self, sockets: int, rcvbuf: int, noise: int) -> None:
        self.socks: list[socket.socket] = []
        for _ in range(sockets):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, rcvbuf)
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
            self.socks.append(s)
        self.rcvbuf = self.socks[0].getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        rng = np.random.default_rng(1)
        noise_pcm = rng.integers(-noise, noise + 1, size=(64, FRAME))
        self.noise = [_encode(f) for f in noise_pcm]
        self.probes = []
        for pid in range(PROBE_IDS):
            f = noise_pcm[pid].copy()
            f[PROBE_POS0 + PROBE_STEP * pid] = PROBE_AMPLITUDE
            self.probes.append(_encode(f))
        # legs
        self.dest: list[tuple[str, int]] = []
        self.sock_of: list[socket.socket] = []
        self.seq: list[int] = []
        self.ts: list[int] = []
        self.ssrc: list[int] = []
        self.room: list[int] = []
        self.first: list[bool] = []
        self.buckets: list[list[int]] = [[] for _ in range(BUCKETS)]
        self.src_map: dict[int, int] = {}
        self.listeners: set[int] = set()
        self.room_listeners: dict[int, list[int]] = {}
        self.room_probers: dict[int, list[int]] = {}
        self.room_index: dict[int, int] = {}
        # probes of the current tick: leg -> probe id
        self.probe_now: dict[int, int] = {}
        self.sent_probes: list[tuple[int, int, float]] = []  # room, id, send time
        # measurement
        self.recording = False
        self.rec_leg = array("i")
        self.rec_t = array("d")
        self.rec_ts = array("I")
        self.rec_payload: dict[int, list[tuple[float, bytes]]] = {}
        self.lags: list[float] = []
        self.sent = 0
        self.received = 0
        self.foreign = 0

    # -- legs ------------------------------------------------------------------
    def add(self, legs: list[dict[str, Any]]) -> None:
        for spec in legs:
            i = len(self.dest)
            self.dest.append(("127.0.0.1", int(spec["dest"])))
            self.sock_of.append(self.socks[int(spec["sock"])])
            self.seq.append(int.from_bytes(os.urandom(2), "big"))
            self.ts.append(int.from_bytes(os.urandom(4), "big"))
            self.ssrc.append(int.from_bytes(os.urandom(4), "big"))
            room = int(spec["room"])
            self.room.append(room)
            self.first.append(True)
            phase = (i * GOLDEN) % 1.0
            self.buckets[min(int(phase * BUCKETS), BUCKETS - 1)].append(i)
            src = spec.get("src")
            if src:
                self.src_map[int(src)] = i
            role = spec.get("role", "plain")
            if role == "listener":
                self.listeners.add(i)
                self.room_listeners.setdefault(room, []).append(i)
            elif role == "prober":
                self.room_probers.setdefault(room, []).append(i)
            self.room_index.setdefault(room, len(self.room_index))

    def set_source(self, mapping: dict[str, int]) -> None:
        for leg, port in mapping.items():
            self.src_map[int(port)] = int(leg)

    # -- hot loop ----------------------------------------------------------------
    def plan_probes(self, tick: int) -> None:
        self.probe_now = {}
        for room, probers in self.room_probers.items():
            if not probers or room not in self.room_listeners:
                continue
            if (tick + self.room_index[room]) % PROBE_EVERY:
                continue
            n = (tick + self.room_index[room]) // PROBE_EVERY
            self.probe_now[probers[n % len(probers)]] = n % PROBE_IDS

    def send_bucket(self, b: int, tick: int) -> None:
        pack = HEADER.pack
        noise = self.noise
        seqs, tss = self.seq, self.ts
        probe_now = self.probe_now
        for i in self.buckets[b]:
            seq = (seqs[i] + 1) & 0xFFFF
            ts = (tss[i] + FRAME) & 0xFFFFFFFF
            seqs[i] = seq
            tss[i] = ts
            pid = probe_now.get(i)
            payload = noise[(i + tick) & 63] if pid is None else self.probes[pid]
            second = 0
            if self.first[i]:
                second = 0x80
                self.first[i] = False
            try:
                self.sock_of[i].sendto(pack(0x80, second, seq, ts, self.ssrc[i]) + payload,
                                       self.dest[i])
            except OSError:
                continue
            self.sent += 1
            if pid is not None and self.recording:
                self.sent_probes.append((self.room[i], pid, time.monotonic()))

    def drain(self, sock: socket.socket) -> None:
        recvfrom = sock.recvfrom
        src_map = self.src_map
        mono = time.monotonic
        recording = self.recording
        listeners = self.listeners
        for _ in range(256):
            try:
                data, addr = recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            now = mono()
            leg = src_map.get(addr[1])
            if leg is None or len(data) < 12 or data[1] & 0x7F != 0:
                self.foreign += 1
                continue
            self.received += 1
            if recording:
                self.rec_leg.append(leg)
                self.rec_t.append(now)
                self.rec_ts.append(int.from_bytes(data[4:8], "big"))
                if leg in listeners:
                    self.rec_payload.setdefault(leg, []).append((now, data[12:]))

    # -- measurement --------------------------------------------------------------
    def start_recording(self) -> float:
        self.rec_leg = array("i")
        self.rec_t = array("d")
        self.rec_ts = array("I")
        self.rec_payload = {}
        self.sent_probes = []
        self.lags = []
        self.recording = True
        return time.monotonic()

    def results(self, t_start: float, t_end: float, allowance: float) -> dict[str, Any]:
        n = len(self.dest)
        legs = np.frombuffer(self.rec_leg, dtype=np.int32)
        ts_all = np.frombuffer(self.rec_t, dtype=np.float64)
        rtp_all = np.frombuffer(self.rec_ts, dtype=np.uint32).astype(np.int64)
        order = np.argsort(legs, kind="stable")
        legs, ts_all, rtp_all = legs[order], ts_all[order], rtp_all[order]
        bounds = np.searchsorted(legs, np.arange(n + 1))
        window_end = t_end - allowance
        bad = np.zeros(n)
        late_n = np.zeros(n, dtype=np.int64)
        missing_n = np.zeros(n, dtype=np.int64)
        expected_n = np.zeros(n, dtype=np.int64)
        min_per_s = np.zeros(n, dtype=np.int64)
        max_late_ms = np.zeros(n)
        whole = int(math.floor(t_end - t_start))
        all_late: list[np.ndarray] = []
        for i in range(n):
            a, b = bounds[i], bounds[i + 1]
            expected_time = int(round((window_end - t_start) / PERIOD))
            if b == a:
                expected_n[i] = expected_time
                missing_n[i] = expected_time
                bad[i] = 1.0
                continue
            t = ts_all[a:b]
            rtp = rtp_all[a:b]
            rel = ((rtp - rtp[0] + 2**31) % 2**32) - 2**31
            slot = np.round(rel / FRAME).astype(np.int64)
            slot, first_idx = np.unique(slot, return_index=True)
            t = t[first_idx]
            offset = t - slot * PERIOD
            best = offset.min()
            k_lo = math.ceil((t_start - best) / PERIOD - 1e-9)
            k_hi = math.floor((window_end - best) / PERIOD + 1e-9)
            expected = max(k_hi - k_lo + 1, 0)
            inwin = (slot >= k_lo) & (slot <= k_hi)
            lateness = offset[inwin] - best
            all_late.append(lateness)
            late = int((lateness > allowance).sum())
            on_time = int(inwin.sum()) - late
            expected_n[i] = expected
            late_n[i] = late
            missing_n[i] = max(expected - on_time - late, 0)
            bad[i] = (expected - on_time) / expected if expected else 1.0
            max_late_ms[i] = float(lateness.max()) * 1000 if lateness.size else 0.0
            if whole:
                counts = np.histogram(ts_all[a:b], bins=whole,
                                      range=(t_start, t_start + whole))[0]
                min_per_s[i] = int(counts.min())
        worst = int(np.argmax(bad)) if n else 0
        # latency from probes
        probes_by_room: dict[int, list[tuple[int, float]]] = {}
        for room, pid, t_send in self.sent_probes:
            probes_by_room.setdefault(room, []).append((pid, t_send))
        latencies: list[float] = []
        expected_hits = 0
        found_hits = 0
        for room, listeners in self.room_listeners.items():
            probes = probes_by_room.get(room, [])
            usable = [p for p in probes if p[1] < t_end - 0.5]
            for leg in listeners:
                frames = self.rec_payload.get(leg, [])
                expected_hits += len(usable)
                if not frames:
                    continue
                arr_t = np.array([f[0] for f in frames])
                codes = np.frombuffer(b"".join(f[1] for f in frames if len(f[1]) == FRAME),
                                      dtype=np.uint8)
                if codes.size != len(frames) * FRAME:
                    arr_t = np.array([f[0] for f in frames if len(f[1]) == FRAME])
                pcm = np.abs(ULAW_DEC[codes].astype(np.int32)).reshape(-1, FRAME)
                peak = pcm.max(axis=1)
                where = np.flatnonzero(peak > DETECT)
                pos = pcm[where].argmax(axis=1)
                seen: set[tuple[int, float]] = set()
                for fi, p in zip(where.tolist(), pos.tolist(), strict=False):
                    pid = round((p - PROBE_POS0) / PROBE_STEP)
                    if not 0 <= pid < PROBE_IDS or abs(p - PROBE_POS0 - pid * PROBE_STEP) > 2:
                        continue
                    t_arr = float(arr_t[fi])
                    cands = [ts for (q, ts) in probes if q == pid and 0 < t_arr - ts < MAX_LATENCY]
                    if not cands:
                        continue
                    t_send = max(cands)
                    if (pid, t_send) in seen:
                        continue
                    seen.add((pid, t_send))
                    latencies.append(t_arr - t_send)
                    if t_send < t_end - 0.5:
                        found_hits += 1
        lat = np.array(latencies) * 1000
        pooled = np.concatenate(all_late) * 1000 if all_late else np.zeros(1)
        lags = np.array(self.lags) * 1000 if self.lags else np.zeros(1)
        return {
            "legs": n,
            "window": t_end - t_start,
            "packets": int(legs.size),
            "worst_bad_pct": float(bad.max() * 100) if n else 0.0,
            "mean_bad_pct": float(bad.mean() * 100) if n else 0.0,
            "legs_over": int((bad >= 0.005).sum()),
            "worst_leg": worst,
            "worst_late": int(late_n[worst]) if n else 0,
            "worst_missing": int(missing_n[worst]) if n else 0,
            "worst_expected": int(expected_n[worst]) if n else 0,
            "total_late": int(late_n.sum()),
            "total_missing": int(missing_n.sum()),
            "total_expected": int(expected_n.sum()),
            "max_late_ms": float(max_late_ms.max()) if n else 0.0,
            "lateness_p50": float(np.percentile(pooled, 50)),
            "lateness_p99": float(np.percentile(pooled, 99)),
            "lateness_p999": float(np.percentile(pooled, 99.9)),
            "min_frames_per_s": int(min_per_s.min()) if n else 0,
            "lat_n": int(lat.size),
            "lat_p50": float(np.percentile(lat, 50)) if lat.size else None,
            "lat_p99": float(np.percentile(lat, 99)) if lat.size else None,
            "lat_max": float(lat.max()) if lat.size else None,
            "probes_expected": expected_hits,
            "probes_found": found_hits,
            "gen_lag_p99": float(np.percentile(lags, 99)),
            "gen_lag_max": float(lags.max()),
            "sent": self.sent,
            "received": self.received,
            "foreign": self.foreign,
        }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sockets", type=int, default=16)
    parser.add_argument("--rcvbuf", type=int, default=4 * 1024 * 1024)
    parser.add_argument("--noise", type=int, default=20)
    args = parser.parse_args()
    load = Load(args.sockets, args.rcvbuf, args.noise)
    out = sys.stdout

    def reply(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    reply({"ports": [s.getsockname()[1] for s in load.socks], "rcvbuf": load.rcvbuf,
           "pid": os.getpid()})
    ep = select.epoll()
    fd_sock = {s.fileno(): s for s in load.socks}
    for fd in fd_sock:
        ep.register(fd, select.EPOLLIN)
    stdin_fd = sys.stdin.fileno()
    os.set_blocking(stdin_fd, False)
    ep.register(stdin_fd, select.EPOLLIN)
    inbuf = b""
    t0 = time.monotonic()
    tick = 0
    bucket = 0
    load.plan_probes(0)
    measure_until: float | None = None
    measure_start = 0.0
    allowance = 0.020
    running = True
    while running:
        due = t0 + tick * PERIOD + bucket * (PERIOD / BUCKETS)
        now = time.monotonic()
        timeout = due - now
        events = ep.poll(timeout if timeout > 0 else 0, 64)
        for fd, _ in events:
            if fd == stdin_fd:
                try:
                    chunk = os.read(stdin_fd, 1 << 20)
                except BlockingIOError:
                    continue
                if not chunk:
                    running = False
                    break
                inbuf += chunk
                while b"\n" in inbuf:
                    line, inbuf = inbuf.split(b"\n", 1)
                    cmd = json.loads(line)
                    op = cmd["op"]
                    if op == "add":
                        load.add(cmd["legs"])
                        reply({"ok": True, "legs": len(load.dest)})
                    elif op == "sources":
                        load.set_source(cmd["map"])
                        reply({"ok": True})
                    elif op == "measure":
                        allowance = float(cmd.get("allowance", 0.020))
                        measure_start = load.start_recording()
                        measure_until = measure_start + float(cmd["seconds"])
                        reply({"started": measure_start})
                    elif op == "stats":
                        reply({"sent": load.sent, "received": load.received,
                               "foreign": load.foreign, "legs": len(load.dest)})
                    elif op == "quit":
                        running = False
            else:
                load.drain(fd_sock[fd])
        now = time.monotonic()
        while now >= due:
            if load.recording:
                load.lags.append(now - due)
            load.send_bucket(bucket, tick)
            bucket += 1
            if bucket == BUCKETS:
                bucket = 0
                tick += 1
                load.plan_probes(tick)
            due = t0 + tick * PERIOD + bucket * (PERIOD / BUCKETS)
            if now - due > 1.0:  # hopelessly behind (suspended?): re-anchor
                t0 = now - tick * PERIOD
                due = now
        if measure_until is not None and now >= measure_until:
            end = measure_until
            load.recording = False
            measure_until = None
            reply({"window_end": end})
            res = load.results(measure_start, end, allowance)
            reply({"results": res})
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The hub side of bench/bench_conference.py: a MediaEngine in a process of its own.

Started by the bench as ``taskset -c 0 .venv/bin/python bench/conference_hub.py``.
uvloop, one :class:`media.engine.MediaEngine`, bridges at 8 kHz, PCMU legs on their
own RTP/RTCP port pairs (media.ports, 4 MB receive buffers) whose remote is the load
generator. Driven by JSON lines on stdin, answers JSON lines on stdout:

- ``{"op": "add", "legs": [{"room": "r0", "remote": port, "rtcp": port}, ...]}``:
  creates the rooms it does not know yet and one leg per entry; answers the legs'
  RTP ports in the same order;
- ``{"op": "stats"}``: the engine's counters and, per leg, what its jitter buffer
  saw (packets in, concealed, late, dropped): the hub's own view of its input;
- ``{"op": "quit"}``.

Its CPU is read by the bench from /proc/PID/stat, not reported here.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
from typing import Any

# --root DIR imports media/ from DIR instead of this checkout (before/after comparisons).
_ROOT = (sys.argv[sys.argv.index("--root") + 1] if "--root" in sys.argv
         else os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, _ROOT)

from media.codecs import PCMU  # noqa: E402
from media.engine import MediaEngine  # noqa: E402
from media.ports import PortAllocator  # noqa: E402


async def serve(port_min: int, port_max: int, debug: bool = False,
                gc_freeze: bool = False) -> None:
    loop = asyncio.get_running_loop()
    if gc_freeze:
        # What a server can do once it has started: move everything that exists now
        # (modules, classes, functions...) out of the collector's way, so that a full
        # collection only walks what was created since.
        gc.collect()
        gc.freeze()
    engine = MediaEngine(PortAllocator("127.0.0.1", port_min, port_max),
                         advertised_host="127.0.0.1", loop=loop, rtp_timeout=3600)
    done = loop.create_future()
    gc_state = {"start": 0.0, "max": 0.0, "total": 0.0, "count": 0}

    def gc_timer(phase: str, info: dict[str, Any]) -> None:
        # The collector's pauses are pauses of the mixer: count them.
        if phase == "start":
            gc_state["start"] = time.perf_counter()
        else:
            spent = time.perf_counter() - gc_state["start"]
            gc_state["total"] += spent
            gc_state["count"] += 1
            gc_state["max"] = max(gc_state["max"], spent)

    gc.callbacks.append(gc_timer)
    long_ticks: list[tuple[float, float, float]] = []
    if debug:
        # Which long ticks were long because the process was not running (wall >> CPU)?
        from media.engine import MediaBridge

        real_tick = MediaBridge.tick

        def timed_tick(self: MediaBridge, now: float, wall: float) -> None:
            t0, c0 = time.perf_counter(), time.process_time()
            real_tick(self, now, wall)
            spent = time.perf_counter() - t0
            if spent > 0.015:
                long_ticks.append((round(now, 3), round(spent * 1000, 1),
                                   round((time.process_time() - c0) * 1000, 1)))

        MediaBridge.tick = timed_tick  # type: ignore[method-assign]
    legs: list[Any] = []
    inbuf = bytearray()

    def reply(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def handle(cmd: dict[str, Any]) -> None:
        op = cmd["op"]
        if op == "add":
            ports = []
            for spec in cmd["legs"]:
                room = str(spec["room"])
                bridge = engine.bridges.get(room) or engine.create_bridge(room, 8000)
                leg = bridge.add_leg(f"leg{len(legs)}", PCMU, 0, 101, peer="load")
                leg.set_remote("127.0.0.1", int(spec["remote"]), int(spec.get("rtcp") or 0)
                               or None)
                legs.append(leg)
                ports.append(leg.pair.rtp_port)
            reply({"ports": ports})
        elif op == "stats":
            per_leg = []
            for leg in legs:
                j = leg.jitter.stats
                per_leg.append([leg.stats.packets_in, j.lost + j.underruns, j.late, j.dropped,
                                leg.stats.packets_out])
            mix = [b.stats for b in engine.bridges.values()]
            reply({"engine": engine.snapshot(), "legs": per_leg, "gc": dict(gc_state),
                   "long_ticks": long_ticks[-50:],
                   "mix_seconds": sum(m.mix_seconds for m in mix),
                   "mix_ticks": sum(m.ticks for m in mix),
                   "mix_us_max": max((m.max_tick_seconds * 1e6 for m in mix), default=0)})
            for m in mix:
                m.max_tick_seconds = 0.0  # the next answer: the longest tick since this one
            gc_state["max"] = 0.0  # and the longest collection since this one
        elif op == "quit":
            if not done.done():
                done.set_result(None)

    def on_stdin() -> None:
        try:
            chunk = os.read(sys.stdin.fileno(), 1 << 20)
        except BlockingIOError:
            return
        if not chunk:
            if not done.done():
                done.set_result(None)
            return
        inbuf.extend(chunk)
        while b"\n" in inbuf:
            line, _, rest = bytes(inbuf).partition(b"\n")
            inbuf[:] = rest
            try:
                handle(json.loads(line))
            except Exception as exc:  # report, keep serving
                reply({"error": repr(exc)})

    os.set_blocking(sys.stdin.fileno(), False)
    loop.add_reader(sys.stdin.fileno(), on_stdin)
    reply({"ready": True, "pid": os.getpid()})
    try:
        await done
    finally:
        loop.remove_reader(sys.stdin.fileno())
        engine.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port-min", type=int, default=40000)
    parser.add_argument("--port-max", type=int, default=45999)
    parser.add_argument("--root", help="import media/ from this directory")
    parser.add_argument("--gc-freeze", action="store_true",
                        help="gc.freeze() once at start-up, before any leg exists")
    parser.add_argument("--debug-ticks", action="store_true",
                        help="report ticks over 15 ms with their CPU time")
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.port_min, args.port_max, args.debug_ticks, args.gc_freeze))
    return 0


if __name__ == "__main__":
    sys.exit(main())

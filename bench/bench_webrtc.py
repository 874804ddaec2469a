"""CPU per browser (WebRTC) leg on the hub: aiortc's Opus decode + encode, SRTP, our resampling.

The hub side (this process): a MediaEngine and WebRtcSessions; each leg sits in its own
8 kHz bridge with a looping 440 Hz player, so every tick gives it audio to encode.
The browsers (a child process): aiortc peers sending a 1 kHz tone and reading what
they receive. Both report the CPU they spent (all threads: aiortc decodes in a thread
per receiver and encodes in the default executor) over the same steady window.

    .venv/bin/python bench/bench_webrtc.py --legs 1 5 20 --seconds 10

The hub side runs on uvloop, as ``hub serve`` does; its figure includes the engine's
tick (about 2.5 % of a core for one bridge playing a tone, whatever the leg count).

Everything is on 127.0.0.1; ports 27000-27999 (hub) and 28100-28999 (peers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

LOOPBACK = "127.0.0.1"


def _cpu() -> float:
    return time.process_time()


async def _peers_role(count: int, seconds: float) -> None:
    """Child: ``count`` aiortc peers; offers out on stdout, answers in on stdin."""
    from media.ports import PortAllocator
    from tests.peers.webrtc import AiortcPeer

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    ports = PortAllocator(LOOPBACK, 28100, 28999)
    peers = [AiortcPeer(ports, 1000.0) for _ in range(count)]
    offers = [await p.offer() for p in peers]
    print(json.dumps({"offers": offers}), flush=True)
    answers = json.loads(await reader.readline())["answers"]
    for peer, answer in zip(peers, answers, strict=True):
        await peer.accept(answer)
    # Wait for "measure", measure the same window as the hub, report.
    await reader.readline()
    start_cpu, start = _cpu(), time.perf_counter()
    await asyncio.sleep(seconds)
    spent, elapsed = _cpu() - start_cpu, time.perf_counter() - start
    connected = sum(1 for p in peers if p.pc.connectionState == "connected")
    print(json.dumps({"cpu": spent, "elapsed": elapsed, "connected": connected}), flush=True)
    for peer in peers:
        await peer.close()


async def _hub_role(count: int, seconds: float) -> dict[str, float]:
    import numpy as np

    from gateways.webrtc import WebRtcSessions
    from media.engine import MediaEngine
    from media.ports import PortAllocator
    from media.tones import tone

    engine = MediaEngine(PortAllocator(LOOPBACK, 27000, 27999), advertised_host=LOOPBACK)
    sessions = WebRtcSessions(engine, LOOPBACK)
    child = await asyncio.create_subprocess_exec(
        sys.executable, os.path.abspath(__file__), "--role", "peers", "--legs", str(count),
        "--seconds", str(seconds), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, cwd=ROOT)
    assert child.stdin is not None and child.stdout is not None
    offers = json.loads(await child.stdout.readline())["offers"]
    answers = []
    for k, offer in enumerate(offers):
        bridge = engine.create_bridge(f"b{k}", rate=8000)
        bridge.play(tone(440.0, 1000, 8000), loop=True)
        answers.append(await sessions.offer(offer, bridge=bridge, leg_id=f"w{k}"))
    child.stdin.write((json.dumps({"answers": answers}) + "\n").encode())
    await child.stdin.drain()
    await asyncio.sleep(2.0)  # ICE, DTLS, jitter buffers
    legs = [b.legs[f"w{k}"] for k, b in enumerate(engine.bridges.values())]
    child.stdin.write(b"measure\n")
    await child.stdin.drain()
    before = [leg.snapshot()["frames_in"] for leg in legs]
    start_cpu, start = _cpu(), time.perf_counter()
    await asyncio.sleep(seconds)
    spent, elapsed = _cpu() - start_cpu, time.perf_counter() - start
    frames = [leg.snapshot()["frames_in"] - b for leg, b in zip(legs, before, strict=True)]
    peer_report = json.loads(await child.stdout.readline())
    await child.wait()
    await sessions.aclose()
    engine.close()
    return {
        "legs": count,
        "connected": float(peer_report["connected"]),
        "hub_cpu_pct_per_leg": 100 * spent / elapsed / count,
        "peer_cpu_pct_per_leg": 100 * peer_report["cpu"] / peer_report["elapsed"] / count,
        "frames_in_per_s": float(np.mean(frames)) / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--legs", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--role", choices=("hub", "peers"), default="hub")
    args = parser.parse_args()
    if args.role == "peers":
        asyncio.run(_peers_role(args.legs[0], args.seconds))
        return
    print("| legs | connected | hub CPU per leg | peer CPU per leg | frames in/s per leg |")
    print("|---|---|---|---|---|")
    import uvloop  # what `hub serve` runs on

    for count in args.legs:
        row = uvloop.run(_hub_role(count, args.seconds))
        print(f"| {count} | {row['connected']:.0f} | {row['hub_cpu_pct_per_leg']:.2f} % "
              f"| {row['peer_cpu_pct_per_leg']:.2f} % | {row['frames_in_per_s']:.1f} |",
              flush=True)


if __name__ == "__main__":
    main()

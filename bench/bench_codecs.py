"""Cost of the media building blocks per 20 ms frame: codecs, batch G.711, resampling, talkers.

What a mixer tick pays per leg (encode, decode, conceal one frame) and per bridge
(the batch G.711 tables over 500 legs, resampling 500 legs in one call, talker
detection over 500 legs). Single-threaded figures: run it on an idle machine.

    .venv/bin/python bench/bench_codecs.py              # about 10 s
    .venv/bin/python bench/bench_codecs.py --frames 200 # quicker, noisier

Prints markdown tables: the median of several timed runs, in microseconds.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

# BLAS threads fight the event loop for cores and make small products slower;
# the hub runs single-threaded BLAS too. Set before numpy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from media.codecs import (  # noqa: E402
    G722,
    OPUS,
    PCMA,
    PCMU,
    CodecSpec,
    Decoder,
    Encoder,
    alaw_decode,
    alaw_encode,
    new_decoder,
    new_encoder,
    ulaw_decode,
    ulaw_encode,
)
from media.resample import Resampler  # noqa: E402
from media.talker import TalkerDetector  # noqa: E402

REPEATS = 5
Pcm = npt.NDArray[np.int16]


def per_call_us(fn: Callable[[int], object], calls: int) -> float:
    """Median over REPEATS runs of ``calls`` calls, in microseconds per call."""
    fn(0)  # warm up (first-call allocations, lazy imports)
    runs = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        for i in range(calls):
            fn(i)
        runs.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(runs)


def speech_like(rate: int, samples: int) -> Pcm:
    """A few harmonics plus noise: codecs work harder on this than on a pure tone."""
    rng = np.random.default_rng(1)
    t = np.arange(samples) / rate
    wave = sum(
        np.sin(2 * np.pi * f * t) / (k + 1) for k, f in enumerate((180, 360, 720, 1440, 2500))
    )
    wave = 6000 * np.asarray(wave) + rng.normal(0, 300, samples)
    return np.clip(wave, -32768, 32767).astype(np.int16)


def codec_rows(frames: int) -> list[str]:
    rows = []
    for spec in (PCMU, PCMA, G722, OPUS):
        n = spec.samples_per_frame()
        signal = speech_like(spec.sample_rate, n * frames)
        chunks = [signal[i * n : (i + 1) * n] for i in range(frames)]
        encoder = new_encoder(spec)
        payloads = [encoder.encode(chunk) for chunk in chunks]
        encoder = new_encoder(spec)
        decoder = new_decoder(spec)

        def encode(i: int, e: Encoder = encoder, c: list[Pcm] = chunks) -> object:
            return e.encode(c[i % len(c)])

        def decode(i: int, d: Decoder = decoder, p: list[bytes] = payloads) -> object:
            return d.decode(p[i % len(p)])

        enc = per_call_us(encode, frames)
        dec = per_call_us(decode, frames)
        # Concealment: a decode then a lost frame, every time, so each conceal is the
        # first of a burst (the costly one: pitch search) and each decode a recovery.
        plc_decoder = new_decoder(spec)

        def pair(i: int, d: Decoder = plc_decoder, p: list[bytes] = payloads, n: int = n) -> object:
            d.decode(p[i % len(p)])
            return d.conceal(n)

        plc = per_call_us(pair, frames) - dec
        size = statistics.mean(len(p) for p in payloads)
        cells = (
            name(spec),
            spec.sample_rate,
            f"{size:.0f}",
            f"{enc:.1f}",
            f"{dec:.1f}",
            f"{plc:.1f}",
        )
        rows.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return rows


def name(spec: CodecSpec) -> str:
    return {"PCMU": "PCMU (numpy)", "PCMA": "PCMA (numpy)", "G722": "G.722 (PyAV)"}.get(
        spec.name, "Opus (PyAV libopus)"
    )


def batch_rows(legs: int) -> list[str]:
    rng = np.random.default_rng(2)
    pcm = rng.integers(-20000, 20000, size=(legs, 160), dtype=np.int16)
    codes = ulaw_encode(pcm)
    pcm_out = np.empty((legs, 160), dtype=np.int16)
    code_out = np.empty((legs, 160), dtype=np.uint8)
    mix32 = pcm.astype(np.int32) * 2  # a mixer's int32 sums, clipped by the encoder
    rows = []
    for label, fn in (
        ("μ-law decode", lambda i: ulaw_decode(codes, out=pcm_out)),
        ("μ-law encode", lambda i: ulaw_encode(pcm, out=code_out)),
        ("A-law decode", lambda i: alaw_decode(codes, out=pcm_out)),
        ("A-law encode", lambda i: alaw_encode(pcm, out=code_out)),
        ("μ-law encode from int32 (clip)", lambda i: ulaw_encode(mix32, out=code_out)),
    ):
        total = per_call_us(fn, 200)
        rows.append(f"| {label} | {legs} x 160 | {total:.0f} | {total / legs * 1000:.0f} |")
    return rows


def resample_rows(legs: int) -> list[str]:
    rows = []
    for src, dst in (
        (8000, 16000),
        (16000, 8000),
        (8000, 48000),
        (48000, 8000),
        (16000, 48000),
        (48000, 16000),
    ):
        n = src // 50
        frame = speech_like(src, n)
        one = Resampler(src, dst)
        many = Resampler(src, dst, rows=legs)
        block = np.tile(frame, (legs, 1))

        def single_leg(i: int, r: Resampler = one, x: Pcm = frame) -> object:
            return r.process(x)

        def all_legs(i: int, r: Resampler = many, x: Pcm = block) -> object:
            return r.process(x)

        single = per_call_us(single_leg, 500)
        batch = per_call_us(all_legs, 10)
        ratio = f"{src // 1000}k -> {dst // 1000}k"
        rows.append(f"| {ratio} | {single:.1f} | {batch:.0f} | {batch / legs:.1f} |")
    return rows


def talker_row(legs: int) -> str:
    detector = TalkerDetector(legs)
    frames = speech_like(8000, 160 * legs).reshape(legs, 160)
    active = np.ones(legs, dtype=bool)
    cost = per_call_us(lambda i: detector.update(frames, active, i * 0.02), 200)
    return f"| talker detection | {legs} x 160 | {cost:.0f} | {cost / legs * 1000:.0f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000, help="frames per codec timing run")
    parser.add_argument("--legs", type=int, default=500, help="legs in the batch timings")
    args = parser.parse_args()

    import av

    print(
        f"# Media building blocks, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, numpy {np.__version__}, PyAV {av.__version__}"
    )
    print()
    print("## Codecs: microseconds per 20 ms frame, one leg")
    print()
    print("| codec | PCM rate | payload bytes | encode µs | decode µs | conceal µs |")
    print("|---|---|---|---|---|---|")
    for row in codec_rows(args.frames):
        print(row)
    print()
    print(f"## Batch G.711 over a bridge: one call per tick for {args.legs} legs")
    print()
    print("| operation | shape | µs per call | ns per leg |")
    print("|---|---|---|---|")
    for row in batch_rows(args.legs):
        print(row)
    print(talker_row(args.legs))
    print()
    print(f"## Resampling a 20 ms frame: one leg, and {args.legs} legs in one call")
    print()
    print("| ratio | one leg µs | all legs µs | µs per leg |")
    print("|---|---|---|---|")
    for row in resample_rows(args.legs):
        print(row)


if __name__ == "__main__":
    main()

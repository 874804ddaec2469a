"""kill -9 of `hub serve` in the middle of a recorded room: every closed segment plays.

A real hub process records a room of two baresip phones in 2 s segments; it is
killed with SIGKILL; the next `hub serve` recovers the index; the export holds all
that was recorded bar (at most) the last second of the open segment.
"""

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.peers import scaled
from tests.peers.audio import read_wav
from tests.peers.baresip import PhoneFactory
from tests.peers.ports import free_tcp_port, free_udp_port

pytestmark = pytest.mark.peers

HUB = [sys.executable, "-m", "hub"]


async def _serve(data: Path, sip: int, http: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        *HUB, "serve", "--data-dir", str(data), "--bind", "127.0.0.1", "--sip-port", str(sip),
        "--http-port", str(http), "--rtp-ports", "27000-27999",
        "--recording-segment-seconds", "2",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    while True:
        line = await asyncio.wait_for(proc.stderr.readline(), timeout=scaled(15))
        assert line, "hub serve exited before it was ready"
        if line.startswith(b"hub: SIP"):
            return proc


def _hub(*args: str, data: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HUB, *args, "--data-dir", str(data)], capture_output=True,
                          text=True, timeout=60, check=False)


async def test_kill_9_mid_call_keeps_every_closed_segment(
        tmp_path: Path, phone_factory: PhoneFactory) -> None:
    data = tmp_path / "data"
    for name in ("alice", "bob"):
        assert _hub("user", "add", name, "--password", f"pw-{name}", data=data).returncode == 0
    assert _hub("room", "add", "900", "--record", data=data).returncode == 0
    sip, http = free_udp_port(), free_tcp_port()
    proc = await _serve(data, sip, http)
    try:
        phones = []
        for name, hz in (("alice", 440.0), ("bob", 1000.0)):
            phone = await phone_factory(name, password=f"pw-{name}", registrar=("127.0.0.1", sip),
                                        tone_hz=hz)
            await phone.wait_registered()
            await phone.dial(f"sip:900@127.0.0.1:{sip}")
            await phone.wait_event("CALL_ESTABLISHED", timeout=scaled(10))
            phones.append(phone)
        recording_started = time.monotonic()
        await asyncio.sleep(5.5)
        os.kill(proc.pid, signal.SIGKILL)
        killed_after = time.monotonic() - recording_started
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    segments = sorted((data / "recordings").glob("*/*.opus"))
    assert len(segments) >= 3, segments
    closed = segments[:-1]
    for segment in closed:
        # Decoded by ffmpeg itself, not by our code.
        decoded = subprocess.run(
            ["ffmpeg", "-v", "error", "-i", str(segment), "-f", "s16le", "-ac", "1", "-ar",
             "8000", "-"], capture_output=True, timeout=60, check=True)
        seconds = len(decoded.stdout) / 2 / 8000
        assert abs(seconds - 2.0) < 0.1, (segment, seconds, decoded.stderr)

    # The next start recovers the index; the export is one playable file.
    proc = await _serve(data, free_udp_port(), free_tcp_port())
    proc.send_signal(signal.SIGTERM)
    await proc.wait()
    listed = _hub("recording", "list", data=data)
    assert listed.returncode == 0 and "interrupted" in listed.stdout, listed.stdout
    recording_id = listed.stdout.split("\n")[1].split()[0]
    out = tmp_path / "export.wav"
    exported = _hub("recording", "export", recording_id, str(out), data=data)
    assert exported.returncode == 0, exported.stderr
    rate, samples = read_wav(out)
    duration = samples.size / rate
    assert duration >= killed_after - 1.5, (duration, killed_after)
    window = np.hanning(samples.size)
    spectrum = np.abs(np.fft.rfft(samples * window)) * 2 / window.sum()
    bins = np.fft.rfftfreq(samples.size, 1 / rate)
    for hz in (440.0, 1000.0):
        assert spectrum[np.abs(bins - hz) < 20].max() > 0.02, hz

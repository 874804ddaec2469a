"""A minimal RTP endpoint for engine tests: sends a tone as PCMU, keeps what it hears.

Not a SIP phone (baresip is, for the SIP tests): this one lets a test talk straight
to a media engine's ports, with exact control of what is sent.
"""

import asyncio
import socket
import struct

import numpy as np

from media.codecs import ulaw_decode, ulaw_encode


class RtpPhone:
    def __init__(self, tone_hz: float | None, *, rate: int = 8000, amplitude: float = 8000) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.tone_hz = tone_hz
        self.rate = rate
        self.amplitude = amplitude
        self.heard: list[bytes] = []
        self.received_packets: list[bytes] = []
        self.dest: tuple[str, int] | None = None
        self._seq = 1000
        self._ts = 0
        self._n = 0
        self._task: asyncio.Task[None] | None = None
        self.sending = True
        loop = asyncio.get_running_loop()
        loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        while True:
            try:
                data = self.sock.recv(2048)
            except BlockingIOError:
                return
            self.received_packets.append(data)
            if len(data) > 12 and data[1] & 0x7F == 0:
                self.heard.append(data[12:])

    def frame(self) -> bytes:
        t = (np.arange(160) + self._n * 160) / self.rate
        self._n += 1
        if self.tone_hz is None:
            pcm = np.zeros(160, dtype=np.int16)
        else:
            pcm = (self.amplitude * np.sin(2 * np.pi * self.tone_hz * t)).astype(np.int16)
        return ulaw_encode(pcm).tobytes()

    def send_raw(self, data: bytes) -> None:
        assert self.dest is not None
        self.sock.sendto(data, self.dest)

    def packet(self, payload: bytes, pt: int = 0, ssrc: int = 0x1234,
               timestamp: int | None = None, marker: bool = False) -> bytes:
        self._seq = (self._seq + 1) & 0xFFFF
        if timestamp is None:
            self._ts = (self._ts + 160) & 0xFFFFFFFF
            timestamp = self._ts
        second = pt | (0x80 if marker else 0)
        return struct.pack("!BBHII", 0x80, second, self._seq, timestamp, ssrc) + payload

    async def run(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        k = 0
        while loop.time() - start < seconds:
            if self.sending and self.dest is not None:
                self.send_raw(self.packet(self.frame()))
            k += 1
            await asyncio.sleep(max(0.0, start + k * 0.02 - loop.time()))

    def start(self, seconds: float) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(seconds))

    async def wait(self) -> None:
        if self._task is not None:
            await self._task

    def clear(self) -> None:
        self.heard.clear()

    def pcm(self) -> np.ndarray:
        if not self.heard:
            return np.zeros(0, dtype=np.int16)
        return ulaw_decode(np.frombuffer(b"".join(self.heard), dtype=np.uint8))

    def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()  # a sender still running would write to a closed socket
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()


def tone_levels(pcm: np.ndarray, freqs: list[float], rate: int = 8000) -> dict[float, float]:
    """Relative spectral magnitude at each frequency (peak-normalised, 0..1)."""
    if pcm.size < rate // 4:
        return {f: 0.0 for f in freqs}
    x = pcm.astype(np.float64) * np.hanning(pcm.size)
    spectrum = np.abs(np.fft.rfft(x))
    bins = np.fft.rfftfreq(pcm.size, 1 / rate)
    peak = spectrum.max() or 1.0
    return {f: float(spectrum[np.abs(bins - f) < 15].max() / peak) for f in freqs}

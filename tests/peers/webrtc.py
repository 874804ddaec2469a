"""A WebRTC peer for tests: an aiortc peer connection that sends a tone, keeps what it hears.

It stands in for a browser where a test wants exact control (the tone, the timing); the
Chromium test uses the real thing. Its ICE agent has no STUN server and one host
candidate on 127.0.0.1 (``HostCandidates``, its sockets from its own port range), so
nothing it sends leaves loopback.
"""

import asyncio
import fractions

import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, MediaStreamTrack
from av import AudioFrame

from media.ports import PortAllocator
from media.webrtc import HostCandidates
from tests.peers import LOOPBACK

RATE = 48000
SAMPLES = 960


class ToneTrack(AudioStreamTrack):
    """A sine at ``hz``, 20 ms frames at 48 kHz mono, paced from an absolute start."""

    def __init__(self, hz: float, amplitude: float = 8000.0) -> None:
        super().__init__()
        self.hz = hz
        self.amplitude = amplitude
        self._n = 0
        self._start: float | None = None

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        else:
            await asyncio.sleep(max(0.0, self._start + self._n * SAMPLES / RATE - loop.time()))
        t = (np.arange(SAMPLES) + self._n * SAMPLES) / RATE
        pcm = (self.amplitude * np.sin(2 * np.pi * self.hz * t)).astype(np.int16)
        frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._n * SAMPLES
        frame.time_base = fractions.Fraction(1, RATE)
        self._n += 1
        return frame


class AiortcPeer:
    """Offers audio (a tone) and records the audio it receives as 48 kHz mono."""

    def __init__(self, ports: PortAllocator, tone_hz: float) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.candidates = HostCandidates(ports, LOOPBACK)
        self.track = ToneTrack(tone_hz)
        self.heard: list[np.ndarray] = []
        self.recording = False
        self._reader: asyncio.Task[None] | None = None
        self.pc.addTrack(self.track)
        self.pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._reader = asyncio.get_running_loop().create_task(self._read(track))

    async def _read(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                assert isinstance(frame, AudioFrame)
                if self.recording:
                    pcm = frame.to_ndarray().reshape(-1, len(frame.layout.channels))
                    self.heard.append(pcm.mean(axis=1))
        except MediaStreamError:
            return

    async def offer(self) -> str:
        self.candidates.apply(self.pc)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def accept(self, answer: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    def pcm(self) -> np.ndarray:
        return np.concatenate(self.heard) if self.heard else np.zeros(0)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        self.track.stop()
        await self.pc.close()
        self.candidates.release()


def dominant_hz(pcm: np.ndarray, rate: int) -> float:
    """The strongest frequency (Hz) of a signal, DC excluded; 0.0 for near silence."""
    x = np.asarray(pcm, dtype=np.float64)
    if x.size < rate // 10 or np.sqrt(np.mean((x - x.mean()) ** 2)) < 30:
        return 0.0
    spectrum = np.abs(np.fft.rfft((x - x.mean()) * np.hanning(x.size)))
    spectrum[0] = 0.0
    return float(np.fft.rfftfreq(x.size, 1 / rate)[int(np.argmax(spectrum))])

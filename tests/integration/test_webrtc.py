"""Browsers' audio in bridges: WebRTC (aiortc on the hub, Opus) meets an RTP phone.

(a) an aiortc peer sending 1 kHz and a PCMU RtpPhone sending 440 Hz share a bridge:
    each must hear the other's tone;
(b) the same with a real browser: headless Chromium (its fake microphone beeps) on a
    test page that posts its offer to a test endpoint calling ``WebRtcSessions.offer``
    and reports the dominant frequency of what it plays (a WebAudio analyser).

Everything binds and sends on 127.0.0.1: both ends' ICE candidates are loopback only
(the hub's by ``HostCandidates``, the browser's offer filtered by the test endpoint).
"""

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from aiortc import RTCRtpSender

from gateways.webrtc import WebRtcError, WebRtcLegChanged, WebRtcSessions
from media.codecs import PCMU
from media.engine import MediaBridge, MediaEngine
from media.ports import PortAllocator
from media.webrtc import WebRtcLeg
from tests.peers import LOOPBACK, scaled
from tests.peers.rtp_phone import RtpPhone
from tests.peers.webrtc import AiortcPeer, dominant_hz

HUB_PORTS = (27000, 27499)
PEER_PORTS = (27500, 27999)


@pytest_asyncio.fixture
async def engine() -> AsyncIterator[MediaEngine]:
    eng = MediaEngine(PortAllocator(LOOPBACK, *HUB_PORTS), advertised_host=LOOPBACK)
    yield eng
    eng.close()


@pytest_asyncio.fixture
async def sessions(engine: MediaEngine) -> AsyncIterator[WebRtcSessions]:
    webrtc = WebRtcSessions(engine, LOOPBACK)
    webrtc.events = []  # type: ignore[attr-defined]
    webrtc.listeners.append(webrtc.events.append)  # type: ignore[attr-defined]
    yield webrtc
    await webrtc.aclose()


def _phone_in(bridge: MediaBridge, hz: float) -> RtpPhone:
    phone = RtpPhone(hz)
    leg = bridge.add_leg("phone", PCMU, 0, 101, peer="phone")
    leg.set_remote(LOOPBACK, phone.port)
    phone.dest = leg.local_address
    return phone


async def _until(predicate: Any, seconds: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + scaled(seconds)
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def _states(webrtc: WebRtcSessions, leg_id: str) -> list[str]:
    events: list[WebRtcLegChanged] = webrtc.events  # type: ignore[attr-defined]
    return [e.state for e in events if e.leg_id == leg_id]


# --- (a) aiortc peer <-> RTP phone ----------------------------------------------------------


async def test_aiortc_peer_and_rtp_phone_hear_each_other(
        engine: MediaEngine, sessions: WebRtcSessions) -> None:
    bridge = engine.create_bridge("call", rate=8000)
    phone = _phone_in(bridge, 440.0)
    peer = AiortcPeer(PortAllocator(LOOPBACK, *PEER_PORTS), 1000.0)
    try:
        offer = await peer.offer()
        assert "127.0.0.1" in offer
        answer = await sessions.offer(offer, bridge=bridge, leg_id="browser", peer="aiortc")
        # The hub's one candidate: the advertised address, a port of the hub's RTP range.
        candidates = [line for line in answer.splitlines() if line.startswith("a=candidate:")]
        assert len(candidates) == 1, candidates
        fields = candidates[0].split()
        assert fields[4] == LOOPBACK and HUB_PORTS[0] <= int(fields[5]) <= HUB_PORTS[1]
        assert "typ host" in candidates[0]
        assert "opus/48000/2" in answer and "PCMU" not in answer
        await peer.accept(answer)
        await _until(lambda: "connected" in _states(sessions, "browser"), 10, "ICE/DTLS")
        assert isinstance(bridge.legs["browser"], WebRtcLeg)

        phone.start(scaled(3.0))
        await asyncio.sleep(1.0)  # jitter buffers fill, the tone reaches both sides
        phone.clear()
        peer.recording = True
        await phone.wait()
        peer.recording = False

        heard_by_phone = phone.pcm()
        assert heard_by_phone.size >= 8000, heard_by_phone.size
        assert abs(dominant_hz(heard_by_phone, 8000) - 1000.0) < 10
        heard_by_peer = peer.pcm()
        assert heard_by_peer.size >= 48000, heard_by_peer.size
        assert abs(dominant_hz(heard_by_peer, 48000) - 440.0) < 10

        snap = bridge.legs["browser"].snapshot()
        assert snap["kind"] == "webrtc" and snap["codec"] == "opus"
        assert snap["state"] == "connected"
        assert snap["frames_in"] > 50 and snap["frames_out"] > 50, snap
    finally:
        phone.close()
        await peer.close()

    # The browser hung up: its leg leaves the bridge, the hub's port goes back.
    await _until(lambda: "browser" not in bridge.legs, 10, "the leg to leave")
    await _until(lambda: not sessions.sessions, 10, "the session to close")
    assert _states(sessions, "browser")[-1] == "closed"
    assert engine.ports.in_use == 1  # the phone's pair only


async def test_leg_leaving_the_bridge_closes_the_peer_connection(
        engine: MediaEngine, sessions: WebRtcSessions) -> None:
    bridge = engine.create_bridge("call", rate=16000)
    peer = AiortcPeer(PortAllocator(LOOPBACK, *PEER_PORTS), 1000.0)
    try:
        answer = await sessions.offer(await peer.offer(), bridge=bridge, leg_id="b1")
        await peer.accept(answer)
        await _until(lambda: "connected" in _states(sessions, "b1"), 10, "ICE/DTLS")
        bridge.remove_leg("b1")  # kicked, or the call ended
        await _until(lambda: not sessions.sessions, 10, "the session to close")
        await _until(lambda: peer.pc.connectionState == "closed", 10,
                     "the peer to see the hang-up")
        assert engine.ports.in_use == 0
    finally:
        await peer.close()


async def test_bad_offers_are_refused_and_leave_nothing(
        engine: MediaEngine, sessions: WebRtcSessions) -> None:
    bridge = engine.create_bridge("call")
    peer = AiortcPeer(PortAllocator(LOOPBACK, *PEER_PORTS), 1000.0)
    try:
        # A peer that offers G.711 only: the hub speaks Opus to browsers.
        pcmu = [c for c in RTCRtpSender.getCapabilities("audio").codecs
                if c.mimeType == "audio/PCMU"]
        peer.pc.getTransceivers()[0].setCodecPreferences(pcmu)
        no_opus = await peer.offer()
    finally:
        await peer.close()
    for bad, message in (("", "empty"), ("v=0\r\nnonsense", "one audio stream"),
                         ("x" * 70000, "larger than"), (no_opus, "unusable offer")):
        with pytest.raises(WebRtcError, match=message):
            await sessions.offer(bad, bridge=bridge, leg_id="b")
    assert not bridge.legs and not sessions.sessions and engine.ports.in_use == 0


# --- (b) a real browser ------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]

PAGE = """<!doctype html>
<html><body><script>
window.report = {state: "new", peaks: [], levels: []};
async function start() {
  const mic = await navigator.mediaDevices.getUserMedia({audio: true, video: false});
  const pc = new RTCPeerConnection({iceServers: []});
  window.pc = pc;
  mic.getTracks().forEach(t => pc.addTrack(t, mic));
  pc.onconnectionstatechange = () => { window.report.state = pc.connectionState; };
  pc.ontrack = (ev) => {
    const stream = ev.streams[0] || new MediaStream([ev.track]);
    // Chromium only decodes a remote WebRTC stream that something plays.
    const audio = new Audio(); audio.muted = true; audio.srcObject = stream; audio.play();
    const ctx = new AudioContext();
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 8192;
    ctx.createMediaStreamSource(stream).connect(analyser);
    const bins = new Float32Array(analyser.frequencyBinCount);
    setInterval(() => {
      analyser.getFloatFrequencyData(bins);
      let best = 0;
      for (let i = 1; i < bins.length; i++) if (bins[i] > bins[best]) best = i;
      window.report.peaks.push(best * ctx.sampleRate / analyser.fftSize);
      window.report.levels.push(bins[best]);
    }, 100);
  };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(resolve => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.onicegatheringstatechange = () => {
      if (pc.iceGatheringState === "complete") resolve();
    };
  });
  const reply = await fetch("/offer", {method: "POST", body: pc.localDescription.sdp});
  if (!reply.ok) throw new Error("offer refused: " + await reply.text());
  await pc.setRemoteDescription({type: "answer", sdp: await reply.text()});
  return "offered";
}
</script></body></html>
"""


def _loopback_only(sdp: str) -> str:
    """The browser's offer with its candidates on other interfaces removed.

    Chromium offers every interface (with the loopback flag, 127.0.0.1 too); the hub
    would otherwise send connectivity checks to this machine's other addresses.
    """
    lines = [line for line in sdp.splitlines()
             if not line.startswith("a=candidate:") or line.split()[4] == LOOPBACK]
    return "\r\n".join(lines) + "\r\n"


async def _serve_page(handle_offer: Any) -> tuple[asyncio.Server, int]:
    """A tiny HTTP/1.1 server on 127.0.0.1: GET / gives PAGE, POST /offer the answer."""

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            request_line, *header_lines = head.split("\r\n")
            method, path, _ = request_line.split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in
                       (h.partition(":") for h in header_lines if h)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            status, kind, payload = "404 Not Found", "text/plain", b"not found"
            if method == "GET" and path == "/":
                status, kind, payload = "200 OK", "text/html", PAGE.encode()
            elif method == "POST" and path == "/offer":
                try:
                    answer = await handle_offer(body.decode())
                    status, kind, payload = "200 OK", "application/sdp", answer.encode()
                except WebRtcError as exc:
                    status, payload = "422 Unprocessable Content", str(exc).encode()
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n"
                         f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
                         .encode() + payload)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(client, LOOPBACK, 0)
    return server, server.sockets[0].getsockname()[1]


# Chromium's fake microphone: a 20 ms beep of 400 Hz every 500 ms
# (media/audio/fake_audio_input_stream.cc: kBeepFrequency, kAutomaticBeepIntervalInMs).
FAKE_MIC_HZ = 400.0
FAKE_MIC_PERIOD_S = 0.5


def _beeps(pcm: np.ndarray, rate: int = 8000) -> tuple[float, float]:
    """(median seconds between beep onsets, dominant frequency of the loud frames)."""
    frames = pcm[: pcm.size // 160 * 160].reshape(-1, 160).astype(np.float64)
    loud = np.sqrt((frames**2).mean(axis=1)) > 300
    onsets = np.flatnonzero(loud[1:] & ~loud[:-1]) + 1
    if len(onsets) < 3:
        return 0.0, 0.0
    period = float(np.median(np.diff(onsets))) * 160 / rate
    return period, dominant_hz(frames[loud].reshape(-1), rate)


async def test_chromium_talks_with_an_rtp_phone(
        engine: MediaEngine, sessions: WebRtcSessions, monkeypatch: pytest.MonkeyPatch) -> None:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium; make setup)")
    playwright_api = pytest.importorskip("playwright.async_api")
    monkeypatch.setenv("PLAYWRIGHT_BROWSERS_PATH", "/nonexistent")  # never download one

    bridge = engine.create_bridge("call", rate=8000)
    phone = _phone_in(bridge, 440.0)
    offers: list[str] = []

    async def handle_offer(sdp: str) -> str:
        offers.append(sdp)
        return await sessions.offer(_loopback_only(sdp), bridge=bridge, leg_id="chromium",
                                    peer="chromium")

    server, port = await _serve_page(handle_offer)
    try:
        async with playwright_api.async_playwright() as p:
            try:
                browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                  args=CHROMIUM_ARGS)
            except Exception as exc:  # the one reason to skip: no usable browser here
                pytest.skip(f"chromium cannot be launched here: {exc}")
            try:
                page = await browser.new_page()
                page.on("console", lambda msg: print("page:", msg.text))
                await page.goto(f"http://{LOOPBACK}:{port}/")
                phone.start(scaled(6.0))
                assert await page.evaluate("start()") == "offered"
                await _until(lambda: "connected" in _states(sessions, "chromium"), 15,
                             "Chromium's ICE/DTLS")
                await asyncio.sleep(1.5)  # the beep and the tone reach both sides
                phone.clear()
                await page.evaluate("window.report.peaks = []; window.report.levels = []")
                await asyncio.sleep(scaled(3.0))
                report = json.loads(await page.evaluate("JSON.stringify(window.report)"))
                await page.evaluate("window.pc.close()")  # the dispatcher hangs up
                await _until(lambda: "chromium" not in bridge.legs, 10,
                             "the browser's leg to leave")
            finally:
                await browser.close()
    finally:
        server.close()
        await server.wait_closed()
        await phone.wait()
        phone.close()

    assert offers and "opus" in offers[0].lower()
    assert report["state"] == "connected", report
    # The browser plays the phone's 440 Hz tone (analyser bins are 48000/8192 = 5.9 Hz).
    peaks = [hz for hz, level in zip(report["peaks"], report["levels"], strict=True)
             if level > -70]
    assert len(peaks) >= 10, report
    assert abs(float(np.median(peaks)) - 440.0) < 12, report
    # The phone hears Chromium's fake microphone: its 400 Hz beep, twice a second.
    period, beep_hz = _beeps(phone.pcm())
    assert abs(period - FAKE_MIC_PERIOD_S) < 0.05, period
    assert abs(beep_hz - FAKE_MIC_HZ) < 15, beep_hz
    assert _states(sessions, "chromium")[-1] == "closed"
    await _until(lambda: not sessions.sessions, 10, "the session to close")
    assert engine.ports.in_use == 1  # the phone's pair only


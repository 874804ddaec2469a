"""The dispatcher talks through the page: browser microphone and speaker as a WebRTC leg.

Headless Chromium (fake microphone: a 400 Hz beep every half second) calls a baresip
phone (a 440 Hz tone) from the switchboard with "Talk through this browser" ticked:
the phone's recording holds the browser's beeps, and the browser hears the phone.
"""

import asyncio
import re
from typing import Any

import numpy as np
import pytest

from hub.server import Hub
from tests.integration.conftest import sip_port
from tests.peers import scaled
from tests.peers.audio import read_wav
from tests.peers.baresip import PhoneFactory
from tests.peers.browser import chromium

pytestmark = pytest.mark.peers

ANALYSE = """async () => {
  const audio = document.getElementById("remote-audio");
  const ctx = new AudioContext();
  const source = ctx.createMediaStreamSource(audio.srcObject);
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 8192;
  source.connect(analyser);
  const bins = new Float32Array(analyser.frequencyBinCount);
  const peaks = [];
  for (let i = 0; i < 15; i++) {
    await new Promise((r) => setTimeout(r, 100));
    analyser.getFloatFrequencyData(bins);
    let best = 0;
    for (let k = 1; k < bins.length; k++) if (bins[k] > bins[best]) best = k;
    peaks.push(best * ctx.sampleRate / analyser.fftSize);
  }
  return peaks;
}"""


def _loopback_only(sdp: str) -> str:
    # Chromium offers every interface; keep the test's traffic on loopback.
    return "\r\n".join(line for line in sdp.splitlines()
                       if not line.startswith("a=candidate:") or " 127.0.0.1 " in line) + "\r\n"


async def test_call_from_the_page_with_the_browsers_own_audio(
        hub: Hub, phone_factory: PhoneFactory) -> None:
    hub.auth.add_operator("duty", "dispatcher", password="duty-password-1")
    alice = await phone_factory("alice", password="pw-alice",
                                registrar=("127.0.0.1", sip_port(hub)), tone_hz=440.0)
    await alice.wait_registered()
    timeout = scaled(15) * 1000
    async with chromium() as browser:
        page: Any = await browser.new_page(locale="en-US")  # type: ignore[attr-defined]

        async def strip(route: Any) -> None:
            import json
            body = json.loads(route.request.post_data)
            body["sdp"] = _loopback_only(body["sdp"])
            await route.continue_(post_data=json.dumps(body))

        await page.route(re.compile(r".*/api/calls/browser$"), strip)
        await page.goto(hub.http.url + "/")
        await page.get_by_label("User name").fill("duty")
        await page.get_by_label("Password").fill("duty-password-1")
        await page.get_by_role("button", name="Sign in").click()
        await page.locator('li[data-person="alice"][data-status="idle"]').wait_for(
            timeout=timeout)
        await page.get_by_label("Talk through this browser").check()
        await page.get_by_role("button", name="Call alice").click()
        await alice.wait_event("CALL_ESTABLISHED", timeout=scaled(10))
        await page.locator('.call[data-state=active] [data-outcome="answered"]').first.wait_for(
            timeout=timeout)
        await asyncio.sleep(scaled(1.5))
        peaks = await page.evaluate(ANALYSE)
        await page.get_by_role("button", name="Hang up").first.click()
        await alice.wait_event("CALL_CLOSED", timeout=scaled(10))
    await alice.stop()
    # The browser heard the phone's 440 Hz tone.
    assert abs(float(np.median(peaks)) - 440) < 25, peaks
    # The phone heard the browser's fake microphone: 400 Hz beeps.
    rate, samples = read_wav(alice.dec_wavs()[-1])
    part = samples[int(0.5 * rate):]
    window = np.hanning(part.size)
    spectrum = np.abs(np.fft.rfft(part * window)) * 2 / window.sum()
    bins = np.fft.rfftfreq(part.size, 1 / rate)
    assert spectrum[np.abs(bins - 400) < 20].max() > 0.003, "no browser beep in the phone's audio"
    assert abs(bins[spectrum.argmax()] - 400) < 20, bins[spectrum.argmax()]

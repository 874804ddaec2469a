"""Headless Chromium through Playwright, launched as peers.md says (the system browser,
never a downloaded one; loopback WebRTC allowed; fake microphone and camera)."""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
]


@asynccontextmanager
async def chromium() -> AsyncIterator[object]:
    """A launched browser (``playwright.async_api.Browser``), closed afterwards."""
    os.environ.setdefault("PLAYWRIGHT_BROWSERS_PATH", "/nonexistent")
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield browser
        finally:
            await browser.close()

"""The switchboard page in a real browser (headless Chromium via Playwright).

A dispatcher signs in, sees the phones' lamps go online, calls one phone with one
click (it auto-answers), places a group call to five phones and sees each member's
outcome, mutes and hangs up from the page; after the event stream drops, the page
reconnects and resyncs. Screenshots go to docs/screenshots/.
"""

import asyncio
from pathlib import Path
from typing import Any

import pytest

from hub.server import Hub
from tests.integration.conftest import sip_port
from tests.peers import scaled
from tests.peers.baresip import PhoneFactory
from tests.peers.browser import chromium

pytestmark = pytest.mark.peers

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
NAMES = ("alice", "bob", "carol", "dave", "erin")


async def test_dispatcher_works_the_switchboard(hub: Hub, phone_factory: PhoneFactory) -> None:
    hub.auth.add_operator("duty", "dispatcher", password="duty-password-1")
    registrar = ("127.0.0.1", sip_port(hub))
    phones = {n: await phone_factory(n, password=f"pw-{n}", registrar=registrar)
              for n in NAMES[:4]}  # erin stays offline
    for phone in phones.values():
        await phone.wait_registered()
    timeout = scaled(15) * 1000
    async with chromium() as browser:
        page: Any = await browser.new_page(  # type: ignore[attr-defined]
            viewport={"width": 1400, "height": 820}, locale="zh-CN")
        await page.goto(hub.http.url + "/")
        await page.get_by_label("用户名").fill("duty")
        await page.get_by_label("密码").fill("duty-password-1")
        await page.get_by_role("button", name="登录").click()
        # The lamps: four phones online (idle), erin offline.
        for name in NAMES[:4]:
            await page.locator(f'li[data-person="{name}"][data-status="idle"]').wait_for(
                timeout=timeout)
        await page.locator('li[data-person="erin"][data-status="offline"]').wait_for(
            timeout=timeout)
        await page.get_by_role("button", name="English").click()
        await page.get_by_role("button", name="Call alice").click()
        await phones["alice"].wait_event("CALL_ESTABLISHED", timeout=scaled(10))
        single = page.locator(".call[data-state=active]").first
        await single.locator('[data-outcome="answered"]').wait_for(timeout=timeout)
        await page.get_by_role("button", name="Hang up").first.click()
        await phones["alice"].wait_event("CALL_CLOSED", timeout=scaled(10))

        for name in NAMES:
            await page.get_by_label(f"Select {name}").check()
        await page.get_by_role("button", name="Group call").click()
        call = page.locator(".call[data-state=active]").first
        for name in NAMES[:4]:
            await phones[name].wait_event("CALL_ESTABLISHED", timeout=scaled(10))
        await call.locator('[data-outcome="answered"]').nth(3).wait_for(timeout=timeout)
        offline = call.locator('[data-outcome="unreachable"], [data-outcome="no-answer"]')
        await offline.first.wait_for(timeout=timeout)
        await page.get_by_role("button", name="Mute bob").click()
        await call.get_by_role("button", name="Unmute bob").wait_for(timeout=timeout)
        SHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SHOTS / "switchboard.png"))

        # The event stream drops: the page reconnects and shows the same call again.
        await page.evaluate("state.ws.close(); state.calls = {}; render()")
        await call.locator('[data-outcome="answered"]').nth(3).wait_for(timeout=timeout)
        await page.get_by_role("button", name="中文").click()
        await page.screenshot(path=str(SHOTS / "switchboard-zh.png"))
        await page.get_by_role("button", name="Hang up").first.click()
        for name in NAMES[:4]:
            await phones[name].wait_event("CALL_CLOSED", timeout=scaled(10))
        await asyncio.sleep(0.2)

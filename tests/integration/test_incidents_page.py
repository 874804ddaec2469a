"""The incidents part of the switchboard page in a real browser (headless Chromium).

A dispatcher signs in, reports an incident with the form and sees it in the list; a
supervisor writes the fire plan (through the API); the dispatcher activates it from the
page. Real phones ring: bob and carol press 1 and their rows of the ack board turn
"confirmed"; ivan has no phone registered, so his row goes "unreachable", a text notice
goes out and, at the plan's deadline, "escalated" and his deputy dave is called (a new
row, "deputy for ivan") and confirms. The timeline says all of it in words, live. The
offline map draws the nearest resources around the incident and lists them nearest
first; one is called and one dispatched from the page. In Chinese, the same page says
已确认 / 代 ivan / 向 ivan 发送短信通知. A caller waiting in the queue becomes an
incident with one click. Screenshots (1366x768) go to docs/screenshots/.
"""

import asyncio
import io
import math
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.server import Hub
from tests.integration.conftest import sip_port
from tests.peers import scaled
from tests.peers.baresip import BaresipPhone, PhoneFactory
from tests.peers.browser import chromium

pytestmark = pytest.mark.peers

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
VIEWPORT = {"width": 1366, "height": 768}
CONFIRMING = {"bob": "现场指挥", "carol": "医疗救护"}
OFFLINE, OFFLINE_ROLE, DEPUTY = "ivan", "后勤保障", "dave"
ESCALATE_S = 4.0
SITE = (39.9087, 116.3975)  # 天安门, 北京
RESOURCES: list[dict[str, Any]] = [
    {
        "kind": "team",
        "name": "东城消防救援站",
        "location": {"lat": 39.9280, "lon": 116.4170},
        "address": "北京市东城区",
        "leader": "王队长",
        "headcount": 30,
        "contacts": [{"name": "值班室", "phone": "erin", "title": "值班室"}],
    },
    {
        "kind": "supply",
        "name": "帐篷",
        "warehouse": "西城应急物资仓库",
        "quantity": 200,
        "unit": "顶",
        "location": {"lat": 39.9000, "lon": 116.3600},
        "address": "北京市西城区",
        "contacts": [{"name": "保管员", "phone": "erin"}],
    },
    {
        "kind": "shelter",
        "name": "天坛公园应急避难场所",
        "capacity": 5000,
        "location": {"lat": 39.8822, "lon": 116.4066},
        "address": "北京市东城区天坛路",
    },
    {
        "kind": "expert",
        "name": "李工",
        "field": "危化品",
        "location": {"lat": 39.9950, "lon": 116.3100},
    },
]


def _km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Haversine on the WGS-84 mean radius (as dispatch/geo.py)."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * 6371.0088 * math.asin(math.sqrt(h))


async def _token(client: httpx.AsyncClient, name: str) -> dict[str, str]:
    resp = await client.post(
        "/api/auth/token", json={"username": name, "password": f"{name}-password-1"}
    )
    assert resp.status_code == 200, resp.text
    return {"Authorization": f"Bearer {resp.json()['token']}"}


async def _confirm(phone: BaresipPhone) -> None:
    """Answer (auto), wait for the beeps to start, press 1."""
    await phone.wait_event("CALL_ESTABLISHED", timeout=scaled(30))
    await asyncio.sleep(0.8)
    await phone.command("sndcode", "1", check=False)


async def _text(locator: Any) -> str:
    return " ".join((await locator.inner_text()).split())


async def test_dispatcher_works_an_incident(hub: Hub, phone_factory: PhoneFactory) -> None:
    hub.auth.add_operator("duty", "dispatcher", password="duty-password-1")
    hub.auth.add_operator("chief", "supervisor", password="chief-password-1")
    hub.store.add_user(OFFLINE, f"pw-{OFFLINE}")  # in the directory, no phone registered
    registrar = ("127.0.0.1", sip_port(hub))
    phones = {
        n: await phone_factory(n, password=f"pw-{n}", registrar=registrar)
        for n in ("alice", "bob", "carol", DEPUTY, "erin")
    }
    for phone in phones.values():
        await phone.wait_registered()
    timeout = scaled(20) * 1000

    async with (
        httpx.AsyncClient(base_url=hub.http.url, timeout=30) as client,
        chromium() as browser,
    ):
        chief = await _token(client, "chief")
        made = []
        for body in RESOURCES:
            resp = await client.post("/api/resources", headers=chief, json=body)
            assert resp.status_code == 201, resp.text
            made.append(resp.json())

        page: Any = await browser.new_page(viewport=VIEWPORT, locale="zh-CN")  # type: ignore[attr-defined]
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(hub.http.url + "/")
        await page.get_by_label("用户名").fill("duty")
        await page.get_by_label("密码").fill("duty-password-1")
        await page.get_by_role("button", name="登录").click()
        await page.get_by_role("button", name="English").click()
        await page.get_by_role("tab", name="Incidents").click()
        await page.locator("#incidents-view").wait_for(timeout=timeout)
        await page.get_by_text("No active incidents").wait_for(timeout=timeout)

        # 1. The form: a fire at Tiananmen, level III.
        await page.get_by_text("New incident").click()
        form = page.locator("#inc-new-form")
        await form.get_by_label("Title").fill("仓库火灾")
        await form.get_by_label("Type").select_option("fire")
        await form.get_by_label("Level").select_option("3")
        await form.get_by_label("Latitude").fill(str(SITE[0]))
        await form.get_by_label("Longitude").fill(str(SITE[1]))
        await form.get_by_label("Address").fill("北京市东城区天安门广场")
        await form.get_by_label("Description").fill("仓库起火, 有人员被困")
        await form.get_by_role("button", name="Create").click()
        item = page.locator("#inc-list li[data-incident]")
        await item.first.wait_for(timeout=timeout)
        assert await item.count() == 1
        listed = await _text(item.first)
        for words in ("仓库火灾", "Level III", "Fire", "reported"):
            assert words in listed, listed
        incident_id = int(await item.first.get_attribute("data-incident"))
        head = page.locator(".inc-titleline")
        assert "仓库火灾" in await _text(head)
        assert await page.locator("#inc-level").inner_text() == "Level III"
        assert await page.locator("#inc-count").inner_text() == "1"
        assert "Created the incident “仓库火灾” (Fire, Level III)" in await _text(
            page.locator("#inc-tl")
        )

        # 2. The supervisor writes the plan; opening the incident again offers it.
        roles = [{"role": role, "person": name} for name, role in CONFIRMING.items()]
        roles.append({"role": OFFLINE_ROLE, "person": OFFLINE, "deputy": DEPUTY})
        resp = await client.post(
            "/api/plans",
            headers=chief,
            json={
                "name": "火灾事故应急预案",
                "incident_type": "fire",
                "level": 3,
                "escalate_after_s": ESCALATE_S,
                "roles": roles,
                "tasks": [{"title": "疏散周边群众", "deadline_s": 600}],
            },
        )
        assert resp.status_code == 201, resp.text
        plan = resp.json()
        await page.get_by_role("button", name="Open incident 仓库火灾").click()
        plans = page.locator("#inc-plan")
        await plans.locator(f'option[value="{plan["id"]}"]').wait_for(
            state="attached", timeout=timeout
        )
        await plans.select_option(str(plan["id"]))
        await page.locator("#inc-act-level").select_option("3")

        # 3. Activate: everyone rings at once; bob, carol and (later) dave press 1.
        confirmers = [asyncio.ensure_future(_confirm(phones[n])) for n in (*CONFIRMING, DEPUTY)]
        await page.get_by_role("button", name="Activate plan").click()
        board = page.locator("#inc-board-rows")
        for name in CONFIRMING:
            await board.locator(f'tr[data-person="{name}"][data-state="confirmed"]').wait_for(
                timeout=timeout
            )
            row = await _text(board.locator(f'tr[data-person="{name}"]'))
            assert row.startswith(f"{CONFIRMING[name]} {name} confirmed"), row
        await board.locator(f'tr[data-person="{OFFLINE}"][data-state="unreachable"]').wait_for(
            timeout=timeout
        )
        assert "unreachable" in await _text(board.locator(f'tr[data-person="{OFFLINE}"]'))
        await board.locator(f'tr[data-person="{OFFLINE}"][data-state="escalated"]').wait_for(
            timeout=scaled(ESCALATE_S + 10) * 1000
        )
        deputy = board.locator(f'tr[data-person="{DEPUTY}"]')
        await board.locator(f'tr[data-person="{DEPUTY}"][data-state="confirmed"]').wait_for(
            timeout=timeout
        )
        assert (
            await _text(deputy)
            == f"{OFFLINE_ROLE} {DEPUTY} deputy for {OFFLINE} confirmed {DEPUTY} 1"
        )
        await asyncio.gather(*confirmers)
        counts = await _text(page.locator("#inc-response .counts"))
        assert "confirmed 3" in counts and "escalated 1" in counts, counts
        assert "Plan “火灾事故应急预案” · Level III response · active" in await _text(
            page.locator("#inc-response")
        )
        assert await page.locator("#inc-status").inner_text() == "responding"

        timeline = page.locator("#inc-tl")
        wanted = [
            "Activated plan “火灾事故应急预案” (Level III response), calling 3 responders",
            f"bob ({CONFIRMING['bob']}) confirmed",
            f"carol ({CONFIRMING['carol']}) confirmed",
            f"{OFFLINE} ({OFFLINE_ROLE}) unreachable",
            f"Text notice to {OFFLINE} (unreachable)",
            f"{OFFLINE} ({OFFLINE_ROLE}) not confirmed in time: calling deputy {DEPUTY}",
            f"{DEPUTY} ({OFFLINE_ROLE}, deputy for {OFFLINE}) confirmed",
        ]
        for line in wanted:
            await timeline.get_by_text(line).first.wait_for(timeout=timeout)
        # Live lines are in order and none is there twice.
        lines = [" ".join(t.split()) for t in await timeline.locator("li .what").all_inner_texts()]
        at = [next(i for i, text in enumerate(lines) if w in text) for w in wanted]
        assert at[0] < min(at[1:]) and at[3] < at[4] and at[5] < at[6], lines
        ids = [
            int(x)
            for x in await timeline.locator("li").evaluate_all(
                "rows => rows.map(r => r.dataset.entry)"
            )
        ]
        assert ids == sorted(set(ids)), ids
        assert await timeline.locator("li[data-entry] .actor").first.inner_text() == "duty"

        # Tasks and a message.
        task = page.locator("#inc-tasks li", has_text="疏散周边群众")
        await task.get_by_label("疏散周边群众").check()
        await page.locator('#inc-tasks li[data-state="done"]').wait_for(timeout=timeout)
        await timeline.get_by_text("Task done: “疏散周边群众”").wait_for(timeout=timeout)
        await page.get_by_label("Message").fill("消防车已出发")
        await page.get_by_role("button", name="Send").click()
        await timeline.get_by_text("Message: 消防车已出发").wait_for(timeout=timeout)
        assert await page.get_by_label("Message").input_value() == ""

        # The stream drops and stays down while a colleague writes; on reconnect the page
        # reads the incident again and the line is there, once.
        await page.evaluate("window.reconnect = connect; connect = () => {}; state.ws.close()")
        await page.locator("#conn.down").wait_for(timeout=timeout)
        await asyncio.sleep(0.5)  # a re-read the task's line scheduled (300 ms debounce) is done
        resp = await client.post(
            f"/api/incidents/{incident_id}/messages", headers=chief, json={"text": "断线期间的消息"}
        )
        assert resp.status_code == 201, resp.text
        await asyncio.sleep(0.5)
        assert await timeline.get_by_text("断线期间的消息").count() == 0
        await page.evaluate("connect = window.reconnect; connect()")
        await timeline.get_by_text("Message: 断线期间的消息").wait_for(timeout=timeout)
        assert await timeline.get_by_text("断线期间的消息").count() == 1
        chief_line = timeline.locator("li", has_text="断线期间的消息")
        assert await chief_line.locator(".actor").inner_text() == "chief"

        # Raise the level from the header: the incident and the list follow.
        await page.get_by_role("button", name="Raise level to Level II").click()
        await page.locator("#inc-level", has_text="Level II").wait_for(timeout=timeout)
        await timeline.get_by_text("Incident level: Level III → Level II").wait_for(timeout=timeout)
        assert "Level II" in await _text(item.first)
        await page.get_by_role("button", name="Lower level to Level III").click()
        await page.locator("#inc-level", has_text="Level III").wait_for(timeout=timeout)

        SHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SHOTS / "incident.png"))

        # 4. The map: offline, drawn on a canvas; the same resources in a list, nearest first.
        await page.get_by_role("tab", name="Map & resources").click()
        canvas = page.locator("#inc-map")
        await canvas.wait_for(timeout=timeout)
        listed_res = page.locator("#inc-res li[data-resource]")
        await listed_res.nth(len(made) - 1).wait_for(timeout=timeout)
        names = await listed_res.locator(".res-name").all_inner_texts()
        nearest = sorted(
            made, key=lambda r: _km(SITE, (r["location"]["lat"], r["location"]["lon"]))
        )
        assert names == [r["name"] for r in nearest], names
        distances = [
            float(d)
            for d in await listed_res.evaluate_all("rows => rows.map(r => r.dataset.distance)")
        ]
        assert distances == sorted(distances)
        for r, d in zip(nearest, distances, strict=True):
            assert abs(d / 1000 - _km(SITE, (r["location"]["lat"], r["location"]["lon"]))) < 0.05
        first = await _text(listed_res.first)
        assert nearest[0]["name"] in first and "km" in first
        label = await canvas.get_attribute("aria-label")
        assert label is not None and f"the {len(made)} nearest resources" in label

        # Pixels: the canvas is drawn (markers in their kinds' colours, the incident red).
        drawn = await canvas.evaluate("""c => {
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            const colours = new Set(); let lit = 0;
            for (let i = 0; i < d.length; i += 4) {
              const key = (d[i] >> 4) + ',' + (d[i+1] >> 4) + ',' + (d[i+2] >> 4);
              colours.add(key);
              if (d[i] + d[i+1] + d[i+2] > 200) lit++;
            }
            const near = (i, r, g, b) =>
              Math.abs(d[i] - r) < 8 && Math.abs(d[i+1] - g) < 8 && Math.abs(d[i+2] - b) < 8;
            const has = (r, g, b) => {
              for (let i = 0; i < d.length; i += 4) if (near(i, r, g, b)) return true;
              return false;
            };
            return { w: c.width, h: c.height, colours: colours.size, lit,
                     team: has(0xef, 0x44, 0x44), shelter: has(0x22, 0xc5, 0x5e),
                     supply: has(0xf5, 0x9e, 0x0b), incident: has(0xe1, 0x1d, 0x48) };
        }""")
        assert drawn["w"] > 300 and drawn["h"] > 200, drawn
        assert drawn["colours"] > 20 and drawn["lit"] > 500, drawn
        assert drawn["team"] and drawn["shelter"] and drawn["supply"] and drawn["incident"], drawn

        # Hover the team's marker: its card, with Call and Dispatch.
        team = next(r for r in made if r["kind"] == "team")
        spot = await page.evaluate(
            "id => { const m = incidents.markers.find(m => m.resource.id === id);"
            " return [m.x, m.y]; }",
            team["id"],
        )
        await canvas.hover(position={"x": spot[0], "y": spot[1]})
        card = page.locator("#inc-map-pop")
        await card.wait_for(timeout=timeout)
        text = await _text(card)
        assert team["name"] in text and "Rescue team" in text and "km" in text, text
        await canvas.click(position={"x": spot[0], "y": spot[1]})  # pinned
        await card.get_by_role("button", name=f"Call {team['name']}").click()
        await phones["erin"].wait_event("CALL_ESTABLISHED", timeout=scaled(10))
        await timeline.get_by_text(
            f"Called 值班室 (erin) of Rescue team “{team['name']}”"
        ).wait_for(timeout=timeout)
        await card.get_by_role("button", name=f"Dispatch {team['name']}").click()
        dispatched = page.locator("#inc-disp li[data-state=active]")
        await dispatched.first.wait_for(timeout=timeout)
        assert team["name"] in await _text(dispatched.first)
        await timeline.get_by_text(f"Dispatched Rescue team “{team['name']}”").wait_for(
            timeout=timeout
        )
        await page.locator(
            f'#inc-res li[data-resource="{team["id"]}"]', has_text="dispatched"
        ).wait_for(timeout=timeout)
        # Supplies go by quantity, from the list.
        tents = next(r for r in made if r["kind"] == "supply")
        row = page.locator(f'#inc-res li[data-resource="{tents["id"]}"]')
        await row.get_by_label(f"Quantity of {tents['name']} to dispatch").fill("20")
        await row.get_by_role("button", name=f"Dispatch {tents['name']}").click()
        await page.locator("#inc-disp li", has_text="×20 顶").wait_for(timeout=timeout)
        await page.locator(
            f'#inc-res li[data-resource="{tents["id"]}"]', has_text="180 顶 in stock"
        ).wait_for(timeout=timeout)
        # The keyboard walks the markers nearest first; Escape closes the card.
        await page.mouse.move(5, 5)
        await canvas.focus()
        await canvas.press("ArrowRight")
        await card.get_by_text(nearest[0]["name"]).wait_for(timeout=timeout)
        await canvas.press("ArrowRight")
        await card.get_by_text(nearest[1]["name"]).wait_for(timeout=timeout)
        await canvas.press("Escape")
        await card.wait_for(state="hidden", timeout=timeout)
        await page.screenshot(path=str(SHOTS / "incident-map.png"))

        # Recordings: the command room's, with a player; the evidence pack downloads.
        await page.get_by_role("tab", name="Recordings & evidence").click()
        player = page.locator("#inc-recs audio")
        await player.first.wait_for(timeout=timeout)
        src = await player.first.get_attribute("src")
        assert src is not None and src.startswith("/api/recordings/")
        evidence = page.locator("#inc-evidence")
        assert await evidence.get_attribute("href") == f"/api/incidents/{incident_id}/evidence"

        # 5. 中文: the same board, in the field's words.
        await page.get_by_role("tab", name="Ack board").click()
        await page.get_by_role("button", name="中文").click()
        assert (
            await page.get_by_role("tab", name="应答看板").get_attribute("aria-selected") == "true"
        )
        for name in CONFIRMING:
            assert "已确认" in await _text(board.locator(f'tr[data-person="{name}"]'))
        assert "已升级" in await _text(board.locator(f'tr[data-person="{OFFLINE}"]'))
        assert f"代 {OFFLINE}" in await _text(deputy)
        assert "Ⅲ级" in await _text(item.first) and "火灾" in await _text(item.first)
        assert await page.locator("#inc-status").inner_text() == "响应中"
        zh_lines = await _text(timeline)
        for line in (
            f"bob（{CONFIRMING['bob']}）已确认",
            f"向 {OFFLINE} 发送短信通知（未能联系）",
            "启动预案「火灾事故应急预案」（Ⅲ级响应）",
            "留言: 消防车已出发",
            f"{DEPUTY}（{OFFLINE_ROLE}，代 {OFFLINE}）已确认",
        ):
            assert line in zh_lines, line
        assert "预案「火灾事故应急预案」· Ⅲ级响应 · 进行中" in await _text(
            page.locator("#inc-response")
        )
        await page.get_by_role("button", name="结束响应").wait_for(timeout=timeout)
        await page.screenshot(path=str(SHOTS / "incident-zh.png"))

        # 6. End the response: two clicks (no dialog); everyone is called off.
        await page.get_by_role("button", name="结束响应").click()
        await page.get_by_role("button", name="再次点击确认结束响应").click()
        await page.locator('#inc-response [data-response-state="ended"]').wait_for(timeout=timeout)
        for name in (*CONFIRMING, DEPUTY):
            await phones[name].wait_event("CALL_CLOSED", timeout=scaled(10))
        await timeline.get_by_text("结束响应「火灾事故应急预案」").wait_for(timeout=timeout)
        assert await page.locator("#inc-activate").is_visible()
        # The room's recording plays back through the page's session.
        await asyncio.sleep(0.5)
        audio = await page.request.get(hub.http.url + src)
        assert audio.status == 200 and (await audio.body())[:4] == b"OggS", audio.status
        # The link works with the page's session (the cookie), and the pack is the incident's.
        resp = await page.request.get(hub.http.url + await evidence.get_attribute("href"))
        assert resp.status == 200, resp.status
        pack = zipfile.ZipFile(io.BytesIO(await resp.body()))
        assert "火灾事故应急预案" in pack.read("report.html").decode()
        await timeline.get_by_text("导出证据包").wait_for(timeout=timeout)

        # 7. A caller waits in the queue, on the switchboard too: one click makes the
        # incident, the caller and the time carried over. The resource's call is the
        # first incident's.
        await page.get_by_role("tab", name="调度台").click()
        resource_call = page.locator(".call[data-state=active]", has_text="erin")
        await resource_call.get_by_role("button", name=f"事件 #{incident_id}").wait_for(
            timeout=timeout
        )
        await phones["alice"].dial(f"sip:{hub.store.dispatch_number}@127.0.0.1:{sip_port(hub)}")
        queued = page.locator("#sb-queue li[data-call]", has_text="alice")
        await queued.first.wait_for(timeout=timeout)
        call_id = await queued.first.get_attribute("data-call")
        await page.get_by_role("button", name=f"从来电 {call_id} 创建事件").click()
        await page.locator('#view-incidents[aria-selected="true"]').wait_for(timeout=timeout)
        await page.locator("#inc-list li[data-incident]").nth(1).wait_for(timeout=timeout)
        assert "报警人 alice" in await _text(page.locator("#inc-facts"))
        edit = page.locator("#inc-edit-form")
        assert await edit.is_visible()
        await edit.get_by_label("标题").fill("道路塌陷")
        await edit.get_by_label("事件类型").select_option("building_collapse")
        await edit.get_by_role("button", name="保存").click()
        await page.locator("#inc-title", has_text="道路塌陷").wait_for(timeout=timeout)
        assert "建筑坍塌" in await page.locator("#inc-type").inner_text()
        await page.get_by_role("button", name=f"事件 #{incident_id + 1}").first.wait_for(
            timeout=timeout
        )
        await phones["alice"].hangup()
        assert not errors, errors

"""Text notices: the webhook sender delivers JSON off the loop and reports failures."""

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from dispatch.notify import LogNotifier, Notice, WebhookNotifier, notifier_from_spec
from hub.config import ConfigError, ServeConfig


class _Sink(BaseHTTPRequestHandler):
    received: list[tuple[str, Any]] = []
    status = 200

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["content-length"]))
        _Sink.received.append((self.headers["content-type"], json.loads(body)))
        self.send_response(_Sink.status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def sink() -> Iterator[str]:
    _Sink.received = []
    _Sink.status = 200
    server = HTTPServer(("127.0.0.1", 0), _Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/notices"
    finally:
        server.shutdown()
        server.server_close()


NOTICE = Notice(7, "张三", "【应急响应】请立即与指挥中心联系。", "unreachable")


async def _settle(condition: Any) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not reached")


async def test_webhook_posts_the_notice_as_json(sink: str) -> None:
    failures: list[tuple[Notice, str]] = []
    notifier = WebhookNotifier(sink)
    notifier.on_failure = lambda n, why: failures.append((n, why))
    notifier.send(NOTICE)
    await _settle(lambda: _Sink.received)
    content_type, body = _Sink.received[0]
    assert content_type.startswith("application/json")
    assert body == {"incident_id": 7, "person": "张三", "text": NOTICE.text,
                    "reason": "unreachable"}
    await asyncio.sleep(0.05)
    assert failures == []


async def test_webhook_failures_are_reported_not_raised(sink: str) -> None:
    _Sink.status = 500
    failures: list[tuple[Notice, str]] = []
    notifier = WebhookNotifier(sink)
    notifier.on_failure = lambda n, why: failures.append((n, why))
    notifier.send(NOTICE)  # returns at once: delivery is off the loop
    await _settle(lambda: failures)
    assert failures[0][0] == NOTICE and "500" in failures[0][1]
    closed = WebhookNotifier("http://127.0.0.1:9/nowhere", timeout=1)
    closed.on_failure = lambda n, why: failures.append((n, why))
    closed.send(NOTICE)
    await _settle(lambda: len(failures) == 2)
    assert "URLError" in failures[1][1] or "Connection" in failures[1][1]


def test_notifier_specs() -> None:
    assert isinstance(notifier_from_spec("log"), LogNotifier)
    assert notifier_from_spec("webhook:https://sms.example/api").url == "https://sms.example/api"
    with pytest.raises(ValueError, match="webhook"):
        notifier_from_spec("sms")
    with pytest.raises(ValueError, match="http"):
        WebhookNotifier("ftp://x")
    with pytest.raises(ConfigError, match="notifier"):
        ServeConfig(notifier="pager")

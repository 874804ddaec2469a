"""`hub serve` as a user runs it: a real process, configured by the CLI while it runs."""

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.peers import scaled
from tests.peers.baresip import PhoneFactory
from tests.peers.ports import free_tcp_port, free_udp_port

pytestmark = pytest.mark.peers

HUB = [sys.executable, "-m", "hub"]


def _hub(*args: str, data: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HUB, *args, "--data-dir", str(data)], capture_output=True,
                          text=True, timeout=30, check=False)


async def _serve(data: Path, *extra: str) -> tuple[asyncio.subprocess.Process, int, int]:
    sip, http = free_udp_port(), free_tcp_port()
    proc = await asyncio.create_subprocess_exec(
        *HUB, "serve", "--data-dir", str(data), "--bind", "127.0.0.1", "--sip-port", str(sip),
        "--http-port", str(http), "--rtp-ports", "25000-25999", *extra,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    while True:
        line = await asyncio.wait_for(proc.stderr.readline(), timeout=scaled(15))
        assert line, "hub serve exited before it was ready"
        if line.startswith(b"hub: SIP"):
            break
    return proc, sip, http


async def _stop(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    assert proc.stderr is not None
    rest = await asyncio.wait_for(proc.stderr.read(), timeout=scaled(15))
    code = await proc.wait()
    return code, rest.decode()


def _health(http: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/api/health", timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/json")
        data: dict[str, object] = json.loads(resp.read())
        return data


async def test_serve_health_live_config_and_clean_stop(tmp_path: Path,
                                                       phone_factory: PhoneFactory) -> None:
    data = tmp_path / "data"
    assert _hub("user", "add", "alice", "--password", "pw-alice", data=data).returncode == 0
    proc, sip, http = await _serve(data)
    try:
        health = await asyncio.to_thread(_health, http)
        assert health["status"] == "ok"
        assert health["registrations"] == 0
        # A user added while the hub runs can register at once: no restart.
        added = _hub("user", "add", "bob", "--password", "pw-bob", data=data)
        assert added.returncode == 0, added.stderr
        bob = await phone_factory("bob", password="pw-bob", registrar=("127.0.0.1", sip))
        await bob.wait_registered()
        health = await asyncio.to_thread(_health, http)
        assert health["registrations"] == 1
        listed = _hub("user", "list", data=data)
        assert "bob" in listed.stdout and "alice" in listed.stdout
    finally:
        code, log = await _stop(proc)
    assert code == 0, log
    assert "stopping" in log


async def test_tls_listener_answers_options(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    tls_port = free_tcp_port()
    proc, sip, _http = await _serve(tmp_path / "data", "--tls-port", str(tls_port),
                                    "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        ctx.check_hostname = False
        reader, writer = await asyncio.open_connection("127.0.0.1", tls_port, ssl=ctx)
        call_id = uuid.uuid4().hex
        writer.write((
            f"OPTIONS sip:127.0.0.1:{tls_port};transport=tls SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS 127.0.0.1:1;branch=z9hG4bK{call_id[:10]};rport\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=1\r\n"
            f"To: <sip:127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n").encode())
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), timeout=scaled(5))
        assert status.startswith(b"SIP/2.0 200"), status
        headers = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=scaled(5))
        assert b"Allow:" in headers and call_id.encode() in headers
        writer.close()
        await writer.wait_closed()
    finally:
        code, log = await _stop(proc)
    assert code == 0, log


def test_cli_rejects_bad_input_with_clear_errors(tmp_path: Path) -> None:
    data = tmp_path / "data"
    bad = _hub("user", "add", "bad name", "--password", "x", data=data)
    assert bad.returncode == 2 and "user name" in bad.stderr
    bad = _hub("trunk", "add", "t1", "--host", "127.0.0.1", "--prefix", "9x", data=data)
    assert bad.returncode == 2 and "prefix" in bad.stderr.lower()
    assert _hub("user", "remove", "nobody", data=data).returncode == 1
    assert os.path.exists(data / "hub.sqlite3")


def test_an_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    done = subprocess.run([*HUB, "serve", "--data-dir", str(tmp_path / "data"), "--bind",
                           "127.0.0.1", "--sip-port", "0", "--http-port", "0", "--database",
                           "postgresql://hub:s3cret@127.0.0.1:1/hub"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "cannot start: cannot connect to postgresql://hub:***@127.0.0.1:1/hub" in done.stderr
    assert "s3cret" not in done.stderr and "Traceback" not in done.stderr
    bad = subprocess.run([*HUB, "serve", "--data-dir", str(tmp_path / "data"),
                          "--notifier", "pager"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--notifier must be log or webhook" in bad.stderr

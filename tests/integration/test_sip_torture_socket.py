"""RFC 4475 / RFC 5118 torture messages over real sockets to a SipTransport.

The messages name foreign hosts (192.0.2.x, example.com) in their Vias, and without
rport the hub answers to the Via port (RFC 3261 18.2.2). So the whole exchange runs in
a child process inside a network namespace that has only ``lo``: nothing can leave the
machine (a foreign send fails with ENETUNREACH, checked below). The child records every
send the transport attempts, since some answers go to ports nobody listens on.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.sip_corpus import CORPUS, Row, expected_rows, is_response, message_files, status_of

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("sip_torture_child.py")
ROWS = expected_rows()
FILES = message_files()
CLIENT = ["127.0.0.1", 5060, "udp"]

pytestmark = pytest.mark.skipif(not ROWS, reason=f"no SIP torture corpus at {CORPUS}")


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)


@pytest.fixture(scope="module")
def results() -> Any:
    """Run the child once inside a fresh loopback-only namespace; its JSON report."""
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (ip) is not installed")
    if os.geteuid() != 0:
        pytest.skip(
            "needs root for a network namespace (ip netns add); never run it on "
            "the host network: the messages name foreign addresses"
        )
    name = f"siptorture{os.getpid()}"
    added = _ip("netns", "add", name)
    if added.returncode != 0:
        pytest.skip(f"ip netns add not permitted here: {added.stderr.strip()}")
    try:
        up = _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        assert up.returncode == 0, up.stderr
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        child = subprocess.run(
            ["ip", "netns", "exec", name, sys.executable, str(CHILD)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert child.returncode == 0, child.stderr[-4000:]
        return json.loads(child.stdout)
    finally:
        _ip("netns", "del", name)


def test_child_ran_in_a_loopback_only_namespace(results: Any) -> None:
    assert results["interfaces"] == ["lo"]
    assert results["foreign_send"] == "ENETUNREACH"


def test_nothing_was_sent_off_loopback(results: Any) -> None:
    dests = {tuple(t["dest"]) for case in results["udp"].values() for t in case["tried"]}
    assert dests and all(host == "127.0.0.1" for host, _, _ in dests)


@pytest.mark.parametrize("row", [pytest.param(r, id=r.name) for r in ROWS])
def test_torture_message_over_udp_socket(results: Any, row: Row) -> None:
    if row.name not in FILES:
        pytest.fail(f"no message file for row {row.name!r}")
    case = results["udp"][row.name]
    tried = case["tried"]
    statuses = [status_of(t["data"].encode("latin-1")) for t in tried]
    data = FILES[row.name].read_bytes()
    if row.verdict == "accept":
        if is_response(data):
            assert statuses == []
        else:
            assert len(statuses) == 1 and statuses[0] != 400, statuses
    elif row.verdict == "drop":
        assert statuses == []
    elif row.verdict == "may":
        assert len(statuses) <= 1
    elif row.verdict == "close":
        assert statuses == [400]
    else:
        assert statuses == [row.status]
    # What went to the client's address really arrived there, byte for byte; the rest
    # went to Via ports on 127.0.0.1 that nobody listens on in the namespace.
    to_client = [t["data"] for t in tried if t["dest"] == CLIENT]
    assert case["client_got"] == to_client


@pytest.mark.parametrize("row", [pytest.param(r, id=r.name) for r in ROWS if r.verdict == "close"])
def test_framing_error_closes_the_tcp_connection(results: Any, row: Row) -> None:
    if row.name not in FILES:
        pytest.fail(f"no message file for row {row.name!r}")
    case = results["tcp_close"][row.name]
    assert case["closed"], "the hub kept the connection open"
    received = case["received"].encode("latin-1")
    if received:
        # A message that cannot be framed is answered, then the connection closed.
        assert status_of(received) == 400
    else:
        # Content-Length beyond the data (clerr): the hub waits for the rest, then gives
        # up on the connection (RFC 4475 3.1.2.7); the child set that wait to 0.3 s.
        assert 0.25 <= case["elapsed"] < 4.0


def test_normal_messages_get_a_response_on_the_same_connection(results: Any) -> None:
    normal = results["tcp_normal"]
    assert len(normal) >= 10
    for name, case in normal.items():
        response = case["response"].encode("latin-1")
        assert status_of(response) in (200, 401, 501), name
        assert case["dest_conns"] == [1], name  # written to the connection it came on
        assert case["pong"] == "\r\n", name  # and that connection is still open


def test_good_message_before_a_framing_error_in_one_segment(results: Any) -> None:
    case = results["tcp_pipelined"]
    received = case["received"].encode("latin-1")
    first, sep, second = received.partition(b"\r\n\r\n")
    assert sep and status_of(first) == 200
    assert status_of(second) == 400
    assert case["closed"]

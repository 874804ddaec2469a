"""SIPp through the hub: an IP-authenticated trunk in, a trunk out, at load and under loss.

uac (carrier A, admitted by --inbound-from) -> hub -> uas (carrier B, prefix 9).
SIPp's exit status is 0 only when no call failed.
"""

from pathlib import Path

import pytest

from hub.server import Hub
from tests.integration.conftest import sip_port
from tests.peers import scaled
from tests.peers.ports import free_udp_port
from tests.peers.sipp import SippFactory, run_sipp

pytestmark = pytest.mark.peers


SCENARIOS = Path(__file__).parent / "scenarios"


async def _through_hub(hub: Hub, tmp_path: Path, sipp_factory: SippFactory, *, calls: int,
                       rate: float, lost: float | None = None) -> None:
    # Loss is applied on the caller's side of the hub. SIPp's own scenarios can't survive
    # loss on both of its ends: its uas aborts a call on a retransmitted INVITE, and its
    # built-in uac takes a retransmitted 200 (INVITE) for the BYE's 200. uac_txn.xml
    # matches responses to their transaction (start_txn/response_txn) to fix the latter.
    uas = await sipp_factory("uas")
    uac_port = free_udp_port()
    hub.store.add_trunk("carrier-out", "127.0.0.1", port=uas.local_port, prefix="9")
    hub.store.add_trunk("carrier-in", "127.0.0.1", port=uac_port,
                        inbound_from=f"127.0.0.1:{uac_port}")
    result = await run_sipp(
        tmp_path, SCENARIOS / "uac_txn.xml", remote=f"127.0.0.1:{sip_port(hub)}",
        local_port=uac_port,
        service="9123", rate=rate, max_calls=calls, limit=400, lost=lost,
        timeout=scaled(calls / rate * 3 + 60), wait_timeout=scaled(calls / rate * 3 + 90))
    assert result.stats is not None, result.describe()
    assert result.stats.failed == 0, result.describe()
    assert result.stats.successful == calls, result.describe()
    assert result.returncode == 0, result.describe()
    if lost:
        assert result.stats.retransmissions > 0, "loss must have made someone retransmit"
    await uas.stop()
    assert hub.gateway.stats["answered"] == calls
    assert not hub.engine.bridges, "every media bridge is closed once its call ended"


async def test_2000_calls_at_50_cps_through_trunks(hub: Hub, tmp_path: Path,
                                                   sipp_factory: SippFactory) -> None:
    await _through_hub(hub, tmp_path, sipp_factory, calls=2000, rate=50)


async def test_calls_complete_with_5_percent_packet_loss(hub: Hub, tmp_path: Path,
                                                         sipp_factory: SippFactory) -> None:
    await _through_hub(hub, tmp_path, sipp_factory, calls=200, rate=20, lost=5)


async def test_untrusted_source_cannot_use_trunk(hub: Hub, tmp_path: Path,
                                                 sipp_factory: SippFactory) -> None:
    """A caller not in any trunk's --inbound-from gets 407 and the trunk never sees it."""
    uas = await sipp_factory("uas")
    hub.store.add_trunk("carrier-out", "127.0.0.1", port=uas.local_port, prefix="9")
    result = await run_sipp(
        tmp_path, "uac", remote=f"127.0.0.1:{sip_port(hub)}", service="9123", rate=10,
        max_calls=5, timeout=scaled(20), wait_timeout=scaled(40))
    assert result.returncode != 0
    assert result.stats is not None and result.stats.successful == 0
    uas_result = await uas.stop()
    assert uas_result.stats is not None and uas_result.stats.counter("IncomingCall") == 0, \
        uas_result.describe()

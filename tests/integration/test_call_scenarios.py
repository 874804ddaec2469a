"""Call scenarios through the hub, each proven with real peers: SIPp and baresip.

Custom SIPp scenarios live in ``scenarios/``. A SIPp "phone" registers with
``register.xml`` and answers the calls the hub sends it with an out-of-call scenario
(``-oocsf callee_*.xml``): requests whose Call-ID SIPp does not know run that scenario.
A SIPp caller exits 0 only if every message it expected came, in order, and nothing
else did: its exit status is the assertion about what the caller saw. What the
callee saw is read back from its ``-trace_msg`` log.
"""

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bridges.events import Event, LegStateChanged, RegistrationChanged, SecurityAlert
from hub.server import Hub
from hub.store import BindingRecord
from tests.integration.conftest import sip_port
from tests.peers import scaled
from tests.peers.baresip import PhoneFactory
from tests.peers.sipp import Sipp, SippFactory, SippResult

pytestmark = pytest.mark.peers

SCENARIOS = Path(__file__).parent / "scenarios"
TRACE = ("-trace_msg", "-message_file", "messages.log")


# ---------------------------------------------------------------- helpers


def hub_address(hub: Hub) -> str:
    return f"127.0.0.1:{sip_port(hub)}"


async def hub_event(
    hub: Hub, matches: Callable[[Event], bool], timeout: float | None = None
) -> Event:
    """The first event on the hub's bus (history included) that ``matches``."""
    for event in hub.bus.history:
        if matches(event):
            return event
    found: asyncio.Future[Event] = asyncio.get_running_loop().create_future()

    def on_event(event: Event) -> None:
        if matches(event) and not found.done():
            found.set_result(event)

    unsubscribe = hub.bus.subscribe(on_event)
    try:
        return await asyncio.wait_for(found, scaled(10) if timeout is None else timeout)
    finally:
        unsubscribe()


@dataclass(frozen=True)
class Traced:
    """One SIP message in a SIPp ``-trace_msg`` log."""

    sent: bool
    text: str

    @property
    def first_line(self) -> str:
        return self.text.split("\n", 1)[0].strip()

    @property
    def status(self) -> int | None:
        match = re.match(r"SIP/2\.0 (\d{3}) ", self.first_line)
        return int(match.group(1)) if match else None

    @property
    def method(self) -> str | None:
        return None if self.status is not None else self.first_line.split(" ", 1)[0]

    @property
    def body(self) -> str:
        parts = re.split(r"\r?\n\r?\n", self.text, maxsplit=1)
        return parts[1] if len(parts) == 2 else ""

    def header(self, name: str) -> str | None:
        match = re.search(
            rf"^{re.escape(name)}\s*:\s*(.*?)\r?$", self.text, re.MULTILINE | re.IGNORECASE
        )
        return match.group(1).strip() if match else None

    @property
    def sdp_media(self) -> tuple[str, int, str] | None:
        """(connection address, audio port, direction) of an SDP body, or None."""
        body = self.body
        host = re.search(r"^c=IN IP4 (\S+)", body, re.MULTILINE)
        port = re.search(r"^m=audio (\d+) ", body, re.MULTILINE)
        if host is None or port is None:
            return None
        direction = re.search(r"^a=(sendrecv|sendonly|recvonly|inactive)\s*$", body, re.MULTILINE)
        return host.group(1), int(port.group(1)), direction.group(1) if direction else "sendrecv"


_TRACE_ENTRY = re.compile(
    r"^-{20,} [^\n]*\n\w+ message (sent|received) [^\n]*:\n\n(.*?)(?=^-{20,} |\Z)",
    re.MULTILINE | re.DOTALL,
)


async def wait_until(condition: Callable[[], bool], timeout: float | None = None) -> None:
    """Wait for a condition on hub state that no event announces (a counter)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (scaled(10) if timeout is None else timeout)
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def trace(sipp: Sipp) -> list[Traced]:
    """Every message SIPp sent or received so far, in order."""
    try:
        text = (sipp.workdir / "messages.log").read_text(errors="replace")
    except FileNotFoundError:
        return []
    return [
        Traced(kind == "sent", body.strip("\n") + "\n") for kind, body in _TRACE_ENTRY.findall(text)
    ]


async def wait_trace(
    sipp: Sipp, matches: Callable[[Traced], bool], timeout: float | None = None
) -> Traced:
    """The first traced message that ``matches``, waiting for SIPp to log it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (scaled(10) if timeout is None else timeout)
    while True:
        for message in trace(sipp):
            if matches(message):
                return message
        if loop.time() > deadline:
            seen = [("> " if m.sent else "< ") + m.first_line for m in trace(sipp)]
            raise AssertionError(f"no such message in {sipp.workdir}; seen: {seen}")
        await asyncio.sleep(0.05)


def received(method_or_status: str | int) -> Callable[[Traced], bool]:
    if isinstance(method_or_status, int):
        return lambda m: not m.sent and m.status == method_or_status
    return lambda m: not m.sent and m.method == method_or_status


def sent(method_or_status: str | int) -> Callable[[Traced], bool]:
    if isinstance(method_or_status, int):
        return lambda m: m.sent and m.status == method_or_status
    return lambda m: m.sent and m.method == method_or_status


def registered(user: str) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, RegistrationChanged) and e.user == user and e.contacts > 0


async def sipp_phone(
    hub: Hub, sipp_factory: SippFactory, user: str, callee: str, *, expires: int = 60
) -> Sipp:
    """A SIPp registered as ``user`` that answers calls with ``callee`` (an XML name)."""
    phone = await sipp_factory(
        SCENARIOS / "register.xml",
        remote=hub_address(hub),
        service=user,
        auth_user=user,
        auth_pass=f"pw-{user}",
        max_calls=1,
        call_duration_ms=round(scaled(120) * 1000),
        extra_args=("-key", "expires", str(expires), "-oocsf", str(SCENARIOS / callee), *TRACE),
    )
    await hub_event(hub, registered(user))
    return phone


async def dial(
    hub: Hub,
    sipp_factory: SippFactory,
    scenario: str,
    callee: str,
    *,
    user: str = "alice",
    password: str | None = None,
    **options: Any,
) -> Sipp:
    """Start a SIPp caller scenario calling ``callee`` as ``user`` through the hub."""
    return await sipp_factory(
        SCENARIOS / scenario,
        remote=hub_address(hub),
        service=callee,
        auth_user=user,
        auth_pass=password or f"pw-{user}",
        max_calls=1,
        timeout=scaled(30),
        extra_args=TRACE,
        **options,
    )


async def call(
    hub: Hub, sipp_factory: SippFactory, scenario: str, callee: str, **options: Any
) -> Sipp:
    """Run a SIPp caller scenario to its end; return the finished SIPp."""
    caller = await dial(hub, sipp_factory, scenario, callee, **options)
    await caller.wait(scaled(40))
    return caller


def statuses(sipp: Sipp, cseq: str) -> list[int]:
    """Status codes of the responses ``sipp`` received for the request with this CSeq."""
    return [
        m.status
        for m in trace(sipp)
        if m.status is not None and not m.sent and m.header("CSeq") == cseq
    ]


def assert_ok(result: SippResult) -> None:
    assert result.ok and result.stats is not None and result.stats.successful == 1, (
        result.describe()
    )


async def stop(phone: Sipp) -> None:
    """Stop a SIPp phone paused in its registration (SIGUSR1 would wait for the pause)."""
    await phone.stop(timeout=scaled(0.2))


def relay_range(hub: Hub) -> range:
    low, high = hub.config.rtp_ports
    return range(low, high + 1)


def assert_hub_idle(hub: Hub) -> None:
    assert hub.gateway.calls == {}, hub.gateway.calls
    assert not hub.engine.bridges, "every media bridge is closed"


@pytest.fixture(autouse=True)
def no_hub_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Whatever the peers saw, the hub must not have swallowed an exception."""
    yield
    errors = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


# ---------------------------------------------------------------- scenarios


async def test_ringing_and_early_media_reach_the_caller_through_the_relay(
    hub: Hub, sipp_factory: SippFactory
) -> None:
    bob = await sipp_phone(hub, sipp_factory, "bob", "callee_early_media.xml")
    alice = await call(hub, sipp_factory, "caller_early_media.xml", "bob", call_duration_ms=200)
    assert_ok(alice.result())
    await wait_trace(bob, received("BYE"))
    await stop(bob)
    seen_by_alice = trace(alice)
    early = next(m for m in seen_by_alice if received(183)(m))
    answer = next(
        m for m in seen_by_alice if received(200)(m) and "INVITE" in (m.header("CSeq") or "")
    )
    callee_port = bob.media_port
    media = early.sdp_media
    assert media is not None, early.text
    host, port, _ = media
    assert host == hub.engine.advertised_host
    assert port in relay_range(hub) and port != callee_port
    assert answer.sdp_media is not None and answer.sdp_media[:2] == (host, port)
    # And the callee was offered the relay's other side, not alice's own address.
    offer = next(m for m in trace(bob) if received("INVITE")(m))
    assert offer.sdp_media is not None
    assert offer.sdp_media[1] in relay_range(hub) and offer.sdp_media[1] != alice.media_port
    assert statuses(alice, "2 INVITE") == [100, 180, 183, 200]
    assert_hub_idle(hub)


async def test_busy_callee_gives_the_caller_486(hub: Hub, sipp_factory: SippFactory) -> None:
    bob = await sipp_phone(hub, sipp_factory, "bob", "callee_busy.xml")
    alice = await call(hub, sipp_factory, "caller_busy.xml", "bob")
    assert_ok(alice.result())
    await wait_trace(bob, received("ACK"))
    await stop(bob)
    assert hub.gateway.stats["failed"] == 1
    assert_hub_idle(hub)


async def test_unanswered_call_times_out_with_480_and_cancels_the_callee(
    hub: Hub, sipp_factory: SippFactory
) -> None:
    hub.gateway.ring_timeout = 3.0
    bob = await sipp_phone(hub, sipp_factory, "bob", "callee_ring_only.xml")
    started = time.monotonic()
    alice = await call(hub, sipp_factory, "caller_unavailable.xml", "bob")
    assert_ok(alice.result())
    assert time.monotonic() - started >= 3.0
    assert statuses(alice, "2 INVITE") == [100, 180, 480]
    cancel = await wait_trace(bob, received("CANCEL"))
    await wait_trace(bob, sent(487))
    await wait_trace(bob, received("ACK"))
    await stop(bob)
    assert cancel.header("Call-ID") == next(m for m in trace(bob) if received("INVITE")(m)).header(
        "Call-ID"
    )
    assert_hub_idle(hub)


async def test_ring_timeout_cancels_a_callee_that_only_sent_100_trying(
    hub: Hub, sipp_factory: SippFactory
) -> None:
    hub.gateway.ring_timeout = 1.0
    bob = await sipp_phone(hub, sipp_factory, "bob", "callee_trying_only.xml")
    alice = await call(hub, sipp_factory, "caller_unavailable.xml", "bob")
    assert_ok(alice.result())
    await wait_trace(bob, received("CANCEL"))
    await wait_trace(bob, received("ACK"))
    await stop(bob)
    assert_hub_idle(hub)


async def test_unknown_user_gets_404_and_unregistered_user_480(
    hub: Hub, sipp_factory: SippFactory
) -> None:
    alice = await call(hub, sipp_factory, "caller_not_found.xml", "nobody")
    assert_ok(alice.result())
    # carol exists but has no phone registered.
    alice = await call(hub, sipp_factory, "caller_unavailable.xml", "carol")
    assert_ok(alice.result())
    assert hub.gateway.stats["calls_total"] == 0, "neither call got as far as a relay"
    assert_hub_idle(hub)


async def test_caller_cancels_while_ringing(hub: Hub, sipp_factory: SippFactory) -> None:
    bob = await sipp_phone(hub, sipp_factory, "bob", "callee_ring_only.xml")
    alice = await call(hub, sipp_factory, "caller_cancel.xml", "bob", call_duration_ms=300)
    assert_ok(alice.result())
    assert statuses(alice, "2 CANCEL") == [200]
    assert statuses(alice, "2 INVITE")[-1] == 487
    await wait_trace(bob, received("CANCEL"))
    await wait_trace(bob, sent(487))
    await wait_trace(bob, received("ACK"))
    await stop(bob)
    assert_hub_idle(hub)


async def test_hold_and_resume_pass_through_and_glare_gets_491(
    hub: Hub, sipp_factory: SippFactory
) -> None:
    bob = await sipp_phone(hub, sipp_factory, "bob", "callee_hold_glare.xml")
    alice = await call(hub, sipp_factory, "caller_hold_resume.xml", "bob")
    assert_ok(alice.result())
    await wait_trace(bob, sent(200))
    await wait_trace(bob, received("BYE"))
    await stop(bob)
    # What alice saw: both re-INVITEs answered 200, the answers on the relay's A side.
    assert statuses(alice, "3 INVITE")[-1] == 200
    assert statuses(alice, "4 INVITE")[-1] == 200
    answers = [
        m.sdp_media
        for m in trace(alice)
        if received(200)(m) and m.header("CSeq") in ("2 INVITE", "3 INVITE", "4 INVITE")
    ]
    assert len({a[:2] for a in answers if a}) == 1, answers
    assert [a[2] for a in answers if a] == ["sendrecv", "recvonly", "sendrecv"]
    relay_a = answers[0]
    assert relay_a is not None and relay_a[0] == hub.engine.advertised_host
    assert relay_a[1] in relay_range(hub) and relay_a[1] != bob.media_port
    # What bob saw: the hold and the resume, offering the relay's B side.
    offers = [m.sdp_media for m in trace(bob) if received("INVITE")(m)]
    assert [o[2] for o in offers if o] == ["sendrecv", "sendonly", "sendrecv"]
    assert len({o[:2] for o in offers if o}) == 1, offers
    relay_b = offers[0]
    assert relay_b is not None and relay_b[1] in relay_range(hub)
    assert relay_b[1] not in (relay_a[1], alice.media_port)
    # Bob's own re-INVITE, sent while the hold was pending, was refused with 491.
    assert statuses(bob, "101 INVITE") == [491]
    # The hub saw alice's leg go on hold and come back.
    changes = [
        e.new for e in hub.bus.history if isinstance(e, LegStateChanged) and e.new in ("held", "up")
    ]
    assert changes[-2:] == ["held", "up"], changes
    assert_hub_idle(hub)


async def test_phones_hold_and_resume_each_other_through_the_relay(
    hub: Hub, phone_factory: PhoneFactory
) -> None:
    """alice holds and resumes, then bob does: each re-INVITE reaches the other phone
    offering the relay's address, is answered, and the holder's leg goes held and back."""
    registrar = ("127.0.0.1", sip_port(hub))
    # "-s": each phone prints every SIP message it sends and receives.
    alice = await phone_factory("alice", password="pw-alice", registrar=registrar, sip_trace=True)
    bob = await phone_factory("bob", password="pw-bob", registrar=registrar, sip_trace=True)
    await alice.wait_registered()
    await bob.wait_registered()
    await alice.dial(f"sip:bob@127.0.0.1:{sip_port(hub)}")
    await alice.wait_event("CALL_ESTABLISHED")
    await bob.wait_event("CALL_ESTABLISHED")
    [ongoing] = hub.gateway.calls.values()
    assert ongoing.b is not None and ongoing.b.leg is not None
    seen: list[Event] = []
    for holder, listener, holder_leg, listener_side in (
        (alice, bob, ongoing.a_leg, ongoing.b.media),
        (bob, alice, ongoing.b.leg, ongoing.a_media),
    ):
        since = listener.output_position()
        for command, direction, leg_state in (
            ("hold", "sendonly", "held"),
            ("resume", "sendrecv", "up"),
        ):
            await holder.command(command)
            offer = await listener.wait_output(
                rf"\nINVITE sip:[^\x1b]*?\nc=IN IP4 (\S+)\r?\n[^\x1b]*?\nm=audio (\d+) "
                rf"[^\x1b]*?\na={direction}\r?\n",
                since=since,
            )
            since = offer.end()
            assert (offer.group(1), int(offer.group(2))) == listener_side.local_address
            await listener.wait_output(
                r"\nSIP/2\.0 200 OK\r?\n[^\x1b]*?CSeq: \d+ INVITE", since=since
            )
            changed = await hub_event(
                hub,
                lambda e, leg=holder_leg.id, state=leg_state: (
                    isinstance(e, LegStateChanged)
                    and e.leg_id == leg
                    and e.new == state
                    and e.old != "ringing"
                    and all(e is not old for old in seen)
                ),
            )
            seen.append(changed)
        await wait_until(  # once the answer is through
            lambda: all(leg.direction == "sendrecv" for leg in ongoing.media.legs.values()))
    await alice.hangup()
    await bob.wait_event("CALL_CLOSED")
    assert_hub_idle(hub)


async def test_hub_answers_options_stray_bye_and_exhausted_max_forwards(
    hub: Hub, sipp_factory: SippFactory
) -> None:
    bob = await sipp_phone(hub, sipp_factory, "bob", "callee_busy.xml")
    alice = await call(hub, sipp_factory, "stray_requests.xml", "bob")
    assert_ok(alice.result())
    assert statuses(alice, "1 OPTIONS") == [200]
    options_ok = next(m for m in trace(alice) if received(200)(m))
    allowed = {method.strip() for method in (options_ok.header("Allow") or "").split(",")}
    assert {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER"} <= allowed
    assert statuses(alice, "2 BYE") == [481]
    assert statuses(alice, "3 INVITE") == [407]
    assert statuses(alice, "4 INVITE")[-1] == 483
    await stop(bob)
    assert not any(received("INVITE")(m) for m in trace(bob)), "bob's phone never rang"
    assert hub.gateway.stats["calls_total"] == 0
    assert_hub_idle(hub)


async def test_wrong_password_invite_gets_407_and_never_rings_the_callee(
    hub: Hub, phone_factory: PhoneFactory, sipp_factory: SippFactory
) -> None:
    bob = await phone_factory(
        "bob", password="pw-bob", answermode="manual", registrar=("127.0.0.1", sip_port(hub))
    )
    await bob.wait_registered()
    intruder = await call(
        hub, sipp_factory, "caller_wrong_password.xml", "bob", password="not-pw-alice"
    )
    assert_ok(intruder.result())
    assert statuses(intruder, "1 INVITE")[-1] == 407
    assert statuses(intruder, "2 INVITE") == [407]
    assert hub.gateway.stats["auth_failures"] == 1
    assert hub.gateway.stats["calls_total"] == 0
    # The right password does reach bob: his phone rings, he answers.
    alice = await dial(hub, sipp_factory, "caller_answered.xml", "bob", call_duration_ms=300)
    await bob.wait_event("CALL_INCOMING")
    await bob.accept()
    assert_ok(await alice.wait(scaled(20)))
    await bob.wait_event("CALL_CLOSED")
    calls = [
        e.type for e in bob.events if e.type in ("CALL_INCOMING", "CALL_ESTABLISHED", "CALL_CLOSED")
    ]
    assert calls == ["CALL_INCOMING", "CALL_ESTABLISHED", "CALL_CLOSED"], (
        "bob rang once: for the authenticated call only"
    )
    assert hub.gateway.stats["calls_total"] == 1 and hub.gateway.stats["answered"] == 1
    assert_hub_idle(hub)


async def test_wrong_password_phone_never_registers_and_its_source_is_blocked(
    hub: Hub,
    phone_factory: PhoneFactory,
    sipp_factory: SippFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """baresip (libre 1.1) answers every fresh 401 with the same wrong password,
    so one misconfigured phone is also a brute-force attempt: the 10th failure
    blocks its address, and from then on the hub drops its requests unanswered."""
    phone = await phone_factory(
        "alice", password="not-pw-alice", sip_trace=True, registrar=("127.0.0.1", sip_port(hub))
    )
    alert = await hub_event(hub, lambda e: isinstance(e, SecurityAlert))
    assert isinstance(alert, SecurityAlert) and alert.source == "127.0.0.1"
    assert hub.gateway.stats["auth_failures"] == hub.gateway.throttle.max_failures == 10
    assert hub.gateway.throttle.blocked("127.0.0.1", time.time())
    assert any(
        "blocking 127.0.0.1" in r.getMessage()
        for r in caplog.records
        if r.name == "gateways.security"
    )
    # The first REGISTER and each of the 10 with credentials got a 401 (the phone's
    # SIP trace shows them); none got a 200.
    since = 0
    for _ in range(11):
        since = (await phone.wait_output(r"SIP/2\.0 401 ", since=since)).end()
    assert hub.store.bindings("alice", time.time()) == []
    # The phone's next REGISTER, and anything else from that address, goes unanswered.
    await wait_until(lambda: hub.endpoint.stats["dropped"] > 0)
    probe = await call(hub, sipp_factory, "blocked_probe.xml", "hub")
    assert_ok(probe.result())
    assert trace(probe) and not any(m.status for m in trace(probe))
    assert hub.gateway.stats["auth_failures"] == 10, "dropped requests are not even checked"
    assert "OK" not in await phone.reginfo()
    heard = phone.stdout_path.read_text(errors="replace")
    assert heard.count("SIP/2.0 401 ") == 11 and "SIP/2.0 200 " not in heard
    # Its un-REGISTER on quit would be dropped too: don't wait for it.
    await phone.stop(timeout=scaled(0.3))


async def test_scanner_user_agent_gets_no_answer(hub: Hub, sipp_factory: SippFactory) -> None:
    dropped = hub.endpoint.stats["dropped"]
    scan = await call(hub, sipp_factory, "scanner.xml", "100")
    assert_ok(scan.result())
    assert statuses(scan, "1 OPTIONS") == []
    assert statuses(scan, "2 OPTIONS") == [200]
    assert hub.endpoint.stats["dropped"] == dropped + 1
    # Silence is not a block: the scanner's address may still call.
    assert not hub.gateway.throttle.blocked("127.0.0.1", time.time())


async def test_registration_refresh_then_unregister(hub: Hub, sipp_factory: SippFactory) -> None:
    """REGISTER, refresh (same Call-ID, next CSeq), Expires: 0; then bob is unreachable."""
    seen: list[list[BindingRecord]] = []
    hub.bus.subscribe(
        lambda e: (
            seen.append(hub.store.bindings("bob", time.time()))
            if isinstance(e, RegistrationChanged) and e.user == "bob"
            else None
        )
    )
    bob = await sipp_factory(
        SCENARIOS / "register.xml",
        remote=hub_address(hub),
        service="bob",
        auth_user="bob",
        auth_pass="pw-bob",
        max_calls=1,
        call_duration_ms=300,
        timeout=scaled(20),
        extra_args=("-key", "expires", "60", *TRACE),
    )
    assert_ok(await bob.wait(scaled(30)))
    assert statuses(bob, "1 REGISTER") == [401]
    assert [statuses(bob, f"{n} REGISTER") for n in (2, 3, 4)] == [[200], [200], [200]]
    assert len(seen) == 3, seen
    (first,), (refreshed,), gone = seen
    assert (first.cseq, refreshed.cseq) == (2, 3)
    assert first.call_id == refreshed.call_id and first.contact == refreshed.contact
    assert refreshed.expires_at > first.expires_at
    assert refreshed.expires_at == pytest.approx(time.time() + 60, abs=5)
    assert gone == [] and hub.store.bindings("bob", time.time()) == []
    alice = await call(hub, sipp_factory, "caller_unavailable.xml", "bob")
    assert_ok(alice.result())


async def test_phone_refreshes_and_unregisters_when_it_quits(
    hub: Hub, phone_factory: PhoneFactory
) -> None:
    hub.gateway.registrar.min_expires = 2
    phone = await phone_factory(
        "alice", password="pw-alice", regint=3, registrar=("127.0.0.1", sip_port(hub))
    )
    first = await hub_event(hub, registered("alice"))
    [binding] = hub.store.bindings("alice", time.time())
    # libre refreshes at 90 % of the interval the registrar granted.
    await hub_event(hub, lambda e: registered("alice")(e) and e is not first, timeout=scaled(10))
    [refreshed] = hub.store.bindings("alice", time.time())
    assert refreshed.contact == binding.contact and refreshed.call_id == binding.call_id
    assert refreshed.cseq > binding.cseq and refreshed.expires_at > binding.expires_at
    await phone.stop()
    await hub_event(
        hub, lambda e: isinstance(e, RegistrationChanged) and e.user == "alice" and e.contacts == 0
    )
    assert hub.store.bindings("alice", time.time()) == []


async def test_registration_expires_when_not_refreshed(hub: Hub, sipp_factory: SippFactory) -> None:
    hub.gateway.registrar.min_expires = 2
    bob = await sipp_phone(hub, sipp_factory, "bob", "callee_busy.xml", expires=2)
    [binding] = hub.store.bindings("bob", time.time())
    assert binding.expires_at - time.time() <= 2
    # bob's SIPp is alive but silent from now on, like a phone that lost its network.
    await asyncio.sleep(binding.expires_at - time.time() + 0.1)
    assert hub.store.bindings("bob", time.time()) == []
    alice = await call(hub, sipp_factory, "caller_unavailable.xml", "bob")
    assert_ok(alice.result())
    await stop(bob)
    assert not any(received("INVITE")(m) for m in trace(bob))


async def test_stopping_the_hub_hangs_up_calls_in_progress(
    hub: Hub, phone_factory: PhoneFactory
) -> None:
    registrar = ("127.0.0.1", sip_port(hub))
    alice = await phone_factory("alice", password="pw-alice", registrar=registrar)
    bob = await phone_factory("bob", password="pw-bob", registrar=registrar)
    await alice.wait_registered()
    await bob.wait_registered()
    await alice.dial(f"sip:bob@127.0.0.1:{sip_port(hub)}")
    await alice.wait_event("CALL_ESTABLISHED")
    await bob.wait_event("CALL_ESTABLISHED")
    assert len(hub.gateway.calls) == 1
    await hub.stop()
    await alice.wait_event("CALL_CLOSED")
    await bob.wait_event("CALL_CLOSED")
    assert hub.gateway.calls == {}
    assert not hub.engine.bridges
    await hub.stop()  # a second stop (the fixture's) changes nothing
    # With the hub gone the phones' un-REGISTER can only time out: don't wait for it.
    await asyncio.gather(alice.stop(timeout=scaled(0.3)), bob.stop(timeout=scaled(0.3)))

"""The peer harness proven without the hub: phones call each other, SIPp calls SIPp.

If these fail, hub tests built on the harness mean nothing.
"""

import asyncio
import hashlib
import re
import subprocess
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest

from tests.peers import LOOPBACK, scaled
from tests.peers.audio import (
    active_seconds,
    band_energy_ratio,
    dominant_frequency,
    read_wav,
    write_tone_wav,
)
from tests.peers.baresip import PhoneFactory, Transport
from tests.peers.ports import free_port_block, free_udp_port
from tests.peers.sipp import SippFactory, run_sipp

# ---------------------------------------------------------------- audio helpers


def test_dominant_frequency_of_a_tone(tmp_path: Path) -> None:
    wav = write_tone_wav(tmp_path / "tone.wav", 1000.0, 2.0)
    assert dominant_frequency(wav) == pytest.approx(1000.0, abs=1.0)
    assert band_energy_ratio(wav, 1000.0) > 0.99
    assert band_energy_ratio(wav, 440.0) < 0.01
    assert active_seconds(wav) == pytest.approx(2.0, abs=0.25)


def test_dominant_frequency_ignores_silence(tmp_path: Path) -> None:
    tone = write_tone_wav(tmp_path / "tone.wav", 440.0, 1.0, rate=16000, amplitude=0.05)
    silent = write_tone_wav(tmp_path / "silent.wav", 0.0, 1.0, rate=16000, amplitude=0.0)
    joined = tmp_path / "joined.wav"
    # 3 s of silence then 1 s of a quiet tone: the tone must still win.
    with wave.open(str(silent), "rb") as s, wave.open(str(tone), "rb") as t:
        quiet, sound = s.readframes(s.getnframes()), t.readframes(t.getnframes())
        params = t.getparams()
    with wave.open(str(joined), "wb") as out:
        out.setparams(params)
        out.writeframes(quiet * 3 + sound)
    assert dominant_frequency(joined) == pytest.approx(440.0, abs=1.0)
    assert active_seconds(joined) == pytest.approx(1.0, abs=0.25)
    with pytest.raises(ValueError, match="silent"):
        dominant_frequency(silent)


def test_read_wav_tolerates_an_unfinished_header(tmp_path: Path) -> None:
    """A WAV still being written says its data is 0 bytes long: read what is there."""
    wav = write_tone_wav(tmp_path / "tone.wav", 440.0, 1.0)
    blob = bytearray(wav.read_bytes())
    data_at = blob.index(b"data")
    blob[data_at + 4 : data_at + 8] = bytes(4)
    wav.write_bytes(bytes(blob))
    rate, samples = read_wav(wav)
    assert (rate, len(samples)) == (8000, 8000)
    assert dominant_frequency(wav) == pytest.approx(440.0, abs=1.0)


@pytest.mark.peers
@pytest.mark.parametrize("encoding", [["-b", "24"], ["-e", "floating-point", "-b", "32"]])
def test_read_wav_of_other_formats(tmp_path: Path, encoding: list[str]) -> None:
    wav = tmp_path / "stereo.wav"
    sox = ["sox", "-n", "-r", "48000", "-c", "2", *encoding, str(wav), "synth", "1", "sine", "700"]
    subprocess.run(sox, check=True)
    rate, samples = read_wav(wav)
    assert (rate, len(samples)) == (48000, 48000)
    assert dominant_frequency(wav) == pytest.approx(700.0, abs=1.0)


# ---------------------------------------------------------------- baresip


@pytest.mark.peers
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_two_phones_exchange_tones_directly(
    phone_factory: PhoneFactory, transport: Transport
) -> None:
    alice = await phone_factory("alice", tone_hz=440.0, transport=transport)
    bob = await phone_factory("bob", tone_hz=1000.0, transport=transport, sip_trace=True)

    await alice.dial(bob.sip_uri)
    established = await alice.wait_event("CALL_ESTABLISHED")
    incoming = await bob.wait_event("CALL_ESTABLISHED")
    assert established.direction == "outgoing"
    assert incoming.direction == "incoming"
    assert established.call_id == incoming.call_id
    invite = await bob.wait_output(r"^INVITE sip:bob@\S+ SIP/2\.0")
    via = await bob.wait_output(r"^Via: SIP/2\.0/(\w+) ", since=invite.end())
    assert via.group(1) == transport.upper()

    await asyncio.sleep(3.0)  # the call under test: three seconds of audio each way
    await alice.hangup()
    await alice.wait_event("CALL_CLOSED")
    closed = await bob.wait_event("CALL_CLOSED")
    assert closed.call_id == incoming.call_id

    [alice_heard] = alice.dec_wavs()
    [bob_heard] = bob.dec_wavs()
    [alice_sent] = alice.enc_wavs()
    assert dominant_frequency(alice_sent) == pytest.approx(440.0, abs=5.0)
    assert dominant_frequency(alice_heard) == pytest.approx(1000.0, abs=5.0), alice.log_tail()
    assert dominant_frequency(bob_heard) == pytest.approx(440.0, abs=5.0), bob.log_tail()
    assert active_seconds(alice_heard) > 2.0
    assert active_seconds(bob_heard) > 2.0


@pytest.mark.peers
async def test_manual_answer_and_second_call(phone_factory: PhoneFactory) -> None:
    """``accept`` answers a ringing call, and events of one call never satisfy the next."""
    alice = await phone_factory("alice")
    bob = await phone_factory("bob", answermode="manual")

    for _ in range(2):
        await alice.dial(bob.sip_uri)
        ringing = await bob.wait_event("CALL_INCOMING")
        await alice.wait_event("CALL_RINGING")
        await bob.accept()
        established = await alice.wait_event("CALL_ESTABLISHED")
        assert established.call_id == ringing.call_id
        await bob.hangup()
        closed = await alice.wait_event("CALL_CLOSED")
        assert closed.call_id == ringing.call_id
        await bob.wait_event("CALL_CLOSED")


@dataclass
class _FakeRegistrar(asyncio.DatagramProtocol):
    """Just enough of a registrar: 401 with a digest challenge, then 200 if it checks out."""

    password: str
    realm: str = "harness"
    nonce: str = "5f2b9d0c"
    requests: "asyncio.Queue[str]" = field(default_factory=asyncio.Queue)
    transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        text = data.decode()
        head, _, _ = text.partition("\r\n\r\n")
        lines = head.split("\r\n")
        copied = [h for h in lines[1:] if re.match(r"(?i)(via|from|to|call-id|cseq):", h)]
        auth = next((h for h in lines if h.lower().startswith("authorization:")), None)
        if auth is None:
            status = "401 Unauthorized"
            extra = [f'WWW-Authenticate: Digest realm="{self.realm}", nonce="{self.nonce}"']
        elif self._valid(lines[0].split()[0], auth):
            status = "200 OK"
            extra = [h for h in lines if h.lower().startswith("contact:")]
        else:
            status = "403 Forbidden"
            extra = []
        reply = "\r\n".join([f"SIP/2.0 {status}", *copied, *extra, "Content-Length: 0", "", ""])
        self.transport.sendto(reply.encode(), addr)
        self.requests.put_nowait(text)

    def _valid(self, method: str, auth: str) -> bool:
        fields = dict(re.findall(r'(\w+)="?([^",]*)"?', auth))

        def md5(text: str) -> str:
            return hashlib.md5(text.encode()).hexdigest()

        ha1 = md5(f"{fields['username']}:{self.realm}:{self.password}")
        ha2 = md5(f"{method}:{fields['uri']}")
        if "qop" in fields:
            expected = md5(
                f"{ha1}:{self.nonce}:{fields['nc']}:{fields['cnonce']}:{fields['qop']}:{ha2}"
            )
        else:
            expected = md5(f"{ha1}:{self.nonce}:{ha2}")
        return fields.get("response") == expected


@pytest.mark.peers
async def test_phone_registers_with_digest_on_a_custom_port(phone_factory: PhoneFactory) -> None:
    loop = asyncio.get_running_loop()
    port = free_udp_port()
    transport, registrar = await loop.create_datagram_endpoint(
        lambda: _FakeRegistrar(password="s3cret"), local_addr=(LOOPBACK, port)
    )
    try:
        alice = await phone_factory(
            "alice", password="s3cret", registrar=(LOOPBACK, port), regint=60
        )
        await alice.wait_registered()

        first = await asyncio.wait_for(registrar.requests.get(), scaled(5.0))
        second = await asyncio.wait_for(registrar.requests.get(), scaled(5.0))
        assert first.startswith(f"REGISTER sip:{LOOPBACK}:{port};transport=udp SIP/2.0")
        assert f"To: <sip:alice@{LOOPBACK}:{port}>" in first
        assert 'Authorization: Digest username="alice"' in second
        assert re.search(rf"Contact: <sip:alice-[^@]*@{LOOPBACK}:{alice.sip_port}>", second)

        await alice.stop()  # a registered phone un-registers on the way out
        bye = await asyncio.wait_for(registrar.requests.get(), scaled(5.0))
        assert re.search(r"(?im)^Contact:.*expires=0", bye)
    finally:
        transport.close()


# ---------------------------------------------------------------- SIPp


@pytest.mark.peers
async def test_sipp_uac_to_uas(tmp_path: Path, sipp_factory: SippFactory) -> None:
    uas = await sipp_factory("uas")
    result = await run_sipp(
        tmp_path,
        "uac",
        remote=f"{LOOPBACK}:{uas.local_port}",
        rate=50,
        max_calls=200,
        limit=100,
        timeout=scaled(60.0),
    )
    assert result.ok, result.describe()
    assert result.stats is not None
    assert result.stats.successful == 200
    assert result.stats.created == 200
    assert result.errors() == ""

    server = await uas.stop()
    assert server.returncode == 0, server.describe()
    assert server.stats is not None
    assert (server.stats.successful, server.stats.failed) == (200, 0), server.describe()


@pytest.mark.peers
async def test_sipp_reports_failures(tmp_path: Path) -> None:
    """Nobody listening: every INVITE times out and the result says so."""
    [silent_port] = free_port_block(1)
    result = await run_sipp(
        tmp_path,
        "uac",
        remote=f"{LOOPBACK}:{silent_port}",
        rate=10,
        max_calls=2,
        recv_timeout_ms=500,
        timeout=scaled(30.0),
    )
    assert not result.ok
    assert result.returncode == 1, result.describe()
    assert result.stats is not None
    assert result.stats.failed == 2

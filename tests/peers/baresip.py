"""A real SIP phone for tests: baresip 1.0.0 driven over its ctrl_tcp socket.

A :class:`BaresipPhone` writes ``config`` and ``accounts`` into its own directory, plays a
generated tone WAV as its microphone, records what it sends and hears (sndfile module)
and is driven with netstring-framed JSON over TCP (ctrl_tcp module)::

    phone = BaresipPhone(tmp_path, "alice", password="secret", registrar=("127.0.0.1", 5060))
    await phone.start()
    await phone.wait_registered()
    await phone.dial("sip:bob@127.0.0.1:5060")
    await phone.wait_event("CALL_ESTABLISHED")
    ...
    await phone.stop()

What baresip 1.0.0 does that shapes this class:

- The registrar is the AOR's host and port: ``<sip:alice@127.0.0.1:5070>`` registers to
  127.0.0.1:5070 (Request-URI ``sip:127.0.0.1:5070;transport=udp``; To/From keep the
  port). ``regint=0`` sends no REGISTER at all.
- The Contact user is not the AOR user but ``alice-0x55d1...`` (user + a pointer), yet
  an INVITE whose Request-URI user is plain ``alice`` is accepted too.
- ``sip_listen`` binds UDP and TCP on the port and TCP on port + 1 (TLS), so the phone
  takes two consecutive ports.
- ctrl_tcp commands are the menu's long names without the slash (``dial``, ``hangup``,
  ``accept``, ``reginfo``, ``listcalls``, ``callstat``, ``quit``, ``uanew``...); the
  reply echoes the request's ``token``; an unknown command replies ``ok: false``.
  ``hangup`` and ``accept`` act on the current call and take no parameter.
- Events (``REGISTER_OK``, ``CALL_INCOMING``, ``CALL_RINGING``, ``CALL_ESTABLISHED``,
  ``CALL_CLOSED``, ``CALL_RTCP``...) are pushed to every ctrl connection, but only from
  when it connected: a registration that completes before we connect is only visible
  through ``reginfo``, which is why :meth:`BaresipPhone.wait_registered` asks it.
- sndfile names its dumps ``dump-YYYY-MM-DD-HH-MM-SS-{enc,dec}.wav`` in ``snd_path``:
  two calls started by one phone within the same second overwrite each other's dumps.
- On quit (or SIGTERM) a registered phone un-registers (REGISTER with expires=0) first.
"""

import asyncio
import contextlib
import itertools
import json
import re
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from tests.peers import LOOPBACK, die_with_parent, scaled
from tests.peers.audio import write_tone_wav
from tests.peers.ports import free_port_block, free_tcp_port, release_ports

Transport = Literal["udp", "tcp"]
AnswerMode = Literal["manual", "early", "auto"]

MODULE_PATH = "/usr/lib/baresip/modules"
# RTP and RTCP take two ports per call; baresip allows 4 calls per phone by default.
RTP_PORTS_PER_PHONE = 10
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Enough for a 4 GB netstring; anything longer means the stream is out of sync.
_MAX_NETSTRING_DIGITS = 10


class BaresipError(Exception):
    """The phone did not do what a test asked (died, refused a command, timed out)."""


@dataclass(frozen=True)
class CtrlResponse:
    """baresip's reply to one ctrl_tcp command."""

    ok: bool
    """False when baresip refused the command (unknown command, bad parameters)."""
    data: str
    """The text the command printed, e.g. the registration table for ``reginfo``."""


@dataclass(frozen=True)
class BaresipEvent:
    """One event pushed by baresip over ctrl_tcp."""

    type: str
    """Event name, e.g. ``REGISTER_OK``, ``CALL_INCOMING``, ``CALL_ESTABLISHED``."""
    event_class: str
    """baresip's grouping: ``register``, ``call``, ``application``, ``other``..."""
    account_aor: str | None
    """The AOR of the user agent the event is about, e.g. ``sip:alice@127.0.0.1:5060``."""
    call_id: str | None
    """SIP Call-ID of the call, for call events."""
    peer_uri: str | None
    """The remote party's URI, for call events."""
    direction: str | None
    """``incoming`` or ``outgoing``, for call events."""
    param: str | None
    """Event detail: the peer URI, a close reason (``Connection reset by peer``)..."""
    raw: Mapping[str, Any] = field(repr=False)
    """The event's JSON object as received."""

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "BaresipEvent":
        def text(key: str) -> str | None:
            value = obj.get(key)
            return None if value is None else str(value)

        return cls(
            type=str(obj.get("type", "")),
            event_class=str(obj.get("class", "")),
            account_aor=text("accountaor"),
            call_id=text("id"),
            peer_uri=text("peeruri"),
            direction=text("direction"),
            param=text("param"),
            raw=obj,
        )


def _check_loopback(host: str) -> None:
    # Not even "localhost": baresip would resolve it, and DNS is not loopback-only.
    if host != LOOPBACK:
        raise ValueError(f"peers must only talk to {LOOPBACK}, not {host!r}")


def _unique_dir(parent: Path, name: str) -> Path:
    for n in itertools.count(1):
        candidate = parent / (name if n == 1 else f"{name}-{n}")
        try:
            candidate.mkdir(parents=True)
        except FileExistsError:
            continue
        return candidate
    raise AssertionError("unreachable")


class BaresipPhone:
    """One baresip process with one account, on 127.0.0.1.

    Args:
        workdir: parent directory (a test's ``tmp_path``); the phone lives in
            ``workdir/baresip-USERNAME`` (``-2``, ``-3``... if taken).
        username: the AOR user, also the digest user unless ``auth_user`` is given.
        password: digest password (``auth_pass``); None sends no credentials.
        registrar: ``(host, port)`` of the registrar (the hub). None means no
            registration: the AOR is ``sip:USER@127.0.0.1`` and ``regint=0``.
        sip_port: the phone's own ``sip_listen`` port (also binds ``sip_port + 1``).
        rtp_ports: ``(first, last)`` RTP/RTCP port range (two ports per call);
            allocated: 10 ports.
        ctrl_port: the ctrl_tcp listen port.
        tone_hz: frequency of the generated microphone tone; ignored with ``mic_wav``.
        tone_seconds: length of the tone; after it ends the microphone is silent.
        mic_wav: play this 8 kHz mono 16-bit WAV instead of a generated tone.
        answermode: ``auto`` answers incoming calls at once; ``manual`` waits for
            :meth:`accept`.
        transport: SIP transport to the registrar and for dialled calls.
        regint: registration interval in seconds (0: do not register).
        codecs: the account's ``audio_codecs`` (e.g. ``PCMU`` or ``PCMA,PCMU``).
        auth_user: digest user name when it differs from ``username``.
        account_params: extra ``;key=value`` account parameters.
        extra_config: extra config lines (overriding the defaults of the same key).
        sip_trace: start with ``-s``: every SIP message is printed to ``stdout.log``.
        max_lifetime: baresip's own ``-t`` limit, so a crashed test leaves no phone
            behind; None for no limit.
        binary: the baresip executable.
    """

    def __init__(
        self,
        workdir: Path,
        username: str,
        *,
        password: str | None = None,
        registrar: tuple[str, int] | None = None,
        sip_port: int | None = None,
        rtp_ports: tuple[int, int] | None = None,
        ctrl_port: int | None = None,
        tone_hz: float = 440.0,
        tone_seconds: float = 60.0,
        mic_wav: Path | None = None,
        answermode: AnswerMode = "auto",
        transport: Transport = "udp",
        regint: int = 60,
        codecs: str = "PCMU",
        auth_user: str | None = None,
        account_params: Mapping[str, str] | None = None,
        extra_config: Mapping[str, str] | None = None,
        sip_trace: bool = False,
        max_lifetime: float | None = 900.0,
        binary: str = "baresip",
    ) -> None:
        if registrar is not None:
            _check_loopback(registrar[0])
        self.username = username
        self.password = password
        self.registrar = registrar
        self.transport: Transport = transport
        self.regint = regint if registrar is not None else 0
        self.answermode: AnswerMode = answermode
        self.codecs = codecs
        self.auth_user = auth_user
        self.account_params = dict(account_params or {})
        self.extra_config = dict(extra_config or {})
        self.sip_trace = sip_trace
        self.max_lifetime = max_lifetime
        self.binary = binary
        self.tone_hz = tone_hz
        self.tone_seconds = tone_seconds

        # Ports allocated here go back to the allocator once baresip has exited.
        self._allocated: list[range] = []
        if sip_port is None:
            self._allocated.append(free_port_block(2))
            sip_port = self._allocated[-1][0]
        self.sip_port = sip_port
        if rtp_ports is None:
            self._allocated.append(free_port_block(RTP_PORTS_PER_PHONE, tcp=False))
            rtp_ports = (self._allocated[-1][0], self._allocated[-1][-1])
        self.rtp_ports = rtp_ports
        if ctrl_port is None:
            ctrl_port = free_tcp_port()
            self._allocated.append(range(ctrl_port, ctrl_port + 1))
        self.ctrl_port = ctrl_port

        self.dir = _unique_dir(workdir, f"baresip-{username}")
        self.rec_dir = self.dir / "rec"
        self.config_path = self.dir / "config"
        self.accounts_path = self.dir / "accounts"
        self.stdout_path = self.dir / "stdout.log"
        self.stderr_path = self.dir / "stderr.log"
        self.mic_wav = mic_wav if mic_wav is not None else self.dir / "mic.wav"
        self._own_mic = mic_wav is None

        self.events: list[BaresipEvent] = []
        """Every event received so far, oldest first."""
        self._consumed: set[int] = set()
        self._event_waiters: list[tuple[Callable[[BaresipEvent], bool], asyncio.Future[int]]] = []
        self._responses: dict[str, asyncio.Future[CtrlResponse]] = {}
        self._tokens = itertools.count(1)
        self._process: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._command_lock = asyncio.Lock()

    # ------------------------------------------------------------------ addresses

    @property
    def domain(self) -> str:
        """Host part of the AOR: the registrar's ``host:port``, or 127.0.0.1."""
        if self.registrar is None:
            return LOOPBACK
        host, port = self.registrar
        return f"{host}:{port}"

    @property
    def aor(self) -> str:
        """The account's address of record, as baresip prints it in events."""
        return f"sip:{self.username}@{self.domain}"

    @property
    def sip_uri(self) -> str:
        """URI that reaches this phone directly, without a registrar."""
        uri = f"sip:{self.username}@{LOOPBACK}:{self.sip_port}"
        return uri if self.transport == "udp" else f"{uri};transport={self.transport}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def returncode(self) -> int | None:
        """baresip's exit status once it has exited, else None."""
        return self._process.returncode if self._process is not None else None

    # ------------------------------------------------------------------ files

    def account_line(self) -> str:
        """The line written to ``accounts``."""
        params: dict[str, str] = {}
        if self.password is not None:
            params["auth_pass"] = self.password
        if self.auth_user is not None:
            params["auth_user"] = self.auth_user
        params["regint"] = str(self.regint)
        params["answermode"] = self.answermode
        params["audio_codecs"] = self.codecs
        params.update(self.account_params)
        tail = "".join(f";{key}={value}" for key, value in params.items())
        return f"<sip:{self.username}@{self.domain};transport={self.transport}>{tail}"

    def config_lines(self) -> dict[str, str]:
        """Single-valued config keys (``module`` lines are added by :meth:`write_files`)."""
        config = {
            "poll_method": "epoll",
            "sip_listen": f"{LOOPBACK}:{self.sip_port}",
            "net_interface": LOOPBACK,  # an interface name ("lo") fails
            # Should anything need DNS, keep the query on loopback.
            "dns_server": f"{LOOPBACK}:53",
            "audio_player": "alsa,null",
            "audio_alert": "alsa,null",
            "audio_source": f"aufile,{self.mic_wav}",
            "ausrc_srate": "8000",
            "auplay_srate": "8000",
            "audio_channels": "1",
            "rtp_ports": f"{self.rtp_ports[0]}-{self.rtp_ports[1]}",
            "module_path": MODULE_PATH,
            "snd_path": str(self.rec_dir),
            "ctrl_tcp_listen": f"{LOOPBACK}:{self.ctrl_port}",
        }
        config.update(self.extra_config)
        return config

    def write_files(self) -> None:
        """Write ``config``, ``accounts`` and the microphone WAV into :attr:`dir`."""
        self.rec_dir.mkdir(exist_ok=True)
        lines = [f"{key:<18}{value}" for key, value in self.config_lines().items()]
        lines += [
            f"module            {name}"
            for name in ("g711.so", "g722.so", "opus.so", "aufile.so", "alsa.so", "sndfile.so",
                         "ctrl_tcp.so")
        ]
        # menu.so gives the ctrl commands; stdio.so would want a terminal.
        lines += ["module_tmp        account.so", "module_app        menu.so"]
        self.config_path.write_text("\n".join(lines) + "\n")
        self.accounts_path.write_text(self.account_line() + "\n")
        if self._own_mic:
            # baresip's Opus runs its pipeline in stereo, and aufile wants a file to match.
            channels = 2 if "opus" in self.codecs.lower() else 1
            write_tone_wav(self.mic_wav, self.tone_hz, self.tone_seconds, channels=channels)

    # ------------------------------------------------------------------ lifecycle

    async def start(self, timeout: float | None = None) -> None:
        """Write the files, start baresip and connect to its ctrl socket."""
        if self._process is not None:
            raise BaresipError(f"{self.username}: already started")
        self.write_files()
        argv = [self.binary, "-f", str(self.dir)]
        if self.sip_trace:
            argv.append("-s")
        if self.max_lifetime is not None:
            argv += ["-t", str(max(1, round(self.max_lifetime)))]
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self._process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                preexec_fn=die_with_parent,
            )
        try:
            await self._connect(scaled(10.0) if timeout is None else timeout)
        except BaseException:
            await self.stop()
            raise

    async def _connect(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self._check_alive()
            try:
                reader, writer = await asyncio.open_connection(LOOPBACK, self.ctrl_port)
            except ConnectionRefusedError:
                if loop.time() > deadline:
                    raise BaresipError(
                        f"{self.username}: ctrl_tcp port {self.ctrl_port} not open after "
                        f"{timeout:.1f} s\n{self.log_tail()}"
                    ) from None
                await asyncio.sleep(0.05)
                continue
            break
        self._writer = writer
        self._reader_task = asyncio.create_task(self._read_loop(reader))

    async def stop(self, timeout: float | None = None) -> int | None:
        """Quit baresip (ctrl ``quit``, then SIGTERM, then SIGKILL); return its exit status.

        Safe to call more than once and on a phone that never started.
        """
        grace = scaled(5.0) if timeout is None else timeout
        process = self._process
        if process is not None and process.returncode is None:
            if self._writer is not None and not self._writer.is_closing():
                with contextlib.suppress(OSError):
                    self._send({"command": "quit"})
            for sig in (None, signal.SIGTERM, signal.SIGKILL):
                if sig is not None:
                    with contextlib.suppress(ProcessLookupError):
                        process.send_signal(sig)
                try:
                    await asyncio.wait_for(process.wait(), grace)
                    break
                except TimeoutError:
                    continue
        await self._close_ctrl()
        if process is None or process.returncode is not None:
            for ports in self._allocated:
                release_ports(ports)
            self._allocated.clear()
        return None if process is None else process.returncode

    async def _close_ctrl(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
            self._reader_task = None
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
            self._writer = None
        self._fail_waiters(BaresipError(f"{self.username}: stopped"))

    async def __aenter__(self) -> "BaresipPhone":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _check_alive(self) -> None:
        if self._process is None:
            raise BaresipError(f"{self.username}: not started")
        if self._process.returncode is not None:
            raise BaresipError(
                f"{self.username}: baresip exited with status {self._process.returncode}\n"
                f"{self.log_tail()}"
            )

    # ------------------------------------------------------------------ ctrl_tcp

    def _send(self, obj: Mapping[str, Any]) -> None:
        if self._writer is None:
            raise BaresipError(f"{self.username}: not connected")
        payload = json.dumps(obj).encode()
        self._writer.write(b"%d:%s," % (len(payload), payload))

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        """Read netstrings (``LEN:JSON,``) until EOF; route replies and events."""
        try:
            while True:
                try:
                    head = await reader.readuntil(b":")
                except asyncio.IncompleteReadError:
                    break  # EOF: baresip quit
                digits = head[:-1]
                if not digits.isdigit() or len(digits) > _MAX_NETSTRING_DIGITS:
                    raise BaresipError(f"{self.username}: bad netstring header {head[:40]!r}")
                body = await reader.readexactly(int(digits) + 1)
                if body[-1:] != b",":
                    raise BaresipError(f"{self.username}: netstring without trailing comma")
                self._dispatch(json.loads(body[:-1]))
        except (asyncio.IncompleteReadError, ConnectionError, BaresipError, ValueError) as exc:
            self._fail_waiters(BaresipError(f"{self.username}: ctrl connection failed: {exc}"))
            return
        self._fail_waiters(BaresipError(f"{self.username}: ctrl connection closed"))

    def _dispatch(self, obj: Mapping[str, Any]) -> None:
        if obj.get("event"):
            event = BaresipEvent.from_json(obj)
            index = len(self.events)
            self.events.append(event)
            for waiter in list(self._event_waiters):
                matches, waiting = waiter
                if not waiting.done() and matches(event):
                    self._consumed.add(index)
                    waiting.set_result(index)
                    self._event_waiters.remove(waiter)
                    break  # one event satisfies one waiter
        elif obj.get("response"):
            token = obj.get("token")
            reply = self._responses.pop(str(token), None) if token is not None else None
            if reply is not None and not reply.done():
                reply.set_result(CtrlResponse(ok=bool(obj.get("ok")), data=str(obj.get("data"))))

    def _fail_waiters(self, error: BaresipError) -> None:
        for future in self._responses.values():
            if not future.done():
                future.set_exception(error)
        self._responses.clear()
        for _, waiting in self._event_waiters:
            if not waiting.done():
                waiting.set_exception(error)
        self._event_waiters.clear()

    async def command(
        self,
        command: str,
        params: str | None = None,
        *,
        timeout: float | None = None,
        check: bool = True,
    ) -> CtrlResponse:
        """Run a ctrl_tcp command (``dial``, ``hangup``, ``reginfo``...) and return the reply.

        Raises :class:`BaresipError` if baresip answers ``ok: false`` and ``check`` is set.
        """
        self._check_alive()
        token = str(next(self._tokens))
        request: dict[str, str] = {"command": command, "token": token}
        if params is not None:
            request["params"] = params
        future: asyncio.Future[CtrlResponse] = asyncio.get_running_loop().create_future()
        async with self._command_lock:
            self._responses[token] = future
            self._send(request)
            assert self._writer is not None
            await self._writer.drain()
        try:
            response = await asyncio.wait_for(future, scaled(10.0) if timeout is None else timeout)
        except TimeoutError:
            self._responses.pop(token, None)
            raise BaresipError(
                f"{self.username}: no reply to {command!r}\n{self.log_tail()}"
            ) from None
        if check and not response.ok:
            raise BaresipError(f"{self.username}: {command} {params or ''} failed: {response.data}")
        return response

    async def dial(self, uri: str) -> CtrlResponse:
        """Start a call; follow it with ``wait_event("CALL_ESTABLISHED")``.

        A bare user (``"bob"``) is completed by baresip with the account's domain.
        """
        target = re.match(r"<?sips?:(?:[^@;>]*@)?([^:;>]+)", uri)
        if target is not None:
            _check_loopback(target.group(1))
        return await self.command("dial", uri)

    async def hangup(self) -> CtrlResponse:
        """Hang up the current call (baresip 1.0.0 ``hangup`` takes no call id)."""
        return await self.command("hangup")

    async def accept(self) -> CtrlResponse:
        """Answer the current incoming call (for ``answermode="manual"``)."""
        return await self.command("accept")

    async def reginfo(self) -> str:
        """The registration table, ANSI colours removed."""
        return _ANSI.sub("", (await self.command("reginfo")).data)

    # ------------------------------------------------------------------ waiting

    async def wait_event(
        self,
        event_type: str | None = None,
        *,
        predicate: Callable[[BaresipEvent], bool] | None = None,
        timeout: float | None = None,
    ) -> BaresipEvent:
        """Return the oldest not yet returned event of this type (and matching ``predicate``).

        Each event is returned once, so ``dial``/``wait_event("CALL_ESTABLISHED")`` twice
        in a row waits for the second call.
        """

        def matches(event: BaresipEvent) -> bool:
            return (event_type is None or event.type == event_type) and (
                predicate is None or predicate(event)
            )

        for index, event in enumerate(self.events):
            if index not in self._consumed and matches(event):
                self._consumed.add(index)
                return event
        self._check_alive()
        if self._reader_task is None or self._reader_task.done():
            raise BaresipError(f"{self.username}: ctrl connection is closed")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        waiter = (matches, future)
        self._event_waiters.append(waiter)
        wait = scaled(10.0) if timeout is None else timeout
        try:
            index = await asyncio.wait_for(future, wait)
        except TimeoutError:
            seen = ", ".join(event.type for event in self.events[-15:] if event.type != "CALL_RTCP")
            raise BaresipError(
                f"{self.username}: no {event_type or 'matching'} event within {wait:.1f} s "
                f"(recent events: {seen or 'none'})\n{self.log_tail()}"
            ) from None
        finally:
            if waiter in self._event_waiters:
                self._event_waiters.remove(waiter)
        return self.events[index]

    async def wait_registered(self, timeout: float | None = None) -> None:
        """Wait until ``reginfo`` shows the account registered (``OK``)."""
        loop = asyncio.get_running_loop()
        wait = scaled(10.0) if timeout is None else timeout
        deadline = loop.time() + wait
        table = ""
        while True:
            table = await self.reginfo()
            if re.search(r"\bOK\b", table):
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                failures = [e.param for e in self.events if e.type == "REGISTER_FAIL"]
                raise BaresipError(
                    f"{self.username}: not registered after {wait:.1f} s: {table.strip()!r}; "
                    f"failures: {failures}\n{self.log_tail()}"
                )
            # An event means the state changed; re-read the table either way.
            with contextlib.suppress(BaresipError):
                await self.wait_event(
                    predicate=lambda e: e.type.startswith("REGISTER_"),
                    timeout=min(remaining, scaled(0.5)),
                )

    def output_position(self) -> int:
        """Current size of ``stdout.log``: pass it to :meth:`wait_output` as ``since``."""
        try:
            return self.stdout_path.stat().st_size
        except FileNotFoundError:
            return 0

    async def wait_output(
        self, pattern: str | re.Pattern[str], timeout: float | None = None, *, since: int = 0
    ) -> re.Match[str]:
        """Wait until baresip's stdout, from byte ``since`` on, matches ``pattern``.

        The match's positions are offsets in ``stdout.log``: pass ``match.end()`` as the
        next ``since`` to wait for something that comes after.
        """
        regex = re.compile(pattern, re.MULTILINE) if isinstance(pattern, str) else pattern
        loop = asyncio.get_running_loop()
        wait = scaled(10.0) if timeout is None else timeout
        deadline = loop.time() + wait
        while True:
            # latin-1 maps bytes 1:1 to characters, so match offsets are file offsets.
            text = self.stdout_path.read_bytes().decode("latin-1")
            match = regex.search(text, since)
            if match is not None:
                return match
            self._check_alive()
            if loop.time() > deadline:
                raise BaresipError(
                    f"{self.username}: {regex.pattern!r} not in output after {wait:.1f} s\n"
                    f"{self.log_tail()}"
                )
            await asyncio.sleep(0.05)

    # ------------------------------------------------------------------ recordings

    def dec_wavs(self) -> list[Path]:
        """Recordings of what the phone heard (decoded), oldest call first."""
        return sorted(self.rec_dir.glob("dump-*-dec.wav"))

    def enc_wavs(self) -> list[Path]:
        """Recordings of what the phone sent (before encoding), oldest call first."""
        return sorted(self.rec_dir.glob("dump-*-enc.wav"))

    def log_tail(self, lines: int = 30) -> str:
        """Last lines of stdout and stderr (status-line noise removed), for failure messages."""
        parts = []
        for path in (self.stdout_path, self.stderr_path):
            try:
                text = path.read_text(errors="replace")
            except FileNotFoundError:
                continue
            # menu.so redraws "[0:00:03] audio=..." with \r when stdout is not a tty.
            text = re.sub(r"\[\d+:\d\d:\d\d\] audio=\S+ \(bit/s\)\s*", "", _ANSI.sub("", text))
            tail = text.splitlines()[-lines:]
            parts.append(f"--- {path} ---\n" + "\n".join(tail))
        return "\n".join(parts)

    def __repr__(self) -> str:
        return f"<BaresipPhone {self.aor} sip={self.sip_port} ctrl={self.ctrl_port} pid={self.pid}>"


class PhoneFactory(Protocol):
    """The ``phone_factory`` fixture: build a :class:`BaresipPhone` in the test's tmp_path
    with these options, start it, and stop it at teardown."""

    async def __call__(self, username: str, **options: Any) -> BaresipPhone: ...

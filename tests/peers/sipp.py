"""SIPp 3.6.1 for load and protocol tests, run as an asyncio subprocess on 127.0.0.1.

::

    uas = Sipp(tmp_path, "uas")
    await uas.start()
    result = await run_sipp(tmp_path, "uac", remote=f"127.0.0.1:{uas.local_port}",
                            rate=50, max_calls=200)
    assert result.stats.failed == 0
    await uas.stop()

Each run gets its own directory holding ``stdout.log``, ``stderr.log``, ``stats.csv``
(``-trace_stat``, one row per second, the last row final) and ``errors.log``
(``-trace_err``: every unexpected message). Exit status is SIPp's: 0 when no call
failed, 1 when some did (or the XML scenario did not parse), 97 on an internal quit
command, 99 when no call was processed, 255 (-1) / 254 (-2) on fatal errors.

SIPp's ``-lost`` is lossy for SIPp itself: built-in uac to built-in uas, 300 calls at
50/s with ``-lost 5`` on the uac alone, seen failing 1 call ("Aborting call on UDP
retransmission timeout"), 3-6 with it on both sides. A zero-failure assertion under
loss needs a scenario that tolerates it, or a failure budget measured this way.
Over TCP (``t1``) the uas sees the uac's connection close while its last call sits in
timewait and counts that call failed (``FailedTcpClosed``).

SIPp binds its SIP port on ``-i 127.0.0.1``, its media ports (``-mp`` and ``-mp``+2)
there too, but its UDP control socket (``-cp``) on every address; it is given a port
of its own so concurrent runs do not fight over the default 8888. A ``uas`` runs
until stopped: :meth:`Sipp.stop` sends SIGUSR1, SIPp's "finish the calls and quit".
The built-in uas ends each call with a 4 s ``timewait`` (to absorb retransmitted BYEs)
and counts it successful only after that, so stopping one takes up to 4 s; SIGTERM
would be immediate but loses those calls from the statistics.
"""

import asyncio
import contextlib
import itertools
import re
import signal
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tests.peers import LOOPBACK, die_with_parent, scaled
from tests.peers.ports import (
    free_port_block,
    free_tcp_port,
    free_udp_port,
    port_in_use,
    release_ports,
)

# Built-in scenarios (``-sn``); anything else is a path to an XML scenario (``-sf``).
BUILTIN_SCENARIOS = frozenset(
    {
        "uac",
        "uas",
        "regexp",
        "3pcc-A",
        "3pcc-B",
        "3pcc-C-A",
        "3pcc-C-B",
        "branchc",
        "branchs",
        "uac_pcap",
    }
)


class SippError(Exception):
    """SIPp could not be run as asked (bad arguments, timed out)."""


@dataclass(frozen=True)
class SippStats:
    """Cumulative counters from SIPp's statistics (the ``(C)`` columns)."""

    successful: int
    """Calls that reached the end of the scenario."""
    failed: int
    """Calls that failed: unexpected message, timeout, retransmissions exhausted..."""
    created: int
    """Calls started (outgoing for a uac, incoming for a uas)."""
    retransmissions: int
    """SIP retransmissions sent: a sign of a slow or lossy peer."""
    raw: Mapping[str, str] = field(repr=False)
    """Every column of the final statistics row, by header name."""

    def counter(self, name: str) -> int:
        """A cumulative counter by its CSV name without ``(C)``, e.g. ``FailedMaxUDPRetrans``."""
        return int(self.raw.get(f"{name}(C)", "0") or 0)


@dataclass(frozen=True)
class SippResult:
    """How one SIPp run ended."""

    returncode: int
    """SIPp's exit status (0: no failed call)."""
    stats: SippStats | None
    """Final statistics, None if SIPp died before writing any."""
    workdir: Path
    """Directory holding the run's logs."""
    argv: tuple[str, ...]
    """The command line, for failure messages."""

    @property
    def ok(self) -> bool:
        """Exit status 0 and no failed call."""
        return self.returncode == 0 and self.stats is not None and self.stats.failed == 0

    def errors(self) -> str:
        """Contents of the ``-trace_err`` log (unexpected messages), "" if none."""
        try:
            return (self.workdir / "errors.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def error_events(self) -> list[str]:
        """First line of each event in the ``-trace_err`` log, oldest first.

        "Dead call ... (successful)" events are retransmissions that arrived after a
        call ended: harmless noise under packet loss.
        """
        return [match.group(1) for match in _ERROR_EVENT.finditer(self.errors())]

    def describe(self, lines: int = 40) -> str:
        """The command, exit status, stats, error events and log tails: for assertions."""
        parts = [f"$ {' '.join(self.argv)}", f"exit status {self.returncode}", f"{self.stats}"]
        events = self.error_events()
        serious = [event for event in events if not event.startswith("Dead call")]
        if events:
            parts.append(
                f"--- {len(events)} error events, {len(serious)} other than dead calls ---"
            )
            parts += serious[:lines]
        for name in ("stderr.log", "stdout.log"):
            try:
                text = (self.workdir / name).read_text(errors="replace")
            except FileNotFoundError:
                continue
            if text.strip():
                parts.append(f"--- {name} ---\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(parts)


# Each -trace_err event starts "2026-01-31<TAB>12:00:00.123456<TAB>1769860800.123456: ".
_ERROR_EVENT = re.compile(
    r"\d{4}-\d\d-\d\d\t[\d:.]+\t[\d.]+: ([^\r\n]*?)(?=\d{4}-\d\d-\d\d\t|\r|\n|$)"
)


def parse_stats_csv(path: Path) -> SippStats | None:
    """The last row of a ``-trace_stat`` file (``;``-separated, header first)."""
    try:
        rows = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except FileNotFoundError:
        return None
    if len(rows) < 2:
        return None
    header = rows[0].rstrip(";").split(";")
    values = rows[-1].rstrip(";").split(";")
    raw = dict(zip(header, values, strict=False))

    def count(name: str) -> int:
        text = raw.get(name, "0") or "0"
        return int(text) if text.isdigit() else 0

    return SippStats(
        successful=count("SuccessfulCall(C)"),
        failed=count("FailedCall(C)"),
        created=count("TotalCallCreated"),
        retransmissions=count("Retransmissions(C)"),
        raw=raw,
    )


_SCREEN_COUNTER = r"^\s*{}\s*\|[^|]*\|\s*(\d+)"


def parse_stats_screen(text: str) -> SippStats | None:
    """Counters from the final statistics screen SIPp prints (when the CSV is missing)."""

    def last(label: str) -> int | None:
        found = re.findall(_SCREEN_COUNTER.format(re.escape(label)), text, re.MULTILINE)
        return int(found[-1]) if found else None

    successful, failed = last("Successful call"), last("Failed call")
    if successful is None or failed is None:
        return None
    return SippStats(
        successful=successful,
        failed=failed,
        created=last("Total Calls created") or 0,
        retransmissions=0,
        raw={},
    )


def _check_remote(remote: str) -> None:
    host = remote.rsplit(":", 1)[0] if remote.count(":") == 1 else remote
    if host != LOOPBACK:
        raise ValueError(f"SIPp must only talk to {LOOPBACK}, not {remote!r}")


_run_numbers = itertools.count(1)


class Sipp:
    """One SIPp process.

    Args:
        workdir: parent directory (a test's ``tmp_path``); the run's logs go to
            ``workdir/sipp-SCENARIO-N``.
        scenario: a built-in scenario name (``uac``, ``uas``, ``uac_pcap``...) or the
            path of an XML scenario.
        remote: ``127.0.0.1:PORT`` to send to (a uac's target); None for a uas.
        local_port: SIP port to bind on 127.0.0.1 (``-p``); allocated if None.
        service: user part of the Request-URI (``-s``, SIPp's default ``service``).
        rate: calls per ``rate_period_ms`` (``-r``; SIPp's default is 10 per second).
        rate_period_ms: ``-rp``, default 1000.
        limit: most calls open at once (``-l``).
        max_calls: stop after this many calls (``-m``).
        call_duration_ms: length of the scenario's pauses (``-d``).
        lost: percentage of packets to drop on purpose (``-lost``).
        timeout: SIPp's global timeout in seconds (``-timeout``); with
            ``timeout_error`` reaching it is a failure (``-timeout_error``).
        recv_timeout_ms: default timeout of each ``recv`` (``-recv_timeout``).
        transport: ``-t`` mode: ``u1`` (one UDP socket), ``un`` (one per call), ``t1``...
        auth_user, auth_pass: digest credentials (``-au``/``-ap``).
        extra_args: appended as is (e.g. ``("-aa",)``, ``("-key", "k", "v")``).
        binary: the SIPp executable.
    """

    def __init__(
        self,
        workdir: Path,
        scenario: str | Path = "uac",
        *,
        remote: str | None = None,
        local_port: int | None = None,
        service: str | None = None,
        rate: float | None = None,
        rate_period_ms: int | None = None,
        limit: int | None = None,
        max_calls: int | None = None,
        call_duration_ms: int | None = None,
        lost: float | None = None,
        timeout: float | None = None,
        timeout_error: bool = True,
        recv_timeout_ms: int | None = None,
        transport: str = "u1",
        auth_user: str | None = None,
        auth_pass: str | None = None,
        extra_args: Sequence[str] = (),
        binary: str = "sipp",
    ) -> None:
        if remote is not None:
            _check_remote(remote)
        self.scenario = scenario
        self.transport = transport
        # Ports allocated here go back to the allocator once SIPp has exited.
        self._allocated: list[range | int] = []
        if local_port is None:
            local_port = free_tcp_port() if transport.startswith("t") else free_udp_port()
            self._allocated.append(local_port)
        self.local_port = local_port
        self.control_port = free_udp_port()
        media = free_port_block(4, tcp=False)  # SIPp binds -mp and -mp + 2
        self.media_port = media[0]
        self._allocated += [self.control_port, media]
        name = scenario if isinstance(scenario, str) else scenario.stem
        self.workdir = workdir / f"sipp-{name}-{next(_run_numbers)}"
        self.workdir.mkdir(parents=True)
        self.stdout_path = self.workdir / "stdout.log"
        self.stderr_path = self.workdir / "stderr.log"
        self.stats_path = self.workdir / "stats.csv"

        argv = [binary]
        if isinstance(scenario, str) and scenario in BUILTIN_SCENARIOS:
            argv += ["-sn", scenario]
        else:
            argv += ["-sf", str(Path(scenario).resolve())]
        if remote is not None:
            argv.append(remote)
        argv += ["-i", LOOPBACK, "-p", str(self.local_port), "-t", transport]
        argv += ["-cp", str(self.control_port), "-mp", str(self.media_port)]
        argv += ["-nostdin", "-trace_stat", "-stf", "stats.csv", "-fd", "1"]
        argv += ["-trace_err", "-error_file", "errors.log"]
        options: list[tuple[str, object | None]] = [
            ("-s", service),
            ("-r", rate),
            ("-rp", rate_period_ms),
            ("-l", limit),
            ("-m", max_calls),
            ("-d", call_duration_ms),
            ("-lost", lost),
            ("-recv_timeout", recv_timeout_ms),
            ("-au", auth_user),
            ("-ap", auth_pass),
        ]
        for flag, value in options:
            if value is not None:
                argv += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
        if timeout is not None:
            argv += ["-timeout", f"{max(1, round(timeout))}s"]
            if timeout_error:
                argv.append("-timeout_error")
        argv += list(extra_args)
        self.argv: tuple[str, ...] = tuple(argv)
        self._process: asyncio.subprocess.Process | None = None

    @property
    def returncode(self) -> int | None:
        return self._process.returncode if self._process is not None else None

    @property
    def running(self) -> bool:
        """Started and not exited yet."""
        return self._process is not None and self._process.returncode is None

    async def start(self, timeout: float | None = None) -> None:
        """Start SIPp and wait until it holds its SIP port (or has already finished)."""
        if self._process is not None:
            raise SippError("already started")
        kind = socket.SOCK_STREAM if self.transport.startswith("t") else socket.SOCK_DGRAM
        # Readiness below is "the port is taken", so it must be free to begin with.
        if port_in_use(self.local_port, kind):
            raise SippError(f"port {self.local_port} on {LOOPBACK} is already in use")
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self._process = await asyncio.create_subprocess_exec(
                *self.argv,
                cwd=self.workdir,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                preexec_fn=die_with_parent,
            )
        # SIPp has no "ready" signal: ready is when its SIP port is taken.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (scaled(10.0) if timeout is None else timeout)
        while not port_in_use(self.local_port, kind):
            await asyncio.sleep(0.02)
            if self._process.returncode is not None:
                break
            if loop.time() > deadline:
                result = await self.stop()
                raise SippError(f"SIPp did not bind port {self.local_port}\n{result.describe()}")
        # Gone before (visibly) binding: fine only if it already did all its calls well.
        # SIPp exits 1 both for failed calls and for a scenario it cannot parse.
        if self._process.returncode not in (None, 0):
            raise SippError(f"SIPp failed at start\n{self.result().describe()}")

    async def wait(self, timeout: float | None = None) -> SippResult:
        """Wait for SIPp to finish by itself; on timeout stop it and raise :class:`SippError`."""
        if self._process is None:
            raise SippError("not started")
        wait = scaled(120.0) if timeout is None else timeout
        try:
            await asyncio.wait_for(self._process.wait(), wait)
        except TimeoutError:
            result = await self.stop()
            raise SippError(f"SIPp still running after {wait:.1f} s\n{result.describe()}") from None
        return self.result()

    async def stop(self, timeout: float | None = None) -> SippResult:
        """Ask SIPp to finish (SIGUSR1), then SIGTERM, then SIGKILL; return the result."""
        if self._process is None:
            raise SippError("not started")
        grace = scaled(10.0) if timeout is None else timeout
        for sig in (signal.SIGUSR1, signal.SIGTERM, signal.SIGKILL):
            if self._process.returncode is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(sig)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._process.wait(), grace)
        return self.result()

    def result(self) -> SippResult:
        """The result so far (stats from the last row SIPp wrote)."""
        if self._process is None or self._process.returncode is None:
            raise SippError("SIPp has not exited")
        for ports in self._allocated:
            release_ports(ports)
        self._allocated.clear()
        stats = parse_stats_csv(self.stats_path)
        if stats is None:
            with contextlib.suppress(FileNotFoundError):
                stats = parse_stats_screen(self.stdout_path.read_text(errors="replace"))
        return SippResult(
            returncode=self._process.returncode,
            stats=stats,
            workdir=self.workdir,
            argv=self.argv,
        )

    async def __aenter__(self) -> "Sipp":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.running:
            await self.stop()


async def run_sipp(
    workdir: Path,
    scenario: str | Path = "uac",
    *,
    wait_timeout: float | None = None,
    **options: Any,
) -> SippResult:
    """Run SIPp to completion (``options`` as for :class:`Sipp`) and return its result."""
    sipp = Sipp(workdir, scenario, **options)
    await sipp.start()
    try:
        return await sipp.wait(wait_timeout)
    finally:
        if sipp.running:
            await sipp.stop()


class SippFactory(Protocol):
    """The ``sipp_factory`` fixture: build a :class:`Sipp` in the test's tmp_path with
    these options, start it, and stop it at teardown if still running."""

    async def __call__(self, scenario: str | Path = "uac", **options: Any) -> Sipp: ...

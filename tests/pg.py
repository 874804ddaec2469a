"""A private, throwaway PostgreSQL server for one test session.

The storage layer must behave the same on SQLite and PostgreSQL, so the suite runs its
database tests on a real server: Debian's ``postgresql`` package (``make setup`` installs
it) provides the binaries, and this module runs its own server with them, independent of
any cluster the package may have started on port 5432:

* ``initdb`` into a fresh directory under ``/dev/shm`` (a tmpfs; else ``/tmp``) with
  trust auth, superuser ``postgres``, UTF-8, no locale, no fsync; then ``postgres`` on
  127.0.0.1 and a free port, its unix socket inside that directory too, durability off
  (fsync, synchronous commit, full-page writes): about 0.4 s in all, and about 10 ms for
  each test's ``CREATE DATABASE``.
* PostgreSQL refuses to run as root: as root, both run as the ``postgres`` system user
  (through ``setpriv``), in a directory handed to it.
* The server gets ``SIGQUIT`` (an immediate shutdown) if the process that started it
  dies without stopping it (``setpriv --pdeathsig``), and a directory left by a killed run
  is removed by the next one.
* :meth:`PostgresServer.fresh_database` gives each test its own empty database.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

DIR_PREFIX = "hub-pg-"
SUPERUSER = "postgres"
#: The system user a root test run hands the server to (created by Debian's package).
SYSTEM_USER = "postgres"
START_TIMEOUT = 30.0
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "32MB",
    "autovacuum": "off",
    "log_min_messages": "warning",
}


def find_bindir() -> Path | None:
    """The ``bin`` directory of the newest installed PostgreSQL server, if any."""
    found: list[tuple[int, Path]] = []
    for initdb in Path("/usr/lib/postgresql").glob("*/bin/initdb"):
        version = initdb.parent.parent.name
        if version.isdigit() and (initdb.parent / "postgres").is_file():
            found.append((int(version), initdb.parent))
    return max(found)[1] if found else None


#: Where the server's directory may go, best first: a tmpfs makes initdb and CREATE DATABASE
#: several times faster than /tmp on this project's machines (ext4 on a virtual disk).
PARENT_DIRS = ("/dev/shm", "/tmp")
MIN_FREE_BYTES = 512 << 20


def default_parent() -> Path:
    """The first of :data:`PARENT_DIRS` that is writable and has room."""
    for candidate in PARENT_DIRS:
        try:
            stat = os.statvfs(candidate)
        except OSError:
            continue
        if os.access(candidate, os.W_OK) and stat.f_bavail * stat.f_frsize >= MIN_FREE_BYTES:
            return Path(candidate)
    return Path(tempfile.gettempdir())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_dirs(parent: Path) -> None:
    """Remove the server directories of earlier runs whose test process is gone."""
    for path in parent.glob(DIR_PREFIX + "*"):
        try:
            owner = int((path / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if _alive(owner):
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            postmaster = int((path / "data" / "postmaster.pid").read_text().split()[0])
            cmdline = Path(f"/proc/{postmaster}/cmdline").read_bytes()
            if str(path).encode() in cmdline:
                os.kill(postmaster, signal.SIGQUIT)
        shutil.rmtree(path, ignore_errors=True)


class PostgresServer:
    """``start()``, then :meth:`url` / :meth:`fresh_database`; ``stop()`` removes it all."""

    def __init__(self, bindir: Path, *, parent: str | os.PathLike[str] | None = None) -> None:
        self.bindir = bindir
        self.parent = default_parent() if parent is None else Path(parent)
        self.port = 0
        self.start_seconds = 0.0
        """Wall time of :meth:`start` (initdb and server start)."""
        self.dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._admin: psycopg.Connection[tuple[object, ...]] | None = None
        self._names = itertools.count(1)
        self._strategy = ""

    # ------------------------------------------------------------------ running as

    def _user_prefix(self) -> list[str]:
        """The command prefix that runs a server binary as a user PostgreSQL accepts."""
        if os.geteuid() != 0:
            return []
        try:
            pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            raise RuntimeError(f"running as root, and there is no {SYSTEM_USER!r} user to "
                               "run PostgreSQL as (Debian's postgresql package creates it)"
                               ) from None
        return ["setpriv", f"--reuid={SYSTEM_USER}", f"--regid={SYSTEM_USER}",
                "--init-groups"]

    def _hand_over(self, path: Path) -> None:
        if os.geteuid() == 0:
            user = pwd.getpwnam(SYSTEM_USER)
            os.chown(path, user.pw_uid, user.pw_gid)

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        started = time.monotonic()
        for parent in {self.parent, *map(Path, PARENT_DIRS)}:
            remove_stale_dirs(parent)
        self.dir = Path(tempfile.mkdtemp(prefix=DIR_PREFIX, dir=self.parent))
        self.dir.chmod(0o755)  # the server user must reach its data and socket
        (self.dir / "owner.pid").write_text(str(os.getpid()))
        self._hand_over(self.dir)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
        initdb = subprocess.run(
            [*self._user_prefix(), str(self.bindir / "initdb"), "-D", str(self.dir / "data"),
             "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync",
             "--no-instructions"],
            cwd=self.dir, env=env, stdin=subprocess.DEVNULL, capture_output=True,
            timeout=START_TIMEOUT, check=False)
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed ({initdb.returncode}): "
                               f"{initdb.stderr.decode(errors='replace')[-2000:]}")
        for attempt in range(5):
            if self._launch(env):
                break
            if attempt == 4:
                raise RuntimeError(f"PostgreSQL did not start: {self._log_tail()}")
        self.start_seconds = time.monotonic() - started

    def _launch(self, env: dict[str, str]) -> bool:
        """Start the server on a free port; False if the port was taken meanwhile."""
        assert self.dir is not None
        self.port = _free_port()
        settings = [arg for name, value in SERVER_SETTINGS.items()
                    for arg in ("-c", f"{name}={value}")]
        # setpriv also when not changing user: for --pdeathsig (SIGQUIT when we die).
        prefix = self._user_prefix() or ["setpriv"]
        with open(self.dir / "server.log", "ab") as log:
            self._proc = subprocess.Popen(
                [*prefix, "--pdeathsig=QUIT", str(self.bindir / "postgres"),
                 "-D", str(self.dir / "data"), "-p", str(self.port), "-k", str(self.dir),
                 *settings],
                cwd=self.dir, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                if "Address already in use" in self._log_tail():
                    return False
                raise RuntimeError(f"PostgreSQL exited ({self._proc.returncode}): "
                                   f"{self._log_tail()}")
            try:
                self._admin = psycopg.connect(self.url("postgres"), autocommit=True,
                                              connect_timeout=2)
            except psycopg.OperationalError as exc:
                last = exc
                time.sleep(0.01)
                continue
            # PG 15's default (WAL_LOG) copies a template through the WAL: 3x slower here.
            self._strategy = (" STRATEGY = FILE_COPY"
                              if self._admin.info.server_version >= 150000 else "")
            return True
        self.stop()
        raise RuntimeError(f"PostgreSQL did not accept connections in {START_TIMEOUT} s "
                           f"({last}): {self._log_tail()}")

    def _log_tail(self) -> str:
        if self.dir is None:
            return ""
        try:
            return (self.dir / "server.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Immediate shutdown (no checkpoint: the data is thrown away) and removal."""
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.send_signal(signal.SIGQUIT)
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    # ------------------------------------------------------------------ databases

    def url(self, dbname: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self) -> str:
        """A new, empty database; returns its name."""
        if self._admin is None:
            raise RuntimeError("the PostgreSQL server is not running")
        name = f"test_{os.getpid()}_{next(self._names)}"
        if not re.fullmatch(r"\w+", name):
            raise ValueError(name)
        self._admin.execute(f"CREATE DATABASE {name}{self._strategy}".encode())
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name``, closing any connection a test left open to it."""
        if self._admin is None:
            return
        if not re.fullmatch(r"\w+", name):
            raise ValueError(name)
        self._admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)".encode())

    @contextlib.contextmanager
    def fresh_database(self) -> Iterator[str]:
        """The URL of a new, empty database, dropped afterwards."""
        name = self.create_database()
        try:
            yield self.url(name)
        finally:
            self.drop_database(name)

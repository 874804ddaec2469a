"""The recordings index: ``DATA_DIR/recordings.sqlite3``.

Design notes:

* Independent of ``hub/store.py`` (``recordings/`` sits below ``hub/``): its own
  file, its own numbered migrations and ``schema_version`` table, same rules: WAL,
  autocommit connection, every write one ``BEGIN IMMEDIATE`` ... ``COMMIT``, never
  edit a released migration.
* ``synchronous=FULL``, unlike the hub store: the index is the map to evidence and
  is written rarely (a segment a minute per recording, joins and leaves), from the
  DiskWriter threads, so the extra fsync per commit costs the event loop nothing.
* Thread-safe: one connection behind a lock, because ``SegmentedRecorder`` reports
  segments from DiskWriter threads while the loop starts recordings.
* Segment files live in ``DATA_DIR/recordings/<recording_id>/<seq:05d>.<ext>``;
  paths are stored relative to the data directory so it can be moved.
* Ids are ``R<UTC date>-<n>`` (``R20261121-0001``): sortable, and short enough to
  read out over a radio. The counter restarts each UTC day.
* ``recover(now)`` runs at startup, before any recording starts (one hub per data
  directory): a recording still "recording" was cut by a crash.
"""

from __future__ import annotations

import builtins
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Final

from recordings.audio import SAMPLE_RATES, decode_segment
from recordings.errors import (
    IndexBusy,
    IndexSchemaError,
    InvalidInput,
    RecordingError,
    RecordingNotFound,
    UndecodableSegment,
)

log = logging.getLogger(__name__)

DB_FILENAME: Final = "recordings.sqlite3"
#: Directory under the data directory that holds one folder per recording.
SEGMENTS_DIRNAME: Final = "recordings"
KINDS: Final = ("bridge", "leg")
CODECS: Final = ("flac", "opus")
STATUSES: Final = ("recording", "complete", "interrupted")
_SEGMENT_NAME: Final = re.compile(r"(\d{5,})\.(flac|opus)")
_EXTENSIONS: Final = {"flac": "flac", "opus": "opus"}


# -------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """One segment file of a recording."""

    recording_id: str
    """The recording it belongs to."""
    seq: int
    """Position in the recording, from 0."""
    path: str
    """File path relative to the data directory (``/``-separated)."""
    started_at: float
    """Unix time of its first sample."""
    ended_at: float | None
    """Unix time after its last sample; None while open (or lost in a crash)."""
    bytes: int
    """File size when closed (0 while open)."""
    closed: bool
    """Complete on disk: trailer written and fsynced (or recovered after a crash)."""

    @property
    def duration(self) -> float:
        """Seconds of audio (0 while open)."""
        return 0.0 if self.ended_at is None else self.ended_at - self.started_at


@dataclass(frozen=True, slots=True)
class ParticipantInfo:
    """A leg's presence in a recorded bridge (a leg that rejoins gets another row)."""

    leg_id: str
    """The leg."""
    peer: str | None
    """Who it was: a user, a number, a talk group (as the bridge knew it)."""
    joined_at: float
    """Unix time it joined."""
    left_at: float | None
    """Unix time it left; None while still there."""


@dataclass(frozen=True, slots=True)
class RecordingInfo:
    """A recording as the index knows it, with its segments and participants."""

    id: str
    """``R<yyyymmdd>-<n>``."""
    kind: str
    """``bridge`` (the mix) or ``leg`` (one party's own audio)."""
    bridge_id: str
    """The bridge recorded (or the leg's bridge)."""
    call_id: str | None
    """The dispatch call owning the bridge, if any."""
    leg_id: str | None
    """The leg, for ``kind == "leg"``."""
    started_at: float
    """Unix time recording started."""
    ended_at: float | None
    """Unix time it ended (for an interrupted one, the end of its last audio)."""
    codec: str
    """``flac`` or ``opus``."""
    sample_rate: int
    """8000, 16000 or 48000."""
    status: str
    """``recording``, ``complete`` or ``interrupted`` (cut by a crash, recovered)."""
    segments: tuple[SegmentInfo, ...] = field(default=())
    """Segments in order."""
    participants: tuple[ParticipantInfo, ...] = field(default=())
    """Who was present, by join time."""

    @property
    def duration(self) -> float:
        """Seconds of audio in closed segments."""
        return sum(segment.duration for segment in self.segments)

    @property
    def size(self) -> int:
        """Bytes in closed segments."""
        return sum(segment.bytes for segment in self.segments)


@dataclass(slots=True)
class RecoveryReport:
    """What ``recover`` did."""

    interrupted: list[str] = field(default_factory=list)
    """Recordings marked interrupted."""
    recovered_segments: list[str] = field(default_factory=list)
    """Open segments kept (they decode), as data-dir-relative paths."""
    registered_files: list[str] = field(default_factory=list)
    """Files found on disk but not in the index, now indexed."""
    dropped_segments: list[str] = field(default_factory=list)
    """Open segments that hold no decodable audio, removed from the index (the
    files are left alone)."""


# ----------------------------------------------------------------------- migrations


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema; ``sql`` may hold several statements."""

    version: int
    description: str
    sql: str


MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        1,
        "recordings, segments, participants",
        """
        CREATE TABLE recordings (
            id           TEXT PRIMARY KEY,
            kind         TEXT NOT NULL CHECK (kind IN ('bridge', 'leg')),
            bridge_id    TEXT NOT NULL,
            call_id      TEXT,
            leg_id       TEXT,
            started_at   REAL NOT NULL,
            ended_at     REAL,
            codec        TEXT NOT NULL CHECK (codec IN ('flac', 'opus')),
            sample_rate  INTEGER NOT NULL CHECK (sample_rate IN (8000, 16000, 48000)),
            status       TEXT NOT NULL DEFAULT 'recording'
                         CHECK (status IN ('recording', 'complete', 'interrupted')),
            recovered_at REAL,
            CHECK ((kind = 'leg') = (leg_id IS NOT NULL))
        );
        CREATE INDEX recordings_started_at ON recordings (started_at);
        CREATE INDEX recordings_bridge ON recordings (bridge_id, started_at);
        CREATE INDEX recordings_status ON recordings (status);

        CREATE TABLE recording_segments (
            recording_id TEXT NOT NULL REFERENCES recordings (id) ON DELETE CASCADE,
            seq          INTEGER NOT NULL CHECK (seq >= 0),
            path         TEXT NOT NULL,
            started_at   REAL NOT NULL,
            ended_at     REAL,
            bytes        INTEGER NOT NULL DEFAULT 0 CHECK (bytes >= 0),
            closed       INTEGER NOT NULL DEFAULT 0 CHECK (closed IN (0, 1)),
            PRIMARY KEY (recording_id, seq)
        );

        CREATE TABLE recording_participants (
            recording_id TEXT NOT NULL REFERENCES recordings (id) ON DELETE CASCADE,
            leg_id       TEXT NOT NULL,
            peer         TEXT,
            joined_at    REAL NOT NULL,
            left_at      REAL
        );
        CREATE INDEX recording_participants_recording
            ON recording_participants (recording_id, joined_at);
        """,
    ),
)


def _statements(script: str) -> Iterator[str]:
    """Split a script into statements (``executescript`` would COMMIT first)."""
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            statement = buffer.strip()
            if statement.strip(";").strip():
                yield statement
            buffer = ""
    if buffer.strip(";").strip():
        raise ValueError(f"incomplete SQL statement: {buffer.strip()!r}")


def _rollback(conn: sqlite3.Connection) -> None:
    # Some errors (SQLITE_FULL, SQLITE_IOERR, ...) already rolled the transaction back.
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _migrate(conn: sqlite3.Connection, migrations: tuple[Migration, ...], now: float) -> int:
    """Bring the schema up to the last migration; returns the resulting version."""
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise ValueError(f"migrations out of order at version {migration.version}")
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version INTEGER PRIMARY KEY,"
            " description TEXT NOT NULL,"
            " applied_at REAL NOT NULL)"
        )
        row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
        current = int(row[0])
        if current > len(migrations):
            raise IndexSchemaError(
                f"recordings index schema version {current} is newer than this hub "
                f"(knows up to {len(migrations)}); upgrade the hub"
            )
        for migration in migrations[current:]:
            for statement in _statements(migration.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.description, now),
            )
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    return max(current, len(migrations))


# ---------------------------------------------------------------------------- index


class RecordingIndex:
    """The index on one SQLite connection, safe to share between threads.

    Use ``RecordingIndex.open(data_dir)`` and ``close()`` it (or use it as a context
    manager).
    """

    def __init__(self, conn: sqlite3.Connection, data_dir: Path) -> None:
        """Wrap a configured and migrated connection; prefer ``RecordingIndex.open``."""
        self._conn = conn
        self._lock = threading.RLock()
        self.data_dir = data_dir
        self.path = data_dir / DB_FILENAME

    # -- lifecycle

    @classmethod
    def open(cls, data_dir: str | os.PathLike[str], *, timeout: float = 5.0) -> RecordingIndex:
        """Open (creating if needed) ``data_dir/recordings.sqlite3`` and migrate it."""
        directory = Path(data_dir)
        path = directory / DB_FILENAME
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Peers' numbers and names: owner only (-wal and -shm inherit the mode).
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            conn = sqlite3.connect(
                path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise RecordingError(f"cannot open {path}: {exc}") from exc
        try:
            conn.row_factory = sqlite3.Row
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise RecordingError(f"cannot put {path} in WAL mode (got {mode!r})")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            _migrate(conn, MIGRATIONS, time.time())
        except sqlite3.OperationalError as exc:
            conn.close()
            raise IndexBusy(f"cannot open {path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise IndexSchemaError(f"{path} is not a usable recordings index: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return cls(conn, directory)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> RecordingIndex:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        """Version of the last migration applied."""
        with self._lock:
            row = self._conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0])

    @property
    def segments_root(self) -> Path:
        """The directory holding one folder of segment files per recording."""
        return self.data_dir / SEGMENTS_DIRNAME

    def segment_dir(self, recording_id: str) -> Path:
        """Where the segments of ``recording_id`` are written."""
        return self.segments_root / recording_id

    def segment_path(self, segment: SegmentInfo) -> Path:
        """Where a segment's file is (under the data directory unless stored absolute)."""
        return self.data_dir / segment.path

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock: all of it commits, or none of it."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise IndexBusy(f"recordings index {self.path} is busy: {exc}") from exc
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                _rollback(self._conn)
                raise

    def _relative(self, path: str | os.PathLike[str]) -> str:
        """A segment path as stored: relative to the data directory, ``/``-separated.

        A relative ``path`` is taken as relative to the data directory already.
        """
        target = Path(path)
        if not target.is_absolute():
            return target.as_posix()
        try:
            return target.resolve().relative_to(self.data_dir.resolve()).as_posix()
        except ValueError:
            return target.as_posix()  # outside the data directory: kept absolute

    # -- recordings

    def start(
        self,
        *,
        kind: str,
        bridge_id: str,
        codec: str,
        sample_rate: int,
        started_at: float,
        call_id: str | None = None,
        leg_id: str | None = None,
    ) -> str:
        """Create a recording in status ``recording``; returns its new id."""
        if kind not in KINDS:
            raise InvalidInput(f"invalid kind {kind!r}: one of {', '.join(KINDS)}")
        if (kind == "leg") != (leg_id is not None):
            raise InvalidInput("a leg recording needs a leg_id, a bridge recording none")
        if codec not in CODECS:
            raise InvalidInput(f"invalid codec {codec!r}: one of {', '.join(CODECS)}")
        if sample_rate not in SAMPLE_RATES:
            raise InvalidInput(f"invalid sample rate {sample_rate}: one of {SAMPLE_RATES}")
        if not bridge_id:
            raise InvalidInput("a recording needs a bridge_id")
        prefix = "R" + datetime.fromtimestamp(started_at, UTC).strftime("%Y%m%d") + "-"
        with self._write() as conn:
            row = conn.execute(
                "SELECT COALESCE(MAX(CAST(substr(id, ?) AS INTEGER)), 0) FROM recordings"
                " WHERE substr(id, 1, ?) = ?",
                (len(prefix) + 1, len(prefix), prefix),
            ).fetchone()
            recording_id = f"{prefix}{int(row[0]) + 1:04d}"
            conn.execute(
                "INSERT INTO recordings (id, kind, bridge_id, call_id, leg_id, started_at,"
                " codec, sample_rate) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (recording_id, kind, bridge_id, call_id, leg_id, started_at, codec, sample_rate),
            )
        return recording_id

    def finish(self, recording_id: str, ended_at: float) -> None:
        """Mark a recording complete; participants still present leave at ``ended_at``."""
        with self._write() as conn:
            self._require(conn, recording_id)
            conn.execute(
                "UPDATE recordings SET status = 'complete', ended_at = ?"
                " WHERE id = ? AND status = 'recording'",
                (ended_at, recording_id),
            )
            conn.execute(
                "UPDATE recording_participants SET left_at = ?"
                " WHERE recording_id = ? AND left_at IS NULL",
                (ended_at, recording_id),
            )

    @staticmethod
    def _require(conn: sqlite3.Connection, recording_id: str) -> None:
        if (
            conn.execute("SELECT 1 FROM recordings WHERE id = ?", (recording_id,)).fetchone()
            is None
        ):
            raise RecordingNotFound(f"no recording {recording_id!r}")

    # -- segments

    def add_segment(
        self, recording_id: str, seq: int, path: str | os.PathLike[str], started_at: float
    ) -> None:
        """A segment file exists (header on disk) and is being written."""
        with self._write() as conn:
            self._require(conn, recording_id)
            conn.execute(
                "INSERT INTO recording_segments (recording_id, seq, path, started_at)"
                " VALUES (?, ?, ?, ?)"
                " ON CONFLICT (recording_id, seq) DO UPDATE SET path = excluded.path,"
                " started_at = excluded.started_at",
                (recording_id, seq, self._relative(path), started_at),
            )

    def close_segment(
        self,
        recording_id: str,
        seq: int,
        *,
        path: str | os.PathLike[str],
        started_at: float,
        ended_at: float,
        size: int,
    ) -> None:
        """A segment is complete and fsynced (inserted if ``add_segment`` never was)."""
        with self._write() as conn:
            self._require(conn, recording_id)
            conn.execute(
                "INSERT INTO recording_segments"
                " (recording_id, seq, path, started_at, ended_at, bytes, closed)"
                " VALUES (?, ?, ?, ?, ?, ?, 1)"
                " ON CONFLICT (recording_id, seq) DO UPDATE SET ended_at = excluded.ended_at,"
                " bytes = excluded.bytes, closed = 1",
                (recording_id, seq, self._relative(path), started_at, ended_at, size),
            )

    # -- participants

    def participant_joined(
        self, recording_id: str, leg_id: str, peer: str | None, joined_at: float
    ) -> None:
        """``leg_id`` (``peer``) joined the recorded bridge."""
        with self._write() as conn:
            self._require(conn, recording_id)
            conn.execute(
                "INSERT INTO recording_participants (recording_id, leg_id, peer, joined_at)"
                " VALUES (?, ?, ?, ?)",
                (recording_id, leg_id, peer, joined_at),
            )

    def participant_left(self, recording_id: str, leg_id: str, left_at: float) -> None:
        """``leg_id`` left (no-op if it is not present)."""
        with self._write() as conn:
            self._require(conn, recording_id)
            conn.execute(
                "UPDATE recording_participants SET left_at = ?"
                " WHERE recording_id = ? AND leg_id = ? AND left_at IS NULL",
                (left_at, recording_id, leg_id),
            )

    # -- queries

    def list(
        self, limit: int = 50, offset: int = 0, bridge_id: str | None = None
    ) -> builtins.list[RecordingInfo]:
        """Recordings, newest first, with their segments and participants."""
        if limit < 0 or offset < 0:
            raise InvalidInput("limit and offset must not be negative")
        with self._lock:
            if bridge_id is None:
                rows = self._conn.execute(
                    "SELECT * FROM recordings ORDER BY started_at DESC, id DESC LIMIT ? OFFSET ?",
                    (limit, offset),
                ).fetchall()
            else:
                rows = self._conn.execute(
                    "SELECT * FROM recordings WHERE bridge_id = ?"
                    " ORDER BY started_at DESC, id DESC LIMIT ? OFFSET ?",
                    (bridge_id, limit, offset),
                ).fetchall()
            return [self._info(row) for row in rows]

    def get(self, recording_id: str) -> RecordingInfo:
        """One recording; ``RecordingNotFound`` if there is none."""
        with self._lock:
            row = self._conn.execute(
                "SELECT * FROM recordings WHERE id = ?", (recording_id,)
            ).fetchone()
            if row is None:
                raise RecordingNotFound(f"no recording {recording_id!r}")
            return self._info(row)

    def _info(self, row: sqlite3.Row) -> RecordingInfo:
        segments = self._conn.execute(
            "SELECT * FROM recording_segments WHERE recording_id = ? ORDER BY seq",
            (row["id"],),
        ).fetchall()
        participants = self._conn.execute(
            "SELECT * FROM recording_participants WHERE recording_id = ? ORDER BY joined_at, rowid",
            (row["id"],),
        ).fetchall()
        return RecordingInfo(
            id=row["id"],
            kind=row["kind"],
            bridge_id=row["bridge_id"],
            call_id=row["call_id"],
            leg_id=row["leg_id"],
            started_at=float(row["started_at"]),
            ended_at=None if row["ended_at"] is None else float(row["ended_at"]),
            codec=row["codec"],
            sample_rate=int(row["sample_rate"]),
            status=row["status"],
            segments=tuple(_segment(s) for s in segments),
            participants=tuple(_participant(p) for p in participants),
        )

    # -- crash recovery

    def recover(self, now: float) -> RecoveryReport:
        """Close the books on recordings a crashed process left ``recording``.

        Each becomes ``interrupted``. Its open segment (the one being written at the
        kill) is kept, closed, with its real (decoded) duration if it decodes, and
        dropped from the index if it does not; segment files on disk the index never
        heard of are registered the same way. Segment files are never modified:
        they are evidence. The recording ends where its last audio ends, and so do
        participants still present. Call at startup, before recording anything.
        """
        report = RecoveryReport()
        with self._lock:
            rows = self._conn.execute(
                "SELECT id FROM recordings WHERE status = 'recording' ORDER BY id"
            ).fetchall()
            for row in rows:
                self._recover_one(self.get(row["id"]), now, report)
        return report

    def _recover_one(self, info: RecordingInfo, now: float, report: RecoveryReport) -> None:
        closes: builtins.list[tuple[int, float, int]] = []  # seq, ended_at, bytes
        inserts: builtins.list[tuple[int, str, float, float, int]] = []
        drops: builtins.list[int] = []
        kept = 0.0
        ends = []
        for segment in info.segments:
            if segment.closed:
                kept += segment.duration
                if segment.ended_at is not None:
                    ends.append(segment.ended_at)
                continue
            file = self.segment_path(segment)
            decoded = _probe(file)
            if decoded is None:
                drops.append(segment.seq)
                report.dropped_segments.append(segment.path)
                log.warning("recording %s: open segment %s has no audio", info.id, segment.path)
                continue
            duration, _ = decoded
            closes.append((segment.seq, segment.started_at + duration, file.stat().st_size))
            ends.append(segment.started_at + duration)
            kept += duration
            report.recovered_segments.append(segment.path)
        known = {segment.seq for segment in info.segments}
        directory = self.segment_dir(info.id)
        previous_end = max(ends, default=info.started_at)
        for file in sorted(directory.iterdir()) if directory.is_dir() else []:
            match = _SEGMENT_NAME.fullmatch(file.name)
            if match is None or int(match[1]) in known or match[2] != _EXTENSIONS[info.codec]:
                continue
            decoded = _probe(file)
            if decoded is None:
                log.warning("recording %s: stray file %s has no audio", info.id, file)
                continue
            duration, tagged_start = decoded
            started_at = previous_end if tagged_start is None else tagged_start
            relative = self._relative(file)
            inserts.append(
                (int(match[1]), relative, started_at, started_at + duration, file.stat().st_size)
            )
            previous_end = started_at + duration
            ends.append(previous_end)
            kept += duration
            report.registered_files.append(relative)
        ended_at = max(ends, default=info.started_at)
        with self._write() as conn:
            for seq, segment_end, size in closes:
                conn.execute(
                    "UPDATE recording_segments SET ended_at = ?, bytes = ?, closed = 1"
                    " WHERE recording_id = ? AND seq = ?",
                    (segment_end, size, info.id, seq),
                )
            for seq in drops:
                conn.execute(
                    "DELETE FROM recording_segments WHERE recording_id = ? AND seq = ?",
                    (info.id, seq),
                )
            for seq, relative, started_at, segment_end, size in inserts:
                conn.execute(
                    "INSERT INTO recording_segments"
                    " (recording_id, seq, path, started_at, ended_at, bytes, closed)"
                    " VALUES (?, ?, ?, ?, ?, ?, 1)",
                    (info.id, seq, relative, started_at, segment_end, size),
                )
            conn.execute(
                "UPDATE recordings SET status = 'interrupted', ended_at = ?, recovered_at = ?"
                " WHERE id = ? AND status = 'recording'",
                (ended_at, now, info.id),
            )
            conn.execute(
                "UPDATE recording_participants SET left_at = MAX(joined_at, ?)"
                " WHERE recording_id = ? AND left_at IS NULL",
                (ended_at, info.id),
            )
        report.interrupted.append(info.id)
        log.warning(
            "recording %s was cut by a crash: marked interrupted, %.2f s of audio kept",
            info.id,
            kept,
        )


def _probe(path: Path) -> tuple[float, float | None] | None:
    """(seconds of audio, start time from the file's tags) or None if it holds none."""
    try:
        decoded = decode_segment(path)
    except UndecodableSegment:
        return None
    started = decoded.tags.get("hub_started_at")
    try:
        start = None if started is None else float(started)
    except ValueError:
        start = None
    return decoded.duration, start


def _segment(row: sqlite3.Row) -> SegmentInfo:
    return SegmentInfo(
        recording_id=row["recording_id"],
        seq=int(row["seq"]),
        path=row["path"],
        started_at=float(row["started_at"]),
        ended_at=None if row["ended_at"] is None else float(row["ended_at"]),
        bytes=int(row["bytes"]),
        closed=bool(row["closed"]),
    )


def _participant(row: sqlite3.Row) -> ParticipantInfo:
    return ParticipantInfo(
        leg_id=row["leg_id"],
        peer=row["peer"],
        joined_at=float(row["joined_at"]),
        left_at=None if row["left_at"] is None else float(row["left_at"]),
    )

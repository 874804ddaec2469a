"""The tap the mixer calls: records a bridge's mix and, optionally, each leg.

One ``BridgeRecorder`` per recorded bridge. The mixer calls ``on_mix`` (and
``on_leg`` per leg, when ``per_leg``) every tick; the bridge calls ``leg_joined`` /
``leg_left`` as legs come and go, and ``close`` when it ends. Everything but
``index.start`` (which must hand back an id) reaches the index through the
DiskWriter, in order behind the segment files it describes, so the event loop never
waits on SQLite and "complete" is never written before the last segment is closed.

The composition root should give every recorder the same ``DiskWriter``, call
``RecordingIndex.recover`` at startup, and ``DiskWriter.close`` at shutdown.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from recordings.errors import InvalidInput, RecordingError, RecordingIOError
from recordings.index import SEGMENTS_DIRNAME, RecordingIndex
from recordings.writer import DEFAULT_CODEC, DiskWriter, Pcm, SegmentedRecorder

log = logging.getLogger(__name__)


class BridgeRecorder:
    """Recording of one bridge: the mix, who was present, and optionally each leg."""

    def __init__(
        self,
        index: RecordingIndex,
        data_dir: str | os.PathLike[str],
        bridge_id: str,
        call_id: str | None,
        sample_rate: int,
        per_leg: bool = False,
        *,
        codec: str = DEFAULT_CODEC,
        segment_seconds: float = 60.0,
        flush_seconds: float = 1.0,
        io: DiskWriter | None = None,
        now: float | None = None,
    ) -> None:
        if not 0 < flush_seconds <= segment_seconds:
            raise InvalidInput("need 0 < flush_seconds <= segment_seconds")
        if Path(data_dir).resolve() != index.data_dir.resolve():
            raise InvalidInput(f"data_dir {data_dir} is not the index's {index.data_dir}")
        self._index = index
        self._root = Path(data_dir) / SEGMENTS_DIRNAME
        self.bridge_id = bridge_id
        self.call_id = call_id
        self.sample_rate = sample_rate
        self.per_leg = per_leg
        self._codec = codec
        self._segment_seconds = segment_seconds
        self._flush_seconds = flush_seconds
        self._owns_io = io is None
        self._io = io if io is not None else DiskWriter(name=f"recording-io-{bridge_id}")
        started_at = time.time() if now is None else now
        self.recording_id = index.start(
            kind="bridge",
            bridge_id=bridge_id,
            call_id=call_id,
            codec=codec,
            sample_rate=sample_rate,
            started_at=started_at,
        )
        self._mix = self._recorder(self.recording_id, {})
        self._legs: dict[str, tuple[str, SegmentedRecorder]] = {}
        self._closed = False
        log.info(
            "bridge %s: recording %s started (%s %d Hz%s)",
            bridge_id,
            self.recording_id,
            codec,
            sample_rate,
            ", per leg" if per_leg else "",
        )

    @property
    def leg_recordings(self) -> dict[str, str]:
        """Leg id -> its own recording id (legs currently recorded separately)."""
        return {leg_id: recording_id for leg_id, (recording_id, _) in self._legs.items()}

    def _recorder(self, recording_id: str, tags: dict[str, str]) -> SegmentedRecorder:
        return SegmentedRecorder(
            self._root,
            recording_id=recording_id,
            sample_rate=self.sample_rate,
            codec=self._codec,
            segment_seconds=self._segment_seconds,
            flush_seconds=self._flush_seconds,
            index=self._index,
            io=self._io,
            tags={
                "HUB_BRIDGE": self.bridge_id,
                **({"HUB_CALL": self.call_id} if self.call_id else {}),
                **tags,
            },
        )

    def _index_later(self, recording_id: str, what: str, update: Callable[[], None]) -> None:
        """Run an index update on the DiskWriter, behind the segments of ``recording_id``."""

        def job() -> None:
            try:
                update()
            except (RecordingError, sqlite3.Error) as exc:
                log.error("recording %s: cannot %s: %s", recording_id, what, exc)

        self._io.submit(recording_id, job)

    # -- the mixer's tick

    def on_mix(self, pcm: Pcm, now: float) -> None:
        """This tick's mix (what the bridge hears), mono int16."""
        if not self._closed:
            self._mix.write(pcm, now)

    def on_leg(self, leg_id: str, pcm: Pcm, now: float) -> None:
        """This tick's audio from one leg (ignored unless ``per_leg``)."""
        if self._closed or not self.per_leg:
            return
        entry = self._legs.get(leg_id)
        if entry is None:
            entry = self._start_leg(leg_id, None, now)
        entry[1].write(pcm, now)

    # -- membership

    def leg_joined(self, leg_id: str, peer: str | None, now: float) -> None:
        """``leg_id`` (``peer``: a user, a number, a talk group) joined the bridge."""
        if self._closed:
            return
        recording_id = self.recording_id
        self._index_later(
            recording_id,
            "record a join",
            lambda: self._index.participant_joined(recording_id, leg_id, peer, now),
        )
        if self.per_leg and leg_id not in self._legs:
            self._start_leg(leg_id, peer, now)

    def leg_left(self, leg_id: str, now: float) -> None:
        """``leg_id`` left the bridge; its own recording (if any) ends."""
        if self._closed:
            return
        recording_id = self.recording_id
        self._index_later(
            recording_id,
            "record a leave",
            lambda: self._index.participant_left(recording_id, leg_id, now),
        )
        entry = self._legs.pop(leg_id, None)
        if entry is not None:
            self._finish(entry[0], entry[1], now)

    def _start_leg(
        self, leg_id: str, peer: str | None, now: float
    ) -> tuple[str, SegmentedRecorder]:
        recording_id = self._index.start(
            kind="leg",
            bridge_id=self.bridge_id,
            call_id=self.call_id,
            leg_id=leg_id,
            codec=self._codec,
            sample_rate=self.sample_rate,
            started_at=now,
        )
        self._index_later(
            recording_id,
            "record a join",
            lambda: self._index.participant_joined(recording_id, leg_id, peer, now),
        )
        entry = (recording_id, self._recorder(recording_id, {"HUB_LEG": leg_id}))
        self._legs[leg_id] = entry
        log.info("bridge %s: leg %s recorded as %s", self.bridge_id, leg_id, recording_id)
        return entry

    def _finish(self, recording_id: str, recorder: SegmentedRecorder, now: float) -> None:
        recorder.close(wait=False)
        self._index_later(recording_id, "finish", lambda: self._index.finish(recording_id, now))

    # -- the end

    def close(self, now: float, *, wait: bool = False, timeout: float | None = 30.0) -> None:
        """Stop recording: close every segment, mark the recordings complete.

        Returns at once unless ``wait``; the DiskWriter finishes the work (its
        ``close`` at shutdown waits for it). With ``wait``, blocks until everything
        is on disk and raises ``RecordingIOError`` if anything failed.
        """
        if self._closed:
            return
        self._closed = True
        recorders = [self._mix] + [recorder for _, recorder in self._legs.values()]
        for recording_id, recorder in [*self._legs.values(), (self.recording_id, self._mix)]:
            self._finish(recording_id, recorder, now)
        self._legs.clear()
        log.info("bridge %s: recording %s closed", self.bridge_id, self.recording_id)
        if not wait:
            if self._owns_io:
                self._io.close(0)  # its thread drains the queue, then stops
            return
        if self._owns_io:
            finished = self._io.close(timeout)
        else:
            finished = all(self._io.wait(r.recording_id, timeout) for r in recorders)
        failures = [f for recorder in recorders for f in recorder.failures]
        if not finished:
            failures.append(f"the disk did not finish within {timeout} s")
        if failures:
            raise RecordingIOError(
                f"recording {self.recording_id}: {len(failures)} I/O failure(s), "
                f"first: {failures[0]}"
            )

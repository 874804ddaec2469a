"""Crash-safe segmented recording of one mono PCM stream.

A :class:`SegmentedRecorder` is fed 20 ms frames from the mixer's tick. In the tick
it only checks and keeps the frame (a copy into a list: ~3 us). Every
``flush_seconds`` the frames kept since the last flush go to a :class:`DiskWriter`
thread, which encodes them, writes the bytes, fsyncs the file, and only then tells
the index. So:

* a ``kill -9`` loses the audio since the last flush: at most ``flush_seconds``
  (plus the 6.5 ms of the Opus encoder's look-ahead, or one FLAC block <= 105 ms);
* each segment is a complete file of its own (``<recording_id>/<seq:05d>.<ext>``),
  closed every ``segment_seconds`` (trailer written, file and directory fsynced,
  then marked closed in the index): a closed segment always plays;
* the segment open at the kill ends in a partial Ogg page / FLAC frame, which
  decoders skip (CRC), so it plays up to its last flush (``recordings.audio``).

Why the encoding is not in the tick (measured on the dev VM, 2 vCPUs, PyAV 18.1):

* PyAV releases the GIL while libopus/libFLAC encode: a thread spinning in Python
  kept 98% of its speed while another thread encoded flat out. Encoding on the
  DiskWriter thread is close to free for the event loop; in the tick it cost
  ~75 us a frame for Opus and ~8 us for FLAC, and opening a fresh FLAC encoder at
  each segment start cost 3-4 ms (its ~7 MB context is zeroed, under the GIL).
* An fsync costs 0.2 ms median, 1.7 ms p90, 4.4 ms worst on this idle ext4 virtio
  disk, and tens of ms on a busy or spinning one: never in the loop.

Jobs of one recording run in order on one DiskWriter thread, so an encoder is only
ever touched by one thread.

Why Opus (in Ogg) is the default codec. 20 s of synthetic speech (formant-filtered
pulse train with pauses and a little noise), 20 ms frames; CPU is encoder time per
second of audio, memory the resident size of one live encoder:

    rate    codec                     CPU ms/s   memory   size kbit/s
    8000    FLAC (level 5)              0.33     7.2 MB    78  (a pure tone: 34)
    8000    Opus 16 kbit/s voip          3.4     0.23 MB   16
    8000    Opus complexity 0            1.4               16
    16000   FLAC                        0.46               145
    16000   Opus 24 kbit/s               7.3                23
    48000   FLAC                        0.72               413  (noise-heavy input)
    48000   Opus 32 kbit/s               6.8                31

With encoding off the loop, CPU is the cheap column: a hundred 8 kHz recordings
take ~0.35 of a core with Opus, on worker threads. Memory and disk are not cheap:
the same hundred take 720 MB of RAM and 3.5 GB an hour of disk with FLAC, 23 MB
and 0.7 GB with Opus. Speech reaching the mixer has already been through G.711 or
Opus, and Opus at these rates keeps it intelligible. ``codec="flac"`` gives
lossless segments for deployments that want them. Opus runs at the stream's own
rate: libopus takes 8/16/48 kHz natively and Ogg Opus granule positions are always
48 kHz (RFC 7845 4), so no resampler is involved.

Both containers are framed here (``recordings.framing``), not by libavformat: its
Ogg muxer keeps the last complete page back, which would add up to two pages to
what a kill loses; here every flush ends on a page boundary.

Timestamps: ``now`` is Unix time (``time.time()``). A segment starts at the ``now``
of its first frame, or where the previous one ended; its end is its start plus the
audio it holds. If frames stop and resume (a stalled tick), the hole is filled with
silence up to ``GAP_FILL_MAX`` so the recording stays on the wall clock; a longer
hole (or a clock step) starts a new segment at the new ``now``.
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import av
import numpy as np
import numpy.typing as npt
from av.audio.codeccontext import AudioCodecContext
from av.error import FFmpegError

from recordings.audio import SAMPLE_RATES
from recordings.errors import InvalidInput, RecordingError, RecordingIOError
from recordings.framing import (
    FLAC_STREAMINFO_OFFSET,
    OGG_EOS,
    flac_header,
    flac_streaminfo_with_total,
    ogg_pages,
    opus_header_pages,
    opus_tags,
)

log = logging.getLogger(__name__)

Pcm = npt.NDArray[np.int16]

#: The default codec; see the module docstring for the measurements behind it.
DEFAULT_CODEC: Final = "opus"
#: Codec name -> file extension of its segments.
CODEC_EXTENSIONS: Final = {"opus": "opus", "flac": "flac"}
#: Opus bit rate per input rate (mono speech; 8 kHz is narrowband).
OPUS_BITRATES: Final = {8000: 16000, 16000: 24000, 48000: 32000}
#: A hole in the frames longer than this is filled with silence ...
GAP_TOLERANCE: Final = 0.2
#: ... up to this long; a longer one starts a new segment instead.
GAP_FILL_MAX: Final = 5.0
#: Written into every segment's comment block.
VENDOR: Final = "dispatch-hub recordings"

_FILE_MODE: Final = 0o640


class SegmentIndex(Protocol):
    """What the recorder tells the index (``RecordingIndex`` implements it).

    Called from a ``DiskWriter`` thread, after the bytes it describes are on disk.
    """

    def add_segment(self, recording_id: str, seq: int, path: Path, started_at: float) -> None:
        """A segment file now exists (header written and fsynced), open."""

    def close_segment(
        self,
        recording_id: str,
        seq: int,
        *,
        path: Path,
        started_at: float,
        ended_at: float,
        size: int,
    ) -> None:
        """The segment is complete and fsynced; insert it if ``add_segment`` failed."""


# ------------------------------------------------------------------------ disk I/O


class DiskWriter:
    """Threads that encode and write recordings off the event loop, in order per key.

    ``submit(key, job)`` queues ``job``; jobs with the same key (a recording id) run
    in submission order on the same thread. One ``DiskWriter`` is meant to be shared
    by all recordings of a process (the hub creates one, with a thread per spare
    core if it records many legs: ~3.4 ms of Opus encoding per recording-second at
    8 kHz); a recorder given none makes its own one-thread writer. Threads start on
    the first job. A backlog (a disk slower than the audio) grows in memory and is
    logged, never pushed back onto the loop.

    A job that raises is logged and the thread goes on: jobs handle the errors they
    expect themselves, this is the last line that keeps the thread alive.
    """

    #: Queued jobs past which a warning is logged (one flush job per recording-second).
    BACKLOG_WARNING: Final = 2000

    def __init__(self, threads: int = 1, *, name: str = "recording-io") -> None:
        if threads < 1:
            raise ValueError("a DiskWriter needs at least one thread")
        self.name = name
        self._queues: list[queue.SimpleQueue[Callable[[], None] | None]] = [
            queue.SimpleQueue() for _ in range(threads)
        ]
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False
        self._warned = False

    def _queue_for(self, key: str) -> queue.SimpleQueue[Callable[[], None] | None]:
        return self._queues[zlib.crc32(key.encode()) % len(self._queues)]

    def _start(self) -> None:
        with self._lock:
            if self._threads:
                return
            for number, jobs in enumerate(self._queues):
                thread = threading.Thread(
                    target=self._run, args=(jobs,), name=f"{self.name}-{number}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def submit(self, key: str, job: Callable[[], None]) -> None:
        """Queue ``job`` behind every earlier job of ``key``."""
        if self._closed:
            raise RecordingError(f"disk writer {self.name} is closed")
        if not self._threads:
            self._start()
        jobs = self._queue_for(key)
        jobs.put(job)
        backlog = jobs.qsize()
        if backlog > self.BACKLOG_WARNING and not self._warned:
            self._warned = True
            log.warning("%s: %d jobs queued: the disk is slower than the audio", self.name, backlog)
        elif self._warned and backlog < self.BACKLOG_WARNING // 2:
            self._warned = False
            log.info("%s: backlog back to %d jobs", self.name, backlog)

    @property
    def backlog(self) -> int:
        """Jobs queued and not yet started (approximate)."""
        return sum(jobs.qsize() for jobs in self._queues)

    def wait(self, key: str, timeout: float | None = None) -> bool:
        """Block until every job of ``key`` submitted so far has run; False on timeout."""
        if not self._threads:
            return True
        done = threading.Event()
        self._queue_for(key).put(done.set)
        return done.wait(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Run every queued job, then stop the threads; False if they did not stop in time."""
        with self._lock:
            if self._closed:
                return True
            self._closed = True
            threads = list(self._threads)
        for jobs in self._queues[: len(threads)]:
            jobs.put(None)
        for thread in threads:
            thread.join(timeout)
        return not any(thread.is_alive() for thread in threads)

    def _run(self, jobs: queue.SimpleQueue[Callable[[], None] | None]) -> None:
        while True:
            job = jobs.get()
            if job is None:
                return
            try:
                job()
            except Exception:
                log.exception("%s: a recording I/O job failed", self.name)


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_directories(path: Path) -> None:
    """``mkdir -p`` that fsyncs each parent whose entry it created (new dirs survive)."""
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o750)
        except FileExistsError:
            continue
        _fsync_directory(directory.parent)


# ------------------------------------------------------------------------- encoders


class _SegmentEncoder(Protocol):
    def header(self, tags: Mapping[str, str]) -> bytes: ...

    def encode(self, pcm: Pcm) -> None: ...

    def take(self) -> bytes: ...

    def finish(self) -> tuple[bytes, list[tuple[int, bytes]]]: ...


def _codec_context(name: str, sample_rate: int) -> AudioCodecContext:
    context = av.CodecContext.create(name, "w")
    assert isinstance(context, AudioCodecContext)
    context.sample_rate = sample_rate
    context.layout = "mono"
    context.format = "s16"
    return context


def _frame(pcm: Pcm, sample_rate: int, pts: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = sample_rate
    frame.pts = pts
    return frame


class _FlacEncoder:
    """FLAC frames appended after a header; STREAMINFO rewritten at the end."""

    def __init__(self, sample_rate: int) -> None:
        self._rate = sample_rate
        self._context = _codec_context("flac", sample_rate)
        self._context.open()
        self._streaminfo = bytes(self._context.extradata or b"")
        self._pts = 0
        self._pending: list[bytes] = []

    def header(self, tags: Mapping[str, str]) -> bytes:
        return flac_header(self._streaminfo, VENDOR, tags)

    def encode(self, pcm: Pcm) -> None:
        for packet in self._context.encode(_frame(pcm, self._rate, self._pts)):
            self._pending.append(bytes(packet))
        self._pts += len(pcm)

    def take(self) -> bytes:
        data = b"".join(self._pending)
        self._pending.clear()
        return data

    def finish(self) -> tuple[bytes, list[tuple[int, bytes]]]:
        for packet in self._context.encode(None):
            if packet.size:
                self._pending.append(bytes(packet))
        final = bytes(self._context.extradata or b"")
        if len(final) != len(self._streaminfo) or final == self._streaminfo:
            # The encoder did not hand back a final STREAMINFO: set the length ourselves.
            final = flac_streaminfo_with_total(self._streaminfo, self._pts)
        return self.take(), [(FLAC_STREAMINFO_OFFSET, final)]


class _OpusEncoder:
    """Opus packets framed into Ogg pages (RFC 7845), one page per flush."""

    def __init__(self, sample_rate: int, serial: int) -> None:
        self._rate = sample_rate
        self._context = _codec_context("libopus", sample_rate)
        self._context.bit_rate = OPUS_BITRATES[sample_rate]
        self._context.options = {"application": "voip", "frame_duration": "20"}
        self._context.open()
        self._head = bytes(self._context.extradata or b"")
        self._serial = serial
        # Granule positions count 48 kHz samples whatever the input rate (RFC 7845 4).
        self._scale = 48000 // sample_rate
        self._granule = 0
        self._pts = 0
        self._page_sequence = 2
        self._pending: list[tuple[bytes, int]] = []

    def header(self, tags: Mapping[str, str]) -> bytes:
        return opus_header_pages(self._head, opus_tags(VENDOR, tags), self._serial)

    def _collect(self, packets: Sequence[av.Packet[Any]]) -> None:
        for packet in packets:
            # libopus reports the first packet's duration in full and trims the last
            # one to the input's end, so the running sum is the granule position
            # RFC 7845 4 wants, pre-skip included, end trimming on the last page.
            self._granule += int(packet.duration or 0) * self._scale
            self._pending.append((bytes(packet), self._granule))

    def encode(self, pcm: Pcm) -> None:
        self._collect(self._context.encode(_frame(pcm, self._rate, self._pts)))
        self._pts += len(pcm)

    def _pages(self, flags: int) -> bytes:
        if not self._pending:
            return b""
        pages = ogg_pages(
            self._pending,
            serial=self._serial,
            first_sequence=self._page_sequence,
            last_flags=flags,
        )
        self._page_sequence += len(pages)
        self._pending.clear()
        return b"".join(pages)

    def take(self) -> bytes:
        return self._pages(0)

    def finish(self) -> tuple[bytes, list[tuple[int, bytes]]]:
        self._collect(self._context.encode(None))
        return self._pages(OGG_EOS), []


def _encoder(codec: str, sample_rate: int, serial: int) -> _SegmentEncoder:
    if codec == "flac":
        return _FlacEncoder(sample_rate)
    return _OpusEncoder(sample_rate, serial)


# ------------------------------------------------------------------------- segments


@dataclass(eq=False)
class _SegmentFile:
    """The DiskWriter's side of one segment: its encoder and file (no other thread
    touches them)."""

    path: Path
    seq: int
    started_at: float
    encoder: _SegmentEncoder | None = None
    fd: int | None = None
    offset: int = 0
    """Bytes in the file so far (where the next chunk goes)."""
    failed: bool = False


@dataclass(eq=False)
class _Segment:
    """The loop's side of the open segment."""

    file: _SegmentFile
    samples: int = 0
    """Samples in the segment, including those not yet handed over."""
    pending: list[Pcm] = field(default_factory=list)
    """Frames kept since the last flush."""

    @property
    def started_at(self) -> float:
        return self.file.started_at

    def take(self) -> list[Pcm]:
        frames, self.pending = self.pending, []
        return frames


class SegmentedRecorder:
    """One recording: mono PCM in, closed+fsynced+indexed segment files out.

    ``write(pcm, now)`` from the mixer's tick; ``close()`` at the end. Not
    thread-safe: one caller (the event loop). Encoding, file I/O and index updates
    run on the ``io`` DiskWriter (its own one if none is given).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        recording_id: str,
        sample_rate: int,
        codec: str = DEFAULT_CODEC,
        segment_seconds: float = 60.0,
        flush_seconds: float = 1.0,
        index: SegmentIndex | None = None,
        io: DiskWriter | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        if sample_rate not in SAMPLE_RATES:
            raise InvalidInput(f"invalid sample rate {sample_rate}: one of {SAMPLE_RATES}")
        if codec not in CODEC_EXTENSIONS:
            raise InvalidInput(f"invalid codec {codec!r}: one of {', '.join(CODEC_EXTENSIONS)}")
        if not 0 < flush_seconds <= segment_seconds:
            raise InvalidInput("need 0 < flush_seconds <= segment_seconds")
        if not recording_id or "/" in recording_id or recording_id.startswith("."):
            raise InvalidInput(f"invalid recording id {recording_id!r}")
        self.recording_id = recording_id
        self.sample_rate = sample_rate
        self.codec = codec
        self.segment_seconds = segment_seconds
        self.flush_seconds = flush_seconds
        self.directory = Path(directory).absolute() / recording_id
        self._extension = CODEC_EXTENSIONS[codec]
        self._segment_samples = max(1, round(segment_seconds * sample_rate))
        self._index = index
        self._owns_io = io is None
        self._io = io if io is not None else DiskWriter(name=f"recording-io-{recording_id}")
        self._tags = dict(tags or {})
        self._segment: _Segment | None = None
        self._next_seq = 0
        self._next_start: float | None = None
        self._last_flush = 0.0
        self._closed = False
        self._failures: list[str] = []
        self.samples_written = 0
        """Samples taken so far, silence fill included."""

    # -- public

    @property
    def duration(self) -> float:
        """Seconds of audio taken so far."""
        return self.samples_written / self.sample_rate

    @property
    def failures(self) -> list[str]:
        """What went wrong on disk so far (empty when all is well); also logged."""
        return list(self._failures)

    def write(self, pcm: Pcm, now: float) -> None:
        """Record one frame of mono int16 PCM whose first sample was at ``now``.

        The frame is copied: the caller may reuse its buffer.
        """
        if self._closed:
            raise RecordingError(f"recording {self.recording_id} is closed")
        if not isinstance(pcm, np.ndarray) or pcm.dtype != np.int16:
            raise InvalidInput(f"PCM must be an int16 array, got {getattr(pcm, 'dtype', pcm)!r}")
        samples = pcm.reshape(-1)
        if not len(samples):
            return
        segment = self._segment
        if segment is not None:
            lag = now - segment.started_at - segment.samples / self.sample_rate
            if lag > GAP_FILL_MAX:
                self._close_segment()
                self._next_start = now
            elif lag > GAP_TOLERANCE:
                self._feed(np.zeros(round(lag * self.sample_rate), dtype=np.int16), now)
        self._feed(samples.copy(), now)
        if now - self._last_flush >= self.flush_seconds:
            self._flush()
            self._last_flush = now

    def flush(self) -> None:
        """Hand everything kept so far to the disk writer now."""
        self._flush()

    def close(self, *, wait: bool = True, timeout: float | None = 30.0) -> None:
        """Close the open segment (trailer, fsyncs, index) and stop.

        With ``wait`` (the default), blocks until it is all on disk and raises
        ``RecordingIOError`` if anything failed; without, returns at once (the
        DiskWriter finishes the job; ``DiskWriter.close`` waits for it).
        """
        if self._closed:
            return
        self._closed = True
        self._close_segment()
        if not wait:
            if self._owns_io:
                self._io.close(0)  # the thread drains the queue, then stops
            return
        finished = (
            self._io.close(timeout) if self._owns_io else self._io.wait(self.recording_id, timeout)
        )
        if not finished:
            self._failures.append(f"the disk did not finish within {timeout} s")
        if self._failures:
            raise RecordingIOError(
                f"recording {self.recording_id}: {len(self._failures)} I/O failure(s), "
                f"first: {self._failures[0]}"
            )

    # -- loop side

    def _feed(self, samples: Pcm, now: float) -> None:
        while len(samples):
            segment = self._segment or self._open_segment(now)
            room = self._segment_samples - segment.samples
            head, samples = samples[:room], samples[room:]
            segment.pending.append(head)
            segment.samples += len(head)
            self.samples_written += len(head)
            if segment.samples >= self._segment_samples:
                self._close_segment()

    def _open_segment(self, now: float) -> _Segment:
        seq = self._next_seq
        self._next_seq += 1
        started_at = now if self._next_start is None else self._next_start
        file = _SegmentFile(self.directory / f"{seq:05d}.{self._extension}", seq, started_at)
        segment = self._segment = _Segment(file)
        self._last_flush = now
        self._io.submit(self.recording_id, lambda: self._io_open(file))
        return segment

    def _flush(self) -> None:
        segment = self._segment
        if segment is None or not segment.pending:
            return
        file, frames = segment.file, segment.take()
        self._io.submit(self.recording_id, lambda: self._io_write(file, frames))

    def _close_segment(self) -> None:
        segment = self._segment
        if segment is None:
            return
        self._segment = None
        ended_at = segment.started_at + segment.samples / self.sample_rate
        self._next_start = ended_at
        file, frames = segment.file, segment.take()
        self._io.submit(self.recording_id, lambda: self._io_close(file, frames, ended_at))

    # -- DiskWriter side

    def _fail(self, file: _SegmentFile, what: str, exc: BaseException) -> None:
        file.failed = True
        message = f"{what} {file.path}: {exc}"
        log.error("recording %s: %s", self.recording_id, message)
        self._failures.append(message)
        self._release(file)

    def _io_open(self, file: _SegmentFile) -> None:
        try:
            serial = zlib.crc32(f"{self.recording_id}/{file.seq}".encode())
            file.encoder = _encoder(self.codec, self.sample_rate, serial)
            header = file.encoder.header(
                {
                    **self._tags,
                    "HUB_RECORDING": self.recording_id,
                    "HUB_SEGMENT": str(file.seq),
                    "HUB_STARTED_AT": repr(file.started_at),
                }
            )
        except (FFmpegError, ValueError) as exc:
            self._fail(file, "cannot start an encoder for", exc)
            return
        try:
            if file.seq == 0:
                _make_directories(self.directory)
            file.fd = os.open(
                file.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, _FILE_MODE
            )
            _write_all(file.fd, header, 0)
            file.offset = len(header)
            os.fsync(file.fd)
            _fsync_directory(self.directory)
        except OSError as exc:
            self._fail(file, "cannot create", exc)
            return
        self._tell_index(
            file,
            "index",
            lambda index: index.add_segment(
                self.recording_id, file.seq, file.path, file.started_at
            ),
        )

    def _encode(self, file: _SegmentFile, frames: list[Pcm]) -> bytes:
        assert file.encoder is not None
        if frames:
            file.encoder.encode(np.concatenate(frames) if len(frames) > 1 else frames[0])
        return file.encoder.take()

    def _write(self, file: _SegmentFile, chunks: list[tuple[int | None, bytes]]) -> None:
        """Write chunks (``None`` offset: append), then fsync."""
        assert file.fd is not None
        for offset, data in chunks:
            if offset is None:
                _write_all(file.fd, data, file.offset)
                file.offset += len(data)
            else:
                _write_all(file.fd, data, offset)
        os.fsync(file.fd)

    def _io_write(self, file: _SegmentFile, frames: list[Pcm]) -> None:
        if file.failed:
            return
        try:
            data = self._encode(file, frames)
        except FFmpegError as exc:
            self._fail(file, "cannot encode", exc)
            return
        try:
            self._write(file, [(None, data)])
        except OSError as exc:
            self._fail(file, "cannot write", exc)

    def _io_close(self, file: _SegmentFile, frames: list[Pcm], ended_at: float) -> None:
        if file.failed:
            return
        try:
            data = self._encode(file, frames)
            assert file.encoder is not None
            tail, patches = file.encoder.finish()
        except FFmpegError as exc:
            self._fail(file, "cannot encode", exc)
            return
        try:
            self._write(file, [(None, data + tail), *patches])
            assert file.fd is not None
            fd, file.fd = file.fd, None
            os.close(fd)
            _fsync_directory(self.directory)
        except OSError as exc:
            self._fail(file, "cannot close", exc)
            return
        self._release(file)
        self._tell_index(
            file,
            "index closed",
            lambda index: index.close_segment(
                self.recording_id,
                file.seq,
                path=file.path,
                started_at=file.started_at,
                ended_at=ended_at,
                size=file.offset,
            ),
        )

    def _tell_index(
        self, file: _SegmentFile, what: str, update: Callable[[SegmentIndex], None]
    ) -> None:
        if self._index is None:
            return
        try:
            update(self._index)
        except (RecordingError, sqlite3.Error) as exc:
            # The file is the evidence: keep writing it; close_segment upserts, and
            # recovery registers files the index missed.
            message = f"cannot {what} {file.path}: {exc}"
            log.error("recording %s: %s", self.recording_id, message)
            self._failures.append(message)

    @staticmethod
    def _release(file: _SegmentFile) -> None:
        """Free the encoder (the FLAC one holds ~7 MB) and the descriptor."""
        file.encoder = None
        if file.fd is not None:
            try:
                os.close(file.fd)
            except OSError:
                log.debug("closing %s after a failure failed too", file.path)
            file.fd = None

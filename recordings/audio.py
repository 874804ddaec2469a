"""Decoding segment files back to PCM, tolerant of a truncated tail.

A segment that was open when the hub was killed ends in a partial Ogg page or FLAC
frame. Its CRC fails, the demuxer or decoder rejects that last piece, and everything
before it is still good audio: decoding stops counting at the first bad packet
instead of failing the whole file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

import av
import av.audio.resampler
import numpy as np
import numpy.typing as npt
from av.error import FFmpegError

from recordings.errors import UndecodableSegment

log = logging.getLogger(__name__)

Pcm = npt.NDArray[np.int16]

#: Sample rates a recording may have (the mixer's rates).
SAMPLE_RATES: Final = (8000, 16000, 48000)


@dataclass(frozen=True, slots=True)
class DecodedSegment:
    """A whole segment decoded to mono 16-bit PCM."""

    pcm: Pcm = field(repr=False)
    """The samples, mono int16."""
    sample_rate: int
    """Rate of ``pcm`` (the rate asked for, else the file's)."""
    bad_packets: int
    """Packets that failed to decode (a truncated tail counts one)."""
    tags: dict[str, str]
    """Comment tags of the file (lower-case keys), e.g. ``hub_started_at``."""

    @property
    def duration(self) -> float:
        """Seconds of audio."""
        return len(self.pcm) / self.sample_rate


class SegmentReader:
    """Streams a segment's audio as int16 chunks at a chosen rate.

    ``with SegmentReader(path, rate) as reader: for chunk in reader: ...``; afterwards
    ``bad_packets`` says how many packets were skipped. Raises ``UndecodableSegment``
    if the file cannot be opened as audio at all.
    """

    def __init__(self, path: str | os.PathLike[str], sample_rate: int | None = None) -> None:
        self.path = os.fspath(path)
        try:
            self._container = av.open(self.path, "r")
        except (OSError, FFmpegError) as exc:
            raise UndecodableSegment(f"cannot open segment {self.path}: {exc}") from exc
        if not self._container.streams.audio or not self._container.streams.audio[0].rate:
            self._container.close()
            raise UndecodableSegment(f"segment {self.path} has no audio stream")
        self._stream = self._container.streams.audio[0]
        self.source_rate = int(self._stream.rate)
        self.sample_rate = sample_rate or self.source_rate
        self.bad_packets = 0
        tags = {**self._container.metadata, **self._stream.metadata}
        self.tags = {key.lower(): value for key, value in tags.items()}

    def __enter__(self) -> SegmentReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    def __iter__(self) -> Iterator[Pcm]:
        resampler = av.audio.resampler.AudioResampler(
            format="s16", layout="mono", rate=self.sample_rate
        )
        packets = self._container.demux(self._stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except FFmpegError as exc:
                # The demuxer gave up on a damaged tail: what came before stands.
                self.bad_packets += 1
                log.debug("segment %s: demuxing stopped: %s", self.path, exc)
                break
            try:
                frames = packet.decode()
            except FFmpegError as exc:
                self.bad_packets += 1
                log.debug("segment %s: packet skipped: %s", self.path, exc)
                continue
            for frame in frames:
                frame.pts = None
                for out in resampler.resample(frame):
                    yield _mono_int16(out)
        for out in resampler.resample(None):
            yield _mono_int16(out)


def _mono_int16(frame: av.AudioFrame) -> Pcm:
    array: Pcm = frame.to_ndarray().reshape(-1).astype(np.int16, copy=False)
    return array


def decode_segment(path: str | os.PathLike[str], sample_rate: int | None = None) -> DecodedSegment:
    """Decode a whole segment (at ``sample_rate``, default the file's own rate).

    Raises ``UndecodableSegment`` if the file does not open or holds no audio at all.
    """
    with SegmentReader(path, sample_rate) as reader:
        chunks = list(reader)
    pcm = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
    if len(pcm) == 0:
        raise UndecodableSegment(f"segment {os.fspath(path)} holds no decodable audio")
    return DecodedSegment(
        pcm=pcm,
        sample_rate=reader.sample_rate,
        bad_packets=reader.bad_packets,
        tags=reader.tags,
    )

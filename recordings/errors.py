"""The one exception tree of ``recordings/``.

``error_id`` is stable (the CLI and API clients may branch on it); the message is for
humans and names the recording.
"""

from __future__ import annotations

from typing import ClassVar


class RecordingError(Exception):
    """Base of every error the recordings package raises on purpose."""

    error_id: ClassVar[str] = "recording-error"


class InvalidInput(RecordingError):
    """A value was refused before anything was written (bad rate, codec, id ...)."""

    error_id: ClassVar[str] = "recording-invalid-input"


class RecordingNotFound(RecordingError):
    """No recording with that id in the index."""

    error_id: ClassVar[str] = "recording-not-found"


class UnsupportedFormat(RecordingError):
    """An export target whose extension names no format we write."""

    error_id: ClassVar[str] = "recording-unsupported-format"


class NoAudio(RecordingError):
    """The recording has no segment that decodes (nothing to export)."""

    error_id: ClassVar[str] = "recording-no-audio"


class IndexBusy(RecordingError):
    """Another process held the index's write lock for longer than the timeout."""

    error_id: ClassVar[str] = "recording-index-busy"


class IndexSchemaError(RecordingError):
    """The index file was written by a newer hub, or is not a recordings index."""

    error_id: ClassVar[str] = "recording-index-schema"


class RecordingIOError(RecordingError):
    """Writing a segment failed (disk full, permissions ...); details were logged."""

    error_id: ClassVar[str] = "recording-io-error"


class UndecodableSegment(RecordingError):
    """A segment file that is missing or has no decodable audio at all."""

    error_id: ClassVar[str] = "recording-undecodable-segment"


class ExportFailed(RecordingError):
    """The export file could not be written (no such directory, disk full ...)."""

    error_id: ClassVar[str] = "recording-export-failed"

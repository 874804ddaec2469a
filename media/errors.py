"""The media package's exception tree: every error it raises derives from MediaError."""

from __future__ import annotations


class MediaError(Exception):
    """Base of every error raised by the media package."""


class RtpError(MediaError, ValueError):
    """A datagram is not a well-formed RTP or RTCP packet.

    A ValueError too, so generic parsing code can catch it without knowing the package.
    """


class PortsExhausted(MediaError):
    """No free RTP/RTCP port pair is left in the configured range."""


class SessionClosed(MediaError):
    """An operation was attempted on a relay session that is already closed."""


class RtcpError(RtpError):
    """A datagram is not a well-formed RTCP compound packet, or a report cannot be built.

    Derives from RtpError (hence MediaError and ValueError) because RtpError already
    means "not a well-formed RTP or RTCP packet"; the subclass lets RTCP code be precise.
    """


class CodecError(MediaError, ValueError):
    """An unknown codec, a frame of the wrong shape, or a payload the codec rejects."""


class DtmfError(MediaError, ValueError):
    """A telephone-event payload (RFC 4733) or digit that cannot be parsed or encoded."""


class AudioFileError(MediaError):
    """An audio file that cannot be opened or decoded (missing, corrupt, no audio stream)."""

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

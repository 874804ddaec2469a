"""One exception tree for the SIP core: every protocol error carries its wire outcome."""

from __future__ import annotations


class SipError(Exception):
    """Base of every error raised by the SIP core."""


class ParseError(SipError, ValueError):
    """A message that cannot be accepted as it is.

    ``status`` is the response a server owes the sender (400 unless a more precise
    code applies); ``drop`` marks input that must be discarded without any reply
    (malformed responses, garbage); ``close`` marks a framing error that must close
    a stream transport (RFC 3261 18.3).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        drop: bool = False,
        close: bool = False,
        extra_headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.drop = drop
        self.close = close
        self.extra_headers = extra_headers

    @property
    def reason(self) -> str:
        """The reason phrase for the response: the error message, kept to one safe line."""
        text = str(self).replace("\r", " ").replace("\n", " ")
        return text[:120]

"""Harness for driving real peers (baresip phones, SIPp) from pytest-asyncio tests.

Everything here binds and sends on 127.0.0.1 only. Timeouts are expressed in seconds
and pass through :func:`scaled`, so a slow machine (or a run under a profiler) can
stretch every wait at once with ``PEERS_TIME_SCALE=3``.
"""

import ctypes
import os
import signal

LOOPBACK = "127.0.0.1"


def _time_scale() -> float:
    text = os.environ.get("PEERS_TIME_SCALE", "1")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"PEERS_TIME_SCALE must be a number, got {text!r}") from None
    if value <= 0:
        raise ValueError(f"PEERS_TIME_SCALE must be positive, got {value}")
    return value


TIME_SCALE = _time_scale()


def scaled(seconds: float) -> float:
    """``seconds`` stretched by ``PEERS_TIME_SCALE``: the one unit every harness wait uses."""
    return seconds * TIME_SCALE


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn`` for peers: SIGTERM the child when the test process dies.

    Without it a killed pytest (Ctrl-C twice, a CI timeout) leaves phones and SIPp
    instances holding ports. Linux only; elsewhere a no-op.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return  # not Linux: the peers' own time limits still apply

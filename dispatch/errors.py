"""The dispatch layer's one exception tree.

Every error carries a stable ``error_id`` (API clients and the CLI may branch on it)
and a message that says what is wrong, for humans. The console maps the classes to
HTTP statuses: ``NotFound`` 404, ``Conflict`` 409, ``InvalidInput`` 422.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


class DispatchError(Exception):
    """Base of every error the dispatch services raise on purpose."""

    default_id: ClassVar[str] = "dispatch-error"

    def __init__(self, message: str, error_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.error_id = error_id or self.default_id


class NotFound(DispatchError):
    """No object with that id (unit, person, endpoint, group, audit entry...)."""

    default_id = "not-found"


class Conflict(DispatchError):
    """The request is well-formed but clashes with the current state."""

    default_id = "conflict"


class InvalidInput(DispatchError):
    """A value was refused before anything was changed."""

    default_id = "invalid-input"


@dataclass(frozen=True, slots=True)
class LineError:
    """One problem in an imported file."""

    line: int
    """1-based physical line number in the file (the header is line 1)."""
    message: str
    """What is wrong on that line."""


class ImportFailed(InvalidInput):
    """An import was refused as a whole; ``errors`` says where and why."""

    default_id = "invalid-csv"

    def __init__(self, errors: list[LineError]) -> None:
        shown = "; ".join(f"line {e.line}: {e.message}" for e in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        count = f"{len(errors)} error{'s' if len(errors) != 1 else ''}"
        super().__init__(f"nothing imported, {count}: {shown}{more}")
        self.errors = errors

"""Reading an imported CSV file: what the directory and resources imports share.

UTF-8 (a BOM is allowed), comma-separated; blank lines are skipped. Each record comes
with the 1-based physical line it starts on, so errors point where a person looking at
the file in an editor will find them (a quoted cell may span lines).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from .errors import ImportFailed, LineError


class MalformedCsv(Exception):
    """The CSV syntax broke at ``line`` (an unclosed quote...): stop reading."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def decode(data: bytes | str, *, max_bytes: int) -> str:
    """The file's text; ``ImportFailed`` when it is too large or not UTF-8."""
    if isinstance(data, str):
        return data.removeprefix("\ufeff")
    if len(data) > max_bytes:
        raise ImportFailed([LineError(1, f"the file is larger than {max_bytes} bytes")])
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ImportFailed([LineError(
            line, f"not UTF-8 text (byte {exc.start + 1}): save the file as CSV UTF-8")]) \
            from None


def records(text: str) -> Iterator[tuple[int, list[str]]]:
    """``(line, cells)`` for every non-blank record; ``MalformedCsv`` ends the file."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    last_line = 0
    try:
        for record in reader:
            line, last_line = last_line + 1, reader.line_num
            if not record or all(not cell.strip() for cell in record):
                continue
            yield line, record
    except csv.Error as exc:
        raise MalformedCsv(reader.line_num or 1, f"malformed CSV: {exc}") from None

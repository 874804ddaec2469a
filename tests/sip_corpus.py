"""The SIP torture corpus (RFC 4475, RFC 5118) and what EXPECTED.tsv says of each message.

Shared by the sans-I/O torture test and its real-socket twin (which also runs it in a
child process inside a network namespace).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# shared/ sits beside the repository (in CI as on a developer's machine).
_DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "sip-torture"
CORPUS = Path(os.environ.get("SIP_TORTURE_DIR", str(_DEFAULT)))
EXPECTED = CORPUS / "EXPECTED.tsv"
# Verdicts for corpus files the shared table leaves out (ours, from the RFC text).
EXTRA = Path(__file__).resolve().parent / "sip_expected_extra.tsv"
VERDICTS = frozenset({"accept", "drop", "may", "close"})


@dataclass(frozen=True)
class Row:
    name: str
    verdict: str
    """accept, drop, may, close, or a status code such as 400."""
    note: str

    @property
    def status(self) -> int | None:
        return int(self.verdict) if self.verdict.isdigit() else None


def expected_rows() -> list[Row]:
    rows: list[Row] = []
    if not EXPECTED.exists():
        return rows
    for table in (EXPECTED, EXTRA):
        for line in table.read_text(encoding="utf-8").splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            name, verdict, *note = line.split("\t")
            if any(row.name == name.strip() for row in rows):
                continue  # the shared table wins
            rows.append(Row(name.strip(), verdict.strip(), note[0].strip() if note else ""))
    return rows


def message_files() -> dict[str, Path]:
    """Every message file, by the name EXPECTED.tsv uses (``.dat`` dropped)."""
    files: dict[str, Path] = {}
    for folder in ("rfc4475", "rfc5118"):
        for path in sorted((CORPUS / folder).glob("*")):
            if path.is_file():
                files[path.name.removesuffix(".dat")] = path
    return files


def wire_bytes(path: Path) -> bytes:
    """The message as it goes on the wire: CRLF line endings where the file has bare LF.

    Only the header section is rewritten when the file already uses CRLF somewhere: a body
    (mpart01's binary parts) may hold bare LFs that its Content-Length counts.
    """
    data = path.read_bytes()
    if b"\r\n" not in data:
        return data.replace(b"\n", b"\r\n")
    crlf_end, lf_end = data.find(b"\r\n\r\n"), data.find(b"\n\n")
    if lf_end < 0 or 0 <= crlf_end < lf_end:
        head, sep, body = data[:crlf_end], b"\r\n\r\n", data[crlf_end + 4 :]
    else:
        head, sep, body = data[:lf_end], b"\r\n\r\n", data[lf_end + 2 :]
    head = head.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return head + sep + body


def is_response(data: bytes) -> bool:
    return data.lstrip(b"\r\n").startswith(b"SIP/")


def status_of(data: bytes) -> int:
    """The status code of a response on the wire (without a full parse: a 400 may copy
    the very header faults it reports)."""
    parts = data.split(b" ", 2)
    assert parts[0] == b"SIP/2.0", data[:60]
    return int(parts[1])

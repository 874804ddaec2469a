"""Container framing for segment files: Ogg pages for Opus, FLAC metadata blocks.

Pure functions over bytes. The segment writer frames the encoder's packets itself
instead of going through libavformat's muxers, because crash safety needs control
over *when* bytes become whole pages:

* libavformat's Ogg muxer holds the last complete page back (to be able to flag it
  end-of-stream), so after a flush up to two pages of audio are still only in memory.
  Here every flush emits one page with every packet encoded so far, so what is
  fsynced is everything but the encoder's own look-ahead.
* FLAC frames are self-delimiting (sync code + CRC-16), so a file is the ``fLaC``
  marker, STREAMINFO, a comment block, then frames appended as they come. STREAMINFO
  starts with "total samples unknown" and is rewritten in place when the segment
  closes.

References: RFC 3533 (Ogg), RFC 7845 (Ogg Opus), RFC 9639 (FLAC).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping, Sequence
from typing import Final

# ----------------------------------------------------------------------------- Ogg

#: RFC 3533 6: header_type flags.
OGG_CONTINUED: Final = 0x01
OGG_BOS: Final = 0x02
OGG_EOS: Final = 0x04

_MAX_LACING: Final = 255
_BIT_REVERSED: Final = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def ogg_crc(data: bytes) -> int:
    """Ogg's CRC-32 (RFC 3533 6: poly 0x04C11DB7, MSB first, init 0, no final xor).

    zlib computes the bit-reflected CRC-32 in C; reflecting the input bytes and the
    result, and undoing zlib's init and final inversions, gives Ogg's CRC without a
    Python loop over the bytes.
    """
    reflected = ~zlib.crc32(data.translate(_BIT_REVERSED), 0xFFFFFFFF) & 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


def _lacing(size: int) -> bytes:
    return b"\xff" * (size // 255) + bytes((size % 255,))


def ogg_page(
    packets: Sequence[bytes], *, granule: int, serial: int, sequence: int, flags: int = 0
) -> bytes:
    """One Ogg page holding whole ``packets`` (RFC 3533 6), CRC filled in.

    ``granule`` is the position after the last packet on the page. Raises
    ``ValueError`` if the packets need more than 255 lacing values (use
    ``ogg_pages``, which splits).
    """
    lacing = b"".join(_lacing(len(packet)) for packet in packets)
    if len(lacing) > _MAX_LACING:
        raise ValueError(f"{len(packets)} packets need {len(lacing)} lacing values (max 255)")
    header = struct.pack("<4sBBqIIIB", b"OggS", 0, flags, granule, serial, sequence, 0, len(lacing))
    page = bytearray(header + lacing + b"".join(packets))
    struct.pack_into("<I", page, 22, ogg_crc(bytes(page)))
    return bytes(page)


def ogg_pages(
    packets: Sequence[tuple[bytes, int]],
    *,
    serial: int,
    first_sequence: int,
    last_flags: int = 0,
) -> list[bytes]:
    """Pages for ``(packet, granule_after_packet)`` pairs, split at 255 lacing values.

    Packets never span pages (an Opus packet is at most a few kB). ``last_flags``
    goes on the last page (``OGG_EOS`` when the stream ends).
    """
    groups: list[list[tuple[bytes, int]]] = [[]]
    used = 0
    for packet, granule in packets:
        need = len(packet) // 255 + 1
        if need > _MAX_LACING:
            raise ValueError(f"packet of {len(packet)} bytes does not fit an Ogg page")
        if used + need > _MAX_LACING:
            groups.append([])
            used = 0
        groups[-1].append((packet, granule))
        used += need
    pages = []
    for number, group in enumerate(groups):
        if not group:
            continue
        last = number == len(groups) - 1
        pages.append(
            ogg_page(
                [packet for packet, _ in group],
                granule=group[-1][1],
                serial=serial,
                sequence=first_sequence + number,
                flags=last_flags if last else 0,
            )
        )
    return pages


def _vorbis_comments(vendor: str, tags: Mapping[str, str]) -> bytes:
    """A Vorbis comment list (little-endian lengths), shared by OpusTags and FLAC."""
    parts = [struct.pack("<I", len(vendor.encode())), vendor.encode(), struct.pack("<I", len(tags))]
    for key, value in tags.items():
        entry = f"{key}={value}".encode()
        parts += [struct.pack("<I", len(entry)), entry]
    return b"".join(parts)


def opus_tags(vendor: str, tags: Mapping[str, str]) -> bytes:
    """The OpusTags header packet (RFC 7845 5.2)."""
    return b"OpusTags" + _vorbis_comments(vendor, tags)


def opus_header_pages(opus_head: bytes, tags_packet: bytes, serial: int) -> bytes:
    """The two header pages of an Ogg Opus stream (RFC 7845 3: each on its own page)."""
    if not opus_head.startswith(b"OpusHead") or len(opus_head) < 19:
        raise ValueError("not an OpusHead packet")
    first = ogg_page([opus_head], granule=0, serial=serial, sequence=0, flags=OGG_BOS)
    second = ogg_page([tags_packet], granule=0, serial=serial, sequence=1)
    return first + second


def opus_pre_skip(opus_head: bytes) -> int:
    """Samples (48 kHz) to drop at the start of decoding (RFC 7845 5.1)."""
    return int(struct.unpack_from("<H", opus_head, 10)[0])


# ---------------------------------------------------------------------------- FLAC

FLAC_STREAMINFO_OFFSET: Final = 8
"""Where STREAMINFO's 34 bytes sit in a file we wrote (after ``fLaC`` + block header)."""
_STREAMINFO_SIZE: Final = 34
_BLOCK_STREAMINFO: Final = 0
_BLOCK_VORBIS_COMMENT: Final = 4


def _metadata_block(kind: int, body: bytes, *, last: bool) -> bytes:
    return bytes(((0x80 if last else 0) | kind,)) + len(body).to_bytes(3, "big") + body


def flac_header(streaminfo: bytes, vendor: str, tags: Mapping[str, str]) -> bytes:
    """``fLaC``, STREAMINFO (RFC 9639 8.2) and a Vorbis comment block (8.6)."""
    if len(streaminfo) != _STREAMINFO_SIZE:
        raise ValueError(f"STREAMINFO must be 34 bytes, got {len(streaminfo)}")
    return (
        b"fLaC"
        + _metadata_block(_BLOCK_STREAMINFO, streaminfo, last=False)
        + _metadata_block(_BLOCK_VORBIS_COMMENT, _vorbis_comments(vendor, tags), last=True)
    )


def flac_streaminfo_with_total(streaminfo: bytes, total_samples: int) -> bytes:
    """STREAMINFO with its 36-bit total-samples field set (RFC 9639 8.2)."""
    if len(streaminfo) != _STREAMINFO_SIZE:
        raise ValueError(f"STREAMINFO must be 34 bytes, got {len(streaminfo)}")
    if not 0 <= total_samples < 1 << 36:
        raise ValueError(f"total samples {total_samples} out of range")
    info = bytearray(streaminfo)
    # Bytes 13..17: 4 low bits of byte 13 (after bits-per-sample) + 32 bits.
    info[13] = (info[13] & 0xF0) | (total_samples >> 32)
    info[14:18] = (total_samples & 0xFFFFFFFF).to_bytes(4, "big")
    return bytes(info)

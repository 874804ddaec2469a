"""Ogg pages and FLAC metadata, byte for byte."""

from __future__ import annotations

import os
import struct

import pytest

from recordings.framing import (
    OGG_BOS,
    OGG_EOS,
    flac_header,
    flac_streaminfo_with_total,
    ogg_crc,
    ogg_page,
    ogg_pages,
    opus_header_pages,
    opus_pre_skip,
    opus_tags,
)


def reference_crc(data: bytes) -> int:
    """RFC 3533's CRC the slow way: MSB first, poly 0x04C11DB7, init 0, no final xor."""
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


@pytest.mark.parametrize("size", [0, 1, 27, 255, 4096])
def test_ogg_crc_matches_the_reference(size: int) -> None:
    data = os.urandom(size)
    assert ogg_crc(data) == reference_crc(data)


def test_ogg_crc_known_value() -> None:
    # CRC-32/MPEG-2 without init/xorout: "123456789" -> 0x89A1897F.
    assert ogg_crc(b"123456789") == 0x89A1897F


def parse_page(page: bytes) -> tuple[int, int, int, int, list[bytes]]:
    magic, version, flags, granule, serial, sequence, crc, count = struct.unpack_from(
        "<4sBBqIIIB", page
    )
    assert (magic, version) == (b"OggS", 0)
    lacing = page[27 : 27 + count]
    unsigned = page[:22] + b"\0\0\0\0" + page[26:]
    assert crc == reference_crc(unsigned)
    packets, body, current = [], page[27 + count :], b""
    position = 0
    for value in lacing:
        current += body[position : position + value]
        position += value
        if value < 255:
            packets.append(current)
            current = b""
    assert position == len(body)
    return flags, granule, serial, sequence, packets


def split_pages(data: bytes) -> list[bytes]:
    pages = []
    while data:
        count = data[26]
        size = 27 + count + sum(data[27 : 27 + count])
        pages.append(data[:size])
        data = data[size:]
    return pages


def test_ogg_page_round_trips_packets_and_lacing() -> None:
    packets = [b"a" * 10, b"b" * 255, b"c" * 600, b""]
    page = ogg_page(packets, granule=960, serial=7, sequence=3, flags=OGG_EOS)
    assert parse_page(page) == (OGG_EOS, 960, 7, 3, packets)


def test_ogg_pages_split_at_255_lacing_values() -> None:
    packets = [(bytes([n % 256]) * 300, 960 * (n + 1)) for n in range(200)]  # 2 lacing each
    pages = ogg_pages(packets, serial=1, first_sequence=2, last_flags=OGG_EOS)
    parsed = [parse_page(page) for page in pages]
    assert [p[3] for p in parsed] == [2, 3]
    assert [p[0] for p in parsed] == [0, OGG_EOS]
    assert parsed[0][1] == 960 * 127 and parsed[1][1] == 960 * 200
    assert [pk for p in parsed for pk in p[4]] == [packet for packet, _ in packets]


def test_ogg_page_refuses_too_many_lacing_values() -> None:
    with pytest.raises(ValueError, match="lacing"):
        ogg_page([b"x"] * 256, granule=0, serial=0, sequence=0)


def test_opus_headers() -> None:
    head = b"OpusHead" + bytes([1, 1]) + struct.pack("<HIhB", 312, 8000, 0, 0)
    tags = opus_tags("vendor", {"HUB_SEGMENT": "3"})
    first, second = (parse_page(page) for page in split_pages(opus_header_pages(head, tags, 9)))
    assert first == (OGG_BOS, 0, 9, 0, [head])
    assert second == (0, 0, 9, 1, [tags])
    assert opus_pre_skip(head) == 312
    assert tags == b"OpusTags" + struct.pack("<I", 6) + b"vendor" + struct.pack("<II", 1, 13) + (
        b"HUB_SEGMENT=3"
    )
    with pytest.raises(ValueError):
        opus_header_pages(b"nope", tags, serial=9)


def test_flac_header_and_total_samples() -> None:
    info = bytes(range(34))
    header = flac_header(info, "v", {"A": "b"})
    assert header[:4] == b"fLaC"
    assert header[4] == 0 and header[5:8] == (34).to_bytes(3, "big")  # STREAMINFO, not last
    assert header[8:42] == info
    assert header[42] == 0x84  # last block, VORBIS_COMMENT
    patched = flac_streaminfo_with_total(info, (5 << 32) | 0x01020304)
    assert patched[13] == (info[13] & 0xF0) | 5
    assert patched[14:18] == bytes([1, 2, 3, 4])
    assert patched[:13] == info[:13] and patched[18:] == info[18:]
    with pytest.raises(ValueError):
        flac_streaminfo_with_total(info, 1 << 36)

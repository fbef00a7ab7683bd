"""roost.security.decompression: an HTTP answer's content codings decoded in bounded
pieces, so a caller's size cap stops a compression bomb having held about the cap."""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import AsyncIterator

import pytest

from roost.security.decompression import PIECE_BYTES, DecodingRefused, decoded

MB = 1024 * 1024
DATA = os.urandom(50_000) * 8  # compressible, not trivially


def _raw_deflate(data: bytes) -> bytes:
    comp = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return comp.compress(data) + comp.flush()


async def _arrive(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start:start + size]


async def _decode(body: bytes, coding: str | None, size: int = 1000) -> list[bytes]:
    return [piece async for piece in decoded(_arrive(body, size), coding)]


@pytest.mark.parametrize(("coding", "body"), [
    (None, DATA), ("identity", DATA), ("gzip", gzip.compress(DATA)),
    ("x-gzip", gzip.compress(DATA)), ("deflate", zlib.compress(DATA)),
    ("deflate", _raw_deflate(DATA)), ("gzip, gzip", gzip.compress(gzip.compress(DATA))),
    ("deflate, GZIP", gzip.compress(zlib.compress(DATA))),
])
@pytest.mark.parametrize("size", [1, 1000, 10 * MB])
async def test_codings_roost_asks_for_decode_whatever_the_network_pieces(
    coding: str | None, body: bytes, size: int
) -> None:
    if size == 1 and len(body) > 100_000:
        size = 7  # byte by byte would take long for nothing more
    assert b"".join(await _decode(body, coding, size)) == DATA


@pytest.mark.parametrize("coding", ["gzip", "gzip, gzip"])
async def test_a_bomb_comes_out_in_bounded_pieces(coding: str) -> None:
    """64 MiB of zeros from a few hundred KB (or bytes) in one network piece: each decoded
    piece is at most PIECE_BYTES, so a reader stops at its cap."""
    body = gzip.compress(bytes(64 * MB), 9)
    if coding == "gzip, gzip":
        body = gzip.compress(body, 9)
    read = 0
    async for piece in decoded(_arrive(body, len(body)), coding):
        assert len(piece) <= PIECE_BYTES
        read += len(piece)
        if read > MB:
            break
    assert MB < read <= MB + PIECE_BYTES


@pytest.mark.parametrize(("coding", "refusal"), [
    ("zstd", "'zstd', which Roost did not ask for"),
    ("gzip, br", "'br', which Roost did not ask for"),
    ("compress", "'compress', which Roost did not ask for"),
    ("gzip, gzip, gzip, gzip", "4 times over"),
])
async def test_codings_roost_did_not_ask_for_are_refused_before_reading(
    coding: str, refusal: str
) -> None:
    async def never() -> AsyncIterator[bytes]:
        raise AssertionError("nothing is read")
        yield b""

    with pytest.raises(DecodingRefused, match=refusal):
        [piece async for piece in decoded(never(), coding)]


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
async def test_corrupt_data_is_refused(coding: str) -> None:
    with pytest.raises(DecodingRefused, match=f"is not valid {coding} data"):
        await _decode(b"\x1f\x8b\x08\x00 certainly not compressed " * 3, coding)


@pytest.mark.parametrize(("coding", "body"), [
    ("gzip", gzip.compress(DATA)), ("deflate", zlib.compress(DATA)),
    ("deflate", _raw_deflate(DATA)), ("gzip", gzip.compress(DATA)[:1]),
])
async def test_a_stream_cut_short_is_refused(coding: str, body: bytes) -> None:
    """A body that ends before its stream does was kept as the whole page (zlib's flush
    does not complain): refused as cut short."""
    cut = body if len(body) == 1 else body[: len(body) // 2]
    with pytest.raises(DecodingRefused, match="cut short"):
        await _decode(cut, coding)


async def test_raw_deflate_whose_first_read_is_one_byte() -> None:
    """A first network read of one byte decided the zlib format (two bytes tell it): the
    rest of a raw deflate body was refused."""
    body = _raw_deflate(b"hello " * 1000)

    async def pieces() -> AsyncIterator[bytes]:
        yield body[:1]
        yield body[1:]

    assert b"".join([p async for p in decoded(pieces(), "deflate")]) == b"hello " * 1000


@pytest.mark.parametrize("size", [1, 7, 1000])
async def test_every_member_of_a_gzip_body_is_decoded(size: int) -> None:
    """RFC 1952 lets members follow one another (``cat a.gz b.gz``): only the first was
    kept. Bytes after the last member that are no member are ignored, as httpx does."""
    body = gzip.compress(b"first part. ") + gzip.compress(b"second part.") + b"\x00junk"
    assert b"".join(await _decode(body, "gzip", size)) == b"first part. second part."


async def test_an_empty_encoded_body_is_empty() -> None:
    assert await _decode(b"", "gzip") == [] and await _decode(b"", "deflate") == []

"""The fetcher and content codings: the size cap counts decoded bytes, and a compression
bomb (a small compressed answer that decodes to hundreds of MiB) stops at the cap having
held about the cap, not the bomb.  Only the codings Roost asks for are decoded.  The
"public" host is a literal address answered by an in-memory transport, never the
network."""

from __future__ import annotations

import functools
import gzip
import tracemalloc
import zlib
from collections.abc import AsyncIterator

import httpx
import pytest

from roost.knowledge.fetching import FetchError, FetchTooLarge, fetch_url

URL = "http://93.184.216.34/page"  # never contacted: the mock transport answers instead
MB = 1024 * 1024
BOMB_SIZE = 128 * MB  # what a bomb decodes to
PEAK_AT_MOST = 64 * MB  # a 1 MiB cap must not cost the bomb's size
ZSTD_HELLO = bytes.fromhex("28b52ffd2005290000") + b"hello"  # one raw block, no checksum


@functools.cache
def _zeros(total: int, wbits: int) -> bytes:
    """``total`` zero bytes compressed (wbits 31: gzip, 15: zlib, the "deflate" coding)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, wbits)
    out = [comp.compress(bytes(MB)) for _ in range(total // MB)]
    out.append(comp.flush())
    return b"".join(out)


class _Body(httpx.AsyncByteStream):
    """An answer's body as it comes off the network: raw, read once."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.body


def _answering(coding: str, body: bytes, seen: list[httpx.Request] | None = None) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return httpx.Response(200, stream=_Body(body), headers={
            "Content-Type": "text/plain", "Content-Encoding": coding,
            "Content-Length": str(len(body))})
    return httpx.MockTransport(answer)


@pytest.mark.parametrize("coding", ["gzip", "gzip, gzip", "deflate, gzip"])
async def test_a_compression_bomb_stops_at_the_cap_holding_about_the_cap(coding: str) -> None:
    """One network piece of ~130 KB (or, stacked, 300 bytes) decoding to 128 MiB: httpx
    would decode it whole before the first size check."""
    bomb = {"gzip": _zeros(BOMB_SIZE, 31), "gzip, gzip": gzip.compress(_zeros(BOMB_SIZE, 31), 9),
            "deflate, gzip": gzip.compress(_zeros(BOMB_SIZE, 15), 9)}[coding]
    tracemalloc.start()
    try:
        with pytest.raises(FetchTooLarge, match="larger than the limit of 1048576 bytes"):
            await fetch_url(URL, max_bytes=MB, transport=_answering(coding, bomb))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < PEAK_AT_MOST, f"{len(bomb)} bytes of {coding!r} held {peak // MB} MiB"


@pytest.mark.parametrize(("coding", "body"), [
    ("gzip, gzip", gzip.compress(gzip.compress(b"stacked"))),
    ("x-gzip", gzip.compress(b"stacked")),
    ("deflate", zlib.compress(b"stacked")),
    ("identity", b"stacked"),
], ids=["gzip, gzip", "x-gzip", "deflate", "identity"])
async def test_the_codings_roost_asks_for_are_decoded(coding: str, body: bytes) -> None:
    seen: list[httpx.Request] = []
    document = await fetch_url(URL, transport=_answering(coding, body, seen))
    assert document.data == b"stacked"
    assert seen[0].headers["accept-encoding"] == "gzip, deflate"


@pytest.mark.parametrize(("coding", "body"), [
    ("zstd", ZSTD_HELLO), ("br", b"\x0b\x02\x80hello\x03"), ("gzip, gzip, gzip, gzip", b"x"),
], ids=["zstd", "br", "gzip x4"])
async def test_an_answer_in_a_coding_roost_did_not_ask_for_is_refused(
    coding: str, body: bytes
) -> None:
    """A 502 saying why, not the raw compressed bytes as the document (httpx passes a
    coding it does not know through), nor a decoding without bound."""
    with pytest.raises(FetchError) as info:
        await fetch_url(URL, transport=_answering(coding, body))
    assert info.value.status == 502
    assert "did not ask for" in info.value.detail or "4 times over" in info.value.detail
    assert "93.184.216.34/page" in info.value.detail

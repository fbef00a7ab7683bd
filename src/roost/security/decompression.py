"""Decoding an HTTP answer's content codings with bounded memory.

httpx decodes each network chunk whole, with no limit on what it produces: a few hundred
bytes of stacked gzip (``Content-Encoding: gzip, gzip``) or a few KB of zstd decode to
gigabytes before a caller's size cap sees the first piece.  :func:`decoded` decodes the
raw (still encoded) body itself, in pieces of at most :data:`PIECE_BYTES`, so a caller
counting what it reads stops a bomb at its cap, having held about that cap.  It knows
only the codings Roost asks for (:data:`ACCEPT_ENCODING`) and refuses any other with
:class:`DecodingRefused`.  The fetcher and the LLM providers read an httpx answer with
:func:`decoded_body`; the MCP client decodes in its transport (its SDK is on httpx2).
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterable, AsyncIterator, Iterator, Sequence
from typing import Final

import httpx

__all__ = ["ACCEPT_ENCODING", "PIECE_BYTES", "DecodingRefused", "decoded", "decoded_body"]

#: What Roost sends as ``Accept-Encoding``: the codings :func:`decoded` can decode.
ACCEPT_ENCODING: Final = "gzip, deflate"
#: The most one step of decoding produces.
PIECE_BYTES: Final = 64 * 1024
# Stacked codings are legal but rare; each layer holds a zlib window (32 KiB).
MAX_LAYERS: Final = 3
_GZIP: Final = frozenset({"gzip", "x-gzip"})


class DecodingRefused(ValueError):
    """The answer uses a coding Roost did not ask for, too many of them, or is corrupt;
    the message completes "<the answer> ..."."""


_GZIP_MAGIC: Final = b"\x1f\x8b"


def _zlib_header(head: bytes) -> bool:
    """Whether two bytes open a zlib stream (RFC 1950: deflate, a header check that is a
    multiple of 31), not raw deflate."""
    return (head[0] & 0x0F) == 8 and ((head[0] << 8) | head[1]) % 31 == 0


class _Layer:
    """One gzip or deflate coding, decoded incrementally with bounded output.

    deflate is the zlib format by the RFC; some servers send raw deflate (httpx accepts
    both): the first two bytes decide, however the body is cut into reads (a first read
    of one byte once committed to the zlib format and refused the rest).  gzip may be
    several members one after another (RFC 1952: ``cat a.gz b.gz``): each is decoded
    (only the first was); other bytes after the last member are ignored, as httpx does.
    A stream that ends before its end is corrupt (a truncated body was kept as the whole
    page)."""

    def __init__(self, coding: str) -> None:
        self._coding = coding
        self._zlib: zlib._Decompress | None = None  # between streams: the next one's start
        self._held = b""  # the first byte of a stream, until the second comes
        self._ended = False  # a whole stream (a gzip member) was decoded
        self._done = False  # anything more is ignored

    def _start(self, head: bytes) -> zlib._Decompress | None:
        if self._coding == "deflate":
            return zlib.decompressobj(zlib.MAX_WBITS if _zlib_header(head) else -zlib.MAX_WBITS)
        if self._ended and not head.startswith(_GZIP_MAGIC):
            return None  # not another member: trailing bytes
        return zlib.decompressobj(zlib.MAX_WBITS | 16)

    def feed(self, data: bytes) -> Iterator[bytes]:
        data, self._held = self._held + data, b""
        while not self._done:
            if self._zlib is None:
                if len(data) < 2:
                    self._held = data
                    return
                self._zlib = self._start(data)
                if self._zlib is None:
                    self._done = True
                    return
            try:
                out = self._zlib.decompress(data, PIECE_BYTES)
            except zlib.error:
                raise DecodingRefused(f"is not valid {self._coding} data") from None
            if out:
                yield out
            if self._zlib.eof:
                data, self._zlib, self._ended = self._zlib.unused_data, None, True
                self._done = self._coding == "deflate"
                continue
            data = self._zlib.unconsumed_tail
            # A full piece may leave output inside zlib even without input left.
            if not data and len(out) < PIECE_BYTES:
                return

    def finish(self) -> bytes:
        if self._zlib is None:
            if self._held and not self._ended:  # one byte of a stream, nothing more
                raise DecodingRefused(f"is not valid {self._coding} data: it is cut short")
            return b""  # an empty body, or whole streams (and ignored bytes)
        try:
            out = self._zlib.flush()  # no input is left, so this is small
        except zlib.error:
            raise DecodingRefused(f"is not valid {self._coding} data") from None
        if not self._zlib.eof:
            raise DecodingRefused(f"is not valid {self._coding} data: it is cut short")
        return out


def _layers(content_encoding: str | None) -> list[_Layer]:
    """The decoders for a Content-Encoding header, in the order to apply them (the
    header lists codings in the order the server applied them)."""
    codings = [c.strip().lower() for c in (content_encoding or "").split(",")]
    codings = [c for c in codings if c and c != "identity"]
    for coding in codings:
        if coding not in _GZIP and coding != "deflate":
            raise DecodingRefused(
                f"is encoded with {coding[:40]!r}, which Roost did not ask for (it asks "
                f"for {ACCEPT_ENCODING})")
    if len(codings) > MAX_LAYERS:
        raise DecodingRefused(f"is encoded {len(codings)} times over; Roost decodes at most "
                              f"{MAX_LAYERS} codings")
    return [_Layer(c) for c in reversed(codings)]


def _through(layers: Sequence[_Layer], data: bytes) -> Iterator[bytes]:
    if not layers:
        if data:
            yield data
        return
    for piece in layers[0].feed(data):
        yield from _through(layers[1:], piece)


async def decoded(raw: AsyncIterable[bytes], content_encoding: str | None) -> AsyncIterator[bytes]:
    """The body of ``raw`` (the bytes as they came) decoded per ``content_encoding`` (the
    answer's header), in pieces of at most :data:`PIECE_BYTES` (an unencoded body passes
    as it came).  Raises :class:`DecodingRefused` before reading anything for a coding
    other than gzip and deflate, and on corrupt data."""
    layers = _layers(content_encoding)
    async for chunk in raw:
        for piece in _through(layers, chunk):
            yield piece
    for index, layer in enumerate(layers):
        for piece in _through(layers[index + 1:], layer.finish()):
            yield piece


async def decoded_body(response: httpx.Response) -> AsyncIterator[bytes]:
    """:func:`decoded` of a streamed httpx answer (``aiter_bytes()`` would decode each
    network chunk whole).  An answer read already (an in-memory transport's) is decoded
    already: it comes as it is."""
    try:
        content = response.content
    except httpx.ResponseNotRead:
        async for piece in decoded(response.aiter_raw(), response.headers.get("content-encoding")):
            yield piece
    else:
        yield content

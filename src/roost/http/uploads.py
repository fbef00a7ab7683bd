"""Reading an uploaded file without holding more than its limit in memory."""

from __future__ import annotations

from typing import Final

from fastapi import UploadFile

from roost.errors import PayloadTooLarge

READ_CHUNK: Final = 256 * 1024


async def read_capped(file: UploadFile, limit: int, what: str = "the upload") -> bytes:
    """The whole of ``file``, read a chunk at a time; 413 (naming ``what`` and the limit)
    as soon as more than ``limit`` bytes have arrived."""
    data = bytearray()
    while piece := await file.read(READ_CHUNK):
        data += piece
        if len(data) > limit:
            raise PayloadTooLarge(f"{what} is larger than the limit of {limit} bytes",
                                  extra={"limit": limit})
    return bytes(data)

"""Reading an uploaded file without holding more than its limit in memory."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from fastapi import Request, UploadFile

from roost.errors import PayloadTooLarge, Unprocessable

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


def sent_once(*fields: str) -> Callable[[Request], Awaitable[None]]:
    """A dependency refusing (422, naming them) a multipart form that repeats one of the
    route's ``fields``: FastAPI would keep one value and drop the others without a word, so
    ``curl -F file=@a.md -F file=@b.md`` stored one document and reported success."""

    async def check(request: Request) -> None:
        form = await request.form()  # the form FastAPI parsed already: Starlette keeps it
        repeated = [name for name in fields if len(form.getlist(name)) > 1]
        if repeated:
            raise Unprocessable(
                f"each form field is sent once; repeated: {', '.join(repeated)}"
                + (" (upload one file per request)" if "file" in repeated else ""),
                extra={"fields": repeated})

    return check

"""Answers built by hand: hot list routes serialised straight to JSON, downloads' headers."""

from __future__ import annotations

import os
import re
import uuid
from typing import Any
from urllib.parse import quote

import anyio
import orjson
from fastapi import Response
from starlette.datastructures import Headers
from starlette.responses import FileResponse, MalformedRangeHeader, RangeNotSatisfiable
from starlette.types import Receive, Scope, Send

from roost.http.problems import problem


def page_response(items: list[dict[str, Any]], next_cursor: str | None) -> Response:
    """A ``Page`` answer from its items' plain values, without a model per item.

    orjson writes UUIDs, datetimes (UTC as ``Z``), floats and nulls as pydantic does; the
    route keeps ``response_model=Page[...]`` for its OpenAPI schema, and the route's test
    checks that re-serialising the answer through that model gives the same bytes."""
    body = orjson.dumps({"items": items, "next_cursor": next_cursor}, default=_uuid_text,
                        option=orjson.OPT_UTC_Z)
    return Response(content=body, media_type="application/json")


def _uuid_text(value: object) -> str:
    # orjson writes uuid.UUID itself, not its subclasses (asyncpg decodes uuid columns
    # to one); anything else it cannot write is a bug, not something to stringify.
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


_NOT_PLAIN = re.compile(r"[^A-Za-z0-9._-]+")


def attachment_disposition(filename: str) -> str:
    """A ``Content-Disposition`` value offering ``filename`` as a download: a plain ASCII
    ``filename`` (anything else replaced by ``_``) for old clients, and the exact name as
    ``filename*`` (RFC 6266: UTF-8, percent-encoded), since a header carries Latin-1 only
    and a name may hold any character a user typed (quotes, line breaks, CJK)."""
    plain = _NOT_PLAIN.sub("_", filename).strip("._") or "download"
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(filename, safe='')}"


class Download(FileResponse):
    """Starlette's file answer with RFC 9110's treatment of a Range it cannot serve: a unit
    other than ``bytes`` or a malformed range is ignored (the whole file, 200: a server
    MUST ignore a unit it does not know), an unsatisfiable one is a 416 problem document
    with ``Content-Range: bytes */<size>``.  Starlette answered both in plain text (400,
    416), outside the problem answers every other error is."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        wanted = Headers(scope=scope).get("range")
        if wanted is not None and scope["type"] == "http" and self.status_code == 200:
            found: os.stat_result = (self.stat_result if self.stat_result is not None
                                     else await anyio.to_thread.run_sync(os.stat, self.path))
            size = found.st_size
            try:
                self._parse_range_header(wanted, size)
            except MalformedRangeHeader:
                scope = {**scope, "headers": [(k, v) for k, v in scope["headers"]
                                              if k.lower() != b"range"]}
            except RangeNotSatisfiable:
                refused = problem(416, f"the range {wanted[:100]!r} is outside the file "
                                       f"({size} bytes)",
                                  headers={"Content-Range": f"bytes */{size}"})
                await refused(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

"""Answers built by hand: hot list routes serialised straight to JSON, downloads' headers."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping
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
    and a name may hold any character a user typed (quotes, line breaks, CJK).  A name
    with no ASCII left before its extension (``報告.pdf``) is offered as ``download.pdf``:
    a bare ``_.pdf`` reads as nothing, and stripping the ``_`` lost the extension."""
    replaced = _NOT_PLAIN.sub("_", filename)
    raw_stem, dot, extension = replaced.rpartition(".")
    if not dot:
        raw_stem, extension = replaced, ""
    # Dots and replacement marks around the stem go ("_plans_v2" of a name in another
    # script before "plans v2"); a stem of nothing else becomes "download".
    stem = raw_stem.lstrip("._").rstrip(".") or (
        "download" if "_" in raw_stem or not extension else "")
    extension = extension.strip("_")
    plain = f"{stem}.{extension}" if stem and extension else stem or extension
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(filename, safe='')}"


class Download(FileResponse):
    """Starlette's file answer with RFC 9110's treatment of a Range it cannot serve: a unit
    other than ``bytes`` or a malformed range is ignored (the whole file, 200: a server
    MUST ignore a unit it does not know), an unsatisfiable one is a 416 problem document
    with ``Content-Range: bytes */<size>``.  Starlette answered both in plain text (400,
    416), outside the problem answers every other error is.  An ``If-Range`` that does
    not match means the Range is ignored (RFC 9110 13.2.2), whatever it asks for.

    The ``Content-Type`` is ``media_type`` as given: Starlette adds ``charset=utf-8`` to
    any ``text/*`` type without one, but a download's bytes are the sender's, in the
    charset they declared (then part of ``media_type``) or in one nobody knows."""

    def init_headers(self, headers: Mapping[str, str] | None = None) -> None:
        given = dict(headers or {})
        if self.media_type is not None and all(k.lower() != "content-type" for k in given):
            given["content-type"] = self.media_type
        super().init_headers(given)

    @classmethod
    def _parse_ranges(cls, range_: str, file_size: int) -> list[tuple[int, int]]:
        # RFC 9110 14.1.1: a range set is satisfiable when any of its ranges is, but
        # Starlette refuses the set when one range starts at or past the end.  Those are
        # dropped; when none is left they are all kept, and the set is refused (416).
        ranges = super()._parse_ranges(range_, file_size)
        return [(start, end) for start, end in ranges if start < file_size] or ranges

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        asked = Headers(scope=scope)
        wanted = asked.get("range")
        if wanted is not None and scope["type"] == "http" and self.status_code == 200:
            found: os.stat_result = (self.stat_result if self.stat_result is not None
                                     else await anyio.to_thread.run_sync(os.stat, self.path))
            self.set_stat_headers(found)  # the ETag and Last-Modified If-Range compares
            if_range = asked.get("if-range")
            if if_range is not None and not self._should_use_range(if_range):
                await super().__call__(scope, receive, send)  # the whole file
                return
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

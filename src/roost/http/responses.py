"""Answers built by hand: hot list routes serialised straight to JSON, downloads' headers."""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import quote

import orjson
from fastapi import Response


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

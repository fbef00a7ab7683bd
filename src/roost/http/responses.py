"""Answers serialised straight to JSON, for hot list routes whose items are plain values."""

from __future__ import annotations

import uuid
from typing import Any

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

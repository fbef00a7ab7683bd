"""Opaque cursor pagination shared by every list endpoint.

A cursor encodes the sort key of the last item returned; the next page starts strictly
after it, so pages stay stable while rows are inserted concurrently.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, Select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from roost.errors import BadRequest

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


def encode_cursor(values: dict[str, Any]) -> str:
    # Not ASCII-escaped: a key of non-ASCII text (a model pattern) stays short enough for
    # the cursor's length limit (``roost.http.deps.Cursor``).
    raw = json.dumps(values, separators=(",", ":"), default=str, ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


MALFORMED_CURSOR = "cursor is malformed: pass the next_cursor of a previous page"


def decode_cursor(cursor: str) -> dict[str, Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
    # RecursionError: a forged cursor of nested arrays deeper than json can parse
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequest(MALFORMED_CURSOR) from exc
    if not isinstance(value, dict) or not _storable(value):
        raise BadRequest(MALFORMED_CURSOR)
    return value


def _storable(value: Any) -> bool:
    """Whether every text in ``value`` (keys included) is text PostgreSQL can take: no NUL
    and no lone surrogate, which JSON escapes (``\\u0000``, ``\\ud800``) can forge into a
    cursor's key; the database would refuse it with a message naming no field."""
    pending = [value]
    while pending:  # iterative: a forged cursor may nest as deep as json parses
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                return False
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
    return True


INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


def cursor_int(cursor: str, key: str, *, most: int = INT64_MAX) -> int:
    """The integer ``key`` of a cursor (a sequence number, at most ``most``: its column's
    range, so the database never sees a value its type cannot hold); anything else is a
    400."""
    value = decode_cursor(cursor).get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= most:
        raise BadRequest(MALFORMED_CURSOR)
    return value


def cursor_uuid(cursor: str, key: str = "id") -> uuid.UUID:
    """The UUID ``key`` of a cursor; anything else is a 400."""
    try:
        return uuid.UUID(str(decode_cursor(cursor)[key]))
    except (KeyError, ValueError) as exc:
        raise BadRequest(MALFORMED_CURSOR) from exc


def time_id_cursor(at: datetime, row_id: uuid.UUID) -> str:
    """The cursor after a row of a list ordered newest first by (time, id)."""
    return encode_cursor({"t": at.isoformat(), "id": str(row_id)})


def before_time_id(
    cursor: str, time_column: InstrumentedAttribute[datetime], id_column: InstrumentedAttribute[uuid.UUID]
) -> ColumnElement[bool]:
    """The keyset condition for the page after ``cursor`` (from ``time_id_cursor``) of a
    list ordered by ``time_column DESC, id_column DESC``."""
    at, last_id = _time_id(cursor)
    return (time_column < at) | ((time_column == at) & (id_column < last_id))


def after_time_id(
    cursor: str, time_column: InstrumentedAttribute[datetime], id_column: InstrumentedAttribute[uuid.UUID]
) -> ColumnElement[bool]:
    """The same for a list ordered oldest first (``time_column, id_column``)."""
    at, last_id = _time_id(cursor)
    return (time_column > at) | ((time_column == at) & (id_column > last_id))


def _time_id(cursor: str) -> tuple[datetime, uuid.UUID]:
    after = decode_cursor(cursor)
    try:
        at = datetime.fromisoformat(str(after["t"]))
        last_id = uuid.UUID(str(after["id"]))
    except (KeyError, ValueError) as exc:
        raise BadRequest(MALFORMED_CURSOR) from exc
    if at.tzinfo is None:
        raise BadRequest(MALFORMED_CURSOR)
    try:  # a moment a UTC timestamp can hold (year 1 at +14:00 is year 0 in UTC)
        at = at.astimezone(UTC)
    except OverflowError as exc:
        raise BadRequest(MALFORMED_CURSOR) from exc
    return at, last_id


def page_of(
    rows: Sequence[T], limit: int, cursor_after: Callable[[T], str]
) -> tuple[list[T], str | None]:
    """The first ``limit`` of ``rows`` (fetched with ``LIMIT limit + 1``) and the cursor
    after the last of them, or None when no row follows it."""
    next_cursor = cursor_after(rows[limit - 1]) if len(rows) > limit else None
    return list(rows[:limit]), next_cursor


def where_equal(stmt: Select[Any], *filters: tuple[Any, object | None]) -> Select[Any]:
    """``stmt`` narrowed to rows whose column equals each given value; a ``None`` value is
    a filter the caller did not ask for (list endpoints' optional query parameters)."""
    for column, value in filters:
        if value is not None:
            stmt = stmt.where(column == value)
    return stmt


async def newest_first(
    session: AsyncSession, stmt: Select[Any], time_column: InstrumentedAttribute[datetime],
    id_column: InstrumentedAttribute[uuid.UUID], *, limit: int, cursor: str | None,
) -> tuple[list[Any], str | None]:
    """One page of ``stmt``'s entities, newest first by (time, id), and the next cursor."""
    if cursor is not None:
        stmt = stmt.where(before_time_id(cursor, time_column, id_column))
    rows = (await session.scalars(
        stmt.order_by(time_column.desc(), id_column.desc()).limit(limit + 1))).all()
    time_key, id_key = time_column.key, id_column.key
    return page_of(rows, limit,
                   lambda row: time_id_cursor(getattr(row, time_key), getattr(row, id_key)))


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        default=None, description="Pass as ?cursor= to get the next page; null on the last page"
    )

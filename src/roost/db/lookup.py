"""Reading one row a service names by id: the statement (with its visibility filter), a
row lock when the caller will change it, and a 404 when nothing matches, whether the row
does not exist or is not the actor's (the same answer, so ids leak nothing)."""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Sequence
from typing import Any, Final, TypeVar

from sqlalchemy import ColumnElement, Select, String, cast, false, func, literal_column
from sqlalchemy.ext.asyncio import AsyncSession

from roost.errors import BadRequest, NotFound

T = TypeVar("T")


async def one_or_404(session: AsyncSession, stmt: Select[T], *, lock: bool = False,
                     missing: str, extra: dict[str, Any] | None = None) -> T:
    """The row ``stmt`` selects (``FOR UPDATE`` when ``lock``), or NotFound(``missing``)."""
    found = await session.scalar(stmt.with_for_update() if lock else stmt)
    if found is None:
        raise NotFound(missing, extra=extra)
    return found


# The start of an id as tables print them: hex digits and dashes only, so a reference
# such as "", "%" or "_" never becomes a LIKE pattern that matches every id.
ID_PREFIX: Final = re.compile(r"[0-9a-fA-F-]{1,36}")


def is_id_prefix(ref: str) -> bool:
    return ID_PREFIX.fullmatch(ref) is not None


def id_starts_with(column: Any, ref: str) -> ColumnElement[bool]:
    """SQL: the id in ``column`` starts with ``ref`` (false for a ref no id can start with)."""
    if not is_id_prefix(ref):
        return false()
    return cast(column, String).like(ref.lower() + "%")


def full_id(ref: str) -> uuid.UUID | None:
    """``ref`` as a UUID when it is one (any spelling), else None."""
    try:
        return uuid.UUID(ref)
    except ValueError:
        return None


async def first_unique(session: AsyncSession, ids: Select[Any],
                       conditions: Sequence[ColumnElement[bool]], ref: str,
                       what: str) -> uuid.UUID:
    """The id ``ids`` selects under the first of ``conditions`` (tried in order: say a full
    id, then an exact name, then a start of the id) that selects any: a name made like
    another's id prefix still names its own row.  404 when none selects a row, 400 when
    the first that does selects several."""
    rows: Sequence[Any] = []
    for condition in conditions:
        rows = (await session.scalars(ids.where(condition).limit(3))).all()
        if rows:
            break
    if not rows:
        raise NotFound(f"no {what} you can see is named {ref!r} or has an id starting with it")
    if len(rows) > 1:
        raise BadRequest(f"{ref!r} names several {what}s; use the full id")
    return uuid.UUID(str(rows[0]))


def same_text(column: Any, value: str) -> ColumnElement[bool]:
    """SQL: ``column`` holds ``value`` in any Unicode form (both compared composed, NFC):
    a name typed with an accent decomposed, as macOS keyboards may send it, finds the
    name stored composed, and the other way round."""
    return func.normalize(column, literal_column("NFC")) == unicodedata.normalize("NFC", value)


def unicode_forms(value: str) -> set[str]:
    """``value`` as typed, composed (NFC) and decomposed (NFD): for ``column.in_(...)``
    where an index on ``column`` should serve a name typed in either form."""
    return {value, unicodedata.normalize("NFC", value), unicodedata.normalize("NFD", value)}

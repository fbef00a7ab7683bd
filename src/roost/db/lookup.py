"""Reading one row a service names by id: the statement (with its visibility filter), a
row lock when the caller will change it, and a 404 when nothing matches, whether the row
does not exist or is not the actor's (the same answer, so ids leak nothing)."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession

from roost.errors import NotFound

T = TypeVar("T")


async def one_or_404(session: AsyncSession, stmt: Select[T], *, lock: bool = False,
                     missing: str, extra: dict[str, Any] | None = None) -> T:
    """The row ``stmt`` selects (``FOR UPDATE`` when ``lock``), or NotFound(``missing``)."""
    found = await session.scalar(stmt.with_for_update() if lock else stmt)
    if found is None:
        raise NotFound(missing, extra=extra)
    return found

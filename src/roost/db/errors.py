"""What a database error says, whichever driver raised it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from roost.errors import Conflict

T = TypeVar("T")


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a driver's error, or of the one a SQLAlchemy ``DBAPIError`` wraps
    (asyncpg names it ``sqlstate``, psycopg ``pgcode``); None for anything else."""
    inner = getattr(exc, "orig", None) or exc
    code = getattr(inner, "sqlstate", None) or getattr(inner, "pgcode", None)
    return code if isinstance(code, str) else None


# A deadlock (or, under stricter isolation, a serialization failure) undoes only the work
# of the transaction the database chose to end: done again it nearly always goes through.
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})


def is_retryable(exc: BaseException) -> bool:
    """Whether ``exc`` is a deadlock or a serialization failure: nothing it tried was
    made, and the same work tried again can succeed."""
    return sqlstate(exc) in RETRYABLE_SQLSTATES


async def retrying_deadlocks(session: AsyncSession, work: Callable[[], Awaitable[T]],
                             attempts: int = 3) -> T:
    """``work()`` in a savepoint of ``session``'s transaction, done again (after a short
    pause) when the database ends it as a deadlock: rolling back to the savepoint releases
    every lock the work took, so the other side goes on and the next try finds the way
    clear.  For work that takes many locks while background jobs write the same rows (an
    account's deletion: its jobs, calls and usage); the last failure is raised."""
    for attempt in range(1, attempts + 1):
        try:
            async with session.begin_nested():
                return await work()
        except DBAPIError as exc:
            if attempt == attempts or not is_retryable(exc):
                raise
        await asyncio.sleep(0.05 * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


async def flush_unique(session: AsyncSession, index: str, conflict: str, *,
                       field: str | None = None) -> None:
    """Flush in a savepoint: a row that breaks the unique ``index`` (its value taken by
    another request at the same time, after this one's own check) is the 409
    ``conflict`` (naming ``field`` when given), and the transaction stays usable; any
    other error is raised."""
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        if index in str(exc.orig):
            raise Conflict(conflict, extra={"field": field} if field else None) from None
        raise

"""What a database error says, whichever driver raised it."""

from __future__ import annotations


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a driver's error, or of the one a SQLAlchemy ``DBAPIError`` wraps
    (asyncpg names it ``sqlstate``, psycopg ``pgcode``); None for anything else."""
    inner = getattr(exc, "orig", None) or exc
    code = getattr(inner, "sqlstate", None) or getattr(inner, "pgcode", None)
    return code if isinstance(code, str) else None

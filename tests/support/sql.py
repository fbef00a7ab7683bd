"""Reading the test database with plain SQL, each call in a transaction of its own."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from roost.db.engine import Database


async def fetch(database: Database, sql: str, **params: Any) -> list[Any]:
    async with database.transaction() as session:
        return list((await session.execute(text(sql), params)).all())


async def scalar(database: Database, sql: str, **params: Any) -> Any:
    async with database.transaction() as session:
        return (await session.execute(text(sql), params)).scalar()

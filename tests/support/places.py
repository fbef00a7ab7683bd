"""A database and a data dir, as ``roost`` commands are pointed at them (the backup and
restore tests)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import asyncpg


@dataclass
class Place:
    """A database and a data dir, as ``roost`` is pointed at them."""

    url: str
    data_dir: Path

    @property
    def env(self) -> dict[str, str]:
        return {"ROOST_DATABASE_URL": self.url, "ROOST_DATA_DIR": str(self.data_dir)}


def public_tables(url: str) -> int:
    """How many tables the database at ``url`` has in its public schema (0: nothing was
    restored into it)."""
    async def count() -> int:
        conn = await asyncpg.connect(url)
        try:
            return int(await conn.fetchval(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"))
        finally:
            await conn.close()

    return asyncio.run(count())


def execute_sql(url: str, sql: str) -> None:
    """Run ``sql`` on the database at ``url`` (a test's setup or tampering)."""
    async def go() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())

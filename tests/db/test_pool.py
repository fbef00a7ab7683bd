"""The engine's pool keeps the connections it opens: a burst of concurrent transactions
beyond ``ROOST_DB_POOL_SIZE`` (up to ``ROOST_DB_MAX_OVERFLOW`` more) opens connections
once, and the next bursts reuse them.  SQLAlchemy's own overflow connections are closed
at check-in, so steady concurrency above the pool size started a new server backend
every few requests (docs/benchmarks.md, Chat: "connection churn")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from tests.support.pg import PgTestServer

from roost.config import Settings
from roost.db.engine import Database, create_database

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def small_pool(pg_server: PgTestServer, db_name: str,
                     test_settings: Settings) -> AsyncIterator[Database]:
    settings = test_settings.model_copy(update={"db_pool_size": 2, "db_max_overflow": 2})
    database = create_database(settings, url=pg_server.url_for(db_name))
    yield database
    await database.dispose()


async def _burst(database: Database, concurrent: int) -> set[int]:
    """The server backends ``concurrent`` overlapping transactions ran on."""
    async def one() -> int:
        async with database.transaction() as session:
            pid = await session.scalar(text("SELECT pg_backend_pid()"))
            await asyncio.sleep(0.05)  # all of them hold a connection at once
            return int(pid)

    return set(await asyncio.gather(*(one() for _ in range(concurrent))))


async def test_connections_opened_in_a_burst_are_kept_for_the_next(
        small_pool: Database) -> None:
    first = await _burst(small_pool, 4)
    assert len(first) == 4  # the pool size and the overflow, all in use at once
    for _ in range(3):
        assert await _burst(small_pool, 4) == first  # no new backend, none closed
    # Beyond both settings a transaction waits for a connection; still no new one.
    assert await _burst(small_pool, 6) == first


async def test_the_urls_numeric_driver_options_are_passed_as_numbers(
    pg_server: PgTestServer, db_name: str, test_settings: Settings,
) -> None:
    """``?statement_cache_size=0&command_timeout=30`` in ROOST_DATABASE_URL (asyncpg's
    options, as the docs say): the engine connects with them (the query's text reached
    asyncpg as text, and every command failed with a TypeError); a value that is not a
    number is a ValueError naming the option."""
    url = pg_server.url_for(db_name).update_query_dict(
        {"statement_cache_size": "0", "command_timeout": "30", "direct_tls": "false"})
    database = create_database(test_settings, url=url)
    try:
        async with database.transaction() as session:
            assert await session.scalar(text("SELECT 1")) == 1
    finally:
        await database.dispose()
    with pytest.raises(ValueError, match="command_timeout=abc is not a number"):
        create_database(test_settings, url=url.update_query_dict({"command_timeout": "abc"}))

"""``Database.autocommit``: the pool's asyncpg connection outside any transaction, each
statement committed as it ends (a tool call's record, ``roost_record_tool_call``, scopes
itself in its one statement).  A scope set inside a statement ends with it; an error
answered by the server leaves the connection pooled and clean; a cancellation, even
mid-statement, writes nothing and never pools a busy connection."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from roost.db.engine import Database

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _checked_out(database: Database) -> int:
    return int(database.engine.sync_engine.pool.checkedout())  # type: ignore[attr-defined]


async def _probe(database: Database) -> None:
    async with database.transaction() as session:
        await session.execute(text("CREATE TABLE IF NOT EXISTS autocommit_probe (note text)"))
        await session.execute(text("TRUNCATE autocommit_probe"))


async def _notes(database: Database) -> list[str]:
    async with database.transaction() as session:
        return list((await session.execute(
            text("SELECT note FROM autocommit_probe ORDER BY note"))).scalars())


async def _nothing_left_on_pooled_connections(database: Database) -> None:
    for _ in range(4):  # whichever pooled connection comes next
        async with database.transaction() as session:
            row = (await session.execute(text(
                "SELECT current_user, current_setting('roost.user_id', true)"))).one()
        assert row[0] != "roost_app" and not row[1], row


async def test_each_statement_commits_and_its_scope_ends_with_it(database: Database) -> None:
    await _probe(database)
    before = _checked_out(database)
    async with database.autocommit() as driver:
        scoped = await driver.fetchrow(
            "SELECT set_config('roost.user_id', 'someone', true) AS user_id, "
            "set_config('role', 'roost_app', true) AS role")
        assert tuple(scoped) == ("someone", "roost_app")
        # The next statement is a transaction of its own: the scope is gone.
        assert await driver.fetchval("SELECT current_user") != "roost_app"
        assert not await driver.fetchval("SELECT current_setting('roost.user_id', true)")
        await driver.execute("INSERT INTO autocommit_probe VALUES ('kept')")
        assert not driver.is_in_transaction()
    assert await _notes(database) == ["kept"]  # committed, seen from another connection
    assert _checked_out(database) == before
    await _nothing_left_on_pooled_connections(database)


async def test_an_error_from_the_server_ends_that_statement_only(database: Database) -> None:
    await _probe(database)
    before = _checked_out(database)
    with pytest.raises(Exception, match="division by zero"):
        async with database.autocommit() as driver:
            await driver.execute("INSERT INTO autocommit_probe VALUES ('kept')")
            await driver.execute(
                "WITH written AS (INSERT INTO autocommit_probe VALUES ('failed') RETURNING 1) "
                "SELECT 1 / 0 FROM written")
    assert not driver.is_closed()  # pooled again: its implicit transaction ended
    assert await _notes(database) == ["kept"]
    assert _checked_out(database) == before
    await _nothing_left_on_pooled_connections(database)


async def test_a_cancelled_statement_writes_nothing_and_its_connection_is_not_pooled(
    database: Database,
) -> None:
    await _probe(database)
    before = _checked_out(database)
    started = asyncio.Event()
    seen: list[object] = []

    async def slow_write() -> None:
        async with database.autocommit() as driver:
            seen.append(driver)
            started.set()
            await driver.execute(
                "WITH written AS (INSERT INTO autocommit_probe VALUES ('cancelled') "
                "RETURNING 1) SELECT pg_sleep(30) FROM written")

    task = asyncio.ensure_future(slow_write())
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.sleep(0.1)  # the sleep is running on the server
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen[0].is_closed()  # type: ignore[attr-defined]
    assert _checked_out(database) == before
    for _ in range(3):  # the server ended the statement: nothing was written
        if await _notes(database) == []:
            break
        await asyncio.sleep(0.2)
    assert await _notes(database) == []
    await _nothing_left_on_pooled_connections(database)

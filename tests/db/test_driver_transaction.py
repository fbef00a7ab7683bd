"""``Database.driver_transaction``: a scoped transaction on the pool's asyncpg connection,
without an ORM session (a tool call's record).  Its scope holds inside and nowhere else,
it commits on success, and an error or a cancellation leaves nothing written and no
pooled connection inside a transaction."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from tests.support.identity import make_user

from roost.db.engine import Database
from roost.identity.tenancy import scope_settings
from roost.principal import Principal

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _checked_out(database: Database) -> int:
    return int(database.engine.sync_engine.pool.checkedout())  # type: ignore[attr-defined]


async def _probe(database: Database) -> None:
    async with database.transaction() as session:
        await session.execute(text("CREATE TABLE IF NOT EXISTS driver_tx_probe (note text)"))
        await session.execute(text("TRUNCATE driver_tx_probe"))


async def _notes(database: Database) -> list[str]:
    async with database.transaction() as session:
        return list((await session.execute(
            text("SELECT note FROM driver_tx_probe ORDER BY note"))).scalars())


async def _nothing_left_on_pooled_connections(database: Database) -> None:
    for _ in range(4):  # whichever pooled connection comes next
        async with database.transaction() as session:
            row = (await session.execute(text(
                "SELECT current_user, current_setting('roost.user_id', true)"))).one()
        assert row[0] != "roost_app" and not row[1], row


async def test_the_scope_holds_inside_and_nowhere_after(database: Database) -> None:
    alice, _ = await make_user(database, username="alice-driver-tx")
    bob, _ = await make_user(database, username="bob-driver-tx")
    bob_job = Principal(user_id=bob, is_admin=False, kind="job")
    before = _checked_out(database)
    async with database.driver_transaction(scope_settings(bob_job)) as driver:
        owners = {row[0] for row in await driver.fetch("SELECT user_id FROM api_keys")}
        role = await driver.fetchval("SELECT current_user")
    assert owners == {bob} and role == "roost_app"
    assert _checked_out(database) == before
    await _nothing_left_on_pooled_connections(database)
    async with database.transaction() as session:  # unscoped: everyone's keys
        seen = set((await session.execute(text("SELECT user_id FROM api_keys"))).scalars())
    assert {alice, bob} <= seen


async def test_commits_at_the_end_and_rolls_back_on_an_error(database: Database) -> None:
    await _probe(database)
    before = _checked_out(database)
    async with database.driver_transaction({"roost.user_id": ""}) as driver:
        await driver.execute("INSERT INTO driver_tx_probe VALUES ('kept')")
    with pytest.raises(ZeroDivisionError):
        async with database.driver_transaction({"roost.user_id": ""}) as driver:
            await driver.execute("INSERT INTO driver_tx_probe VALUES ('dropped')")
            raise ZeroDivisionError
    with pytest.raises(Exception, match="division by zero"):  # the server's own error
        async with database.driver_transaction({"roost.user_id": ""}) as driver:
            await driver.execute("INSERT INTO driver_tx_probe VALUES ('failed')")
            await driver.execute("SELECT 1 / 0")
    assert await _notes(database) == ["kept"]
    assert _checked_out(database) == before
    await _nothing_left_on_pooled_connections(database)


async def test_a_cancelled_transaction_writes_nothing_and_leaves_no_open_transaction(
    database: Database,
) -> None:
    await _probe(database)
    before = _checked_out(database)
    started = asyncio.Event()

    async def slow_write() -> None:
        async with database.driver_transaction({"roost.user_id": "someone"}) as driver:
            await driver.execute("INSERT INTO driver_tx_probe VALUES ('cancelled')")
            started.set()
            await driver.execute("SELECT pg_sleep(30)")

    task = asyncio.ensure_future(slow_write())
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.sleep(0.05)  # the sleep is running on the server
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _checked_out(database) == before
    assert await _notes(database) == []
    await _nothing_left_on_pooled_connections(database)


async def test_a_value_that_is_not_a_plain_literal_is_bound_not_written_into_sql(
    database: Database,
) -> None:
    hostile = "x'; DROP TABLE users; --"
    async with database.driver_transaction({"roost.user_id": hostile}) as driver:
        seen = await driver.fetchval("SELECT current_setting('roost.user_id')")
    assert seen == hostile
    async with database.transaction() as session:
        assert await session.scalar(text("SELECT to_regclass('public.users') IS NOT NULL"))
    await _nothing_left_on_pooled_connections(database)

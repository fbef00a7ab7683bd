"""Closing a request's session: cheap when its transaction has ended, still safe when not."""

from __future__ import annotations

import asyncio
import contextlib

from sqlalchemy import text

from roost.db.engine import Database, close_session
from roost.db.transaction import begin_with_settings


def _checked_out(database: Database) -> int:
    return int(database.engine.sync_engine.pool.checkedout())  # type: ignore[attr-defined]


async def test_an_ended_session_is_closed_and_its_connection_is_back(database: Database) -> None:
    before = _checked_out(database)
    async with database.transaction() as session:
        await session.execute(text("SELECT 1"))
        assert _checked_out(database) == before + 1
    assert _checked_out(database) == before
    assert session.sync_session.get_transaction() is None


async def test_a_session_still_in_a_transaction_rolls_back_and_returns_its_connection(
    database: Database,
) -> None:
    before = _checked_out(database)
    session = database.sessionmaker()
    await session.execute(text("CREATE TABLE close_probe (n int)"))  # DDL rolls back too
    assert session.sync_session.get_transaction() is not None
    await close_session(session)
    assert _checked_out(database) == before
    async with database.transaction() as check:  # the table went with the rollback
        found = await check.scalar(text("SELECT to_regclass('public.close_probe') IS NOT NULL"))
    assert found is False


async def test_a_cancelled_close_still_returns_the_connection(database: Database) -> None:
    before = _checked_out(database)
    session = database.sessionmaker()
    await session.execute(text("SELECT pg_sleep(0)"))

    task = asyncio.ensure_future(close_session(session))
    await asyncio.sleep(0)  # the close has started
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    assert _checked_out(database) == before


async def test_a_scoped_begin_cancelled_in_flight_leaves_no_transaction_on_its_connection(
    database: Database,
) -> None:
    """A client hanging up while its request's ``BEGIN`` (sent with the scope in one
    round trip) is still on the wire: the connection goes back to the pool outside any
    transaction, so its next user can begin one (it got "cannot use
    Connection.transaction() in a manually started transaction")."""
    before = _checked_out(database)
    session = database.sessionmaker()
    raw = await (await session.connection()).get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    task = asyncio.ensure_future(begin_with_settings(
        session, {"roost.cancel_probe": "1"}, first="SELECT pg_sleep(0.5)"))
    await asyncio.sleep(0.15)  # BEGIN and the sleep are on the server
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await close_session(session)
    assert _checked_out(database) == before
    assert not driver.is_in_transaction()
    async with driver.transaction():  # what the next user of the connection does
        assert await driver.fetchval("SELECT current_setting('roost.cancel_probe', true)") in (
            None, "")

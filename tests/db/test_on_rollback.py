"""``on_rollback``: work committed on its own for a transaction (a credit hold on the side
pool) is undone in the background when that transaction does not commit, and only then;
a savepoint's fate does not decide it, the whole transaction's does."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from roost.db.engine import Database
from roost.db.transaction import RollbackHook, on_rollback


async def _settle() -> None:
    for _ in range(5):  # the hooks run as tasks of their own
        await asyncio.sleep(0)


async def test_hooks_run_when_the_transaction_rolls_back_and_not_when_it_commits(
    database: Database,
) -> None:
    ran: list[str] = []

    def hook(name: str) -> RollbackHook:
        async def run() -> None:
            ran.append(name)
        return run

    async with database.transaction() as session:
        await session.execute(text("SELECT 1"))
        on_rollback(session, hook("committed"))
    with pytest.raises(LookupError):
        async with database.transaction() as session:
            await session.execute(text("SELECT 1"))
            on_rollback(session, hook("rolled back"))
            on_rollback(session, hook("rolled back too"))
            raise LookupError
    await _settle()
    assert ran == ["rolled back", "rolled back too"]

    # A savepoint committed inside a transaction that rolls back: the hook runs.
    ran.clear()
    with pytest.raises(LookupError):
        async with database.transaction() as session:
            async with session.begin_nested():
                await session.execute(text("SELECT 1"))
                on_rollback(session, hook("inside a savepoint"))
            raise LookupError
    # A savepoint rolled back inside a transaction that commits: it does not.
    async with database.transaction() as session:
        with pytest.raises(LookupError):
            async with session.begin_nested():
                on_rollback(session, hook("savepoint rolled back, transaction committed"))
                raise LookupError
    await _settle()
    assert ran == ["inside a savepoint"]


async def test_a_failing_hook_is_logged_and_the_others_still_run(database: Database) -> None:
    ran: list[str] = []

    async def fails() -> None:
        raise RuntimeError("the release failed")

    async def works() -> None:
        ran.append("ran")

    with pytest.raises(LookupError):
        async with database.transaction() as session:
            await session.execute(text("SELECT 1"))
            on_rollback(session, fails)
            on_rollback(session, works)
            raise LookupError
    await _settle()
    assert ran == ["ran"]


async def test_outside_a_transaction_it_refuses(database: Database) -> None:
    session = database.sessionmaker()
    try:
        async def nothing() -> None:
            return None

        with pytest.raises(RuntimeError, match="needs a transaction"):
            on_rollback(session, nothing)
    finally:
        await session.close()

"""The process's LISTEN connection (roost.system_settings.runtime.SettingsListener) for
tests of the caches it keeps: up and connected for the block, stopped after it; or the
caches answering with no notification ever arriving (``deaf``); and the statements a
database is sent (``Statements``: what SQLAlchemy executes; ``statements``: every round
trip, the driver's own too)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from roost.db.engine import Database
from roost.system_settings import runtime
from roost.system_settings.runtime import SettingsListener
from roost.tasks.worker import asyncpg_dsn


@asynccontextmanager
async def listening(database: Database) -> AsyncIterator[SettingsListener]:
    listener = SettingsListener(asyncpg_dsn(database))
    await listener.start()
    try:
        await asyncio.wait_for(listener.connected.wait(), 10)
        yield listener
    finally:
        await listener.stop()


@contextmanager
def deaf(database: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every cache of the process answers for this database, but no notification ever
    arrives: only this process's own writes can drop them."""
    monkeypatch.setattr(runtime._Listened, "database", database.engine.url.database)
    monkeypatch.setattr(runtime.CACHE, "listening", True)
    runtime.CACHE.drop()
    for watched in runtime._WATCHES:
        watched.on_listening(True)
    try:
        yield
    finally:
        for watched in runtime._WATCHES:
            watched.on_listening(False)


class Statements:
    """The statements ``database`` sends while counting."""

    def __init__(self, database: Database) -> None:
        self.sent: list[str] = []
        self.counting = False
        event.listen(database.engine.sync_engine, "before_cursor_execute", self._note)

    def _note(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if self.counting:
            self.sent.append(statement)


@asynccontextmanager
async def statements(database: Database) -> AsyncIterator[list[str]]:
    """Every statement the app sends while the block runs, each a round trip: what
    SQLAlchemy executes (it prepares and runs them through asyncpg, which does not log
    those), plus what asyncpg's query logger sees (BEGIN, COMMIT and statements sent
    straight to the driver), less asyncpg's own type introspection, which a connection
    runs once for a statement's types and then caches."""
    sent: list[str] = []
    logged: set[int] = set()

    def from_driver(query: Any) -> None:
        sql = " ".join(query.query.split())
        if "typeinfo_tree" not in sql and "set_config('jit'" not in sql:
            sent.append(sql)

    def from_sqlalchemy(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(" ".join(statement.split()))

    def on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        driver = dbapi_connection.driver_connection
        if id(driver) not in logged:
            logged.add(id(driver))
            driver.add_query_logger(from_driver)

    engine = database.engine.sync_engine
    event.listen(engine, "checkout", on_checkout)
    event.listen(engine, "before_cursor_execute", from_sqlalchemy)
    try:
        yield sent
        await asyncio.sleep(0.05)  # asyncpg's query logger reports through call_soon
    finally:
        event.remove(engine, "checkout", on_checkout)
        event.remove(engine, "before_cursor_execute", from_sqlalchemy)

"""The process's LISTEN connection (roost.system_settings.runtime.SettingsListener) for
tests of the caches it keeps: up and connected for the block, stopped after it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from roost.db.engine import Database
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

"""Start-up of the system_settings domain: the process's LISTEN connection that keeps
the runtime settings cache current (roost.system_settings.runtime)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from roost.system_settings.runtime import SettingsListener
from roost.tasks.worker import asyncpg_dsn


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Behind PgBouncer in transaction mode a LISTEN cannot hold: every read asks the database.
    dsn = None if app.state.settings.pgbouncer else asyncpg_dsn(app.state.db)
    listener = SettingsListener(dsn)
    await listener.start()
    app.state.settings_listener = listener
    try:
        yield
    finally:
        await listener.stop()

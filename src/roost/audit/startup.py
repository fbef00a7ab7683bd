"""Start-up of the audit domain: the process's chainer (roost.audit.chainer)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import text

from roost.audit.chainer import run_chainer
from roost.audit.service import link_pending
from roost.db.engine import Database


def engine_linker(database: Database) -> Callable[[int], Awaitable[int]]:
    async def link(limit: int) -> int:
        async with database.transaction() as session:
            # Losing the last links in a crash is harmless: the rows are linked again,
            # to the same hashes, by the next chainer.  So no WAL flush wait here.
            await session.execute(text("SET LOCAL synchronous_commit = off"))
            return await link_pending(session, limit=limit, wait=False)

    return link


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    stop = asyncio.Event()
    interval_s = app.state.settings.audit_chain_interval_ms / 1000
    task = asyncio.create_task(run_chainer(engine_linker(app.state.db), interval_s, stop),
                               name="roost-audit-chainer")
    try:
        yield
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task

"""What the tests of overlapping operations (tests/*/test_races_*.py) share: settings with
a statement timeout shorter than their waits (a lock wait that never ends on its own
then ends as an error, which their status and state assertions catch), the check that
no answer was a server error, and waiting for a run's steps or for a count to drop to
zero."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import httpx
from sqlalchemy import text

from roost.config import Settings
from roost.db.engine import Database
from tests.support.sql import scalar

STATEMENT_TIMEOUT_MS = 12_000


def race_settings(settings: Settings, **changes: Any) -> Settings:
    """``settings`` with a statement timeout of ``STATEMENT_TIMEOUT_MS`` and ``changes``."""
    return settings.model_copy(update={"db_statement_timeout_ms": STATEMENT_TIMEOUT_MS,
                                       **changes})


def no_5xx(*responses: httpx.Response) -> None:
    for r in responses:
        assert r.status_code < 500, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"


async def wait_for_steps(client: httpx.AsyncClient, headers: dict[str, str], run_id: str,
                         n: int = 1, within: float = 20) -> list[dict[str, Any]]:
    """The run's steps once it has at least ``n`` of them."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        steps: list[dict[str, Any]] = (await client.get(f"/api/v1/runs/{run_id}/steps",
                                                        headers=headers)).json()
        if len(steps) >= n:
            return steps
        assert asyncio.get_running_loop().time() < deadline, (run_id, n, steps)
        await asyncio.sleep(0.05)


async def until_none(database: Database, sql: str, within: float = 15, **params: Any) -> int:
    """The count ``sql`` answers, once it is 0 (or as it stands after ``within`` s): what
    the operations left open, given the time to close it."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        count = int(await scalar(database, sql, **params))
        if count == 0 or asyncio.get_running_loop().time() > deadline:
            return count
        await asyncio.sleep(0.2)


async def answer_behind(database: Database, deletion: str, params: dict[str, Any],
                        table: str, request: Coroutine[Any, Any, httpx.Response],
                        ) -> httpx.Response:
    """``request``'s answer when it runs while another transaction's ``deletion`` holds the
    rows it reads: started inside that transaction, answered after it commits (once a
    statement on ``table`` waits for a lock, or the request has ended)."""
    async with database.transaction() as session:
        await session.execute(text(deletion), params)
        task = asyncio.ensure_future(request)
        for _ in range(200):  # each look in a transaction of its own: a fresh snapshot
            waiting = await scalar(database, "SELECT count(*) FROM pg_stat_activity WHERE "
                                   "datname = current_database() AND wait_event_type = "
                                   "'Lock' AND query ILIKE :q", q=f"%{table}%")
            if waiting or task.done():
                break
            await asyncio.sleep(0.05)
    return await task

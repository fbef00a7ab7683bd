"""A standalone ``roost worker`` keeps the same LISTEN connection as ``roost serve`` (the
domains' ``worker_startup``), so its caches (settings, prompts, tools) work there too, and
it closes that connection when it stops."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from sqlalchemy import text

from roost.db.engine import Database
from tests.support.workers import WorkerProcess, child_env

CONNECTIONS = text("SELECT count(*) FROM pg_stat_activity"
                   " WHERE application_name = :name AND datname = current_database()")


async def _listeners(database: Database, name: str = "roost-settings") -> int:
    async with database.transaction() as session:
        return int((await session.execute(CONNECTIONS, {"name": name})).scalar_one())


async def _wait_for(database: Database, wanted: int) -> int:
    seen = await _listeners(database)
    for _ in range(300):  # 60 s
        if seen == wanted:
            break
        await asyncio.sleep(0.2)
        seen = await _listeners(database)
    return seen


async def test_a_worker_process_listens_while_it_runs(
        database: Database, tmp_path: Path) -> None:
    assert await _listeners(database) == 0
    env = child_env(ROOST_DATABASE_URL=database.url.render_as_string(hide_password=False),
                    ROOST_DATA_DIR=str(tmp_path / "w"), ROOST_LOG_LEVEL="warning")
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        assert await _wait_for(database, 1) == 1, (tmp_path / "worker.log").read_text()
        worker.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.proc.wait, 30) == 0
        assert await _wait_for(database, 0) == 0  # closed at shutdown, not left behind
    finally:
        worker.kill()


async def test_a_worker_behind_pgbouncer_does_not_listen(
        database: Database, tmp_path: Path) -> None:
    # In transaction pooling a LISTEN cannot hold: the worker reads settings from the
    # database instead (and still runs).
    env = child_env(ROOST_DATABASE_URL=database.url.render_as_string(hide_password=False),
                    ROOST_DATA_DIR=str(tmp_path / "w"), ROOST_LOG_LEVEL="warning",
                    ROOST_PGBOUNCER="true")
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        for _ in range(300):  # the worker's own connections: it has started
            if await _listeners(database, "roost-worker") or worker.proc.poll() is not None:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1)
        assert worker.proc.poll() is None, (tmp_path / "worker.log").read_text()
        assert await _listeners(database, "roost-worker") > 0
        assert await _listeners(database) == 0
    finally:
        worker.kill()

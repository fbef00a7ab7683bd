"""Fixtures for the task tests: the runs table, in-process workers, worker processes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import text

from roost.db.engine import Database
from roost.tasks.worker import Worker, WorkerConfig
from tests.tasks import handlers
from tests.tasks.support import WorkerProcess

# Short leases and polls keep the suite quick; every wait is bounded.
FAST = {"lease_s": 2.0, "poll_interval_s": 0.2, "schedules": False, "shutdown_timeout_s": 2.0,
        "concurrency": 4}


@pytest_asyncio.fixture(loop_scope="session")
async def runs_table(database: Database) -> Database:
    async with database.transaction() as session:
        await session.execute(text(handlers.CREATE_RUNS_TABLE))
    return database


StartWorker = Callable[..., Awaitable[Worker]]


@pytest_asyncio.fixture(loop_scope="session")
async def start_worker(runs_table: Database) -> AsyncIterator[StartWorker]:
    """Start a worker in this event loop; all are stopped at the end of the test."""
    running: list[tuple[Worker, asyncio.Task[None]]] = []

    async def start(**overrides: Any) -> Worker:
        worker = Worker(runs_table, WorkerConfig(**{**FAST, **overrides}))
        task = asyncio.create_task(worker.run())
        started = asyncio.create_task(worker.started.wait())
        await asyncio.wait({task, started}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # raise its error
        assert worker.started.is_set(), "worker did not start"
        running.append((worker, task))
        return worker

    yield start
    for worker, _ in running:
        worker.stop(force=True)
    for _, task in running:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 20)


StartProcess = Callable[..., WorkerProcess]


@pytest.fixture
def worker_process(
    pg_server: Any, db_name: str, runs_table: Database, tmp_path: Path
) -> Iterator[StartProcess]:
    """Start ``roost worker`` processes on the test database; killed at the end."""
    procs: list[WorkerProcess] = []
    url = pg_server.libpq_url(db_name)

    def start(*args: str, env: dict[str, str] | None = None) -> WorkerProcess:
        n = len(procs)
        proc = WorkerProcess(url, tmp_path / f"data{n}", tmp_path / f"worker{n}.log", *args,
                             env=env)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.close()

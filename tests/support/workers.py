"""`roost worker` processes for tests that kill one mid-job (SIGKILL: no graceful stop)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

from roost.db.engine import Database
from roost.tasks.worker import Worker, WorkerConfig
from tests.support.cli import ROOST

REPO = Path(__file__).resolve().parents[2]
FAST = ("--lease", "2", "--poll-interval", "0.2", "--shutdown-timeout", "2", "--no-schedules")


class WorkerProcess:
    """A real ``roost worker`` in its own process group, its output in ``log``."""

    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        self.log = log.open("wb")
        self.proc = subprocess.Popen(
            [ROOST, "worker", *FAST, *args], cwd=REPO, env=env, stdout=self.log,
            stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        """SIGKILL the worker and every child (stdio tool servers included)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.log.close()


def child_env(**settings: str) -> dict[str, str]:
    """This process's environment without its ROOST_* settings, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
    env.update(settings)
    return env


@contextlib.asynccontextmanager
async def in_process_worker(database: Database) -> AsyncIterator[Worker]:
    """A queue worker on this test's loop (quick polling, no schedules), stopped at exit."""
    worker = Worker(database, WorkerConfig(concurrency=2, lease_s=5, poll_interval_s=0.2,
                                           schedules=False, shutdown_timeout_s=2))
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.started.wait(), 15)
    try:
        yield worker
    finally:
        worker.stop(force=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 20)


@contextlib.contextmanager
def worker_processes(database_url: str, tmp_path: Path) -> Iterator[Callable[[], WorkerProcess]]:
    """A starter of ``roost worker`` processes on the ``agents`` queue (runs, workflow
    nodes, debates), with the stub-friendly settings the crash tests use; each one is
    killed at exit."""
    started: list[WorkerProcess] = []
    env = child_env(ROOST_DATABASE_URL=database_url, ROOST_DATA_DIR=str(tmp_path / "w"),
                    ROOST_LOG_JSON="true", ROOST_LLM_LOCAL_MODEL="false",
                    ROOST_KNOWLEDGE_EMBEDDING_PROVIDER="hash", ROOST_LLM_TIMEOUT_S="120")

    def start() -> WorkerProcess:
        worker = WorkerProcess(env, tmp_path / f"worker{len(started)}.log", "--queues", "agents")
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.kill()

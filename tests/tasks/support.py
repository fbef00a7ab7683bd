"""Helpers for the task tests: bounded waits, worker processes, enqueueing a job."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from roost.db.engine import Database
from roost.tasks import service
from roost.tasks.models import BackgroundTask

REPO = Path(__file__).resolve().parents[2]
ROOST = str(Path(sys.executable).with_name("roost"))


async def wait_until(
    predicate: Callable[[], Awaitable[Any]], *, within: float = 15.0, interval: float = 0.05,
    what: str = "condition",
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(interval)


async def enqueue(database: Database, task_type: str, payload: dict[str, Any] | None = None,
                  **options: Any) -> BackgroundTask:
    """One job, committed in a transaction of its own."""
    async with database.transaction() as session:
        return await service.enqueue(session, task_type, payload or {}, **options)


class WorkerProcess:
    """``roost worker`` in a child process against the test database."""

    def __init__(self, db_url: str, data_dir: Path, log_path: Path, *args: str,
                 env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
        full_env.update({
            "ROOST_DATABASE_URL": db_url, "ROOST_DATA_DIR": str(data_dir),
            "ROOST_LOG_LEVEL": "info", "ROOST_LOG_JSON": "true",
        })
        full_env.update(env or {})
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [ROOST, "worker", "--import", "tests.tasks.handlers", "--lease", "2",
             "--poll-interval", "0.2", "--shutdown-timeout", "5", *args],
            cwd=REPO, env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    async def wait_started(self, within: float = 30.0) -> None:
        async def started() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited early ({self.proc.returncode}):\n"
                                     + self.output()[-4000:])
            return "worker_started" in self.output()

        await wait_until(started, within=within, interval=0.1, what="worker start")

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    async def wait_exit(self, within: float = 20.0) -> int:
        async def exited() -> bool:
            return self.proc.poll() is not None

        await wait_until(exited, within=within, interval=0.05, what="worker exit")
        return int(self.proc.returncode)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._log.close()

"""Task handlers for the tests, imported by the test process and by worker processes
(``roost worker --import tests.tasks.handlers``).

Each run is recorded in ``task_test_runs`` (created by the ``runs_table`` fixture) with
the database clock, so tests can assert ordering, exclusivity and timing across processes.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import text

from roost.tasks.handlers import PermanentError, TaskContext, task

CREATE_RUNS_TABLE = """
CREATE TABLE IF NOT EXISTS task_test_runs (
  id bigserial PRIMARY KEY,
  task_id uuid NOT NULL,
  task_type text NOT NULL,
  label text,
  attempt int NOT NULL,
  worker_id text NOT NULL,
  pid int NOT NULL,
  started_at timestamptz NOT NULL,
  finished_at timestamptz
)
"""


async def _start(ctx: TaskContext, label: str | None) -> int:
    async with ctx.database.transaction() as session:
        run_id = (
            await session.execute(
                text("INSERT INTO task_test_runs (task_id, task_type, label, attempt, worker_id,"
                     " pid, started_at) VALUES (:t, :tt, :l, :a, :w, :p, clock_timestamp())"
                     " RETURNING id"),
                {"t": ctx.task_id, "tt": ctx.task_type, "l": label, "a": ctx.attempt,
                 "w": ctx.worker_id, "p": os.getpid()},
            )
        ).scalar_one()
    return int(run_id)


async def _finish(ctx: TaskContext, run_id: int) -> None:
    async with ctx.database.transaction() as session:
        await session.execute(
            text("UPDATE task_test_runs SET finished_at = clock_timestamp() WHERE id = :id"),
            {"id": run_id},
        )


@task("test.record", max_retries=0)
async def record(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Records its start and end; sleeps ``sleep`` seconds in between."""
    run_id = await _start(ctx, payload.get("label"))
    await asyncio.sleep(float(payload.get("sleep", 0)))
    await _finish(ctx, run_id)
    return {"label": payload.get("label"), "pid": os.getpid()}


@task("test.slow_first", max_retries=3)
async def slow_first(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Hangs on its first attempt (the test kills the worker then); quick afterwards."""
    run_id = await _start(ctx, payload.get("label"))
    if ctx.attempt == 1:
        await asyncio.sleep(float(payload.get("first_sleep", 60)))
    await _finish(ctx, run_id)
    return {"attempt": ctx.attempt}


@task("test.fail", max_retries=2, backoff_base_s=0.05, backoff_max_s=0.2)
async def always_fail(ctx: TaskContext, payload: dict[str, Any]) -> None:
    await _start(ctx, payload.get("label"))
    raise ValueError(f"boom on attempt {ctx.attempt}")


@task("test.flaky", max_retries=3, backoff_base_s=0.05, backoff_max_s=0.2)
async def flaky(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    await _start(ctx, payload.get("label"))
    if ctx.attempt < int(payload["succeed_on"]):
        raise ConnectionError(f"transient failure {ctx.attempt}")
    return {"succeeded_on": ctx.attempt}


@task("test.permanent", max_retries=5)
async def permanent(ctx: TaskContext, payload: dict[str, Any]) -> None:
    raise PermanentError("this payload can never work")


@task("test.exit", max_retries=0)
async def exits(ctx: TaskContext, payload: dict[str, Any]) -> None:
    """A handler that tries to end the process: the worker must survive it."""
    raise SystemExit(3)


@task("test.timeout", max_retries=0, timeout_s=0.3)
async def too_slow(ctx: TaskContext, payload: dict[str, Any]) -> None:
    await asyncio.sleep(30)


@task("test.cancelled_inside", max_retries=2, backoff_base_s=0.05, backoff_max_s=0.1)
async def cancelled_inside(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Its first attempt awaits an inner task it cancelled itself: a CancelledError out of
    the handler's own code, though nobody cancelled the job."""
    if ctx.attempt == 1:
        inner = asyncio.create_task(asyncio.sleep(10))
        await asyncio.sleep(0)
        inner.cancel()
        await inner
    return {"attempt": ctx.attempt}


class _Upstream(BaseModel):
    n: int


@task("test.own_validation", max_retries=3, backoff_base_s=0.05, backoff_max_s=0.1)
async def own_validation(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Its first attempt parses a malformed upstream answer (a pydantic ValidationError of
    the handler's own, not of the payload's model): a transient failure."""
    if ctx.attempt == 1:
        _Upstream.model_validate({"n": "not a number"})
    return {"attempt": ctx.attempt}


@task("test.sync", max_retries=0)
def sync_handler(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    time.sleep(0.01)
    return {"thread": True, "n": payload.get("n")}


@task("test.noop", max_retries=0)
async def noop(ctx: TaskContext, payload: dict[str, Any]) -> None:
    return None


@task("test.answer", max_retries=0)
async def answer(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    return payload.get("answer")


class Greeting(BaseModel):
    name: str = Field(min_length=1, max_length=50)
    times: int = Field(default=1, ge=1, le=5)


@task("test.typed", max_retries=0, payload_model=Greeting)
async def typed(ctx: TaskContext, payload: Greeting) -> dict[str, Any]:
    return {"greeting": " ".join([f"hello {payload.name}"] * payload.times)}


@task("test.small", max_retries=0, max_payload_bytes=1024)
async def small(ctx: TaskContext, payload: dict[str, Any]) -> None:
    return None


def new_label() -> str:
    return uuid.uuid4().hex[:8]

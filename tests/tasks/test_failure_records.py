"""What the worker records when an attempt's outcome is awkward to store: errors whose text
PostgreSQL refuses (NUL, lone surrogates), exceptions that cannot be printed, results
json cannot write, backoffs beyond the calendar, a job claimed again by its own worker.
Each must end its attempt once, with its real error, never stay ``running`` until its
lease expires (and run again, repeating its side effects)."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections import defaultdict
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from roost.db.base import utcnow
from roost.db.engine import Database
from roost.tasks import worker as worker_mod
from roost.tasks.handlers import PermanentError, TaskContext, get_task_type, task, unregister
from roost.tasks.worker import MAX_BACKOFF_S, backoff_delay
from tests.tasks.conftest import StartWorker
from tests.tasks.support import enqueue, wait_until

RUNS: dict[str, list[int]] = defaultdict(list)


@task("test.awkward.huge_int_result", max_retries=2)
async def huge_int_result(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    RUNS[payload["key"]].append(ctx.attempt)
    return {"n": 10**5000}


@task("test.awkward.nul_then_ok", max_retries=2, backoff_base_s=0.05, backoff_max_s=0.1)
async def nul_then_ok(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    RUNS[payload["key"]].append(ctx.attempt)
    if ctx.attempt == 1:
        raise ValueError("bad header \x00\x01 end")
    return {"ok": True}


# A payload cannot hold these (jsonb refuses them): the handler picks its message by name.
MESSAGES = {"nul": "cannot parse \x00 in file", "lone-surrogate": "bad name \udcff.txt"}


@task("test.awkward.permanent", max_retries=3)
async def permanent(ctx: TaskContext, payload: dict[str, Any]) -> None:
    RUNS[payload["key"]].append(ctx.attempt)
    raise PermanentError(MESSAGES[payload["message"]])


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for this error")


@task("test.awkward.unprintable", max_retries=0)
async def unprintable(ctx: TaskContext, payload: dict[str, Any]) -> None:
    RUNS[payload["key"]].append(ctx.attempt)
    raise _Unprintable()


@task("test.awkward.far_backoff", max_retries=1, backoff_base_s=1e14, backoff_max_s=1e14)
async def far_backoff(ctx: TaskContext, payload: dict[str, Any]) -> None:
    RUNS[payload["key"]].append(ctx.attempt)
    raise ValueError("try again much later")


@task("test.awkward.overlap", max_retries=1)
async def overlap(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    RUNS[payload["key"]].append(ctx.attempt)
    await asyncio.sleep(2.0 if ctx.attempt == 1 else 8.0)
    return {"attempt": ctx.attempt}


async def _row(database: Database, task_id: uuid.UUID) -> Any:
    async with database.transaction() as session:
        return (await session.execute(text(
            "SELECT status::text AS status, error_message, retry_history, result, retry_count,"
            " scheduled_at FROM background_tasks WHERE id = :id"), {"id": task_id})).one()


async def _final(database: Database, task_id: uuid.UUID, within: float = 25.0) -> Any:
    async def done() -> Any:
        row = await _row(database, task_id)
        return row if row.status in ("completed", "dead_letter", "cancelled") else None
    return await wait_until(done, within=within, what="a final status")


async def _dead_letter(database: Database, task_id: uuid.UUID) -> Any:
    async with database.transaction() as session:
        return (await session.execute(text(
            "SELECT error_message, error_stack FROM dead_letter_queue"
            " WHERE original_task_id = :id"), {"id": task_id})).one()


async def test_a_result_json_cannot_write_completes_the_job_once(
    start_worker: StartWorker, database: Database
) -> None:
    """The handler's work is done: its unwritable answer (an integer of 5001 digits) is
    replaced by an error note, and the job is not run again."""
    key = uuid.uuid4().hex
    await start_worker()
    job = await enqueue(database, "test.awkward.huge_int_result", {"key": key})
    row = await _final(database, job.id)
    assert row.status == "completed", (row.status, row.error_message)
    assert "not storable JSON" in row.result["error"]
    assert RUNS[key] == [1]


async def test_an_error_message_with_a_nul_is_recorded_as_that_attempts_error(
    start_worker: StartWorker, database: Database
) -> None:
    key = uuid.uuid4().hex
    await start_worker()
    job = await enqueue(database, "test.awkward.nul_then_ok", {"key": key})
    row = await _final(database, job.id)
    assert row.status == "completed"
    assert RUNS[key] == [1, 2]
    first = row.retry_history[0]
    assert first["outcome"] == "error", first
    assert first["error"] == "ValueError: bad header \\x00\x01 end"
    assert "\x00" not in first["stack"]


@pytest.mark.parametrize(("message", "stored"), [
    ("nul", "cannot parse \\x00 in file"),
    ("lone-surrogate", "bad name \\udcff.txt"),
])
async def test_a_permanent_error_with_unstorable_text_is_dead_lettered_at_once(
    start_worker: StartWorker, database: Database, message: str, stored: str
) -> None:
    """The text is escaped as Python writes it; the job goes to the dead letters after its
    one attempt with its own error (it used to run 4 times, ending "lease expired")."""
    key = uuid.uuid4().hex
    await start_worker()
    job = await enqueue(database, "test.awkward.permanent", {"key": key, "message": message})
    row = await _final(database, job.id)
    assert row.status == "dead_letter"
    assert RUNS[key] == [1], RUNS[key]
    assert row.error_message == f"PermanentError: {stored}"
    letter = await _dead_letter(database, job.id)
    assert letter.error_message == row.error_message
    assert stored in letter.error_stack


async def test_an_exception_whose_str_fails_is_dead_lettered_once(
    start_worker: StartWorker, database: Database
) -> None:
    key = uuid.uuid4().hex
    await start_worker()
    job = await enqueue(database, "test.awkward.unprintable", {"key": key})
    row = await _final(database, job.id)
    assert row.status == "dead_letter"
    assert RUNS[key] == [1], RUNS[key]
    assert row.error_message == "_Unprintable (message unavailable)"


async def test_an_outcome_the_database_refuses_is_recorded_with_generic_text(
    start_worker: StartWorker, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should an error's text still be refused (here: the cleaning is switched off), the
    attempt is recorded once more with text that cannot fail, not left running."""
    monkeypatch.setattr(worker_mod, "storable_text", lambda value: value)
    key = uuid.uuid4().hex
    await start_worker()
    job = await enqueue(database, "test.awkward.permanent",
                        {"key": key, "message": "nul"})
    row = await _final(database, job.id)
    assert row.status == "dead_letter"
    assert RUNS[key] == [1], RUNS[key]
    assert row.error_message.startswith("PermanentError (its error could not be recorded: ")
    assert row.retry_history[-1]["outcome"] == "permanent_error"


async def test_a_backoff_beyond_the_calendar_is_capped_and_recorded(
    start_worker: StartWorker, database: Database
) -> None:
    """backoff_base_s=1e14 (3 million years): the retry is recorded as 'failed', due within
    MAX_BACKOFF_S, not left running to expire and be retried at once."""
    key = uuid.uuid4().hex
    await start_worker()
    job = await enqueue(database, "test.awkward.far_backoff", {"key": key})

    async def failed() -> Any:
        row = await _row(database, job.id)
        return row if row.status in ("failed", "stuck", "dead_letter") else None
    row = await wait_until(failed, within=10, what="the failed attempt recorded")
    assert row.status == "failed", (row.status, row.error_message)
    assert row.error_message == "ValueError: try again much later"
    assert utcnow() + timedelta(days=365) < row.scheduled_at
    assert row.scheduled_at <= utcnow() + timedelta(seconds=MAX_BACKOFF_S)
    await asyncio.sleep(3 * 2.0)  # three leases of the test worker: nothing runs again
    assert RUNS[key] == [1], RUNS[key]


def test_backoff_delays_are_capped() -> None:
    tt = get_task_type("test.awkward.far_backoff")
    assert tt is not None
    for retry in (1, 50, 101):
        assert MAX_BACKOFF_S / 2 <= backoff_delay(tt, retry) <= MAX_BACKOFF_S


@pytest.mark.parametrize("options", [
    {"backoff_base_s": math.inf}, {"backoff_max_s": math.inf}, {"backoff_base_s": math.nan},
    {"backoff_max_s": -1.0},
])
def test_a_backoff_no_interval_can_hold_is_refused(options: dict[str, float]) -> None:
    try:
        with pytest.raises(ValueError, match="backoff"):
            task("test.awkward.bad_backoff", **options)(far_backoff)  # type: ignore[arg-type]
    finally:
        unregister("test.awkward.bad_backoff")


async def test_a_job_reclaimed_by_its_own_worker_keeps_its_lease(
    start_worker: StartWorker, database: Database
) -> None:
    """When a job whose lease was taken over is claimed again by the same worker while the
    old attempt still runs, the old attempt is stopped and the new one keeps being
    heartbeated: it completes (the old attempt's end used to drop the new one's entry, so
    it was reaped while healthy)."""
    key = uuid.uuid4().hex
    await start_worker(lease_s=3.0, poll_interval_s=0.1)
    job = await enqueue(database, "test.awkward.overlap", {"key": key})
    await wait_until(lambda: asyncio.sleep(0, RUNS[key]), within=10, what="first attempt")
    # What a reaper does once the lease expired (the worker froze or lost the database).
    async with database.transaction() as session:
        await session.execute(text(
            "UPDATE background_tasks SET status = 'stuck', retry_count = 1, scheduled_at = now(),"
            " lease_expires_at = NULL WHERE id = :id AND status = 'running'"), {"id": job.id})
        await session.execute(text("SELECT pg_notify('roost_tasks', 'default')"))
    row = await _final(database, job.id, within=30)
    assert row.status == "completed", (row.status, row.error_message, RUNS[key])
    assert row.result == {"attempt": 2}
    assert RUNS[key] == [1, 2]

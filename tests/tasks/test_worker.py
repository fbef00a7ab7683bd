"""The worker in this process: outcomes, retries, dead letters, cancel, leases, shutdown."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from sqlalchemy import select, text

from roost.audit.models import AuditLog
from roost.db.engine import Database
from roost.principal import OPERATOR
from roost.tasks import service
from roost.tasks.models import BackgroundTask, DeadLetter, TaskStatus
from roost.tasks.worker import reap_expired
from tests.support.sql import fetch, scalar
from tests.tasks.conftest import StartWorker
from tests.tasks.support import enqueue, wait_until


async def _task(database: Database, task_id: Any) -> BackgroundTask:
    async with database.transaction() as session:
        task = await session.get(BackgroundTask, task_id)
        assert task is not None
        return task


async def _status_is(database: Database, task_id: Any, *statuses: TaskStatus) -> bool:
    return (await _task(database, task_id)).status in statuses


async def test_a_job_runs_and_its_result_is_stored(
    runs_table: Database, start_worker: StartWorker
) -> None:
    await start_worker()
    job = await enqueue(runs_table, "test.record", {"label": "one"})
    await wait_until(lambda: _status_is(runs_table, job.id, TaskStatus.COMPLETED),
                     what="completion")
    done = await _task(runs_table, job.id)
    assert done.result is not None and done.result["label"] == "one"
    assert done.attempts == 1 and done.retry_count == 0
    assert done.started_at is not None and done.completed_at is not None
    assert done.started_at <= done.completed_at
    assert done.lease_expires_at is None and done.worker_id is not None


async def test_sync_handlers_and_non_dict_results(
    runs_table: Database, start_worker: StartWorker
) -> None:
    await start_worker()
    sync_job = await enqueue(runs_table, "test.sync", {"n": 3})
    scalar_job = await enqueue(runs_table, "test.answer", {"answer": 42})
    typed_job = await enqueue(runs_table, "test.typed", {"name": "ada", "times": 2})
    for job in (sync_job, scalar_job, typed_job):
        await wait_until(lambda j=job: _status_is(runs_table, j.id, TaskStatus.COMPLETED),
                         what="completion")
    assert (await _task(runs_table, sync_job.id)).result == {"thread": True, "n": 3}
    assert (await _task(runs_table, scalar_job.id)).result == {"value": 42}
    assert (await _task(runs_table, typed_job.id)).result == {"greeting": "hello ada hello ada"}


async def test_transient_failures_retry_with_backoff_then_succeed(
    runs_table: Database, start_worker: StartWorker
) -> None:
    await start_worker()
    job = await enqueue(runs_table, "test.flaky", {"succeed_on": 3})
    await wait_until(lambda: _status_is(runs_table, job.id, TaskStatus.COMPLETED),
                     what="completion")
    done = await _task(runs_table, job.id)
    assert done.result == {"succeeded_on": 3}
    assert done.retry_count == 2 and done.attempts == 3
    assert [h["outcome"] for h in done.retry_history] == ["error", "error"]
    assert "ConnectionError: transient failure 1" in done.retry_history[0]["error"]
    assert done.error_message is None
    starts = [r[0] for r in await fetch(
        runs_table, "SELECT started_at FROM task_test_runs WHERE task_id = :t ORDER BY id",
        t=job.id)]
    # Each retry waited at least half of its backoff ceiling (equal jitter).
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    assert gaps[0] >= 0.025 and gaps[1] >= 0.05, gaps


async def test_a_failing_job_ends_in_the_dead_letters_with_its_history(
    runs_table: Database, start_worker: StartWorker
) -> None:
    await start_worker()
    job = await enqueue(runs_table, "test.fail", {"label": "doomed"})
    await wait_until(lambda: _status_is(runs_table, job.id, TaskStatus.DEAD_LETTER),
                     what="dead letter")
    async with runs_table.transaction() as session:
        letter = (await session.scalars(
            select(DeadLetter).where(DeadLetter.original_task_id == job.id))).one()
        audit = (await session.scalars(
            select(AuditLog).where(AuditLog.action == "task.dead_lettered"))).one()
    assert letter.task_type == "test.fail" and letter.payload == {"label": "doomed"}
    assert letter.error_message == "ValueError: boom on attempt 3"
    assert letter.error_stack is not None and "always_fail" in letter.error_stack
    assert "ValueError: boom on attempt 3" in letter.error_stack
    assert [h["attempt"] for h in letter.retry_history] == [1, 2, 3]
    assert [h["error"] for h in letter.retry_history] == [
        f"ValueError: boom on attempt {n}" for n in (1, 2, 3)]
    assert audit.resource_id == str(job.id) and audit.success is False
    assert audit.event_category == "error"
    task = await _task(runs_table, job.id)
    assert task.retry_count == 3 and task.error_message == letter.error_message
    # Exactly max_retries + 1 attempts ran: the poison job did not loop.
    assert await scalar(runs_table, "SELECT count(*) FROM task_test_runs WHERE task_id = :t",
                        t=job.id) == 3


async def test_permanent_errors_and_bad_payloads_skip_the_retries(
    runs_table: Database, start_worker: StartWorker
) -> None:
    await start_worker()
    job = await enqueue(runs_table, "test.permanent")
    # A payload that no longer matches its model (written behind the API's back).
    async with runs_table.transaction() as session:
        typed = await service.enqueue(session, "test.typed", {"name": "x"})
        await session.execute(text("UPDATE background_tasks SET payload = '{\"name\": 5}'"
                                   " WHERE id = :id"), {"id": typed.id})
    for task_id in (job.id, typed.id):
        await wait_until(lambda t=task_id: _status_is(runs_table, t, TaskStatus.DEAD_LETTER),
                         what="dead letter")
    assert (await _task(runs_table, job.id)).attempts == 1
    assert "PermanentError" in ((await _task(runs_table, job.id)).error_message or "")
    assert "ValidationError" in ((await _task(runs_table, typed.id)).error_message or "")


async def test_handler_exceptions_never_kill_the_worker(
    runs_table: Database, start_worker: StartWorker
) -> None:
    worker = await start_worker()
    exiting = await enqueue(runs_table, "test.exit")
    slow = await enqueue(runs_table, "test.timeout")
    await wait_until(lambda: _status_is(runs_table, exiting.id, TaskStatus.DEAD_LETTER),
                     what="SystemExit job dead-lettered")
    await wait_until(lambda: _status_is(runs_table, slow.id, TaskStatus.DEAD_LETTER),
                     what="timed-out job dead-lettered")
    assert (await _task(runs_table, exiting.id)).error_message == "SystemExit: 3"
    assert (await _task(runs_table, slow.id)).error_message == "timed out after 0.3 s"
    after = await enqueue(runs_table, "test.record", {"label": "still alive"})
    await wait_until(lambda: _status_is(runs_table, after.id, TaskStatus.COMPLETED),
                     what="a later job")
    assert worker.started.is_set()


async def test_a_cancelled_error_raised_by_the_handler_fails_the_attempt(
    runs_table: Database, start_worker: StartWorker
) -> None:
    """A CancelledError out of the handler's own code (an inner task it awaited was
    cancelled) fails the attempt at once, like any other exception, and is retried: the
    job is not left running until its lease expires and then reaped as a dead worker's."""
    worker = await start_worker(lease_s=3.0)
    job = await enqueue(runs_table, "test.cancelled_inside")
    await wait_until(lambda: _status_is(runs_table, job.id, TaskStatus.COMPLETED,
                                        TaskStatus.DEAD_LETTER), what="the job's end")
    row = await _task(runs_table, job.id)
    assert row.status == TaskStatus.COMPLETED and row.result == {"attempt": 2}
    first = row.retry_history[0]
    assert first["outcome"] == "error", first
    assert first["error"] == "CancelledError" and first["worker_id"] == worker.worker_id
    assert "cancelled_inside" in first["stack"]


async def test_a_validation_error_of_the_handlers_own_is_retried(
    runs_table: Database, start_worker: StartWorker
) -> None:
    """Only a payload that no longer fits its payload_model skips the retries; a pydantic
    ValidationError the handler raises itself (a malformed upstream answer) is an
    ordinary failure."""
    await start_worker()
    job = await enqueue(runs_table, "test.own_validation")
    await wait_until(lambda: _status_is(runs_table, job.id, TaskStatus.COMPLETED,
                                        TaskStatus.DEAD_LETTER), what="the job's end")
    row = await _task(runs_table, job.id)
    assert row.status == TaskStatus.COMPLETED, (row.status, row.error_message)
    assert row.result == {"attempt": 2}
    assert row.retry_history[0]["outcome"] == "error"
    assert row.retry_history[0]["error"].startswith("ValidationError: ")
    assert await scalar(runs_table, "SELECT count(*) FROM dead_letter_queue"
                        " WHERE original_task_id = :t", t=job.id) == 0


async def test_jobs_wait_for_scheduled_at_and_follow_priority(
    runs_table: Database, start_worker: StartWorker
) -> None:
    later = await enqueue(runs_table, "test.record", {"label": "later"}, delay=_seconds(0.8))
    for label, priority in (("bg", "background"), ("low", "low"), ("crit", "critical"),
                            ("high", "high"), ("normal", "normal")):
        await enqueue(runs_table, "test.record", {"label": label}, priority=priority)
    await start_worker(concurrency=1)
    await wait_until(lambda: _status_is(runs_table, later.id, TaskStatus.COMPLETED),
                     what="the scheduled job")
    rows = await fetch(runs_table, "SELECT label, started_at FROM task_test_runs ORDER BY id")
    assert [r[0] for r in rows] == ["crit", "high", "normal", "low", "bg", "later"]
    assert rows[-1][1] >= later.scheduled_at


async def test_pause_resume_and_cancel_a_waiting_job(
    runs_table: Database, start_worker: StartWorker
) -> None:
    paused = await enqueue(runs_table, "test.record", {"label": "paused"}, delay=_seconds(0.3))
    cancelled = await enqueue(runs_table, "test.record", {"label": "cancelled"})
    async with runs_table.transaction() as session:
        await service.pause_task(session, OPERATOR, paused.id)
        await service.cancel_task(session, OPERATOR, cancelled.id)
    await start_worker()
    await asyncio.sleep(0.8)
    assert await _status_is(runs_table, paused.id, TaskStatus.PAUSED)
    assert await _status_is(runs_table, cancelled.id, TaskStatus.CANCELLED)
    async with runs_table.transaction() as session:
        await service.resume_task(session, OPERATOR, paused.id)
    await wait_until(lambda: _status_is(runs_table, paused.id, TaskStatus.COMPLETED),
                     what="resumed job")
    labels = {r[0] for r in await fetch(runs_table, "SELECT label FROM task_test_runs")}
    assert labels == {"paused"}


async def test_cancelling_a_running_job_stops_its_handler(
    runs_table: Database, start_worker: StartWorker
) -> None:
    await start_worker(lease_s=0.9)  # heartbeats every 0.3 s
    job = await enqueue(runs_table, "test.record", {"label": "long", "sleep": 30})
    await wait_until(lambda: scalar(runs_table, "SELECT count(*) FROM task_test_runs"),
                     what="job start")
    async with runs_table.transaction() as session:
        await service.cancel_task(session, OPERATOR, job.id)
    # The handler is cancelled at the next heartbeat: it never records its finish, and
    # the job stays cancelled (the worker writes nothing more about it).
    await asyncio.sleep(1.2)
    task = await _task(runs_table, job.id)
    assert task.status == TaskStatus.CANCELLED
    assert await scalar(runs_table, "SELECT finished_at FROM task_test_runs") is None
    worker_inflight = await scalar(
        runs_table, "SELECT count(*) FROM background_tasks WHERE status = 'running'")
    assert worker_inflight == 0


async def test_an_expired_lease_makes_the_job_stuck_then_retried(
    runs_table: Database, start_worker: StartWorker
) -> None:
    job = await enqueue(runs_table, "test.record", {"label": "orphan"}, max_retries=2)
    # Simulate a worker that claimed the job and died: running, lease in the past.
    async with runs_table.transaction() as session:
        await session.execute(text(
            "UPDATE background_tasks SET status = 'running', worker_id = 'dead:1:abc',"
            " attempts = 1, started_at = now() - interval '1 minute',"
            " lease_expires_at = now() - interval '1 second' WHERE id = :id"), {"id": job.id})
    assert await reap_expired(runs_table) == 1
    stuck = await _task(runs_table, job.id)
    assert stuck.status == TaskStatus.STUCK and stuck.retry_count == 1
    assert stuck.retry_history[0]["outcome"] == "lease_expired"
    assert stuck.retry_history[0]["worker_id"] == "dead:1:abc"
    await start_worker()
    await wait_until(lambda: _status_is(runs_table, job.id, TaskStatus.COMPLETED),
                     what="retry of the stuck job")
    assert (await _task(runs_table, job.id)).attempts == 2


async def test_a_job_that_keeps_losing_its_worker_ends_in_the_dead_letters(
    runs_table: Database,
) -> None:
    job = await enqueue(runs_table, "test.record", {"label": "poison"}, max_retries=1)
    for attempt in (1, 2):
        async with runs_table.transaction() as session:
            await session.execute(text(
                "UPDATE background_tasks SET status = 'running', worker_id = :w,"
                " attempts = :a, lease_expires_at = now() - interval '1 second'"
                " WHERE id = :id"), {"id": job.id, "a": attempt, "w": f"w{attempt}"})
        await reap_expired(runs_table)
    task = await _task(runs_table, job.id)
    assert task.status == TaskStatus.DEAD_LETTER
    async with runs_table.transaction() as session:
        letter = (await session.scalars(select(DeadLetter))).one()
    assert [h["worker_id"] for h in letter.retry_history] == ["w1", "w2"]
    assert letter.error_message.startswith("lease expired")


async def test_graceful_stop_finishes_short_jobs_and_releases_long_ones(
    runs_table: Database, start_worker: StartWorker
) -> None:
    worker = await start_worker(shutdown_timeout_s=0.6)
    short = await enqueue(runs_table, "test.record", {"label": "short", "sleep": 0.2})
    long = await enqueue(runs_table, "test.record", {"label": "long", "sleep": 30})
    await wait_until(lambda: scalar(runs_table, "SELECT count(*) = 2 FROM task_test_runs"),
                     what="both started")
    worker.stop()
    await wait_until(lambda: _status_is(runs_table, long.id, TaskStatus.QUEUED),
                     what="long job released")
    assert await _status_is(runs_table, short.id, TaskStatus.COMPLETED)
    released = await _task(runs_table, long.id)
    assert released.retry_count == 0  # a release is not a failure
    assert released.retry_history[-1]["outcome"] == "released"
    # A new worker picks the released job up again.
    await start_worker(shutdown_timeout_s=0.1)
    await wait_until(lambda: scalar(
        runs_table, "SELECT count(*) = 2 FROM task_test_runs WHERE label = 'long'"),
        what="restart of the released job")
    assert (await _task(runs_table, long.id)).attempts == 2


async def test_workers_on_named_queues_take_only_those(
    runs_table: Database, start_worker: StartWorker
) -> None:
    a = await enqueue(runs_table, "test.record", {"label": "a"}, queue="alpha")
    b = await enqueue(runs_table, "test.record", {"label": "b"}, queue="beta")
    await start_worker(queues=("alpha",))
    await wait_until(lambda: _status_is(runs_table, a.id, TaskStatus.COMPLETED), what="alpha")
    await asyncio.sleep(0.4)
    assert await _status_is(runs_table, b.id, TaskStatus.PENDING)


async def test_notify_wakes_an_idle_worker_quickly(
    runs_table: Database, start_worker: StartWorker
) -> None:
    await start_worker(poll_interval_s=30)  # polling alone would take 30 s
    await asyncio.sleep(0.3)  # let it go idle on LISTEN
    job = await enqueue(runs_table, "test.record", {"label": "ping"})
    await wait_until(lambda: _status_is(runs_table, job.id, TaskStatus.COMPLETED),
                     within=5, what="a notified job")


def _seconds(value: float) -> Any:
    from datetime import timedelta

    return timedelta(seconds=value)

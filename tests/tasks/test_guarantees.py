"""The queue's guarantees, with real ``roost worker`` processes on the test database."""

from __future__ import annotations

import asyncio
import itertools
import signal
from datetime import UTC, datetime, timedelta
from typing import Any

from roost.db.engine import Database
from roost.tasks import service
from roost.tasks.models import TaskPriority
from tests.support.sql import fetch, scalar
from tests.tasks.conftest import StartProcess
from tests.tasks.support import enqueue, wait_until

RANK = {p.value: i for i, p in enumerate(TaskPriority)}


async def _all_done(database: Database, task_type: str, n: int) -> bool:
    done = await scalar(database, "SELECT count(*) FROM background_tasks WHERE task_type = :t"
                        " AND status = 'completed'", t=task_type)
    return bool(done == n)


async def test_a_job_whose_worker_is_killed_runs_again(
    runs_table: Database, worker_process: StartProcess
) -> None:
    first = worker_process()
    await first.wait_started()
    job = await enqueue(runs_table, "test.slow_first", {"label": "victim"})
    await wait_until(lambda: scalar(runs_table, "SELECT count(*) FROM task_test_runs"),
                     what="first attempt to start")
    first.signal(signal.SIGKILL)  # mid-job: no chance to release or record anything
    assert await first.wait_exit() == -signal.SIGKILL

    second = worker_process()
    await second.wait_started()
    await wait_until(lambda: _all_done(runs_table, "test.slow_first", 1), within=20,
                     what="the job to complete on the second worker")
    task = (await fetch(runs_table, "SELECT attempts, retry_count, retry_history, result"
                        " FROM background_tasks WHERE id = :id", id=job.id))[0]
    assert task.attempts == 2 and task.retry_count == 1
    assert task.retry_history[0]["outcome"] == "lease_expired"
    assert task.retry_history[0]["worker_id"].split(":")[1] == str(first.pid)
    runs = await fetch(runs_table, "SELECT pid, attempt, finished_at FROM task_test_runs"
                       " ORDER BY id")
    assert [(r.pid, r.attempt) for r in runs] == [(first.pid, 1), (second.pid, 2)]
    assert runs[0].finished_at is None and runs[1].finished_at is not None


async def test_three_workers_never_run_one_job_twice(
    runs_table: Database, worker_process: StartProcess
) -> None:
    workers = [worker_process("--concurrency", "3") for _ in range(3)]
    for w in workers:
        await w.wait_started()
    async with runs_table.transaction() as session:
        await service.enqueue_many(session, "test.record",
                                   [{"label": str(i), "sleep": 0.03} for i in range(90)])
    await wait_until(lambda: _all_done(runs_table, "test.record", 90), within=60,
                     what="90 jobs")
    runs = await fetch(runs_table, "SELECT task_id, pid, started_at, finished_at"
                       " FROM task_test_runs")
    assert len(runs) == 90
    assert len({r.task_id for r in runs}) == 90  # each job ran exactly once
    assert len({r.pid for r in runs}) >= 2  # and the work was actually shared
    # Each worker ran at most 3 jobs at a time: its concurrency.
    for pid in {r.pid for r in runs}:
        mine = [r for r in runs if r.pid == pid]
        for r in mine:
            overlapping = [o for o in mine if o.started_at <= r.started_at < o.finished_at]
            assert len(overlapping) <= 3


async def test_a_worker_takes_jobs_by_priority_then_scheduled_at(
    runs_table: Database, worker_process: StartProcess
) -> None:
    base = datetime.now(UTC) - timedelta(minutes=5)
    priorities = ["low", "critical", "background", "normal", "high"]
    async with runs_table.transaction() as session:
        for i, priority in enumerate(itertools.islice(itertools.cycle(priorities), 20)):
            await service.enqueue(session, "test.record", {"label": f"{priority}-{i}"},
                                  priority=priority, scheduled_at=base + timedelta(seconds=19 - i))
    worker = worker_process("--concurrency", "1")
    await worker.wait_started()
    await wait_until(lambda: _all_done(runs_table, "test.record", 20), within=30,
                     what="20 jobs")
    rows = await fetch(runs_table, "SELECT b.priority::text, b.scheduled_at FROM task_test_runs r"
                       " JOIN background_tasks b ON b.id = r.task_id ORDER BY r.started_at")
    order = [(RANK[r[0]], r[1]) for r in rows]
    assert order == sorted(order)


async def test_no_job_starts_before_its_scheduled_at(
    runs_table: Database, worker_process: StartProcess
) -> None:
    workers = [worker_process("--concurrency", "4") for _ in range(2)]
    for w in workers:
        await w.wait_started()
    now = datetime.now(UTC)
    async with runs_table.transaction() as session:
        for i in range(12):
            await service.enqueue(session, "test.record", {"label": str(i)},
                                  scheduled_at=now + timedelta(milliseconds=300 + 150 * i))
    await wait_until(lambda: _all_done(runs_table, "test.record", 12), within=30,
                     what="12 scheduled jobs")
    rows = await fetch(runs_table, "SELECT r.started_at, b.scheduled_at FROM task_test_runs r"
                       " JOIN background_tasks b ON b.id = r.task_id")
    assert len(rows) == 12
    for started_at, scheduled_at in rows:
        assert started_at >= scheduled_at
        # Found by polling (0.2 s here), well before a minute of lateness.
        assert (started_at - scheduled_at).total_seconds() < 2


async def test_a_poison_job_ends_in_the_dead_letters_and_the_worker_lives_on(
    runs_table: Database, worker_process: StartProcess
) -> None:
    worker = worker_process()
    await worker.wait_started()
    async with runs_table.transaction() as session:
        failing = await service.enqueue(session, "test.fail", {"label": "poison"})
        exiting = await service.enqueue(session, "test.exit", {})
    await wait_until(lambda: scalar(runs_table, "SELECT count(*) = 2 FROM dead_letter_queue"),
                     within=20, what="two dead letters")
    letter = (await fetch(runs_table, "SELECT error_message, error_stack, retry_history"
                          " FROM dead_letter_queue WHERE original_task_id = :id",
                          id=failing.id))[0]
    assert letter.error_message == "ValueError: boom on attempt 3"
    assert "Traceback" in letter.error_stack
    assert [h["outcome"] for h in letter.retry_history] == ["error"] * 3
    assert await scalar(runs_table, "SELECT status::text FROM background_tasks WHERE id = :id",
                        id=exiting.id) == "dead_letter"
    assert worker.proc.poll() is None  # SystemExit in a handler did not end the process
    await enqueue(runs_table, "test.record", {"label": "after"})
    await wait_until(lambda: _all_done(runs_table, "test.record", 1), what="a later job")


async def test_a_schedule_fires_once_per_period_with_three_workers(
    runs_table: Database, worker_process: StartProcess
) -> None:
    # The workers also fire and run every domain's real periodic jobs (all due at start;
    # some load models): bound how long they drain on SIGTERM, then release.
    workers = [worker_process("--import", "tests.tasks.schedule_handlers", "--schedules",
                              "--shutdown-timeout", "5")
               for _ in range(3)]
    for w in workers:
        await w.wait_started()
    await asyncio.sleep(4.5)
    for w in workers:
        w.signal(signal.SIGTERM)
    for w in workers:
        assert await w.wait_exit(within=60) == 0
    rows = await fetch(runs_table, "SELECT idempotency_key, status::text, id FROM background_tasks"
                       " WHERE idempotency_key LIKE 'schedule:test.every_second:%'"
                       " ORDER BY idempotency_key")
    periods = [datetime.fromisoformat(r[0].split(":", 3)[3]) for r in rows]
    assert len(periods) >= 4
    assert len(set(periods)) == len(periods)
    # One job per one-second period, none skipped while the workers ran.
    assert all((b - a) == timedelta(seconds=1) for a, b in itertools.pairwise(periods))
    runs = await fetch(runs_table, "SELECT task_id, count(*) FROM task_test_runs"
                       " WHERE label = 'tick' GROUP BY task_id")
    assert all(n == 1 for _, n in runs)
    # Every fired period's job ran, or is still waiting for a worker (enqueued just before
    # the shutdown, or released by it): none lost, failed or left "running".  How many
    # wait depends on the machine's load at SIGTERM (one per worker at most).
    statuses = [r[1] for r in rows]
    assert set(statuses) <= {"completed", "pending", "queued"}, statuses
    assert statuses.count("completed") >= len(rows) - len(workers), statuses


async def test_sigterm_finishes_in_flight_jobs_and_exits(
    runs_table: Database, worker_process: StartProcess
) -> None:
    worker = worker_process()
    await worker.wait_started()
    job = await enqueue(runs_table, "test.record", {"label": "finish", "sleep": 1.0})
    await wait_until(lambda: scalar(runs_table, "SELECT count(*) FROM task_test_runs"),
                     what="job start")
    worker.signal(signal.SIGTERM)
    assert await worker.wait_exit() == 0
    status = await scalar(runs_table, "SELECT status::text FROM background_tasks WHERE id = :id",
                          id=job.id)
    assert status == "completed"
    assert "worker_stopped" in worker.output()


async def test_sigterm_releases_jobs_that_do_not_finish_in_time(
    runs_table: Database, worker_process: StartProcess
) -> None:
    worker = worker_process("--shutdown-timeout", "0.3")
    await worker.wait_started()
    job = await enqueue(runs_table, "test.record", {"label": "long", "sleep": 60})
    await wait_until(lambda: scalar(runs_table, "SELECT count(*) FROM task_test_runs"),
                     what="job start")
    worker.signal(signal.SIGTERM)
    assert await worker.wait_exit(within=15) == 0
    row: Any = (await fetch(runs_table, "SELECT status::text, retry_count, retry_history,"
                            " worker_id FROM background_tasks WHERE id = :id", id=job.id))[0]
    assert row.status == "queued" and row.retry_count == 0
    assert row.retry_history[-1]["outcome"] == "released"

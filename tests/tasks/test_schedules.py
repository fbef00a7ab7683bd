"""Schedules: periods, registration rules, and one firing per period under contention."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit.models import AuditLog
from roost.db.engine import Database
from roost.tasks import schedules
from roost.tasks.handlers import TaskType
from roost.tasks.schedules import Schedule, fire_due, register_schedule, sync_schedules
from tests.support.sql import fetch
from tests.tasks import handlers  # noqa: F401  (registers test.record)
from tests.tasks.conftest import StartWorker
from tests.tasks.support import wait_until


def test_interval_periods_are_aligned_on_the_epoch() -> None:
    s = Schedule(name="s", task_type="t", every=timedelta(minutes=15))
    now = datetime(2026, 3, 1, 10, 37, 12, tzinfo=UTC)
    assert s.period_start(now) == datetime(2026, 3, 1, 10, 30, tzinfo=UTC)
    assert s.next_after(now) == datetime(2026, 3, 1, 10, 45, tzinfo=UTC)
    assert s.first_run(now) == s.period_start(now)  # intervals fire their current period


def test_cron_periods() -> None:
    s = Schedule(name="s", task_type="t", cron="0 3 * * *")
    now = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    assert s.period_start(now) == datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
    assert s.next_after(now) == datetime(2026, 3, 2, 3, 0, tzinfo=UTC)
    exactly = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)
    assert s.period_start(exactly) == exactly
    assert s.first_run(now) == datetime(2026, 3, 2, 3, 0, tzinfo=UTC)  # cron waits


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one"),
        ({"every": timedelta(seconds=5), "cron": "* * * * *"}, "exactly one"),
        ({"every": timedelta(milliseconds=500)}, "whole number"),
        ({"cron": "every tuesday"}, "not a valid"),
        # croniter reads a 6th field as seconds: this one would fire every second.
        ({"cron": "* * * * * *"}, "not a valid 5-field"),
        ({"cron": "0 0 * * * 0 0"}, "not a valid 5-field"),
        ({"cron": "0 0 30 2 *"}, "never fires"),  # 30 February
        ({"cron": "0 0 31 4 *"}, "never fires"),
        # croniter's R draws a new time at each call: periods would differ per worker and
        # per tick, and one period fire several times.
        ({"cron": "R * * * *"}, "random"),
        ({"cron": "0 r * * *"}, "random"),
        ({"cron": "R(0-29)/10 * * * *"}, "random"),
        ({"cron": "0 0 * * R"}, "random"),
        # Valid (every minute, listed) but longer than task_schedules.cron holds: every
        # sync failed and it never fired.
        ({"cron": ",".join(str(m) for m in range(60)) + " * * * *"}, "at most 120 characters"),
    ],
)
def test_bad_schedules_are_refused(kwargs: dict[str, object], message: str) -> None:
    try:
        with pytest.raises(ValueError, match=message):
            register_schedule("bad", "test.record", **kwargs)  # type: ignore[arg-type]
    finally:
        schedules.unregister_schedule("bad")


@pytest.mark.parametrize("cron", ["0 3 * * *", "@daily", "0 0 29 2 *", "0 0 L 2 *",
                                  "0 9 1 mar,apr *", "0 9 * * fri"])
def test_five_field_and_alias_crons_are_accepted(cron: str) -> None:
    try:
        assert register_schedule("good", "test.record", cron=cron).cron == cron
    finally:
        schedules.unregister_schedule("good")


async def test_a_failing_schedule_does_not_stop_the_others(
    runs_table: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A schedule that fails (here a cron that never fires, slipped past registration) is
    logged and skipped, at sync and at each tick; the other schedules are written and fire."""
    register_schedule("test.good", "test.record", every=timedelta(hours=1),
                      payload={"label": "good"})
    monkeypatch.setitem(schedules._schedules, "test.bad",
                        Schedule(name="test.bad", task_type="test.record", cron="0 0 30 2 *"))
    try:
        await sync_schedules(runs_table)
        names = {r[0] for r in await fetch(runs_table, "SELECT name FROM task_schedules")}
        assert "test.good" in names and "test.bad" not in names
        # Its row written by hand (as by an older release), due now.
        await fetch(runs_table, "INSERT INTO task_schedules (id, name, task_type, queue,"
                    " priority, payload, cron, next_run_at, created_at, updated_at)"
                    " VALUES (gen_random_uuid(), 'test.bad', 'test.record', 'default',"
                    " 'normal', '{}', '0 0 30 2 *', now() - interval '1 minute', now(), now())"
                    " RETURNING name")
        await fire_due(runs_table)
        fired = await fetch(runs_table, "SELECT idempotency_key FROM background_tasks"
                            " WHERE idempotency_key LIKE 'schedule:test.%'")
        assert [r[0].split(":")[1] for r in fired] == ["test.good"]
        bad = (await fetch(runs_table, "SELECT next_run_at > now() FROM task_schedules"
                           " WHERE name = 'test.bad'"))[0][0]
        assert bad  # retried later, not at every tick
    finally:
        schedules.unregister_schedule("test.good")


@pytest.fixture
def fast_schedule() -> Iterator[str]:
    name = "test.contended"
    register_schedule(name, "test.record", every=timedelta(seconds=1), payload={"label": "c"})
    yield name
    schedules.unregister_schedule(name)


async def test_concurrent_ticks_fire_each_period_once(
    runs_table: Database, fast_schedule: str
) -> None:
    await asyncio.gather(*(sync_schedules(runs_table) for _ in range(4)))
    deadline = asyncio.get_running_loop().time() + 2.6
    while asyncio.get_running_loop().time() < deadline:
        # Eight concurrent "workers" tick at once, repeatedly.
        await asyncio.gather(*(fire_due(runs_table) for _ in range(8)))
        await asyncio.sleep(0.05)
    rows = await fetch(runs_table, "SELECT idempotency_key FROM background_tasks"
                       " WHERE idempotency_key LIKE :k ORDER BY 1", k=f"schedule:{fast_schedule}:%")
    periods = [datetime.fromisoformat(r[0].split(":", 3)[3]) for r in rows]
    assert 2 <= len(periods) <= 4
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(periods))
    state = (await fetch(runs_table, "SELECT last_task_id, next_run_at, last_run_at"
                         " FROM task_schedules WHERE name = :n", n=fast_schedule))[0]
    assert state.last_task_id is not None and state.next_run_at > state.last_run_at


async def test_changing_the_period_resets_the_timing(runs_table: Database) -> None:
    name = "test.changing"
    register_schedule(name, "test.record", cron="0 0 1 1 *")
    try:
        await sync_schedules(runs_table)
        first = (await fetch(runs_table, "SELECT next_run_at FROM task_schedules"
                             " WHERE name = :n", n=name))[0][0]
        assert first.month == 1 and first.day == 1
        await sync_schedules(runs_table)  # same spec: untouched
        again = (await fetch(runs_table, "SELECT next_run_at FROM task_schedules"
                             " WHERE name = :n", n=name))[0][0]
        assert again == first
        schedules.unregister_schedule(name)
        register_schedule(name, "test.record", every=timedelta(hours=1))
        await sync_schedules(runs_table)
        changed = (await fetch(runs_table, "SELECT next_run_at, interval_seconds, cron"
                               " FROM task_schedules WHERE name = :n", n=name))[0]
        assert changed.interval_seconds == 3600 and changed.cron is None
        assert changed.next_run_at <= datetime.now(UTC)  # fires its current hour at once
    finally:
        schedules.unregister_schedule(name)


async def test_audit_retention_job(runs_table: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    from roost.config import get_settings
    from roost.tasks import jobs
    from roost.tasks.handlers import TaskContext

    ctx = TaskContext(task_id=__import__("uuid").uuid4(), task_type="audit.retention",
                      queue="maintenance", priority="background", attempt=1, retry_count=0,
                      max_retries=2, scheduled_at=datetime.now(UTC), worker_id="t",
                      database=runs_table)
    monkeypatch.delenv("ROOST_AUDIT_RETENTION_DAYS", raising=False)
    get_settings.cache_clear()
    try:
        assert "skipped" in await jobs.audit_retention(ctx, {})
        async with runs_table.transaction() as session:
            old = datetime.now(UTC) - timedelta(days=40)
            await record(session, "test.old", created_at=old)
        async with runs_table.transaction() as session:
            await record(session, "test.recent")
        monkeypatch.setenv("ROOST_AUDIT_RETENTION_DAYS", "30")
        get_settings.cache_clear()
        assert await jobs.audit_retention(ctx, {}) == {"deleted": 1, "retention_days": 30}
        actions = [r[0] for r in await fetch(runs_table, "SELECT action FROM audit_logs"
                                             " ORDER BY seq")]
        assert actions == ["test.recent", "audit.retention"]
    finally:
        get_settings.cache_clear()


async def record(session: AsyncSession, action: str, created_at: datetime | None = None) -> None:
    """An audit record, backdated when asked (the chain trigger keeps created_at)."""
    session.add(AuditLog(action=action, **({"created_at": created_at} if created_at else {})))
    await session.flush()


async def test_prune_deletes_old_finished_jobs_only(
    runs_table: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from roost.tasks import jobs, service
    from roost.tasks.handlers import TaskContext

    async with runs_table.transaction() as session:
        ids = [(await service.enqueue(session, "test.noop", {"i": i})).id for i in range(4)]
    async with runs_table.transaction() as session:
        from sqlalchemy import text

        # old completed, old cancelled, recent completed, old dead letter
        for task_id, status, age in zip(ids, ("completed", "cancelled", "completed",
                                              "dead_letter"), (20, 20, 1, 20), strict=True):
            await session.execute(text(
                "UPDATE background_tasks SET status = CAST(:s AS task_status),"
                " completed_at = now() - make_interval(days => :d) WHERE id = :id"),
                {"s": status, "d": age, "id": task_id})
    monkeypatch.setenv("ROOST_WORKER_COMPLETED_RETENTION_DAYS", "14")
    ctx = TaskContext(task_id=ids[0], task_type="tasks.prune", queue="maintenance",
                      priority="background", attempt=1, retry_count=0, max_retries=2,
                      scheduled_at=datetime.now(UTC), worker_id="t", database=runs_table)
    assert await jobs.prune_finished(ctx, {}) == {"deleted": 2, "retention_days": 14}
    left = {r[0] for r in await fetch(runs_table, "SELECT id FROM background_tasks")}
    assert left == {ids[2], ids[3]}


@pytest.mark.parametrize("options", [
    pytest.param({"every": timedelta(seconds=2**31)}, id="interval-beyond-int4-seconds"),
    pytest.param({"every": timedelta(days=999_999_999)}, id="interval-huge"),
    pytest.param({"every": timedelta(minutes=5), "payload": {"a": "\x00"}}, id="payload-nul"),
    pytest.param({"every": timedelta(minutes=5), "queue": "q" * 65}, id="queue-too-long"),
    pytest.param({"every": timedelta(minutes=5), "queue": " q"}, id="queue-spaced"),
    pytest.param({"every": timedelta(minutes=5), "queue": "q\x00"}, id="queue-nul"),
])
def test_a_schedule_no_worker_could_store_is_refused_at_registration(
    options: dict[str, object],
) -> None:
    """What task_schedules cannot hold (an int4 interval, jsonb without NUL, a 64-character
    queue) would fail at every worker's sync and never fire: a ValueError up front, as for
    a cron expression that never fires."""
    with pytest.raises(ValueError, match="unstorable"):
        register_schedule("unstorable", "test.record", **options)  # type: ignore[arg-type]
    assert "unstorable" not in schedules._schedules


@pytest.mark.parametrize("name", [
    pytest.param("unstorable.\x00x", id="nul"),
    pytest.param("unstorable.\udcff", id="lone-surrogate"),
    pytest.param(" unstorable ", id="surrounding-spaces"),
])
def test_a_schedule_name_no_worker_could_store_is_refused(name: str) -> None:
    """task_schedules.name cannot hold a NUL or a lone surrogate: every worker's sync would
    fail (schedule_sync_failed) and the schedule never fire."""
    try:
        with pytest.raises(ValueError, match="schedule name"):
            register_schedule(name, "test.record", every=timedelta(hours=1))
    finally:
        schedules.unregister_schedule(name)


@pytest.mark.parametrize(("task_type", "payload", "message"), [
    pytest.param("test.small", {"blob": "x" * 2000}, "at most 1024 bytes", id="too-large"),
    pytest.param("test.typed", {"name": ""}, "does not match", id="not-its-model"),
])
def test_a_schedule_whose_payload_its_task_type_refuses_is_refused(
    task_type: str, payload: dict[str, object], message: str
) -> None:
    """A payload the registered task type refuses at every enqueue (over its
    max_payload_bytes, or not its payload_model) would fail at every tick, forever: a
    ValueError at registration, by the enqueue's own check."""
    try:
        with pytest.raises(ValueError, match=message):
            register_schedule("unenqueueable", task_type, every=timedelta(hours=1),
                              payload=payload)
    finally:
        schedules.unregister_schedule("unenqueueable")


def test_periodic_refuses_a_payload_its_own_task_type_refuses() -> None:
    from roost.tasks.handlers import TaskContext, unregister
    from roost.tasks.schedules import periodic

    async def handler(ctx: TaskContext, payload: dict[str, object]) -> None:
        return None

    try:
        with pytest.raises(ValueError, match="at most 16 bytes"):
            periodic("test.periodic_small", every=timedelta(hours=1), payload={"a": "x" * 50},
                     max_payload_bytes=16)(handler)
    finally:
        schedules.unregister_schedule("test.periodic_small")
        unregister("test.periodic_small")


async def test_a_changed_schedule_fires_its_current_period_at_once(runs_table: Database) -> None:
    """Changing the timing restarts it: an interval schedule's current period fires at
    once, though the old spec fired a period starting at the same time (the job's key
    names the spec, so the new job is not taken for the old one)."""
    name = "test.respecified"
    # Hourly both ways: the two specs' current periods are the same hour.
    before_the_hour = (await fetch(runs_table, "SELECT 3600 - extract(epoch FROM now())::int"
                                   " % 3600"))[0][0]
    if before_the_hour < 10:
        await asyncio.sleep(before_the_hour + 1)
    register_schedule(name, "test.record", cron="0 * * * *", payload={"label": "old"})
    try:
        await sync_schedules(runs_table)
        await fetch(runs_table, "UPDATE task_schedules SET next_run_at = now()"  # its time came
                    " WHERE name = :n RETURNING name", n=name)
        await fire_due(runs_table)
        schedules.unregister_schedule(name)
        register_schedule(name, "test.record", every=timedelta(hours=1),
                          payload={"label": "new"})
        await sync_schedules(runs_table)  # the timing changed: its current hour is due
        await fire_due(runs_table)
        rows = await fetch(runs_table, "SELECT payload->>'label', idempotency_key"
                           " FROM background_tasks WHERE idempotency_key LIKE :k ORDER BY id",
                           k=f"schedule:{name}:%")
        assert [r[0] for r in rows] == ["old", "new"]
        periods = {datetime.fromisoformat(r[1].split(":", 3)[3]) for r in rows}
        assert len(periods) == 1  # the same hour, once per spec
    finally:
        schedules.unregister_schedule(name)


async def test_a_schedule_whose_sync_failed_is_written_again_later(
    runs_table: Database, start_worker: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A schedule whose row could not be written at the worker's start (a lock timeout)
    is tried again FIRE_RETRY later (a minute; a second here), until it is written."""
    real = schedules._write_schedule
    failures = 0

    async def flaky_write(session: AsyncSession, s: Schedule, tt: TaskType,
                          now: datetime) -> None:
        nonlocal failures
        if s.name == "test.resynced" and failures < 2:
            failures += 1
            raise RuntimeError("transient: lock timeout")
        await real(session, s, tt, now)

    monkeypatch.setattr(schedules, "_write_schedule", flaky_write)
    monkeypatch.setattr(schedules, "FIRE_RETRY", timedelta(seconds=1))
    register_schedule("test.resynced", "test.record", every=timedelta(hours=1),
                      payload={"label": "resynced"})
    try:
        await start_worker(schedules=True, queues=("test-nothing",))

        async def written() -> bool:
            return bool(await fetch(runs_table, "SELECT 1 FROM task_schedules"
                                    " WHERE name = 'test.resynced'"))

        await wait_until(written, within=20, interval=0.2, what="the schedule's row")
        assert failures == 2

        async def fired() -> bool:  # and it fires its current period
            return bool(await fetch(runs_table, "SELECT 1 FROM background_tasks"
                                    " WHERE idempotency_key LIKE 'schedule:test.resynced:%'"))

        await wait_until(fired, within=20, interval=0.2, what="its first period's job")
    finally:
        schedules.unregister_schedule("test.resynced")


async def test_a_worker_with_an_older_spec_keeps_the_rows_timing(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rolling deploy: a new worker wrote the row as cron `30 * * * *`; an old worker still
    registers the same name as every=1h.  When the old worker fires the row, the job's
    period and the next run are the row's (a :30), as the job key's spec digest is: it
    keyed a :00 period the row never has and moved next_run_at to a :00, and the new
    worker fired the :30 period again (two jobs in one period)."""
    name = "test.rolling"
    register_schedule(name, "test.record", cron="30 * * * *", payload={"label": "r"})
    try:
        await sync_schedules(database)
        await fetch(database, "UPDATE task_schedules SET next_run_at = now() WHERE name = :n"
                    " RETURNING 1", n=name)
        old = schedules.Schedule(name=name, task_type="test.record", every=timedelta(hours=1),
                                 payload={"label": "r"})
        monkeypatch.setitem(schedules._schedules, name, old)  # the old worker's registry
        await fire_due(database)
        key = (await fetch(database, "SELECT idempotency_key FROM background_tasks"
                           " WHERE idempotency_key LIKE :k", k=f"schedule:{name}:%"))[0][0]
        next_run = (await fetch(database, "SELECT next_run_at FROM task_schedules"
                                " WHERE name = :n", n=name))[0][0]
        period = datetime.fromisoformat(key.split(":", 3)[3])
        assert (period.minute, next_run.minute) == (30, 30), (key, next_run)
    finally:
        schedules.unregister_schedule(name)

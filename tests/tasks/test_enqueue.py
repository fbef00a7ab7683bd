"""Enqueue: joins the caller's transaction, idempotency, validation, NOTIFY at commit."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from sqlalchemy import func, select

from roost.db.engine import Database
from roost.errors import Conflict, PayloadTooLarge, Unprocessable
from roost.tasks import service
from roost.tasks.models import BackgroundTask, TaskPriority, TaskStatus
from roost.tasks.worker import asyncpg_dsn
from tests.tasks import handlers  # registers the test task types


async def _count(database: Database) -> int:
    async with database.transaction() as session:
        return int((await session.execute(
            select(func.count()).select_from(BackgroundTask))).scalar_one())


async def test_a_job_exists_only_if_the_caller_commits(database: Database) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with database.transaction() as session:
            await service.enqueue(session, "test.noop", {"n": 1})
            raise Boom
    assert await _count(database) == 0

    async with database.transaction() as session:
        task = await service.enqueue(session, "test.noop", {"n": 2})
    assert await _count(database) == 1
    async with database.transaction() as session:
        stored = await session.get(BackgroundTask, task.id)
    assert stored is not None
    assert stored.status == TaskStatus.PENDING
    assert stored.payload == {"n": 2}
    assert stored.priority == TaskPriority.NORMAL
    assert stored.max_retries == 0  # the task type's default
    assert stored.queue == "default"
    assert stored.id.version == 7


async def test_defaults_come_from_the_task_type_and_can_be_overridden(database: Database) -> None:
    when = datetime.now(UTC) + timedelta(hours=1)
    async with database.transaction() as session:
        task = await service.enqueue(
            session, "test.flaky", {"succeed_on": 1}, priority="critical", scheduled_at=when,
            max_retries=7, queue="llm",
        )
    assert (task.priority, task.max_retries, task.queue) == (TaskPriority.CRITICAL, 7, "llm")
    assert abs((task.scheduled_at - when).total_seconds()) < 0.001


async def test_duplicate_idempotency_key_returns_the_existing_job(database: Database) -> None:
    async with database.transaction() as session:
        first = await service.enqueue(session, "test.noop", {"v": 1}, idempotency_key="k-1")
    async with database.transaction() as session:
        again, created = await service.enqueue_or_existing(session, "test.noop", {"v": 2},
                                                           idempotency_key="k-1")
    assert not created
    assert again.id == first.id
    assert again.payload == {"v": 1}
    assert await _count(database) == 1
    # A different task type under the same key is a conflict, not a silent no-op.
    async with database.transaction() as session:
        with pytest.raises(Conflict):
            await service.enqueue(session, "test.record", {}, idempotency_key="k-1")


async def test_concurrent_enqueues_with_one_key_make_one_job(database: Database) -> None:
    async def attempt() -> uuid.UUID:
        async with database.transaction() as session:
            task = await service.enqueue(session, "test.noop", {}, idempotency_key="race")
            await asyncio.sleep(0.05)  # hold the transaction so the others must wait
            return task.id

    ids = await asyncio.gather(*(attempt() for _ in range(5)))
    assert len(set(ids)) == 1
    assert await _count(database) == 1


async def test_unknown_task_type_is_rejected(database: Database) -> None:
    async with database.transaction() as session:
        with pytest.raises(Unprocessable, match=r"unknown task type 'nope\.nothing'"):
            await service.enqueue(session, "nope.nothing", {})


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"x": float("nan")}, "NaN"),
        ({"x": {1, 2}}, "not JSON"),
        ({"x": "a\x00b"}, "NUL"),
        ({"x": "\ud800"}, "not valid Unicode"),
        ({1: "x"}, "not a string"),
        (["not", "an", "object"], "JSON object"),
        # More than 4300 digits: json.dumps refuses it (a bare ValueError was a 500).
        ({"n": 10**5000}, "cannot be written as JSON"),
    ],
)
async def test_malformed_payloads_are_rejected(
    database: Database, payload: object, message: str
) -> None:
    async with database.transaction() as session:
        with pytest.raises(Unprocessable, match=message):
            await service.enqueue(session, "test.noop", payload)  # type: ignore[arg-type]


async def test_deeply_nested_payload_is_rejected(database: Database) -> None:
    nested: dict[str, object] = {}
    cursor = nested
    for _ in range(200):
        cursor["a"] = {}
        cursor = cursor["a"]  # type: ignore[assignment]
    async with database.transaction() as session:
        with pytest.raises(Unprocessable, match="nested deeper"):
            await service.enqueue(session, "test.noop", nested)


async def test_oversized_payload_is_rejected(database: Database) -> None:
    async with database.transaction() as session:
        with pytest.raises(PayloadTooLarge, match="at most 1024 bytes"):
            await service.enqueue(session, "test.small", {"blob": "x" * 2000})
        await service.enqueue(session, "test.small", {"blob": "x" * 900})


async def test_payload_model_is_validated_at_enqueue(database: Database) -> None:
    async with database.transaction() as session:
        with pytest.raises(Unprocessable, match="schema") as info:
            await service.enqueue(session, "test.typed", {"name": "", "times": 9})
        locs = {tuple(e["loc"]) for e in info.value.extra["errors"]}
        assert locs == {("name",), ("times",)}
        task = await service.enqueue(session, "test.typed", handlers.Greeting(name="ada"))
    assert task.payload == {"name": "ada", "times": 1}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"priority": "urgent"},
        {"max_retries": -1},
        {"max_retries": 101},
        {"queue": ""},
        {"queue": " padded "},
        {"queue": "a\x00b"},
        {"idempotency_key": ""},
        {"scheduled_at": datetime(2030, 1, 1)},  # naive on purpose
        {"scheduled_at": datetime.now(UTC), "delay": timedelta(seconds=1)},
    ],
)
async def test_bad_options_are_rejected(database: Database, kwargs: dict[str, object]) -> None:
    async with database.transaction() as session:
        with pytest.raises(Unprocessable):
            await service.enqueue(session, "test.noop", {}, **kwargs)  # type: ignore[arg-type]


async def test_enqueue_many_inserts_in_one_statement(database: Database) -> None:
    async with database.transaction() as session:
        ids = await service.enqueue_many(session, "test.noop", [{"i": i} for i in range(250)],
                                         priority="low")
    assert len(ids) == 250
    async with database.transaction() as session:
        rows = (await session.scalars(select(BackgroundTask).where(BackgroundTask.id.in_(ids)))).all()
    assert {r.payload["i"] for r in rows} == set(range(250))
    assert {r.priority for r in rows} == {TaskPriority.LOW}
    async with database.transaction() as session:
        with pytest.raises(Unprocessable):
            await service.enqueue_many(session, "test.noop", [{"ok": 1}, {"bad": float("inf")}])


async def test_workers_are_notified_at_commit_only(database: Database) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(database))
    received: list[str] = []
    await conn.add_listener(service.NOTIFY_CHANNEL, lambda *args: received.append(args[3]))
    try:
        async with database.transaction() as session:
            await service.enqueue(session, "test.noop", {}, queue="alpha")
            await service.enqueue(session, "test.noop", {}, queue="alpha")
            await service.enqueue(session, "test.noop", {}, queue="beta")
            # Later jobs are found by polling, not announced.
            await service.enqueue(session, "test.noop", {}, queue="gamma",
                                  delay=timedelta(hours=1))
            await asyncio.sleep(0.2)
            assert received == []  # nothing before commit
        for _ in range(40):
            if len(received) >= 2:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)
        assert sorted(received) == ["alpha", "beta"]
    finally:
        await conn.close()

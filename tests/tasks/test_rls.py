"""Row-level security of the queue tables (migration 0410): raw SQL as ``roost_app``."""

from __future__ import annotations

import json
import uuid
from functools import partial

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from roost.db.engine import Database
from roost.errors import Conflict
from roost.identity.tenancy import apply_principal
from roost.principal import Principal
from roost.tasks import service
from roost.tasks.models import TaskStatus
from tests.support.identity import make_user
from tests.support.sql import scalar
from tests.tasks.conftest import StartWorker
from tests.tasks.support import wait_until

QUEUE_TABLES = ("background_tasks", "dead_letter_queue", "task_schedules", "embedding_models")


def _as(user_id: uuid.UUID, *, admin: bool = False) -> Principal:
    return Principal(user_id=user_id, is_admin=admin, kind="session")


async def _count(session: AsyncSession, table: str) -> int:
    return int((await session.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def test_a_user_sees_only_their_own_jobs_and_no_queue_internals(
    runs_table: Database, start_worker: StartWorker, client: httpx.AsyncClient,
) -> None:
    database = runs_table
    alice, _ = await make_user(database, username="alice")
    bob, bob_headers = await make_user(database, username="bob")
    admin, admin_headers = await make_user(database, admin=True, username="root")
    # Alice enqueues in her own scope (as chat and knowledge requests do) ...
    async with database.transaction() as session:
        await apply_principal(session, _as(alice))
        mine = await service.enqueue(session, "test.record", {"label": "alice's document"},
                                     idempotency_key="alice-doc-1")
    assert mine.user_id == alice
    # ... and system work (no principal) enqueues ownerless jobs, schedules, dead letters.
    async with database.transaction() as session:
        system = await service.enqueue(session, "test.noop", {})
        await session.execute(text(
            "INSERT INTO dead_letter_queue (id, task_type, payload, error_message) "
            "VALUES (:i, 'test.fail', CAST(:p AS jsonb), 'boom')"),
            {"i": uuid.uuid4(), "p": json.dumps({"document_id": str(uuid.uuid4())})})
        await session.execute(text(
            "INSERT INTO task_schedules (id, name, task_type, interval_seconds, next_run_at) "
            "VALUES (:i, 'test.every-minute', 'test.noop', 60, now() + interval '1 hour')"),
            {"i": uuid.uuid4()})
    assert system.user_id is None

    async with database.transaction() as session:
        await apply_principal(session, _as(bob))
        for table in QUEUE_TABLES:
            assert await _count(session, table) == 0, table
        for statement in ("UPDATE background_tasks SET payload = '{}'",
                          "DELETE FROM background_tasks", "UPDATE task_schedules SET enabled = false",
                          "DELETE FROM dead_letter_queue", "DELETE FROM embedding_models"):
            assert (await session.execute(text(statement))).rowcount == 0, statement  # type: ignore[attr-defined]
        # Reusing alice's idempotency key reveals nothing and is a clear conflict.
        with pytest.raises(Conflict):
            await service.enqueue(session, "test.record", {}, idempotency_key="alice-doc-1")

    async with database.transaction() as session:
        await apply_principal(session, _as(alice))
        assert (await session.scalars(text("SELECT id FROM background_tasks"))).all() == [mine.id]
        # Her own job is hers to read, not to rewrite: workers and admins change jobs.
        rewritten = await session.execute(
            text("UPDATE background_tasks SET payload = '{}' WHERE id = :i"), {"i": mine.id})
        assert rewritten.rowcount == 0  # type: ignore[attr-defined]
        for table in QUEUE_TABLES[1:]:
            assert await _count(session, table) == 0, table

    # A job owned by someone else, or by nobody (system work), cannot be planted.
    for owner in (alice, None):
        with pytest.raises(DBAPIError, match="row-level security"):
            async with database.transaction() as session:
                await apply_principal(session, _as(bob))
                await session.execute(text(
                    "INSERT INTO background_tasks (id, task_type, user_id) "
                    "VALUES (:i, 'test.noop', :o)"), {"i": uuid.uuid4(), "o": owner})

    async with database.transaction() as session:
        await apply_principal(session, _as(admin, admin=True))
        for table in QUEUE_TABLES:
            assert await _count(session, table) >= 1, table

    # The admin API still sees and manages every job; a user is still refused it.
    assert (await client.get("/api/v1/tasks", headers=bob_headers)).status_code == 403
    listed = await client.get("/api/v1/tasks", headers=admin_headers)
    assert {t["id"] for t in listed.json()["items"]} == {str(mine.id), str(system.id)}
    assert len((await client.get("/api/v1/tasks/schedules", headers=admin_headers)).json()) >= 1
    # The worker runs as the owner: RLS does not get in its way.
    await start_worker()
    for job_id in (mine.id, system.id):
        await wait_until(partial(
            scalar, database, "SELECT status = :s FROM background_tasks WHERE id = :i",
            s=TaskStatus.COMPLETED.value, i=job_id), what="completion")

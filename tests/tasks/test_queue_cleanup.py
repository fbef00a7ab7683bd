"""Operators cleaning up the queue: a schedule removed from the code can be forgotten; a
dead job's id start that is also another job's letter's is refused as ambiguous."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from roost.db.engine import Database
from roost.tasks import schedules
from roost.tasks.schedules import register_schedule, sync_schedules
from roost.tasks.worker import reap_expired
from tests.support.cli import run_roost
from tests.tasks import handlers  # noqa: F401  (registers the test task types)
from tests.tasks.support import REPO, enqueue

API = "/api/v1/tasks"


async def _run_out_lease(database: Database, task_id: uuid.UUID) -> None:
    """The job's only attempt ran out its lease: the reaper dead-letters it."""
    async with database.transaction() as session:
        await session.execute(text(
            "UPDATE background_tasks SET status = 'running', worker_id = 'w', attempts = 1,"
            " lease_expires_at = now() - interval '1 second' WHERE id = :id"), {"id": task_id})
    await reap_expired(database)


async def test_a_schedule_removed_from_code_can_be_forgotten(
    client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database
) -> None:
    """A schedule deleted from a jobs.py keeps its row (workers importing different modules
    share the table: none removes another's), never fired: an administrator forgets it
    with DELETE (there was no way but SQL)."""
    register_schedule("probe.gone", "test.record", every=timedelta(hours=1))
    try:
        await sync_schedules(database)  # a worker of the old code wrote it
    finally:
        schedules.unregister_schedule("probe.gone")
    await sync_schedules(database)  # a worker of the new code starts
    listed = {s["name"] for s in
              (await client.get(f"{API}/schedules", headers=admin_headers)).json()}
    assert "probe.gone" in listed
    gone = await client.delete(f"{API}/schedules/probe.gone", headers=admin_headers)
    assert gone.status_code == 204, gone.text
    listed = {s["name"] for s in
              (await client.get(f"{API}/schedules", headers=admin_headers)).json()}
    assert "probe.gone" not in listed
    again = await client.delete(f"{API}/schedules/probe.gone", headers=admin_headers)
    assert again.status_code == 404, again.text


async def test_cli_retry_with_a_dead_jobs_id_start_does_not_retry_another_jobs_letter(
    pg_server: Any, db_name: str, database: Database, tmp_path: Path
) -> None:
    """A start of dead job A's id (copied from `tasks ls`) that is also the start of job
    B's dead letter's id is ambiguous: refused (B was requeued: letters were matched
    first). uuid7 ids made within a minute share their leading characters."""
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
           "ROOST_DATA_DIR": str(tmp_path / "data"), "ROOST_LOG_LEVEL": "warning"}
    job_b = (await enqueue(database, "test.record", {"label": "b"}, max_retries=0)).id
    await _run_out_lease(database, job_b)
    async with database.transaction() as session:
        letter_b: uuid.UUID = (await session.execute(text(
            "SELECT id FROM dead_letter_queue WHERE original_task_id = :i"),
            {"i": job_b})).scalar_one()
    tail = "0" * 12 if str(letter_b)[24:] != "0" * 12 else "1" * 12
    job_a = uuid.UUID(str(letter_b)[:24] + tail)  # shares 23 characters with B's letter
    await enqueue(database, "test.record", {"label": "a"}, max_retries=0, job_id=job_a)
    await _run_out_lease(database, job_a)
    prefix = str(job_a)[:23]  # a unique start among jobs; among letters, only B's

    r = run_roost("tasks", "retry", prefix, env=env, cwd=REPO)
    async with database.transaction() as session:
        status_b: str = (await session.execute(text(
            "SELECT status FROM background_tasks WHERE id = :i"), {"i": job_b})).scalar_one()
    assert status_b == "dead_letter", (r.returncode, r.stdout, r.stderr)

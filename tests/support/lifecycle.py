"""What the tests of an account ended while its work is in flight
(tests/*/test_account_deleted_midway.py) share: ending the account as an administrator
does, the background jobs left behind, and the audit chain after it all."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from roost.audit import service as audit_service
from roost.db.engine import Database
from tests.support.races import no_5xx, until_none
from tests.support.sql import fetch

# How an administrator ends an account: a deletion, or the change PATCH /users/{id} makes.
CHANGES: dict[str, dict[str, Any]] = {
    "suspend": {"status": "suspended"},
    "deactivate": {"is_active": False},
    "pending": {"status": "pending_approval"},
}
OPEN_JOBS = ("SELECT count(*) FROM background_tasks "
             "WHERE status IN ('pending', 'queued', 'running', 'failed', 'stuck')")
FINISHED_JOB = ("completed", "dead_letter", "cancelled")


async def end_account(client: httpx.AsyncClient, admin_headers: dict[str, str],
                      user_id: uuid.UUID, how: str = "delete") -> None:
    """Delete the account (``how="delete"``) or make the ``CHANGES[how]`` change to it,
    through the administrator's API: a 204 or a 200."""
    url = f"/api/v1/users/{user_id}"
    if how == "delete":
        answer = await client.delete(url, headers=admin_headers)
    else:
        answer = await client.patch(url, json=CHANGES[how], headers=admin_headers)
    no_5xx(answer)
    assert answer.status_code == (204 if how == "delete" else 200), answer.text


async def jobs(database: Database, task_type: str = "%") -> list[tuple[Any, ...]]:
    """(task_type, status, attempts, error) of the background jobs whose type is LIKE
    ``task_type``, oldest first."""
    return [tuple(r) for r in await fetch(
        database, "SELECT task_type, status, attempts, left(error_message, 300) "
                  "FROM background_tasks WHERE task_type LIKE :t ORDER BY created_at",
        t=task_type)]


async def no_open_jobs(database: Database, within: float = 15) -> None:
    """Every background job finished (given ``within`` s to)."""
    assert await until_none(database, OPEN_JOBS, within=within) == 0, await jobs(database)


async def job_once_finished(database: Database, task_id: str,
                            within: float = 20) -> tuple[Any, ...]:
    """(status, attempts, error) of the job once it has finished (or after ``within`` s)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        [row] = await fetch(database, "SELECT status, attempts, left(error_message, 300) "
                                      "FROM background_tasks WHERE id = CAST(:t AS uuid)",
                            t=task_id)
        if row[0] in FINISHED_JOB or asyncio.get_running_loop().time() > deadline:
            return tuple(row)
        await asyncio.sleep(0.2)


async def assert_audit_chain_intact(database: Database) -> None:
    async with database.transaction() as session:
        report = await audit_service.verify_chain(session)
    assert report.ok, report

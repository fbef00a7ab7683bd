"""Deleting a schedule whose name holds a slash."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import text

from roost.db.engine import Database
from tests.tasks import handlers  # noqa: F401  (registers the test task types)

API = "/api/v1/tasks"


async def test_a_schedule_whose_name_has_a_slash_can_be_deleted(
    client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database
) -> None:
    """`reports/nightly` is a valid schedule name: DELETE .../schedules/reports%2Fnightly
    removes it (204).  The decoded slash split the path: 404 "no route", for good."""
    async with database.transaction() as session:
        await session.execute(text(
            "INSERT INTO task_schedules (id, name, task_type, interval_seconds, next_run_at)"
            " VALUES (:i, 'reports/nightly', 'test.noop', 60, now() + interval '1 hour')"),
            {"i": uuid.uuid4()})
    r = await client.delete(f"{API}/schedules/reports%2Fnightly", headers=admin_headers)
    assert r.status_code == 204, (r.status_code, r.text)
    names = [s["name"] for s in
             (await client.get(f"{API}/schedules", headers=admin_headers)).json()]
    assert "reports/nightly" not in names

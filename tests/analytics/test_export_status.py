"""The export's state (GET /api/v1/analytics/export) after a worker's failed pass."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import httpx
import pytest
from sqlalchemy import text

from roost.analytics import export
from roost.db.base import utcnow
from roost.db.engine import Database

Headers = dict[str, str]
AN = "/api/v1/analytics"


EXPORT_ERROR = "shipping 3 analytics events to clickhouse failed: timed out"


async def _failed_export_job(database: Database, status: str, *, started: datetime,
                             ended: datetime, attempts: int) -> None:
    """An analytics.export job in ``status`` whose attempt ``started``-``ended`` failed,
    recorded as the worker records it."""
    history = [{"attempt": 1, "worker_id": "w1", "started_at": started.isoformat(),
                "ended_at": ended.isoformat(), "outcome": "failed", "error": EXPORT_ERROR}]
    async with database.transaction() as s:
        await s.execute(text(
            "INSERT INTO background_tasks (id, task_type, status, error_message, started_at, "
            "scheduled_at, retry_count, attempts, retry_history) VALUES (gen_random_uuid(), "
            "'analytics.export', CAST(:status AS task_status), :e, :st, :sch, 1, :n, "
            "CAST(:h AS jsonb))"),
            {"status": status, "e": EXPORT_ERROR, "st": started,
             "sch": ended + timedelta(seconds=5), "n": attempts, "h": json.dumps(history)})


async def test_export_status_keeps_a_worker_failure_newer_than_the_last_success(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A scheduled pass started 5 minutes ago against a slow ClickHouse and failed 1 minute
    ago, after an administrator's POST /export succeeded (3 minutes ago): the failure is
    the newest outcome and is shown.  It was cleared, dated by when the job started."""
    now = utcnow()
    monkeypatch.setattr(export, "state",
                        export.ExportState(last_success_at=now - timedelta(minutes=3)))
    await _failed_export_job(database, "failed", started=now - timedelta(minutes=5),
                             ended=now - timedelta(minutes=1), attempts=1)
    state = (await client.get(f"{AN}/export", headers=admin_headers)).json()
    assert state["last_error"] is not None, state


@pytest.mark.parametrize("status", ["running", "stuck"])
async def test_export_status_keeps_a_failure_while_its_retry_is_under_way(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers, status: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A scheduled pass failed and its retry is running (or its worker died in it): the
    failure is still the newest outcome and is shown, not hidden until the retry ends."""
    # This process's own outcomes start empty: another test's export failing in the same
    # worker process a moment ago would be newer than this job's failure.
    monkeypatch.setattr(export, "state", export.ExportState())
    ended = utcnow() - timedelta(minutes=1)
    await _failed_export_job(database, status, started=ended - timedelta(seconds=30),
                             ended=ended, attempts=2)
    state = (await client.get(f"{AN}/export", headers=admin_headers)).json()
    assert state["last_error"] == EXPORT_ERROR, state


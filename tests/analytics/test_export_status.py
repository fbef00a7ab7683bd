"""The export's state (GET /api/v1/analytics/export) after a worker's failed pass."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import text

from roost.analytics import export
from roost.db.base import utcnow
from roost.db.engine import Database

Headers = dict[str, str]
AN = "/api/v1/analytics"


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
    started, ended = now - timedelta(minutes=5), now - timedelta(minutes=1)
    history = [{"attempt": 1, "worker_id": "w1", "started_at": started.isoformat(),
                "ended_at": ended.isoformat(), "outcome": "failed",
                "error": "shipping 3 analytics events to clickhouse failed: timed out"}]
    async with database.transaction() as s:
        await s.execute(text(
            "INSERT INTO background_tasks (id, task_type, status, error_message, started_at, "
            "scheduled_at, retry_count, attempts, retry_history) VALUES (gen_random_uuid(), "
            "'analytics.export', 'failed', :e, :st, :sch, 1, 1, CAST(:h AS jsonb))"),
            {"e": history[0]["error"], "st": started, "sch": ended + timedelta(seconds=5),
             "h": json.dumps(history)})
    state = (await client.get(f"{AN}/export", headers=admin_headers)).json()
    assert state["last_error"] is not None, state


@pytest.mark.parametrize("status", ["running", "stuck"])
async def test_export_status_keeps_a_failure_while_its_retry_is_under_way(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers, status: str,
) -> None:
    """A scheduled pass failed and its retry is running (or its worker died in it): the
    failure is still the newest outcome and is shown, not hidden until the retry ends."""
    ended = utcnow() - timedelta(minutes=1)
    history = [{"attempt": 1, "worker_id": "w1",
                "started_at": (ended - timedelta(seconds=30)).isoformat(),
                "ended_at": ended.isoformat(), "outcome": "failed",
                "error": "shipping 3 analytics events to clickhouse failed: timed out"}]
    async with database.transaction() as s:
        await s.execute(text(
            "INSERT INTO background_tasks (id, task_type, status, error_message, started_at, "
            "scheduled_at, retry_count, attempts, retry_history) VALUES (gen_random_uuid(), "
            "'analytics.export', CAST(:status AS task_status), :e, now(), :sch, 1, 2, "
            "CAST(:h AS jsonb))"),
            {"status": status, "e": history[0]["error"], "sch": ended + timedelta(seconds=5),
             "h": json.dumps(history)})
    state = (await client.get(f"{AN}/export", headers=admin_headers)).json()
    assert state["last_error"] == history[0]["error"], state


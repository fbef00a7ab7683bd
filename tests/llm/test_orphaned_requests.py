"""Requests orphaned by a crash (``kill -9`` mid-call) are swept to ``failed`` on a schedule."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from roost.config import get_settings
from roost.db.base import uuid7
from roost.db.engine import Database
from roost.llm.models import LLMProviderRow, LLMRequest
from roost.tasks.handlers import TaskContext


def _ctx(database: Database) -> TaskContext:
    return TaskContext(task_id=uuid.uuid4(), task_type="llm.sweep_orphans", queue="maintenance",
                       priority="background", attempt=1, retry_count=0, max_retries=2,
                       scheduled_at=datetime.now(UTC), worker_id="t", database=database)


async def _request(database: Database, status: str, *, age_s: float, started: bool) -> uuid.UUID:
    at = datetime.now(UTC) - timedelta(seconds=age_s)
    row = LLMRequest(id=uuid7(), request_type="chat", prompt=b"x", messages=b"x", status=status,
                     created_at=at, started_at=at if started else None)
    async with database.transaction() as s:
        s.add(row)
    return row.id


async def _rows(database: Database) -> dict[uuid.UUID, Any]:
    async with database.transaction() as s:
        found = (await s.execute(text(
            "SELECT id, status, error_message, completed_at FROM llm_requests"))).all()
    return {r.id: r for r in found}


async def test_stale_pending_and_running_requests_are_failed_with_a_reason(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from roost.llm.jobs import sweep_orphans

    monkeypatch.setenv("ROOST_LLM_TIMEOUT_S", "30")
    monkeypatch.setenv("ROOST_LLM_STREAM_MAX_S", "120")  # under the 300 s margin
    monkeypatch.delenv("ROOST_LLM_ORPHAN_AFTER_S", raising=False)
    get_settings.cache_clear()
    try:
        async with database.transaction() as s:  # two enabled providers: 2 x 30 s + 300 s
            for name in ("a", "b"):
                s.add(LLMProviderRow(id=uuid7(), name=name, type="openai",
                                     base_url="http://127.0.0.1:9/v1", model="m"))
        stale_pending = await _request(database, "pending", age_s=400, started=False)
        stale_running = await _request(database, "running", age_s=361, started=True)
        fresh_running = await _request(database, "running", age_s=300, started=True)
        fresh_pending = await _request(database, "pending", age_s=5, started=False)
        done = await _request(database, "completed", age_s=4000, started=True)

        result = await sweep_orphans(_ctx(database), {})
        assert result["failed"] == 2 and result["older_than_s"] == 360
        assert set(result["request_ids"]) == {str(stale_pending), str(stale_running)}
        rows = await _rows(database)
        for rid, was in ((stale_pending, "pending"), (stale_running, "running")):
            assert rows[rid].status == "failed" and rows[rid].completed_at is not None
            assert rows[rid].error_message.startswith(f"orphaned: still {was} 360 s")
            assert "crash or kill" in rows[rid].error_message
        assert rows[fresh_running].status == "running" and rows[fresh_pending].status == "pending"
        assert rows[fresh_running].error_message is None
        assert rows[done].status == "completed"
        async with database.transaction() as s:
            audited = (await s.execute(text(
                "SELECT resource_id, success FROM audit_logs WHERE action = 'llm.request.fail'"
            ))).all()
        assert {(r.resource_id, r.success) for r in audited} == {
            (str(stale_pending), False), (str(stale_running), False)}

        # A second sweep finds nothing; the explicit setting overrides the derived limit.
        assert (await sweep_orphans(_ctx(database), {}))["failed"] == 0
        monkeypatch.setenv("ROOST_LLM_ORPHAN_AFTER_S", "60")
        get_settings.cache_clear()
        result = await sweep_orphans(_ctx(database), {})
        assert result == {"failed": 1, "older_than_s": 60.0, "request_ids": [str(fresh_running)]}
    finally:
        get_settings.cache_clear()


def test_the_sweep_is_scheduled_on_the_queue() -> None:
    from roost.tasks.handlers import discover, get_task_type
    from roost.tasks.schedules import schedules

    discover()
    schedule = schedules()["llm.sweep_orphans"]
    assert schedule.every == timedelta(minutes=5) and schedule.task_type == "llm.sweep_orphans"
    task_type = get_task_type("llm.sweep_orphans")
    assert task_type is not None and task_type.queue == "maintenance"

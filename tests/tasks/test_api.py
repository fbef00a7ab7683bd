"""The admin task API: listing, filters, pagination, operations, stats, problems."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import select, text

from roost.audit.models import AuditLog
from roost.db.engine import Database
from roost.tasks.worker import reap_expired
from tests.tasks import handlers  # registers the test task types
from tests.tasks.support import enqueue

API = "/api/v1/tasks"


async def _enqueue(database: Database, task_type: str = "test.noop", **kwargs: Any) -> uuid.UUID:
    return (await enqueue(database, task_type, kwargs.pop("payload", {}), **kwargs)).id


async def _dead_letter(database: Database, label: str) -> uuid.UUID:
    """A job whose only attempt ran out its lease: the reaper dead-letters it."""
    task_id = await _enqueue(database, "test.record", payload={"label": label}, max_retries=0)
    async with database.transaction() as session:
        await session.execute(text(
            "UPDATE background_tasks SET status = 'running', worker_id = 'w', attempts = 1,"
            " lease_expires_at = now() - interval '1 second' WHERE id = :id"), {"id": task_id})
    await reap_expired(database)
    return task_id


async def test_the_api_needs_an_administrator(client: httpx.AsyncClient) -> None:
    assert (await client.get(API)).status_code == 401
    r = await client.get(API, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")


async def test_list_filters_and_paginates(
    client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database
) -> None:
    ids = [await _enqueue(database, payload={"i": i}, priority="high" if i % 2 else "low",
                          queue="q1" if i < 4 else "q2") for i in range(7)]
    await _enqueue(database, "test.record", payload={"label": "x"})

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3, "task_type": "test.noop"}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get(API, params=params, headers=admin_headers)).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [str(i) for i in reversed(ids)]  # newest first, no gaps or repeats

    high = (await client.get(API, params={"priority": "high"}, headers=admin_headers)).json()
    assert {item["payload"]["i"] for item in high["items"]} == {1, 3, 5}
    q2 = (await client.get(API, params={"queue": "q2", "status": "pending"},
                           headers=admin_headers)).json()
    assert len(q2["items"]) == 3
    bad = await client.get(API, params={"status": "exploded"}, headers=admin_headers)
    assert bad.status_code == 422
    bad_cursor = await client.get(API, params={"cursor": "!!"}, headers=admin_headers)
    assert bad_cursor.status_code == 400


async def test_get_cancel_pause_resume_with_audit(
    client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database
) -> None:
    task_id = await _enqueue(database)
    r = await client.get(f"{API}/{task_id}", headers=admin_headers)
    assert r.status_code == 200
    assert r.json()["status"] == "pending" and r.json()["retry_history"] == []

    r = await client.post(f"{API}/{task_id}/pause", headers=admin_headers)
    assert r.status_code == 200 and r.json()["status"] == "paused"
    r = await client.post(f"{API}/{task_id}/pause", headers=admin_headers)
    assert r.status_code == 409
    r = await client.post(f"{API}/{task_id}/resume", headers=admin_headers)
    assert r.status_code == 200 and r.json()["status"] == "queued"
    r = await client.post(f"{API}/{task_id}/cancel", headers=admin_headers)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    r = await client.post(f"{API}/{task_id}/cancel", headers=admin_headers)
    assert r.status_code == 409 and "already cancelled" in r.json()["detail"]
    r = await client.post(f"{API}/{task_id}/resume", headers=admin_headers)
    assert r.status_code == 409

    assert (await client.get(f"{API}/{uuid.uuid4()}", headers=admin_headers)).status_code == 404
    assert (await client.get(f"{API}/not-a-uuid", headers=admin_headers)).status_code == 422
    async with database.transaction() as session:
        actions = (await session.scalars(
            select(AuditLog.action).where(AuditLog.resource_id == str(task_id))
            .order_by(AuditLog.seq))).all()
    assert actions == ["task.paused", "task.resumed", "task.cancelled"]


async def test_enqueue_through_the_api(
    client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database
) -> None:
    body = {"task_type": "test.noop", "payload": {"a": 1}, "priority": "critical",
            "idempotency_key": "api-1"}
    r = await client.post(API, json=body, headers=admin_headers)
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["priority"] == "critical" and first["payload"] == {"a": 1}
    r = await client.post(API, json=body, headers=admin_headers)
    assert r.status_code == 200 and r.json()["id"] == first["id"]

    unknown = await client.post(API, json={"task_type": "no.such"}, headers=admin_headers)
    assert unknown.status_code == 422
    assert "unknown task type" in unknown.json()["detail"]
    big = await client.post(API, json={"task_type": "test.small", "payload": {"b": "x" * 3000}},
                            headers=admin_headers)
    assert big.status_code == 413
    nul = await client.post(API, json={"task_type": "test.noop", "payload": {"b": "a\u0000"}},
                            headers=admin_headers)
    assert nul.status_code == 422 and "NUL" in nul.json()["detail"]
    # a NUL in a text column's field: a 422 naming it (was the database's generic 400)
    for field, value in (("idempotency_key", "k\u0000"), ("task_type", "test.noop\u0000")):
        nul = await client.post(API, json={"task_type": "test.noop", field: value},
                                headers=admin_headers)
        assert nul.status_code == 422, nul.text
        assert nul.json()["errors"][0]["loc"][-1] == field, nul.text
    typed = await client.post(API, json={"task_type": "test.typed", "payload": {"name": ""}},
                              headers=admin_headers)
    assert typed.status_code == 422 and typed.json()["errors"][0]["loc"] == ["name"]
    naive = await client.post(API, json={"task_type": "test.noop",
                                         "scheduled_at": "2030-01-01T00:00:00"},
                              headers=admin_headers)
    assert naive.status_code == 422
    not_object = await client.post(API, json={"task_type": "test.noop", "payload": [1]},
                                   headers=admin_headers)
    assert not_object.status_code == 422
    malformed = await client.post(API, content=b"{not json", headers={
        **admin_headers, "content-type": "application/json"})
    assert malformed.status_code == 400
    huge = await client.post(API, content=b"{" + b" " * 70_000 + b"}", headers={
        **admin_headers, "content-type": "application/json"})
    assert huge.status_code == 413
    async with database.transaction() as session:
        enqueued = (await session.scalars(
            select(AuditLog).where(AuditLog.action == "task.enqueued"))).all()
    assert [a.resource_id for a in enqueued] == [first["id"]]


async def test_dead_letters_list_get_and_retry(
    client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database
) -> None:
    task_id = await _dead_letter(database, "x")

    page = (await client.get(f"{API}/dead-letters", headers=admin_headers)).json()
    assert len(page["items"]) == 1
    letter = page["items"][0]
    assert letter["original_task_id"] == str(task_id) and letter["retried_at"] is None
    detail = (await client.get(f"{API}/dead-letters/{letter['id']}", headers=admin_headers)).json()
    assert detail["retry_history"][0]["outcome"] == "lease_expired"

    r = await client.post(f"{API}/dead-letters/{letter['id']}/retry", headers=admin_headers)
    assert r.status_code == 200, r.text
    retried = r.json()
    assert retried["id"] == str(task_id)
    assert retried["status"] == "queued" and retried["retry_count"] == 0
    assert retried["retry_history"][-1]["event"] == "retried_from_dead_letter"
    again = await client.post(f"{API}/dead-letters/{letter['id']}/retry", headers=admin_headers)
    assert again.status_code == 409
    waiting = (await client.get(f"{API}/dead-letters", params={"retried": "false"},
                                headers=admin_headers)).json()
    assert waiting["items"] == []
    missing = await client.post(f"{API}/dead-letters/{uuid.uuid4()}/retry", headers=admin_headers)
    assert missing.status_code == 404


async def test_retrying_a_dead_letter_whose_job_was_pruned_makes_a_new_job(
    client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database
) -> None:
    task_id = await _dead_letter(database, "gone")
    async with database.transaction() as session:
        await session.execute(text("DELETE FROM background_tasks WHERE id = :id"),
                              {"id": task_id})
    letters = (await client.get(f"{API}/dead-letters", headers=admin_headers)).json()["items"]
    assert letters[0]["original_task_id"] is None  # ON DELETE SET NULL
    r = await client.post(f"{API}/dead-letters/{letters[0]['id']}/retry", headers=admin_headers)
    assert r.status_code == 200
    assert r.json()["id"] != str(task_id) and r.json()["payload"] == {"label": "gone"}
    # The dead letter keeps no max_retries: the task type's (test.record: 0), not 3.
    assert r.json()["max_retries"] == 0


async def test_stats(
    client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database
) -> None:
    for priority in ("critical", "low", "low"):
        await _enqueue(database, priority=priority)
    done = await _enqueue(database)
    async with database.transaction() as session:
        await session.execute(text(
            "UPDATE background_tasks SET status = 'completed', completed_at = now(),"
            " scheduled_at = now() - interval '10 minutes' WHERE id = :id"), {"id": done})
        await session.execute(text(
            "UPDATE background_tasks SET scheduled_at = now() - interval '90 seconds'"
            " WHERE priority = 'critical'"))
    stats = (await client.get(f"{API}/stats", headers=admin_headers)).json()
    assert stats["by_status"]["pending"] == 3 and stats["by_status"]["completed"] == 1
    assert stats["by_priority"] == {"critical": 1, "high": 0, "normal": 1, "low": 2,
                                    "background": 0}
    assert stats["by_status_and_priority"]["pending"] == {"critical": 1, "low": 2}
    assert [t["minutes"] for t in stats["throughput"]] == [1, 5, 15]
    assert all(t["completed"] == 1 for t in stats["throughput"])
    assert 89 <= stats["oldest_ready_age_s"] < 120
    assert stats["dead_letters_waiting"] == 0


async def test_schedules_are_listed(
    client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database
) -> None:
    from roost.tasks import jobs  # noqa: F401  (registers the built-in schedules)
    from roost.tasks.schedules import sync_schedules

    await sync_schedules(database)
    names = [s["name"] for s in (await client.get(f"{API}/schedules", headers=admin_headers)).json()]
    assert {"audit.retention", "tasks.prune"} <= set(names)
    assert handlers.CREATE_RUNS_TABLE  # the test handlers are registered here too

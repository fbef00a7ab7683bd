"""The outbox's export to ClickHouse: at least once, no duplicate in query results, a
dead server leaves the events in the outbox and the API unaffected."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from structlog.testing import capture_logs

from roost.analytics import export
from roost.analytics.clickhouse import ChdbSink, EventRow, chdb_path, public_location
from roost.analytics.models import AnalyticsEvent
from roost.analytics.queries import events_from_clickhouse, usage_from_clickhouse
from roost.config import Settings
from roost.db.base import utcnow
from roost.db.engine import Database
from roost.errors import ServiceUnavailable, Unprocessable
from tests.analytics.conftest import add_events, llm_call
from tests.support.pg import PgTestServer

pytestmark = pytest.mark.needs_clickhouse

Headers = dict[str, str]
User = tuple[uuid.UUID, Headers]
REPO = Path(__file__).resolve().parents[2]


class CrashAfterShip(ChdbSink):
    """Ships for real, then fails before the rows can be marked: a process dying between
    the ClickHouse insert and the outbox's commit."""

    async def insert(self, rows: Sequence[EventRow]) -> None:
        await super().insert(rows)
        raise RuntimeError("worker died after the insert")


async def outbox(database: Database) -> list[AnalyticsEvent]:
    async with database.transaction() as session:
        return list((await session.scalars(
            select(AnalyticsEvent).order_by(AnalyticsEvent.timestamp))).all())


def window() -> tuple[Any, Any]:
    now = utcnow()
    return now - timedelta(days=1), now + timedelta(minutes=1)


async def test_export_ships_in_batches_and_usage_groups_from_clickhouse(
    database: Database, test_settings: Settings, user: User, other_user: User,
) -> None:
    alice, bob = user[0], other_user[0]
    agent, key, other_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await add_events(database, [("llm.call", llm_call("m1", agent_id=agent, api_key_id=key))
                                for _ in range(60)], user_id=alice)
    await add_events(database, [
        ("llm.call", llm_call("m2", "other", provider_id=str(other_id), tokens_input=100,
                              tokens_output=50, credits=7, cost="0.250000", success=False)),
        ("tool.call", {"tool": "search", "status": "ok", "duration_ms": 12}),
    ], user_id=bob)
    await add_events(database, [("auth.login", {"method": "password", "success": True})])

    result = await export.export_pass(database, test_settings)
    assert (result.shipped, result.batches, result.pending) == (63, 2, 0)  # batch = 50
    rows = await outbox(database)
    assert all(r.exported and r.exported_at is not None for r in rows)
    assert (await export.export_pass(database, test_settings)).shipped == 0

    since, until = window()
    by_model = {r["key"]: r for r in await usage_from_clickhouse(
        test_settings, "model", since, until, None)}
    assert by_model["m1"] == {"key": "m1", "name": None, "requests": 60, "tokens_input": 600,
                              "tokens_output": 300, "credits": 120,
                              "cost": Decimal("0.09"), "failures": 0}
    assert by_model["m2"]["failures"] == 1 and by_model["m2"]["cost"] == Decimal("0.25")
    assert isinstance(by_model["m2"]["cost"], Decimal)
    by_user = {r["key"]: r["requests"] for r in await usage_from_clickhouse(
        test_settings, "user", since, until, None)}
    assert by_user == {str(alice): 60, str(bob): 1}
    only_bob = await usage_from_clickhouse(test_settings, "provider", since, until, bob)
    assert [(r["key"], r["tokens_input"]) for r in only_bob] == [(str(other_id), 100)]
    by_agent = {r["key"]: r["requests"] for r in await usage_from_clickhouse(
        test_settings, "agent", since, until, None)}
    assert by_agent == {None: 1, str(agent): 60}
    by_key = {r["key"]: r["requests"] for r in await usage_from_clickhouse(
        test_settings, "api_key", since, until, None)}
    assert by_key[str(key)] == 60
    by_day = await usage_from_clickhouse(test_settings, "day", since, until, None)
    assert sum(r["requests"] for r in by_day) == 61  # only llm.call events
    assert await usage_from_clickhouse(test_settings, "model", until, until + timedelta(1),
                                       None) == []
    with pytest.raises(Unprocessable):
        await usage_from_clickhouse(test_settings, "color", since, until, None)
    with pytest.raises(Unprocessable):
        await usage_from_clickhouse(test_settings, "day", until, since, None)
    kinds = {r["key"]: r["events"] for r in await events_from_clickhouse(
        test_settings, "event_type", since, until)}
    assert kinds == {"llm.call": 61, "tool.call": 1, "auth.login": 1}


async def test_crash_between_ship_and_mark_loses_nothing_and_duplicates_nothing(
    database: Database, test_settings: Settings, user: User,
) -> None:
    ids = await add_events(database, [("llm.call", llm_call(credits=1)) for _ in range(30)],
                           user_id=user[0])
    sink = ChdbSink(chdb_path(test_settings))

    with capture_logs() as logs, pytest.raises(export.ExportFailed, match="died after the insert"):
        await export.export_pass(database, test_settings, CrashAfterShip(sink.location))
    rows = await outbox(database)
    assert [r.exported for r in rows] == [False] * 30  # not marked: the commit never came
    assert {r.export_attempts for r in rows} == {1}
    assert any(e["event"] == "analytics.export_failed" for e in logs)
    # ClickHouse got them once already
    raw = await sink.select("SELECT count() AS n FROM roost_events", {})
    assert raw == [{"n": 30}]

    again = await export.export_pass(database, test_settings)  # the retry ships again
    assert (again.shipped, again.pending) == (30, 0)
    assert all(r.exported for r in await outbox(database))
    stored = await sink.select("SELECT count() AS n FROM roost_events", {})
    assert stored[0]["n"] in (30, 60)  # two copies until a background merge folds them

    since, until = window()
    usage = await usage_from_clickhouse(test_settings, "user", since, until, None)
    assert [(r["key"], r["requests"], r["credits"]) for r in usage] == [(str(user[0]), 30, 30)]
    counts = await events_from_clickhouse(test_settings, "event_type", since, until)
    assert counts == [{"key": "llm.call", "events": 30}]
    distinct = await sink.select("SELECT count(DISTINCT id) AS n FROM roost_events FINAL", {})
    assert distinct == [{"n": 30}]
    shipped = await sink.select("SELECT toString(id) AS id FROM roost_events FINAL", {})
    assert {uuid.UUID(r["id"]) for r in shipped} == set(ids)  # none lost


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends


@pytest.fixture
def unreachable_settings(test_settings: Settings) -> Settings:
    url = f"http://roost:s3cret-pw@127.0.0.1:{closed_port()}/analytics"
    return test_settings.model_copy(update={"analytics_clickhouse_url": url})


async def test_unreachable_server_keeps_rows_counts_attempts_events_still_written(
    database: Database, unreachable_settings: Settings,
) -> None:
    await add_events(database, [("tool.call", {"tool": "t", "status": "ok", "duration_ms": 1})
                                for _ in range(3)])
    with capture_logs() as logs, pytest.raises(export.ExportFailed) as failed:
        await export.export_pass(database, unreachable_settings)
    message = str(failed.value)
    assert "clickhouse" in message and "127.0.0.1" in message
    assert "s3cret-pw" not in message
    errors = [e for e in logs if e["event"] == "analytics.export_failed"]
    assert len(errors) == 1 and errors[0]["log_level"] == "error"
    assert errors[0]["rows"] == 3 and "s3cret-pw" not in json.dumps(errors[0], default=str)
    rows = await outbox(database)
    assert [(r.exported, r.export_attempts) for r in rows] == [(False, 1)] * 3

    with pytest.raises(export.ExportFailed):  # the queue's retry: counted again
        await export.export_pass(database, unreachable_settings)
    assert {r.export_attempts for r in await outbox(database)} == {2}

    # events keep being written while ClickHouse is down
    await add_events(database, [("auth.login", {"method": "password", "success": True})])
    assert len(await outbox(database)) == 4

    since, until = window()
    with pytest.raises(ServiceUnavailable, match="did not answer"):
        await usage_from_clickhouse(unreachable_settings, "day", since, until, None)


def test_the_job_retries_with_backoff_and_is_scheduled_only_when_enabled() -> None:
    from roost.analytics import jobs
    from roost.tasks.handlers import get_task_type

    task = get_task_type(jobs.EXPORT_TASK)
    assert task is not None and task.max_retries >= 3 and task.backoff_base_s > 0
    child = subprocess.run(
        [sys.executable, "-c",
         "from roost.analytics import jobs; from roost.tasks.schedules import schedules; "
         "s = schedules().get('analytics.export'); print(s.every.total_seconds() if s else None)"],
        env={**_clean_env(), "ROOST_ANALYTICS_EXPORT": "true",
             "ROOST_ANALYTICS_EXPORT_INTERVAL_S": "17"},
        capture_output=True, text=True, timeout=120, check=False, cwd=REPO,
    )
    assert child.stdout.strip() == "17.0", child.stderr
    off = subprocess.run(
        [sys.executable, "-c",
         "from roost.analytics import jobs; from roost.tasks.schedules import schedules; "
         "print('analytics.export' in schedules())"],
        env={**_clean_env(), "ROOST_ANALYTICS_EXPORT": "false"},
        capture_output=True, text=True, timeout=120, check=False, cwd=REPO,
    )
    assert off.stdout.strip() == "False", off.stderr


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}


async def test_clickhouse_connect_sink_end_to_end_in_a_child_process(
    database: Database, pg_server: PgTestServer, db_name: str, tmp_path: Path, user: User,
) -> None:
    """The server sink's code (clickhouse-connect: raw_insert, bound query parameters)
    against a real engine: clickhouse-connect's own chDB backend (``chdb://`` DSN), in a
    child process (one chDB engine per process)."""
    await add_events(database, [("llm.call", llm_call("m1", cost="1.000001"))
                                for _ in range(4)], user_id=user[0])
    env = {**_clean_env(), "ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
           "ROOST_DATA_DIR": str(tmp_path / "child"),
           "ROOST_ANALYTICS_CLICKHOUSE_URL": f"chdb://{tmp_path / 'ch'}"}
    child = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "tests.analytics.export_child"], env=env,
        capture_output=True, text=True, timeout=300, check=False, cwd=REPO)
    assert child.returncode == 0, child.stderr[-3000:]
    out = json.loads(child.stdout.strip().splitlines()[-1])
    assert out["pass"]["shipped"] == 4 and out["pass"]["pending"] == 0
    assert [(u["key"], u["requests"], u["cost"]) for u in out["usage"]] == [("m1", 4, "4.000004")]
    assert out["events"] == [{"key": "llm.call", "events": 4}]
    assert all(r.exported for r in await outbox(database))


async def test_two_processes_share_the_chdb_directory(
    database: Database, pg_server: PgTestServer, db_name: str, test_settings: Settings,
    user: User,
) -> None:
    """The API server and a worker both use DATA_DIR/analytics/chdb, which chDB lets one
    process hold at a time: a child exports while this process keeps querying."""
    await add_events(database, [("llm.call", llm_call("m1")) for _ in range(200)],
                     user_id=user[0])
    env = {**_clean_env(), "ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
           "ROOST_DATA_DIR": str(test_settings.data_dir), "ROOST_ANALYTICS_EXPORT_BATCH": "10"}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.analytics.export_child", env=env, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    finished = asyncio.ensure_future(asyncio.wait_for(child.communicate(), timeout=300))
    since, until = window()
    queries = 0
    while not finished.done() or queries < 3:
        await events_from_clickhouse(test_settings, "day", since, until)  # never refused
        queries += 1
    stdout, stderr = (part.decode() for part in await finished)
    assert child.returncode == 0, stderr[-3000:]
    out = json.loads(stdout.strip().splitlines()[-1])
    assert out["pass"]["shipped"] == 200
    usage = await usage_from_clickhouse(test_settings, "model", since, until, None)
    assert [(u["key"], u["requests"]) for u in usage] == [("m1", 200)]


async def test_export_api_runs_a_pass_and_reports_state(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers, user: User,
    test_settings: Settings,
) -> None:
    await add_events(database, [("llm.call", llm_call()), ("agent.run", {
        "run_id": str(uuid.uuid4()), "agent_id": None, "status": "completed", "steps": 2,
        "credits": 3})], user_id=user[0])
    before = await client.get("/api/v1/analytics/export", headers=admin_headers)
    assert before.status_code == 200, before.text
    state = before.json()
    assert (state["pending"], state["exported"], state["sink"]) == (2, 0, "chdb")
    assert state["location"] == str(chdb_path(test_settings))
    assert state["oldest_pending"] is not None and state["enabled"] is False

    ran = await client.post("/api/v1/analytics/export", headers=admin_headers)
    assert ran.status_code == 200, ran.text
    assert ran.json()["shipped"] == 2 and ran.json()["pending"] == 0
    after = (await client.get("/api/v1/analytics/export", headers=admin_headers)).json()
    assert (after["pending"], after["exported"], after["oldest_pending"]) == (2 - 2, 2, None)
    assert after["last_error"] is None and after["last_success_at"] is not None

    counts = await client.get("/api/v1/analytics/events", headers=admin_headers,
                              params={"source": "clickhouse", "group_by": "event_type"})
    assert counts.status_code == 200, counts.text
    assert {i["key"]: i["events"] for i in counts.json()["items"]} == {"llm.call": 1,
                                                                       "agent.run": 1}
    today = utcnow().date().isoformat()
    per_day = await client.get("/api/v1/analytics/events", headers=admin_headers)
    assert per_day.json()["items"] == [{"key": today, "events": 2}]

    for params in ({"group_by": "user"}, {"source": "postgres"}, {"since": "12"},
                   {"since": "2027-01-02T00:00:00Z", "until": "2027-01-01T00:00:00Z"}):
        bad = await client.get("/api/v1/analytics/events", headers=admin_headers, params=params)
        assert bad.status_code == 422, (params, bad.text)
        assert bad.headers["content-type"].startswith("application/problem+json")
    for method, path in (("GET", "/export"), ("POST", "/export"), ("GET", "/events")):
        denied = await client.request(method, f"/api/v1/analytics{path}", headers=user[1])
        assert denied.status_code == 403, (method, path)


async def test_export_api_with_clickhouse_down_answers_503_and_keeps_rows(
    client: httpx.AsyncClient, app: Any, database: Database, admin_headers: Headers,
    unreachable_settings: Settings,
) -> None:
    app.state.settings = unreachable_settings
    await add_events(database, [("auth.login", {"method": "password", "success": False})])
    down = await client.post("/api/v1/analytics/export", headers=admin_headers)
    assert down.status_code == 503, down.text
    problem = down.json()
    assert "127.0.0.1" in problem["detail"] and "outbox" in problem["detail"]
    assert "s3cret-pw" not in down.text
    state = (await client.get("/api/v1/analytics/export", headers=admin_headers)).json()
    assert state["pending"] == 1 and state["max_attempts"] == 1
    assert state["sink"] == "clickhouse" and "s3cret-pw" not in json.dumps(state)
    assert state["location"].startswith("http://127.0.0.1:") and state["last_error"]
    events = await client.get("/api/v1/analytics/events", headers=admin_headers)
    assert events.status_code == 503 and "s3cret-pw" not in events.text


async def test_export_status_shows_what_the_workers_passes_did(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Scheduled passes run in `roost worker` processes: the status answered by an API
    process reports them from the queue's record, not only its own passes."""
    from sqlalchemy import text

    monkeypatch.setattr(export, "state", export.ExportState())  # this process: no pass
    now = utcnow()
    async with database.transaction() as s:
        await s.execute(text(
            "INSERT INTO background_tasks (id, task_type, status, error_message, started_at, "
            "retry_count) VALUES (gen_random_uuid(), 'analytics.export', 'failed', :e, :at, 1)"),
            {"e": "shipping 3 analytics events to clickhouse (http://ch:8123) failed: refused",
             "at": now - timedelta(minutes=5)})
    failed = (await client.get("/api/v1/analytics/export", headers=admin_headers)).json()
    assert failed["last_error"].endswith("failed: refused")
    assert failed["last_success_at"] is None

    async with database.transaction() as s:
        await s.execute(text(
            "INSERT INTO background_tasks (id, task_type, status, started_at, completed_at) "
            "VALUES (gen_random_uuid(), 'analytics.export', 'completed', :at, :at)"),
            {"at": now - timedelta(minutes=1)})
    recovered = (await client.get("/api/v1/analytics/export", headers=admin_headers)).json()
    assert recovered["last_error"] is None and recovered["last_error_at"] is None
    assert recovered["last_success_at"] is not None


@pytest.mark.parametrize(("url", "shown"), [
    ("http://alice:pw@[::1]:8123/db", "http://[::1]:8123/db"),
    ("https://[2001:db8::5]/analytics", "https://[2001:db8::5]/analytics"),
    ("http://bob:pw@clickhouse.internal:8123/db?password=x", "http://clickhouse.internal:8123/db"),
])
def test_the_servers_location_is_a_url_without_credentials(url: str, shown: str) -> None:
    """GET /export's location (and the 503s naming the server): the URL without user,
    password or query, one that reads back (an IPv6 host keeps its brackets:
    ``http://::1:8123/db`` was shown)."""
    assert public_location(url) == shown

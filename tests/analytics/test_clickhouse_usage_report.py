"""The usage report from ClickHouse (``source=clickhouse``) keyed and named as the
ledger's: rows per provider keyed by the provider's id with its name as the label, the
username per user and the name per API key; events written before ``llm.call`` carried
``provider_id`` and a table created before the column existed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from roost.analytics import export
from roost.analytics.clickhouse import TABLE, ChdbSink, chdb_path, close_chdb
from roost.analytics.queries import events_from_clickhouse, usage_from_clickhouse
from roost.billing.models import UsageRecord
from roost.config import Settings
from roost.db.base import utcnow
from roost.db.engine import Database
from tests.analytics.conftest import add_events, llm_call
from tests.support.identity import make_user
from tests.support.openai_stub import StubServer

Headers = dict[str, str]
AN = "/api/v1/analytics"
pytestmark = pytest.mark.needs_clickhouse


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", log_json=True, max_request_bytes=256 * 1024,
                    analytics_export_batch=50, llm_timeout_s=2.0, llm_local_model=False)


async def _provider(client: httpx.AsyncClient, admin: Headers, stub: StubServer,
                    name: str) -> str:
    body = {"name": name, "type": "openai", "base_url": stub.base_url, "model": "stub-model"}
    resp = await client.post("/api/v1/llm/providers", json=body, headers=admin)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def _window() -> dict[str, str]:
    now = utcnow()
    return {"since": (now - timedelta(days=1)).isoformat(),
            "until": (now + timedelta(minutes=5)).isoformat()}


async def _one_call_exported(client: httpx.AsyncClient, admin_headers: Headers,
                             headers: Headers) -> None:
    r = await client.post("/v1/chat/completions", headers=headers, json={
        "model": "stub-model", "messages": [{"role": "user", "content": "hello there"}]})
    assert r.status_code == 200, r.text
    r = await client.post(f"{AN}/export", headers=admin_headers)
    assert r.status_code == 200, r.text


async def _report(client: httpx.AsyncClient, headers: Headers, group_by: str,
                  source: str) -> list[dict[str, Any]]:
    r = await client.get("/api/v1/billing/usage", headers=headers,
                         params={**_window(), "group_by": group_by, "source": source})
    assert r.status_code == 200, r.text
    rows: list[dict[str, Any]] = r.json()["rows"]
    return rows


async def test_usage_by_provider_is_keyed_by_the_providers_id_from_either_source(
        client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
        database: Database) -> None:
    """group_by=provider keys rows by the provider's id (label: its current name), as
    PostgreSQL does, and a renamed provider stays one row."""
    provider_id = await _provider(client, admin_headers, stub, "stub")
    _, headers = await make_user(database)
    await _one_call_exported(client, admin_headers, headers)
    pg = await _report(client, headers, "provider", "postgres")
    assert [(r["key"], r["label"]) for r in pg] == [(provider_id, "stub")]
    ch = await _report(client, headers, "provider", "clickhouse")
    assert [(r["key"], r["label"]) for r in ch] == [(provider_id, "stub")], ch

    renamed = await client.patch(f"/api/v1/llm/providers/{provider_id}",
                                 json={"name": "stub-renamed"}, headers=admin_headers)
    assert renamed.status_code == 200, renamed.text
    await _one_call_exported(client, admin_headers, headers)
    ch = await _report(client, headers, "provider", "clickhouse")
    assert [(r["key"], r["label"], r["requests"]) for r in ch] == [
        (provider_id, "stub-renamed", 2)], ch


async def test_usage_by_user_and_api_key_from_clickhouse_names_them_as_postgres_does(
        client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
        database: Database) -> None:
    """source=clickhouse gives the username (group_by=user) and the key's name (api_key)."""
    await _provider(client, admin_headers, stub, "stub")
    uid, headers = await make_user(database, username="chuser")
    await _one_call_exported(client, admin_headers, headers)
    pg_users = await _report(client, headers, "user", "postgres")
    assert [(r["key"], r["username"]) for r in pg_users] == [(str(uid), "chuser")]
    ch_users = await _report(client, headers, "user", "clickhouse")
    pg_keys = await _report(client, headers, "api_key", "postgres")
    ch_keys = await _report(client, headers, "api_key", "clickhouse")
    assert [r["label"] for r in pg_keys] != [None]
    assert ([(r["key"], r["username"]) for r in ch_users],
            [(r["key"], r["label"]) for r in ch_keys]) == (
        [(str(uid), "chuser")], [(r["key"], r["label"]) for r in pg_keys])


async def test_events_without_provider_id_group_by_the_name_they_carry(
        database: Database, test_settings: Settings) -> None:
    """An ``llm.call`` event written before it carried ``provider_id`` has no key; such
    events are one row per provider name (the report's label)."""
    old = {k: v for k, v in llm_call(provider="legacy").items() if k != "provider_id"}
    await add_events(database, [("llm.call", old), ("llm.call", dict(old)),
                                ("llm.call", llm_call(provider="other-old"))])
    await export.export_pass(database, test_settings)
    now = utcnow()
    rows = await usage_from_clickhouse(test_settings, "provider", now - timedelta(days=1),
                                       now + timedelta(minutes=5), None)
    assert [(r["key"], r["name"], r["requests"]) for r in rows] == [
        (None, "legacy", 2), (None, "other-old", 1)]


async def test_a_table_created_before_provider_id_gets_the_column(
        database: Database, test_settings: Settings) -> None:
    """An existing ``roost_events`` without ``provider_id`` is upgraded on first use (and
    again harmlessly): old rows read it from their JSON, new rows group by it."""
    path = chdb_path(test_settings)
    sink = ChdbSink(path)
    await sink.select("SELECT 1 AS one", {})  # creates the table as it is now
    await sink.select(f"ALTER TABLE {TABLE} DROP COLUMN provider_id", {})
    await add_events(database, [("llm.call", llm_call(provider="p", provider_id="p-id"))])
    await export.export_pass(database, test_settings)  # shipped into the old table shape
    close_chdb()  # the next use is a process that has not seen this table yet
    await add_events(database, [("llm.call", llm_call(provider="p", provider_id="p-id"))])
    await export.export_pass(database, test_settings)
    close_chdb()
    now = utcnow()
    rows = await usage_from_clickhouse(test_settings, "provider", now - timedelta(days=1),
                                       now + timedelta(minutes=5), None)
    assert [(r["key"], r["requests"]) for r in rows] == [("p-id", 2)]


def _window() -> dict[str, str]:
    now = utcnow()
    return {"since": (now - timedelta(days=1)).isoformat(),
            "until": (now + timedelta(minutes=5)).isoformat()}


async def _ledger(database: Database, user_id: uuid.UUID, model: str, n: int) -> None:
    async with database.transaction() as session:
        for _ in range(n):
            session.add(UsageRecord(user_id=user_id, request_type="chat", model=model,
                                    tokens_input=10, tokens_output=5, credits_used=2,
                                    cost="0.001500", currency="USD", created_at=utcnow(),
                                    success=True, idempotency_key=f"probe-{uuid.uuid4()}"))


async def test_clickhouse_report_orders_rows_as_postgres_does(
        client: httpx.AsyncClient, database: Database, test_settings: Settings) -> None:
    """source=clickhouse answers as the ledger does (docs/billing.md): the same calls give
    the same rows in the same order, most requests first for group_by=model (ClickHouse's
    came alphabetically)."""
    uid, _ = await make_user(database)
    _, admin = await make_user(database, admin=True)
    await _ledger(database, uid, "a-model", 1)
    await _ledger(database, uid, "z-model", 3)
    await add_events(database, [("llm.call", llm_call(model="a-model"))], user_id=uid)
    await add_events(database, [("llm.call", llm_call(model="z-model")) for _ in range(3)],
                     user_id=uid)
    await export.export_pass(database, test_settings)
    keys = {}
    for source in ("postgres", "clickhouse"):
        r = await client.get("/api/v1/billing/usage", headers=admin, params={**_window(), "group_by": "model",
                                                           "source": source})
        assert r.status_code == 200, r.text
        keys[source] = [(row["key"], row["requests"]) for row in r.json()["rows"]]
    assert keys["postgres"] == [("z-model", 3), ("a-model", 1)]
    assert keys["clickhouse"] == keys["postgres"]


@pytest.mark.parametrize("when", [datetime(1969, 7, 20, 20, 17, tzinfo=UTC),
                                  datetime(2200, 1, 1, 12, 0, tzinfo=UTC)])
async def test_clickhouse_day_key_of_an_event_in_the_years_clickhouse_holds(
        database: Database, test_settings: Settings, when: datetime) -> None:
    """ClickHouse holds the years 1900-2299 (docs/analytics.md): an event on a day of those
    years outside 1970-2149 (ClickHouse's Date) counts under that day in /events and in the
    usage report grouped by day, not under a day 180 years away."""
    uid, _ = await make_user(database)
    await add_events(database, [("llm.call", llm_call())], user_id=uid, timestamp=when)
    await export.export_pass(database, test_settings)
    since, until = when - timedelta(days=1), when + timedelta(days=1)
    events = await events_from_clickhouse(test_settings, "day", since, until)
    usage = await usage_from_clickhouse(test_settings, "day", since, until, None)
    day = when.date().isoformat()
    assert ([e["key"] for e in events], [u["key"] for u in usage]) == ([day], [day])

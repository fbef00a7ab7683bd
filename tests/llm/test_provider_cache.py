"""The process's cache of the enabled providers (roost.llm.routing.PROVIDERS): a warm
route sends no statement; a change made through this process applies to the next call,
one made elsewhere as soon as its NOTIFY arrives; a health check does not drop it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from roost.config import Settings
from roost.db.engine import Database
from roost.llm import routing
from tests.support.identity import make_user
from tests.support.listening import Statements
from tests.support.openai_stub import StubServer

pytestmark = pytest.mark.asyncio(loop_scope="session")

Headers = dict[str, str]


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", llm_timeout_s=2.0, llm_local_model=False)


async def _provider(client: httpx.AsyncClient, admin: Headers, stub: StubServer, name: str,
                    model: str) -> str:
    resp = await client.post("/api/v1/llm/providers", headers=admin, json={
        "name": name, "type": "openai", "base_url": stub.base_url, "model": model})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


async def _ask(client: httpx.AsyncClient, headers: Headers, model: str) -> httpx.Response:
    return await client.post("/v1/chat/completions", headers=headers, json={
        "model": model, "messages": [{"role": "user", "content": "hi"}]})


async def test_a_warm_route_sends_nothing_and_this_process_changes_apply_at_once(
        caches_deaf: None, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
        database: Database) -> None:
    first = await _provider(client, admin_headers, stub, "first", "model-a")
    _, alice = await make_user(database)
    assert (await _ask(client, alice, "model-a")).status_code == 200

    statements = Statements(database)
    async with database.transaction() as session:
        statements.counting = True
        rows = await routing.enabled_providers(session)
        statements.counting = False
    assert [r.name for r in rows] == ["first"] and statements.sent == []

    # Added, then disabled, through this process's API: the next call sees each at once.
    await _provider(client, admin_headers, stub, "second", "model-b")
    assert (await _ask(client, alice, "model-b")).status_code == 200
    off = await client.patch(f"/api/v1/llm/providers/{first}", headers=admin_headers,
                             json={"enabled": False})
    assert off.status_code == 200, off.text
    refused = await _ask(client, alice, "model-a")
    assert refused.status_code == 404 and "model-a" in refused.text, refused.text


async def test_a_change_made_elsewhere_applies_on_its_notification(
        caches_listening: None, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
        database: Database) -> None:
    assert routing.PROVIDERS.listening  # the fixture's connection is up
    await _provider(client, admin_headers, stub, "only", "model-a")
    _, alice = await make_user(database)
    assert (await _ask(client, alice, "model-a")).status_code == 200
    generation = routing.PROVIDERS.generation

    # A health check's columns do not concern routing: the cache stays.
    async with database.transaction() as s:
        await s.execute(text("UPDATE llm_providers SET health_status = 'unhealthy', "
                             "response_time = 99, last_health_check_at = now(), "
                             "updated_at = now()"))
    await asyncio.sleep(0.5)  # a notification, had one been sent, has arrived
    assert routing.PROVIDERS.generation == generation

    # Another process (here raw SQL, not this process's sessions) disables the provider.
    async with database.transaction() as s:
        await s.execute(text("UPDATE llm_providers SET enabled = false"))
    deadline = time.monotonic() + 10
    while (answer := await _ask(client, alice, "model-a")).status_code == 200:
        assert time.monotonic() < deadline, "the disabled provider is still asked"
        await asyncio.sleep(0.05)
    assert answer.status_code == 409, answer.text

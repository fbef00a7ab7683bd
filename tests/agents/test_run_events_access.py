"""A run's event stream never ends by itself, so the caller's rights are checked whenever
it wakes: a revoked key, a suspended user or a lost group stop it, as a new request
would be refused (docs/agents.md, "Events")."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from roost.app import create_app
from roost.config import Settings
from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from tests.chat.conftest import sse_events
from tests.support.identity import make_user
from tests.support.server import in_process

Headers = dict[str, str]


@asynccontextmanager
async def _served(test_settings: Settings, database: Database, keys: KeyMaterial
                  ) -> AsyncIterator[httpx.AsyncClient]:
    """The app under uvicorn in this process (no worker: a run stays queued)."""
    app = create_app(test_settings, database=database, keys=keys, configure_logs=False)
    async with in_process(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
        yield http


async def _queued_run(http: httpx.AsyncClient, headers: Headers) -> str:
    agent = await http.post("/api/v1/agents", headers=headers, json={
        "name": "Watched", "slug": f"watched-{uuid.uuid4().hex[:8]}"})
    assert agent.status_code == 201, agent.text
    run = await http.post(f"/api/v1/agents/{agent.json()['id']}/runs", headers=headers,
                          json={"input": "stay queued"})
    assert run.status_code == 202, run.text
    return str(run.json()["id"])


async def _watch_until_told(http: httpx.AsyncClient, run_id: str, watcher: Headers,
                            owner: Headers, key_id: str) -> list[tuple[str, object]]:
    """Open the run's events with ``watcher``, revoke it, wake the stream by cancelling the
    run with ``owner``'s key, and read to the stream's end."""
    async with http.stream("GET", f"/api/v1/runs/{run_id}/events", headers=watcher) as response:
        assert response.status_code == 200
        revoked = await http.delete(f"/api/v1/api-keys/{key_id}", headers=owner)
        assert revoked.status_code == 204, revoked.text
        cancelled = await http.post(f"/api/v1/runs/{run_id}/cancel", headers=owner)
        assert cancelled.status_code == 200, cancelled.text
        text = await asyncio.wait_for(response.aread(), 30)
    return sse_events(text.decode())


async def test_a_run_event_stream_ends_when_the_key_it_was_opened_with_is_revoked(
    test_settings: Settings, database: Database, test_keys: KeyMaterial, tmp_path: Path,
) -> None:
    """The owner of a leaked key revokes it: a stream opened with it does not go on
    showing the run (its end included)."""
    _, owner = await make_user(database)
    async with _served(test_settings, database, test_keys) as http:
        created = await http.post("/api/v1/api-keys", headers=owner, json={"name": "watcher"})
        assert created.status_code == 201, created.text
        watcher = {"Authorization": f"Bearer {created.json()['key']}"}
        run_id = await _queued_run(http, owner)
        got = await _watch_until_told(http, run_id, watcher, owner, created.json()["id"])
    assert [name for name, _ in got] == ["error"], got
    assert got[-1][1]["status"] == 401  # type: ignore[index]


async def test_a_run_event_stream_whose_key_lives_goes_on_to_the_end(
    test_settings: Settings, database: Database, test_keys: KeyMaterial, tmp_path: Path,
) -> None:
    """The check never ends a stream whose caller still has its rights."""
    _, owner = await make_user(database)
    async with _served(test_settings, database, test_keys) as http:
        created = await http.post("/api/v1/api-keys", headers=owner, json={"name": "other"})
        run_id = await _queued_run(http, owner)
        async with http.stream("GET", f"/api/v1/runs/{run_id}/events",
                               headers=owner) as response:
            assert (await http.delete(f"/api/v1/api-keys/{created.json()['id']}",
                                      headers=owner)).status_code == 204
            assert (await http.post(f"/api/v1/runs/{run_id}/cancel",
                                    headers=owner)).status_code == 200
            text = await asyncio.wait_for(response.aread(), 30)
    got = sse_events(text.decode())
    assert [name for name, _ in got] == ["end"], got
    assert got[-1][1]["status"] == "cancelled"  # type: ignore[index]

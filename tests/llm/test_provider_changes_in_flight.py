"""An administrator editing or deleting a provider while calls on it are in flight: the
calls finish (its instance is closed only once they end, roost.llm.leases) and are
recorded at once, their attempts no longer naming a deleted provider; a health check or
model sync overlapping an edit stores nothing about the old server as the edited one's."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from roost.config import Settings
from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from roost.llm import leases, routing
from roost.llm.deps import app_gateway
from roost.llm.errors import ProviderUnavailable
from roost.llm.gateway import LLMGateway
from roost.llm.types import ChatRequest, ChatResult
from tests.chat.conftest import add_provider
from tests.llm.sse import v1_frames
from tests.support.identity import make_user
from tests.support.openai_stub import Fail, Models, Reply, StubServer

Headers = dict[str, str]
MSG = [{"role": "user", "content": "hello"}]
SLOW_STREAM = Reply(" ".join(f"w{i}" for i in range(20)), chunk_delay_ms=50)


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", llm_timeout_s=5.0, llm_local_model=False)


@pytest.fixture
async def user(database: Database) -> tuple[uuid.UUID, Headers]:
    return await make_user(database)


async def _post(client: httpx.AsyncClient, headers: Headers, **body: Any) -> httpx.Response:
    payload = {"model": "stub-model", "messages": MSG, **body}
    return await client.post("/v1/chat/completions", headers=headers, json=payload)


async def _delete_soon(client: httpx.AsyncClient, admin: Headers, pid: str) -> int:
    await asyncio.sleep(0.3)
    return (await client.delete(f"/api/v1/llm/providers/{pid}", headers=admin)).status_code


async def _requests(database: Database) -> list[tuple[str, int, int]]:
    """Each request's status, its attempts' rows, and those of them naming a provider."""
    async with database.transaction() as s:
        rows = await s.execute(text(
            "SELECT q.status, count(r.id), count(r.provider_id) FROM llm_requests q "
            "LEFT JOIN llm_responses r ON r.request_id = q.id "
            "GROUP BY q.id, q.status, q.created_at ORDER BY q.created_at"))
        return [(row[0], row[1], row[2]) for row in rows]


async def test_a_stream_whose_provider_is_deleted_meanwhile_finishes_and_is_recorded(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], database: Database,
) -> None:
    pid = str((await add_provider(client, admin_headers, stub))["id"])
    stub.script(SLOW_STREAM)
    resp, deleted = await asyncio.gather(_post(client, user[1], stream=True),
                                         _delete_soon(client, admin_headers, pid))
    assert deleted == 204
    frames = v1_frames(resp.text)
    assert frames[-1] == "[DONE]", resp.text
    assert "w19" in "".join(f["choices"][0]["delta"].get("content", "")
                            for f in frames[:-1] if f["choices"])
    assert await _requests(database) == [("completed", 1, 0)]


async def test_a_call_whose_provider_is_deleted_meanwhile_is_answered_and_recorded(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], database: Database,
) -> None:
    pid = str((await add_provider(client, admin_headers, stub))["id"])
    stub.script(Reply("slow answer", delay_ms=800))
    resp, deleted = await asyncio.gather(_post(client, user[1]),
                                         _delete_soon(client, admin_headers, pid))
    assert deleted == 204
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"] == "slow answer"
    assert await _requests(database) == [("completed", 1, 0)]


async def test_a_failed_call_whose_provider_is_deleted_meanwhile_is_recorded_failed(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], database: Database,
) -> None:
    pid = str((await add_provider(client, admin_headers, stub))["id"])
    stub.script(Fail(400, "rejected", delay_ms=800))
    resp, deleted = await asyncio.gather(_post(client, user[1]),
                                         _delete_soon(client, admin_headers, pid))
    assert deleted == 204
    assert resp.status_code == 400, resp.text
    assert await _requests(database) == [("failed", 1, 0)]  # not left running


async def test_editing_a_provider_does_not_break_the_streams_in_flight_on_it(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], database: Database,
) -> None:
    """Even a change of weight rebuilds the instance: the old one serves its stream to
    the end, the next call uses the new one."""
    pid = str((await add_provider(client, admin_headers, stub))["id"])
    stub.script(SLOW_STREAM)

    async def edit_then_call() -> None:
        await asyncio.sleep(0.3)
        resp = await client.patch(f"/api/v1/llm/providers/{pid}", json={"weight": 2},
                                  headers=admin_headers)
        assert resp.status_code == 200, resp.text
        assert (await _post(client, user[1])).status_code == 200

    resp, _ = await asyncio.gather(_post(client, user[1], stream=True), edit_then_call())
    assert v1_frames(resp.text)[-1] == "[DONE]", resp.text
    assert [status for status, _, _ in await _requests(database)] == ["completed", "completed"]


class _Provider:
    """Just enough of a provider to count its closes."""

    name, default_model = "counted", None

    def __init__(self) -> None:
        self.closed = 0

    async def chat(self, request: ChatRequest) -> ChatResult:
        return ChatResult(content="ok")

    async def aclose(self) -> None:
        self.closed += 1


async def test_an_instance_is_closed_when_its_last_call_ends_and_then_refuses_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A retired instance in use is closed by its last call's end, once, an unused one
    after the grace period; a call that starts on it later (a route resolved long before
    the edit) is an unavailable provider, which the gateway may fall back from, never an
    internal error."""
    monkeypatch.setattr(leases, "GRACE_S", 0.01)
    idle = _Provider()
    await leases.retire(idle)  # type: ignore[arg-type]
    assert idle.closed == 0
    await asyncio.sleep(0.1)
    assert idle.closed == 1
    provider = _Provider()
    request = ChatRequest(messages=[])
    async with leases.held(provider):  # type: ignore[arg-type]
        async with leases.held(provider):  # type: ignore[arg-type]
            await leases.retire(provider)  # type: ignore[arg-type]
        assert provider.closed == 0
        assert (await leases.chat(provider, request)).content == "ok"  # type: ignore[arg-type]
    assert provider.closed == 1
    with pytest.raises(ProviderUnavailable):
        await leases.chat(provider, request)  # type: ignore[arg-type]
    await leases.retire(provider)  # type: ignore[arg-type]
    assert provider.closed == 1


async def test_a_route_kept_across_calls_is_stale_once_a_provider_of_it_is_edited(
    app: FastAPI, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    database: Database,
) -> None:
    """An agent run keeps its route across steps: once an administrator edits one of its
    providers (and the pool replaces the instance), the route says it is stale, so the
    run's next step resolves it again and uses the edited provider, not the retired
    instance (closed after its grace period: every later step would have failed)."""
    pid = str((await add_provider(client, admin_headers, stub))["id"])
    gateway = app_gateway(app)
    async with database.transaction() as session:
        kept = await routing.resolve_route(session, gateway, "stub-model")
    assert not kept.stale()
    edited = await client.patch(f"/api/v1/llm/providers/{pid}", headers=admin_headers,
                                json={"weight": 2})
    assert edited.status_code == 200, edited.text
    async with database.transaction() as session:  # any later call meets the new row
        fresh = await routing.resolve_route(session, gateway, "stub-model")
    assert kept.stale() and not fresh.stale()
    assert fresh.members[0][1] is not kept.members[0][1]


async def test_a_provider_deleted_or_disabled_through_another_process_is_closed_here(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    test_settings: Settings, test_keys: KeyMaterial, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only the process that deletes a provider is told to drop its instance: every other
    one (API server or worker) that built one closes it at its next route, a call still in
    flight on it first finishing; a disabled provider's instance is closed alike, the
    others' are kept."""
    monkeypatch.setattr(leases, "GRACE_S", 0.05)
    ids = {name: str((await add_provider(client, admin_headers, stub, name=name,
                                         model=f"m-{name}"))["id"])
           for name in ("gone", "off", "kept")}
    other = LLMGateway.build(database, test_settings, test_keys)  # another process's
    try:
        instances = {}
        for name in ids:
            async with other.transaction(None) as session:
                route = await routing.resolve_route(session, other, f"m-{name}")
            instances[name] = route.members[0][1]
        async with leases.held(instances["gone"]):  # a call in flight there meanwhile
            deleted = await client.delete(f"/api/v1/llm/providers/{ids['gone']}",
                                          headers=admin_headers)
            assert deleted.status_code == 204, deleted.text
            off = await client.patch(f"/api/v1/llm/providers/{ids['off']}",
                                     headers=admin_headers, json={"enabled": False})
            assert off.status_code == 200, off.text
            async with other.transaction(None) as session:  # its next call
                route = await routing.resolve_route(session, other, "m-kept")
            assert route.members[0][1] is instances["kept"]
            assert leases.retired(instances["gone"]) and leases.retired(instances["off"])
            await asyncio.sleep(0.2)  # past the grace period: the idle one is closed ...
            async with leases.held(instances["gone"]):  # ... not the one in use
                pass
        for name in ("gone", "off"):  # the in-flight call has ended: both closed
            with pytest.raises(ProviderUnavailable):
                async with leases.held(instances[name]):
                    pass
        assert not leases.retired(instances["kept"])
    finally:
        await other.pool.aclose()


async def _patch_soon(client: httpx.AsyncClient, admin: Headers, pid: str,
                      **fields: Any) -> httpx.Response:
    await asyncio.sleep(0.3)
    return await client.patch(f"/api/v1/llm/providers/{pid}", json=fields, headers=admin)


async def test_a_model_sync_overlapping_a_base_url_change_is_a_409_storing_nothing(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, stub_b: StubServer,
) -> None:
    """A model sync whose slow answer comes from the old base_url, after an edit moved the
    provider to another server, stores none of the old server's models (routing would send
    them to the new one): a 409 saying to sync again, which then lists the new server's."""
    pid = str((await add_provider(client, admin_headers, stub))["id"])
    stub.script(Models(ids=("old-only",), delay_ms=800))
    stub_b.script(Models(ids=("new-only",), times=None))
    synced, changed = await asyncio.gather(
        client.post(f"/api/v1/llm/providers/{pid}/sync-models", headers=admin_headers),
        _patch_soon(client, admin_headers, pid, base_url=stub_b.base_url))
    assert changed.status_code == 200, changed.text
    assert synced.status_code == 409 and "sync again" in synced.text, synced.text
    row = (await client.get(f"/api/v1/llm/providers/{pid}", headers=admin_headers)).json()
    assert row["base_url"] == stub_b.base_url
    assert row["models"] == {"stub-model": True} and row["last_models_sync"] is None, row
    again = await client.post(f"/api/v1/llm/providers/{pid}/sync-models", headers=admin_headers)
    assert again.status_code == 200, again.text
    assert set(again.json()["models"]) == {"new-only", "stub-model"}


async def test_a_health_check_overlapping_a_base_url_change_stores_no_stale_status(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
) -> None:
    """A health check whose slow 'healthy' comes from the old base_url, after an edit moved
    the provider to a dead port, is not stored as the new URL's health: the answer is the
    row as it stands, and the next check tells the truth."""
    pid = str((await add_provider(client, admin_headers, stub))["id"])
    stub.script(Models(delay_ms=800))
    dead = "http://127.0.0.1:9/v1"
    checked, changed = await asyncio.gather(
        client.post(f"/api/v1/llm/providers/{pid}/health", headers=admin_headers),
        _patch_soon(client, admin_headers, pid, base_url=dead))
    assert changed.status_code == 200, changed.text
    assert checked.status_code == 200, checked.text
    row = (await client.get(f"/api/v1/llm/providers/{pid}", headers=admin_headers)).json()
    assert row["base_url"] == dead and checked.json() == row
    assert row["health_status"] == "unknown" and row["last_health_check_at"] is None, row
    again = await client.post(f"/api/v1/llm/providers/{pid}/health", headers=admin_headers)
    assert again.status_code == 200 and again.json()["health_status"] == "unhealthy", again.text

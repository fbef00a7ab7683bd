"""Free calls (ROOST_LLM_CREDITS_PER_1K_TOKENS=0, billing_tool_call_credits=0): nothing
is held or charged, and a balance of 0 refuses none of them; what refuses any charge (a
paused subscription) still refuses them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from roost.config import Settings, get_settings
from roost.db.engine import Database
from tests.billing.metered import Headers, subscribe
from tests.support.identity import make_user
from tests.support.openai_stub import StubServer


@pytest.fixture
def test_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    # The app's settings, and the process's (what an agent run's plan check reads).
    monkeypatch.setenv("ROOST_LLM_CREDITS_PER_1K_TOKENS", "0")
    monkeypatch.setenv("ROOST_BILLING_TOOL_CALL_CREDITS", "0")
    get_settings.cache_clear()
    yield Settings(data_dir=tmp_path / "data", llm_timeout_s=5, llm_local_model=False,
                    llm_credits_per_1k_tokens=0.0, billing_tool_call_credits=0)
    monkeypatch.undo()
    get_settings.cache_clear()


async def _provider(client: httpx.AsyncClient, admin: Headers, stub: StubServer) -> None:
    resp = await client.post("/api/v1/llm/providers", headers=admin, json={
        "name": "stub", "type": "openai", "base_url": stub.base_url, "model": "stub-model"})
    assert resp.status_code == 201, resp.text


async def _chat(client: httpx.AsyncClient, headers: Headers) -> httpx.Response:
    return await client.post("/v1/chat/completions", headers=headers, json={
        "model": "stub-model", "max_tokens": 500,
        "messages": [{"role": "user", "content": "hi"}]})


async def _counters(database: Database, sub: str) -> Any:
    async with database.transaction() as s:
        return (await s.execute(text(
            "SELECT credits_used, credits_reserved, credits_limit FROM subscriptions "
            "WHERE id = :id"), {"id": sub})).one()


async def test_free_model_calls_are_not_refused_on_a_zero_balance(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
) -> None:
    """A model call at a rate of 0 costs nothing: a subscriber with a balance of 0 makes it
    (it was a 402 "this needs 1": every hold was at least one credit), and so may start
    an agent run when tool calls are free too (402 "the balance is 0")."""
    user_id, headers = await make_user(database)
    await _provider(client, admin_headers, stub)
    sub = await subscribe(client, admin_headers, user_id, 0)
    answer = await _chat(client, headers)
    assert answer.status_code == 200, answer.text
    row = await _counters(database, sub)
    assert (row.credits_used, row.credits_reserved) == (0, 0)
    agent = await client.post("/api/v1/agents", headers=headers,
                              json={"name": "Free", "slug": "free"})
    assert agent.status_code == 201, agent.text
    run = await client.post(f"/api/v1/agents/{agent.json()['id']}/runs", headers=headers,
                            json={"input": "hi"})
    assert run.status_code == 202, run.text

"""Ensembles on /v1/chat/completions: every provider named is asked or the call is refused
(never fewer, silently), and weighted_vote groups equal tool calls however written."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from roost.config import Settings
from roost.db.engine import Database
from tests.llm.test_gateway_v1 import _provider
from tests.support.identity import make_user
from tests.support.openai_stub import Call, Reply, StubServer, ToolCalls

Headers = dict[str, str]


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", llm_timeout_s=1.5, llm_local_model=False,
                    llm_max_ensemble=3, max_request_bytes=256 * 1024)


@pytest.fixture
async def user(database: Database) -> tuple[uuid.UUID, Headers]:
    return await make_user(database)


MSG = [{"role": "user", "content": "hi"}]


async def test_naming_more_providers_than_the_maximum_is_not_silently_truncated(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, stub_b: StubServer,
    stub_c: StubServer, user: tuple[uuid.UUID, Headers], database: Database,
) -> None:
    """Four providers named with ROOST_LLM_MAX_ENSEMBLE=3: a 400 naming the limit (the
    first three were asked, the call answered as if the fourth had been)."""
    for s, n in ((stub, "a"), (stub_b, "b"), (stub_c, "c"), (stub, "d")):
        await _provider(client, admin_headers, s, n)
    resp = await client.post("/v1/chat/completions", headers=user[1], json={
        "model": "stub-model", "messages": MSG,
        "ensemble": {"strategy": "weighted_vote", "providers": ["a", "b", "c", "d"]}})
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["param"] == "ensemble.providers" and "at most 3" in error["message"], error
    assert stub.requests(path="/v1/chat/completions") == []


async def test_n_smaller_than_the_named_providers_is_not_silently_truncated(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, stub_b: StubServer,
    user: tuple[uuid.UUID, Headers], database: Database,
) -> None:
    """`providers: ["a", "b"], n: 1` contradicts itself: a 400 naming n (it was a
    one-member 'ensemble' that dropped a named provider)."""
    await _provider(client, admin_headers, stub, "a")
    await _provider(client, admin_headers, stub_b, "b")
    resp = await client.post("/v1/chat/completions", headers=user[1], json={
        "model": "stub-model", "messages": MSG,
        "ensemble": {"providers": ["a", "b"], "n": 1}})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == "ensemble.n", resp.text
    assert stub.requests(path="/v1/chat/completions") == []


async def test_weighted_vote_groups_equal_tool_calls_whatever_their_key_order(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, stub_b: StubServer,
    user: tuple[uuid.UUID, Headers],
) -> None:
    """Two members calling the same tool with the same arguments (JSON keys in another
    order) give one answer and outvote a heavier different one (weights 1 + 1 > 1.5):
    grouped by their raw text, they voted apart and the lone "no tool" answer won."""
    await _provider(client, admin_headers, stub, "a", weight=1.0)
    await _provider(client, admin_headers, stub, "c", weight=1.0)
    await _provider(client, admin_headers, stub_b, "b", weight=1.5)
    stub.script(ToolCalls(Call("f", '{"x": 1, "y": 2}')), ToolCalls(Call("f", '{"y": 2, "x": 1}')))
    stub_b.script(Reply("no tool", times=None))
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    resp = await client.post("/v1/chat/completions", headers=user[1], json={
        "model": "stub-model", "messages": MSG, "tools": tools,
        "ensemble": {"strategy": "weighted_vote"}})
    assert resp.status_code == 200, resp.text
    message = resp.json()["choices"][0]["message"]
    assert message.get("tool_calls"), message

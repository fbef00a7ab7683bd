"""A stream that broke off after delivering text (the provider dropped it, the client hung
up) is billed the tokens delivered, and its books agree: the attempt's ``llm_responses``
row, the usage row, the credits charged and the ``llm.call`` event show the same tokens
and name the provider that produced them."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from roost.config import Settings
from roost.db.engine import Database
from tests.billing.metered import Headers, metered_settings, settled, subscribe
from tests.chat.conftest import add_provider, new_session
from tests.support.identity import make_user
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Drop, Reply
from tests.support.server import in_process
from tests.support.sql import fetch


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return metered_settings(tmp_path, llm_credits_per_1k_tokens=1000.0, llm_timeout_s=2.0)


async def _user(client: httpx.AsyncClient, admin_headers: Headers, database: Database,
                credits: int = 100_000) -> tuple[uuid.UUID, Headers]:
    user_id, headers = await make_user(database)
    await subscribe(client, admin_headers, user_id, credits)
    return user_id, headers


async def _books(database: Database, user_id: uuid.UUID) -> dict[str, Any]:
    """Per the user's single request: responses, usage row, analytics event, ledger."""
    [req] = await fetch(database, "SELECT id, status FROM llm_requests WHERE user_id = :u",
                        u=user_id)
    responses = await fetch(database, "SELECT provider_id, provider_name, tokens_prompt, "
                            "tokens_completion, tokens_total, outcome, selected, "
                            "raw_response "
                            "FROM llm_responses WHERE request_id = :r", r=req.id)
    [usage] = await fetch(database, "SELECT * FROM usage_records WHERE llm_request_id = :r",
                          r=req.id)
    events = await fetch(database, "SELECT event_data FROM clickhouse_analytics "
                         "WHERE event_type = 'llm.call' AND event_data->>'request_id' = :r",
                         r=str(req.id))
    state = await settled(database, user_id)
    return {"req": req, "responses": responses, "usage": usage,
            "events": [e.event_data for e in events], "state": state}


async def _stream_cut_by_the_provider(client: httpx.AsyncClient, stub: StubServer,
                                      headers: Headers) -> None:
    """A /v1 stream the provider drops after delivering ten of its fifty words."""
    stub.script(Drop(" ".join(["word"] * 50), after=10))
    resp = await client.post("/v1/chat/completions", headers=headers, json={
        "model": "stub-model", "stream": True, "max_tokens": 500,
        "messages": [{"role": "user", "content": "hello there"}]})
    assert resp.status_code == 200


def _event_agrees(books: dict[str, Any]) -> None:
    usage = books["usage"]
    [event] = books["events"]
    assert (event["tokens_input"], event["tokens_output"], event["credits"],
            event["success"]) == (usage.tokens_input, usage.tokens_output,
                                  usage.credits_used, usage.success), (event, usage)
    assert Decimal(event["cost"]) == usage.cost, (event, usage.cost)


async def test_a_stream_the_provider_cuts_records_its_billed_tokens_on_its_attempt(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
) -> None:
    """A /v1 stream the provider drops mid-way is billed its delivered tokens; its
    llm_responses row shows the same tokens (not 0)."""
    await add_provider(client, admin_headers, stub)
    user_id, headers = await _user(client, admin_headers, database)
    await _stream_cut_by_the_provider(client, stub, headers)
    books = await _books(database, user_id)
    assert books["req"].status == "failed"
    usage = books["usage"]
    assert usage.credits_used > 0, usage
    assert books["state"] == {"used": usage.credits_used, "reserved": 0, "held": 0}
    _event_agrees(books)
    [attempt] = books["responses"]
    assert (attempt.tokens_prompt, attempt.tokens_completion) == (
        usage.tokens_input, usage.tokens_output), (attempt, usage)
    # The stub sent no usage before the break: the counts are estimated, and say so.
    assert attempt.raw_response["usage_estimated"] == ["tokens_in", "tokens_out"]


async def test_a_billed_broken_stream_names_its_provider_in_the_ledger(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
) -> None:
    """A broken stream that is billed names, in its usage row and llm.call event, the
    provider that produced the text (usage by provider must not lose billed tokens)."""
    provider = await add_provider(client, admin_headers, stub)
    user_id, headers = await _user(client, admin_headers, database)
    await _stream_cut_by_the_provider(client, stub, headers)
    books = await _books(database, user_id)
    assert books["usage"].credits_used > 0
    assert str(books["usage"].provider_id) == provider["id"], books["usage"].provider_id
    assert books["events"][0]["provider"] == "stub", books["events"]
    by_provider = await client.get("/api/v1/billing/usage", headers=headers,
                                   params={"group_by": "provider"})
    assert by_provider.status_code == 200, by_provider.text
    rows = by_provider.json()["rows"]
    assert [(r["label"], r["credits_used"]) for r in rows] == [
        ("stub", books["usage"].credits_used)], rows


async def test_a_chat_stream_the_client_cuts_records_its_billed_tokens_on_its_attempt(
    app: FastAPI, admin_headers: Headers, stub: StubServer, database: Database,
) -> None:
    """A chat stream the client cuts is billed its delivered tokens; its llm_responses
    row shows the same tokens (not 0)."""
    user_id, headers = await make_user(database)
    async with in_process(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
        await add_provider(http, admin_headers, stub)
        await subscribe(http, admin_headers, user_id, 100_000)
        sid = (await new_session(http, headers))["id"]
        stub.script(Reply(" ".join(["word"] * 300), chunk_delay_ms=20))
        frames = 0
        async with http.stream("POST", f"/api/v1/chat/sessions/{sid}/messages",
                               headers=headers, json={"content": "x", "stream": True}) as resp:
            async for line in resp.aiter_lines():
                frames += line.startswith("data:")
                if frames >= 40:
                    break
        for _ in range(100):
            rows = await fetch(database, "SELECT status FROM llm_requests WHERE user_id = :u",
                               u=user_id)
            if rows and rows[0].status == "failed":
                break
            await asyncio.sleep(0.1)
    books = await _books(database, user_id)
    usage = books["usage"]
    assert usage.credits_used > 0
    assert books["state"] == {"used": usage.credits_used, "reserved": 0, "held": 0}
    _event_agrees(books)
    [attempt] = books["responses"]
    assert attempt.tokens_total == usage.tokens_input + usage.tokens_output, (attempt, usage)

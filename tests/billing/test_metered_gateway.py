"""``/v1/chat/completions`` for a metered user, where the answer is not one provider's whole
answer: an ensemble bills every member's tokens (and holds for every member asked); a
stream the client cuts short bills the tokens it received."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from roost.config import Settings
from roost.db.engine import Database
from tests.billing.metered import Headers, metered_settings, settled, subscribe
from tests.chat.conftest import add_provider, new_session, post_message
from tests.support.identity import make_user
from tests.support.openai_stub import Reply, StubServer
from tests.support.server import in_process
from tests.support.sql import fetch


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return metered_settings(tmp_path, llm_credits_per_1k_tokens=1000.0)  # a credit a token


async def _usage_tokens(database: Database, user_id: uuid.UUID) -> int:
    [row] = await fetch(database, "SELECT coalesce(sum(tokens_input + tokens_output), 0) AS n "
                                  "FROM usage_records WHERE user_id = :u", u=user_id)
    return int(row.n)


async def test_an_ensemble_bills_the_tokens_of_every_member_that_answered(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
) -> None:
    user_id, headers = await make_user(database)
    for name in ("a", "b", "c"):
        await add_provider(client, admin_headers, stub, name=name)
    await subscribe(client, admin_headers, user_id, 100_000)
    resp = await client.post("/v1/chat/completions", headers=headers, json={
        "model": "stub-model", "max_tokens": 10,
        "messages": [{"role": "user", "content": "hello"}],
        "ensemble": {"strategy": "weighted_vote"}})
    assert resp.status_code == 200, resp.text
    assert len(stub.requests(path="/v1/chat/completions")) == 3
    [members] = await fetch(database, "SELECT sum(tokens_total) AS n, count(*) AS answers "
                                      "FROM llm_responses WHERE outcome = 'success'")
    assert members.answers == 3
    state = await settled(database, user_id)
    assert (state["held"], state["reserved"]) == (0, 0), state
    assert await _usage_tokens(database, user_id) == members.n
    assert state["used"] == members.n, (state, members.n)


async def test_each_ensemble_member_is_priced_at_its_own_model(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
) -> None:
    """Two providers with different default models, one priced 1,000x the other: the
    ensemble's cost is each member's tokens at its own model's price, whichever won
    (not the winner's price for every member)."""
    user_id, headers = await make_user(database)
    await add_provider(client, admin_headers, stub, name="cheap", model="cheap-model")
    await add_provider(client, admin_headers, stub, name="dear", model="dear-model")
    for pattern, price in (("cheap-model", "1"), ("dear-model", "1000")):
        resp = await client.post("/api/v1/billing/prices", headers=admin_headers, json={
            "model_pattern": pattern, "input_per_million": price,
            "output_per_million": price})
        assert resp.status_code == 201, resp.text
    session = await new_session(client, headers)
    resp = await post_message(client, headers, session["id"], content="hello",
                              ensemble={"strategy": "weighted_vote"})
    assert resp.status_code in (200, 201), resp.text
    members = await fetch(database, "SELECT r.model, r.tokens_total FROM llm_responses r "
                                    "WHERE r.outcome = 'success' ORDER BY r.model")
    assert [m.model for m in members] == ["cheap-model", "dear-model"]
    per_million = {"cheap-model": Decimal(1), "dear-model": Decimal(1000)}
    expected = sum((Decimal(m.tokens_total) * per_million[m.model] / 10**6 for m in members),
                   Decimal(0))
    [usage] = await fetch(database, "SELECT cost FROM usage_records WHERE user_id = :u",
                          u=user_id)
    assert usage.cost == expected.quantize(Decimal("0.000001")), (usage.cost, expected)


async def test_an_ensemble_holds_credits_for_every_member_it_asks(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
) -> None:
    """One member's estimate (2 prompt tokens + max_tokens 10) fits the balance of 20,
    three do not: the ensemble is a 402 before any provider is asked."""
    user_id, headers = await make_user(database)
    for name in ("a", "b", "c"):
        await add_provider(client, admin_headers, stub, name=name)
    await subscribe(client, admin_headers, user_id, 20)
    body = {"model": "stub-model", "max_tokens": 10,
            "messages": [{"role": "user", "content": "hello"}]}
    resp = await client.post("/v1/chat/completions", headers=headers,
                             json={**body, "ensemble": {"strategy": "weighted_vote"}})
    assert resp.status_code == 402, resp.text
    assert stub.requests(path="/v1/chat/completions") == []
    alone = await client.post("/v1/chat/completions", headers=headers, json=body)
    assert alone.status_code == 200, alone.text


async def test_a_stream_the_client_cuts_pays_for_the_tokens_it_received(
    app: FastAPI, admin_headers: Headers, stub: StubServer, database: Database,
) -> None:
    """The client reads about 60 words of a 400-word streamed answer and hangs up: the
    request is failed (cancelled), and its usage row and charge are the tokens delivered
    (estimated from the text: the stub sends no usage before its last chunk), not 0 and
    not the whole answer's; the rest of the hold is given back."""
    user_id, headers = await make_user(database)
    async with in_process(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
        await add_provider(http, admin_headers, stub)
        await subscribe(http, admin_headers, user_id, 100_000)
        stub.script(Reply(" ".join(["word"] * 400), chunk_delay_ms=30))
        frames = 0
        async with http.stream("POST", "/v1/chat/completions", headers=headers, json={
                "model": "stub-model", "max_tokens": 2000, "stream": True,
                "messages": [{"role": "user", "content": "x"}]}) as resp:
            assert resp.status_code == 200
            async for line in resp.aiter_lines():
                frames += line.startswith("data:")
                if frames >= 60:  # about 60 words of the answer delivered, then hang up
                    break
        for _ in range(100):  # the server notices, records the call and settles
            [request] = await fetch(database, "SELECT status FROM llm_requests "
                                              "WHERE user_id = :u", u=user_id)
            if request.status == "failed":
                break
            await asyncio.sleep(0.1)
    assert request.status == "failed"
    state = await settled(database, user_id)
    assert (state["held"], state["reserved"]) == (0, 0), state
    [usage] = await fetch(database, "SELECT tokens_input, tokens_output, credits_used, success "
                                    "FROM usage_records WHERE user_id = :u", u=user_id)
    assert usage.success is False
    # ~60 words of "word " (5 characters, about a token and a quarter each) delivered:
    # well above nothing, well below the 400-word answer.
    assert 20 <= usage.tokens_output <= 250, usage
    assert usage.tokens_input > 0
    assert state["used"] == usage.credits_used == usage.tokens_input + usage.tokens_output

"""Debates, memory learning (extraction and reconciliation) and chat summaries for a
metered user: each completes and pays for its model calls, every credit hold settled; when
the balance cannot cover a call, it fails (or is refused) saying "not enough credits",
nothing left held."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from roost.chat import summaries
from roost.config import Settings
from roost.db.engine import Database
from roost.debates import jobs as _debate_jobs  # noqa: F401 - debates.run, for the worker
from roost.errors import RoostError
from roost.llm.deps import app_gateway
from roost.memory import learning
from roost.memory.recall import usable_embedder
from roost.memory.service import Scope
from roost.principal import Principal
from roost.tasks.worker import Worker
from tests.agents.conftest import make_agent, worker  # noqa: F401
from tests.billing.metered import Headers, assert_settled, metered_settings, metered_user, settled, subscribe
from tests.chat.conftest import add_provider
from tests.debates.conftest import start, wait_for_debate
from tests.support.identity import make_user
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Reply

DEBATE = {"topic": "Cats or dogs?", "positions": ["cats", "dogs"], "total_rounds": 1,
          "voting_method": "borda"}


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return metered_settings(tmp_path)


# --------------------------------------------------------------------------- debates


async def test_a_debate_completes_and_pays_for_each_turn_and_vote(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    worker: Worker,  # noqa: F811
) -> None:
    user_id, headers = await metered_user(client, admin_headers, stub, database, 100)
    agent = await make_agent(database, user_id, system_prompt="You are a grumpy cat.",
                             preferred_model="stub-model")
    stub.script(Reply("Cats rule.\nConfidence: 0.9"), Reply("Dogs rule.\nConfidence: 0.8"),
                Reply(json={"ranking": ["cats", "dogs"], "confidence": 1}),
                Reply(json={"ranking": ["dogs", "cats"], "confidence": 1}))
    created = await start(client, headers, **DEBATE, participants=[
        {"id": "tom", "agent_id": str(agent.id)},
        {"id": "rex", "model": "stub-model", "position": "dogs"}])
    done = await wait_for_debate(client, headers, created["id"])
    assert done["status"] == "completed", done
    await assert_settled(database, user_id, used_at_least=4)


async def test_a_debate_without_credits_is_refused_or_fails_before_any_model_call(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    worker: Worker,  # noqa: F811
) -> None:
    user_id, headers = await metered_user(client, admin_headers, stub, database, 0)
    resp = await client.post("/api/v1/debates", json={**DEBATE, "participants": [
        {"id": "tom", "model": "stub-model"}, {"id": "rex", "model": "stub-model"}]},
        headers=headers)
    assert resp.status_code != 500, resp.text
    if resp.status_code == 202:
        done = await wait_for_debate(client, headers, resp.json()["id"])
        assert done["status"] == "failed", done
        assert "not enough credits" in str(done), done
    else:
        assert resp.status_code == 402 and "not enough credits" in resp.text, resp.text
    assert stub.requests(path="/v1/chat/completions") == []
    assert await settled(database, user_id) == {"used": 0, "reserved": 0, "held": 0}


async def test_a_debate_whose_credits_run_out_after_the_first_turn_fails_saying_so(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    worker: Worker,  # noqa: F811
) -> None:
    """The first turn (800 max tokens: 1 credit held) covered, the second not."""
    user_id, headers = await metered_user(client, admin_headers, stub, database, 1)
    stub.script(Reply("Cats rule.\nConfidence: 0.9"), Reply("Dogs rule.\nConfidence: 0.8"))
    created = await start(client, headers, **DEBATE, participants=[
        {"id": "tom", "model": "stub-model"}, {"id": "rex", "model": "stub-model"}])
    done = await wait_for_debate(client, headers, created["id"])
    assert done["status"] == "failed", done
    assert "not enough credits" in str(done), done
    await assert_settled(database, user_id)


# --------------------------------------------------------------------------- memory learning


def _person(user_id: uuid.UUID) -> Principal:
    return Principal(user_id=user_id, is_admin=False, kind="job")


async def _learn(app: FastAPI, database: Database, user_id: uuid.UUID,
                 words: str) -> learning.LearnReport:
    gateway = app_gateway(app)
    return await learning.learn(
        database, gateway, _person(user_id), Scope(user_id), source_type="manual",
        source_id=None, text=words, embedder=usable_embedder(gateway.settings))


async def test_memory_learning_extracts_and_reconciles_and_settles(
    app: FastAPI, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    database: Database,
) -> None:
    user_id, _ = await make_user(database)
    await add_provider(client, admin_headers, stub)
    await subscribe(client, admin_headers, user_id, 100)
    fact = {"content": "The user likes green tea", "memory_type": "fact", "confidence": 0.9}
    stub.script(Reply(json={"facts": [fact]}),
                Reply(json={"facts": [{**fact, "content": "The user likes black tea"}]}),
                Reply(json={"decisions": [{"fact_index": 0, "action": "add"}]}))
    for words in ("I like green tea.", "Actually I like black tea."):
        report = await _learn(app, database, user_id, words)
        assert report.request_ids
    await assert_settled(database, user_id, used_at_least=2)


async def test_memory_learning_without_credits_raises_402(
    app: FastAPI, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    database: Database,
) -> None:
    user_id, _ = await make_user(database)
    await add_provider(client, admin_headers, stub)
    await subscribe(client, admin_headers, user_id, 0)
    with pytest.raises(RoostError) as caught:
        await _learn(app, database, user_id, "I like tea.")
    assert caught.value.status == 402 and "not enough credits" in caught.value.detail
    assert await settled(database, user_id) == {"used": 0, "reserved": 0, "held": 0}


# --------------------------------------------------------------------------- chat summaries


async def test_a_chat_summary_pays_and_one_the_balance_cannot_cover_raises_402(
    app: FastAPI, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    database: Database,
) -> None:
    user_id, headers = await metered_user(client, admin_headers, stub, database, 3)
    sid = (await client.post("/api/v1/chat/sessions", json={}, headers=headers)).json()["id"]
    resp = await client.post(f"/api/v1/chat/sessions/{sid}/messages", headers=headers,
                             json={"content": "note to self", "reply": False})
    assert resp.status_code == 201, resp.text
    gateway = app_gateway(app)
    stub.script(Reply("A note.\nTopics: notes"))
    await summaries.summarize_session(gateway, uuid.UUID(sid))
    await assert_settled(database, user_id, used_at_least=1)
    # Drain the balance: the next summary cannot be covered.
    async with database.transaction() as s:
        await s.execute(text("UPDATE subscriptions SET credits_used = credits_limit "
                             "WHERE user_id = :u"), {"u": user_id})
    with pytest.raises(RoostError) as caught:
        await summaries.summarize_session(gateway, uuid.UUID(sid))
    assert caught.value.status == 402 and "not enough credits" in caught.value.detail
    await assert_settled(database, user_id)

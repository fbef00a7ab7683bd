"""The session's model: a post that names no model is answered by it, also when it is an
agent (``agent:<slug>``, as the console's model picker sets it).  (Such a session's
summary: tests/chat/test_summaries.py.)"""

from __future__ import annotations

import uuid

import httpx
from fastapi import FastAPI

from roost.config import Settings
from roost.db.engine import Database
from tests.chat.conftest import add_provider
from tests.support.identity import make_user
from tests.support.openai_stub import Reply, StubServer

Headers = dict[str, str]
User = tuple[uuid.UUID, Headers]
API = "/api/v1/chat/sessions"


async def test_a_session_whose_model_is_an_agent_is_answered_by_that_agent(
    app: FastAPI, admin_headers: Headers, stub: StubServer, database: Database, user: User,
    client: httpx.AsyncClient, test_settings: Settings,
) -> None:
    """A post naming no model goes to the session's model, also when that is agent:<slug>
    (it was a 404 "no enabled LLM provider serves model 'agent:clock'")."""
    from tests.agents.conftest import make_agent, running_worker

    user_id, h = user
    await add_provider(client, admin_headers, stub)
    await make_agent(database, user_id, slug="clock")
    stub.script(Reply("It is noon."))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://roost.test") as http, \
            running_worker(app, database, test_settings):
        sid = (await http.post(API, json={"model": "agent:clock"}, headers=h)).json()["id"]
        resp = await http.post(f"{API}/{sid}/messages", headers=h, timeout=30,
                               json={"content": "What time is it?"})
        assert resp.status_code == 201, resp.text
        assert resp.json()["provider"] == "agent:clock"
        assert resp.json()["assistant_message"]["content"] == "It is noon."


async def test_a_blank_or_multi_line_session_model_is_a_422(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """A session's model is a model name as an agent's preferred one is: blank (spaces, a
    zero-width space) or holding a line break it is a 422, on create and on update (it
    was stored and shown in lists)."""
    _, alice = await make_user(database, username="alice")
    codes: dict[str, int] = {}
    for model in ["   ", "\u200b", "a\nb", "a\u2028b"]:
        resp = await client.post("/api/v1/chat/sessions", json={"model": model},
                                 headers=alice)
        codes[model] = resp.status_code
    assert set(codes.values()) == {422}, codes
    made = await client.post("/api/v1/chat/sessions", json={}, headers=alice)
    patched = await client.patch(f"/api/v1/chat/sessions/{made.json()['id']}",
                                 json={"model": "a\nb"}, headers=alice)
    assert patched.status_code == 422, patched.text

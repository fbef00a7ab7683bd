"""Answers are stored whatever the provider or agent sends back: a tool call id longer
than its column (and one within it answered by a tool message), an agent's answer longer
than a user's message limit, an agent's answer to a session archived while it worked (as
a model's is)."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from fastapi import FastAPI

from roost.config import Settings
from roost.db.engine import Database
from tests.chat.conftest import add_provider, post_message
from tests.support.openai_stub import Reply, StubServer
from tests.support.openai_stub.script import Call, ToolCalls

Headers = dict[str, str]
User = tuple[uuid.UUID, Headers]
API = "/api/v1/chat/sessions"


async def test_a_long_tool_call_id_from_the_provider_does_not_lose_the_answer(
    client: httpx.AsyncClient, user: User, sid: str, stub: StubServer,
) -> None:
    """A 1,105-character tool call id (the column holds 1,024) is fitted; the answer is kept."""
    _, h = user
    long_id = "call_" + "i" * 1100
    stub.script(ToolCalls(Call("lookup", id=long_id)))
    resp = await post_message(client, h, sid, content="call a tool")
    assert resp.status_code == 201, resp.text  # was 502 "could not be stored (22001)"
    answer = resp.json()["assistant_message"]
    assert answer["tool_calls"][0]["id"] == long_id  # the full id is kept there
    stored = (await client.get(f"{API}/{sid}/messages", headers=h)).json()["items"][0]
    assert stored["tool_call_id"] == long_id[:1024]


async def test_a_tool_call_id_the_model_gave_can_be_answered_with_a_tool_message(
    client: httpx.AsyncClient, user: User, sid: str, stub: StubServer,
) -> None:
    """A client running a tool loop answers the model's tool call with a ``tool`` message
    carrying the ``tool_calls[].id`` the API handed it (docs/chat.md).  A 205-character id
    was refused (422, the column held 128), and one cut to fit reached the provider as a
    tool result naming no call (which providers refuse: 400)."""
    _, h = user
    long_id = "call_" + "z" * 200
    stub.script(ToolCalls(Call("lookup", {"q": "x"}, id=long_id)))
    asked = await post_message(client, h, sid, content="use a tool")
    assert asked.status_code == 201, asked.text
    call_id = asked.json()["assistant_message"]["tool_calls"][0]["id"]
    assert call_id == long_id

    answered = await post_message(client, h, sid, content="42", role="tool", reply=False,
                                  tool_call_id=call_id, tool_call_name="lookup")
    assert answered.status_code == 201, answered.text  # was 422

    follow = await post_message(client, h, sid, content="so?")
    assert follow.status_code == 201, follow.text
    sent = stub.requests("/v1/chat/completions")[-1].body["messages"]
    calls = [c["id"] for m in sent if m.get("tool_calls") for c in m["tool_calls"]]
    results = [m["tool_call_id"] for m in sent if m.get("role") == "tool"]
    assert results == [long_id] and calls == [long_id], (calls, results)


async def test_an_agents_answer_longer_than_a_users_message_limit_is_stored(
    app: FastAPI, admin_headers: Headers, stub: StubServer, database: Database, user: User,
    client: httpx.AsyncClient, test_settings: Settings,
) -> None:
    """An agent's completed answer is stored in the chat whatever its length, as a model's is."""
    from tests.agents.conftest import make_agent, running_worker

    user_id, h = user
    await add_provider(client, admin_headers, stub)
    await make_agent(database, user_id, slug="talker")
    stub.script(Reply("word " * 600))  # 3,000 characters; chat_max_message_chars is 2,000 here
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://roost.test") as http, \
            running_worker(app, database, test_settings):
        sid = (await http.post(API, json={}, headers=h)).json()["id"]
        resp = await http.post(f"{API}/{sid}/messages", headers=h, timeout=30,
                               json={"content": "talk a lot", "model": "agent:talker"})
        assert resp.status_code == 201, resp.text  # was 413 after the run had completed
        stored = (await http.get(f"{API}/{sid}/messages", headers=h)).json()["items"]
        assert [m["role"] for m in stored] == ["assistant", "user"]


async def test_an_agents_answer_is_kept_when_the_session_is_archived_meanwhile(
    app: FastAPI, admin_headers: Headers, stub: StubServer, database: Database, user: User,
    client: httpx.AsyncClient, test_settings: Settings,
) -> None:
    """As for a model's answer (docs/chat.md), an agent's answer to a session archived
    while it worked is stored."""
    from tests.agents.conftest import make_agent, running_worker

    user_id, h = user
    await add_provider(client, admin_headers, stub)
    await make_agent(database, user_id, slug="slow")
    stub.script(Reply("the slow answer", delay_ms=800))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://roost.test") as http, \
            running_worker(app, database, test_settings):
        sid = (await http.post(API, json={}, headers=h)).json()["id"]
        posting = asyncio.create_task(http.post(f"{API}/{sid}/messages", headers=h, timeout=30,
                                                json={"content": "q", "model": "agent:slow"}))
        for _ in range(100):  # the user's message is stored, the run under way
            if (await http.get(f"{API}/{sid}", headers=h)).json()["message_count"] == 1:
                break
            await asyncio.sleep(0.05)
        archived = await http.patch(f"{API}/{sid}", json={"status": "archived"}, headers=h)
        assert archived.status_code == 200
        resp = await posting
        assert resp.status_code == 201, resp.text  # was 409 "the session is archived"



"""Chat for a metered user: chat turns, ``/v1/chat/completions`` (of a model and of
``agent:<slug>``) and an agent in a chat session answer, whole and streamed, and every
credit hold is settled; a call the balance cannot cover is refused (402) saying so."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from roost.config import Settings
from roost.db.engine import Database
from roost.tasks.worker import Worker
from tests.agents.conftest import make_agent, worker  # noqa: F401
from tests.billing.metered import Headers, assert_settled, metered_settings, metered_user, settled
from tests.chat.conftest import sse_events
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Call, Reply, ToolCalls


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return metered_settings(tmp_path)


def _served(app: Any) -> httpx.AsyncClient:
    """A client of the app, to use inside its lifespan (agents as models need it)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://roost.test")


# --------------------------------------------------------------------------- chat turns


async def test_chat_turns_whole_and_streamed_answer_and_settle(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
) -> None:
    user_id, headers = await metered_user(client, admin_headers, stub, database, 100)
    sid = (await client.post("/api/v1/chat/sessions", json={}, headers=headers)).json()["id"]
    url = f"/api/v1/chat/sessions/{sid}/messages"
    stub.script(Reply("Hello."), Reply("Streamed hello."))
    whole = await client.post(url, headers=headers, json={"content": "Hi"})
    assert whole.status_code == 201, whole.text
    streamed = await client.post(url, headers=headers, json={"content": "Again", "stream": True})
    assert streamed.status_code in (200, 201), streamed.text
    events = sse_events(streamed.text)
    assert events[-1][0] == "done", events
    await assert_settled(database, user_id, used_at_least=1)


async def test_a_chat_turn_the_balance_cannot_cover_is_refused_before_the_model_call(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
) -> None:
    user_id, headers = await metered_user(client, admin_headers, stub, database, 1)
    sid = (await client.post("/api/v1/chat/sessions", json={}, headers=headers)).json()["id"]
    url = f"/api/v1/chat/sessions/{sid}/messages"
    for stream in (False, True):
        resp = await client.post(url, headers=headers, json={"content": "Hi", "stream": stream})
        assert resp.status_code == 402, resp.text
        assert "not enough credits" in resp.text
    assert stub.requests(path="/v1/chat/completions") == []
    assert await settled(database, user_id) == {"used": 0, "reserved": 0, "held": 0}


# --------------------------------------------------------------------------- /v1, a model


async def test_v1_completions_of_a_model_whole_and_streamed_answer_and_settle(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
) -> None:
    user_id, headers = await metered_user(client, admin_headers, stub, database, 100)
    stub.script(Reply("One."), Reply("Two."))
    body = {"model": "stub-model", "messages": [{"role": "user", "content": "hi"}]}
    whole = await client.post("/v1/chat/completions", headers=headers, json=body)
    assert whole.status_code == 200, whole.text
    streamed = await client.post("/v1/chat/completions", headers=headers,
                                 json={**body, "stream": True})
    assert streamed.status_code == 200, streamed.text
    assert streamed.text.rstrip().endswith("data: [DONE]"), streamed.text
    await assert_settled(database, user_id, used_at_least=1)


async def test_v1_completions_the_balance_cannot_cover_answer_402(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
) -> None:
    user_id, headers = await metered_user(client, admin_headers, stub, database, 1)
    body = {"model": "stub-model", "messages": [{"role": "user", "content": "hi"}]}
    for stream in (False, True):
        resp = await client.post("/v1/chat/completions", headers=headers,
                                 json={**body, "stream": stream})
        assert resp.status_code == 402, resp.text
        assert "not enough credits" in resp.text
    assert await settled(database, user_id) == {"used": 0, "reserved": 0, "held": 0}


# --------------------------------------------------------------------------- agents as models


async def _agent_setup(client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
                       database: Database, credits: int) -> tuple[uuid.UUID, Headers]:
    """A metered user with ``credits`` and an agent ``clock`` allowed ``current_time``."""
    user_id, headers = await metered_user(client, admin_headers, stub, database, credits)
    await make_agent(database, user_id, slug="clock", tool_permissions=["current_time"],
                     config={"max_output_tokens": 500})
    return user_id, headers


async def test_v1_completions_of_an_agent_calling_a_tool_answer_and_settle(
    app: Any, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    database: Database, worker: Worker,  # noqa: F811
) -> None:
    user_id, headers = await _agent_setup(client, admin_headers, stub, database, 100)
    stub.script(ToolCalls(Call("current_time", {"timezone": "UTC"})), Reply("It is noon."),
                ToolCalls(Call("current_time", {"timezone": "UTC"})), Reply("Still noon."))
    body = {"model": "agent:clock", "messages": [{"role": "user", "content": "What time?"}]}
    async with app.router.lifespan_context(app), _served(app) as http:
        whole = await http.post("/v1/chat/completions", headers=headers, json=body)
        assert whole.status_code == 200, whole.text
        assert whole.json()["choices"][0]["message"]["content"] == "It is noon.", whole.text
        streamed = await http.post("/v1/chat/completions", headers=headers,
                                   json={**body, "stream": True})
        assert streamed.status_code == 200, streamed.text
        assert "Still noon" in streamed.text and "[DONE]" in streamed.text, streamed.text
    await assert_settled(database, user_id, used_at_least=1)


async def test_v1_completions_of_an_agent_without_credits_answer_402(
    app: Any, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    database: Database, worker: Worker,  # noqa: F811
) -> None:
    user_id, headers = await _agent_setup(client, admin_headers, stub, database, 0)
    body = {"model": "agent:clock", "messages": [{"role": "user", "content": "What time?"}]}
    async with app.router.lifespan_context(app), _served(app) as http:
        for stream in (False, True):
            resp = await http.post("/v1/chat/completions", headers=headers,
                                   json={**body, "stream": stream})
            assert resp.status_code == 402, (stream, resp.status_code, resp.text)
            assert "credits" in resp.text.lower(), resp.text
    assert await settled(database, user_id) == {"used": 0, "reserved": 0, "held": 0}


async def test_v1_completions_of_an_agent_whose_credits_run_out_mid_run_fail_saying_so(
    app: Any, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    database: Database, worker: Worker,  # noqa: F811
) -> None:
    """One model call and a tool call covered, the second model call not: a client error
    saying so (not a 500), nothing left held."""
    user_id, headers = await metered_user(client, admin_headers, stub, database, 3)
    await make_agent(database, user_id, slug="clock", tool_permissions=["current_time"],
                     config={"max_output_tokens": 1000})
    stub.script(ToolCalls(Call("current_time", {"timezone": "UTC"})), Reply("Noon."))
    body = {"model": "agent:clock", "messages": [{"role": "user", "content": "What time?"}]}
    async with app.router.lifespan_context(app), _served(app) as http:
        resp = await http.post("/v1/chat/completions", headers=headers, json=body)
    assert resp.status_code != 500 and resp.status_code >= 400, resp.text
    assert "not enough credits" in resp.text, resp.text
    await assert_settled(database, user_id)


# --------------------------------------------------------------------------- agents in chat


async def test_an_agent_in_a_chat_session_answers_whole_and_streamed_and_settles(
    app: Any, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    database: Database, worker: Worker,  # noqa: F811
) -> None:
    user_id, headers = await _agent_setup(client, admin_headers, stub, database, 100)
    stub.script(ToolCalls(Call("current_time", {"timezone": "UTC"})), Reply("It is noon."),
                ToolCalls(Call("current_time", {"timezone": "UTC"})),
                Reply("Still noon.", chunk_delay_ms=5))
    async with app.router.lifespan_context(app), _served(app) as http:
        sid = (await http.post("/api/v1/chat/sessions", json={}, headers=headers)).json()["id"]
        url = f"/api/v1/chat/sessions/{sid}/messages"
        whole = await http.post(url, headers=headers, json={
            "content": "What time is it?", "model": "agent:clock"})
        assert whole.status_code == 201, whole.text
        streamed = await http.post(url, headers=headers, json={
            "content": "And now?", "model": "agent:clock", "stream": True})
        assert streamed.status_code == 201, streamed.text
        events = sse_events(streamed.text)
        assert events[-1][0] == "done", events
    await assert_settled(database, user_id, used_at_least=1)


async def test_an_agent_in_a_chat_session_without_credits_is_refused_saying_so(
    app: Any, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    database: Database, worker: Worker,  # noqa: F811
) -> None:
    user_id, headers = await _agent_setup(client, admin_headers, stub, database, 0)
    async with app.router.lifespan_context(app), _served(app) as http:
        sid = (await http.post("/api/v1/chat/sessions", json={}, headers=headers)).json()["id"]
        url = f"/api/v1/chat/sessions/{sid}/messages"
        for stream in (False, True):
            resp = await http.post(url, headers=headers, json={
                "content": "What time is it?", "model": "agent:clock", "stream": stream})
            assert resp.status_code != 500, resp.text
            assert resp.status_code == 402 or "credits" in resp.text.lower(), (
                stream, resp.status_code, resp.text)
    assert await settled(database, user_id) == {"used": 0, "reserved": 0, "held": 0}

"""An agent answering in a chat session: ``model: "agent:<slug>"`` on the chat messages
API, whole and streamed; both messages are stored in the session, the run is recorded."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import text

from roost.db.engine import Database
from roost.tasks.worker import Worker
from tests.agents.conftest import Headers, make_agent
from tests.chat.conftest import add_provider, sse_events
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Call, Reply, ToolCalls


async def test_an_agent_answers_in_a_chat_session(
    app: Any, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], other_user: tuple[uuid.UUID, Headers], worker: Worker,
    client: httpx.AsyncClient,
) -> None:
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    await make_agent(database, user_id, slug="clock", tool_permissions=["current_time"])
    stub.script(ToolCalls(Call("current_time")), Reply("It is noon."),
                Reply("Still noon.", chunk_delay_ms=20))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://roost.test") as http:
        sid = (await http.post("/api/v1/chat/sessions", json={}, headers=headers)).json()["id"]
        url = f"/api/v1/chat/sessions/{sid}/messages"
        whole = await http.post(url, headers=headers, timeout=30,
                                json={"content": "What time is it?", "model": "agent:clock"})
        assert whole.status_code == 201, whole.text
        body = whole.json()
        assert body["assistant_message"]["content"] == "It is noon."
        assert body["provider"] == "agent:clock"
        steps = (await http.get(f"/api/v1/runs/{body['run_id']}/steps", headers=headers)).json()
        assert [s["step_type"] for s in steps] == ["llm_call", "tool_call", "llm_call"]
        async with database.transaction() as session:  # what its model calls were charged
            charged = await session.scalar(text(
                "SELECT sum(credits_used) FROM usage_records WHERE run_id = :r"),
                {"r": uuid.UUID(body["run_id"])})
        assert charged and body["usage"]["credits_used"] == charged, body["usage"]

        streamed = await http.post(url, headers=headers, timeout=30, json={
            "content": "And now?", "model": "agent:clock", "stream": True})
        assert streamed.status_code == 201
        events = sse_events(streamed.text)
        names = [name for name, _ in events]
        assert names[0] == "start" and names[-1] == "done" and "delta" in names
        assert "".join(d["content"] for n, d in events if n == "delta") == "Still noon."
        assert events[-1][1]["assistant_message"]["content"] == "Still noon."
        # The second run saw the conversation so far.
        run = (await http.get(f"/api/v1/runs/{events[-1][1]['run_id']}", headers=headers)).json()
        assert "user: What time is it?" in run["input"] and "assistant: It is noon." in run["input"]

        stored = (await http.get(url, headers=headers)).json()["items"]
        assert [(m["role"], m["content"]) for m in reversed(stored)] == [
            ("user", "What time is it?"), ("assistant", "It is noon."),
            ("user", "And now?"), ("assistant", "Still noon.")]

        # An unknown agent, or another user's session: nothing is stored.
        missing = await http.post(url, headers=headers, json={"content": "hi", "model": "agent:nobody"})
        assert missing.status_code == 404
        theirs = await http.post(url, headers=other_user[1],
                                 json={"content": "hi", "model": "agent:clock"})
        assert theirs.status_code == 404
        not_user = await http.post(url, headers=headers, json={
            "content": "hi", "model": "agent:clock", "role": "system"})
        assert not_user.status_code == 422
    async with database.transaction() as session:
        count = (await session.execute(text(
            "SELECT count(*) FROM chat_messages WHERE session_id = :s"), {"s": sid})).scalar()
    assert count == 4


async def test_a_nul_for_an_agent_is_refused_before_anything_is_stored(
    app: Any, database: Database, user: tuple[uuid.UUID, Headers],
) -> None:
    """A run's input is stored as text, which holds no NUL: a chat message to an agent
    holding one is 422 (nothing stored), `/v1` with `agent:<slug>` a 400; never a 500
    from building the run."""
    user_id, headers = user
    await make_agent(database, user_id, slug="clock")
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://roost.test") as http:
        sid = (await http.post("/api/v1/chat/sessions", json={}, headers=headers)).json()["id"]
        chat = await http.post(f"/api/v1/chat/sessions/{sid}/messages", headers=headers,
                               json={"content": "a\u0000b", "model": "agent:clock"})
        assert chat.status_code == 422, chat.text
        v1 = await http.post("/v1/chat/completions", headers=headers, json={
            "model": "agent:clock", "messages": [{"role": "user", "content": "a\u0000b"}]})
        assert v1.status_code == 400, v1.text
        assert (await http.get("/api/v1/runs", headers=headers)).json()["items"] == []
    async with database.transaction() as session:
        count = (await session.execute(text(
            "SELECT count(*) FROM chat_messages WHERE session_id = :s"), {"s": sid})).scalar()
    assert count == 0


async def test_a_message_and_its_excerpts_are_checked_against_the_run_s_input_limit(
    app: Any, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker, client: httpx.AsyncClient,
) -> None:
    """The run's input is the excerpts, a blank line, then the message: when that fits
    the run's input limit exactly the run starts; two characters more (the blank line
    the check once left out) are a 413 with nothing stored, never a 500 after the
    message was stored."""
    from roost.agents.schemas import MAX_RUN_INPUT_CHARS
    from roost.chat.messages import context_messages
    from roost.chat.schemas import MessageCreate

    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    await make_agent(database, user_id, slug="clock")
    stub.script(Reply("Noted."), Reply("Noted again."))
    context = [{"source": f"s{i}", "text": "e" * 8000} for i in range(9)]
    body = MessageCreate.model_validate({"content": "x", "context": context})
    excerpts = len("\n\n".join(m.text() for m in context_messages(body)))
    fits = MAX_RUN_INPUT_CHARS - excerpts - 2  # under chat's 32 000 characters
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://roost.test") as http:
        sid = (await http.post("/api/v1/chat/sessions", json={}, headers=headers)).json()["id"]
        url = f"/api/v1/chat/sessions/{sid}/messages"
        over = await http.post(url, headers=headers, timeout=60, json={
            "content": "q" * (fits + 2), "model": "agent:clock", "context": context})
        assert over.status_code == 413, over.text[:300]
        assert (await http.get(url, headers=headers)).json()["items"] == []
        ok = await http.post(url, headers=headers, timeout=60, json={
            "content": "q" * fits, "model": "agent:clock", "context": context})
        assert ok.status_code == 201, ok.text[:300]
        stored = (await http.get(url, headers=headers)).json()["items"]
        run = (await http.get(f"/api/v1/runs/{ok.json()['run_id']}", headers=headers)).json()
        assert [m["role"] for m in reversed(stored)] == ["user", "assistant"]
        assert len(run["input"]) == MAX_RUN_INPUT_CHARS
        assert run["input"].endswith("e\n\n" + "q" * fits)

        # The next turn: the transcript of the whole conversation would fit but for the
        # blank line after the excerpts, so its oldest turn is left out.
        answer = stored[0]["content"]
        context = context[:6]
        body = MessageCreate.model_validate({"content": "x", "context": context})
        excerpts = len("\n\n".join(m.text() for m in context_messages(body)))
        earlier = len(f"user: {'q' * fits}\n\nassistant: {answer}\n\nuser: ")
        question = "w" * (MAX_RUN_INPUT_CHARS - excerpts - earlier)
        assert 0 < len(question) <= 32_000
        turn = await http.post(url, headers=headers, timeout=60, json={
            "content": question, "model": "agent:clock", "context": context})
        assert turn.status_code == 201, turn.text[:300]
        run = (await http.get(f"/api/v1/runs/{turn.json()['run_id']}", headers=headers)).json()
    assert run["input"].endswith(f"e\n\nassistant: {answer}\n\nuser: {question}")
    assert len(run["input"]) <= MAX_RUN_INPUT_CHARS


async def test_an_agent_in_a_chat_session_gets_as_many_earlier_messages_as_a_reply(
    app: Any, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker, client: httpx.AsyncClient,
) -> None:
    """``chat_context_messages`` earlier messages go with a new message to an agent, as to
    a model (docs/settings.md): with 2, the run's input holds the two before the new one
    (the new message took one of the places, so the agent saw one earlier message)."""
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    await make_agent(database, user_id, slug="echo")
    stub.script(Reply("ok"))
    put = await client.put("/api/v1/admin/settings/chat_context_messages", json={"value": 2},
                           headers=admin_headers)
    assert put.status_code == 200, put.text
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://roost.test") as http:
        sid = (await http.post("/api/v1/chat/sessions", json={}, headers=headers)).json()["id"]
        url = f"/api/v1/chat/sessions/{sid}/messages"
        for role, content in (("user", "first-turn"), ("assistant", "second-turn"),
                              ("user", "third-turn"), ("assistant", "fourth-turn")):
            seeded = await http.post(url, headers=headers,
                                     json={"role": role, "content": content, "reply": False})
            assert seeded.status_code == 201, seeded.text
        sent = await http.post(url, headers=headers, timeout=60,
                               json={"content": "fifth-turn", "model": "agent:echo"})
        assert sent.status_code == 201, sent.text
        run = (await http.get(f"/api/v1/runs/{sent.json()['run_id']}", headers=headers)).json()
    assert "user: third-turn" in run["input"] and "assistant: fourth-turn" in run["input"]
    assert "user: fifth-turn" in run["input"] and "second-turn" not in run["input"], run["input"]

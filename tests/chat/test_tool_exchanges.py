"""Chat sessions a client filled with incomplete tool exchanges (``reply: false``) still
answer, and a summary's tools are those of every message."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from roost.db.engine import Database
from roost.llm import jobs as llm_jobs
from roost.llm.deps import app_gateway
from roost.tasks.worker import Worker
from tests.chat.conftest import post_message
from tests.support.openai_stub import Call, Reply, StubServer

Headers = dict[str, str]
User = tuple[uuid.UUID, Headers]
API = "/api/v1/chat/sessions"


async def test_orphan_tool_message_is_not_sent_to_the_provider(
    client: httpx.AsyncClient, sid: str, user: User, stub: StubServer,
) -> None:
    """A tool result (stored with reply=false) whose tool_call_id answers no call was sent
    with every answered post, and providers refuse a tool result without its call (400):
    the session failed until it left the window. It is left out of what the model sees."""
    _, headers = user
    assert (await post_message(client, headers, sid, content="hi", reply=False)).status_code == 201
    r = await post_message(client, headers, sid, role="tool", content="42",
                           tool_call_id="call_nothing", reply=False)
    assert r.status_code == 201, r.text
    stub.script(Reply("ok"))
    r = await post_message(client, headers, sid, content="and now?")
    assert r.status_code == 201, r.text
    sent = stub.requests(path="/v1/chat/completions")[-1].body["messages"]
    called = {c["id"] for m in sent if m.get("role") == "assistant" for c in m.get("tool_calls") or ()}
    orphans = [m for m in sent if m.get("role") == "tool" and m.get("tool_call_id") not in called]
    assert orphans == [], sent
    assert [m["content"] for m in sent if m["role"] == "user"] == ["hi", "and now?"], sent


async def test_unanswered_tool_calls_are_not_sent_to_the_provider(
    client: httpx.AsyncClient, sid: str, user: User, stub: StubServer,
) -> None:
    """An assistant message with tool_calls (stored with reply=false) whose results never
    came was sent as is, which providers refuse (400): its unanswered calls are left out
    (the message too, when it has no text)."""
    _, headers = user
    r = await post_message(client, headers, sid, role="assistant", content="", reply=False,
                           tool_calls=[{"id": "call_1", "name": "search", "arguments": "{}"}])
    assert r.status_code == 201, r.text
    stub.script(Reply("ok"))
    r = await post_message(client, headers, sid, content="and now?")
    assert r.status_code == 201, r.text
    sent = stub.requests(path="/v1/chat/completions")[-1].body["messages"]
    answered = {m.get("tool_call_id") for m in sent if m.get("role") == "tool"}
    unanswered = [c["id"] for m in sent if m.get("role") == "assistant"
                  for c in m.get("tool_calls") or () if c["id"] not in answered]
    assert unanswered == [], sent


async def test_summary_tools_used_counts_every_row(
    client: httpx.AsyncClient, sid: str, user: User, stub: StubServer, worker: Worker,
    app: FastAPI, monkeypatch: pytest.MonkeyPatch, database: Database,
) -> None:
    """Message counts, token totals, time span and tools used are computed from the rows: a
    session of 250 messages whose only tool message is the first counted 250 messages but
    listed no tool (only the last 200 rows, those the model sees, were looked at)."""
    monkeypatch.setattr(llm_jobs, "gateway_override", app_gateway(app))
    _, headers = user
    sem = asyncio.Semaphore(8)

    async def one(i: int) -> None:
        async with sem:
            r = await post_message(client, headers, sid, content=f"m{i}", reply=False)
            assert r.status_code == 201, r.text

    r = await post_message(client, headers, sid, content="result", reply=False, role="tool",
                           tool_call_id="c1", tool_call_name="early_tool")
    assert r.status_code == 201, r.text
    await asyncio.gather(*(one(i) for i in range(249)))
    stub.script(Reply("A summary.\nTopics: a, b", times=None))
    r = await client.post(f"{API}/{sid}/summary", headers=headers)
    assert r.status_code == 202, r.text
    task_id = r.json()["task_id"]
    st = ""
    for _ in range(200):
        async with database.transaction() as s:
            st = str((await s.execute(text("SELECT status FROM background_tasks WHERE id=:i"),
                                  {"i": task_id})).scalar_one())
        if st in ("completed", "failed", "dead_letter", "cancelled"):
            break
        await asyncio.sleep(0.1)
    assert st == "completed"
    summ = (await client.get(f"{API}/{sid}/summary", headers=headers)).json()
    assert summ["message_count"] == 250
    assert summ["tools_used"] == ["early_tool"], summ["tools_used"]


async def test_duplicate_call_ids_in_one_message_are_not_sent_half_answered(
    client: httpx.AsyncClient, sid: str, user: User,
) -> None:
    """An assistant message giving two calls one id is refused (422 naming tool_calls): one
    result cannot answer both, and the provider was sent two calls with one id and one
    result on every later answer (a 400 from providers that check)."""
    _, h = user
    r = await post_message(client, h, sid, role="assistant", content="", reply=False,
                           tool_calls=[{"id": "a", "name": "x", "arguments": "{}"},
                                       {"id": "a", "name": "y", "arguments": "{}"}])
    assert r.status_code == 422 and r.json()["field"] == "tool_calls", r.text


async def test_summary_tools_used_names_every_tool_called(
    client: httpx.AsyncClient, sid: str, user: User, stub: StubServer, worker: Worker,
    app: FastAPI, monkeypatch: pytest.MonkeyPatch, database: Database,
) -> None:
    """tools_used names every tool called: both of an answer's two calls (search, fetch)
    and the one of a stored OpenAI-SDK-style message (tool_calls, no tool_call_name); it
    named only the answer's first call."""
    monkeypatch.setattr(llm_jobs, "gateway_override", app_gateway(app))
    _, h = user
    stub.script(Reply(None, tool_calls=[Call("search", {"q": 1}, id="c1"),
                                        Call("fetch", {"u": 2}, id="c2")]))
    r = await post_message(client, h, sid, content="find")
    assert r.status_code == 201, r.text
    r = await post_message(client, h, sid, role="assistant", content="", reply=False,
                           tool_calls=[{"id": "d1", "name": "weather"}])
    assert r.status_code == 201, r.text
    stub.script(Reply("A summary.\nTopics: a", times=None))
    r = await client.post(f"{API}/{sid}/summary", headers=h)
    assert r.status_code == 202, r.text
    task_id = r.json()["task_id"]

    async def finished() -> str:
        while True:
            async with database.transaction() as s:
                st = str((await s.execute(text("SELECT status FROM background_tasks WHERE id=:i"),
                                          {"i": task_id})).scalar_one())
            if st in ("completed", "failed", "dead_letter", "cancelled"):
                return st
            await asyncio.sleep(0.1)

    assert await asyncio.wait_for(finished(), 60) == "completed"
    summ = (await client.get(f"{API}/{sid}/summary", headers=h)).json()
    assert summ["tools_used"] == ["fetch", "search", "weather"], summ["tools_used"]

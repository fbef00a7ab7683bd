"""Prompts in use: an agent takes its prompt by key and the next run after a publish
carries the new text; usage_count, last_used_at and success_rate after real runs (a real
worker, the stub model); chat sessions take ``chat.system`` by the resolution order."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from roost.db.engine import Database
from roost.llm.deps import app_gateway
from roost.prompts.service import use
from roost.tasks.worker import Worker
from tests.agents.conftest import make_agent, test_settings, wait_for_run, worker
from tests.chat.conftest import add_provider, new_session
from tests.prompts.conftest import Headers, User, make_group, publish
from tests.support.openai_stub import Fail, StubServer
from tests.support.openai_stub.script import Reply

__all__ = ["test_settings", "worker"]  # fixtures


async def _run(client: httpx.AsyncClient, headers: Headers, agent_id: uuid.UUID) -> dict[str, Any]:
    resp = await client.post(f"/api/v1/agents/{agent_id}/runs", json={"input": "Plan my day"},
                             headers=headers)
    assert resp.status_code == 202, resp.text
    return await wait_for_run(client, headers, resp.json()["id"])


def _system_sent(stub: StubServer) -> str:
    messages = stub.requests(path="/v1/chat/completions")[-1].body["messages"]
    assert messages[0]["role"] == "system", messages
    content: str = messages[0]["content"]
    return content


async def _stats(database: Database, prompt_id: str) -> dict[str, Any]:
    async with database.transaction() as session:
        row = (await session.execute(text(
            "SELECT usage_count, last_used_at, success_rate, outcome_count FROM system_prompts "
            "WHERE id = :id"), {"id": prompt_id})).mappings().one()
    return dict(row)


async def test_publishing_a_new_version_changes_the_next_run(
        client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
        database: Database, user: User, worker: Worker) -> None:
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id, name="Planner", system_prompt="Be brief.",
                             config={"system_prompt_key": "planner.system"})
    v1 = await publish(client, headers, "planner.system",
                       "You are {{agent_name}}. Plan in half-hour blocks.",
                       variables=[{"name": "agent_name"}])
    stub.script(Reply("Here is your plan."))
    run = await _run(client, headers, agent.id)
    assert run["status"] == "completed" and run["system_prompt_id"] == v1["id"]
    # The version by key (rendered), then the agent's own prompt.
    assert _system_sent(stub) == "You are Planner. Plan in half-hour blocks.\n\nBe brief."

    v2 = await publish(client, headers, "planner.system", "You are {{agent_name}}. Plan by "
                       "priority.", variables=[{"name": "agent_name"}])
    stub.script(Reply("Priorities first."))
    run = await _run(client, headers, agent.id)
    assert run["system_prompt_id"] == v2["id"]
    assert _system_sent(stub).startswith("You are Planner. Plan by priority.")

    first, second = await _stats(database, v1["id"]), await _stats(database, v2["id"])
    assert (first["usage_count"], first["success_rate"]) == (1, 1.0)
    assert (second["usage_count"], second["success_rate"]) == (1, 1.0)
    assert second["last_used_at"] is not None

    # A failed run lowers the version's success rate (a running mean).
    stub.script(Fail(400), Fail(400), Fail(400))
    run = await _run(client, headers, agent.id)
    assert run["status"] == "failed"
    after = await _stats(database, v2["id"])
    assert after["usage_count"] == 2 and after["outcome_count"] == 2
    assert after["success_rate"] == 0.5
    versions = (await client.get("/api/v1/prompts", headers=headers,
                                 params={"key": "planner.system"})).json()["items"]
    assert [(p["version"], p["usage_count"], p["success_rate"]) for p in versions] == [
        (2, 2, 0.5), (1, 1, 1.0)]


async def test_factory_agent_prompt_and_a_missing_key(
        client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
        database: Database, user: User, worker: Worker) -> None:
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id, name="Scout", system_prompt=None,
                             config={"system_prompt_key": "agent.system"})
    stub.script(Reply("ok"))
    run = await _run(client, headers, agent.id)
    assert run["status"] == "completed", run
    sent = _system_sent(stub)
    assert sent.startswith("You are Scout, an agent working for the user. Today is 20")

    # An agent names a key through the API; a malformed one is a 422.
    resp = await client.post("/api/v1/agents", headers=headers, json={
        "name": "Named", "slug": "named", "config": {"system_prompt_key": "Not A Key"}})
    assert resp.status_code == 422 and "system_prompt_key" in resp.text
    resp = await client.post("/api/v1/agents", headers=headers, json={
        "name": "Named", "slug": "named", "config": {"system_prompt_key": "agent.system",
                                                     "system_prompt_label": "staging"}})
    assert resp.status_code == 201, resp.text
    assert resp.json()["config"]["system_prompt_key"] == "agent.system"

    # A key with no version for the label fails the run with a message that says so.
    lost = await make_agent(database, user_id, config={"system_prompt_key": "nowhere.system",
                                                       "system_prompt_label": "staging"})
    run = await _run(client, headers, lost.id)
    assert run["status"] == "failed"
    assert "'nowhere.system'" in run["error_message"] and "'staging'" in run["error_message"]


async def test_a_run_failed_by_its_versions_variable_counts_in_that_versions_success_rate(
        client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
        database: Database, user: User, worker: Worker) -> None:
    """A version requiring a variable Roost cannot supply fails the run, and the failure is
    the version's: the run records it and its usage and success rate count the run (the
    run recorded no version, so the broken version kept a perfect record)."""
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id, config={"system_prompt_key": "needy.system"})
    version = await publish(client, headers, "needy.system", "Serve {{customer}}.",
                            variables=[{"name": "customer", "required": True}])
    run = await _run(client, headers, agent.id)
    assert run["status"] == "failed" and "'customer'" in run["error_message"], run
    assert run["system_prompt_id"] == version["id"]
    stats = await _stats(database, version["id"])
    assert (stats["usage_count"], stats["outcome_count"], stats["success_rate"]) == (1, 1, 0.0)
    assert stub.requests(path="/v1/chat/completions") == []


async def test_chat_takes_chat_system_by_resolution_order(
        client: httpx.AsyncClient, app: FastAPI, admin_headers: Headers, stub: StubServer,
        database: Database, user: User) -> None:
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    sid = (await new_session(client, headers))["id"]

    async def ask() -> list[dict[str, Any]]:
        resp = await client.post(f"/api/v1/chat/sessions/{sid}/messages", headers=headers,
                                 json={"content": "Hello"})
        assert resp.status_code == 201, resp.text
        sent: list[dict[str, Any]] = stub.requests(path="/v1/chat/completions")[-1].body[
            "messages"]
        return sent

    # No version anywhere (and no ROOST_CHAT_SYSTEM_PROMPT): no system message, as before.
    assert (await ask())[0]["role"] == "user"
    factory = await publish(client, admin_headers, "chat.system", "Factory voice.",
                            scope="factory")
    assert (await ask())[0] == {"role": "system", "content": "Factory voice."}
    group = await make_group(database, (user_id, "admin"))
    await publish(client, headers, "chat.system", "Team voice.", scope="group",
                  group_id=str(group))
    assert (await ask())[0]["content"] == "Team voice."
    mine = await publish(client, headers, "chat.system", "My voice, {{date}}.",
                         variables=[{"name": "date"}])
    assert (await ask())[0]["content"].startswith("My voice, 20")
    assert (await _stats(database, mine["id"]))["usage_count"] == 1
    assert (await _stats(database, factory["id"]))["usage_count"] == 1

    # Rating the session (its summary's session_rating) rates the version its replies used.
    async with database.transaction() as session:
        await session.execute(text(
            "INSERT INTO chat_session_summaries (id, session_id, user_id, started_at, ended_at, "
            "message_count, summary) VALUES (gen_random_uuid(), :sid, :uid, now(), now(), 8, "
            ":summary)"), {"sid": sid, "uid": user_id,
                           "summary": app_gateway(app).cipher.encrypt("A chat.")})
    for rating in (4.0, 2.0):
        resp = await client.patch(f"/api/v1/chat/sessions/{sid}/summary", headers=headers,
                                  json={"session_rating": rating})
        assert resp.status_code == 200, resp.text
    async with database.transaction() as session:
        satisfaction = (await session.execute(text(
            "SELECT average_satisfaction, rating_count FROM system_prompts WHERE id = :id"),
            {"id": mine["id"]})).one()
    assert tuple(satisfaction) == (2.0, 1)  # the changed rating replaced the first


async def test_a_cleared_rating_leaves_the_versions_mean(
        client: httpx.AsyncClient, database: Database, user: User) -> None:
    """``record_rating(None, previous)`` takes ``previous`` out of the mean and the count
    (migration 1160); none left is no mean at all."""
    from roost.prompts.service import record_rating

    _, headers = user
    version = await publish(client, headers, "chat.system", "Be brief.")

    async def rate(rating: float | None, previous: float | None = None) -> tuple[Any, ...]:
        async with database.transaction() as session:
            await record_rating(session, uuid.UUID(version["id"]), rating, previous)
            return tuple((await session.execute(text(
                "SELECT average_satisfaction, rating_count FROM system_prompts WHERE id = :id"),
                {"id": version["id"]})).one())

    for rating in (5.0, 3.0):
        await rate(rating)
    assert await rate(1.0) == (3.0, 3)
    assert await rate(None, 5.0) == (2.0, 2)
    assert await rate(None, None) == (2.0, 2)  # nothing was rated: nothing changes
    assert await rate(None, 3.0) == (1.0, 1)
    assert await rate(None, 1.0) == (None, 0)
    assert await rate(4.0) == (4.0, 1)


async def test_a_changed_rating_leaves_the_version_that_counted_it(
        client: httpx.AsyncClient, app: FastAPI, admin_headers: dict[str, str],
        stub: StubServer, database: Database, user: User) -> None:
    """A rating given before any reply counts nowhere; changed after a reply, it counts in
    that reply's version (the old one is not taken out of a version that never counted
    it: the mean went to -1); changed after a newer version answered, it leaves the old
    version for the new one; cleared, it leaves the version that counted it (migration
    1200)."""
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    v1 = await publish(client, headers, "chat.system", "Be brief.")
    a, b = (await new_session(client, headers))["id"], (await new_session(client, headers))["id"]
    async with database.transaction() as session:
        for sid in (a, b):
            await session.execute(text(
                "INSERT INTO chat_session_summaries (id, session_id, user_id, started_at, "
                "ended_at, message_count, summary) VALUES (gen_random_uuid(), :sid, :uid, "
                "now(), now(), 8, :summary)"), {"sid": sid, "uid": user_id,
                                                "summary": app_gateway(app).cipher.encrypt("x")})

    async def rate(sid: str, rating: float | None) -> None:
        r = await client.patch(f"/api/v1/chat/sessions/{sid}/summary", headers=headers,
                               json={"session_rating": rating})
        assert r.status_code == 200, r.text

    async def ask(sid: str) -> None:
        r = await client.post(f"/api/v1/chat/sessions/{sid}/messages", headers=headers,
                              json={"content": "Hello"})
        assert r.status_code == 201, r.text

    async def stats(version: dict[str, Any]) -> tuple[Any, ...]:
        async with database.transaction() as session:
            return tuple((await session.execute(text(
                "SELECT average_satisfaction, rating_count FROM system_prompts WHERE id = :id"),
                {"id": version["id"]})).one())

    await rate(a, 5.0)  # no reply yet: no version counts it
    await ask(b)
    await rate(b, 3.0)
    assert await stats(v1) == (3.0, 1)
    await ask(a)
    await rate(a, 1.0)  # the 5 was never counted: nothing to take out
    assert await stats(v1) == (2.0, 2)
    v2 = await publish(client, headers, "chat.system", "Be very brief.")
    await ask(a)
    await rate(a, 4.0)  # leaves v1, counts in v2
    assert (await stats(v1), await stats(v2)) == ((3.0, 1), (4.0, 1))
    await rate(a, None)
    assert (await stats(v1), await stats(v2)) == ((3.0, 1), (None, 0))


async def test_a_busy_versions_usage_counter_passes_int4(
        client: httpx.AsyncClient, admin_headers: Headers, database: Database,
        user: User) -> None:
    """A factory version used 2**31-1 times still serves the next chat reply (the counter
    is an int4: the next use was 'integer out of range', failing every reply)."""
    user_id, _ = user
    f = await publish(client, admin_headers, "chat.system", "Be kind.", scope="factory")
    async with database.transaction() as session:
        await session.execute(text("UPDATE system_prompts SET usage_count = 2147483647 "
                                   "WHERE id = :id"), {"id": f["id"]})
    async with database.transaction() as session:
        used = await use(session, user_id, "chat.system")
    assert used is not None and used.text == "Be kind."
    async with database.transaction() as session:
        assert await session.scalar(text("SELECT usage_count FROM system_prompts WHERE id = :id"),
                                    {"id": f["id"]}) == 2**31

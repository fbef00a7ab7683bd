"""Agents with long-term memory: the memory_add and memory_search built-in tools, the
memories recalled into a run's context (memory_k), learning from a run."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from roost.agents import memorytools
from roost.config import Settings
from roost.db.engine import Database
from roost.errors import RoostError
from roost.principal import Principal
from roost.tasks.worker import Worker
from tests.agents.api import create_persona
from tests.agents.conftest import Headers, make_agent, wait_for_run
from tests.chat.conftest import add_provider
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Call, Reply, ToolCalls


async def _run(client: httpx.AsyncClient, headers: Headers, agent_id: uuid.UUID,
               text_: str) -> dict[str, Any]:
    created = await client.post(f"/api/v1/agents/{agent_id}/runs", headers=headers, json={"input": text_})
    assert created.status_code in (201, 202), created.text
    return await wait_for_run(client, headers, created.json()["id"])


async def test_an_agent_remembers_with_its_tools_and_recalls_in_a_later_run(
    admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], other_user: tuple[uuid.UUID, Headers], worker: Worker,
    client: httpx.AsyncClient,
) -> None:
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id, tool_permissions=["memory_add", "memory_search"],
                             config={"memory_k": 5})
    stub.script(ToolCalls(Call("memory_add", {"content": "The user's cat is called Miso",
                                              "memory_type": "fact"})), Reply("Noted."))
    first = await _run(client, headers, agent.id, "My cat is called Miso.")
    assert first["status"] == "completed", first
    async with database.transaction() as s:
        stored = (await s.execute(text(
            "SELECT user_id, source_type, run_id, content FROM memories"))).one()
    assert (stored.user_id, stored.source_type, stored.content) == (
        user_id, "agent", "The user's cat is called Miso")
    assert str(stored.run_id) == first["id"]

    # A later run recalls it into its context (a memory_recall step), and can search.
    stub.script(ToolCalls(Call("memory_search", {"query": "cat"})), Reply("Your cat is Miso."))
    second = await _run(client, headers, agent.id, "What is my cat called?")
    assert second["status"] == "completed", second
    steps = (await client.get(f"/api/v1/runs/{second['id']}/steps", headers=headers)).json()
    assert [s["step_type"] for s in steps] == ["memory_recall", "llm_call", "tool_call", "llm_call"]
    assert "Miso" in steps[0]["output"]["memories"][0]["content"]
    assert "Miso" in str(steps[2]["output"])
    sent = stub.requests(path="/v1/chat/completions")
    system = sent[-2].body["messages"][0]
    assert system["role"] == "system" and "What you remember about the user" in system["content"]
    assert "The user's cat is called Miso" in system["content"]

    # Another user's run of their own agent remembers nothing of it.
    other_id, other_headers = other_user
    theirs = await make_agent(database, other_id, tool_permissions=["memory_search"],
                              config={"memory_k": 5})
    stub.script(ToolCalls(Call("memory_search", {"query": "cat Miso"})), Reply("No idea."))
    run = await _run(client, other_headers, theirs.id, "What is my cat called?")
    steps = (await client.get(f"/api/v1/runs/{run['id']}/steps", headers=other_headers)).json()
    assert steps[0]["step_type"] == "memory_recall" and steps[0]["output"]["memories"] == []
    assert "Miso" not in str(steps[2]["output"])


async def test_learning_from_a_run_is_queued_once(
    admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], other_user: tuple[uuid.UUID, Headers], worker: Worker,
    client: httpx.AsyncClient,
) -> None:
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id)
    stub.script(Reply("Nice to meet you, Ada."))
    run = await _run(client, headers, agent.id, "I am Ada and I live in Lyon.")
    worker.stop(force=True)  # keep the learn job queued: only its queueing is tested here
    first = await client.post(f"/api/v1/runs/{run['id']}/learn", headers=headers)
    again = await client.post(f"/api/v1/runs/{run['id']}/learn", headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["task_id"] == again.json()["task_id"]
    theirs = await client.post(f"/api/v1/runs/{run['id']}/learn", headers=other_user[1])
    assert theirs.status_code == 404
    async with database.transaction() as s:
        jobs = (await s.execute(text(
            "SELECT count(*) FROM background_tasks WHERE task_type = 'memory.learn'"))).scalar()
    assert jobs == 1


async def test_memory_add_with_unusable_content_is_a_failed_step_the_model_is_told_of(
    admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker, client: httpx.AsyncClient,
) -> None:
    """A model asking to remember blank text or text holding a NUL gets a failed step
    saying why; the run goes on and nothing is stored."""
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id, tool_permissions=["memory_add"])
    stub.script(ToolCalls(Call("memory_add", {"content": "   "}),
                          Call("memory_add", {"content": "half\x00way"})), Reply("Sorry."))
    run = await _run(client, headers, agent.id, "Remember nothing.")
    assert (run["status"], run["output"]) == ("completed", "Sorry."), run
    steps = (await client.get(f"/api/v1/runs/{run['id']}/steps", headers=headers)).json()
    tools = [s for s in steps if s["step_type"] == "tool_call"]
    assert [s["status"] for s in tools] == ["failed", "failed"], tools
    assert "at least 1 character" in tools[0]["error"] and "NUL" in tools[1]["error"], tools
    async with database.transaction() as s:
        assert (await s.execute(text("SELECT count(*) FROM memories"))).scalar_one() == 0


async def test_a_long_input_or_search_query_still_recalls_its_first_1000_characters(
    admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker, client: httpx.AsyncClient,
) -> None:
    """A run's input and a memory_search query longer than recall's 1,000 characters are
    cut to them: the memory_recall step and the tool failed ("q must be at most 1000
    characters") for 1,001-2,000 characters, cut only to 2,000."""
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    async with database.transaction() as s:
        await s.execute(text(
            "INSERT INTO memories (id, user_id, content, content_sha256) "
            "VALUES (gen_random_uuid(), :u, 'The user keeps bees in the garden', 'x')"),
            {"u": user_id})
    agent = await make_agent(database, user_id, tool_permissions=["memory_search"],
                             config={"memory_k": 5})
    long_query = "Tell me about the bees in my garden, please. " * 33  # 1,485 characters
    stub.script(ToolCalls(Call("memory_search", {"query": long_query})), Reply("Bees."))
    run = await _run(client, headers, agent.id, long_query + " And the honey?")
    assert run["status"] == "completed", run
    steps = (await client.get(f"/api/v1/runs/{run['id']}/steps", headers=headers)).json()
    assert [(s["step_type"], s["status"]) for s in steps] == [
        ("memory_recall", "completed"), ("llm_call", "completed"),
        ("tool_call", "completed"), ("llm_call", "completed")], steps
    assert len(steps[0]["input"]["query"]) == 1000
    assert "bees" in steps[0]["output"]["memories"][0]["content"]
    assert "bees" in str(steps[2]["output"])


async def _bees(database: Database, user_id: uuid.UUID) -> None:
    async with database.transaction() as s:
        await s.execute(text(
            "INSERT INTO memories (id, user_id, content, content_sha256) "
            "VALUES (gen_random_uuid(), :u, 'The user keeps bees in the garden', 'x')"),
            {"u": user_id})


async def test_memory_recall_skips_a_long_run_of_leading_zero_width_characters(
    admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker, client: httpx.AsyncClient,
) -> None:
    """A question pasted with 1,200 zero-width characters before it: memory recall strips
    them before cutting its query to 1,000 characters, as retrieval does, and the model is
    told the memory that fits (recall searched a thousand invisible characters and found
    nothing)."""
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    await _bees(database, user_id)
    agent = await make_agent(database, user_id, config={"memory_k": 5})
    stub.script(Reply("Bees."))
    run = await _run(client, headers, agent.id, "\u200b" * 1200 + "Tell me about my bees.")
    assert run["status"] == "completed", run
    system = stub.requests(path="/v1/chat/completions")[-1].body["messages"][0]
    assert "The user keeps bees in the garden" in system["content"], system
    steps = (await client.get(f"/api/v1/runs/{run['id']}/steps", headers=headers)).json()
    assert steps[0]["step_type"] == "memory_recall", steps
    assert "bees" in steps[0]["input"]["query"], steps[0]["input"]



async def test_memory_add_drops_white_space_around_content_at_the_limit(
    admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker, client: httpx.AsyncClient,
) -> None:
    """A model's fact of 4,000 characters and a trailing newline is stored, as the API
    stores it (the tool counted the newline and failed the step)."""
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id, tool_permissions=["memory_add"])
    content = "x" * 4000 + "\n"
    stub.script(ToolCalls(Call("memory_add", {"content": content})), Reply("Done."))
    run = await _run(client, headers, agent.id, "Remember.")
    steps = (await client.get(f"/api/v1/runs/{run['id']}/steps", headers=headers)).json()
    calls = [s for s in steps if s["step_type"] == "tool_call"]
    assert [s["status"] for s in calls] == ["completed"], [(s["status"], s["error"]) for s in calls]
    async with database.transaction() as session:
        stored = await session.scalar(text("SELECT length(content) FROM memories "
                                           "WHERE user_id = :u"), {"u": user_id})
    assert stored == 4000


async def test_a_run_whose_persona_was_deleted_meanwhile_reaches_no_other_memory(
    database: Database, user: tuple[uuid.UUID, Headers], client: httpx.AsyncClient,
    test_settings: Settings,
) -> None:
    """A persona agent's run searches its user's memory narrowed to that persona.  When
    the persona (and so the agent) is deleted while the run goes on, its next memory
    search is refused: it searched the user's whole memory, another persona's included."""
    user_id, headers = user
    work = await create_persona(client, headers)
    home = await create_persona(client, headers)
    stored = await client.post("/api/v1/memories", headers=headers, json={
        "content": "The safe code is herons", "persona_id": home["id"]})
    assert stored.status_code == 201, stored.text
    agent = await make_agent(database, user_id, persona_id=uuid.UUID(work["id"]))
    created = await client.post(f"/api/v1/agents/{agent.id}/runs", headers=headers,
                                json={"input": "hi"})
    assert created.status_code in (201, 202), created.text
    run_id = uuid.UUID(created.json()["id"])
    tools = memorytools.builtin_tools(None, test_settings.db_app_role)
    search, add = tools[memorytools.MEMORY_SEARCH_ID], tools[memorytools.MEMORY_ADD_ID]
    actor = Principal(user_id=user_id, is_admin=False, kind="job")  # as the runner's
    before = await search(database, actor, {"query": "safe code herons"}, run_id)
    assert before["memories"] == []  # the other persona's memory is not in this scope
    deleted = await client.delete(f"/api/v1/personas/{work['id']}", headers=headers)
    assert deleted.status_code == 204, deleted.text
    for tool, arguments in ((search, {"query": "safe code herons"}),
                            (add, {"content": "a fact for every persona"})):
        with pytest.raises(RoostError, match="agent was deleted"):
            await tool(database, actor, arguments, run_id)

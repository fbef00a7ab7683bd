"""What a model answers is not trusted: tool calls whose arguments hold a NUL, ids longer
than their column, one answer asking for hundreds of tool calls, a NUL in the streamed
text. Each is a failed step the model is told of (or a clear failure), never a run the
queue retries until it fails with a database error."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from roost.agents.runner import MAX_TOOL_CALLS_PER_TURN
from roost.db.engine import Database
from roost.tasks.worker import Worker
from tests.agents.conftest import Headers, make_agent, wait_for_run
from tests.chat.conftest import add_provider
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Call, Reply, ToolCalls


async def run_agent(client: httpx.AsyncClient, headers: Headers,
                    agent_id: uuid.UUID) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The finished run and its steps."""
    r = await client.post(f"/api/v1/agents/{agent_id}/runs", json={"input": "go"},
                          headers=headers)
    assert r.status_code == 202, r.text
    done = await wait_for_run(client, headers, r.json()["id"], within=60)
    steps = await client.get(f"/api/v1/runs/{done['id']}/steps", headers=headers,
                             params={"limit": 200})
    assert steps.status_code == 200, steps.text
    return done, steps.json()


async def test_tool_arguments_holding_a_nul_are_a_failed_step_the_model_is_told_of(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """The tool registry refuses arguments PostgreSQL could not record (a NUL in a value,
    by the built-in's schema; a key, not one the schema allows): a failed step, where the
    tool run's row failed the run after six tries."""
    owner, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, owner, tool_permissions=["current_time"])
    stub.script(ToolCalls(Call("current_time", {"timezone": "Europe/\x00Paris"}),
                          Call("current_time", {"\x00": "x"})),
                Reply("done"))
    done, steps = await run_agent(client, headers, agent.id)
    assert (done["status"], done["output"]) == ("completed", "done"), done["error_message"]
    failed = [s for s in steps if s["step_type"] == "tool_call"]
    assert [s["status"] for s in failed] == ["failed", "failed"]
    assert "NUL" in failed[0]["error"] and "unexpected property" in failed[1]["error"], failed
    told = [m for m in stub.requests(path="/v1/chat/completions")[1].body["messages"]
            if m["role"] == "tool"]
    assert len(told) == 2 and "NUL" in told[0]["content"]


async def test_tool_arguments_with_a_raw_nul_are_a_failed_step_not_a_failed_run(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """A raw NUL character in the arguments' text (not JSON's escape of one) is stored as
    the escape (llm.records.fit_result): inside a string the registry refuses the NUL,
    outside one the arguments are not JSON; each a failed step, the run goes on (the
    model step's output could not be stored and failed the run)."""
    owner, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, owner, tool_permissions=["current_time"])
    stub.script(ToolCalls(Call("current_time", '{"timezone": "Europe/\u0000Paris"}'),
                          Call("current_time", '{"timezone"\u0000: "UTC"}')),
                Reply("done"))
    done, steps = await run_agent(client, headers, agent.id)
    assert (done["status"], done["output"]) == ("completed", "done"), done["error_message"]
    assert [(s["step_type"], s["status"]) for s in steps] == [
        ("llm_call", "completed"), ("tool_call", "failed"), ("tool_call", "failed"),
        ("llm_call", "completed")]
    assert "NUL" in steps[1]["error"] and "not valid JSON" in steps[2]["error"], steps


async def test_a_tool_call_id_longer_than_its_column_is_answered_with_that_id(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """The step keeps a cut id (run_steps.tool_call_id holds 255 characters); the model is
    answered with the id it chose, each of two long ids that share their start apart."""
    owner, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, owner, tool_permissions=["current_time"])
    first, second = "i" * 300 + "a", "i" * 300 + "b"
    stub.script(ToolCalls(Call("current_time", {}, id=first), Call("current_time", {}, id=second)),
                Reply("done"))
    done, steps = await run_agent(client, headers, agent.id)
    assert (done["status"], done["output"]) == ("completed", "done"), done["error_message"]
    tools = [s for s in steps if s["step_type"] == "tool_call"]
    assert [s["status"] for s in tools] == ["completed", "completed"]
    stored = [s["tool_call_id"] for s in tools]
    assert all(len(i) <= 255 for i in stored) and stored[0] != stored[1]
    told = [m for m in stub.requests(path="/v1/chat/completions")[1].body["messages"]
            if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in told] == [first, second]


async def test_an_unknown_tool_name_is_not_kept_or_echoed_in_full(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """A model's 200,000-character tool name is cut as everywhere else (the step's
    tool_name at 256, /mcp's "unknown tool: <100 chars>..."): it was copied whole into
    the failed step's error and input, and into what the model was told."""
    owner, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, owner, tool_permissions=["current_time"])
    stub.script(ToolCalls(Call("n" * 200_000, {})), Reply("done"))
    done, steps = await run_agent(client, headers, agent.id)
    assert (done["status"], done["output"]) == ("completed", "done"), done["error_message"]
    [failed] = [s for s in steps if s["step_type"] == "tool_call"]
    assert failed["status"] == "failed" and "unknown tool 'nnn" in failed["error"]
    assert len(failed["error"]) < 1_000 and len(failed["input"]["function"]) <= 256
    told = [m for m in stub.requests(path="/v1/chat/completions")[1].body["messages"]
            if m["role"] == "tool"]
    assert len(told) == 1 and len(told[0]["content"]) < 1_000, told


async def test_one_answer_runs_at_most_the_cap_of_tool_calls(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """max_steps counts model calls; the tool calls of one answer are capped: the ones
    after MAX_TOOL_CALLS_PER_TURN are failed steps the model is told of, not run."""
    owner, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, owner, tool_permissions=["current_time"])
    asked = MAX_TOOL_CALLS_PER_TURN + 3
    stub.script(ToolCalls(*[Call("current_time", {}) for _ in range(asked)]), Reply("done"))
    done, steps = await run_agent(client, headers, agent.id)
    assert (done["status"], done["output"]) == ("completed", "done"), done["error_message"]
    tools = [s for s in steps if s["step_type"] == "tool_call"]
    assert [s["status"] for s in tools] == (["completed"] * MAX_TOOL_CALLS_PER_TURN
                                            + ["failed"] * 3)
    assert f"at most {MAX_TOOL_CALLS_PER_TURN} tool calls" in tools[-1]["error"]
    assert tools[-1]["tool_run_id"] is None  # never run
    told = [m for m in stub.requests(path="/v1/chat/completions")[1].body["messages"]
            if m["role"] == "tool"]
    assert len(told) == asked and "at most" in told[-1]["content"]


async def test_a_nul_in_the_streamed_text_fails_the_run_with_a_clear_message(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """The streamed text goes to listeners without the NUL (no NOTIFY payload holds one);
    the model call's record then refuses the answer, which the run's error says (it was
    an anonymous "internal error" from the delta's NOTIFY)."""
    owner, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, owner)
    stub.script(Reply("do\x00ne"))
    done, _ = await run_agent(client, headers, agent.id)
    assert done["status"] == "failed", done
    assert "the provider's answer could not be stored" in done["error_message"], done

"""Overlapping operations on one run, or on what it uses: cancels at once (one wins, the
others are 409s), a cancel meeting the run's end (a completed run stays completed), a
cancel while a tool runs, the agent, persona, API key or user deleted while the run is in
flight.  None answers a 5xx, and each ends consistent: one end recorded, no step or tool
run left running, the run's job completed at its first attempt."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from roost.agents import memorytools
from roost.agents.models import Agent
from roost.config import Settings
from roost.db.engine import Database
from roost.tasks.worker import Worker
from roost.tools import builtins
from tests.agents.conftest import Headers, make_agent, wait_for_run
from tests.agents.test_runs import start
from tests.chat.conftest import add_provider, sse_events
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Call, Hang, Reply, ToolCalls
from tests.support.races import no_5xx, race_settings, until_none, wait_for_steps
from tests.support.sql import fetch, scalar

OPEN_JOB = ("pending", "queued", "running", "failed", "stuck")  # not finished with


@pytest.fixture
def test_settings(test_settings: Settings) -> Settings:
    return race_settings(test_settings)


async def end_state(database: Database, run_id: str) -> dict[str, Any]:
    """The run's status, stop reason and output, its steps and tool runs still running,
    its cancel records, its run records in order, and its job's status."""
    [row] = await fetch(
        database,
        "SELECT r.status, r.stop_reason, r.output, "
        " (SELECT count(*) FROM run_steps s WHERE s.run_id = r.id AND s.status = 'running') "
        "   AS steps_running, "
        " (SELECT count(*) FROM tool_runs t WHERE t.run_id = r.id AND t.status = 'running') "
        "   AS tools_running, "
        " (SELECT count(*) FROM audit_logs a WHERE a.resource_id = r.id::text "
        "   AND a.action = 'agent.run.cancel') AS cancels, "
        " (SELECT array_agg(a.action ORDER BY a.created_at) FROM audit_logs a "
        "   WHERE a.resource_id = r.id::text AND a.action LIKE 'agent.run.%') AS run_records, "
        " (SELECT b.status FROM background_tasks b WHERE b.id = r.task_id) AS job "
        "FROM runs r WHERE r.id = :r", r=run_id)
    return dict(row._mapping)


async def settled_job(database: Database, run_id: str, within: float = 15) -> str:
    """The status of the run's job once it is no longer open (or after ``within`` s)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        job = str((await end_state(database, run_id))["job"])
        if job not in OPEN_JOB or asyncio.get_running_loop().time() > deadline:
            return job
        await asyncio.sleep(0.2)


def slow_current_time(monkeypatch: pytest.MonkeyPatch, seconds: float) -> asyncio.Event:
    """The built-in ``current_time`` tool taking ``seconds`` more: the event is set when a
    call of it starts."""
    original = builtins.current_time
    started = asyncio.Event()

    async def slow(arguments: dict[str, Any]) -> dict[str, Any]:
        started.set()
        await asyncio.sleep(seconds)
        return await original(arguments)

    monkeypatch.setattr(builtins, "current_time", slow)
    return started


async def run_midway(client: httpx.AsyncClient, admin_headers: Headers, headers: Headers,
                     stub: StubServer, database: Database, user_id: uuid.UUID,
                     monkeypatch: pytest.MonkeyPatch, phase: str,
                     tool_s: float = 1.5) -> tuple[Agent, dict[str, Any]]:
    """An agent of ``user_id`` that may call ``current_time``, and a run of it once it is
    in its model call (``phase`` "model": the answer streams for two seconds) or in its
    tool call ("tool": the tool takes ``tool_s`` more)."""
    await add_provider(client, admin_headers, stub)
    tool_started = slow_current_time(monkeypatch, tool_s)
    agent = await make_agent(database, user_id, tool_permissions=["current_time"])
    if phase == "model":
        stub.script(Reply("one two three four five six seven eight", chunk_delay_ms=250))
    else:
        stub.script(ToolCalls(Call("current_time", {"timezone": "UTC"})), Reply("Noon."))
    run = await start(client, headers, agent.id)
    if phase == "model":
        await wait_for_steps(client, headers, run["id"])
    else:
        await asyncio.wait_for(tool_started.wait(), 20)
    return agent, run


async def assert_the_run_ends_once(client: httpx.AsyncClient, headers: Headers,
                                   database: Database, stub: StubServer, run_id: str,
                                   model_calls: int) -> None:
    """What was deleted did not make the run's own writes fail: the run ends, its job
    completes at its first attempt (no step was interrupted and asked again), no step or
    tool run is left running, and the model was called ``model_calls`` times."""
    done = await wait_for_run(client, headers, run_id)
    assert done["status"] in ("completed", "failed"), done
    assert await settled_job(database, run_id) == "completed"
    state = await end_state(database, run_id)
    assert state["steps_running"] == 0 and state["tools_running"] == 0, state
    steps = (await client.get(f"/api/v1/runs/{run_id}/steps", headers=headers)).json()
    attempts = await scalar(database, "SELECT b.attempts FROM background_tasks b "
                                      "JOIN runs r ON r.task_id = b.id WHERE r.id = :r",
                            r=run_id)
    calls = len(stub.requests(path="/v1/chat/completions"))
    assert (attempts, calls) == (1, model_calls), (
        attempts, calls, [(s["step_type"], s["status"], s["error"]) for s in steps])


async def events_of(client: httpx.AsyncClient, headers: Headers,
                    run_id: str) -> tuple[int, str]:
    """The status and whole body of the run's event stream."""
    async with client.stream("GET", f"/api/v1/runs/{run_id}/events", headers=headers,
                             timeout=30) as resp:
        body = ""
        async for chunk in resp.aiter_text():
            body += chunk
        return resp.status_code, body


async def streaming_run(client: httpx.AsyncClient, headers: Headers, stub: StubServer,
                        agent_id: uuid.UUID) -> tuple[str, asyncio.Future[tuple[int, str]]]:
    """A run of the agent whose answer streams for three seconds, and its event stream
    being read, once its model call has started."""
    stub.script(Reply(" ".join(f"w{i}" for i in range(20)), chunk_delay_ms=150))
    run = await start(client, headers, agent_id)
    streaming = asyncio.ensure_future(events_of(client, headers, run["id"]))
    await wait_for_steps(client, headers, run["id"])
    return run["id"], streaming


@pytest.mark.parametrize("n", [2, 5])
async def test_cancels_at_once_one_wins_the_others_are_409s(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker, n: int,
) -> None:
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id)
    stub.script(Hang())
    run = await start(client, headers, agent.id)
    await wait_for_steps(client, headers, run["id"])
    answers = await asyncio.gather(*(
        client.post(f"/api/v1/runs/{run['id']}/cancel", headers=headers) for _ in range(n)))
    no_5xx(*answers)
    assert sorted(r.status_code for r in answers) == [200] + [409] * (n - 1), [
        r.text for r in answers]
    state = await end_state(database, run["id"])
    assert state["status"] == "cancelled" and state["steps_running"] == 0, state
    assert state["cancels"] == 1, state


async def test_a_cancel_while_the_run_finishes_is_a_409_and_the_run_stays_completed(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The run's final transaction (which has marked it completed and holds its row) takes
    a moment (here: queuing the learning job, slowed down); a cancel arriving then sees
    the run completed (409) and leaves it so."""
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id, config={"learn": True})
    in_final = asyncio.Event()
    original = memorytools.learn_from_run

    async def slow_learn(*args: Any, **kwargs: Any) -> Any:
        in_final.set()
        await asyncio.sleep(1.0)
        return await original(*args, **kwargs)

    monkeypatch.setattr(memorytools, "learn_from_run", slow_learn)
    stub.script(Reply("The answer."))
    run = await start(client, headers, agent.id)
    await asyncio.wait_for(in_final.wait(), 20)
    cancelled = await client.post(f"/api/v1/runs/{run['id']}/cancel", headers=headers)
    no_5xx(cancelled)
    done = await wait_for_run(client, headers, run["id"])
    state = await end_state(database, run["id"])
    assert cancelled.status_code == 409, (cancelled.status_code, cancelled.text, state)
    assert done["status"] == "completed" and state["cancels"] == 0, state


async def test_cancels_racing_fast_runs_leave_each_run_one_end(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """Fast runs, cancels sent at varying moments: whoever wins, the run has one end
    record, and its status agrees with the cancel's answer."""
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id)
    stub.script(Reply("Quick.", times=None))
    mixed = []
    for i in range(12):
        run = await start(client, headers, agent.id)
        await asyncio.sleep(0.02 * (i % 6))
        answer = await client.post(f"/api/v1/runs/{run['id']}/cancel", headers=headers)
        no_5xx(answer)
        await wait_for_run(client, headers, run["id"])
        await settled_job(database, run["id"])
        state = await end_state(database, run["id"])
        ends = [r for r in state["run_records"] or [] if r != "agent.run.create"]
        if len(ends) != 1 or (answer.status_code == 200) != (state["status"] == "cancelled"):
            mixed.append((answer.status_code, state["status"], state["output"], ends))
    assert not mixed, mixed


async def test_a_cancel_while_a_tool_runs_closes_the_run_its_step_and_tool_run(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker, monkeypatch: pytest.MonkeyPatch,
) -> None:
    user_id, headers = user
    _, run = await run_midway(client, admin_headers, headers, stub, database, user_id,
                              monkeypatch, "tool", tool_s=2.5)
    cancelled = await client.post(f"/api/v1/runs/{run['id']}/cancel", headers=headers)
    no_5xx(cancelled)
    assert cancelled.status_code == 200, cancelled.text
    # The tool's own end, after the cancel, changes nothing; the job then completes.
    assert await settled_job(database, run["id"]) == "completed"
    state = await end_state(database, run["id"])
    assert state["status"] == "cancelled", state
    assert state["steps_running"] == 0 and state["tools_running"] == 0, state
    steps = (await client.get(f"/api/v1/runs/{run['id']}/steps", headers=headers)).json()
    assert [s["status"] for s in steps] == ["completed", "cancelled"], steps
    assert len(stub.requests(path="/v1/chat/completions")) == 1  # no model call after


@pytest.mark.parametrize("phase", ["model", "tool"])
async def test_the_agent_deleted_while_its_run_is_in_flight_the_run_ends_once(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker, monkeypatch: pytest.MonkeyPatch,
    phase: str,
) -> None:
    user_id, headers = user
    agent, run = await run_midway(client, admin_headers, headers, stub, database, user_id,
                                  monkeypatch, phase)
    deleted = await client.delete(f"/api/v1/agents/{agent.id}", headers=headers)
    no_5xx(deleted)
    assert deleted.status_code == 204, deleted.text
    await assert_the_run_ends_once(client, headers, database, stub, run["id"],
                                   1 if phase == "model" else 2)


async def test_the_persona_deleted_while_its_agent_s_run_is_in_flight_the_run_ends_once(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker, monkeypatch: pytest.MonkeyPatch,
) -> None:
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    persona = await client.post("/api/v1/personas", json={"name": "Clerk"}, headers=headers)
    assert persona.status_code == 201, persona.text
    tool_started = slow_current_time(monkeypatch, 1.5)
    agent = await make_agent(database, user_id, tool_permissions=["current_time"],
                             persona_id=uuid.UUID(persona.json()["id"]))
    stub.script(ToolCalls(Call("current_time", {"timezone": "UTC"})),
                Reply("one two three four five", chunk_delay_ms=200))
    run = await start(client, headers, agent.id)
    await asyncio.wait_for(tool_started.wait(), 20)
    deleted = await client.delete(f"/api/v1/personas/{persona.json()['id']}", headers=headers)
    no_5xx(deleted)
    assert deleted.status_code == 204, deleted.text
    await assert_the_run_ends_once(client, headers, database, stub, run["id"], 2)


async def test_runs_started_while_their_agent_is_deleted_are_accepted_or_refused(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """A run started while its agent is deleted: 202, or 404 / 409 (its insert met the
    deletion), never a 5xx; no run stays open."""
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    stub.script(Reply("Quick.", times=None))
    for _ in range(5):
        agent = await make_agent(database, user_id)
        answers = await asyncio.gather(
            client.post(f"/api/v1/agents/{agent.id}/runs", json={"input": "hi"},
                        headers=headers),
            client.delete(f"/api/v1/agents/{agent.id}", headers=headers),
            client.post(f"/api/v1/agents/{agent.id}/runs", json={"input": "hi"},
                        headers=headers))
        no_5xx(*answers)
        assert answers[1].status_code == 204
        assert {answers[0].status_code, answers[2].status_code} <= {202, 404, 409}
    assert await until_none(
        database, "SELECT count(*) FROM runs WHERE status IN ('pending', 'running')") == 0


async def test_runs_started_while_their_persona_is_deleted_are_accepted_or_refused(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers],
) -> None:
    """Runs of a persona's agent started while the persona is deleted: 202, or 404 (the
    agent went with it), never a 5xx.  A run's insert holds its agent's key, then its
    persona's; the deletion held the persona, then cascaded to the agent: a deadlock, a
    503 for each start.  The deletion now locks the agents first."""
    _, headers = user
    await add_provider(client, admin_headers, stub)
    for _ in range(4):
        persona = await client.post("/api/v1/personas", headers=headers, json={"name": "P"})
        assert persona.status_code == 201, persona.text
        agent = await client.post("/api/v1/agents", headers=headers, json={
            "name": "A", "slug": f"a-{uuid.uuid4().hex[:8]}",
            "persona_id": persona.json()["id"]})
        assert agent.status_code == 201, agent.text
        *started, deleted = await asyncio.gather(
            *(client.post(f"/api/v1/agents/{agent.json()['id']}/runs", headers=headers,
                          json={"input": "hi"}) for _ in range(3)),
            client.delete(f"/api/v1/personas/{persona.json()['id']}", headers=headers))
        no_5xx(*started, deleted)
        assert deleted.status_code == 204, deleted.text
        assert {answer.status_code for answer in started} <= {202, 404}, [
            answer.text for answer in started]


async def test_the_api_key_revoked_while_its_events_stream_the_run_completes(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id)
    made = await client.post("/api/v1/api-keys", json={"name": "streamer"}, headers=headers)
    assert made.status_code == 201, made.text
    streamer = {"Authorization": f"Bearer {made.json()['key']}"}
    run_id, streaming = await streaming_run(client, streamer, stub, agent.id)
    revoked = await client.delete(f"/api/v1/api-keys/{made.json()['id']}", headers=headers)
    no_5xx(revoked)
    assert revoked.status_code == 204
    code, _ = await asyncio.wait_for(streaming, 30)
    assert code == 200
    done = await wait_for_run(client, headers, run_id)
    assert done["status"] == "completed"
    after = await client.get(f"/api/v1/runs/{run_id}", headers=streamer)
    assert after.status_code == 401


async def test_the_user_deleted_while_their_run_s_events_stream_it_ends_with_an_error(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id)
    run_id, streaming = await streaming_run(client, headers, stub, agent.id)
    deleted = await client.delete(f"/api/v1/users/{user_id}", headers=admin_headers)
    no_5xx(deleted)
    assert deleted.status_code == 204, deleted.text
    code, body = await asyncio.wait_for(streaming, 30)
    assert code == 200
    name, data = sse_events(body)[-1]
    # The user's credential went with them: the stream ends as signed out (401).
    assert (name, data["status"]) == ("error", 401), body[-500:]
    assert await until_none(
        database, "SELECT (SELECT count(*) FROM runs WHERE id = :r "
                  "AND status IN ('pending', 'running')) "
                  "+ (SELECT count(*) FROM background_tasks WHERE status = 'running' "
                  "AND payload->>'run_id' = CAST(:r AS text))", r=run_id) == 0

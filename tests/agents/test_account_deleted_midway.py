"""An account suspended, deactivated or deleted while its agent runs are in flight, and a
public agent deleted with its owner while another user runs it or chats with it: the
account's credentials are refused at once, each run's job completes at its first
attempt (never failed and retried), nothing is left running, the usage ledger keeps
every model call that was made, no answer is a 5xx, and the audit chain stands."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from fastapi import FastAPI

from roost.config import Settings
from roost.db.engine import Database
from roost.tasks.worker import Worker
from tests.agents.conftest import Headers, make_agent, running_worker, wait_for_run
from tests.agents.test_races_runs import events_of, run_midway, settled_job
from tests.agents.test_runs import start
from tests.chat.conftest import add_provider, sse_events
from tests.support.lifecycle import (
    assert_audit_chain_intact,
    end_account,
    jobs,
    no_open_jobs,
)
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Reply
from tests.support.races import no_5xx, race_settings, until_none, wait_for_steps
from tests.support.sql import scalar

SLOW_ANSWER = "one two three four five six seven eight"  # 2 s at 250 ms a chunk


@pytest.fixture
def test_settings(test_settings: Settings) -> Settings:
    return race_settings(test_settings)


async def usage_of(database: Database, run_id: str) -> int:
    return int(await scalar(database, "SELECT count(*) FROM usage_records WHERE run_id = :r",
                            r=run_id))


@pytest.mark.parametrize(("how", "phase"), [
    ("suspend", "tool"), ("deactivate", "tool"), ("delete", "tool"), ("delete", "model"),
])
async def test_an_account_ended_mid_run_ends_the_run_and_its_job_completes_once(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker, monkeypatch: pytest.MonkeyPatch,
    how: str, phase: str,
) -> None:
    user_id, headers = user
    _, run = await run_midway(client, admin_headers, headers, stub, database, user_id,
                              monkeypatch, phase)
    await end_account(client, admin_headers, user_id, how)
    assert (await client.get(f"/api/v1/runs/{run['id']}", headers=headers)).status_code == 401
    await no_open_jobs(database)
    assert [(t, s, a) for t, s, a, _ in await jobs(database, "agents.%")] == [
        ("agents.run", "completed", 1)], await jobs(database)
    assert await scalar(database, "SELECT count(*) FROM runs WHERE status IN "
                                  "('pending', 'running')") == 0
    assert await scalar(database, "SELECT count(*) FROM run_steps WHERE status = 'running'") == 0
    assert await scalar(database, "SELECT count(*) FROM tool_runs WHERE status = 'running'") == 0
    # The model call made before the account ended stays in the ledger, even deleted.
    assert await usage_of(database, run["id"]) == len(stub.requests(path="/v1/chat/completions"))
    assert await usage_of(database, run["id"]) >= 1
    await assert_audit_chain_intact(database)


async def test_runs_queued_for_a_deleted_account_end_without_asking_the_model(
    app: FastAPI, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    database: Database, user: tuple[uuid.UUID, Headers], test_settings: Settings,
) -> None:
    """No worker while the runs are queued; the account is deleted; then a worker starts."""
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id)
    stub.script(Reply("Late.", times=None))
    for _ in range(3):
        await start(client, headers, agent.id)
    await end_account(client, admin_headers, user_id)
    assert await scalar(database, "SELECT count(*) FROM runs") == 0
    async with running_worker(app, database, test_settings):
        await no_open_jobs(database)
    assert [(t, s, a) for t, s, a, _ in await jobs(database, "agents.%")] == [
        ("agents.run", "completed", 1)] * 3, await jobs(database)
    assert stub.requests(path="/v1/chat/completions") == []


async def test_deleting_an_account_keeps_the_usage_ledger_of_its_finished_runs(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id)
    stub.script(Reply("Billed."))
    run = await start(client, headers, agent.id)
    await wait_for_run(client, headers, run["id"])
    assert await usage_of(database, run["id"]) == 1
    await end_account(client, admin_headers, user_id)
    assert await usage_of(database, run["id"]) == 1


async def test_a_public_agent_deleted_with_its_owner_while_another_user_runs_it(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], other_user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    owner_id, _ = user
    runner_id, runner = other_user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, owner_id, is_public=True)
    stub.script(Reply(SLOW_ANSWER, chunk_delay_ms=250))
    run = await start(client, runner, agent.id)
    await wait_for_steps(client, runner, run["id"])
    await end_account(client, admin_headers, owner_id)
    done = await wait_for_run(client, runner, run["id"])
    assert done["status"] in ("completed", "failed"), done
    assert await settled_job(database, run["id"]) == "completed"
    # The runner's model call is in the ledger, as their usage.
    assert await scalar(database, "SELECT count(*) FROM usage_records WHERE run_id = :r "
                                  "AND user_id = :u", r=run["id"], u=runner_id) == 1
    again = await client.post(f"/api/v1/agents/{agent.id}/runs", json={"input": "hi"},
                              headers=runner)
    no_5xx(again)
    assert again.status_code == 404, again.text
    await assert_audit_chain_intact(database)


async def test_a_public_agent_deleted_with_its_owner_while_another_user_s_chat_streams(
    app: FastAPI, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    database: Database, user: tuple[uuid.UUID, Headers], other_user: tuple[uuid.UUID, Headers],
    worker: Worker,
) -> None:
    """The streamed answer ends with a frame; the next turn naming the agent is a 404."""
    owner_id, _ = user
    _, chatter = other_user
    await add_provider(client, admin_headers, stub)
    await make_agent(database, owner_id, slug="pub-clock", is_public=True)
    stub.script(Reply(" ".join(f"w{i}" for i in range(16)), chunk_delay_ms=150))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://roost.test") as http:
        sid = (await http.post("/api/v1/chat/sessions", json={}, headers=chatter)).json()["id"]
        url = f"/api/v1/chat/sessions/{sid}/messages"
        answer = asyncio.ensure_future(http.post(url, headers=chatter, timeout=40, json={
            "content": "hi", "model": "agent:pub-clock", "stream": True}))
        deadline = asyncio.get_running_loop().time() + 20
        while not await scalar(database, "SELECT count(*) FROM run_steps"):
            assert asyncio.get_running_loop().time() < deadline, "the agent's run never began"
            await asyncio.sleep(0.05)
        await end_account(client, admin_headers, owner_id)
        streamed = await asyncio.wait_for(answer, 40)
        no_5xx(streamed)
        events = sse_events(streamed.text)
        assert events and events[-1][0] in ("done", "error"), streamed.text[-400:]
        assert await until_none(database, "SELECT count(*) FROM runs WHERE status IN "
                                          "('pending', 'running')") == 0
        later = await http.post(url, headers=chatter, json={"content": "again",
                                                            "model": "agent:pub-clock"})
        no_5xx(later)
        assert later.status_code == 404, later.text
        assert (await http.get(url, headers=chatter)).status_code == 200
    await assert_audit_chain_intact(database)


async def test_the_run_events_stream_of_a_suspended_account_ends(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """A stream authorised when it opened outlives the suspension only until its run
    ends: it ends, never hangs, never answers a 5xx."""
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id)
    stub.script(Reply(" ".join(f"w{i}" for i in range(12)), chunk_delay_ms=150))
    run = await start(client, headers, agent.id)
    streaming = asyncio.ensure_future(events_of(client, headers, run["id"]))
    await wait_for_steps(client, headers, run["id"])
    await end_account(client, admin_headers, user_id, "suspend")
    code, body = await asyncio.wait_for(streaming, 40)
    assert code == 200
    assert sse_events(body), body[-300:]
    assert await settled_job(database, run["id"]) == "completed"

"""Two attempts of one debate's job at once (a lease taken over while the first attempt
still runs, until its heartbeat stops it): one debate, each turn and ballot once."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from fastapi import FastAPI

from roost.db.engine import Database
from roost.debates import runner
from roost.llm.deps import app_gateway
from tests.chat.conftest import add_provider
from tests.debates.conftest import Headers, start
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Reply
from tests.support.sql import scalar


async def test_two_runners_of_one_debate_store_and_audit_each_turn_once(
    app: FastAPI, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    database: Database, user: tuple[uuid.UUID, Headers],
) -> None:
    """Two attempts running one debate at once (a lease taken over while the first still
    runs): each turn is stored and audited once, and the attempt that lost a race goes on
    with the stored turn and reports the debate's end (a third `debate.turn` audit was
    written for the refused insert, and that attempt ended "cancelled", leaving the debate
    open when it was the one the queue kept)."""
    _, headers = user
    await add_provider(client, admin_headers, stub)
    stub.script(Reply(text='{"ranking": ["a", "b"], "confidence": 0.5}', times=None,
                      delay_ms=150))
    created = await start(client, headers, topic="t", positions=["a", "b"], total_rounds=1,
                          participants=[{"id": "x", "model": "stub-model"},
                                        {"id": "y", "model": "stub-model"}])
    env = runner.DebateEnv(database=database, gateway=app_gateway(app))
    debate_id = uuid.UUID(created["id"])
    outcomes = await asyncio.wait_for(asyncio.gather(
        runner.execute(env, debate_id), runner.execute(env, debate_id)), timeout=60)
    done = (await client.get(f"/api/v1/debates/{debate_id}", headers=headers)).json()
    assert done["status"] == "completed", done
    assert len(done["turns"]) == 2 and len(done["ballots"]) == 2
    audited = await scalar(database, "SELECT count(*) FROM audit_logs WHERE action = "
                           "'debate.turn' AND resource_id = :d", d=created["id"])
    # 2 turns stored: 2 `debate.turn` audits; neither attempt reports a cancel that never was
    assert (audited, sorted(outcomes)) == (2, ["completed", "completed"]), (audited, outcomes)

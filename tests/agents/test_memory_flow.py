"""Issue 15's promise end to end: a person chats with an agent, the agent remembers a fact
in a later run, the fact changes and the agent uses the new one, and `roost memory graph`
shows the entity's history.  Real worker (runs and memory.learn jobs), the OpenAI stub
scripted with the model's answers, extraction and reconciliation included."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from roost.tasks.worker import Worker
from tests.agents.conftest import Headers, make_agent
from tests.chat.conftest import add_provider
from tests.support.cli import run_roost
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Reply
from tests.support.pg import PgTestServer

CAT = [{"name": "user", "type": "person"}]


def _fact(content: str, cat: str) -> dict[str, Any]:
    return {"content": content, "memory_type": "fact", "confidence": 0.9,
            "entities": [*CAT, {"name": cat, "type": "cat"}],
            "relationships": [{"source": "user", "relation": "has_cat", "target": cat}]}


async def _say(http: httpx.AsyncClient, headers: Headers, sid: str, content: str) -> dict[str, Any]:
    answer = await http.post(f"/api/v1/chat/sessions/{sid}/messages", headers=headers, timeout=30,
                             json={"content": content, "model": "agent:keeper"})
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def _learned(database: Database, run_id: str, within: float = 20) -> None:
    """Until the run's memory.learn job has finished."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        async with database.transaction() as s:
            state = (await s.execute(text(
                "SELECT status FROM background_tasks WHERE task_type = 'memory.learn' "
                "AND payload->>'source_id' = :r"), {"r": run_id})).scalar()
        if state in ("completed", "failed", "dead_letter"):
            assert state == "completed", state
            return
        assert asyncio.get_running_loop().time() < deadline, state
        await asyncio.sleep(0.1)


def _system_prompt(stub: StubServer) -> str:
    agent_calls = [r for r in stub.requests(path="/v1/chat/completions")
                   if r.body["messages"][0]["role"] == "system"
                   and "What you remember" in r.body["messages"][0]["content"]]
    return str(agent_calls[-1].body["messages"][0]["content"]) if agent_calls else ""


async def test_an_agent_remembers_a_fact_that_later_changes(
    app: Any, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker, client: httpx.AsyncClient,
    pg_server: PgTestServer, db_name: str, tmp_path: Path, test_keys: KeyMaterial,
) -> None:
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    await make_agent(database, user_id, slug="keeper", config={"memory_k": 5, "learn": True})
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://roost.test") as http:
        sid = (await http.post("/api/v1/chat/sessions", json={}, headers=headers)).json()["id"]

        # 1. A fact, told in a chat: the run answers, then its exchange is learned.
        stub.script(Reply("Nice, I will remember Miso."),
                    Reply(json={"facts": [_fact("The user's cat is called Miso", "Miso")]}))
        told = await _say(http, headers, sid, "My cat is called Miso.")
        await _learned(database, told["run_id"])
        async with database.transaction() as s:
            miso = (await s.execute(text(
                "SELECT id FROM memories WHERE content = 'The user''s cat is called Miso' "
                "AND valid_to IS NULL"))).scalar_one()

        # 2. A later run remembers it (recalled into its context).
        stub.script(Reply("Your cat is called Miso."), Reply(json={"facts": []}))
        asked = await _say(http, headers, sid, "What is my cat called?")
        assert asked["assistant_message"]["content"] == "Your cat is called Miso."
        assert "The user's cat is called Miso" in _system_prompt(stub)
        await _learned(database, asked["run_id"])

        # 3. The fact changes: reconciliation closes the old one.
        stub.script(Reply("Got it, Tofu now."),
                    Reply(json={"facts": [_fact("The user's cat is called Tofu", "Tofu")]}),
                    Reply(json={"decisions": [{"fact_index": 0, "action": "invalidate",
                                               "target_id": str(miso), "reason": "renamed"}]}))
        changed = await _say(http, headers, sid, "Actually, my cat is now called Tofu.")
        await _learned(database, changed["run_id"])

        # 4. The agent uses the new fact, not the old one.
        stub.script(Reply("Your cat is called Tofu."), Reply(json={"facts": []}))
        again = await _say(http, headers, sid, "What is my cat called?")
        prompt = _system_prompt(stub)
        assert "The user's cat is called Tofu" in prompt and "Miso" not in prompt
        assert again["assistant_message"]["content"] == "Your cat is called Tofu."
        await _learned(database, again["run_id"])

    # 5. `roost memory graph` shows the entity's history: Miso once, Tofu now.
    async with database.transaction() as s:
        username = (await s.execute(text("SELECT username FROM users WHERE id = :u"),
                                    {"u": user_id})).scalar_one()
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name), "ROOST_DATA_DIR": str(tmp_path / "cli"),
           "ROOST_KNOWLEDGE_EMBEDDING_PROVIDER": "hash"}
    shown = await asyncio.to_thread(run_roost, "memory", "graph", "user", "--user", username, env=env)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    miso_line = next(line for line in lines if "--has_cat--> Miso" in line)
    tofu_line = next(line for line in lines if "--has_cat--> Tofu" in line)
    assert "past" in miso_line and "current" in tofu_line
    assert "1 current, 1 past relation" in shown.stdout

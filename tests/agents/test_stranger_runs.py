"""A stranger's run of a public agent (docs/agents.md, "Public agents"): someone who
neither owns the agent nor is a member of its persona is offered global tools only, none
of their own and no built-in acting on their own data, and recalls no memories: the
agent's author wrote the prompt, the persona's members read the run."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from roost.config import Settings
from roost.db.engine import Database
from roost.knowledge.config import EmbedderSpec, KnowledgeConfig
from roost.tasks.worker import Worker
from tests.agents.api import Headers, add_member, create_agent, create_persona, named_user
from tests.agents.conftest import running_worker, wait_for_run
from tests.agents.roles import private_tool
from tests.chat.conftest import add_provider
from tests.knowledge.support import ingest, principal
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Call, Reply, ToolCalls


def _offered(stub: StubServer, index: int = -1) -> list[str]:
    """The function names the model was offered in its ``index``-th request."""
    body = stub.requests(path="/v1/chat/completions")[index].body
    return sorted(t["function"]["name"] for t in body.get("tools") or [])


async def _run(client: httpx.AsyncClient, headers: Headers, agent_id: str) -> dict[str, object]:
    run = await client.post(f"/api/v1/agents/{agent_id}/runs", headers=headers,
                            json={"input": "hi there, zebra safe"})
    assert run.status_code == 202, run.text
    done = await wait_for_run(client, headers, run.json()["id"])
    assert done["status"] == "completed", done
    return done


async def test_a_public_agent_naming_a_tool_is_not_given_the_runners_own_tool_of_that_name(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    worker: Worker,
) -> None:
    """Alice's public agent names ``drop_everything`` (her own tool, so configuring it
    passes): Bob's run is not offered Bob's private tool of that name (Alice's prompt would
    drive it with Bob's credentials), nor Alice's; Alice's own run is offered hers."""
    await add_provider(client, admin_headers, stub)
    a_id, _, alice = await named_user(database, "alice")
    b_id, _, bob = await named_user(database, "bob")
    await private_tool(database, a_id, "drop_everything", "ALICE-TOOL")
    bobs = await private_tool(database, b_id, "drop_everything", "BOB-PRIVATE-TOOL")
    pub = await create_agent(client, alice, slug="pubtool", is_public=True,
                             tool_permissions=["drop_everything", "current_time"])
    stub.script(Reply("ok"))
    await _run(client, bob, pub["id"])
    offered = json.dumps(stub.requests(path="/v1/chat/completions")[-1].body.get("tools", []))
    assert "BOB-PRIVATE-TOOL" not in offered and "ALICE-TOOL" not in offered, offered
    assert _offered(stub) == ["current_time"]  # the agent runs with the rest

    # Nor by id: an agent listing the runner's tool's id (a PATCH as the system would) is
    # not given it either in a stranger's run.
    async with database.transaction() as s:
        await s.execute(text("UPDATE agents SET tool_permissions = :t WHERE id = :a"),
                        {"t": json.dumps([str(bobs)]), "a": pub["id"]})
    stub.script(Reply("ok"))
    await _run(client, bob, pub["id"])
    assert _offered(stub) == []

    # The author's own run is offered the author's own tool.
    async with database.transaction() as s:
        await s.execute(text("UPDATE agents SET tool_permissions = :t WHERE id = :a"),
                        {"t": json.dumps(["drop_everything"]), "a": pub["id"]})
    stub.script(Reply("ok"))
    await _run(client, alice, pub["id"])
    offered = json.dumps(stub.requests(path="/v1/chat/completions")[-1].body.get("tools", []))
    assert "ALICE-TOOL" in offered and "BOB-PRIVATE-TOOL" not in offered, offered


async def test_a_public_persona_agent_s_keepers_do_not_read_a_stranger_s_private_documents(
    app: FastAPI, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    database: Database, test_settings: Settings, tmp_path: Path,
) -> None:
    """A stranger's run of a public persona agent is not offered knowledge_search (which
    would search the stranger's private documents into a step the persona's members read)
    nor memory_search: the model is offered the rest, a call of it is an unknown tool.
    A member's run of the same agent is offered them."""
    _, _, owner = await named_user(database, "owner")
    b_id, bob_name, bob = await named_user(database, "bob")
    (tmp_path / "diary.txt").write_text("Bob's private diary: the zebra safe holds 77-OKAPI.")
    cfg = KnowledgeConfig(ingest_roots=(tmp_path,), chunk_tokens=64, overlap_tokens=8,
                          embedder=EmbedderSpec("hash", "dev-hashing-384", 384))
    await ingest(database, principal(b_id), cfg, str(tmp_path / "diary.txt"))
    async with database.transaction() as s:
        await s.execute(text("DELETE FROM background_tasks"))
    await add_provider(client, admin_headers, stub)
    persona = await create_persona(client, owner)
    pub = await create_agent(client, owner, slug="friendly-bot", persona_id=persona["id"],
                             is_public=True, tool_permissions=[
                                 "knowledge_search", "memory_search", "current_time"])
    stub.script(ToolCalls(Call("knowledge_search", {"query": "zebra safe diary"})),
                Reply("Hello!"))
    async with running_worker(app, database, test_settings, knowledge=cfg):
        done = await _run(client, bob, pub["id"])
        assert _offered(stub, -2) == ["current_time"]
        own = await client.get(f"/api/v1/runs/{done['id']}/steps", headers=bob)
        [step] = [s for s in own.json() if s["step_type"] == "tool_call"]
        assert step["status"] == "failed" and "unknown tool" in step["error"], step
        assert "77-OKAPI" not in own.text
        seen = await client.get(f"/api/v1/runs/{done['id']}/steps", headers=owner)
        assert seen.status_code == 200 and "77-OKAPI" not in seen.text, seen.text[-1500:]

        # Bob made a member: his run is the persona's, and searches his own documents.
        await add_member(client, owner, persona["id"], bob_name, "viewer", bob)
        stub.script(ToolCalls(Call("knowledge_search", {"query": "zebra safe diary"})),
                    Reply("Hello!"))
        done = await _run(client, bob, pub["id"])
        assert _offered(stub, -2) == ["current_time", "knowledge_search", "memory_search"]
        own = await client.get(f"/api/v1/runs/{done['id']}/steps", headers=bob)
        assert "77-OKAPI" in own.text


async def test_a_strangers_run_recalls_none_of_the_strangers_memories(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    worker: Worker,
) -> None:
    """``memory_k`` recalls the runner's memories into a step: not in a stranger's run of
    a public persona agent (the persona's members read it); the owner's own run recalls."""
    await add_provider(client, admin_headers, stub)
    _, _, owner = await named_user(database, "owner")
    _, _, bob = await named_user(database, "bob")
    stored = await client.post("/api/v1/memories", headers=bob,
                               json={"content": "Bob's bank PIN is 4417"})
    assert stored.status_code == 201, stored.text
    persona = await create_persona(client, owner)
    pub = await create_agent(client, owner, slug="recall-bot", persona_id=persona["id"],
                             is_public=True, config={"memory_k": 5})
    stub.script(Reply("Hello!"))
    done = await _run(client, bob, pub["id"])
    steps = (await client.get(f"/api/v1/runs/{done['id']}/steps", headers=bob)).json()
    assert [s["step_type"] for s in steps] == ["llm_call"], steps
    assert "4417" not in json.dumps(stub.requests(path="/v1/chat/completions")[-1].body)

    stub.script(Reply("Hello!"))
    mine = await _run(client, owner, pub["id"])
    steps = (await client.get(f"/api/v1/runs/{mine['id']}/steps", headers=owner)).json()
    assert [s["step_type"] for s in steps] == ["memory_recall", "llm_call"], steps

"""Retrieval in a stranger's run (docs/agents.md, "A stranger's run"): an agent's
``document_ids`` are searched only as far as both the runner and the agent's author read
them now, since the persona's members read the run's steps."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from roost.config import Settings
from roost.db.engine import Database
from roost.knowledge.config import EmbedderSpec, KnowledgeConfig
from tests.agents.api import Headers, add_member, create_agent, create_persona, named_user
from tests.agents.conftest import running_worker, wait_for_run
from tests.chat.conftest import add_provider
from tests.knowledge.support import drain_jobs, make_group, upload
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Reply


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", log_json=True, llm_timeout_s=5.0,
                    llm_local_model=False, knowledge_embedding_provider="hash",
                    knowledge_chunk_tokens=64, knowledge_chunk_overlap_tokens=8,
                    tools_allowed_hosts="127.0.0.1", tools_call_timeout_s=15.0)


@pytest.fixture
def cfg(tmp_path: Path) -> KnowledgeConfig:
    return KnowledgeConfig(ingest_roots=(tmp_path,), chunk_tokens=64, overlap_tokens=8,
                           embedder=EmbedderSpec("hash", "dev-hashing-384", 384))


async def _doc(client: httpx.AsyncClient, h: Headers, name: str, words: str,
               **form: str) -> str:
    r = await upload(client, h, name, words.encode(), **form)
    assert r.status_code == 202, r.text
    return str(r.json()["document"]["id"])


async def _run(client: httpx.AsyncClient, h: Headers, agent_id: str,
               input_: str = "zebra safe code please") -> dict[str, Any]:
    r = await client.post(f"/api/v1/agents/{agent_id}/runs", headers=h, json={"input": input_})
    assert r.status_code == 202, r.text
    return await wait_for_run(client, h, r.json()["id"])


async def test_a_strangers_run_retrieves_only_what_the_author_still_reads(
    app: FastAPI, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    database: Database, test_settings: Settings, cfg: KnowledgeConfig,
) -> None:
    """Alice's public persona agent names a document of group G, which she and Bob are in
    (Dave, a viewer of her persona, is not). Bob's run retrieves it while Alice is in G;
    once she has left, a run of Bob's retrieves nothing from it: Dave and Alice read the
    run's steps, and G's text was theirs to read through Bob's runs."""
    a_id, _, alice = await named_user(database, "alice")
    b_id, _, bob = await named_user(database, "bob")
    c_id, _, carol = await named_user(database, "carol")
    _, dave_name, dave = await named_user(database, "dave")
    team = await make_group(database, f"t-{uuid.uuid4().hex[:6]}", c_id, a_id, b_id)
    doc = await _doc(client, carol, "plan.txt", "zebra safe code is 66-QUOKKA team plan",
                     group_id=str(team))
    await drain_jobs(database, cfg)
    await add_provider(client, admin_headers, stub)
    persona = await create_persona(client, alice)
    await add_member(client, alice, persona["id"], dave_name, "viewer", dave)
    pub = await create_agent(client, alice, persona_id=persona["id"], is_public=True,
                             document_ids=[doc])
    stub.script(Reply("ok"), Reply("ok"))
    async with running_worker(app, database, test_settings, knowledge=cfg):
        before = await _run(client, bob, pub["id"])
        assert before["status"] == "completed", before
        steps = await client.get(f"/api/v1/runs/{before['id']}/steps", headers=alice)
        assert steps.status_code == 200 and "66-QUOKKA" in steps.text  # both read it
        async with database.transaction() as s:
            await s.execute(text("DELETE FROM user_group_memberships WHERE user_id = :u"),
                            {"u": str(a_id)})
        assert (await client.get(f"/api/v1/knowledge/documents/{doc}", headers=alice)
                ).status_code == 404
        after = await _run(client, bob, pub["id"])
    assert after["status"] == "completed", after
    for reader in (dave, alice, bob):
        seen = await client.get(f"/api/v1/runs/{after['id']}/steps", headers=reader)
        assert seen.status_code == 200, seen.text
        assert "66-QUOKKA" not in seen.text, seen.text[:600]
        body = seen.json()
        steps_seen = body["items"] if isinstance(body, dict) else body
        assert steps_seen[0]["step_type"] == "rag_retrieval"

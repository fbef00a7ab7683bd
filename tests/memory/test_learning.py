"""Learning: extraction and reconciliation against the OpenAI-compatible stub, which answers
scripted structured output.  Most tests call ``learning.learn`` directly; the queue tests go
through ``POST /api/v1/memories/learn`` and a worker in this process."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from roost.config import Settings
from roost.db.engine import Database
from roost.llm import jobs as llm_jobs
from roost.llm.deps import app_gateway
from roost.llm.gateway import LLMGateway
from roost.memory import learning, service
from roost.memory.extraction import ModelOutputInvalid
from roost.memory.learning import LearnReport
from roost.memory.models import Memory, MemoryHistory
from roost.memory.recall import usable_embedder
from roost.memory.schemas import MemoryCreate
from roost.memory.service import Scope
from roost.principal import Principal
from roost.tasks.worker import Worker
from tests.agents.conftest import make_agent
from tests.chat.conftest import add_provider, new_session
from tests.support.identity import make_user
from tests.support.openai_stub import Reply, StubServer
from tests.support.workers import in_process_worker

API = "/api/v1/memories"
Headers = dict[str, str]


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", log_json=True, llm_timeout_s=5.0,
                    llm_local_model=False, knowledge_embedding_provider="hash")


@pytest.fixture
async def gateway(app: FastAPI, client: httpx.AsyncClient, admin_headers: Headers,
                  stub: StubServer) -> LLMGateway:
    """The app's gateway with the stub as its only provider (``client`` first: start-up)."""
    await add_provider(client, admin_headers, stub)
    return app_gateway(app)


@pytest.fixture
async def worker(app: FastAPI, gateway: LLMGateway, database: Database) -> AsyncIterator[Worker]:
    llm_jobs.gateway_override = gateway
    try:
        async with in_process_worker(database) as w:
            yield w
    finally:
        llm_jobs.gateway_override = None


def fact(content: str, **extra: Any) -> dict[str, Any]:
    return {"content": content, "memory_type": "fact", "confidence": 0.9, **extra}


def extracted(*facts: dict[str, Any]) -> Reply:
    return Reply(json={"facts": list(facts)})


def decided(*decisions: dict[str, Any]) -> Reply:
    return Reply(json={"decisions": list(decisions)})


def person(user_id: uuid.UUID) -> Principal:
    return Principal(user_id=user_id, is_admin=False, kind="job")


async def run_learn(database: Database, gateway: LLMGateway, user_id: uuid.UUID, text_: str,
                    scope: Scope | None = None, **extra: Any) -> LearnReport:
    return await learning.learn(
        database, gateway, person(user_id), scope or Scope(user_id), source_type="manual",
        source_id=None, text=text_, embedder=usable_embedder(gateway.settings), **extra)


async def remember(database: Database, user_id: uuid.UUID, content: str,
                   scope: Scope | None = None, **extra: Any) -> Memory:
    async with database.transaction() as session:
        return await service.add_memory(session, person(user_id), scope or Scope(user_id),
                                        MemoryCreate(content=content, **extra))


async def rows(database: Database, sql: str, **params: Any) -> list[Any]:
    async with database.transaction() as session:
        return list((await session.execute(text(sql), params)).all())


def chat_requests(stub: StubServer) -> list[dict[str, Any]]:
    return [s.body for s in stub.requests("/v1/chat/completions")]


async def test_an_extracted_fact_is_added(database: Database, gateway: LLMGateway,
                                          stub: StubServer) -> None:
    user_id, _ = await make_user(database)
    # The answer arrives in a Markdown fence, as small models like to write it: tolerated.
    answer = json.dumps({"facts": [fact(
        "Ada lives in Paris", entities=[{"name": "Ada", "type": "person"},
                                        {"name": "Paris", "type": "place"}],
        relationships=[{"source": "Ada", "relation": "lives_in", "target": "Paris"}])]})
    stub.script(Reply(f"Here you go:\n```json\n{answer}\n```"))
    report = await run_learn(database, gateway, user_id, "Hi! I'm Ada and I live in Paris.")
    assert len(report.added) == 1 and not (report.updated or report.invalidated or report.unchanged)
    assert len(report.request_ids) == 1  # nothing to reconcile with: one call
    async with database.transaction() as session:
        memory = await session.get_one(Memory, report.added[0])
    assert (memory.content, memory.memory_type) == ("Ada lives in Paris", "fact")
    assert float(memory.confidence) == 0.9
    assert memory.source_type == "manual" and memory.user_id == user_id and memory.valid_to is None
    assert memory.embedding_model == "dev-hashing-384" and memory.embedding_dim == 384
    assert memory.memory_metadata == {"learned": True,
                                      "llm_request_ids": [str(report.request_ids[0])]}
    assert [tuple(r) for r in await rows(database, """
        SELECT s.name, r.relation, t.name FROM memory_relations r
        JOIN memory_entities s ON s.id = r.source_entity_id
        JOIN memory_entities t ON t.id = r.target_entity_id""")] == [("Ada", "lives_in", "Paris")]
    # One recorded call of its own type, JSON mode asked, usage recorded for the user.
    [sent] = chat_requests(stub)
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["messages"][-1]["content"] == "Hi! I'm Ada and I live in Paris."
    calls = await rows(database, "SELECT request_type, status, user_id FROM llm_requests")
    assert [tuple(c) for c in calls] == [("memory_extract", "completed", user_id)]
    usage = await rows(database, "SELECT request_type FROM usage_records WHERE user_id = :u", u=user_id)
    assert [u[0] for u in usage] == ["memory_extract"]
    audited = await rows(database, "SELECT metadata FROM audit_logs WHERE action = 'memory.learn'")
    assert audited[0][0]["added"] == [str(memory.id)]


async def test_a_refined_fact_updates_the_memory_and_keeps_history(
    database: Database, gateway: LLMGateway, stub: StubServer,
) -> None:
    user_id, _ = await make_user(database)
    old = await remember(database, user_id, "The user likes tea", confidence=0.7,
                         entities=[{"name": "tea", "type": "thing"}])
    stub.script(
        extracted(fact("The user likes green tea", confidence=0.8,
                       entities=[{"name": "green tea", "type": "thing"}],
                       relationships=[{"source": "user", "relation": "likes",
                                       "target": "green tea"}])),
        decided({"fact_index": 0, "action": "update", "target_id": str(old.id),
                 "content": "The user likes green tea, in the morning", "reason": "more precise"}),
    )
    report = await run_learn(database, gateway, user_id, "I love green tea in the morning")
    assert report.updated == [old.id] and not report.added
    # The reconciliation saw the candidate (same scope, shared words) and was its own call.
    reconcile = chat_requests(stub)[1]
    shown = json.loads(reconcile["messages"][-1]["content"])
    assert [m["id"] for m in shown["existing_memories"]] == [str(old.id)]
    assert shown["new_facts"][0]["candidate_ids"] == [str(old.id)]
    async with database.transaction() as session:
        memory = await session.get_one(Memory, old.id)
        history = list((await session.scalars(select(MemoryHistory).where(
            MemoryHistory.memory_id == old.id).order_by(MemoryHistory.created_at))).all())
    assert memory.content == "The user likes green tea, in the morning"
    assert float(memory.confidence) == 0.8 and memory.valid_to is None
    assert memory.embedding_model == "dev-hashing-384"  # re-embedded with the new text
    assert {e["name"] for e in memory.entities} == {"tea", "green tea"}
    assert [(h.event, h.old_content, h.new_content) for h in history] == [
        ("add", None, "The user likes tea"),
        ("update", "The user likes tea", "The user likes green tea, in the morning")]
    assert history[1].reason == "learned from manual: more precise"
    types = await rows(database, "SELECT request_type FROM llm_requests ORDER BY created_at")
    assert [t[0] for t in types] == ["memory_extract", "memory_reconcile"]
    relations = await rows(database, "SELECT relation, memory_id FROM memory_relations")
    assert [tuple(r) for r in relations] == [("likes", old.id)]


async def test_a_contradiction_closes_the_old_fact(
    database: Database, gateway: LLMGateway, stub: StubServer, client: httpx.AsyncClient,
) -> None:
    user_id, headers = await make_user(database)
    past = datetime(2024, 1, 1, tzinfo=UTC)
    old = await remember(database, user_id, "Ada lives in Paris", valid_from=past,
                         entities=[{"name": "Ada", "type": "person"}, {"name": "Paris", "type": "place"}],
                         relationships=[{"source": "Ada", "relation": "lives_in", "target": "Paris"}])
    moved = datetime(2025, 3, 1, tzinfo=UTC)
    stub.script(
        extracted(fact("Ada lives in Lyon", valid_from="2025-03-01T00:00:00Z",
                       entities=[{"name": "Ada", "type": "person"}, {"name": "Lyon", "type": "place"}],
                       relationships=[{"source": "Ada", "relation": "lives_in", "target": "Lyon"}])),
        decided({"fact_index": 0, "action": "invalidate", "target_id": str(old.id),
                 "reason": "Ada moved"}),
    )
    report = await run_learn(database, gateway, user_id, "Ada moved to Lyon in March 2025.")
    assert report.invalidated == [old.id] and len(report.added) == 1
    new_id = report.added[0]
    async with database.transaction() as session:
        closed = await session.get_one(Memory, old.id)
        new = await session.get_one(Memory, new_id)
    assert new.valid_from == moved and new.valid_to is None
    assert closed.valid_to == moved and closed.invalidated_by_id == new_id  # closed, not deleted
    # Now: Lyon only; a day after the old fact began: Paris.
    now = (await client.get(API, headers=headers)).json()["items"]
    assert [m["content"] for m in now] == ["Ada lives in Lyon"]
    then = (await client.get(API, headers=headers,
                             params={"as_of": (past + timedelta(days=1)).isoformat()})).json()["items"]
    assert [m["content"] for m in then] == ["Ada lives in Paris"]
    # The graph says the same: Paris until March 2025, Lyon since.
    edges = await rows(database, """
        SELECT t.name, r.valid_from, r.valid_to FROM memory_relations r
        JOIN memory_entities t ON t.id = r.target_entity_id ORDER BY r.valid_from""")
    assert [tuple(e) for e in edges] == [("Paris", past, moved), ("Lyon", moved, None)]
    history = (await client.get(f"{API}/{old.id}/history", headers=headers)).json()["items"]
    assert history[-1]["event"] == "invalidate" and history[-1]["related_memory_id"] == str(new_id)


async def test_the_subjects_previous_version_is_always_a_candidate(
    database: Database, gateway: LLMGateway, stub: StubServer,
) -> None:
    """Other subjects' facts that share the new value and words (six other Pablos' pets
    called Indigo, newer) do not crowd out the fact the new one replaces: what the scope
    says about the fact's subject, the same relation first, is shown before them."""
    user_id, _ = await make_user(database)

    def pet(name: str, value: str) -> dict[str, Any]:
        return {"entities": [{"name": name, "type": "person"}, {"name": value, "type": "animal"}],
                "relationships": [{"source": name, "relation": "has_pet", "target": value}]}

    old = await remember(database, user_id, "Pablo Horvath's pet is named Miso",
                         **pet("Pablo Horvath", "Miso"))
    await remember(database, user_id, "Pablo Horvath lives in Lisbon",
                   entities=[{"name": "Pablo Horvath", "type": "person"}],
                   relationships=[{"source": "Pablo Horvath", "relation": "lives_in",
                                   "target": "Lisbon"}])
    for name in ("Pablo Okafor", "Pablo Moreau", "Pablo Tanaka", "Pablo Novak", "Pablo Iyer",
                 "Pablo Galli"):
        await remember(database, user_id, f"{name}'s pet is named Indigo", **pet(name, "Indigo"))
    stub.script(
        extracted(fact("Pablo Horvath's pet is named Indigo", **pet("Pablo Horvath", "Indigo"))),
        decided({"fact_index": 0, "action": "invalidate", "target_id": str(old.id)}),
    )
    report = await run_learn(database, gateway, user_id, "Pablo Horvath adopted Indigo.")
    shown = json.loads(chat_requests(stub)[1]["messages"][-1]["content"])
    candidates = shown["new_facts"][0]["candidate_ids"]
    assert candidates[0] == str(old.id), candidates
    assert report.invalidated == [old.id]


async def test_a_known_fact_is_a_no_op(database: Database, gateway: LLMGateway,
                                       stub: StubServer) -> None:
    user_id, _ = await make_user(database)
    stub.script(extracted(fact("The user's cat is called Miso")))
    first = await run_learn(database, gateway, user_id, "My cat is called Miso")
    [memory_id] = first.added
    stub.script(extracted(fact("the user's cat is  called miso")))  # same content, other case
    again = await run_learn(database, gateway, user_id, "My cat is called Miso")
    assert again.unchanged == [memory_id] and not again.added
    assert len(again.request_ids) == 1  # the content matched: no reconciliation call
    # A paraphrase the model says is known: nothing written either.
    stub.script(extracted(fact("The user has a cat named Miso")),
                decided({"fact_index": 0, "action": "noop", "target_id": str(memory_id)}))
    said = await run_learn(database, gateway, user_id, "I have a cat, Miso")
    assert said.unchanged == [memory_id] and not (said.added or said.updated)
    assert len(await rows(database, "SELECT id FROM memories")) == 1
    history = await rows(database, "SELECT event FROM memory_history")
    assert [h[0] for h in history] == ["add"]


async def test_junk_output_stores_nothing(database: Database, gateway: LLMGateway,
                                          stub: StubServer) -> None:
    user_id, _ = await make_user(database)
    cases = [
        (Reply("Sure! The user likes tea."), "not JSON"),
        (Reply(json=[{"content": "x"}]), "not an object"),
        (Reply(json={"facts": [{"content": "x", "confidence": 7}]}),
         "facts.0.confidence: Input should be less than or equal to 1"),
        (Reply(json={"facts": [{"content": "x", "confidence": 0.5, "memory_type": "gossip"}]}),
         "facts.0.memory_type"),
        (Reply(json={"memories": []}), "facts: Field required"),
    ]
    for reply, expected in cases:
        stub.script(reply)
        with pytest.raises(ModelOutputInvalid) as caught:
            await run_learn(database, gateway, user_id, "I like tea")
        assert expected in caught.value.detail, caught.value.detail
        assert "Sure!" not in caught.value.detail  # the output itself is never echoed
    # A reconciliation answer of the wrong shape fails too, after extraction: still nothing.
    await remember(database, user_id, "The user likes tea")
    stub.script(extracted(fact("The user likes black tea")),
                decided({"fact_index": 0, "action": "replace"}))
    with pytest.raises(ModelOutputInvalid, match=r"decisions\.0\.action"):
        await run_learn(database, gateway, user_id, "I like black tea")
    assert [r[0] for r in await rows(database, "SELECT content FROM memories")] == ["The user likes tea"]
    failures = await rows(database, "SELECT count(*) FROM audit_logs WHERE action = 'memory.learn' "
                                    "AND NOT success")
    assert failures[0][0] == len(cases) + 1


async def test_a_nul_in_an_extracted_fact_is_unusable_model_output(
        database: Database, gateway: LLMGateway, stub: StubServer) -> None:
    """A fact, entity or relation holding NUL (which PostgreSQL text and jsonb cannot keep) is
    ModelOutputInvalid naming the field, nothing stored, a failed memory.learn audit record
    (it was the database's raw error)."""
    user_id, _ = await make_user(database)
    cases = [(fact("The user likes \x00 tea"), "facts.0.content"),
             (fact("The user likes tea", entities=[{"name": "t\x00", "type": "x"}]),
              "facts.0.entities"),
             (fact("The user likes tea", relationships=[
                 {"source": "a", "relation": "r\x00", "target": "b"}]), "facts.0.relationships")]
    for answer, where in cases:
        stub.script(extracted(answer))
        with pytest.raises(ModelOutputInvalid, match="NUL") as caught:
            await run_learn(database, gateway, user_id, "I like tea")
        assert where in caught.value.detail, caught.value.detail
    assert await rows(database, "SELECT id FROM memories") == []
    failures = await rows(database, "SELECT count(*) FROM audit_logs WHERE action = 'memory.learn' "
                                    "AND NOT success")
    assert failures[0][0] == len(cases)


async def test_a_nul_in_a_reconciliation_decision_is_unusable_model_output(
        database: Database, gateway: LLMGateway, stub: StubServer) -> None:
    """An update decision whose content holds NUL is ModelOutputInvalid; the memory is unchanged."""
    user_id, _ = await make_user(database)
    old = await remember(database, user_id, "The user likes tea")
    stub.script(extracted(fact("The user likes black tea")),
                decided({"fact_index": 0, "action": "update", "target_id": str(old.id),
                         "content": "The user likes \x00 tea"}))
    with pytest.raises(ModelOutputInvalid, match=r"decisions\.0\.content"):
        await run_learn(database, gateway, user_id, "I like black tea")
    assert [r[0] for r in await rows(database, "SELECT content FROM memories")] == [
        "The user likes tea"]


async def test_an_update_naming_blank_entities_is_applied(
        database: Database, gateway: LLMGateway, stub: StubServer) -> None:
    """Blank entity names and relation ends in an update decision's fact are skipped (as on
    add) and the update applied (it was a KeyError: '' in _extend_graph, a retried job)."""
    user_id, _ = await make_user(database)
    old = await remember(database, user_id, "The user likes coffee")
    blank = {"entities": [{"name": " ", "type": "thing"}, {"name": "Coffee", "type": "drink"}],
             "relationships": [{"source": " ", "relation": "likes", "target": "coffee"},
                               {"source": "user", "relation": " ", "target": "coffee"},
                               {"source": "user", "relation": "likes", "target": "coffee"}]}
    stub.script(extracted(fact("The user likes strong coffee", **blank)),
                decided({"fact_index": 0, "action": "update", "target_id": str(old.id)}))
    report = await run_learn(database, gateway, user_id, "I like strong coffee")
    assert report.updated == [old.id]
    assert [r[0] for r in await rows(database, "SELECT content FROM memories")] == [
        "The user likes strong coffee"]
    graph = await rows(database, "SELECT s.name, r.relation, t.name FROM memory_relations r "
                                 "JOIN memory_entities s ON s.id = r.source_entity_id "
                                 "JOIN memory_entities t ON t.id = r.target_entity_id")
    assert [tuple(g) for g in graph] == [("user", "likes", "Coffee")]
    names = await rows(database, "SELECT name FROM memory_entities ORDER BY name")
    assert [n[0] for n in names] == ["Coffee", "user"]


async def test_a_decision_naming_another_scope_does_nothing(
    database: Database, gateway: LLMGateway, stub: StubServer,
) -> None:
    alice, _ = await make_user(database)
    bob, _ = await make_user(database)
    agent = await make_agent(database, alice)
    bobs = await remember(database, bob, "The user likes coffee")
    alices_agent = await remember(database, alice, "The user likes coffee",
                                  scope=Scope(alice, agent_id=agent.id))
    mine = await remember(database, alice, "The user likes tea")
    stub.script(
        extracted(fact("The user likes coffee")),
        decided({"fact_index": 0, "action": "update", "target_id": str(bobs.id),
                 "content": "hijacked"},
                {"fact_index": 0, "action": "invalidate", "target_id": str(alices_agent.id)},
                {"fact_index": 0, "action": "invalidate", "target_id": "not-an-id"},
                {"fact_index": 7, "action": "add"}),
    )
    report = await run_learn(database, gateway, alice, "I like coffee")
    # Only Alice's own plain-scope memory was a candidate; every other decision is ignored.
    shown = json.loads(chat_requests(stub)[1]["messages"][-1]["content"])
    assert [m["id"] for m in shown["existing_memories"]] == [str(mine.id)]
    assert report.ignored == 4 and len(report.added) == 1 and not report.updated
    assert not report.invalidated
    state = await rows(database, "SELECT id, content, valid_to FROM memories WHERE id IN (:a, :b)",
                       a=bobs.id, b=alices_agent.id)
    assert {(r.content, r.valid_to) for r in state} == {("The user likes coffee", None)}
    history = await rows(database, "SELECT event FROM memory_history WHERE memory_id IN (:a, :b)",
                         a=bobs.id, b=alices_agent.id)
    assert [h[0] for h in history] == ["add", "add"]
    added = await rows(database, "SELECT user_id, agent_id FROM memories WHERE id = :i",
                       i=report.added[0])
    assert tuple(added[0]) == (alice, None)


async def _wait(client: httpx.AsyncClient, headers: Headers, task_id: str) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        job: dict[str, Any] = (await client.get(f"{API}/learn/{task_id}", headers=headers)).json()
        if job["status"] in ("completed", "dead_letter", "failed", "cancelled"):
            return job
        assert asyncio.get_running_loop().time() < deadline, job
        await asyncio.sleep(0.1)


async def test_learn_through_the_queue_once_per_source(
    database: Database, gateway: LLMGateway, client: httpx.AsyncClient, stub: StubServer,
) -> None:
    _, headers = await make_user(database)
    body = {"text": "I am allergic to peanuts."}
    first = await client.post(f"{API}/learn", headers=headers, json=body)
    assert first.status_code == 202, first.text
    assert first.json()["source_type"] == "manual" and first.json()["source_id"] is None
    again = await client.post(f"{API}/learn", headers=headers, json=body)
    assert again.status_code == 202 and again.json()["task_id"] == first.json()["task_id"]
    other = await client.post(f"{API}/learn", headers=headers, json={"text": "I like tea."})
    assert other.json()["task_id"] != first.json()["task_id"]
    jobs = await rows(database, "SELECT payload FROM background_tasks WHERE task_type = 'memory.learn'")
    assert len(jobs) == 2
    # The text travels encrypted (as chat text is stored), never in clear in the queue.
    assert all(j[0]["text"] is None and "peanuts" not in json.dumps(j[0]) for j in jobs)
    pending = (await client.get(f"{API}/learn/{first.json()['task_id']}", headers=headers)).json()
    assert pending["status"] == "pending" and pending["result"] is None
    _, stranger = await make_user(database)
    theirs = await client.get(f"{API}/learn/{first.json()['task_id']}", headers=stranger)
    assert theirs.status_code == 404


async def test_junk_output_fails_the_job_cleanly(
    database: Database, gateway: LLMGateway, client: httpx.AsyncClient, stub: StubServer,
    worker: Worker,
) -> None:
    _, headers = await make_user(database)
    stub.script(Reply("I'm sorry, I can't produce JSON today."))
    queued = await client.post(f"{API}/learn", headers=headers, json={"text": "I like tea."})
    job = await _wait(client, headers, queued.json()["task_id"])
    assert job["status"] == "dead_letter"  # no retries: the same prompt would fail again
    assert "the model's extraction answer is not JSON" in job["error"]
    assert "sorry" not in job["error"]
    assert await rows(database, "SELECT id FROM memories") == []
    assert len(stub.requests("/v1/chat/completions")) == 1


async def test_a_nul_answer_fails_the_learn_job_at_once_without_echoing_it(
        database: Database, gateway: LLMGateway, client: httpx.AsyncClient, stub: StubServer,
        worker: Worker) -> None:
    """A NUL in the model's answer dead-letters the job at once (no retry paying for the model
    again) and its error never shows the model's output (it held the SQL statement)."""
    _, headers = await make_user(database)
    stub.script(extracted(fact("The user's secret is hunter2\x00")))
    queued = await client.post(f"{API}/learn", headers=headers, json={"text": "I like tea."})
    assert queued.status_code == 202, queued.text
    job = await _wait(client, headers, queued.json()["task_id"])
    assert job["status"] == "dead_letter", job
    assert "facts.0.content: must not contain a NUL character" in job["error"]
    assert "hunter2" not in job["error"]
    assert len(stub.requests("/v1/chat/completions")) == 1


class _DataException(Exception):
    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate  # as asyncpg names it


# 22P05: an untranslatable character; 23514: a check constraint's violation.
@pytest.mark.parametrize("state", ["22P05", "23514"])
async def test_a_value_the_database_refuses_fails_the_learn_job_at_once(
        database: Database, gateway: LLMGateway, client: httpx.AsyncClient, worker: Worker,
        monkeypatch: pytest.MonkeyPatch, state: str) -> None:
    """A data error (SQLSTATE class 22) or a check violation (23514) while storing what was
    learnt dead-letters the job at once (a retry would pay the model again for the same
    refusal) with a generic error: neither the job's error nor its stack shows the
    statement or its parameters (the model's text)."""
    from roost.memory import jobs

    async def refused(*args: Any, **kwargs: Any) -> LearnReport:
        raise DBAPIError("INSERT INTO memories (content) VALUES ($1)",
                         ("The user's secret is hunter2",), _DataException("refused", state))

    monkeypatch.setattr(jobs, "learn", refused)
    _, headers = await make_user(database)
    queued = await client.post(f"{API}/learn", headers=headers, json={"text": "I like tea."})
    job = await _wait(client, headers, queued.json()["task_id"])
    assert job["status"] == "dead_letter", job
    assert f"the database refused a value to store (SQLSTATE {state})" in job["error"]
    [(stack, history)] = await rows(database, "SELECT error_stack, retry_history::text FROM "
                                              "dead_letter_queue WHERE original_task_id = :t",
                                    t=queued.json()["task_id"])
    for error in (job["error"], stack, history):
        assert "hunter2" not in error and "INSERT" not in error, error


async def test_learn_from_a_chat_session(
    database: Database, gateway: LLMGateway, client: httpx.AsyncClient, stub: StubServer,
    worker: Worker,
) -> None:
    user_id, headers = await make_user(database)
    chat = await new_session(client, headers)
    for role, content in (("user", "Hello!"), ("assistant", "Hi, how can I help?"),
                          ("user", "I just adopted a dog called Rex.")):
        posted = await client.post(f"/api/v1/chat/sessions/{chat['id']}/messages", headers=headers,
                                   json={"role": role, "content": content, "reply": False})
        assert posted.status_code == 201, posted.text
    stub.script(extracted(fact("The user has a dog called Rex", memory_type="fact",
                               entities=[{"name": "Rex", "type": "animal"}])))
    queued = await client.post(f"{API}/learn", headers=headers, json={"chat_session_id": chat["id"]})
    assert queued.status_code == 202, queued.text
    assert queued.json()["source_type"] == "chat_session"
    assert queued.json()["source_id"] == chat["id"]
    job = await _wait(client, headers, queued.json()["task_id"])
    assert job["status"] == "completed", job
    [memory_id] = job["result"]["added"]
    memory = (await client.get(f"{API}/{memory_id}", headers=headers)).json()
    assert memory["content"] == "The user has a dog called Rex"
    assert (memory["source_type"], memory["source_id"]) == ("chat_session", chat["id"])
    assert memory["session_id"] is None and memory["user_id"] == str(user_id)  # the user's scope
    [sent] = chat_requests(stub)
    assert sent["messages"][-1]["content"] == (
        "user: Hello!\nassistant: Hi, how can I help?\nuser: I just adopted a dog called Rex.")
    # Narrowed to the session when asked; the same transcript into another scope is another job.
    narrowed = await client.post(f"{API}/learn", headers=headers,
                                 json={"chat_session_id": chat["id"], "session_id": chat["id"]})
    assert narrowed.json()["task_id"] != queued.json()["task_id"]


async def test_learn_bad_input(database: Database, gateway: LLMGateway,
                               client: httpx.AsyncClient) -> None:
    _, headers = await make_user(database)
    _, other = await make_user(database)
    theirs = await new_session(client, other)
    empty = await new_session(client, headers)
    both = await client.post(f"{API}/learn", headers=headers,
                             json={"text": "x", "chat_session_id": theirs["id"]})
    assert both.status_code == 422
    assert (await client.post(f"{API}/learn", headers=headers, json={})).status_code == 422
    assert (await client.post(f"{API}/learn", headers=headers, json={"text": "  "})).status_code == 422
    too_long = await client.post(f"{API}/learn", headers=headers, json={"text": "x" * 32_001})
    assert too_long.status_code == 422
    foreign = await client.post(f"{API}/learn", headers=headers, json={"chat_session_id": theirs["id"]})
    assert foreign.status_code == 404
    unknown = await client.post(f"{API}/learn", headers=headers,
                                json={"text": "x", "persona_id": str(uuid.uuid4())})
    assert unknown.status_code == 404
    nothing = await client.post(f"{API}/learn", headers=headers, json={"chat_session_id": empty["id"]})
    assert nothing.status_code == 409
    model = await client.post(f"{API}/learn", headers=headers, json={"text": "x", "model": "nope"})
    assert model.status_code == 404
    assert (await client.get(f"{API}/learn/{uuid.uuid4()}", headers=headers)).status_code == 404
    assert await rows(database, "SELECT id FROM background_tasks WHERE task_type = 'memory.learn'") == []


# --- names compared as graph.normalize compares them (casefold, Python's white space) ------


@pytest.mark.parametrize(("stored", "learned"), [("Straße", "STRASSE"),
                                                 ("Ada\u00a0Lovelace", "Ada Lovelace")])
async def test_a_memory_naming_the_entity_differently_spelt_is_a_candidate(
        database: Database, gateway: LLMGateway, stub: StubServer, stored: str,
        learned: str) -> None:
    """A stored memory naming 'Straße' (or 'Ada<U+00A0>Lovelace') is a candidate for a fact
    naming 'STRASSE' ('Ada Lovelace'): one entity for graph.normalize, so the model is asked
    to reconcile them (PostgreSQL's lower keeps ß, its \\s misses U+00A0)."""
    user_id, _ = await make_user(database)
    old = await remember(database, user_id, "qwerty uiop", entities=[{"name": stored}])
    stub.script(extracted(fact("zxcvb nmlkj", entities=[{"name": learned}])),
                decided({"fact_index": 0, "action": "add"}))
    report = await run_learn(database, gateway, user_id, "text")
    assert len(report.request_ids) == 2
    shown = json.loads(chat_requests(stub)[1]["messages"][-1]["content"])
    assert shown["new_facts"][0]["candidate_ids"] == [str(old.id)]


async def test_the_previous_version_of_a_differently_spelt_subject_comes_first(
        database: Database, gateway: LLMGateway, stub: StubServer) -> None:
    """The memory stating the same relation of the subject stored as 'Straße' is the first
    candidate for a fact about 'STRASSE', before one merely naming it."""
    user_id, _ = await make_user(database)
    old = await remember(database, user_id, "qwerty uiop",
                         relationships=[{"source": "Straße", "relation": "has_pet", "target": "Miso"}])
    await remember(database, user_id, "asdfg hjkl", entities=[{"name": "strasse"}])
    stub.script(extracted(fact("zxcvb nmlkj", relationships=[
        {"source": "STRASSE", "relation": "has_pet", "target": "Indigo"}])),
        decided({"fact_index": 0, "action": "add"}))
    report = await run_learn(database, gateway, user_id, "text")
    assert len(report.request_ids) == 2
    shown = json.loads(chat_requests(stub)[1]["messages"][-1]["content"])
    assert shown["new_facts"][0]["candidate_ids"][0] == str(old.id)


async def test_learned_updates_keep_a_memory_within_50_entities(
        database: Database, gateway: LLMGateway, stub: StubServer) -> None:
    """Repeated learned updates naming new entities keep the memory within the 50 entities
    (and 50 relationships) a memory may name: the ones it has stay, new ones fill the room."""
    user_id, _ = await make_user(database)
    a = await remember(database, user_id, "The user likes tea",
                       entities=[{"name": "tea"}],
                       relationships=[{"source": "user", "relation": "likes", "target": "tea"}])
    for round_ in range(3):
        stub.script(extracted(fact(
            f"The user likes tea variant {round_}",
            entities=[{"name": f"tea-{round_}-{j}"} for j in range(50)],
            relationships=[{"source": "user", "relation": "likes", "target": f"tea-{round_}-{j}"}
                           for j in range(50)])),
            decided({"fact_index": 0, "action": "update", "target_id": str(a.id)}))
        report = await run_learn(database, gateway, user_id, f"x{round_}")
        assert report.updated == [a.id]
    [(entities, relationships)] = await rows(
        database, "SELECT entities, relationships FROM memories WHERE id = :i", i=a.id)
    assert len(entities) == 50 and len(relationships) == 50
    assert entities[0]["name"] == "tea" and entities[-1]["name"] == "tea-0-48"
    [(relations,)] = await rows(database, "SELECT count(*) FROM memory_relations "
                                          "WHERE memory_id = :i", i=a.id)
    assert relations == 50


async def test_a_relation_added_by_an_update_closes_no_earlier_than_it_started(
        database: Database, gateway: LLMGateway, stub: StubServer) -> None:
    """A memory true since 2020 gains a relation (true from now) by a learned update, then is
    invalidated by a fact true since 2021: the invalidation is applied and the relation
    closes when it started, not before (a check violation failed the learn job)."""
    user_id, _ = await make_user(database)
    old = await remember(database, user_id, "Ada works at Acme",
                         valid_from=datetime(2020, 1, 1, tzinfo=UTC))
    stub.script(extracted(fact("Ada works at Acme in Paris", relationships=[
        {"source": "Ada", "relation": "works_in", "target": "Paris"}])),
        decided({"fact_index": 0, "action": "update", "target_id": str(old.id)}))
    assert (await run_learn(database, gateway, user_id, "x")).updated == [old.id]
    stub.script(extracted(fact("Ada works at Initech", valid_from="2021-06-01T00:00:00Z")),
                decided({"fact_index": 0, "action": "invalidate", "target_id": str(old.id)}))
    assert (await run_learn(database, gateway, user_id, "y")).invalidated == [old.id]
    got = await rows(database, "SELECT valid_from, valid_to FROM memory_relations "
                               "WHERE memory_id = :i", i=old.id)
    assert len(got) == 1 and got[0].valid_to == got[0].valid_from, got

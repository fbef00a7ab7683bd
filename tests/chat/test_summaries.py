"""Session summaries: requesting one (the ``chat.summarize`` job, again after a failure,
by an administrator), what is kept of the model's text, and the rating's effect on the
``chat.system`` version's average."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from roost.chat.summaries import _parse_summary
from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from roost.security.crypto import MessageCipher
from roost.tasks.worker import Worker
from tests.chat.conftest import add_provider, new_session, post_message
from tests.support.openai_stub import Reply, StubServer
from tests.support.workers import in_process_worker

Headers = dict[str, str]
User = tuple[uuid.UUID, Headers]
API = "/api/v1/chat/sessions"
TERMINAL_TASK = ("completed", "failed", "dead_letter", "cancelled")


@pytest.fixture
def job_gateway(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's summary jobs use the app's gateway (and so the test's keys)."""
    from roost.llm import jobs as llm_jobs
    from roost.llm.deps import app_gateway

    monkeypatch.setattr(llm_jobs, "gateway_override", app_gateway(app))


async def _wait_task(database: Database, task_id: str) -> str:
    status = ""
    for _ in range(150):
        async with database.transaction() as s:
            status = str((await s.execute(text(
                "SELECT status FROM background_tasks WHERE id = :i"), {"i": task_id})).scalar_one())
        if status in TERMINAL_TASK:
            break
        await asyncio.sleep(0.1)
    return status


async def _insert_summary(database: Database, keys: KeyMaterial, sid: str, owner: uuid.UUID) -> None:
    cipher = MessageCipher(list(keys.message_keys))
    async with database.transaction() as s:
        await s.execute(text(
            "INSERT INTO chat_session_summaries (id, session_id, user_id, started_at, ended_at, "
            "message_count, summary) VALUES (:i, :s, :u, now(), now(), 2, :b)"),
            {"i": uuid.uuid4(), "s": sid, "u": owner, "b": cipher.encrypt("a summary")})


async def test_a_summary_can_be_requested_again_after_its_job_failed(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, user: User,
    database: Database, job_gateway: None,
) -> None:
    """Once the job of a summary gave up (dead_letter), asking again queues a new job
    (not the dead one handed back as 'queued') that writes the summary."""
    _, h = user
    await add_provider(client, admin_headers, stub)
    sid = (await new_session(client, h))["id"]
    assert (await post_message(client, h, sid, content="remember PostgreSQL", reply=False)).status_code == 201
    url = f"{API}/{sid}/summary"
    first = await client.post(url, headers=h)
    assert first.status_code == 202, first.text
    async with database.transaction() as s:  # as a job does once its retries are spent
        await s.execute(text("UPDATE background_tasks SET status = 'dead_letter' WHERE id = :i"),
                        {"i": first.json()["task_id"]})
    stub.script(Reply("Summary.\nTopics: PostgreSQL"))
    again = await client.post(url, headers=h)
    assert again.status_code == 202, again.text
    assert again.json()["task_id"] != first.json()["task_id"], "the dead job was handed back as 'queued'"
    assert again.json()["status"] == "queued"
    async with in_process_worker(database):
        assert await _wait_task(database, again.json()["task_id"]) == "completed"
    assert (await client.get(url, headers=h)).status_code == 200


async def test_a_summary_by_a_model_no_provider_serves_is_refused_when_asked(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, user: User,
    database: Database,
) -> None:
    """?model= naming a model no provider serves is a 404 at once (as a message post naming
    it is), and without providers a 409: never a job accepted (202) that dead-letters out of
    the user's sight, again at every ask."""
    _, h = user
    sid = (await new_session(client, h))["id"]
    assert (await post_message(client, h, sid, content="x", reply=False)).status_code == 201
    url = f"{API}/{sid}/summary"
    assert (await client.post(url, headers=h)).status_code == 409  # no provider yet
    await add_provider(client, admin_headers, stub)
    assert (await post_message(client, h, sid, content="x", model="no-such-model")
            ).status_code == 404
    refused = await client.post(url, params={"model": "no-such-model"}, headers=h)
    assert refused.status_code == 404, refused.text
    async with database.transaction() as s:
        queued = (await s.execute(text(
            "SELECT count(*) FROM background_tasks WHERE task_type = 'chat.summarize'"))).scalar_one()
    assert queued == 0


async def test_a_session_with_huge_provider_token_counts_can_still_be_summarised(
    client: httpx.AsyncClient, user: User, sid: str, stub: StubServer, worker: Worker,
    database: Database, job_gateway: None,
) -> None:
    """Token counts a provider inflated (each fitted to 10**9, as documented) do not make
    the session's summary impossible: their total (over the int32 column) is fitted too."""
    _, h = user
    stub.script(Reply("a", usage=(10**9, 10**9)), Reply("b", usage=(10**9, 10**9)),
                Reply("A summary.\nTopics: x"))
    for content in ("one", "two"):
        resp = await post_message(client, h, sid, content=content)
        assert resp.status_code == 201, resp.text
    queued = await client.post(f"{API}/{sid}/summary", headers=h)
    assert queued.status_code == 202, queued.text
    status = await _wait_task(database, queued.json()["task_id"])
    got = await client.get(f"{API}/{sid}/summary", headers=h)
    assert got.status_code == 200, (status, got.text)
    assert got.json()["total_tokens_used"] == 2**31 - 1


async def test_an_agents_session_is_summarised_by_the_default_model(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, user: User,
    database: Database, worker: Worker, job_gateway: None,
) -> None:
    """No provider serves ``agent:<slug>``: the summary's job asks the default model
    (it tried to route the agent's name and failed for good)."""
    _, h = user
    await add_provider(client, admin_headers, stub)
    sid = (await new_session(client, h, model="agent:clock"))["id"]
    assert (await post_message(client, h, sid, content="remember PostgreSQL",
                               reply=False)).status_code == 201
    stub.script(Reply("Summary.\nTopics: PostgreSQL"))
    asked = await client.post(f"{API}/{sid}/summary", headers=h)
    assert asked.status_code == 202, asked.text
    assert await _wait_task(database, asked.json()["task_id"]) == "completed"
    summary = (await client.get(f"{API}/{sid}/summary", headers=h)).json()
    assert summary["key_topics"] == ["PostgreSQL"]


async def test_an_administrators_summary_request_does_not_lock_the_owner_out(
    client: httpx.AsyncClient, admin_headers: Headers, user: User, sid: str,
) -> None:
    """After an administrator asked for a user's summary, the user may ask too (202)."""
    _, h = user
    assert (await post_message(client, h, sid, content="x", reply=False)).status_code == 201
    assert (await client.post(f"{API}/{sid}/summary", headers=admin_headers)).status_code == 202
    mine = await client.post(f"{API}/{sid}/summary", headers=h)
    assert mine.status_code == 202, mine.text  # was 409 "idempotency_key ... used by another job"
    assert mine.json()["status"] == "queued"
    again = await client.post(f"{API}/{sid}/summary", headers=h)  # the same job, as before
    assert again.json()["task_id"] == mine.json()["task_id"]


async def test_a_nul_in_the_models_topics_line_does_not_lose_the_summary(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, user: User,
    database: Database, worker: Worker, job_gateway: None,
) -> None:
    """A provider's stray NUL in the Topics line is dropped; the summary is written."""
    _, h = user
    await add_provider(client, admin_headers, stub)
    sid = (await new_session(client, h))["id"]
    assert (await post_message(client, h, sid, content="remember PostgreSQL", reply=False)).status_code == 201
    stub.script(Reply("A summary.\nTopics: Post\x00greSQL, pgvector", times=None))
    queued = await client.post(f"{API}/{sid}/summary", headers=h)
    assert queued.status_code == 202
    status = await _wait_task(database, queued.json()["task_id"])
    got = await client.get(f"{API}/{sid}/summary", headers=h)
    assert got.status_code == 200, (status, got.text)


async def test_a_cleared_session_rating_no_longer_counts_for_the_prompt(
    client: httpx.AsyncClient, user: User, sid: str, database: Database, test_keys: KeyMaterial,
) -> None:
    """Rating 5, clearing it, then rating 1 leaves the chat.system version's average at 1."""
    uid, h = user
    pub = await client.post("/api/v1/prompts", headers=h, json={
        "prompt_key": "chat.system", "prompt_text": "Be brief.", "scope": "user"})
    assert pub.status_code == 201, pub.text
    assert (await post_message(client, h, sid, content="hello")).status_code == 201
    await _insert_summary(database, test_keys, sid, uid)
    for rating in (5, None, 1):
        resp = await client.patch(f"{API}/{sid}/summary", json={"session_rating": rating},
                                  headers=h)
        assert resp.status_code == 200, resp.text
    version = (await client.get(f"/api/v1/prompts/{pub.json()['id']}", headers=h)).json()
    assert version["average_satisfaction"] == 1.0  # was 3.0: the cleared 5 still counted


def test_the_models_topics_are_fitted_to_their_column() -> None:
    """No NUL or lone surrogate (jsonb holds neither), each topic at most 200 characters."""
    _, topics = _parse_summary("Text.\nTopics: a\x00b, \ud800c, " + "x" * 500)
    assert topics == ["ab", "c", "x" * 200]

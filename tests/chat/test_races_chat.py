"""Overlapping operations on one chat session: posts at once (each recorded and answered,
numbered without gaps), the session deleted or archived while an answer is being written
(deleted: a 409, or a stream that ends with an error frame, and nothing kept; archived:
the answer is kept), posts racing a delete or an archive.  None answers a 5xx or leaves
a model request open."""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import httpx
import pytest

from roost.config import Settings
from roost.db.engine import Database
from tests.chat.conftest import add_provider, new_session, sse_events
from tests.support.identity import make_user
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Reply
from tests.support.races import answer_behind, no_5xx, race_settings
from tests.support.sql import fetch

Headers = dict[str, str]


@pytest.fixture
def test_settings(test_settings: Settings) -> Settings:
    return race_settings(test_settings, llm_timeout_s=5.0)  # answers here take seconds


async def post(client: httpx.AsyncClient, headers: Headers, sid: str, content: str,
               **fields: Any) -> httpx.Response:
    return await client.post(f"/api/v1/chat/sessions/{sid}/messages", headers=headers,
                             json={"content": content, **fields}, timeout=30)


async def session_state(database: Database, sid: str) -> dict[str, Any]:
    """The session's message_count, its message rows and their seqs, and the model
    requests still open (of any session)."""
    [row] = await fetch(
        database,
        "SELECT (SELECT message_count FROM chat_sessions WHERE id = CAST(:s AS uuid)) AS count,"
        " (SELECT count(*) FROM chat_messages WHERE session_id = CAST(:s AS uuid)) AS rows,"
        " (SELECT array_agg(seq ORDER BY seq) FROM chat_messages "
        "   WHERE session_id = CAST(:s AS uuid)) AS seqs,"
        " (SELECT count(*) FROM llm_requests WHERE status IN ('pending', 'running')) AS open",
        s=sid)
    return dict(row._mapping)


async def answering(client: httpx.AsyncClient, admin_headers: Headers, headers: Headers,
                    database: Database, stub: StubServer,
                    stream: bool) -> tuple[str, asyncio.Future[httpx.Response]]:
    """A new session and a post into it whose answer takes the stub 1.6 s, once its
    model request is open."""
    await add_provider(client, admin_headers, stub)
    stub.script(Reply("one two three four five six seven eight", chunk_delay_ms=200,
                      delay_ms=0 if stream else 1600))
    sid = (await new_session(client, headers))["id"]
    posting = asyncio.ensure_future(post(client, headers, sid, "hello", stream=stream))
    deadline = asyncio.get_running_loop().time() + 10
    while (await session_state(database, sid))["open"] == 0:
        assert asyncio.get_running_loop().time() < deadline, "the model request never opened"
        await asyncio.sleep(0.05)
    return sid, posting


async def test_two_answered_posts_at_once_are_both_recorded_in_order(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers],
) -> None:
    _, headers = user
    await add_provider(client, admin_headers, stub)
    stub.script(Reply("first answer", delay_ms=300), Reply("second answer", delay_ms=300))
    sid = (await new_session(client, headers))["id"]
    a, b = await asyncio.gather(post(client, headers, sid, "one"), post(client, headers, sid, "two"))
    no_5xx(a, b)
    assert (a.status_code, b.status_code) == (201, 201), (a.text, b.text)
    state = await session_state(database, sid)
    assert state["rows"] == 4 and state["count"] == 4 and state["open"] == 0, state
    assert state["seqs"] == [1, 2, 3, 4], state


async def test_many_posts_at_once_are_all_recorded_and_answered(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers],
) -> None:
    _, headers = user
    await add_provider(client, admin_headers, stub)
    stub.script(Reply("answer", delay_ms=100, times=None))
    sid = (await new_session(client, headers))["id"]
    answers = await asyncio.gather(*(
        post(client, headers, sid, f"m{i}", reply=(i % 2 == 0),
             stream=(i % 4 == 0)) for i in range(8)))
    no_5xx(*answers)
    assert all(r.status_code == 201 for r in answers), [r.text for r in answers]
    state = await session_state(database, sid)
    # 8 user messages, 4 answers
    assert state["rows"] == 12 and state["count"] == 12 and state["open"] == 0, state
    assert state["seqs"] == list(range(1, 13)), state


@pytest.mark.parametrize("stream", [True, False])
async def test_the_session_deleted_while_its_answer_is_written_the_answer_is_a_409(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], stream: bool,
) -> None:
    _, headers = user
    sid, posting = await answering(client, admin_headers, headers, database, stub, stream)
    deleted = await client.delete(f"/api/v1/chat/sessions/{sid}", headers=headers)
    no_5xx(deleted)
    assert deleted.status_code == 204
    answer = await asyncio.wait_for(posting, 30)
    no_5xx(answer)
    if stream:
        name, data = sse_events(answer.text)[-1]
        assert (name, data["status"]) == ("error", 409), answer.text
    else:
        assert answer.status_code == 409, answer.text
    state = await session_state(database, sid)
    assert state["rows"] == 0 and state["open"] == 0, state


@pytest.mark.parametrize("stream", [True, False])
async def test_the_session_archived_while_its_answer_is_written_the_answer_is_kept(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], stream: bool,
) -> None:
    _, headers = user
    sid, posting = await answering(client, admin_headers, headers, database, stub, stream)
    archived = await client.patch(f"/api/v1/chat/sessions/{sid}", headers=headers,
                                  json={"status": "archived"})
    no_5xx(archived)
    assert archived.status_code == 200
    answer = await asyncio.wait_for(posting, 30)
    no_5xx(answer)
    assert answer.status_code == 201
    if stream:
        assert sse_events(answer.text)[-1][0] == "done", answer.text
    state = await session_state(database, sid)
    assert state["rows"] == 2 and state["count"] == 2 and state["open"] == 0, state


@pytest.mark.parametrize("change", ["delete", "archive"])
async def test_posts_racing_a_delete_or_an_archive_are_each_kept_or_refused(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], change: str,
) -> None:
    """Two posts around a change of their session: the change goes through; each post is
    kept (201) or refused (409; 404 once deleted); the session's count agrees with its
    rows and no model request stays open."""
    _, headers = user
    await add_provider(client, admin_headers, stub)
    stub.script(Reply("answer", times=None))
    refused = (404, 409) if change == "delete" else (409,)
    for i in range(6):
        sid = (await new_session(client, headers))["id"]
        url = f"/api/v1/chat/sessions/{sid}"
        changing = (client.delete(url, headers=headers) if change == "delete" else
                    client.patch(url, headers=headers, json={"status": "archived"}))
        first, changed, second = await asyncio.gather(
            post(client, headers, sid, "a", reply=i % 2 == 0), changing,
            post(client, headers, sid, "b", reply=True, stream=i % 3 == 0))
        no_5xx(first, changed, second)
        assert changed.status_code == (204 if change == "delete" else 200), changed.text
        for r in (first, second):
            assert r.status_code in (201, *refused), r.text
        state = await session_state(database, sid)
        assert state["rows"] == (state["count"] or 0) and state["open"] == 0, state


async def test_a_session_deleted_at_any_moment_of_its_answer_never_collides(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers],
) -> None:
    """The deletion lands before, during or after the answer's final transaction: it is
    always a 204 (the answer waits for it, or it for the answer), never a deadlock that
    PostgreSQL breaks by aborting one of the two (a 503 "collided" before the answer's
    transaction locked the session's row first)."""
    _, headers = user
    await add_provider(client, admin_headers, stub)
    stub.script(Reply("answer", delay_ms=150, times=None))
    rng = random.Random(7)
    outcomes: set[int] = set()
    for i in range(40):
        sid = (await new_session(client, headers))["id"]
        posting = asyncio.ensure_future(post(client, headers, sid, "hello", stream=i % 2 == 0))
        await asyncio.sleep(rng.uniform(0.12, 0.25))  # around the answer's storing
        deleted = await client.delete(f"/api/v1/chat/sessions/{sid}", headers=headers)
        answer = await asyncio.wait_for(posting, 30)
        no_5xx(deleted, answer)
        assert deleted.status_code == 204, deleted.text
        if i % 2 == 0 and answer.status_code == 201:  # a stream: its last frame says
            name, data = sse_events(answer.text)[-1]
            outcomes.add(409 if (name, data.get("status")) == ("error", 409) else 201)
        else:
            assert answer.status_code in (201, 409), answer.text
            outcomes.add(answer.status_code)
    # Both orders happened: deleted before the answer was stored, and after.
    assert outcomes == {201, 409}, outcomes
    assert (await session_state(database, sid))["open"] == 0


@pytest.mark.parametrize("change", ["create", "move"])
async def test_a_session_put_in_a_project_deleted_meanwhile_is_a_404_naming_it(
    client: httpx.AsyncClient, database: Database, change: str,
) -> None:
    """A session created in, or moved into, a project whose deletion commits after the
    project was checked and before the session's write: a 404 naming ``project_id``, as
    for a project that does not exist (it was a 409 "the session conflicts with data
    already stored").  Deterministic: the deletion is held open until the request waits
    on it."""
    _, headers = await make_user(database)
    project = await client.post("/api/v1/projects", json={"name": "doomed"}, headers=headers)
    assert project.status_code == 201, project.text
    pid = project.json()["id"]
    sid = (await new_session(client, headers))["id"]
    request = (client.post("/api/v1/chat/sessions", headers=headers,
                           json={"title": "t", "project_id": pid}) if change == "create"
               else client.patch(f"/api/v1/chat/sessions/{sid}", headers=headers,
                                 json={"project_id": pid}))
    resp = await answer_behind(database, "DELETE FROM projects WHERE id = :p", {"p": pid},
                               "chat_sessions", request)
    assert resp.status_code == 404, resp.text
    assert resp.json().get("field") == "project_id", resp.text

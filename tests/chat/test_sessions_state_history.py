"""Chat sessions CRUD, session state, the chat_history event log, and summaries (queue)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from roost.llm import jobs as llm_jobs
from roost.tasks.worker import Worker
from tests.chat.conftest import add_provider, new_session
from tests.chat.test_summaries import _insert_summary
from tests.support.identity import make_user
from tests.support.openai_stub import Reply, StubServer

Headers = dict[str, str]
User = tuple[uuid.UUID, Headers]


async def test_session_crud_is_owner_only(
    client: httpx.AsyncClient, user: User, other_user: User, admin_headers: Headers,
    database: Database,
) -> None:
    user_id, headers = user
    _, other = other_user
    created = await new_session(client, headers, title="plans", model="m1", enable_tools=False,
                                external_id="client-42")
    assert created["user_id"] == str(user_id) and created["enable_tools"] is False
    assert created["status"] == "active" and created["message_count"] == 0
    sid = created["id"]
    dup = await client.post("/api/v1/chat/sessions", json={"external_id": "client-42"},
                            headers=headers)
    assert dup.status_code == 409 and "client-42" in dup.json()["detail"]
    # The same external id is fine for someone else.
    assert (await client.post("/api/v1/chat/sessions", json={"external_id": "client-42"},
                              headers=other)).status_code == 201

    patched = await client.patch(f"/api/v1/chat/sessions/{sid}",
                                 json={"title": "holiday plans", "status": "archived"},
                                 headers=headers)
    assert patched.status_code == 200 and patched.json()["title"] == "holiday plans"
    posted = await client.post(f"/api/v1/chat/sessions/{sid}/messages",
                               json={"content": "hi", "reply": False}, headers=headers)
    assert posted.status_code == 409 and "archived" in posted.json()["detail"]
    refused = (await client.get(f"/api/v1/chat/sessions/{sid}", headers=headers)).json()
    assert refused["message_count"] == 0  # the refused post allocated no position

    listing = (await client.get("/api/v1/chat/sessions", headers=headers)).json()
    assert [s["id"] for s in listing["items"]] == [sid]
    by_ext = (await client.get("/api/v1/chat/sessions", params={"external_id": "client-42"},
                               headers=other)).json()
    assert len(by_ext["items"]) == 1 and by_ext["items"][0]["id"] != sid
    assert (await client.patch(f"/api/v1/chat/sessions/{sid}", json={"title": "x"},
                               headers=other)).status_code == 404
    # Administrators see it, and may create sessions for a user.
    assert (await client.get(f"/api/v1/chat/sessions/{sid}", headers=admin_headers)).status_code == 200
    for_user = await client.post("/api/v1/chat/sessions", json={"owner_id": str(user_id)},
                                 headers=admin_headers)
    assert for_user.status_code == 201 and for_user.json()["user_id"] == str(user_id)
    assert (await client.post("/api/v1/chat/sessions", json={"owner_id": str(user_id)},
                              headers=other)).status_code == 404
    no_owner = await client.post("/api/v1/chat/sessions", json={}, headers=admin_headers)
    assert no_owner.status_code == 422 and no_owner.json()["field"] == "owner_id"

    assert (await client.delete(f"/api/v1/chat/sessions/{sid}", headers=headers)).status_code == 204
    assert (await client.get(f"/api/v1/chat/sessions/{sid}", headers=headers)).status_code == 404
    async with database.transaction() as s:
        actions = (await s.execute(text(
            "SELECT action FROM audit_logs WHERE resource_id = :r ORDER BY seq"), {"r": sid})).scalars()
        assert list(actions) == ["chat.session.create", "chat.session.update", "chat.session.delete"]


async def test_session_list_pages_newest_first(client: httpx.AsyncClient, user: User) -> None:
    _, headers = user
    ids = [(await new_session(client, headers, title=f"s{i}"))["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/api/v1/chat/sessions", params=params, headers=headers)).json()
        seen += [s["id"] for s in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ids[::-1]
    bad = await client.get("/api/v1/chat/sessions", params={"cursor": "!!"}, headers=headers)
    assert bad.status_code == 400


async def test_row_level_security_hides_other_users_rows(database: Database) -> None:
    """The second wall: a forgotten WHERE in a user's transaction still sees only theirs."""
    from roost.identity.tenancy import apply_principal
    from roost.principal import Principal

    alice, _ = await make_user(database)
    bob, _ = await make_user(database)
    async with database.transaction() as s:
        for owner in (alice, bob):
            await s.execute(text(
                "INSERT INTO chat_sessions (id, user_id, title) VALUES (:i, :u, 'x')"),
                {"i": uuid.uuid4(), "u": owner})
    async with database.transaction() as s:
        await apply_principal(s, Principal(user_id=alice, is_admin=False, kind="api_key"))
        owners = (await s.execute(text("SELECT user_id FROM chat_sessions"))).scalars().all()
        assert owners == [alice]
        with pytest.raises(Exception, match="row-level security"):
            async with s.begin_nested():
                await s.execute(text(
                    "INSERT INTO chat_sessions (id, user_id, title) VALUES (:i, :u, 'x')"),
                    {"i": uuid.uuid4(), "u": bob})


async def test_session_state_get_put_with_versions(
    client: httpx.AsyncClient, user: User, other_user: User,
) -> None:
    _, headers = user
    sid = (await new_session(client, headers))["id"]
    url = f"/api/v1/chat/sessions/{sid}/state"
    empty = (await client.get(url, headers=headers)).json()
    assert empty["state"] == {} and empty["version"] == 0
    state = {"mode": "expert-group", "expert_selections": ["technical_expert"], "todo_list": []}
    put = await client.put(url, json={"state": state, "expected_version": 0}, headers=headers)
    assert put.status_code == 200 and put.json()["version"] == 1
    assert (await client.get(url, headers=headers)).json()["state"] == state
    stale = await client.put(url, json={"state": {}, "expected_version": 0}, headers=headers)
    assert stale.status_code == 409 and stale.json()["version"] == 1
    again = await client.put(url, json={"state": {"mode": "simple"}}, headers=headers)
    assert again.json()["version"] == 2 and again.json()["state"] == {"mode": "simple"}
    not_object = await client.put(url, json={"state": [1, 2]}, headers=headers)
    assert not_object.status_code == 422
    _, other = other_user
    assert (await client.get(url, headers=other)).status_code == 404
    assert (await client.put(url, json={"state": {}}, headers=other)).status_code == 404


async def test_history_event_log_is_encrypted_and_replays_in_order(
    client: httpx.AsyncClient, user: User, database: Database,
) -> None:
    _, headers = user
    sid = (await new_session(client, headers))["id"]
    url = f"/api/v1/chat/sessions/{sid}/history"
    events = [
        ("meeting_start", {"role": "system", "content": "meeting opened"}),
        ("expert_response", {"role": "assistant", "content": "use PostgreSQL",
                             "metadata": {"expert_name": "Technical Expert", "confidence": 0.85}}),
        ("stream_complete", {"role": "system", "content": "done"}),
    ]
    for event_type, message in events:
        resp = await client.post(url, json={"event_type": event_type, "message": message},
                                 headers=headers)
        assert resp.status_code == 201, resp.text
    page = (await client.get(url, params={"limit": 2}, headers=headers)).json()
    rest = (await client.get(url, params={"cursor": page["next_cursor"]}, headers=headers)).json()
    got = [(e["event_type"], e["message"]) for e in page["items"] + rest["items"]]
    assert got == events
    only = (await client.get(url, params={"event_type": "expert_response"}, headers=headers)).json()
    assert len(only["items"]) == 1
    async with database.transaction() as s:
        blobs = (await s.execute(text("SELECT message FROM chat_history"))).scalars().all()
    assert all(b"PostgreSQL" not in bytes(b) for b in blobs)
    bad = await client.post(url, json={"event_type": "Bad Type!", "message": {}}, headers=headers)
    assert bad.status_code == 422


async def test_summary_is_written_by_the_model_through_the_task_queue(
    client: httpx.AsyncClient, app: FastAPI, admin_headers: Headers, stub: StubServer, user: User,
    database: Database, worker: Worker, monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, headers = user
    await add_provider(client, admin_headers, stub)
    sid = (await new_session(client, headers))["id"]
    url = f"/api/v1/chat/sessions/{sid}/summary"
    assert (await client.post(url, headers=headers)).status_code == 409  # nothing to summarise
    for content in ("we should migrate to PostgreSQL", "and add pgvector"):
        assert (await client.post(f"/api/v1/chat/sessions/{sid}/messages",
                                  json={"content": content}, headers=headers)).status_code == 201
    assert (await client.get(url, headers=headers)).status_code == 404
    stub.script(Reply("The user plans a database migration.\nTopics: PostgreSQL, pgvector"))
    monkeypatch.setattr(llm_jobs, "gateway_override", app.state.llm_gateway)
    queued = await client.post(url, headers=headers)
    assert queued.status_code == 202 and queued.json()["task_id"]
    summary = None
    for _ in range(100):
        resp = await client.get(url, headers=headers)
        if resp.status_code == 200:
            summary = resp.json()
            break
        await asyncio.sleep(0.1)
    assert summary is not None, "the worker did not write the summary"
    assert summary["summary"] == "The user plans a database migration."
    assert summary["key_topics"] == ["PostgreSQL", "pgvector"]
    assert summary["message_count"] == 4 and summary["total_tokens_used"] > 0
    assert summary["llm_request_id"]
    rated = await client.patch(url, json={"session_rating": 4.5, "resolution_status": "partial"},
                               headers=headers)
    assert rated.status_code == 200 and rated.json()["session_rating"] == 4.5
    async with database.transaction() as s:
        blob = (await s.execute(text("SELECT summary FROM chat_session_summaries"))).scalar_one()
        req = (await s.execute(text("SELECT status, request_type, user_id FROM llm_requests "
                                    "WHERE id = :i"), {"i": summary["llm_request_id"]})).one()
    assert b"migration" not in bytes(blob)
    assert req.status == "completed" and req.request_type == "summary"


async def test_lone_surrogates_are_400_where_the_body_is_decoded(
    client: httpx.AsyncClient, user: User,
) -> None:
    # Python's json accepts "\ud800" (and the raw UTF-8 bytes of a surrogate); the string
    # then fails to encrypt: that was a 500.  Now the body is rejected when decoded.
    _, headers = user
    sid = (await new_session(client, headers))["id"]
    as_json = {**headers, "content-type": "application/json"}
    messages, history = f"/api/v1/chat/sessions/{sid}/messages", f"/api/v1/chat/sessions/{sid}/history"
    raw_surrogate = '{"content": "raw \ud800", "reply": false}'.encode("utf-8", "surrogatepass")
    for url, body, field in (
        (messages, b'{"content": "hi \\ud800", "reply": false}', "content"),
        (messages, raw_surrogate, "content"),
        (history, b'{"event_type": "note", "message": {"parts": ["ok", "\\udfff"]}}',
         "message.parts[1]"),
        (history, b'{"message": {"\\udc00key": 1}}', "the key message."),
    ):
        resp = await client.post(url, content=body, headers=as_json)
        assert resp.status_code == 400, resp.text
        problem = resp.json()
        assert "lone UTF-16 surrogate" in problem["detail"] and field in problem["detail"]
        assert problem["request_id"] == resp.headers["x-request-id"]
    # A surrogate pair is one character (U+1F600), not an error.
    ok = await client.post(messages, content=b'{"content": "smile \\ud83d\\ude00", "reply": false}',
                           headers=as_json)
    assert ok.status_code == 201, ok.text
    assert ok.json()["user_message"]["content"] == "smile \U0001f600"


async def test_a_history_event_for_a_session_deleted_meanwhile_is_a_404(
    client: httpx.AsyncClient, user: User, database: Database, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A history event posted while its session is deleted is a 404 like any post to a
    session that is gone, not a 409 'conflicts with data already stored'."""
    from roost.chat import history

    _, h = user
    sid = (await new_session(client, h))["id"]
    checked = history.get_session

    async def then_deleted(*args: Any, **kwargs: Any) -> Any:
        row = await checked(*args, **kwargs)
        async with database.transaction() as s:  # a concurrent DELETE commits now
            await s.execute(text("DELETE FROM chat_sessions WHERE id = :s"), {"s": sid})
        return row

    monkeypatch.setattr(history, "get_session", then_deleted)
    resp = await client.post(f"/api/v1/chat/sessions/{sid}/history", json={"message": {"a": 1}}, headers=h)
    assert resp.status_code == 404, resp.text


async def test_the_state_limit_is_measured_in_bytes_as_its_error_says(
    client: httpx.AsyncClient, user: User,
) -> None:
    """A 180,000-byte state is under the 262,144-byte limit the 413 names."""
    _, h = user
    sid = (await new_session(client, h))["id"]
    body = json.dumps({"state": {"notes": "日本語" * 20000}}, ensure_ascii=False).encode()
    assert len(body) < 200_000
    resp = await client.put(f"/api/v1/chat/sessions/{sid}/state", content=body,
                            headers={**h, "content-type": "application/json"})
    assert resp.status_code == 200, resp.text  # was 413 "larger than 262144 bytes"


async def test_a_nul_in_the_session_state_is_a_422_naming_state(
    client: httpx.AsyncClient, user: User,
) -> None:
    """A NUL in the state (a value or a key: jsonb holds neither) is a 422 naming the
    field, as every other body's NUL is (it was the database's anonymous 400)."""
    _, headers = user
    sid = (await new_session(client, headers))["id"]
    for state in ({"a": "x\u0000y"}, {"k\u0000": 1}):
        resp = await client.put(f"/api/v1/chat/sessions/{sid}/state", json={"state": state}, headers=headers)
        assert resp.status_code == 422, resp.text
        assert [e["loc"] for e in resp.json()["errors"]] == [["body", "state"]], resp.text


async def test_a_summary_patch_that_changes_nothing_is_not_audited(
    client: httpx.AsyncClient, user: User, database: Database, test_keys: KeyMaterial,
) -> None:
    """Rating a summary 4 twice is one change: the second PATCH changes nothing and, as a
    session's PATCH that changes nothing, writes no chat.summary.update record (it wrote
    one with empty changes each time)."""
    uid, headers = user
    sid = (await new_session(client, headers))["id"]
    await _insert_summary(database, test_keys, sid, uid)
    for _ in range(2):
        resp = await client.patch(f"/api/v1/chat/sessions/{sid}/summary", json={"session_rating": 4},
                                  headers=headers)
        assert resp.status_code == 200, resp.text
    async with database.transaction() as s:
        audited = (await s.execute(text(
            "SELECT count(*) FROM audit_logs WHERE resource_id = :r "
            "AND action = 'chat.summary.update'"), {"r": sid})).scalar_one()
    assert audited == 1

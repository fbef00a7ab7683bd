"""Posting messages and getting answers: encryption, history, failures, streaming."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from cryptography.fernet import Fernet
from sqlalchemy import text

from roost.db.engine import Database
from roost.db.migrate import downgrade, upgrade
from roost.keyfiles import KeyMaterial
from tests.chat.conftest import add_provider, new_session, post_message, sse_events
from tests.support.openai_stub import Drop, Fail, Hang, Junk, StubServer

Headers = dict[str, str]
User = tuple[uuid.UUID, Headers]


async def _request_rows(database: Database, session_id: str) -> list[Any]:
    async with database.transaction() as s:
        return list((await s.execute(text(
            "SELECT id, status, started_at, completed_at, error_message, request_type "
            "FROM llm_requests WHERE session_id = :s ORDER BY created_at"), {"s": session_id})).all())


async def test_a_message_is_answered_and_both_are_stored_encrypted(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, user: User,
    database: Database, test_keys: KeyMaterial,
) -> None:
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    session = await new_session(client, headers)
    secret = "my bank PIN is 4421, please remember it"
    resp = await post_message(client, headers, session["id"], content=secret)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["user_message"]["content"] == secret
    assert body["user_message"]["seq"] == 1
    answer = body["assistant_message"]
    assert answer["content"] == f"echo: {secret} (model stub-model)"
    assert answer["seq"] == 2 and answer["role"] == "assistant"
    assert answer["tokens_in"] == len(secret.split())
    assert answer["tokens_out"] == len(answer["content"].split())
    assert body["provider"] == "stub" and body["usage"]["tokens_input"] == answer["tokens_in"]

    async with database.transaction() as s:
        rows = (await s.execute(text(
            "SELECT role, content, user_id FROM chat_messages WHERE session_id = :s ORDER BY seq"),
            {"s": session["id"]})).all()
        request_blobs = (await s.execute(text(
            "SELECT prompt, messages FROM llm_requests WHERE session_id = :s"), {"s": session["id"]})).one()
        response_blob = (await s.execute(text(
            "SELECT content, raw_response::text FROM llm_responses r JOIN llm_requests q "
            "ON q.id = r.request_id WHERE q.session_id = :s"), {"s": session["id"]})).one()
    assert [r.role for r in rows] == ["user", "assistant"]
    assert all(r.user_id == user_id for r in rows)
    fernet = Fernet(test_keys.message_keys[0].encode())
    for blob in (rows[0].content, rows[1].content, *request_blobs, response_blob[0]):
        assert b"4421" not in bytes(blob)
    assert "4421" not in response_blob[1]  # raw_response keeps no conversation text
    assert fernet.decrypt(bytes(rows[0].content)).decode() == secret
    assert fernet.decrypt(bytes(rows[1].content)).decode() == answer["content"]

    [req] = await _request_rows(database, session["id"])
    assert req.status == "completed" and req.started_at and req.completed_at
    async with database.transaction() as s:
        usage = (await s.execute(text(
            "SELECT tokens_input, tokens_output, credits_used, model, latency_ms, success "
            "FROM usage_records WHERE llm_request_id = :r"), {"r": req.id})).one()
        actions = (await s.execute(text(
            "SELECT action FROM audit_logs WHERE action LIKE 'chat.%' ORDER BY seq"))).scalars().all()
    assert usage.tokens_input == answer["tokens_in"] and usage.credits_used == 1 and usage.success
    assert list(actions)[-3:] == ["chat.session.create", "chat.message.create", "chat.message.reply"]


async def test_history_is_newest_first_and_stable_under_concurrent_posts(
    client: httpx.AsyncClient, user: User,
) -> None:
    _, headers = user
    session = await new_session(client, headers)
    sid = session["id"]
    for i in range(7):
        resp = await post_message(client, headers, sid, content=f"m{i}", reply=False)
        assert resp.status_code == 201
    page1 = (await client.get(f"/api/v1/chat/sessions/{sid}/messages?limit=3", headers=headers)).json()
    assert [m["content"] for m in page1["items"]] == ["m6", "m5", "m4"]
    # New messages arrive (concurrently) between page reads.
    posts = await asyncio.gather(*[post_message(client, headers, sid, content=f"new{i}", reply=False)
                                   for i in range(5)])
    assert all(p.status_code == 201 for p in posts)
    seqs = sorted(p.json()["user_message"]["seq"] for p in posts)
    assert seqs == [8, 9, 10, 11, 12]  # gap-free, unique
    seen = [m["content"] for m in page1["items"]]
    cursor = page1["next_cursor"]
    while cursor:
        page = (await client.get(f"/api/v1/chat/sessions/{sid}/messages",
                                 params={"limit": 3, "cursor": cursor}, headers=headers)).json()
        seen += [m["content"] for m in page["items"]]
        cursor = page["next_cursor"]
    assert seen == [f"m{i}" for i in range(6, -1, -1)]


async def test_tool_call_fields_and_roles_without_reply(client: httpx.AsyncClient, user: User) -> None:
    _, headers = user
    sid = (await new_session(client, headers))["id"]
    call = {"id": "call_1", "name": "web.search", "arguments": '{"q": "roost"}'}
    resp = await post_message(client, headers, sid, role="assistant", content="", reply=False,
                       tool_calls=[call])
    assert resp.status_code == 201, resp.text
    assert resp.json()["user_message"]["tool_calls"][0]["name"] == "web.search"
    resp = await post_message(client, headers, sid, role="tool", content='{"hits": 3}', reply=False,
                       tool_call_id="call_1", tool_call_name="web.search")
    assert resp.status_code == 201, resp.text
    items = (await client.get(f"/api/v1/chat/sessions/{sid}/messages", headers=headers)).json()["items"]
    assert items[0]["role"] == "tool" and items[0]["tool_call_id"] == "call_1"
    assert items[1]["tool_calls"][0]["arguments"] == '{"q": "roost"}'
    # A tool message needs the call it answers; only user messages are answered.
    bad = await post_message(client, headers, sid, role="tool", content="x", reply=False)
    assert bad.status_code == 422 and "tool_call_id" in bad.json()["detail"]
    assert bad.json()["field"] == "tool_call_id"
    bad = await post_message(client, headers, sid, role="system", content="x")
    assert bad.status_code == 422 and "reply=false" in bad.json()["detail"]


async def test_a_nul_in_a_plain_text_field_is_a_422_naming_it(
    client: httpx.AsyncClient, user: User, sid: str,
) -> None:
    """Text columns hold no NUL: a NUL in a session's, a summary's or a message's plain
    text is a 422 naming the field, not the database's 400 naming none (docs/chat.md)."""
    _, h = user
    api = "/api/v1/chat/sessions"
    cases: list[tuple[str, str, dict[str, Any], str]] = [
        ("POST", api, {"title": "a\x00b"}, "title"),
        ("PATCH", f"{api}/{sid}", {"title": "a\x00b"}, "title"),
        ("PATCH", f"{api}/{sid}/summary", {"conversation_domain": "a\x00b"},
         "conversation_domain"),
        ("PATCH", f"{api}/{sid}/summary", {"follow_up_tasks": [{"t": "a\x00b"}]},
         "follow_up_tasks"),
    ]
    message = {"content": "hi", "reply": False}
    for field, value in (("content", "a\x00b"), ("tool_call_name", "a\x00b"),
                         ("conversation_domain", "a\x00b"), ("embedding_model_used", "a\x00b"),
                         ("model", "a\x00b"), ("stop", ["a\x00b"])):
        cases.append(("POST", f"{api}/{sid}/messages", {**message, field: value}, field))
    cases.append(("POST", f"{api}/{sid}/messages",
                  {**message, "role": "tool", "tool_call_id": "a\x00b"}, "tool_call_id"))
    for method, url, body, field in cases:
        resp = await client.request(method, url, json=body, headers=h)
        assert resp.status_code == 422, (body, resp.text)
        problem = resp.json()
        named = [problem.get("field")] + [e["loc"][1] for e in problem.get("errors", ())]
        assert field in named, (body, resp.text)
    messages = (await client.get(f"{api}/{sid}/messages", headers=h)).json()["items"]
    assert messages == []


async def test_the_history_page_is_exactly_what_its_response_model_serialises(
    client: httpx.AsyncClient, sid: str, user: User,
) -> None:
    """The history route writes its JSON itself (no model per message): every field,
    null or not, must read back byte for byte as ``Page[MessageOut]`` writes it, and
    each message as the post that stored it answered."""
    from roost.chat.schemas import MessageOut
    from roost.pagination import Page

    _, headers = user
    call = {"id": "call_9", "name": "calc", "arguments": '{"x": 1.5}'}
    posted = [
        await post_message(client, headers, sid, content="Grüße, \"quoted\" 🦜\n", reply=False,
                    conversation_domain="travel", plan_step=2, confidence_score=0.1 + 0.2,
                    embedding_model_used="all-MiniLM-L6-v2"),
        await post_message(client, headers, sid, role="assistant", content="", reply=False,
                    tool_calls=[call]),
        await post_message(client, headers, sid, role="tool", content="3", reply=False,
                    tool_call_id="call_9", tool_call_name="calc"),
        await post_message(client, headers, sid, content="and now answer"),  # the model's reply too
    ]
    assert all(p.status_code == 201 for p in posted), [p.text for p in posted]
    resp = await client.get(f"/api/v1/chat/sessions/{sid}/messages?limit=3", headers=headers)
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    page = Page[MessageOut].model_validate_json(resp.content)
    assert resp.content == page.model_dump_json().encode()
    assert page.next_cursor is not None and len(page.items) == 3
    rest = await client.get(f"/api/v1/chat/sessions/{sid}/messages",
                            params={"cursor": page.next_cursor}, headers=headers)
    items = [*resp.json()["items"], *rest.json()["items"]]
    stored = [p.json()["user_message"] for p in posted] + [posted[-1].json()["assistant_message"]]
    assert items == sorted(stored, key=lambda m: -m["seq"])
    assert items[0]["model"] and items[0]["llm_request_id"] and items[0]["tokens_out"]


async def test_without_a_provider_chat_answers_409_with_a_hint_and_stores_nothing(
    client: httpx.AsyncClient, user: User, database: Database,
) -> None:
    _, headers = user
    sid = (await new_session(client, headers))["id"]
    resp = await post_message(client, headers, sid, content="hello?")
    assert resp.status_code == 409
    problem = resp.json()
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert "POST /api/v1/llm/providers" in problem["detail"] and "roost[local]" in problem["detail"]
    async with database.transaction() as s:
        assert (await s.execute(text("SELECT count(*) FROM chat_messages"))).scalar_one() == 0


async def test_bad_input(
    client: httpx.AsyncClient, user: User, sid: str,
    other_user: User,
) -> None:
    _, headers = user
    too_long = await post_message(client, headers, sid, content="x" * 2001)
    assert too_long.status_code == 413 and "2000" in too_long.json()["detail"]
    assert (await post_message(client, headers, sid, content="   ")).status_code == 422
    malformed = await client.post(f"/api/v1/chat/sessions/{sid}/messages", json={"text": "hi"},
                                  headers=headers)
    assert malformed.status_code == 422
    unknown_model = await post_message(client, headers, sid, content="hi", model="no-such-model")
    assert unknown_model.status_code == 404 and "no-such-model" in unknown_model.json()["detail"]
    # Another user's session looks like no session at all.
    _, other_headers = other_user
    for resp in (
        await post_message(client, other_headers, sid, content="hi"),
        await client.get(f"/api/v1/chat/sessions/{sid}", headers=other_headers),
        await client.get(f"/api/v1/chat/sessions/{sid}/messages", headers=other_headers),
        await client.delete(f"/api/v1/chat/sessions/{sid}", headers=other_headers),
    ):
        assert resp.status_code == 404, resp.text
    assert (await post_message(client, headers, str(uuid.uuid4()), content="hi")).status_code == 404


async def test_a_recorded_message_gets_its_position_owner_and_audit_record(
    client: httpx.AsyncClient, admin_headers: Headers, user: User, other_user: User,
    database: Database,
) -> None:
    """``reply: false`` stores the message in one statement with the session's counters
    and its audit record: each part checked here, and a refused post writes none."""
    user_id, headers = user
    sid = str((await new_session(client, headers))["id"])
    first = await post_message(client, headers, sid, content="a note", reply=False)
    calls = [{"id": "call_1", "type": "function", "name": "lookup", "arguments": "{\"q\": \"x\"}"}]
    second = await post_message(client, headers, sid, role="assistant", content="", reply=False,
                         tool_calls=calls, conversation_domain="travel", plan_step=3)
    assert first.status_code == 201 and second.status_code == 201, second.text
    assert first.json()["user_message"]["seq"] == 1
    stored = second.json()["user_message"]
    assert stored["seq"] == 2 and stored["tool_calls"] == calls
    assert stored["conversation_domain"] == "travel" and stored["plan_step"] == 3
    # An administrator records a message in the user's session: it is the user's.
    by_admin = await post_message(client, admin_headers, sid, content="from support", reply=False)
    assert by_admin.status_code == 201 and by_admin.json()["user_message"]["seq"] == 3
    # Refused: another user's session (404), an expired one (409); nothing written.
    _, other_headers = other_user
    assert (await post_message(client, other_headers, sid, content="x", reply=False)).status_code == 404
    async with database.transaction() as s:
        await s.execute(text("UPDATE chat_sessions SET expires_at = now() - interval '1 minute' "
                             "WHERE id = :s"), {"s": sid})
    expired = await post_message(client, headers, sid, content="too late", reply=False)
    assert expired.status_code == 409 and "expired" in expired.json()["detail"]

    session = (await client.get(f"/api/v1/chat/sessions/{sid}", headers=headers)).json()
    assert session["message_count"] == 3 and session["request_count"] == 0
    history = (await client.get(f"/api/v1/chat/sessions/{sid}/messages",
                                headers=headers)).json()["items"]
    assert [(m["seq"], m["content"]) for m in history] == [
        (3, "from support"), (2, ""), (1, "a note")]
    async with database.transaction() as s:
        owners = (await s.execute(text(
            "SELECT DISTINCT user_id FROM chat_messages WHERE session_id = :s"), {"s": sid})).all()
        records = (await s.execute(text(
            "SELECT resource_id, user_id, metadata FROM audit_logs "
            "WHERE action = 'chat.message.create' ORDER BY seq"))).all()
    assert [o.user_id for o in owners] == [user_id]
    assert [r.resource_id for r in records] == [m["id"] for m in reversed(history)]
    assert [r.metadata for r in records] == [
        {"seq": 1, "role": "user", "reply": False},
        {"seq": 2, "role": "assistant", "reply": False},
        {"seq": 3, "role": "user", "reply": False}]
    assert [r.user_id for r in records][:2] == [user_id, user_id]


async def test_the_first_and_last_moments_as_expiry_are_kept_finite(
    client: httpx.AsyncClient, user: User, sid: str, database: Database,
) -> None:
    """``expires_at`` at the last microsecond of year 9999 (a "never expires") or at the
    first of year 1 is kept one microsecond inwards, not stored as PostgreSQL's
    ``infinity``, which came back naive and made every post a 500."""
    _, headers = user
    resp = await client.patch(f"/api/v1/chat/sessions/{sid}",
                              json={"expires_at": "9999-12-31T23:59:59.999999Z"}, headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.json()["expires_at"] in ("9999-12-31T23:59:59.999998Z",
                                         "9999-12-31T23:59:59.999998+00:00")
    answered = await post_message(client, headers, sid, content="hello")
    assert answered.status_code == 201, answered.text

    past = (await new_session(client, headers, expires_at="0001-01-01T00:00:00Z"))["id"]
    for reply in (False, True):
        refused = await post_message(client, headers, past, content="hello", reply=reply)
        assert refused.status_code == 409 and "expired" in refused.json()["detail"], refused.text
    async with database.transaction() as s:
        infinite = await s.scalar(text(
            "SELECT count(*) FROM chat_sessions WHERE NOT isfinite(expires_at)"))
    assert infinite == 0


async def test_the_migration_makes_infinite_expiries_stored_before_finite(
    client: httpx.AsyncClient, user: User, sid: str, database: Database,
) -> None:
    """Migration 1220 moves an ``expires_at`` stored as ``infinity`` / ``-infinity`` (by
    the code before it) one microsecond inwards: the session takes answered posts again,
    the expired one refuses them with a 409, neither with a 500."""
    _, headers = user
    past = (await new_session(client, headers))["id"]
    await downgrade(database.engine, "1210")
    async with database.transaction() as s:
        await s.execute(text("UPDATE chat_sessions SET expires_at = CASE WHEN id = :sid "
                             "THEN timestamptz 'infinity' ELSE timestamptz '-infinity' END "
                             "WHERE id IN (:sid, :past)"), {"sid": sid, "past": past})
    await upgrade(database.engine)
    answered = await post_message(client, headers, sid, content="hello")
    assert answered.status_code == 201, answered.text
    refused = await post_message(client, headers, past, content="hello")
    assert refused.status_code == 409 and "expired" in refused.json()["detail"], refused.text


async def test_a_failing_provider_keeps_the_message_and_marks_the_request_failed(
    client: httpx.AsyncClient, stub: StubServer, user: User, sid: str,
    database: Database,
) -> None:
    _, headers = user
    stub.script(Junk("text", times=None))
    resp = await post_message(client, headers, sid, content="keep me")
    assert resp.status_code == 502
    assert "malformed" in resp.json()["detail"]
    stub.reset()
    stub.script(Fail(500, times=None))
    resp = await post_message(client, headers, sid, content="keep me too")
    assert resp.status_code == 502 and "HTTP 500" in resp.json()["detail"]
    items = (await client.get(f"/api/v1/chat/sessions/{sid}/messages", headers=headers)).json()["items"]
    assert [m["content"] for m in items] == ["keep me too", "keep me"]
    reqs = await _request_rows(database, sid)
    assert [r.status for r in reqs] == ["failed", "failed"]
    assert all(r.error_message and r.completed_at for r in reqs)
    # The problem names the failed call's record, which its owner can read.
    assert resp.json()["llm_request_id"] == str(reqs[-1].id), resp.text
    record = await client.get(f"/api/v1/llm/requests/{reqs[-1].id}", headers=headers)
    assert record.status_code == 200 and record.json()["status"] == "failed", record.text
    async with database.transaction() as s:
        outcomes = (await s.execute(text(
            "SELECT outcome, error_kind FROM llm_responses ORDER BY created_at"))).all()
    assert [tuple(o) for o in outcomes] == [("error", "bad_response"), ("error", "unavailable")]


async def test_a_hanging_provider_times_out_and_the_next_one_answers(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, stub_b: StubServer,
    user: User, database: Database,
) -> None:
    _, headers = user
    await add_provider(client, admin_headers, stub, name="first", priority=1)
    await add_provider(client, admin_headers, stub_b, name="second", priority=2)
    stub.script(Hang(times=None))
    sid = (await new_session(client, headers))["id"]
    resp = await post_message(client, headers, sid, content="anyone there?")
    assert resp.status_code == 201, resp.text
    assert resp.json()["provider"] == "second"
    request_id = resp.json()["request_id"]
    detail = (await client.get(f"/api/v1/llm/requests/{request_id}", headers=headers)).json()
    assert [(r["provider_name"], r["outcome"], r["selected"]) for r in detail["responses"]] == [
        ("first", "timeout", False), ("second", "success", True)]
    # Both hang: 504, the message is kept.
    stub_b.script(Hang(times=None))
    resp = await post_message(client, headers, sid, content="still there?")
    assert resp.status_code == 504
    assert (await _request_rows(database, sid))[-1].status == "failed"


async def test_streamed_answer_as_server_sent_events(
    client: httpx.AsyncClient, user: User, sid: str,
    database: Database,
) -> None:
    _, headers = user
    resp = await post_message(client, headers, sid, content="stream this please", stream=True)
    assert resp.status_code == 201
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = sse_events(resp.text)
    names = [e[0] for e in events]
    assert names[0] == "start" and names[-1] == "done" and names.count("delta") >= 3
    text_out = "".join(e[1]["content"] for e in events if e[0] == "delta")
    assert text_out == "echo: stream this please (model stub-model)"
    done = events[-1][1]
    assert done["assistant_message"]["content"] == text_out
    stored = (await client.get(f"/api/v1/chat/sessions/{sid}/messages", headers=headers)).json()
    assert [m["content"] for m in stored["items"]] == [text_out, "stream this please"]
    [req] = await _request_rows(database, sid)
    assert req.status == "completed" and req.request_type == "chat_stream"


async def test_a_stream_that_breaks_midway_fails_the_request_and_keeps_the_message(
    client: httpx.AsyncClient, stub: StubServer, user: User, sid: str,
    database: Database,
) -> None:
    _, headers = user
    stub.script(Drop(after=2))
    resp = await post_message(client, headers, sid, content="one two three four five", stream=True)
    events = sse_events(resp.text)
    assert [e[0] for e in events][-1] == "error"
    assert events[-1][1]["status"] == 502
    [req] = await _request_rows(database, sid)
    assert req.status == "failed"
    items = (await client.get(f"/api/v1/chat/sessions/{sid}/messages", headers=headers)).json()["items"]
    assert [m["role"] for m in items] == ["user"]


async def test_context_passages_reach_the_model_for_that_answer_only(
    client: httpx.AsyncClient, sid: str, user: User, stub: StubServer,
) -> None:
    """Retrieval-augmented chat: excerpts a client retrieved are given to the model right
    before the question, are not stored as conversation, and are not sent again later."""
    headers = user[1]
    passages = [{"source": "handbook.pdf #3", "text": "The office cat is called Miso."}]
    resp = await post_message(client, headers, sid, content="What is the cat called?", context=passages)
    assert resp.status_code == 201, resp.text
    sent = stub.requests(path="/v1/chat/completions")[-1].body["messages"]
    assert sent[-1] == {"role": "user", "content": "What is the cat called?"}
    assert sent[-2]["role"] == "system"
    assert "[1] handbook.pdf #3\nThe office cat is called Miso." in sent[-2]["content"]
    stored = (await client.get(f"/api/v1/chat/sessions/{sid}/messages", headers=headers)).json()
    assert all("Miso" not in m["content"] or m["role"] == "assistant" for m in stored["items"])
    await post_message(client, headers, sid, content="And the dog?")
    later = stub.requests(path="/v1/chat/completions")[-1].body["messages"]
    assert not any("Miso" in (m.get("content") or "") and m["role"] == "system" for m in later)
    too_many = await post_message(client, headers, sid, content="x", context=passages * 13)
    assert too_many.status_code == 422
    empty = await post_message(client, headers, sid, content="x", context=[{"source": "a", "text": ""}])
    assert empty.status_code == 422

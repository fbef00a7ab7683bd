"""A caller the process knows posts a ``reply: false`` message (``roost_store_chat_message``,
migration 1040) and reads a history page (``roost_chat_history``, migration 1050) in one
statement with no transaction around it, in which the database confirms the caller and
scopes itself.  What must hold: the store writes every column a message and its audit
record have, the read answers exactly what the usual path answers; a credential revoked
or changed elsewhere (another process) is refused on the very next request with nothing
written; refused posts (another's session, a closed one) write nothing and move no
counter; row-level security checks the functions' reads and writes."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import text

from roost.audit.models import AuditLog
from roost.audit.service import entry_values
from roost.chat import messages
from roost.chat.models import ChatMessage
from roost.db.engine import Database
from roost.identity import resolver
from roost.identity.tenancy import scope_settings
from roost.principal import Principal
from roost.security.tokens import hash_api_key
from tests.chat.conftest import new_session
from tests.support.listening import listening, statements
from tests.support.sql import function_inserts

Headers = dict[str, str]
User = tuple[uuid.UUID, Headers]


async def _note(client: httpx.AsyncClient, headers: Headers, sid: str, content: str) -> httpx.Response:
    return await client.post(f"/api/v1/chat/sessions/{sid}/messages", headers=headers,
                             json={"content": content, "reply": False})


async def _note_sent(client: httpx.AsyncClient, database: Database, headers: Headers, sid: str,
                     content: str) -> tuple[httpx.Response, list[str]]:
    """A note, and the statements it cost: one ``roost_store_chat_message`` when the
    caller was known and confirmed; more when it was looked up the usual way."""
    async with statements(database) as sent:
        response = await _note(client, headers, sid, content)
    return response, sent


ONE_STATEMENT = "FROM roost_store_chat_message("


@pytest.fixture
async def warm(client: httpx.AsyncClient, database: Database, user: User) -> AsyncIterator[str]:
    """As in a served process: the runtime settings' listener up, and the settings a
    note reads cached by a first note (a session of ``user``'s, returned)."""
    async with listening(database):
        sid = str((await new_session(client, user[1]))["id"])
        assert (await _note(client, user[1], sid, "warm-up")).status_code == 201
        yield sid


async def _stored(database: Database, sid: str) -> tuple[int, list[str]]:
    """The session's message_count and the ids of its messages' audit records."""
    async with database.transaction() as s:
        count = await s.scalar(text("SELECT message_count FROM chat_sessions WHERE id = :s"),
                               {"s": sid})
        records = (await s.execute(text(
            "SELECT a.resource_id FROM audit_logs a JOIN chat_messages m "
            "ON a.resource_id = m.id::text WHERE m.session_id = :s "
            "AND a.action = 'chat.message.create'"), {"s": sid})).scalars().all()
    return int(count or 0), list(records)


def _key(headers: Headers) -> tuple[str, str]:
    return ("api_key", hash_api_key(headers["Authorization"].removeprefix("Bearer ")))


async def test_the_function_writes_exactly_the_columns_a_message_and_its_record_have(
        database: Database) -> None:
    inserted = await function_inserts(database, "roost_store_chat_message")
    audit_columns = {AuditLog.__mapper__.columns[key].name for key in entry_values("x")}
    assert inserted == {"chat_messages": {c.name for c in ChatMessage.__table__.columns},
                        "audit_logs": audit_columns}


async def test_a_known_callers_note_is_stored_whole_in_one_statement(
        client: httpx.AsyncClient, user: User, database: Database, warm: str) -> None:
    user_id, headers = user
    assert _key(headers) in resolver._RESOLVED
    posted, sent = await _note_sent(client, database, headers, warm, "über 🦉 'quoted' \\ text")
    assert posted.status_code == 201, posted.text
    assert len(sent) == 1 and ONE_STATEMENT in sent[0], sent
    message = posted.json()["user_message"]
    assert message["seq"] == 2
    async with database.transaction() as s:
        row = (await s.execute(text("SELECT * FROM chat_messages WHERE id = :i"),
                               {"i": message["id"]})).mappings().one()
        record = (await s.execute(text(
            "SELECT user_id, resource_type, metadata FROM audit_logs WHERE resource_id = :i"),
            {"i": message["id"]})).one()
    assert row["user_id"] == user_id and row["seq"] == 2 and row["role"] == "user"
    assert bytes(row["content"]).startswith(b"gAAAAA")  # a Fernet token, never the text
    assert row["created_at"].isoformat()[:19] == message["created_at"][:19]
    assert record.user_id == user_id and record.resource_type == "chat_message"
    assert record.metadata == {"seq": 2, "role": "user", "reply": False}
    history = (await client.get(f"/api/v1/chat/sessions/{warm}/messages",
                                headers=headers)).json()["items"]
    assert [m["content"] for m in history] == ["über 🦉 'quoted' \\ text", "warm-up"]


async def test_a_credential_revoked_or_changed_elsewhere_is_refused_on_the_next_note(
        client: httpx.AsyncClient, user: User, database: Database, warm: str) -> None:
    user_id, headers = user
    # Another process makes the user an administrator: this process still remembers the
    # user as they were, the database does not confirm that, and the note is stored once,
    # by the caller looked up afresh.
    async with database.transaction() as s:
        await s.execute(text("UPDATE users SET role = 'admin' WHERE id = :u"), {"u": user_id})
    assert not resolver._RESOLVED[_key(headers)].principal.is_admin
    second, sent = await _note_sent(client, database, headers, warm, "second")
    assert second.status_code == 201 and ONE_STATEMENT in sent[0] and len(sent) > 1, sent
    assert resolver._RESOLVED[_key(headers)].principal.is_admin
    assert (await _stored(database, warm))[0] == 2
    third, sent = await _note_sent(client, database, headers, warm, "third")
    assert third.status_code == 201 and len(sent) == 1, sent  # known again
    # Another process revokes the key: refused at once, nothing written.
    async with database.transaction() as s:
        await s.execute(text("UPDATE api_keys SET revoked_at = now() WHERE key_hash = :h"),
                        {"h": _key(headers)[1]})
    refused, sent = await _note_sent(client, database, headers, warm, "after revocation")
    assert refused.status_code == 401 and ONE_STATEMENT in sent[0], (refused.text, sent)
    assert _key(headers) not in resolver._RESOLVED
    count, records = await _stored(database, warm)
    assert count == 3 and len(records) == 3


async def test_refused_notes_write_nothing_and_move_no_counter(
        client: httpx.AsyncClient, user: User, other_user: User, database: Database,
        warm: str) -> None:
    _, headers = user
    _, other_headers = other_user
    await new_session(client, other_headers)  # the other user is known to the process too
    for _ in range(2):
        refused, sent = await _note_sent(client, database, other_headers, warm, "not yours")
        assert refused.status_code == 404 and len(sent) == 1, sent
    nowhere, sent = await _note_sent(client, database, headers, str(uuid.uuid4()), "nowhere")
    assert nowhere.status_code == 404 and len(sent) == 1, sent
    archived = await client.patch(f"/api/v1/chat/sessions/{warm}", headers=headers,
                                  json={"status": "archived"})
    assert archived.status_code == 200, archived.text
    closed, sent = await _note_sent(client, database, headers, warm, "closed")
    assert closed.status_code == 409 and "archived" in closed.json()["detail"]
    assert len(sent) == 1, sent
    reopened = await client.patch(f"/api/v1/chat/sessions/{warm}", headers=headers,
                                  json={"status": "active", "expires_at": "2020-01-01T00:00:00Z"})
    assert reopened.status_code == 200, reopened.text
    expired, sent = await _note_sent(client, database, headers, warm, "expired")
    assert expired.status_code == 409 and "expired" in expired.json()["detail"], expired.text
    count, records = await _stored(database, warm)
    assert count == 1 and len(records) == 1


def _arguments(actor: Principal, session_id: uuid.UUID, message_id: uuid.UUID) -> tuple[Any, ...]:
    row = {"id": str(message_id), "session_id": str(session_id), "role": "user",
           "created_at": "2026-12-04T17:00:00+00:00"}
    record = json.dumps({"id": str(uuid.uuid4()), "created_at": "2026-12-04T17:00:00+00:00",
                         "action": "chat.message.create", "user_id": str(actor.user_id),
                         "event_category": "action", "success": True})
    return (session_id, actor.user_id, True, True, json.dumps(row), b"token", None, record)


async def test_row_level_security_checks_the_functions_writes(
        client: httpx.AsyncClient, user: User, other_user: User, database: Database) -> None:
    _, headers = user
    _, bob_headers = other_user
    sid = uuid.UUID(str((await new_session(client, headers))["id"]))
    await new_session(client, bob_headers)
    bob = resolver._RESOLVED[_key(bob_headers)]
    bob_scope = json.dumps(scope_settings(bob.principal))
    confirmation = resolver._confirmation_json(_key(bob_headers), bob)
    forged = uuid.uuid4()
    async with database.autocommit() as driver:
        # Bob claims to be an administrator: his scope (not an administrator's) hides the
        # session, whatever the actor flag says.
        assert await driver.fetch(messages._STORE, confirmation, bob_scope,
                                  *_arguments(bob.principal, sid, forged)) == []
        # A confirmation that does not match what the database knows: refused.
        lying = json.dumps({**json.loads(confirmation), "is_admin": True})
        with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
            await driver.fetch(messages._STORE, lying, bob_scope,
                               *_arguments(bob.principal, sid, forged))
        # The scope ended with the statement: the connection is the owner's again.
        assert not await driver.fetchval("SELECT current_setting('roost.user_id', true)")
    async with database.transaction() as s:
        assert await s.scalar(text("SELECT count(*) FROM chat_messages WHERE id = :i"),
                              {"i": forged}) == 0
        assert await s.scalar(text("SELECT message_count FROM chat_sessions WHERE id = :s"),
                              {"s": sid}) == 0


async def _page(client: httpx.AsyncClient, database: Database, headers: Headers, sid: str,
                **params: Any) -> tuple[httpx.Response, list[str]]:
    async with statements(database) as sent:
        response = await client.get(f"/api/v1/chat/sessions/{sid}/messages", headers=headers,
                                    params=params)
    return response, sent


async def test_the_history_functions_columns_are_the_history_statements(
        database: Database) -> None:
    async with database.autocommit() as driver:
        names, config = await driver.fetchrow(
            "SELECT proargnames, proconfig FROM pg_proc WHERE proname = 'roost_chat_history'")
    assert names[6:] == ["found", *messages._MESSAGE_FIELDS]
    # Planned once per connection, not on every call (migration 1060).
    assert config == ["plan_cache_mode=force_generic_plan"]


async def test_a_known_callers_history_page_is_one_statement_and_the_same_answer(
        client: httpx.AsyncClient, user: User, other_user: User, admin_headers: Headers,
        database: Database, warm: str) -> None:
    _, headers = user
    for i in range(4):
        assert (await _note(client, headers, warm, f"note {i}")).status_code == 201
    pages, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page, sent = await _page(client, database, headers, warm, **params)
        assert page.status_code == 200 and len(sent) == 1, (page.text, sent)
        assert "FROM roost_chat_history(" in sent[0]
        pages.append(page.json())
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert [m["content"] for p in pages for m in p["items"]] == [
        "note 3", "note 2", "note 1", "note 0", "warm-up"]
    # The usual path (the caller forgotten, as in a new process) answers the same bytes.
    fast, _ = await _page(client, database, headers, warm, limit=3)
    resolver._RESOLVED.pop(_key(headers))
    usual, sent = await _page(client, database, headers, warm, limit=3)
    assert len(sent) > 1 and usual.content == fast.content
    # Another user, known too: 404 in one statement; the operator reads it.
    _, other_headers = other_user
    await new_session(client, other_headers)
    hidden, sent = await _page(client, database, other_headers, warm)
    assert hidden.status_code == 404 and len(sent) == 1, sent
    assert (await _page(client, database, other_headers, str(uuid.uuid4())))[0].status_code == 404
    support = (await _page(client, database, admin_headers, warm, limit=1))[0]
    assert support.status_code == 200 and support.json()["items"][0]["content"] == "note 3"
    # A key revoked by another process: refused on the next read.
    async with database.transaction() as s:
        await s.execute(text("UPDATE api_keys SET revoked_at = now() WHERE key_hash = :h"),
                        {"h": _key(other_headers)[1]})
    assert _key(other_headers) in resolver._RESOLVED
    refused, sent = await _page(client, database, other_headers, warm)
    assert refused.status_code == 401 and "FROM roost_chat_history(" in sent[0], sent


async def test_row_level_security_filters_the_history_functions_reads(
        client: httpx.AsyncClient, user: User, other_user: User, database: Database,
        warm: str) -> None:
    _, bob_headers = other_user
    await new_session(client, bob_headers)
    bob = resolver._RESOLVED[_key(bob_headers)]
    confirmation = resolver._confirmation_json(_key(bob_headers), bob)
    async with database.autocommit() as driver:
        # No owner filter asked (as for an administrator): Bob's scope still hides it.
        assert await driver.fetch(messages._HISTORY, confirmation,
                                  json.dumps(scope_settings(bob.principal)),
                                  uuid.UUID(warm), None, None, 10) == []
        # Without any scope the connecting role sees the session and its message.
        assert len(await driver.fetch(messages._HISTORY, None, None, uuid.UUID(warm), None,
                                      None, 10)) == 1

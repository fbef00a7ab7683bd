"""A known caller's concurrent ``reply: false`` posts share statements (a group commit:
roost.db.groupcommit, ``roost_store_chat_messages``, migration 1310): what must hold is
that each post is answered and stored as if it were alone — its own position in its
session, its own audit record, its own 404 or 409 — and that a credential revoked
meanwhile is refused for every post of the batch with nothing written."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from sqlalchemy import text

from roost.chat import messages
from roost.db.engine import Database
from roost.db.groupcommit import GroupCommit
from tests.chat.conftest import new_session
from tests.support.listening import listening, statements

Headers = dict[str, str]
User = tuple[uuid.UUID, Headers]
BATCH = "FROM roost_store_chat_messages("


async def _note(client: httpx.AsyncClient, headers: Headers, sid: str,
                content: str) -> httpx.Response:
    return await client.post(f"/api/v1/chat/sessions/{sid}/messages", headers=headers,
                             json={"content": content, "reply": False})


@pytest.fixture
async def known(client: httpx.AsyncClient, database: Database,
                user: User) -> AsyncIterator[list[str]]:
    """Three sessions of ``user``'s, the caller known to the process (a first note) and
    the runtime settings' listener up, as in a served process."""
    async with listening(database):
        sids = [str((await new_session(client, user[1]))["id"]) for _ in range(3)]
        assert (await _note(client, user[1], sids[0], "warm-up")).status_code == 201
        yield sids


@asynccontextmanager
async def held(database: Database, sid: str) -> AsyncIterator[None]:
    """The session's row locked by another transaction for the block: a post to it
    waits in the database, and the posts sent meanwhile queue behind it."""
    async with database.transaction() as s:
        await s.execute(text("SELECT 1 FROM chat_sessions WHERE id = :s FOR UPDATE"),
                        {"s": sid})
        yield


async def _queued(database: Database, count: int) -> None:
    group = database.group_commits["chat.store"]
    assert isinstance(group, GroupCommit)
    for _ in range(400):
        if group.waiting >= count:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"{group.waiting} posts queued, not {count}")


async def _positions(database: Database, sid: str) -> tuple[int, list[int], list[int]]:
    """The session's message_count, its messages' positions, and the positions its
    messages' audit records name."""
    async with database.transaction() as s:
        count = await s.scalar(text("SELECT message_count FROM chat_sessions WHERE id = :s"),
                               {"s": sid})
        seqs = (await s.execute(text("SELECT seq FROM chat_messages WHERE session_id = :s "
                                     "ORDER BY seq"), {"s": sid})).scalars().all()
        audited = (await s.execute(text(
            "SELECT (a.metadata->>'seq')::int FROM audit_logs a JOIN chat_messages m "
            "ON a.resource_id = m.id::text WHERE m.session_id = :s "
            "AND a.action = 'chat.message.create' ORDER BY 1"), {"s": sid})).scalars().all()
    return int(count or 0), list(seqs), list(audited)


async def test_concurrent_notes_share_statements_and_each_gets_its_own_position(
        client: httpx.AsyncClient, database: Database, user: User, known: list[str]) -> None:
    _, headers = user
    first, second, third = known
    async with statements(database) as sent:
        async with held(database, first):
            blocked = asyncio.create_task(_note(client, headers, first, "first"))
            await asyncio.sleep(0.2)  # the first note is in flight, waiting for the lock
            notes = [asyncio.create_task(_note(client, headers, sid, f"note {i}"))
                     for i, sid in enumerate([first, second, third] * 6)]
            await _queued(database, len(notes))
        answers = [await blocked, *await asyncio.gather(*notes)]
    assert [a.status_code for a in answers] == [201] * 19, [a.text for a in answers]
    stores = [statement for statement in sent if "roost_store_chat_message" in statement]
    assert len(stores) == 2 and BATCH in stores[1], sent  # the first alone, the 18 at once
    by_session: dict[str, list[int]] = {}
    for answer in answers:
        message = answer.json()["user_message"]
        by_session.setdefault(message["session_id"], []).append(message["seq"])
    assert sorted(by_session[first]) == list(range(2, 9))  # after the warm-up note
    assert sorted(by_session[second]) == sorted(by_session[third]) == list(range(1, 7))
    for sid, seqs in by_session.items():
        stored = [1, *sorted(seqs)] if sid == first else sorted(seqs)  # the warm-up's 1
        assert await _positions(database, sid) == (max(seqs), stored, stored)
    history = (await client.get(f"/api/v1/chat/sessions/{second}/messages",
                                headers=headers)).json()["items"]
    assert {m["content"] for m in history} == {f"note {i}" for i in range(1, 18, 3)}
    assert len(history) == 6


async def test_a_refused_note_in_a_batch_fails_alone(
        client: httpx.AsyncClient, database: Database, user: User, other_user: User,
        known: list[str]) -> None:
    _, headers = user
    first, second, third = known
    others = str((await new_session(client, other_user[1]))["id"])
    archived = await client.patch(f"/api/v1/chat/sessions/{third}", headers=headers,
                                  json={"status": "archived"})
    assert archived.status_code == 200, archived.text
    async with statements(database) as sent:
        async with held(database, first):
            blocked = asyncio.create_task(_note(client, headers, first, "first"))
            await asyncio.sleep(0.2)
            targets = [second, others, third, str(uuid.uuid4()), second]
            notes = [asyncio.create_task(_note(client, headers, sid, "n")) for sid in targets]
            await _queued(database, len(notes))
        answers = [await blocked, *await asyncio.gather(*notes)]
    assert [a.status_code for a in answers] == [201, 201, 404, 409, 404, 201]
    assert "archived" in answers[3].json()["detail"]
    assert sum(BATCH in statement for statement in sent) == 1, sent
    assert await _positions(database, second) == (2, [1, 2], [1, 2])
    assert await _positions(database, third) == (0, [], [])
    assert await _positions(database, others) == (0, [], [])


async def test_a_key_revoked_while_its_notes_wait_refuses_them_all(
        client: httpx.AsyncClient, database: Database, user: User, known: list[str]) -> None:
    _, headers = user
    first, second, _ = known
    async with database.transaction() as s:  # no touch of the key in the first note's
        await s.execute(text("UPDATE api_keys SET last_used_at = now() "  # statement
                             "WHERE user_id = :u"), {"u": user[0]})
    async with held(database, first):
        blocked = asyncio.create_task(_note(client, headers, first, "first"))
        await asyncio.sleep(0.2)  # confirmed, then waiting for the session's lock
        async with database.transaction() as s:
            await s.execute(text("UPDATE api_keys SET revoked_at = now() "
                                 "WHERE user_id = :u"), {"u": user[0]})
        notes = [asyncio.create_task(_note(client, headers, second, f"n{i}")) for i in range(4)]
        await _queued(database, len(notes))
    answers = [await blocked, *await asyncio.gather(*notes)]
    assert [a.status_code for a in answers] == [201, 401, 401, 401, 401]
    assert await _positions(database, second) == (0, [], [])


async def test_the_batch_function_answers_nothing_for_no_items(database: Database) -> None:
    async with database.autocommit() as driver:
        rows = await driver.fetch(messages._STORE_MANY, None, None, uuid.uuid4(), False, True,
                                  [], [], [], [], [])
    assert rows == []

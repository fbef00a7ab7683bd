"""A chat session deleted while its answer is on the way: the answer is not kept (409), but
the ledger keeps the tokens the provider reported, and a streamed answer the client
received whole is paid for (else: stream, delete the session before the end, chat for
free); a whole answer the client never got is not."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from sqlalchemy import text

from roost.db.engine import Database
from tests.billing.metered import assert_settled, metered_user
from tests.chat.conftest import add_provider, new_session, post_message, sse_events
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Reply

Headers = dict[str, str]
User = tuple[uuid.UUID, Headers]
ANSWER = "one two three four"


async def _delete_while_answering(
    client: httpx.AsyncClient, database: Database, headers: Headers, sid: str, *,
    stream: bool,
) -> httpx.Response:
    """Post a message to ``sid`` and delete the session while the model answers (once its
    request is running, and a moment later: a streamed answer's first chunks are out);
    the message's answer."""
    posting = asyncio.ensure_future(
        post_message(client, headers, sid, content="hello", stream=stream))
    for _ in range(250):
        async with database.transaction() as s:
            running = (await s.execute(text(
                "SELECT count(*) FROM llm_requests WHERE session_id = :s AND status = 'running'"),
                {"s": sid})).scalar_one()
        if running:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)
    deleted = await client.delete(f"/api/v1/chat/sessions/{sid}", headers=headers)
    assert deleted.status_code == 204, deleted.text
    return await asyncio.wait_for(posting, 30)


async def _usage(database: Database, user_id: uuid.UUID, sid: str) -> Any:
    async with database.transaction() as s:
        [row] = (await s.execute(text(
            "SELECT tokens_input, tokens_output, credits_used, cost, success FROM usage_records"
            " WHERE user_id = :u AND session_id = :s"), {"u": user_id, "s": sid})).all()
    return row


def _streamed_then_refused(answer: httpx.Response) -> None:
    """The client got every delta of the answer, then a 409 ``error`` frame."""
    events = sse_events(answer.text)
    delivered = "".join(d["content"] for name, d in events if name == "delta")
    assert delivered == ANSWER, events
    assert events[-1][0] == "error" and events[-1][1]["status"] == 409, events


async def test_a_streamed_answer_delivered_before_its_session_is_deleted_is_billed(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, user: User,
    database: Database,
) -> None:
    uid, h = user
    await add_provider(client, admin_headers, stub)
    stub.script(Reply(ANSWER, chunk_delay_ms=250))  # the stream takes ~0.6 s after its start
    sid = (await new_session(client, h))["id"]
    _streamed_then_refused(await _delete_while_answering(client, database, h, sid, stream=True))
    usage = await _usage(database, uid, sid)
    assert not usage.success
    assert usage.tokens_input > 0 and usage.tokens_output > 0 and usage.credits_used > 0, usage
    # Its llm.call event as well (ClickHouse's usage report counts calls by these).
    async with database.transaction() as s:
        [event] = (await s.execute(text(
            "SELECT event_data FROM clickhouse_analytics WHERE event_type = 'llm.call' "
            "AND user_id = :u"), {"u": uid})).scalars().all()
    assert (event["tokens_input"], event["tokens_output"], event["credits"]) == (
        usage.tokens_input, usage.tokens_output, usage.credits_used), event


async def test_a_whole_answer_whose_session_was_deleted_keeps_its_tokens_but_is_not_billed(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, user: User,
    database: Database,
) -> None:
    uid, h = user
    await add_provider(client, admin_headers, stub)
    stub.script(Reply(ANSWER, delay_ms=600))
    sid = (await new_session(client, h))["id"]
    answer = await _delete_while_answering(client, database, h, sid, stream=False)
    assert answer.status_code == 409, answer.text
    assert ANSWER not in answer.text
    usage = await _usage(database, uid, sid)
    assert not usage.success
    # What the provider consumed stays in the ledger; the caller, who got no answer, pays
    # nothing for it.
    assert usage.tokens_input > 0 and usage.tokens_output == len(ANSWER.split()), usage
    assert usage.credits_used == 0 and usage.cost == 0, usage


async def test_a_metered_stream_cut_by_its_sessions_deletion_settles_its_hold(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
) -> None:
    """The hold is charged with the delivered answer's credits, not given back."""
    uid, h = await metered_user(client, admin_headers, stub, database, 100)
    stub.script(Reply(ANSWER, chunk_delay_ms=250))
    sid = (await new_session(client, h))["id"]
    _streamed_then_refused(await _delete_while_answering(client, database, h, sid, stream=True))
    usage = await _usage(database, uid, sid)
    assert usage.credits_used > 0, usage
    ledger = await assert_settled(database, uid)
    assert ledger["used"] == usage.credits_used, (ledger, usage)

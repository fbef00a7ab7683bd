"""Chat turns of a metered user posted at once to ONE chat session all answer and settle
their credits, among them a turn posted while the previous turn's answer is being stored.

The lock cycle these guard against: a post's transaction locks the chat session's row
(``_post_statement`` in src/roost/chat/messages.py), then holds its model call's credits on
a SIDE connection (``credits.hold_beside``), which needs the subscription's row.  The
previous turn's final transaction stores its answer in the session (locking the session's
row) and settles its credits (locking the subscription's row).  Were it to settle first,
it would hold the subscription's row while waiting for the session's, and the new post
would hold the session's row while its side connection waits for the subscription's:
each waits for the other, one of the waits on another connection, so PostgreSQL's
deadlock detector cannot see the cycle and both wait until the statement timeout (12 s
here: then a 503, which the status assertions catch).  So the final transaction settles
the credits last, after storing the answer (``_store_success`` in
src/roost/llm/calls.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from roost.billing import credits
from roost.config import Settings
from roost.db.engine import Database
from tests.billing.metered import Headers, assert_settled, metered_settings, metered_user, subscribe
from tests.chat.conftest import add_provider
from tests.support.identity import make_user
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Reply
from tests.support.sql import fetch, scalar


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    # Twelve answers at once from the stub on a loaded 2-core CI machine took over the
    # usual 5 s once (a 504, not the lock cycle these tests guard against, which the
    # statement timeout turns into a 503).
    return metered_settings(tmp_path, llm_timeout_s=30.0)


def _delay_the_second_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """The second ``credits.hold_beside`` waits 1.5 s first: it stands for the few round
    trips between a post's session-row lock and its hold (route, history, system prompt,
    the message's insert), so the first answer's store arrives in that window."""
    original = credits.hold_beside
    seen = 0

    async def slow_second_hold(*args: Any, **kwargs: Any) -> Any:
        nonlocal seen
        seen += 1
        if seen == 2:
            await asyncio.sleep(1.5)
        return await original(*args, **kwargs)

    monkeypatch.setattr(credits, "hold_beside", slow_second_hold)


async def _session_url(client: httpx.AsyncClient, headers: Headers) -> tuple[str, str]:
    sid = (await client.post("/api/v1/chat/sessions", json={}, headers=headers)).json()["id"]
    return sid, f"/api/v1/chat/sessions/{sid}/messages"


async def test_a_chat_turn_posted_while_the_previous_answer_is_stored_answers_and_settles(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user_id, headers = await metered_user(client, admin_headers, stub, database, 100)
    sid, url = await _session_url(client, headers)
    _delay_the_second_hold(monkeypatch)
    stub.script(Reply("First answer.", delay_ms=500), Reply("Second answer."))
    first = asyncio.ensure_future(client.post(url, headers=headers, json={"content": "first"}))
    await asyncio.sleep(0.2)  # the first post committed, its model call in flight
    second = asyncio.ensure_future(client.post(url, headers=headers,
                                               json={"content": "second"}))
    one, two = await asyncio.gather(first, second)
    assert (one.status_code, two.status_code) == (201, 201), (one.text, two.text)
    await assert_settled(database, user_id)
    requests = await fetch(database, "SELECT status FROM llm_requests WHERE user_id = :u",
                           u=user_id)
    assert [r.status for r in requests] == ["completed", "completed"], requests
    assert await scalar(database, "SELECT count(*) FROM chat_messages "
                                  "WHERE session_id = :s AND role = 'assistant'", s=sid) == 2


async def test_a_chat_turn_posted_while_a_streamed_answer_is_stored_answers_and_settles(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As above, the first turn streamed: its answer is stored at the stream's end, in the
    same store-then-settle transaction."""
    user_id, headers = await metered_user(client, admin_headers, stub, database, 100)
    _, url = await _session_url(client, headers)
    _delay_the_second_hold(monkeypatch)
    stub.script(Reply("First streamed answer.", delay_ms=500), Reply("Second answer."))
    first = asyncio.ensure_future(client.post(url, headers=headers,
                                              json={"content": "first", "stream": True}))
    await asyncio.sleep(0.2)  # the first post committed, its model call in flight
    second = asyncio.ensure_future(client.post(url, headers=headers,
                                               json={"content": "second"}))
    one, two = await asyncio.gather(first, second, return_exceptions=True)
    if isinstance(one, BaseException):  # the stream broke after its 200 went out
        last = f"{type(one).__name__}: {one}"[:300]
    else:
        last = one.text.strip().split("\n\n")[-1][:300]
    second_code = two.status_code if isinstance(two, httpx.Response) else repr(two)
    assert "event: done" in last and second_code == 201, (last, second_code)
    await assert_settled(database, user_id)


async def test_twelve_chat_turns_of_one_session_at_once_all_answer_and_settle(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
) -> None:
    """Natural timing, nothing patched."""
    user_id, headers = await metered_user(client, admin_headers, stub, database, 1000)
    _, url = await _session_url(client, headers)
    stub.script(*[Reply(f"answer {i}", delay_ms=20 * (i % 4)) for i in range(12)])
    answers = await asyncio.gather(*[
        client.post(url, headers=headers, json={"content": f"m{i}"}) for i in range(12)])
    codes = [a.status_code for a in answers]
    assert codes == [201] * 12, [a.text for a in answers if a.status_code != 201]
    await assert_settled(database, user_id)


async def test_twelve_chat_turns_of_one_session_at_once_of_an_unmetered_user_all_answer(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
) -> None:
    """The control: the same posts by a user without a subscription, while another user
    is metered (so metering is on)."""
    metered, _ = await make_user(database)
    await subscribe(client, admin_headers, metered, 1000)
    _, headers = await make_user(database)
    await add_provider(client, admin_headers, stub)
    _, url = await _session_url(client, headers)
    stub.script(*[Reply(f"answer {i}", delay_ms=20 * (i % 4)) for i in range(12)])
    answers = await asyncio.gather(*[
        client.post(url, headers=headers, json={"content": f"m{i}"}) for i in range(12)])
    codes = [a.status_code for a in answers]
    assert codes == [201] * 12, [a.text for a in answers if a.status_code != 201]

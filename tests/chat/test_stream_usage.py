"""A streamed reply records the same token usage as the same reply not streamed: the
provider's streamed usage when it sends one, else the same estimate."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from roost.db.engine import Database
from tests.chat.conftest import add_provider, new_session, sse_events
from tests.support.openai_stub import Reply, StubServer

Headers = dict[str, str]
CONTENT = "how many tokens does this question take"


async def _usage(client: httpx.AsyncClient, headers: Headers, database: Database, *,
                 stream: bool) -> Any:
    sid = (await new_session(client, headers))["id"]
    resp = await client.post(f"/api/v1/chat/sessions/{sid}/messages", headers=headers,
                             json={"content": CONTENT, "stream": stream})
    assert resp.status_code == 201, resp.text
    if stream:
        events = sse_events(resp.text)
        assert events[-1][0] == "done", events[-1]
        body = events[-1][1]
    else:
        body = resp.json()
    async with database.transaction() as s:
        row = (await s.execute(text(
            "SELECT u.tokens_input, u.tokens_output, u.credits_used, r.tokens_prompt,"
            " r.tokens_completion, r.raw_response, m.tokens_in, m.tokens_out"
            " FROM usage_records u JOIN llm_requests q ON q.id = u.llm_request_id"
            " JOIN llm_responses r ON r.request_id = q.id AND r.selected"
            " JOIN chat_messages m ON m.llm_request_id = q.id AND m.role = 'assistant'"
            " WHERE q.session_id = :s"), {"s": sid})).one()
    assert body["usage"]["tokens_input"] == row.tokens_input
    return row


@pytest.mark.parametrize("provider_usage", [True, False], ids=["reported", "estimated"])
async def test_streamed_and_plain_replies_record_the_same_usage(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], database: Database, provider_usage: bool,
) -> None:
    _, headers = user
    stub.script(Reply(usage=provider_usage, times=None))
    await add_provider(client, admin_headers, stub)
    plain = await _usage(client, headers, database, stream=False)
    streamed = await _usage(client, headers, database, stream=True)
    assert streamed.tokens_input > 0 and streamed.tokens_output > 0
    for field in ("tokens_input", "tokens_output", "credits_used", "tokens_prompt",
                  "tokens_completion", "tokens_in", "tokens_out"):
        assert getattr(streamed, field) == getattr(plain, field), field
    if provider_usage:  # the stub counts words: the prompt's and the echo's
        assert streamed.tokens_input == len(CONTENT.split())
        assert "usage_estimated" not in streamed.raw_response
    else:
        chars = len(CONTENT)
        assert streamed.tokens_input == -(-chars // 4) + 4
        assert streamed.raw_response["usage_estimated"] == ["tokens_in", "tokens_out"]
        assert plain.raw_response["usage_estimated"] == ["tokens_in", "tokens_out"]

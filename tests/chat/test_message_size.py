"""The chat API's size limit covers a message's tool calls as well as its content."""

from __future__ import annotations

import uuid

import httpx

from tests.chat.conftest import post_message

Headers = dict[str, str]
User = tuple[uuid.UUID, Headers]


async def test_tool_calls_count_toward_the_message_size_limit(
    client: httpx.AsyncClient, user: User, sid: str,
) -> None:
    """Tool calls far over ROOST_CHAT_MAX_MESSAGE_CHARS (2000 here) are refused with 413."""
    _, h = user
    calls = [{"id": f"c{i}", "name": "f", "arguments": "x" * 20_000} for i in range(5)]
    resp = await post_message(client, h, sid, role="assistant", content="", reply=False,
                              tool_calls=calls)
    assert resp.status_code == 413, (resp.status_code, resp.text[:300])

"""The chat API's limits on a message: its size covers its tool calls as well as its content;
an empty message (invisible characters only too) is refused."""

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


async def test_a_message_of_invisible_characters_only_is_empty(
    client: httpx.AsyncClient, user: User, sid: str,
) -> None:
    """Zero-width spaces, a joiner and a BOM show nothing: the message is refused as empty
    (422 on `content`), answered or only stored, not sent to the model and billed."""
    _, h = user
    for reply in (True, False):
        resp = await post_message(client, h, sid, content="\u200b\u200d\ufeff", reply=reply)
        assert resp.status_code == 422 and resp.json().get("field") == "content", resp.text
    history = await client.get(f"/api/v1/chat/sessions/{sid}/messages", headers=h)
    assert history.json()["items"] == []

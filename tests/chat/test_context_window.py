"""The history a reply sends (the last ``ROOST_CHAT_CONTEXT_MESSAGES`` messages) never
starts inside a tool exchange: a tool result whose assistant ``tool_calls`` message fell
out of the window is left out too (OpenAI and Anthropic refuse such a result: 400)."""

from __future__ import annotations

import uuid

import httpx
import pytest

from roost.config import Settings
from tests.chat.conftest import add_provider, new_session, post_message
from tests.support.openai_stub import StubServer

Headers = dict[str, str]
User = tuple[uuid.UUID, Headers]
CALLS = [{"id": "call_1", "type": "function", "name": "lookup", "arguments": "{}"}]
HISTORY = ({"content": "what is x?"},
           {"content": "", "role": "assistant", "tool_calls": CALLS},
           {"content": "x is 42", "role": "tool", "tool_call_id": "call_1"},
           {"content": "x is 42.", "role": "assistant"})


@pytest.fixture(params=[2, 3], ids=["cuts-the-call", "holds-the-call"])
def window(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture
def test_settings(test_settings: Settings, window: int) -> Settings:
    return test_settings.model_copy(update={"chat_context_messages": window})


async def test_the_context_window_never_starts_with_an_orphaned_tool_result(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, user: User,
    window: int,
) -> None:
    _, h = user
    await add_provider(client, admin_headers, stub)
    sid = (await new_session(client, h))["id"]
    for body in HISTORY:
        stored = await post_message(client, h, sid, reply=False, **body)
        assert stored.status_code == 201, stored.text
    stub.reset()
    resp = await post_message(client, h, sid, content="and y?")
    assert resp.status_code == 201, resp.text
    [seen] = stub.requests()
    sent = [(m["role"], bool(m.get("tool_calls"))) for m in seen.body["messages"]
            if m["role"] != "system"]
    if window == 2:  # [tool, assistant]: the orphaned result is left out
        assert sent == [("assistant", False), ("user", False)], seen.body["messages"]
    else:  # [assistant tool_calls, tool, assistant]: the exchange goes whole
        assert sent == [("assistant", True), ("tool", False), ("assistant", False),
                        ("user", False)], seen.body["messages"]

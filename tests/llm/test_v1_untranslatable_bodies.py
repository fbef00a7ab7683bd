"""/v1 bodies a provider could not translate (a function tool without a name or a type,
an image part that is a bare string, an unknown tool choice): a 400 naming the field, as
OpenAI answers, before any provider is asked (an ``anthropic`` provider's translation
failed on them: a 500, or guessed); and what an ``anthropic`` provider is sent for
OpenAI's keys it has in other words (``parallel_tool_calls``)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from roost.config import Settings
from roost.db.engine import Database
from tests.support.identity import make_user
from tests.support.openai_stub import StubServer

Headers = dict[str, str]
MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", llm_timeout_s=3, llm_local_model=False,
                    chat_max_message_chars=1000, max_request_bytes=256 * 1024)


@pytest.fixture
async def user(database: Database) -> tuple[uuid.UUID, Headers]:
    return await make_user(database)


async def _claude(client: httpx.AsyncClient, admin: Headers, stub: StubServer) -> None:
    body: dict[str, Any] = {"name": "claude", "type": "anthropic", "base_url": stub.base_url,
                            "model": "claude-x"}
    resp = await client.post("/api/v1/llm/providers", json=body, headers=admin)
    assert resp.status_code == 201, resp.text


async def test_anthropic_tool_without_name_is_a_400(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], database: Database,
) -> None:
    """A user expects a function tool without ``function.name`` to be refused as their
    mistake (400 ``invalid_request_error``, as OpenAI or an OpenAI-compatible provider
    answers). Routed to an ``anthropic`` provider, the translation raises KeyError('name')
    and the call is a 500 ``internal_error`` (the request recorded ``failed``)."""
    await _claude(client, admin_headers, stub)
    _, headers = user
    resp = await client.post("/v1/chat/completions", headers=headers, json={
        "model": "claude-x", "messages": MSG,
        "tools": [{"type": "function", "function": {"parameters": {}}}]})
    async with database.transaction() as s:
        statuses: list[str] = list((await s.execute(
            text("SELECT status FROM llm_requests"))).scalars().all())
    assert resp.status_code == 400, (resp.text, statuses)
    assert resp.json()["error"]["type"] == "invalid_request_error"


async def test_anthropic_stream_tool_without_name_is_a_400(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers],
) -> None:
    """The same body with ``stream: true``: a user expects a 400 before the stream opens
    (or at worst a 200 stream ending in an error frame); the call is a 500 ``internal_error``
    (KeyError('name') in the anthropic translation)."""
    await _claude(client, admin_headers, stub)
    _, headers = user
    resp = await client.post("/v1/chat/completions", headers=headers, json={
        "model": "claude-x", "messages": MSG, "stream": True,
        "tools": [{"type": "function", "function": {"parameters": {}}}]})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["type"] == "invalid_request_error"


async def test_anthropic_image_url_part_as_a_string_is_a_400(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers],
) -> None:
    """An ``image_url`` content part whose ``image_url`` is a bare string (a common client
    slip; OpenAI wants ``{"url": ...}``) should be a 400 naming the part (or be read as the
    URL). Routed to an ``anthropic`` provider it is a 500 ``internal_error``:
    AttributeError 'str' object has no attribute 'get' in the translation."""
    await _claude(client, admin_headers, stub)
    _, headers = user
    resp = await client.post("/v1/chat/completions", headers=headers, json={
        "model": "claude-x", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": "http://example.invalid/cat.png"}]}]})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == "messages.0.content.1.image_url", resp.text


def _sent(stub: StubServer) -> dict[str, Any]:
    chats = [s for s in stub.requests() if s.path.endswith("/messages")]
    assert chats, stub.requests()
    return chats[-1].body


async def test_a_tool_without_type_is_a_400_naming_it(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers],
) -> None:
    """A function tool written without ``"type"`` is refused as OpenAI refuses it (400
    ``invalid_value``, ``param`` ``tools.0.type``), on every provider.  Before, /v1 read it
    as a function tool but an ``anthropic`` provider was sent it untranslated: a provider
    400."""
    await _claude(client, admin_headers, stub)
    resp = await client.post("/v1/chat/completions", headers=user[1], json={
        "model": "claude-x", "messages": MSG,
        "tools": [{"function": {"name": "f", "parameters": {"type": "object"}}}]})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == "tools.0.type", resp.text
    assert stub.requests() == []


@pytest.mark.parametrize(("tool_choice", "sent_choice"), [
    ("auto", {"type": "auto", "disable_parallel_tool_use": True}),
    (None, {"type": "auto", "disable_parallel_tool_use": True}),
    ("required", {"type": "any", "disable_parallel_tool_use": True}),
    ({"type": "function", "function": {"name": "f"}},
     {"type": "tool", "name": "f", "disable_parallel_tool_use": True}),
    ("none", {"type": "none"}),
])
async def test_parallel_tool_calls_false_reaches_an_anthropic_provider(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], tool_choice: Any, sent_choice: dict[str, Any],
) -> None:
    """``parallel_tool_calls: false`` (at most one tool call per turn) is honoured by an
    ``anthropic`` provider, sent as ``tool_choice.disable_parallel_tool_use``.  Before, it
    was dropped: the model could still call several tools at once."""
    await _claude(client, admin_headers, stub)
    body: dict[str, Any] = {"model": "claude-x", "messages": MSG, "parallel_tool_calls": False,
                            "tools": [{"type": "function", "function": {"name": "f"}}]}
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    resp = await client.post("/v1/chat/completions", headers=user[1], json=body)
    assert resp.status_code == 200, resp.text
    assert _sent(stub)["tool_choice"] == sent_choice


async def test_an_unknown_tool_choice_is_a_400_not_auto(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers],
) -> None:
    """``tool_choice: "requried"`` (a typo of ``required``) is a 400 naming
    ``tool_choice``, as OpenAI and Anthropic answer.  Before, an ``anthropic`` provider
    read it as ``{"type": "auto"}``: the model could answer without the forced tool."""
    await _claude(client, admin_headers, stub)
    resp = await client.post("/v1/chat/completions", headers=user[1], json={
        "model": "claude-x", "messages": MSG, "tool_choice": "requried",
        "tools": [{"type": "function", "function": {"name": "f"}}]})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == "tool_choice", resp.text
    assert stub.requests() == []

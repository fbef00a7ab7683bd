"""AnthropicProvider against the stub's /v1/messages, plus the pure message mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from roost.llm import (
    AnthropicProvider,
    ChatMessage,
    ChatRequest,
    ProviderAuthError,
    ProviderBadResponse,
    ProviderNotSupported,
    ProviderRequestError,
    ProviderUnavailable,
    StreamAccumulator,
    ToolCall,
)
from roost.llm.anthropic import to_anthropic_messages, to_anthropic_tool_choice, to_anthropic_tools
from tests.support.openai_stub import Call, Fail, Junk, Reply, StubServer, ToolCalls

SECRET = "sk-ant-secret-123456789"


def req(text: str = "hello", **kw: object) -> ChatRequest:
    return ChatRequest.model_validate(
        {
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": text},
            ]
        }
        | kw
    )


@pytest.fixture
async def claude(stub: StubServer) -> AsyncIterator[AnthropicProvider]:
    # The stub serves both APIs; the provider accepts a base URL with /v1 too.
    async with AnthropicProvider(stub.base_url, api_key=SECRET, default_model="claude-stub", timeout=5) as p:
        yield p


async def test_chat_maps_system_and_headers(claude: AnthropicProvider, stub: StubServer) -> None:
    result = await claude.chat(req("hi there", temperature=0.1, stop=["END"]))
    assert result.content == "echo: hi there (model claude-stub)"
    assert result.finish_reason == "stop"  # end_turn, in OpenAI's words
    assert (result.tokens_in, result.tokens_out) == (5, 5)
    assert result.model == "claude-stub"
    sent = stub.requests()[-1]
    assert sent.path == "/v1/messages"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.api_key == SECRET
    body = sent.body
    assert body["system"] == "You are terse."
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi there"}]}]
    assert body["max_tokens"] == 1024  # required by the API, defaulted
    assert body["stop_sequences"] == ["END"]
    assert body["temperature"] == 0.1


async def test_openai_only_extras_are_dropped(claude: AnthropicProvider, stub: StubServer) -> None:
    await claude.chat(req(extra={"logprobs": True, "top_k": 5, "anthropic": {"metadata": {}}}))
    body = stub.requests()[-1].body
    assert "logprobs" not in body
    assert body["top_k"] == 5
    assert body["metadata"] == {}


async def test_stream_reassembles(claude: AnthropicProvider) -> None:
    plain = await claude.chat(req("a b c d"))
    chunks = [c async for c in claude.stream_chat(req("a b c d"))]
    assert len(chunks) > 3
    res = StreamAccumulator().extend(chunks).result()
    assert res.content == plain.content
    assert res.finish_reason == "stop"
    assert (res.tokens_in, res.tokens_out) == (plain.tokens_in, plain.tokens_out)
    assert res.model == "claude-stub"


async def test_streamed_calls_reuse_one_connection(claude: AnthropicProvider,
                                                   stub: StubServer) -> None:
    for _ in range(3):
        assert [c async for c in claude.stream_chat(req("a b c"))]
    ports = {s.client_port for s in stub.requests("/v1/messages")}
    assert len(ports) == 1 and None not in ports


async def test_tool_use_plain_and_streamed(claude: AnthropicProvider, stub: StubServer) -> None:
    stub.script(ToolCalls(Call("lookup", {"q": "roost"}), times=2))
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "search",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
        }
    ]
    result = await claude.chat(req(tools=tools, tool_choice="required"))
    assert result.finish_reason == "tool_calls"
    assert [(t.id, t.name, t.arguments) for t in result.tool_calls] == [
        ("toolu_stub_1", "lookup", '{"q": "roost"}')
    ]
    body = stub.requests()[-1].body
    assert body["tools"][0]["input_schema"]["properties"] == {"q": {"type": "string"}}
    assert body["tool_choice"] == {"type": "any"}
    streamed = StreamAccumulator().extend([c async for c in claude.stream_chat(req())]).result()
    assert streamed.tool_calls == result.tool_calls
    assert streamed.finish_reason == "tool_calls"


async def test_length_stop_maps(claude: AnthropicProvider, stub: StubServer) -> None:
    stub.script(Reply(finish_reason="length"))
    assert (await claude.chat(req())).finish_reason == "length"


async def test_errors(claude: AnthropicProvider, stub: StubServer) -> None:
    stub.script(Fail(529), Fail(400), Junk("shape"), Junk("stream"))
    with pytest.raises(ProviderUnavailable) as unavailable:
        await claude.chat(req())
    assert unavailable.value.upstream_status == 529
    with pytest.raises(ProviderRequestError):
        await claude.chat(req())
    with pytest.raises(ProviderBadResponse):
        await claude.chat(req())
    with pytest.raises(ProviderBadResponse):
        [c async for c in claude.stream_chat(req())]


async def test_missing_key_error_does_not_leak(stub: StubServer) -> None:
    stub.script(Fail(401, "invalid x-api-key"))
    async with AnthropicProvider(stub.root_url, api_key=SECRET, default_model="c") as p:
        with pytest.raises(ProviderAuthError) as info:
            await p.chat(req())
    assert info.value.upstream_status == 401
    assert SECRET not in str(info.value)


async def test_models_health_and_no_embeddings(claude: AnthropicProvider) -> None:
    assert await claude.list_models() == ["stub-model"]
    assert (await claude.health()).ok
    with pytest.raises(ProviderNotSupported):
        await claude.embed(["x"])


def test_message_mapping_merges_turns_and_tools() -> None:
    system, turns = to_anthropic_messages(
        [
            ChatMessage(role="system", content="A"),
            ChatMessage(role="developer", content="B"),
            ChatMessage(role="user", content="weather?"),
            ChatMessage(
                role="assistant",
                content="checking",
                tool_calls=[ToolCall(id="t1", name="w", arguments='{"c": 1}')],
            ),
            ChatMessage(role="tool", tool_call_id="t1", content="sunny"),
            ChatMessage(role="user", content=[{"type": "text", "text": "thanks"}]),
            ChatMessage(
                role="user",
                content=[{"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD"}}],
            ),
        ]
    )
    assert system == "A\n\nB"
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"][1] == {"type": "tool_use", "id": "t1", "name": "w", "input": {"c": 1}}
    last = turns[2]["content"]
    assert last[0] == {"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}
    assert last[1] == {"type": "text", "text": "thanks"}
    assert last[2]["source"] == {"type": "base64", "media_type": "image/png", "data": "QUJD"}


def test_tool_and_choice_mapping() -> None:
    native = {"name": "n", "input_schema": {"type": "object"}}
    assert to_anthropic_tools([native]) == [native]
    fn = {"type": "function", "function": {"name": "f"}}
    assert to_anthropic_tools([fn]) == [{"name": "f", "input_schema": {"type": "object", "properties": {}}}]
    assert to_anthropic_tool_choice("auto") == {"type": "auto"}
    assert to_anthropic_tool_choice({"type": "function", "function": {"name": "f"}}) == {
        "type": "tool",
        "name": "f",
    }
    with pytest.raises(ValueError, match="requried"):  # never read as "auto"
        to_anthropic_tool_choice("requried")

"""The test stub itself (tests/support/openai_stub), read through the official openai SDK:
its defaults, scripted replies, tool calls (plain and streamed), failures, request capture."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from tests.support.openai_stub import (
    Call,
    Drop,
    Fail,
    Junk,
    Models,
    Reply,
    StubServer,
    ToolCalls,
    embedding_for,
)

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def sdk(stub: StubServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=stub.base_url, api_key="sk-x", max_retries=0) as client:
        yield client


async def test_unscripted_answers_are_deterministic(sdk: openai.AsyncOpenAI) -> None:
    done = await sdk.chat.completions.create(model="sdk", messages=HI)
    assert done.choices[0].message.content == "echo: hi (model sdk)"
    assert done.usage is not None and done.usage.completion_tokens == 4
    stream = await sdk.chat.completions.create(model="sdk", messages=HI, stream=True,
                                               stream_options={"include_usage": True})
    parts = [e.choices[0].delta.content or "" async for e in stream if e.choices]
    assert len(parts) > 3 and "".join(parts) == "echo: hi (model sdk)"
    emb = await sdk.embeddings.create(model="e", input=["alpha"])  # base64, the SDK's default
    assert emb.data[0].embedding == pytest.approx(embedding_for("alpha", 8), abs=1e-6)
    assert [m.id for m in (await sdk.models.list()).data] == ["stub-model"]


async def test_scripted_tool_calls_then_structured_output(
    stub: StubServer, sdk: openai.AsyncOpenAI
) -> None:
    ballot = {"vote": "b", "confidence": 0.8}
    stub.script(ToolCalls(Call("lookup", {"q": "roost"}), Call("clock", id="call_x"), usage=(30, 7)),
                Reply(json=ballot))
    first = await sdk.chat.completions.create(model="m", messages=HI)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == ""
    calls = choice.message.tool_calls or []
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("call_stub_1", "lookup", {"q": "roost"}), ("call_x", "clock", {})]
    assert first.usage is not None and (first.usage.prompt_tokens, first.usage.completion_tokens) == (30, 7)
    second = await sdk.chat.completions.create(model="m", messages=HI)
    assert json.loads(second.choices[0].message.content or "") == ballot
    assert second.choices[0].finish_reason == "stop"
    third = await sdk.chat.completions.create(model="m", messages=HI)  # the script is used up
    assert third.choices[0].message.content == "echo: hi (model m)"


async def test_scripted_stream_with_tool_call_deltas_and_usage(
    stub: StubServer, sdk: openai.AsyncOpenAI
) -> None:
    stub.script(ToolCalls(Call("get_weather", {"city": "Oslo"}), Call("get_time"), text="Checking. "))
    stream = await sdk.chat.completions.create(model="m", messages=HI, stream=True,
                                               stream_options={"include_usage": True})
    text, args, names, finish, usage = "", {0: "", 1: ""}, {}, None, None
    async for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                assert delta.function is not None
                if delta.function.name:
                    names[delta.index] = (delta.id, delta.function.name)
                args[delta.index] += delta.function.arguments or ""
    assert text == "Checking. " and finish == "tool_calls"
    assert names == {0: ("call_stub_1", "get_weather"), 1: ("call_stub_2", "get_time")}
    assert [json.loads(a) for a in args.values()] == [{"city": "Oslo"}, {}]
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (1, 1)


async def test_scripted_failures(stub: StubServer, sdk: openai.AsyncOpenAI) -> None:
    stub.script(Fail(503), Fail(429, body={"error": {"message": "slow down", "code": "rate"}}),
                Fail(400, model="bad", times=None), Drop(after=1), Junk("shape"))
    with pytest.raises(openai.InternalServerError) as down:
        await sdk.chat.completions.create(model="m", messages=HI)
    assert down.value.status_code == 503 and "stub injected failure 503" in down.value.message
    with pytest.raises(openai.RateLimitError) as limited:
        await sdk.chat.completions.create(model="m", messages=HI)
    assert limited.value.code == "rate" and "slow down" in limited.value.message
    for _ in range(2):  # times=None: every request for that model
        with pytest.raises(openai.BadRequestError):
            await sdk.chat.completions.create(model="bad", messages=HI)
    stream = await sdk.chat.completions.create(model="m", messages=HI, stream=True)
    got: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):  # dropped after one content chunk
        async for chunk in stream:
            got += [c.delta.content or "" for c in chunk.choices]
    assert "".join(got) == "echo: "
    shaped = await sdk.chat.completions.with_raw_response.create(model="m", messages=HI)
    assert json.loads(shaped.text)["object"] == "surprise"
    assert (await sdk.chat.completions.create(model="m", messages=HI)).choices[0].message.content


async def test_requests_are_captured_and_reset(stub: StubServer, sdk: openai.AsyncOpenAI) -> None:
    stub.script(Models(["a", "b"]))
    assert [m.id for m in (await sdk.models.list()).data] == ["a", "b"]
    await sdk.chat.completions.create(model="m1", messages=HI, temperature=0.5)
    await sdk.embeddings.create(model="e1", input="x", dimensions=4)
    seen = stub.requests()
    assert [(s.path, s.model) for s in seen] == [
        ("/v1/models", None), ("/v1/chat/completions", "m1"), ("/v1/embeddings", "e1")]
    assert all(s.api_key == "sk-x" for s in seen)
    [chat] = stub.requests(model="m1")
    assert chat.body["temperature"] == 0.5 and chat.body["messages"] == HI
    assert len(stub.requests(path="/v1/embeddings")) == 1
    stub.reset()
    assert stub.requests() == []


def test_a_script_with_a_typo_is_refused(stub: StubServer) -> None:
    bad = httpx.post(f"{stub.root_url}/_script", json=[{"step": "Reply", "txet": "typo"}])
    assert bad.status_code == 400 and "txet" in bad.text


"""The OpenAI-compatible gateway over real stub provider processes: the official openai
SDK as client (through the ASGI app), routing, fallback, ensemble, errors, records."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI
from openai.lib.streaming.chat import ChatCompletionStreamState
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from roost.config import Settings
from roost.db.engine import Database
from tests.llm.sse import v1_frames
from tests.support.identity import make_user
from tests.support.openai_stub import Call, Fail, Hang, Junk, Reply, StubServer, ToolCalls

Headers = dict[str, str]


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", llm_timeout_s=1.5, llm_local_model=False,
                    chat_max_message_chars=1000, max_request_bytes=256 * 1024)


@pytest.fixture
async def user(database: Database) -> tuple[uuid.UUID, Headers]:
    return await make_user(database)


@pytest.fixture
async def sdk(app: FastAPI, user: tuple[uuid.UUID, Headers]) -> AsyncIterator[openai.AsyncOpenAI]:
    key = user[1]["Authorization"].removeprefix("Bearer ")
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50001))
    async with httpx.AsyncClient(transport=transport, base_url="http://roost.test") as http:
        yield openai.AsyncOpenAI(base_url="http://roost.test/v1", api_key=key, http_client=http,
                                 max_retries=0)


async def _provider(client: httpx.AsyncClient, admin: Headers, stub: StubServer, name: str,
                    **fields: Any) -> str:
    body = {"name": name, "type": "openai", "base_url": stub.base_url, "model": "stub-model",
            **fields}
    resp = await client.post("/api/v1/llm/providers", json=body, headers=admin)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


async def _responses(database: Database, request_id: str) -> list[Any]:
    async with database.transaction() as s:
        return list((await s.execute(text(
            "SELECT provider_name, outcome, error_kind, selected, tokens_total, confidence "
            "FROM llm_responses WHERE request_id = :r ORDER BY started_at, provider_name"),
            {"r": request_id})).all())


async def test_openai_sdk_plain_streaming_models_and_embeddings(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, sdk: openai.AsyncOpenAI,
    database: Database, user: tuple[uuid.UUID, Headers],
) -> None:
    await _provider(client, admin_headers, stub, "stub")
    models = await sdk.models.list()
    assert [m.id for m in models.data] == ["stub-model"]

    done = await sdk.chat.completions.create(
        model="stub-model", messages=[{"role": "user", "content": "hello gateway"}])
    assert done.choices[0].message.content == "echo: hello gateway (model stub-model)"
    assert done.choices[0].finish_reason == "stop"
    assert done.usage is not None and done.usage.prompt_tokens == 2

    stream = await sdk.chat.completions.create(
        model="stub-model", messages=[{"role": "user", "content": "stream me"}], stream=True,
        stream_options={"include_usage": True})
    pieces, usage, finish = [], None, None
    async for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces) == "echo: stream me (model stub-model)"
    assert finish == "stop" and usage is not None and usage.completion_tokens == 5

    emb = await sdk.embeddings.create(model="stub-model", input=["alpha", "beta"])  # base64
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 8
    as_float = await sdk.embeddings.create(model="stub-model", input="alpha",
                                           encoding_format="float")
    assert as_float.data[0].embedding == pytest.approx(emb.data[0].embedding, abs=1e-6)

    user_id, _ = user
    async with database.transaction() as s:
        rows = (await s.execute(text(
            "SELECT q.request_type, q.status, u.tokens_input, u.tokens_output, u.model, u.user_id "
            "FROM llm_requests q JOIN usage_records u ON u.llm_request_id = q.id "
            "ORDER BY q.created_at"))).all()
    assert [(r.request_type, r.status) for r in rows] == [
        ("chat", "completed"), ("chat_stream", "completed"), ("embedding", "completed"),
        ("embedding", "completed")]
    assert all(r.user_id == user_id for r in rows)
    assert rows[0].tokens_input == 2 and rows[1].tokens_output == 5


async def test_the_owner_reads_back_the_conversation_stored_compressed_and_encrypted(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, sdk: openai.AsyncOpenAI,
    database: Database, user: tuple[uuid.UUID, Headers],
) -> None:
    """A long conversation is stored compressed, then encrypted (smaller than encrypting
    its JSON; nothing readable in the column); its owner reads it back as it was sent."""
    await _provider(client, admin_headers, stub, "stub")
    sent = [{"role": "system", "content": "You answer in one line."}]
    for turn in range(12):
        sent += [{"role": "user", "content": f"question {turn}: what time is it in Lisbon?"},
                 {"role": "assistant", "content": f"answer {turn}: it is noon in Lisbon."}]
    sent.append({"role": "user", "content": "and now?"})
    done = await sdk.chat.completions.create(model="stub-model", messages=sent)  # type: ignore[arg-type]
    request_id = (done.model_extra or {})["roost"]["request_id"]
    async with database.transaction() as s:
        stored: bytes = (await s.execute(text("SELECT messages FROM llm_requests WHERE id = :r"),
                                  {"r": request_id})).scalar_one()
    as_json = json.dumps(sent, separators=(",", ":")).encode()
    assert b"Lisbon" not in stored and len(stored) < len(as_json)
    _, headers = user
    detail = (await client.get(f"/api/v1/llm/requests/{request_id}", headers=headers)).json()
    assert detail["messages"] == sent and detail["prompt"] == "and now?"
    _, other = await make_user(database)
    hidden = await client.get(f"/api/v1/llm/requests/{request_id}", headers=other)
    assert hidden.status_code == 404


async def test_errors_use_openais_shape(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, sdk: openai.AsyncOpenAI,
    user: tuple[uuid.UUID, Headers],
) -> None:
    _, headers = user
    with pytest.raises(openai.ConflictError) as none:  # no provider configured at all
        await sdk.chat.completions.create(model="gpt-none", messages=[{"role": "user", "content": "x"}])
    assert none.value.code == "no_provider" and "POST /api/v1/llm/providers" in none.value.message
    await _provider(client, admin_headers, stub, "stub")
    with pytest.raises(openai.NotFoundError) as nf2:
        await sdk.chat.completions.create(model="gpt-none", messages=[{"role": "user", "content": "x"}])
    assert nf2.value.code == "model_not_found"
    body = nf2.value.body
    assert isinstance(body, dict) and body["param"] == "model" and body["type"] == "invalid_request_error"

    for bad in ({"model": "stub-model", "messages": []},
                {"model": "stub-model", "messages": [{"role": "wizard", "content": "x"}]},
                {"model": "stub-model", "messages": "hello"},
                {"messages": [{"role": "user", "content": "x"}]}):
        resp = await client.post("/v1/chat/completions", json=bad, headers=headers)
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["type"] == "invalid_request_error"
    not_json = await client.post("/v1/chat/completions", content=b"{", headers={
        **headers, "content-type": "application/json"})
    assert not_json.status_code == 400 and "JSON" in not_json.json()["error"]["message"]
    big = await client.post("/v1/chat/completions", headers=headers, json={
        "model": "stub-model", "messages": [{"role": "user", "content": "x" * 1001}]})
    assert big.status_code == 413 and big.json()["error"]["code"] == "content_too_large"
    anon = await client.post("/v1/chat/completions", json={"model": "stub-model", "messages": []})
    assert anon.status_code == 401 and anon.json()["error"]["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        await openai.AsyncOpenAI(base_url="http://roost.test/v1", api_key="rk_bogus",
                                 http_client=sdk._client, max_retries=0).models.list()

    stub.script(Junk("shape", times=None))
    with pytest.raises(openai.APIStatusError) as junk:
        await sdk.chat.completions.create(model="stub-model",
                                          messages=[{"role": "user", "content": "x"}])
    assert junk.value.status_code == 502 and "malformed" in junk.value.message


async def test_models_retrieve(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, sdk: openai.AsyncOpenAI,
) -> None:
    await _provider(client, admin_headers, stub, "stub")
    await _provider(client, admin_headers, stub, "org", model="org/stub-model")
    model = await sdk.models.retrieve("stub-model")
    assert (model.id, model.object, model.owned_by) == ("stub-model", "model", "stub")
    assert (await sdk.models.retrieve("org/stub-model")).owned_by == "org"  # a "/" in the name
    with pytest.raises(openai.NotFoundError) as missing:
        await sdk.models.retrieve("gpt-none")
    assert missing.value.code == "model_not_found" and missing.value.param == "model"


HELLO: list[Any] = [{"role": "user", "content": "hello"}]


async def test_max_completion_tokens_reaches_the_provider_under_that_name(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, sdk: openai.AsyncOpenAI,
) -> None:
    """OpenAI's reasoning models take only ``max_completion_tokens`` (they refuse
    ``max_tokens``): the provider is sent the limit under the name the client used."""
    await _provider(client, admin_headers, stub, "stub")
    await sdk.chat.completions.create(model="stub-model", messages=HELLO, max_completion_tokens=7)
    await sdk.chat.completions.create(model="stub-model", messages=HELLO, max_tokens=9)
    newer, older = (r.body for r in stub.requests(path="/v1/chat/completions")[-2:])
    assert newer.get("max_completion_tokens") == 7 and "max_tokens" not in newer, newer
    assert older.get("max_tokens") == 9 and "max_completion_tokens" not in older, older


async def test_reasoning_effort_reaches_the_provider(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, sdk: openai.AsyncOpenAI,
) -> None:
    """A reasoning model's user sends ``reasoning_effort`` (and ``verbosity``) with
    ``max_completion_tokens``: the OpenAI-compatible provider is sent them, while keys that
    would act on the operator's account (``store``) are not.  Before, ``reasoning_effort``
    was silently dropped."""
    await _provider(client, admin_headers, stub, "stub")
    await sdk.chat.completions.create(
        model="stub-model", messages=HELLO, reasoning_effort="low", max_completion_tokens=50,
        verbosity="low", store=True)
    sent = stub.requests(path="/v1/chat/completions")[-1].body
    assert (sent.get("reasoning_effort"), sent.get("verbosity")) == ("low", "low"), sent
    assert sent.get("max_completion_tokens") == 50 and "store" not in sent, sent


async def test_top_p_of_zero_is_a_valid_value(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, sdk: openai.AsyncOpenAI,
) -> None:
    """OpenAI takes ``top_p`` from 0 to 1 (0: the most likely token only), so a client
    sending ``top_p=0`` for determinism is answered, the value passed on."""
    await _provider(client, admin_headers, stub, "stub")
    done = await sdk.chat.completions.create(model="stub-model", messages=HELLO, top_p=0)
    assert done.choices[0].message.content
    assert stub.requests(path="/v1/chat/completions")[-1].body["top_p"] == 0


def _sdk_error_has_request_id(exc: openai.APIStatusError) -> None:
    assert isinstance(exc.body, dict) and exc.request_id
    assert exc.body["request_id"] == exc.request_id  # body and X-Request-ID agree


async def test_every_error_under_v1_is_in_openais_shape(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, sdk: openai.AsyncOpenAI,
    user: tuple[uuid.UUID, Headers], monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _provider(client, admin_headers, stub, "stub")
    with pytest.raises(openai.NotFoundError) as unknown:  # 404: no such route
        await sdk.post("/no/such/route", cast_to=object, body={})
    assert unknown.value.code == "not_found" and "/v1/no/such/route" in unknown.value.message
    assert unknown.value.type == "invalid_request_error"
    _sdk_error_has_request_id(unknown.value)

    with pytest.raises(openai.APIStatusError) as method:  # 405
        await sdk.delete("/models", cast_to=object)
    assert method.value.status_code == 405 and method.value.code == "method_not_allowed"
    _sdk_error_has_request_id(method.value)

    with pytest.raises(openai.APIStatusError) as big:  # 413: over ROOST_MAX_REQUEST_BYTES
        await sdk.embeddings.create(model="stub-model", input="x" * 300_000)
    assert big.value.status_code == 413 and big.value.code == "content_too_large"
    _sdk_error_has_request_id(big.value)

    with pytest.raises(openai.BadRequestError) as invalid:  # 400 (422 elsewhere): a field
        await sdk.chat.completions.create(model="stub-model", messages=[])
    assert invalid.value.code == "invalid_value" and invalid.value.param == "messages"
    _sdk_error_has_request_id(invalid.value)

    with pytest.raises(openai.AuthenticationError) as bogus:  # 401
        await openai.AsyncOpenAI(base_url="http://roost.test/v1", api_key="rk_bogus",
                                 http_client=sdk._client, max_retries=0).models.retrieve("x")
    assert bogus.value.code == "invalid_api_key"
    _sdk_error_has_request_id(bogus.value)

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug with a secret in its message")

    monkeypatch.setattr("roost.llm.routing.list_models", broken)
    with pytest.raises(openai.InternalServerError) as bug:  # 500: an unexpected exception
        await sdk.models.list()
    assert bug.value.code == "internal_error" and "secret" not in bug.value.message
    _sdk_error_has_request_id(bug.value)

    async def db_down(*args: object, **kwargs: object) -> None:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("refused"))

    monkeypatch.setattr("roost.llm.routing.list_models", db_down)
    with pytest.raises(openai.APIStatusError) as down:  # 503: the database is unreachable
        await sdk.models.retrieve("stub-model")
    assert down.value.status_code == 503 and down.value.code == "service_unavailable"
    _sdk_error_has_request_id(down.value)


async def test_lone_surrogates_are_400_in_openais_shape(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers],
) -> None:
    # The SDK cannot even encode such a string: send the bytes as a client in another
    # language would.  Python's json accepts them; that was a 500 when encrypting.
    await _provider(client, admin_headers, stub, "stub")
    headers = {**user[1], "content-type": "application/json"}
    for url, body, field in (
        ("/v1/chat/completions",
         b'{"model": "stub-model", "messages": [{"role": "user", "content": "a\\ud800"}]}',
         "messages[0].content"),
        ("/v1/embeddings", b'{"model": "stub-model", "input": ["ok", "\\udfff"]}', "input[1]"),
    ):
        resp = await client.post(url, content=body, headers=headers)
        assert resp.status_code == 400, resp.text
        error = resp.json()["error"]
        assert error["code"] == "invalid_json" and error["type"] == "invalid_request_error"
        assert "lone UTF-16 surrogate" in error["message"] and field in error["message"]
        assert error["request_id"] == resp.headers["x-request-id"]


async def test_fallback_on_5xx_and_connection_errors_is_recorded(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, stub_b: StubServer,
    sdk: openai.AsyncOpenAI, database: Database,
) -> None:
    await _provider(client, admin_headers, stub, "down", priority=1,
                    base_url="http://127.0.0.1:9/v1")  # nothing listens there
    await _provider(client, admin_headers, stub, "flaky", priority=2)
    await _provider(client, admin_headers, stub_b, "steady", priority=3)
    stub.script(Fail(503, times=None))
    done = await sdk.chat.completions.create(model="stub-model",
                                             messages=[{"role": "user", "content": "hi"}])
    assert done.choices[0].message.content == "echo: hi (model stub-model)"
    extra = done.model_extra or {}
    rows = await _responses(database, extra["roost"]["request_id"])
    assert [(r.provider_name, r.outcome, r.error_kind, r.selected) for r in rows] == [
        ("down", "error", "unavailable", False), ("flaky", "error", "unavailable", False),
        ("steady", "success", None, True)]
    assert extra["roost"]["provider"] == "steady" and len(stub_b.requests()) == 1

    # 400 from the provider is not a reason to fall back: the request itself is wrong.
    stub.reset()
    stub.script(Fail(400, times=None))
    with pytest.raises(openai.BadRequestError):
        await sdk.chat.completions.create(model="stub-model",
                                          messages=[{"role": "user", "content": "hi"}])
    assert len(stub_b.requests()) == 1


async def test_streaming_falls_back_before_the_first_chunk(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, stub_b: StubServer,
    sdk: openai.AsyncOpenAI,
) -> None:
    await _provider(client, admin_headers, stub, "hangs", priority=1)
    await _provider(client, admin_headers, stub_b, "works", priority=2)
    stub.script(Hang(times=None))
    stream = await sdk.chat.completions.create(
        model="stub-model", messages=[{"role": "user", "content": "after a timeout"}], stream=True)
    text_out = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text_out == "echo: after a timeout (model stub-model)"


async def test_ensemble_strategies(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, stub_b: StubServer,
    stub_c: StubServer, sdk: openai.AsyncOpenAI, database: Database,
) -> None:
    await _provider(client, admin_headers, stub, "a", weight=1.0)
    await _provider(client, admin_headers, stub_b, "b", weight=1.0)
    await _provider(client, admin_headers, stub_c, "c", weight=3.0)
    messages = [{"role": "user", "content": "Capital of France?"}]

    def answer(*steps: Reply) -> None:  # each stub answers its step from now on
        for server, step in zip((stub, stub_b, stub_c), steps, strict=True):
            server.reset()
            server.script(dataclasses.replace(step, times=None))

    # weighted_vote: two light votes for Paris lose to one heavy vote for Lyon.
    answer(Reply("Paris."), Reply("paris"), Reply("Lyon"))
    vote = await sdk.chat.completions.create(model="stub-model", messages=messages,
                                             extra_body={"ensemble": {"strategy": "weighted_vote"}})
    assert vote.choices[0].message.content == "Lyon"
    rows = await _responses(database, (vote.model_extra or {})["roost"]["request_id"])
    assert sorted((r.provider_name, r.outcome, r.selected) for r in rows) == [
        ("a", "success", False), ("b", "success", False), ("c", "success", True)]
    async with database.transaction() as s:
        req = (await s.execute(text(
            "SELECT request_type, ensemble_config FROM llm_requests WHERE id = :i"),
            {"i": (vote.model_extra or {})["roost"]["request_id"]})).one()
    assert req.request_type == "ensemble"
    assert req.ensemble_config == {"strategy": "weighted_vote", "providers": ["a", "b", "c"]}

    # highest_confidence: the surest model (by logprobs) wins whatever the weights.
    answer(Reply("Paris.", logprob=-0.01), Reply("paris", logprob=-0.5), Reply("Lyon", logprob=-2.0))
    sure = await sdk.chat.completions.create(
        model="stub-model", messages=messages, logprobs=True,
        extra_body={"ensemble": {"strategy": "highest_confidence"}})
    assert sure.choices[0].message.content == "Paris."
    rows = await _responses(database, (sure.model_extra or {})["roost"]["request_id"])
    best = max(rows, key=lambda r: r.confidence)
    assert best.provider_name == "a" and best.selected and float(best.confidence) > 0.98

    # first_success: the fast one wins, the slow ones are cancelled (and recorded).
    answer(Reply("Paris.", delay_ms=800), Reply("paris"), Reply("Lyon", delay_ms=800))
    fast = await sdk.chat.completions.create(
        model="stub-model", messages=messages,
        extra_body={"ensemble": {"strategy": "first_success", "providers": ["a", "b", "c"]}})
    assert fast.choices[0].message.content == "paris"
    rows = await _responses(database, (fast.model_extra or {})["roost"]["request_id"])
    assert sorted((r.provider_name, r.outcome) for r in rows) == [
        ("a", "cancelled"), ("b", "success"), ("c", "cancelled")]

    unknown = await client.post("/v1/chat/completions", headers=sdk_headers(sdk), json={
        "model": "stub-model", "messages": messages, "ensemble": {"providers": ["zzz"]}})
    assert unknown.status_code == 400 and "zzz" in unknown.json()["error"]["message"]


async def test_an_sdk_tool_loop_sends_the_tool_calls_back_in_openais_shape(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, sdk: openai.AsyncOpenAI,
) -> None:
    """The assistant turn an OpenAI SDK tool loop sends back (``tool_calls`` as
    ``{"id", "type": "function", "function": {"name", "arguments"}}``) is accepted and
    reaches the provider unchanged."""
    await _provider(client, admin_headers, stub, "stub")
    stub.script(ToolCalls(Call("get_weather", {"city": "Paris"})), Reply("sunny, enjoy"))
    tools: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    history: list[Any] = [{"role": "user", "content": "weather?"}]
    first = await sdk.chat.completions.create(model="stub-model", messages=history, tools=tools)
    asked = first.choices[0].message
    assert asked.tool_calls and asked.tool_calls[0].type == "function"
    assert asked.tool_calls[0].function.name == "get_weather"
    history += [asked.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": asked.tool_calls[0].id, "content": "sunny"}]
    second = await sdk.chat.completions.create(model="stub-model", messages=history, tools=tools)
    assert second.choices[0].message.content == "sunny, enjoy"
    sent = stub.requests(path="/v1/chat/completions")[-1].body["messages"]
    assert sent[1]["tool_calls"] == [{"id": asked.tool_calls[0].id, "type": "function",
                                      "function": {"name": "get_weather",
                                                   "arguments": '{"city": "Paris"}'}}]


async def test_a_custom_tool_call_is_refused_as_such(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, sdk: openai.AsyncOpenAI,
) -> None:
    """An assistant turn with a ``custom`` tool call (the SDK's free-text tools) is a 400
    naming the call and saying only function tool calls are supported, not "name: Field
    required"; nothing reaches the provider."""
    await _provider(client, admin_headers, stub, "stub")
    history: Any = [{"role": "user", "content": "run it"}, {"role": "assistant", "tool_calls": [
        {"id": "call_1", "type": "custom", "custom": {"name": "shell", "input": "ls"}}]}]
    with pytest.raises(openai.BadRequestError) as err:
        await sdk.chat.completions.create(model="stub-model", messages=history)
    assert err.value.param == "messages.1.tool_calls.0", err.value.body
    assert "only function tool calls" in err.value.message and "required" not in err.value.message
    assert stub.requests(path="/v1/chat/completions") == []


async def test_a_malformed_content_part_is_named_in_the_error(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers],
) -> None:
    """content as a list whose part is not an object: the error names the part
    (messages.0.content.0, "must be an object"), not "should be a valid string" for a list,
    which is allowed."""
    await _provider(client, admin_headers, stub, "stub")
    resp = await client.post("/v1/chat/completions", headers=user[1], json={
        "model": "stub-model", "messages": [{"role": "user", "content": ["hello"]}]})
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_value", "messages.0.content.0"), error
    assert "must be an object" in error["message"], error
    resp = await client.post("/v1/chat/completions", headers=user[1], json={
        "model": "stub-model", "messages": [{"role": "user", "content": 7}]})
    assert resp.json()["error"]["param"] == "messages.0.content", resp.text


async def _refused_naming(client: httpx.AsyncClient, headers: Headers, stub: StubServer,
                          change: dict[str, Any], param: str) -> dict[str, Any]:
    """A chat body with ``change`` is a 400 invalid_value naming ``param`` and reaches no
    provider; the body, for more."""
    body = {"model": "stub-model", "messages": [{"role": "user", "content": "x"}], **change}
    resp = await client.post("/v1/chat/completions", headers=headers, json=body)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_value", param), error
    assert stub.requests(path="/v1/chat/completions") == []
    return body


@pytest.mark.parametrize(("change", "param"), [
    ({"stream": "yes"}, "stream"), ({"stream": 1}, "stream"),
    ({"max_tokens": "8"}, "max_tokens"), ({"max_tokens": 8.0}, "max_tokens"),
    ({"n": True}, "n"), ({"temperature": "0.5"}, "temperature"), ({"top_p": True}, "top_p"),
    ({"messages": [{"role": "user", "content": None}]}, "messages.0.content"),
    ({"messages": [{"role": "user"}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": []}]}, "messages.0.content"),
    # A text part's text that is not a string (a null was the word "None" in the prompt).
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi "},
                                                {"type": "text", "text": None}]}]},
     "messages.0.content.1.text"),
    ({"messages": [{"role": "user", "content": [{"text": 5}]}]}, "messages.0.content.0.text"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None}]},
     "messages.1.content"),
    # The keys sent on to providers: "false" was read as true and sent on as the string.
    ({"logprobs": "false"}, "logprobs"), ({"logprobs": 1}, "logprobs"),
    ({"seed": "7"}, "seed"), ({"seed": 7.0}, "seed"), ({"top_logprobs": 21}, "top_logprobs"),
    ({"top_logprobs": "2"}, "top_logprobs"),
    ({"parallel_tool_calls": "false"}, "parallel_tool_calls"),
    ({"response_format": "json_object"}, "response_format"),
    ({"tool_choice": "requried"}, "tool_choice"), ({"tool_choice": 1}, "tool_choice"),
], ids=lambda v: str(v) if isinstance(v, str) else None)
async def test_a_loosely_typed_chat_body_is_refused_naming_the_field(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], change: dict[str, Any], param: str,
) -> None:
    """OpenAI types its body strictly: ``stream: "yes"`` is not true, ``max_tokens: "8"``
    not 8, and a message without content (other than an assistant turn carrying tool calls)
    or with an empty part list is refused.  Roost answers the same 400 invalid_value naming
    the field, and nothing reaches the provider (it read "yes" as a stream, stored null
    content and forwarded it)."""
    await _provider(client, admin_headers, stub, "stub")
    await _refused_naming(client, user[1], stub, change, param)


@pytest.mark.parametrize(("change", "param"), [
    ({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}},
     "modalities"),
    ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ({"modalities": "text"}, "modalities"),
])
async def test_an_audio_answer_is_refused_not_answered_in_text(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], change: dict[str, Any], param: str,
) -> None:
    """Answers are text only, so a user asking for audio (``modalities: ["text",
    "audio"]``, ``audio``) gets a 400 naming the key, as ``n: 2`` is refused; ``modalities:
    ["text"]`` is answered.  Before, both keys were dropped: a 200 text-only answer."""
    await _provider(client, admin_headers, stub, "stub")
    body = await _refused_naming(client, user[1], stub, change, param)
    text_only = await client.post("/v1/chat/completions", headers=user[1], json={
        **body, "modalities": ["text"], "audio": None})
    assert text_only.status_code == 200, text_only.text


async def test_an_assistant_turn_with_tool_calls_may_have_no_content(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers],
) -> None:
    """The one message OpenAI lets omit its content (``null``): an assistant turn that
    carries tool calls, followed by the tools' answers; temperature 1 (an integer) is a
    number, as in JSON."""
    await _provider(client, admin_headers, stub, "stub")
    resp = await client.post("/v1/chat/completions", headers=user[1], json={
        "model": "stub-model", "temperature": 1, "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]})
    assert resp.status_code == 200, resp.text
    assert len(stub.requests(path="/v1/chat/completions")) == 1


async def test_a_trailing_slash_is_a_404_in_openais_shape(
    user: tuple[uuid.UUID, Headers], client: httpx.AsyncClient,
) -> None:
    """POST /v1/chat/completions/ is a 404 naming the path without the slash, in OpenAI's
    shape, not a 307 redirect with an empty body."""
    for method, path in (("POST", "/v1/chat/completions/"), ("POST", "/v1/embeddings/"),
                         ("GET", "/v1/models/")):
        resp = await client.request(method, path, headers=user[1], json={})
        if path == "/v1/models/":  # the one model named "" (GET /v1/models/{model})
            assert resp.status_code == 404 and resp.json()["error"]["code"] == "model_not_found"
            continue
        assert resp.status_code == 404, resp.text
        error = resp.json()["error"]
        assert error["code"] == "not_found" and path.rstrip("/") + ")" in error["message"], error


def _nested(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = {"k": value}
    return value


@pytest.mark.parametrize(("field", "value"), [
    ("stop", ["a\u0000"]), ("stop", "\u0000"), ("response_format", {"type": "json\u0000"}),
    ("logit_bias", {"12\u0000": 1}), ("tool_choice", {"type": "function",
                                                      "function": {"name": "f\u0000"}}),
    ("response_format", _nested("bad\u0000", 40)), ("tool_choice", _nested(["x\u0000"], 90)),
    ("logit_bias", _nested({"k\u0000": 1}, 60)),
])
async def test_a_nul_in_a_stored_field_is_an_invalid_value_naming_it(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], field: str, value: Any,
) -> None:
    """A NUL in stop, response_format, logit_bias or tool_choice (kept with the request,
    where JSONB holds no NUL), at any depth the JSON parser accepts, is a 400
    invalid_value whose param names the field, as documented, not a bad_request without
    param."""
    await _provider(client, admin_headers, stub, "stub")
    resp = await client.post("/v1/chat/completions", headers=user[1], json={
        "model": "stub-model", "messages": [{"role": "user", "content": "x"}], field: value})
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["code"] == "invalid_value" and error["param"] == field, error
    assert stub.requests(path="/v1/chat/completions") == []


async def test_a_stream_broken_by_a_bug_still_ends_with_an_error_frame(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], database: Database, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever breaks a stream off (here the final write fails with an unexpected
    error), it ends with the error frame docs/chat.md promises and a failed request."""
    from roost.llm import calls

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(calls, "_store_success", broken)
    await _provider(client, admin_headers, stub, "stub")
    resp = await client.post("/v1/chat/completions", headers=user[1], json={
        "model": "stub-model", "messages": [{"role": "user", "content": "x"}], "stream": True})
    assert resp.status_code == 200, resp.text
    last = [line for line in resp.text.split("\n") if line.startswith("data: ")][-1]
    error = json.loads(last.removeprefix("data: "))["error"]
    assert error["code"] == "internal_error" and "boom" not in error["message"]
    async with database.transaction() as s:
        status: str = (await s.execute(text("SELECT status FROM llm_requests"))).scalar_one()
    assert status == "failed"


def sdk_headers(sdk: openai.AsyncOpenAI) -> Headers:
    return {"Authorization": f"Bearer {sdk.api_key}"}


ONE_TWO_THREE: Any = [{"role": "user", "content": "one two three"}]


async def _final(stream: openai.AsyncStream[Any]) -> Any:
    """The completion the SDK's stream helper assembles from the chunks."""
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    async for chunk in stream:
        state.handle_chunk(chunk)
    return state.get_final_completion()


async def test_logprobs_asked_for_are_returned_in_a_whole_answer(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers],
) -> None:
    """logprobs: true (passed to the provider, which answers them) gives the provider's
    choices[0].logprobs (docs/chat.md tells ensemble users to send it); not asked, null."""
    await _provider(client, admin_headers, stub, "stub")
    resp = await client.post("/v1/chat/completions", headers=user[1], json={
        "model": "stub-model", "messages": ONE_TWO_THREE, "logprobs": True, "top_logprobs": 2})
    assert resp.status_code == 200, resp.text
    assert stub.requests(path="/v1/chat/completions")[-1].body.get("logprobs") is True
    logprobs = resp.json()["choices"][0]["logprobs"]
    assert logprobs is not None and logprobs["content"][0]["token"] == "echo:", logprobs
    assert logprobs["content"][0]["logprob"] == pytest.approx(-0.05)
    plain = await client.post("/v1/chat/completions", headers=user[1], json={
        "model": "stub-model", "messages": ONE_TWO_THREE})
    assert plain.json()["choices"][0]["logprobs"] is None


async def test_logprobs_asked_for_are_returned_in_a_stream(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers],
) -> None:
    """Streamed with logprobs: true, each content chunk carries its tokens' logprobs."""
    await _provider(client, admin_headers, stub, "stub")
    resp = await client.post("/v1/chat/completions", headers=user[1], json={
        "model": "stub-model", "messages": ONE_TWO_THREE, "logprobs": True, "stream": True})
    frames = v1_frames(resp.text)[:-1]
    content = [f for f in frames if f["choices"][0]["delta"].get("content")]
    assert content and all(f["choices"][0]["logprobs"] is not None for f in content), content
    tokens = [t["token"] for f in content for t in f["choices"][0]["logprobs"]["content"]]
    assert "".join(tokens) == "".join(f["choices"][0]["delta"]["content"] for f in content)


async def test_a_streamed_tool_call_without_arguments_has_arguments_text(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    sdk: openai.AsyncOpenAI,
) -> None:
    """A tool call whose arguments are empty has function.arguments "{}" once the SDK
    assembled the stream, as in the whole answer, not None (json.loads fails on it in
    every tool loop)."""
    await _provider(client, admin_headers, stub, "stub")
    stub.script(ToolCalls(Call("now", "")), ToolCalls(Call("now", "")))
    final = await _final(await sdk.chat.completions.create(
        model="stub-model", messages=ONE_TWO_THREE, stream=True))
    calls = final.choices[0].message.tool_calls
    assert calls is not None and calls[0].function.name == "now"
    assert calls[0].function.arguments == "{}", calls[0].function
    whole = await sdk.chat.completions.create(model="stub-model", messages=ONE_TWO_THREE)
    assert whole.choices[0].message.tool_calls is not None
    assert whole.choices[0].message.tool_calls[0].function.arguments == "{}"


async def test_a_streamed_ensemble_answer_keeps_its_tool_calls(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, stub_b: StubServer,
    sdk: openai.AsyncOpenAI,
) -> None:
    """An ensemble answer that calls a tool streams its tool_calls (as the whole answer
    has them), not just finish_reason "tool_calls" with no call in it."""
    await _provider(client, admin_headers, stub, "a")
    await _provider(client, admin_headers, stub_b, "b")
    for server in (stub, stub_b):
        server.script(ToolCalls(Call("lookup", {"q": 1})))
    final = await _final(await sdk.chat.completions.create(
        model="stub-model", messages=ONE_TWO_THREE, stream=True,
        extra_body={"ensemble": {"strategy": "weighted_vote"}}))
    assert final.choices[0].finish_reason == "tool_calls"
    calls = final.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "lookup" and calls[0].id, final.choices[0]
    assert json.loads(calls[0].function.arguments) == {"q": 1}


async def test_stream_options_without_a_stream_is_refused_as_openai_does(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers],
) -> None:
    """``stream_options`` on a whole (not streamed) answer is a 400 naming the key, as
    OpenAI answers (the client waits for a usage chunk that never comes); it was ignored.
    With ``stream: true`` it is answered, as is ``stream_options: null``."""
    await _provider(client, admin_headers, stub, "stub")
    body = await _refused_naming(client, user[1], stub,
                                 {"stream_options": {"include_usage": True}}, "stream_options")
    whole = await client.post("/v1/chat/completions", headers=user[1],
                              json={**body, "stream_options": None})
    assert whole.status_code == 200, whole.text
    streamed = await client.post("/v1/chat/completions", headers=user[1],
                                 json={**body, "stream": True})
    assert streamed.status_code == 200, streamed.text
    assert streamed.text.rstrip().endswith("data: [DONE]")

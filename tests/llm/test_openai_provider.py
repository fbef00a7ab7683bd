"""OpenAICompatibleProvider against the stub server running as a real process."""

from __future__ import annotations

import functools
import gzip
import json
import socket
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable

import h11
import httpx
import pytest

from roost.errors import BadGateway, GatewayTimeout
from roost.llm import (
    AnthropicProvider,
    ChatMessage,
    ChatRequest,
    OpenAICompatibleProvider,
    ProviderAuthError,
    ProviderBadResponse,
    ProviderModelMissing,
    ProviderRequestError,
    ProviderTimeout,
    ProviderUnavailable,
    StreamAccumulator,
    create_provider,
)
from roost.llm.base import MAX_TOKEN_COUNT, token_count
from tests.support.openai_stub import (
    Call,
    Drop,
    Fail,
    Hang,
    Junk,
    Models,
    Reply,
    Step,
    StubServer,
    ToolCalls,
    embedding_for,
)


def req(text: str = "hello world", **kw: object) -> ChatRequest:
    return ChatRequest.model_validate(
        {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]} | kw
    )


@pytest.fixture
async def provider(stub: StubServer) -> AsyncIterator[OpenAICompatibleProvider]:
    async with OpenAICompatibleProvider(
        stub.base_url, api_key="sk-test", default_model="m-main", timeout=5
    ) as p:
        yield p


async def test_chat_echoes_and_counts_tokens(provider: OpenAICompatibleProvider) -> None:
    result = await provider.chat(req("what is up"))
    assert result.content == "echo: what is up (model m-main)"
    assert result.finish_reason == "stop"
    assert result.model == "m-main"
    assert result.tokens_in == 5  # "be brief" + "what is up"
    assert result.tokens_out == 6
    assert result.tokens_total == 11
    assert result.latency_ms >= 0
    assert result.raw["object"] == "chat.completion"


async def test_request_model_overrides_default(provider: OpenAICompatibleProvider, stub: StubServer) -> None:
    stub.script(Reply("from other", model="other"))
    result = await provider.chat(req(model="other"))
    assert result.content == "from other"
    sent = stub.requests()[-1]
    assert sent.model == "other"
    assert sent.api_key == "sk-test"
    assert sent.body["messages"][0] == {"role": "system", "content": "be brief"}


async def test_sampling_params_and_extra_are_sent(
    provider: OpenAICompatibleProvider, stub: StubServer
) -> None:
    await provider.chat(req(temperature=0.2, max_tokens=7, top_p=0.9, stop=["\n"], extra={"seed": 3}))
    body = stub.requests()[-1].body
    assert body["temperature"] == 0.2
    assert body["max_tokens"] == 7
    assert body["top_p"] == 0.9
    assert body["stop"] == ["\n"]
    assert body["seed"] == 3
    assert "tools" not in body


async def test_stream_reassembles_to_the_plain_answer(
    provider: OpenAICompatibleProvider,
) -> None:
    plain = await provider.chat(req("one two three four"))
    chunks = [c async for c in provider.stream_chat(req("one two three four"))]
    assert len(chunks) > 3  # really streamed, piece by piece
    acc = StreamAccumulator().extend(chunks)
    assert acc.content == plain.content
    assert acc.finish_reason == "stop"
    assert (acc.tokens_in, acc.tokens_out) == (plain.tokens_in, plain.tokens_out)
    assert acc.result().model == "m-main"


async def test_streamed_calls_reuse_one_connection(
    provider: OpenAICompatibleProvider, stub: StubServer,
) -> None:
    """A stream read to its end gives its connection back: the next call (streamed or
    not) goes over the same one, with no new TCP (and, for real providers, TLS) handshake."""
    for _ in range(3):
        assert [c async for c in provider.stream_chat(req("one two three"))]
    await provider.chat(req("one two three"))
    ports = {s.client_port for s in stub.requests("/v1/chat/completions")}
    assert len(ports) == 1 and None not in ports


async def test_stream_without_usage_option(stub: StubServer) -> None:
    async with OpenAICompatibleProvider(stub.base_url, default_model="m", stream_usage=False) as p:
        chunks = [c async for c in p.stream_chat(req("a b"))]
    assert "stream_options" not in stub.requests()[-1].body
    assert StreamAccumulator().extend(chunks).content == "echo: a b (model m)"
    assert all(c.tokens_in is None for c in chunks)


async def test_tool_calls_plain_and_streamed(provider: OpenAICompatibleProvider, stub: StubServer) -> None:
    stub.script(ToolCalls(Call("get_weather", {"city": "Oslo"}), times=2))
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    result = await provider.chat(req(tools=tools))
    assert result.finish_reason == "tool_calls"
    assert [(t.name, t.arguments) for t in result.tool_calls] == [("get_weather", '{"city": "Oslo"}')]
    acc = StreamAccumulator().extend([c async for c in provider.stream_chat(req(tools=tools))])
    streamed = acc.result()
    assert streamed.finish_reason == "tool_calls"
    assert streamed.tool_calls == result.tool_calls


async def test_logprobs_are_parsed(provider: OpenAICompatibleProvider, stub: StubServer) -> None:
    stub.script(Reply(logprob=-0.5))
    result = await provider.chat(req("x", extra={"logprobs": True}))
    assert result.logprobs is not None
    assert set(result.logprobs) == {-0.5}
    assert len(result.logprobs) == result.tokens_out


async def test_embeddings_are_deterministic(provider: OpenAICompatibleProvider) -> None:
    texts = ["alpha", "beta gamma", "alpha"]
    out = await provider.embed(texts, model="embed-small")
    assert out.dimensions == 8
    assert out.vectors[0] == pytest.approx(embedding_for("alpha", 8))
    assert out.vectors[0] == out.vectors[2]
    assert out.vectors[0] != out.vectors[1]
    assert out.tokens_in == 4
    assert out.model == "embed-small"
    wide = await provider.embed(["alpha"], model="embed-small", dimensions=32)
    assert wide.dimensions == 32
    assert (await provider.embed([])).vectors == []


async def test_list_models_and_health(provider: OpenAICompatibleProvider, stub: StubServer) -> None:
    stub.script(Models(["stub-model", "extra-model"]))
    assert await provider.list_models() == ["stub-model", "extra-model"]
    health = await provider.health()
    assert health.ok and health.error is None and health.status == "healthy"
    stub.script(Fail(503))
    health = await provider.health()
    assert not health.ok and health.status == "unhealthy"
    assert health.error is not None and "503" in health.error


@pytest.mark.parametrize("status", [500, 502, 503, 429, 408])
async def test_server_errors_are_retryable(
    provider: OpenAICompatibleProvider, stub: StubServer, status: int
) -> None:
    stub.script(Fail(status))
    with pytest.raises(ProviderUnavailable) as info:
        await provider.chat(req())
    assert info.value.retryable and info.value.upstream_status == status
    assert isinstance(info.value, BadGateway)
    assert "stub injected failure" in info.value.detail
    # Fail(status) answers one request: the next one succeeds again
    assert (await provider.chat(req())).content.startswith("echo:")


@pytest.mark.parametrize("status", [400, 422])
async def test_client_errors_are_not_retryable(
    provider: OpenAICompatibleProvider, stub: StubServer, status: int
) -> None:
    stub.script(Fail(status, times=None))
    with pytest.raises(ProviderRequestError) as info:
        await provider.chat(req())
    assert not info.value.retryable and info.value.upstream_status == status


@pytest.mark.parametrize(("status", "error"), [
    (401, ProviderAuthError), (403, ProviderAuthError), (404, ProviderModelMissing)])
async def test_a_refused_key_or_a_missing_model_is_retryable(
    provider: OpenAICompatibleProvider, stub: StubServer, status: int, error: type[Exception]
) -> None:
    """401/403 (Roost's key) and 404 (the model is not there) are the provider's side, not
    the request's: another provider may answer."""
    stub.script(Fail(status, times=None))
    with pytest.raises(error) as info:
        await provider.chat(req())
    assert info.value.retryable and info.value.upstream_status == status  # type: ignore[attr-defined]


@pytest.mark.parametrize(("step", "error"), [
    (Fail(503, times=None), ProviderUnavailable),
    (Fail(400), ProviderRequestError),
    (Junk("stream", times=None), ProviderBadResponse),
], ids=["503", "400", "junk"])
async def test_stream_failures_are_mapped(
    provider: OpenAICompatibleProvider, stub: StubServer, step: Step, error: type[Exception]
) -> None:
    stub.script(step)
    with pytest.raises(error):
        [c async for c in provider.stream_chat(req())]


@pytest.mark.parametrize("junk", ["text", "shape"])
async def test_junk_answers_are_bad_responses(
    provider: OpenAICompatibleProvider, stub: StubServer, junk: str
) -> None:
    stub.script(Junk(junk, times=None))
    with pytest.raises(ProviderBadResponse) as info:
        await provider.chat(req())
    assert info.value.retryable
    with pytest.raises(ProviderBadResponse):
        await provider.list_models()
    with pytest.raises(ProviderBadResponse):
        await provider.embed(["x"])


async def test_bad_response_retryability_is_configurable(stub: StubServer) -> None:
    stub.script(Junk("shape", times=None))
    async with OpenAICompatibleProvider(stub.base_url, default_model="m", retry_bad_response=False) as p:
        with pytest.raises(ProviderBadResponse) as info:
            await p.chat(req())
    assert info.value.retryable is False


async def test_stream_dropped_midway_is_unavailable(
    provider: OpenAICompatibleProvider, stub: StubServer
) -> None:
    stub.script(Drop(after=2))
    got: list[str] = []
    with pytest.raises(ProviderUnavailable):
        async for chunk in provider.stream_chat(req("a b c d e f")):
            got.append(chunk.delta)
    assert "".join(got) == "echo: a "


async def test_hang_times_out(stub: StubServer) -> None:
    stub.script(Hang(times=None))
    async with OpenAICompatibleProvider(stub.base_url, default_model="m", timeout=0.3) as p:
        with pytest.raises(ProviderTimeout) as info:
            await p.chat(req())
        assert info.value.retryable
        assert isinstance(info.value, GatewayTimeout | BadGateway)
        assert info.value.status == 504
        health = await p.health()
        assert not health.ok


async def test_connection_refused_is_unavailable() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with OpenAICompatibleProvider(f"http://127.0.0.1:{port}/v1", default_model="m") as p:
        with pytest.raises(ProviderUnavailable) as info:
            await p.chat(req())
    assert info.value.retryable and info.value.upstream_status is None


async def test_api_key_never_leaks(stub: StubServer) -> None:
    secret = "sk-very-secret-key-0123456789"
    stub.script(Fail(401, "Incorrect API key provided: sk-ve...89", times=None))
    async with OpenAICompatibleProvider(stub.base_url, api_key=secret, default_model="m") as p:
        assert secret not in repr(p)
        with pytest.raises(ProviderAuthError) as info:
            await p.chat(req())
        assert info.value.upstream_status == 401
        assert secret not in str(info.value) and secret not in info.value.detail
        health = await p.health()
        assert health.error is not None and secret not in health.error


async def test_no_model_anywhere_is_a_request_error(stub: StubServer) -> None:
    async with OpenAICompatibleProvider(stub.base_url) as p:
        with pytest.raises(ProviderRequestError):
            await p.chat(req())


async def test_multimodal_and_tool_messages_pass_through(
    provider: OpenAICompatibleProvider, stub: StubServer
) -> None:
    request = ChatRequest(
        messages=[
            ChatMessage(role="user", content=[{"type": "text", "text": "look"}]),
            ChatMessage(
                role="assistant",
                tool_calls=[{"id": "c1", "name": "f", "arguments": "{}"}],
            ),
            ChatMessage(role="tool", tool_call_id="c1", content="42"),
            ChatMessage(role="user", content="and now?"),
        ]
    )
    result = await provider.chat(request)
    assert result.content == "echo: and now? (model m-main)"
    sent = stub.requests()[-1].body["messages"]
    assert sent[1]["tool_calls"][0]["function"] == {"name": "f", "arguments": "{}"}
    assert sent[2] == {"role": "tool", "content": "42", "tool_call_id": "c1"}


@pytest.mark.parametrize(("kind", "cls"), [("vllm", OpenAICompatibleProvider),
                                           ("anthropic", AnthropicProvider)])
async def test_factory_builds_providers(stub: StubServer, kind: str, cls: type) -> None:
    p = create_provider(kind, name="gpu-box", base_url=stub.base_url, api_key="k", model="m-f",
                        config={"timeout": 3})
    assert isinstance(p, cls) and p.name == "gpu-box"
    try:
        assert (await p.chat(req("z"))).content == "echo: z (model m-f)"
    finally:
        await p.aclose()
    with pytest.raises(ProviderRequestError):
        create_provider("carrier-pigeon")


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_header_values_that_cannot_be_sent_are_clear_provider_errors(
    stub: StubServer, kind: str
) -> None:
    with pytest.raises(ProviderRequestError, match="API key is not a valid HTTP header value"):
        create_provider(kind, base_url=stub.base_url, api_key="sk-ключ", model="m")
    with pytest.raises(ProviderRequestError, match="not a valid HTTP header value"):
        create_provider(kind, base_url=stub.base_url, model="m",
                        config={"extra_headers": {"X-Team": "équipe"}})
    # Whatever slips past construction fails before httpx, as a provider error.
    provider = create_provider(kind, base_url=stub.base_url, api_key="sk-ok", model="m")
    try:
        provider._api_key = "sk-\u043a\u043b\u044e\u0447"  # type: ignore[attr-defined]
        health = await provider.health()
        assert not health.ok and health.error is not None and "\u043a" not in health.error
        with pytest.raises(ProviderRequestError, match="set the key again"):
            await provider.chat(req())
    finally:
        await provider.aclose()


class _Pieces(httpx.AsyncByteStream):
    """A response body arriving in the given pieces."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece


def _answering(handler: Callable[[httpx.Request], httpx.Response]) -> OpenAICompatibleProvider:
    """A provider whose HTTP client answers in process (no socket is opened)."""
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return OpenAICompatibleProvider("http://127.0.0.1:9/v1", client=client, default_model="m",
                                    max_answer_bytes=4096)


def _sse(pieces: list[bytes]) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=_Pieces(pieces))


async def test_stream_lines_are_split_across_pieces_and_line_endings() -> None:
    """Events split anywhere (inside a CRLF too) and ended by CRLF, CR or LF read back
    whole: Roost splits the stream's lines itself, to bound them."""
    first = json.dumps({"choices": [{"index": 0, "delta": {"content": "he"}}]}).encode()
    second = json.dumps({"choices": [{"index": 0, "delta": {"content": "llo"},
                                      "finish_reason": "stop"}]}).encode()
    body = b"data: " + first + b"\r\n\r\ndata: " + second + b"\r\rdata: [DONE]\n\n"
    cut = body.index(b"\r\n") + 1  # between the CR and the LF
    pieces = [body[:10], body[10:cut], body[cut:cut + 3], body[cut + 3:]]
    async with _answering(_sse(pieces)) as provider:
        chunks = [c async for c in provider.stream_chat(req())]
    assert "".join(c.delta for c in chunks) == "hello"
    assert chunks[-1].finish_reason == "stop"


async def test_a_stream_line_longer_than_the_answer_limit_is_a_bad_response() -> None:
    """A line that never ends is not held without bound."""
    async with _answering(_sse([b"data: " + b"x" * 3000] * 3)) as provider:
        with pytest.raises(ProviderBadResponse, match="longer than 4096"):
            [c async for c in provider.stream_chat(req())]


async def test_a_request_httpx_cannot_write_is_an_unavailable_provider() -> None:
    """h11 refusing to write a request (a framing header that slipped past the checks)
    is a provider error (502, fallback), not a 500."""
    def refuse(request: httpx.Request) -> httpx.Response:
        raise h11.LocalProtocolError("Too much data for declared Content-Length")

    async with _answering(refuse) as provider:
        with pytest.raises(ProviderUnavailable, match="could not be written"):
            await provider.chat(req())
        with pytest.raises(ProviderUnavailable, match="could not be written"):
            [c async for c in provider.stream_chat(req())]


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
@pytest.mark.parametrize("url", ["http://169.254.169.254/v1", "http://[::ffff:169.254.169.254]/v1",
                                 "http://[fe80::1]/v1"])
def test_a_provider_at_a_link_local_address_is_not_built(kind: str, url: str) -> None:
    """A row stored with a link-local base_url before the check cannot become a provider
    (built only: nothing is sent)."""
    with pytest.raises(ProviderRequestError, match="link-local"):
        create_provider(kind, base_url=url, model="m")


def test_token_counts_are_kept_within_bounds() -> None:
    assert [token_count(v) for v in (None, "", 0, 7, "7", 7.9, -5)] == [0, 0, 0, 7, 7, 7, 0]
    assert token_count(10**12) == MAX_TOKEN_COUNT
    for bad in (float("inf"), float("nan"), "many"):
        with pytest.raises((ValueError, OverflowError)):
            token_count(bad)


# --------------------------------------------------------------------------- content codings

MB = 1024 * 1024
BOMB_SIZE = 128 * MB  # what a bomb decodes to
PEAK_AT_MOST = 64 * MB  # a 4 KiB answer limit must not cost the bomb's size


@functools.cache
def _gzip_zeros(total: int, stacked: bool) -> bytes:
    """``total`` zero bytes gzipped (~130 KB for 128 MiB), gzipped again when ``stacked``
    (~300 bytes)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [comp.compress(bytes(MB)) for _ in range(total // MB)]
    out.append(comp.flush())
    return gzip.compress(b"".join(out), 9) if stacked else b"".join(out)


def _encoded(coding: str, body: bytes, status: int = 200,
             ctype: str = "application/json") -> Callable[[httpx.Request], httpx.Response]:
    """An answer whose body comes as from the network (raw, not read yet)."""
    return lambda request: httpx.Response(status, stream=_Pieces([body]), headers={
        "content-type": ctype, "content-encoding": coding})


async def _peak_of(work: Callable[[], Awaitable[object]]) -> int:
    tracemalloc.start()
    try:
        await work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("coding", ["gzip", "gzip, gzip"])
@pytest.mark.parametrize("status", [200, 500])
async def test_a_compressed_answer_is_capped_by_its_decoded_size_holding_about_the_cap(
    coding: str, status: int
) -> None:
    """A small compressed answer decoding to 128 MiB stops at the answer limit (or, for
    an error answer, at the part of it that is read) without being decoded whole: httpx
    decodes each network chunk whole."""
    bomb = _gzip_zeros(BOMB_SIZE, coding == "gzip, gzip")
    expected = ProviderBadResponse if status == 200 else ProviderUnavailable

    async def work() -> None:
        async with _answering(_encoded(coding, bomb, status)) as provider:
            with pytest.raises(expected, match="larger than 4096" if status == 200 else "500"):
                await provider.list_models()

    peak = await _peak_of(work)
    assert peak < PEAK_AT_MOST, f"{len(bomb)} bytes of {coding!r} held {peak // MB} MiB"


async def test_a_compressed_stream_is_capped_by_its_decoded_size_holding_about_the_cap() -> None:
    bomb = _gzip_zeros(BOMB_SIZE, True)

    async def work() -> None:
        async with _answering(_encoded("gzip, gzip", bomb, ctype="text/event-stream")) as provider:
            with pytest.raises(ProviderBadResponse, match="longer than 4096"):
                [c async for c in provider.stream_chat(req())]

    peak = await _peak_of(work)
    assert peak < PEAK_AT_MOST, f"a {len(bomb)} byte stream held {peak // MB} MiB"


async def test_compressed_answers_in_the_codings_roost_asks_for_are_read() -> None:
    answer = json.dumps({"object": "list", "data": [{"id": "m-1"}]}).encode()
    async with _answering(_encoded("deflate, gzip", gzip.compress(zlib.compress(answer)))) as p:
        assert await p.list_models() == ["m-1"]
    event = json.dumps({"choices": [{"index": 0, "delta": {"content": "zipped"},
                                     "finish_reason": "stop"}]})
    stream = gzip.compress(f"data: {event}\n\ndata: [DONE]\n\n".encode())
    async with _answering(_encoded("gzip", stream, ctype="text/event-stream")) as p:
        assert "".join([c.delta async for c in p.stream_chat(req())]) == "zipped"


@pytest.mark.parametrize("coding", ["zstd", "br"])
async def test_an_answer_in_a_coding_roost_did_not_ask_for_is_a_bad_response(coding: str) -> None:
    async with _answering(_encoded(coding, b"\x28\xb5\x2f\xfd compressed")) as provider:
        with pytest.raises(ProviderBadResponse, match=f"'{coding}', which Roost did not ask for"):
            await provider.list_models()
        with pytest.raises(ProviderBadResponse, match=f"'{coding}', which Roost did not ask for"):
            [c async for c in provider.stream_chat(req())]


async def test_a_provider_asks_only_for_the_codings_it_decodes() -> None:
    """httpx would also offer zstd (and br) when their packages are installed."""
    async with OpenAICompatibleProvider("http://127.0.0.1:9/v1") as provider:
        assert provider._client.headers["accept-encoding"] == "gzip, deflate"

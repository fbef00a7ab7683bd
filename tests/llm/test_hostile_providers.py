"""Misbehaving providers behind the gateway: junk a provider answers (odd characters,
impossible numbers, values too long to store, endless streams) is the provider's fault, a
502/504 with the request recorded ``failed``, or fitted and kept; never a 500, never a
400 blaming the caller, never a request left ``running``.

The providers are tiny scripted HTTP servers on 127.0.0.1 (``RawServer``)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from roost.config import Settings
from roost.db.engine import Database
from roost.llm.types import ChatChunk, StreamAccumulator, ToolCallDelta
from tests.llm.sse import v1_frames
from tests.support.identity import make_user

Headers = dict[str, str]
Handler = Callable[[str, bytes, asyncio.StreamWriter], Awaitable[None]]
CHAT: dict[str, Any] = {"model": "raw-model",
                        "messages": [{"role": "user", "content": "hello"}]}
STREAM_MAX_S = 3.0
MAX_ANSWER_BYTES = 4096


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", llm_timeout_s=1.5, llm_local_model=False,
                    llm_stream_max_s=STREAM_MAX_S, llm_max_answer_bytes=MAX_ANSWER_BYTES,
                    chat_max_message_chars=1000, max_request_bytes=256 * 1024)


@pytest.fixture
async def user(database: Database) -> tuple[uuid.UUID, Headers]:
    return await make_user(database)


class RawServer:
    """A tiny HTTP/1.1 server on 127.0.0.1 whose every answer is written by ``handler``."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.server: asyncio.Server | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            body = await reader.readexactly(length) if length else b""
            await self.handler(lines[0].split(" ")[1], body, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


def json_answer(payload: Any, status: int = 200, *, raw: bytes | None = None) -> Handler:
    async def handler(path: str, body: bytes, writer: asyncio.StreamWriter) -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        writer.write(f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
                     f"content-length: {len(data)}\r\nconnection: close\r\n\r\n".encode() + data)
        await writer.drain()
    return handler


def sse_answer(events: list[str], *,
               then: Callable[[asyncio.StreamWriter], Awaitable[None]] | None = None) -> Handler:
    async def handler(path: str, body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"connection: close\r\n\r\n")
        for event in events:
            writer.write(event.encode())
            await writer.drain()
        if then is not None:
            await then(writer)
    return handler


def chat_payload(content: Any = "hi", **over: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": "x", "object": "chat.completion", "model": "raw-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2},
    }
    payload.update(over)
    return payload


def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    obj = {"id": "x", "object": "chat.completion.chunk", "model": "raw-model",
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(obj)}\n\n"


async def register(client: httpx.AsyncClient, admin: Headers, base_url: str, name: str = "raw",
                   **fields: Any) -> str:
    body = {"name": name, "type": "openai", "base_url": base_url, "model": "raw-model", **fields}
    resp = await client.post("/api/v1/llm/providers", json=body, headers=admin)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


async def requests(database: Database) -> list[tuple[str, str | None]]:
    """Every llm_requests row's (status, error_message), oldest first."""
    async with database.transaction() as s:
        rows = (await s.execute(text(
            "SELECT status, error_message FROM llm_requests ORDER BY created_at"))).all()
    return [(str(row.status), row.error_message) for row in rows]


async def statuses(database: Database) -> list[str]:
    return [status for status, _ in await requests(database)]


async def post(client: httpx.AsyncClient, url: str, body: Any, headers: Headers) -> tuple[int, str]:
    """(status, body); an exception escaping the app (an answer that could not even be
    rendered) counts as the 500 a real server would send."""
    try:
        resp = await client.post(url, json=body, headers=headers)
    except Exception as exc:
        return 500, repr(exc)[:300]
    return resp.status_code, resp.text


# --------------------------------------------------------------------------- whole answers


async def test_an_answer_with_a_lone_surrogate_is_a_502_and_a_failed_request(
    client: httpx.AsyncClient, admin_headers: Headers, user: tuple[uuid.UUID, Headers],
    database: Database,
) -> None:
    """Answer text with a lone surrogate (it can be neither stored nor sent on) is a
    malformed answer: 502 and the request failed, not a 500 with it left running."""
    async with RawServer(json_answer(chat_payload("bad \ud800 text"))) as server:
        await register(client, admin_headers, server.base_url)
        status, body = await post(client, "/v1/chat/completions", CHAT, user[1])
    assert status == 502, body
    assert "surrogate" in json.loads(body)["error"]["message"]
    assert await statuses(database) == ["failed"]


DEEP = 1500  # arrays nested this deep (3 KB): json.loads raises RecursionError, no ValueError


async def test_an_answer_nested_too_deep_is_a_502(
    client: httpx.AsyncClient, admin_headers: Headers, user: tuple[uuid.UUID, Headers],
    database: Database,
) -> None:
    """JSON nested 1,500 deep, under the answer limit: a malformed answer like any other
    junk, a 502 and a failed request.  json.loads raised RecursionError, not a
    ValueError: a 500, and no other provider tried."""
    whole = b'{"choices": ' + b"[" * DEEP + b"]" * DEEP + b"}"
    async with RawServer(json_answer(None, raw=whole)) as server:
        await register(client, admin_headers, server.base_url)
        status, body = await post(client, "/v1/chat/completions", CHAT, user[1])
    assert (status, await statuses(database)) == (502, ["failed"]), body


async def test_a_stream_whose_first_event_is_nested_too_deep_is_a_502(
    client: httpx.AsyncClient, admin_headers: Headers, user: tuple[uuid.UUID, Headers],
    database: Database,
) -> None:
    """The same as a stream's first event (before any chunk reached the client)."""
    event = '{"x": ' + "[" * DEEP + "]" * DEEP + "}"
    async with RawServer(sse_answer([f"data: {event}\n\n"])) as server:
        await register(client, admin_headers, server.base_url)
        status, body = await post(client, "/v1/chat/completions", {**CHAT, "stream": True},
                                  user[1])
    if status == 200:
        assert v1_frames(body)[-1]["error"]["code"] == "provider_error", body
    else:
        assert status == 502, body
    assert await statuses(database) == ["failed"], body


async def test_an_anthropic_answer_with_a_lone_surrogate_is_a_502(
    client: httpx.AsyncClient, admin_headers: Headers, user: tuple[uuid.UUID, Headers],
    database: Database,
) -> None:
    """The same from an Anthropic-typed provider (its own answer parser)."""
    answer = {"type": "message", "model": "raw-model", "stop_reason": "end_turn",
              "content": [{"type": "text", "text": "bad \ud800"}],
              "usage": {"input_tokens": 3, "output_tokens": 2}}
    async with RawServer(json_answer(answer)) as server:
        await register(client, admin_headers, server.base_url, type="anthropic")
        status, body = await post(client, "/v1/chat/completions", CHAT, user[1])
    assert status == 502, body
    assert await statuses(database) == ["failed"]


async def test_an_infinite_usage_is_a_502(
    client: httpx.AsyncClient, admin_headers: Headers, user: tuple[uuid.UUID, Headers],
    database: Database,
) -> None:
    """A token count of 1e999 (infinity) is a malformed answer: 502, not 500."""
    usage = {"prompt_tokens": 1e999, "completion_tokens": 1}
    async with RawServer(json_answer(chat_payload("ok", usage=usage))) as server:
        await register(client, admin_headers, server.base_url)
        status, body = await post(client, "/v1/chat/completions", CHAT, user[1])
    assert status == 502, body
    assert await statuses(database) == ["failed"]


@pytest.mark.parametrize(("payload", "check"), [
    (chat_payload("ok", usage={"prompt_tokens": 3_000_000_000, "completion_tokens": 1}),
     lambda answer: answer["usage"]["prompt_tokens"] == 1_000_000_000),
    (chat_payload("ok", model="m" * 400),
     lambda answer: answer["model"] == "m" * 255),
    ({**chat_payload("ok"), "choices": [{"index": 0, "finish_reason": "f" * 80,
                                         "message": {"role": "assistant", "content": "ok"}}]},
     lambda answer: answer["choices"][0]["finish_reason"] == "f" * 50),
    (chat_payload("ok", id="a\u0000b", model="raw\u0000model"),
     lambda answer: answer["model"] == "rawmodel"),
], ids=["tokens-over-int4", "model-over-255", "finish-reason-over-50", "nul-in-raw-response"])
async def test_answer_values_too_big_for_their_columns_are_fitted_and_kept(
    client: httpx.AsyncClient, admin_headers: Headers, user: tuple[uuid.UUID, Headers],
    database: Database, payload: dict[str, Any], check: Callable[[dict[str, Any]], bool],
) -> None:
    """Token counts past a PostgreSQL integer, a model name or finish reason longer than
    its column, a NUL in the raw answer: fitted (clamped, cut, dropped) and the answer
    kept, not the caller's 400 with the request left running."""
    async with RawServer(json_answer(payload)) as server:
        await register(client, admin_headers, server.base_url)
        status, body = await post(client, "/v1/chat/completions", CHAT, user[1])
    assert status == 200, body
    assert check(json.loads(body)), body
    assert await statuses(database) == ["completed"]


async def test_negative_usage_counts_as_none(
    client: httpx.AsyncClient, admin_headers: Headers, user: tuple[uuid.UUID, Headers],
    database: Database,
) -> None:
    """A negative token count is no count, not the caller's 422 (the price of the call
    would be negative)."""
    payload = chat_payload("", usage={"prompt_tokens": 10, "completion_tokens": -1_000_000})
    async with RawServer(json_answer(payload)) as server:
        await register(client, admin_headers, server.base_url)
        status, body = await post(client, "/v1/chat/completions", CHAT, user[1])
    assert status == 200, body
    assert json.loads(body)["usage"] == {"prompt_tokens": 10, "completion_tokens": 0,
                                         "total_tokens": 10}
    assert await statuses(database) == ["completed"]


async def test_an_answer_larger_than_the_limit_is_a_502(
    client: httpx.AsyncClient, admin_headers: Headers, user: tuple[uuid.UUID, Headers],
    database: Database,
) -> None:
    """A whole answer past ROOST_LLM_MAX_ANSWER_BYTES is not read to its end: 502."""
    async with RawServer(json_answer(chat_payload("x" * (MAX_ANSWER_BYTES + 1)))) as server:
        await register(client, admin_headers, server.base_url)
        status, body = await post(client, "/v1/chat/completions", CHAT, user[1])
    assert status == 502, body
    assert "ROOST_LLM_MAX_ANSWER_BYTES" in json.loads(body)["error"]["message"]
    assert await statuses(database) == ["failed"]


async def test_a_value_the_database_still_refuses_is_a_502_not_the_callers_400(
    client: httpx.AsyncClient, admin_headers: Headers, user: tuple[uuid.UUID, Headers],
    database: Database, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Should an answer value slip past the fitting, the database's refusal (SQLSTATE
    class 22) is the provider's fault: 502, the request failed."""
    from roost.llm import records
    monkeypatch.setattr(records, "fit_result", lambda result: result)
    async with RawServer(json_answer(chat_payload("ok", model="m" * 400))) as server:
        await register(client, admin_headers, server.base_url)
        status, body = await post(client, "/v1/chat/completions", CHAT, user[1])
    assert status == 502, body
    assert "could not be stored" in json.loads(body)["error"]["message"]
    assert await statuses(database) == ["failed"]


# --------------------------------------------------------------------------- embeddings


@pytest.mark.parametrize("raw", [
    b'{"data": [{"index": 0, "embedding": [NaN, Infinity, 1.0]}], "model": "raw-model"}',
    b'{"data": [{"index": 1e999, "embedding": [1.0]}], "model": "raw-model"}',
], ids=["nan-in-vector", "infinite-index"])
async def test_embeddings_with_numbers_that_are_not_finite_are_a_502(
    client: httpx.AsyncClient, admin_headers: Headers, user: tuple[uuid.UUID, Headers],
    database: Database, raw: bytes,
) -> None:
    """NaN or Infinity in a vector (JSON cannot carry them on) or an index of 1e999 is a
    malformed answer: 502, not a 500."""
    async with RawServer(json_answer(None, raw=raw)) as server:
        await register(client, admin_headers, server.base_url)
        status, body = await post(client, "/v1/embeddings", {"model": "raw-model", "input": "x"},
                                  user[1])
    assert status == 502, body
    assert await statuses(database) == ["failed"]


def _vectors(*items: tuple[Any, list[float]]) -> bytes:
    """An embeddings answer of (index, vector) items."""
    return json.dumps({"data": [{"index": i, "embedding": v} for i, v in items],
                       "model": "raw-model"}).encode()


@pytest.mark.parametrize(("raw", "body"), [
    (_vectors((0, [1.0, 0.0]), (0, [0.0, 1.0])), {"input": ["a", "b"]}),
    (_vectors((0, [1.0, 0.0]), (2, [0.0, 1.0])), {"input": ["a", "b"]}),
    (_vectors((-1, [1.0, 0.0]), (0, [0.0, 1.0])), {"input": ["a", "b"]}),
    (_vectors((0.5, [1.0, 0.0]), (1, [0.0, 1.0])), {"input": ["a", "b"]}),
    (_vectors((0, [])), {"input": "a"}),
    (_vectors((0, [1.0]), (1, [2.0, 3.0])), {"input": ["a", "b"]}),
    (_vectors((0, [1.0, 2.0])), {"input": "a", "dimensions": 3}),
    (_vectors((0, [1e39, 1.0])), {"input": "a", "encoding_format": "base64"}),
    (_vectors((0, [-1e39, 1.0])), {"input": "a"}),
], ids=["duplicate-index", "index-out-of-range", "negative-index", "fractional-index",
        "empty-vector", "ragged", "other-dimensions", "beyond-float32-base64",
        "beyond-float32"])
async def test_embeddings_that_are_not_one_embedding_space_are_a_502(
    client: httpx.AsyncClient, admin_headers: Headers, user: tuple[uuid.UUID, Headers],
    database: Database, raw: bytes, body: dict[str, Any],
) -> None:
    """Vectors that cannot be matched to the inputs (indexes not exactly 0..n-1, once
    each), that are not one space (empty, of different lengths, not the dimensions asked)
    or hold a value float32 cannot (1e39: base64, the SDK's default, packs float32) are a
    malformed answer: a 502 recorded failed, never a 200 with unusable vectors nor a 500."""
    async with RawServer(json_answer(None, raw=raw)) as server:
        await register(client, admin_headers, server.base_url)
        status, answer = await post(client, "/v1/embeddings",
                                    {"model": "raw-model", **body}, user[1])
    assert status == 502, answer
    assert json.loads(answer)["error"]["code"] == "provider_error", answer
    assert await statuses(database) == ["failed"]


async def test_embeddings_are_matched_to_the_inputs_by_index(
    client: httpx.AsyncClient, admin_headers: Headers, user: tuple[uuid.UUID, Headers],
) -> None:
    """Vectors answered out of order are given back in the inputs' order; an answer
    without indexes is read in its own order."""
    for raw, expected in [(_vectors((1, [0.0, 1.0]), (0, [1.0, 0.0])), [[1.0, 0.0], [0.0, 1.0]]),
                          (b'{"data": [{"embedding": [1.0, 0.0]}, {"embedding": [0.0, 1.0]}]}',
                           [[1.0, 0.0], [0.0, 1.0]])]:
        async with RawServer(json_answer(None, raw=raw)) as server:
            pid = await register(client, admin_headers, server.base_url)
            resp = await client.post("/v1/embeddings", headers=user[1],
                                     json={"model": "raw-model", "input": ["a", "b"]})
            assert (await client.delete(f"/api/v1/llm/providers/{pid}",
                                        headers=admin_headers)).status_code == 204
        assert resp.status_code == 200, resp.text
        assert [d["embedding"] for d in resp.json()["data"]] == expected


# --------------------------------------------------------------------------- upstream errors


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("raw", [b'{"error": {"message": "upstream \\ud800 broke"}}',
                                 b'{"error": {"message": "upstream \\u0000 broke"}}'],
                         ids=["surrogate", "nul"])
async def test_an_upstream_error_message_with_odd_characters_is_a_502_and_recorded(
    client: httpx.AsyncClient, admin_headers: Headers, user: tuple[uuid.UUID, Headers],
    database: Database, raw: bytes, stream: bool,
) -> None:
    """An upstream error text with a lone surrogate or a NUL is quoted cleaned up: a 502
    and a failed request whose reason was stored."""
    async with RawServer(json_answer(None, 500, raw=raw)) as server:
        await register(client, admin_headers, server.base_url)
        status, body = await post(client, "/v1/chat/completions", {**CHAT, "stream": stream},
                                  user[1])
    assert status == 502, body
    assert "upstream" in json.loads(body)["error"]["message"]
    [(state, reason)] = await requests(database)
    assert state == "failed" and reason is not None and "broke" in reason


# --------------------------------------------------------------------------- streams


async def test_a_stream_with_a_lone_surrogate_ends_with_an_error_frame(
    client: httpx.AsyncClient, admin_headers: Headers, user: tuple[uuid.UUID, Headers],
    database: Database,
) -> None:
    """A delta with a lone surrogate after the first chunk: the stream ends with the
    error frame docs/chat.md promises and the request is failed, not left running."""
    events = [chunk({"role": "assistant", "content": "ok "}),
              'data: {"id":"x","choices":[{"index":0,"delta":{"content":"bad \\ud800"},'
              '"finish_reason":null}]}\n\n',
              chunk({}, "stop"), "data: [DONE]\n\n"]
    async with RawServer(sse_answer(events)) as server:
        await register(client, admin_headers, server.base_url)
        status, body = await post(client, "/v1/chat/completions", {**CHAT, "stream": True},
                                  user[1])
    assert status == 200, body
    assert v1_frames(body)[-1]["error"]["code"] == "provider_error", body
    assert await statuses(database) == ["failed"]


async def test_a_stream_of_keepalives_forever_ends_at_the_stream_limit(
    client: httpx.AsyncClient, admin_headers: Headers, user: tuple[uuid.UUID, Headers],
    database: Database,
) -> None:
    """One chunk then keep-alives forever (each resets the HTTP read timeout): the call
    ends at ROOST_LLM_STREAM_MAX_S with a time-out frame and a failed request."""
    async def forever(writer: asyncio.StreamWriter) -> None:
        while True:
            writer.write(b": ping\n\n")
            await writer.drain()
            await asyncio.sleep(0.2)

    async with RawServer(sse_answer([chunk({"content": "a"})], then=forever)) as server:
        await register(client, admin_headers, server.base_url)
        async with asyncio.timeout(STREAM_MAX_S + 10):  # fails rather than hangs
            status, body = await post(client, "/v1/chat/completions",
                                      {**CHAT, "stream": True}, user[1])
    assert status == 200, body
    error = v1_frames(body)[-1]["error"]
    assert error["code"] == "provider_timeout" and "ROOST_LLM_STREAM_MAX_S" in error["message"]
    [(state, reason)] = await requests(database)
    assert state == "failed" and reason is not None and "ROOST_LLM_STREAM_MAX_S" in reason


async def test_a_stream_of_content_without_end_stops_at_the_size_limit(
    client: httpx.AsyncClient, admin_headers: Headers, user: tuple[uuid.UUID, Headers],
    database: Database,
) -> None:
    """Content that never ends is not accumulated without bound: past
    ROOST_LLM_MAX_ANSWER_BYTES the stream ends with an error frame, the request failed."""
    async def forever(writer: asyncio.StreamWriter) -> None:
        while True:
            writer.write(chunk({"content": "x" * 500}).encode())
            await writer.drain()
            await asyncio.sleep(0)

    async with RawServer(sse_answer([], then=forever)) as server:
        await register(client, admin_headers, server.base_url)
        async with asyncio.timeout(STREAM_MAX_S + 10):
            status, body = await post(client, "/v1/chat/completions",
                                      {**CHAT, "stream": True}, user[1])
    assert status == 200, body
    assert "ROOST_LLM_MAX_ANSWER_BYTES" in v1_frames(body)[-1]["error"]["message"]
    assert await statuses(database) == ["failed"]


# --------------------------------------------------------------------------- registry


@pytest.mark.parametrize("raw", [b'{"error": {"message": "down \\ud800"}}',
                                 b'{"error": {"message": "down \\u0000"}}'],
                         ids=["surrogate", "nul"])
async def test_a_health_check_of_a_provider_failing_with_odd_text_is_unhealthy(
    client: httpx.AsyncClient, admin_headers: Headers, raw: bytes,
) -> None:
    """A provider failing with odd error text is checked unhealthy (the reason stored
    cleaned up), not a 400 with no result stored."""
    async with RawServer(json_answer(None, 503, raw=raw)) as server:
        pid = await register(client, admin_headers, server.base_url)
        status, body = await post(client, f"/api/v1/llm/providers/{pid}/health", None,
                                  admin_headers)
    assert status == 200, body
    checked = json.loads(body)
    assert checked["health_status"] == "unhealthy" and "down" in checked["health_error"]


async def test_a_model_sync_keeps_only_usable_ids(
    client: httpx.AsyncClient, admin_headers: Headers, user: tuple[uuid.UUID, Headers],
) -> None:
    """Listed ids that are null, empty, not strings, too long or hold a NUL are skipped:
    no model named 'None' or '' is routed."""
    raw = json.dumps({"data": [{"id": "real"}, {"id": None}, {"id": ""}, {"id": 5},
                               {"id": "a\u0000b"}, {"id": "m" * 256}, {"name": "no id"}]})
    async with RawServer(json_answer(None, raw=raw.encode())) as server:
        pid = await register(client, admin_headers, server.base_url)
        synced = await client.post(f"/api/v1/llm/providers/{pid}/sync-models",
                                   headers=admin_headers)
        listed = await client.get("/v1/models", headers=user[1])
    assert synced.status_code == 200, synced.text
    assert synced.json()["models"] == {"real": True, "raw-model": True}
    assert sorted(m["id"] for m in listed.json()["data"]) == ["raw-model", "real"]


@pytest.mark.parametrize("raw", [b'{"data": [{"id": "a\\u0000b"}, {"id": null}]}',
                                 b'{"data": [{"id": "a\\ud800"}]}'], ids=["nul", "surrogate"])
async def test_a_model_sync_with_no_usable_id_is_a_clear_409(
    client: httpx.AsyncClient, admin_headers: Headers, raw: bytes,
) -> None:
    """A model list none of whose ids can be stored is a 409 saying so, not a vague 400."""
    async with RawServer(json_answer(None, raw=raw)) as server:
        pid = await register(client, admin_headers, server.base_url)
        status, body = await post(client, f"/api/v1/llm/providers/{pid}/sync-models", None,
                                  admin_headers)
    assert status == 409, body
    assert "malformed answer" in json.loads(body)["detail"]


async def _streamed_tool_call_deltas(client: httpx.AsyncClient, admin_headers: Headers,
                                     headers: Headers, pieces: list[str]) -> list[Any]:
    """The tool-call deltas a /v1 streaming client gets from a provider that streams
    ``pieces`` (SSE chunks) between its role chunk and its tool_calls finish."""
    events = [chunk({"role": "assistant"}), *pieces, chunk({}, "tool_calls"), "data: [DONE]\n\n"]
    async with RawServer(sse_answer(events)) as server:
        await register(client, admin_headers, server.base_url)
        status, body = await post(client, "/v1/chat/completions", {**CHAT, "stream": True},
                                  headers)
    assert status == 200, body
    return [call for frame in v1_frames(body)[:-1]
            for call in frame["choices"][0]["delta"].get("tool_calls", [])]


async def test_a_provider_repeating_the_tool_calls_id_and_name_is_relayed_once(
    client: httpx.AsyncClient, admin_headers: Headers, user: tuple[uuid.UUID, Headers],
) -> None:
    """A provider that repeats a tool call's id and name in every delta (Roost's own record
    keeps them once) does not reach the client as id "call_1call_1", name "lookuplookup":
    OpenAI clients join every string they get for an index, so the stream sends them
    once, and the arguments piece by piece."""

    def part(args: str) -> str:
        return chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                      "function": {"name": "lookup", "arguments": args}}]})

    deltas = await _streamed_tool_call_deltas(client, admin_headers, user[1],
                                              [part('{"q": '), part('"roost"}')])
    joined = {key: "".join(d.get(key, "") for d in deltas) for key in ("id", "type")}
    joined["name"] = "".join(d["function"].get("name", "") for d in deltas)
    joined["arguments"] = "".join(d["function"]["arguments"] for d in deltas)
    assert joined == {"id": "call_1", "type": "function", "name": "lookup",
                      "arguments": '{"q": "roost"}'}, deltas


async def test_a_streamed_tool_call_without_an_id_reaches_the_client_with_one(
    client: httpx.AsyncClient, admin_headers: Headers, user: tuple[uuid.UUID, Headers],
) -> None:
    """A provider streaming a tool call with no id: the client still gets one (it answers
    the call with a tool message naming it), the same one the stored answer keeps."""
    piece = {"index": 0, "function": {"name": "lookup", "arguments": '{"q": 1}'}}
    deltas = await _streamed_tool_call_deltas(client, admin_headers, user[1],
                                              [chunk({"tool_calls": [piece]})])
    assert [d.get("id") for d in deltas if "id" in d] == ["call_0"], deltas
    assert deltas[0]["type"] == "function"
    kept = StreamAccumulator()
    kept.add(ChatChunk(tool_calls=[ToolCallDelta(index=0, name="lookup", arguments="{}")]))
    assert [call.id for call in kept.result().tool_calls] == ["call_0"]


async def test_a_tool_call_without_an_id_gets_one_no_other_call_has(
    client: httpx.AsyncClient, admin_headers: Headers, user: tuple[uuid.UUID, Headers],
) -> None:
    """A whole answer with two tool calls, the first with the id ``call_1``, the second with
    none: a client answers each call by its id, so the second gets an id of its own
    (before, Roost made up ``call_1`` for it too)."""
    calls = [{"id": "call_1", "type": "function", "function": {"name": "a", "arguments": "{}"}},
             {"type": "function", "function": {"name": "b", "arguments": "{}"}}]
    payload = chat_payload()
    payload["choices"] = [{"index": 0, "finish_reason": "tool_calls",
                           "message": {"role": "assistant", "content": None,
                                       "tool_calls": calls}}]
    async with RawServer(json_answer(payload)) as server:
        await register(client, admin_headers, server.base_url)
        status, body = await post(client, "/v1/chat/completions", CHAT, user[1])
    assert status == 200, body
    ids = [tc["id"] for tc in json.loads(body)["choices"][0]["message"]["tool_calls"]]
    assert ids == ["call_1", "call_1_1"], ids


async def test_a_streamed_tool_call_without_an_id_gets_one_no_other_call_has(
    client: httpx.AsyncClient, admin_headers: Headers, user: tuple[uuid.UUID, Headers],
) -> None:
    """The same streamed (index 0 with the id ``call_1``, index 1 with none): the client
    gets two different ids, the ones the stored answer keeps (before, both were
    ``call_1``)."""
    pieces = [chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                     "function": {"name": "a", "arguments": "{}"}}]}),
              chunk({"tool_calls": [{"index": 1, "type": "function",
                                     "function": {"name": "b", "arguments": "{}"}}]})]
    deltas = await _streamed_tool_call_deltas(client, admin_headers, user[1], pieces)
    assert [d["id"] for d in deltas if "id" in d] == ["call_1", "call_1_1"], deltas
    kept = StreamAccumulator()
    kept.add(ChatChunk(tool_calls=[ToolCallDelta(index=0, id="call_1", name="a")]))
    kept.add(ChatChunk(tool_calls=[ToolCallDelta(index=1, name="b")]))
    assert [call.id for call in kept.result().tool_calls] == ["call_1", "call_1_1"]


def test_a_streamed_tool_calls_id_is_fixed_by_its_first_piece() -> None:
    """An id a provider sends only in a later piece of a call (the client was sent a
    made-up one already) is not taken, and a provider's id another call has already is
    made unique: the stored answer keeps what the client was sent."""
    kept = StreamAccumulator()
    kept.add(ChatChunk(tool_calls=[ToolCallDelta(index=0, name="a")]))
    kept.add(ChatChunk(tool_calls=[ToolCallDelta(index=0, id="late", arguments="{}")]))
    kept.add(ChatChunk(tool_calls=[ToolCallDelta(index=1, id="call_0", name="b")]))
    assert [call.id for call in kept.result().tool_calls] == ["call_0", "call_1"]


async def test_stream_usage_split_over_chunks_keeps_both_counts(
    client: httpx.AsyncClient, admin_headers: Headers, user: tuple[uuid.UUID, Headers],
    database: Database,
) -> None:
    """A stream reporting ``prompt_tokens`` in one chunk's usage and ``completion_tokens``
    in a later one: both of the provider's counts are stored (before, the later chunk
    wiped the prompt count to 0 and an estimate replaced it)."""
    def part(delta: dict[str, Any], finish: str | None, usage: dict[str, int]) -> str:
        obj = {"id": "x", "object": "chat.completion.chunk", "model": "raw-model",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
               "usage": usage}
        return f"data: {json.dumps(obj)}\n\n"

    events = [part({"content": "hello there"}, None, {"prompt_tokens": 77}),
              part({}, "stop", {"completion_tokens": 55}), "data: [DONE]\n\n"]
    async with RawServer(sse_answer(events)) as server:
        await register(client, admin_headers, server.base_url)
        status, body = await post(client, "/v1/chat/completions",
                                  {**CHAT, "stream": True,
                                   "stream_options": {"include_usage": True}}, user[1])
    assert status == 200, body
    assert v1_frames(body)[-2]["usage"]["prompt_tokens"] == 77, body
    async with database.transaction() as s:
        counts = (await s.execute(text(
            "SELECT tokens_prompt, tokens_completion FROM llm_responses"))).all()
    assert [tuple(row) for row in counts] == [(77, 55)]


async def test_stream_chunks_with_error_null_are_no_failure(
    client: httpx.AsyncClient, admin_headers: Headers, user: tuple[uuid.UUID, Headers],
    database: Database,
) -> None:
    """Chunks that carry ``"error": null`` (no error at all) stream like any other: the
    text and a completed request (before, a 502 "failed mid-stream")."""
    def part(delta: dict[str, Any], finish: str | None = None) -> str:
        obj = {"id": "x", "object": "chat.completion.chunk", "model": "raw-model",
               "error": None,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(obj)}\n\n"

    events = [part({"content": "hi"}), part({}, "stop"), "data: [DONE]\n\n"]
    async with RawServer(sse_answer(events)) as server:
        await register(client, admin_headers, server.base_url)
        status, body = await post(client, "/v1/chat/completions", {**CHAT, "stream": True},
                                  user[1])
    assert status == 200, body
    frames = v1_frames(body)
    assert "error" not in frames[-2], body
    assert "".join(f["choices"][0]["delta"].get("content") or "" for f in frames[:-1]) == "hi"
    assert await statuses(database) == ["completed"]


async def test_a_stream_starting_with_a_bom_keeps_its_first_event(
    client: httpx.AsyncClient, admin_headers: Headers, user: tuple[uuid.UUID, Headers],
) -> None:
    """A stream whose body starts with a UTF-8 byte order mark (the SSE standard drops it)
    keeps its first event: the client gets "Hello world" (before, " world": the first
    chunk was silently lost)."""
    events = ["\ufeff" + chunk({"role": "assistant", "content": "Hello"}),
              chunk({"content": " world"}), chunk({}, "stop"), "data: [DONE]\n\n"]
    async with RawServer(sse_answer(events)) as server:
        await register(client, admin_headers, server.base_url)
        status, body = await post(client, "/v1/chat/completions", {**CHAT, "stream": True},
                                  user[1])
    assert status == 200, body
    text_ = "".join(f["choices"][0]["delta"].get("content") or ""
                    for f in v1_frames(body) if isinstance(f, dict) and f.get("choices"))
    assert text_ == "Hello world", body

"""Provider for Anthropic's Messages API (``POST /v1/messages``).

Requests and answers are translated to and from the OpenAI-shaped types in
``roost.llm.types``: system messages become the top-level ``system`` prompt,
``tool`` messages become ``tool_result`` blocks in a user turn, assistant
``tool_calls`` become ``tool_use`` blocks, and consecutive turns of the same
role are merged (the API wants user and assistant turns to alternate).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Unpack

from roost.llm.base import (
    HTTPOptions,
    HTTPProvider,
    decode_json_event,
    token_count,
    usable_model_ids,
)
from roost.llm.errors import ProviderNotSupported, ProviderUnavailable, has_surrogate
from roost.llm.types import (
    ChatChunk,
    ChatMessage,
    ChatRequest,
    ChatResult,
    EmbeddingResult,
    HealthResult,
    ToolCall,
    ToolCallDelta,
    parse_tool_arguments,
)

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_BASE_URL = "https://api.anthropic.com"

# Anthropic's stop reasons in OpenAI's vocabulary, so callers see one set.
STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
}

# ChatRequest.extra keys the Messages API accepts; anything else (OpenAI-only
# knobs such as logprobs or seed) is dropped rather than sent to a 400.
# ``extra["anthropic"]`` is merged verbatim as an escape hatch.
PASSTHROUGH = frozenset({"top_k", "metadata", "thinking", "service_tier"})

# Error event types on a stream that mean "try again / elsewhere".
RETRYABLE_STREAM_ERRORS = frozenset({"overloaded_error", "api_error", "rate_limit_error"})


def _content_blocks(content: str | list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "image_url":
            url = str((part.get("image_url") or {}).get("url", ""))
            if url.startswith("data:") and ";base64," in url:
                media, _, data = url[5:].partition(";base64,")
                source = {"type": "base64", "media_type": media, "data": data}
                blocks.append({"type": "image", "source": source})
            else:
                blocks.append({"type": "image", "source": {"type": "url", "url": url}})
        else:
            blocks.append(part)  # already an Anthropic block (image, document, ...)
    return blocks


def to_anthropic_messages(
    messages: list[ChatMessage],
) -> tuple[str | None, list[dict[str, Any]]]:
    """Split OpenAI-style messages into Anthropic's (system prompt, alternating turns)."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for msg in messages:
        if msg.role in ("system", "developer"):
            system.append(msg.text())
            continue
        if msg.role == "tool":
            role = "user"
            result = {"type": "tool_result", "tool_use_id": msg.tool_call_id or ""}
            blocks: list[dict[str, Any]] = [{**result, "content": msg.text()}]
        elif msg.role == "assistant":
            role = "assistant"
            blocks = _content_blocks(msg.content) + [
                {
                    "type": "tool_use",
                    "id": tc.id,
                    "name": tc.name,
                    "input": parse_tool_arguments(tc.arguments),
                }
                for tc in msg.tool_calls or []
            ]
        else:
            role = "user"
            blocks = _content_blocks(msg.content)
        if not blocks:
            continue  # the API rejects empty turns
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return ("\n\n".join(s for s in system if s) or None), turns


def to_anthropic_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for tool in tools:
        fn = tool.get("function")
        if tool.get("type") == "function" and isinstance(fn, dict):
            mapped: dict[str, Any] = {
                "name": fn["name"],
                "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
            }
            if fn.get("description"):
                mapped["description"] = fn["description"]
            out.append(mapped)
        else:
            out.append(tool)  # already Anthropic-shaped
    return out


TOOL_CHOICES: dict[str, dict[str, Any]] = {
    "auto": {"type": "auto"}, "none": {"type": "none"}, "required": {"type": "any"}}


def to_anthropic_tool_choice(choice: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(choice, dict):
        fn = choice.get("function")
        if isinstance(fn, dict) and "name" in fn:
            return {"type": "tool", "name": fn["name"]}
        return choice
    if choice not in TOOL_CHOICES:
        # Never read as "auto": a misspelt "required" would let the model skip the tool.
        # /v1 refuses such a choice before any provider is asked.
        raise ValueError(f"unknown tool_choice {choice!r}: expected one of {sorted(TOOL_CHOICES)}")
    return TOOL_CHOICES[choice]


def no_parallel_tool_use(choice: dict[str, Any] | None) -> dict[str, Any]:
    """OpenAI's ``parallel_tool_calls: false`` in Anthropic's words: the tool choice (auto
    when none was given) with ``disable_parallel_tool_use``; a choice of no tool, or one
    of Anthropic's own shapes, as it is."""
    choice = choice or {"type": "auto"}
    if choice.get("type") in ("auto", "any", "tool"):
        return {**choice, "disable_parallel_tool_use": True}
    return choice


def _message_start(obj: dict[str, Any]) -> tuple[str | None, int]:
    message = obj["message"]
    return message.get("model"), token_count((message.get("usage") or {}).get("input_tokens"))


def _text(value: Any) -> str:
    """A text block's or delta's text; a lone UTF-16 surrogate makes it a malformed answer."""
    if not isinstance(value, str):
        raise TypeError(f"text is {type(value).__name__}")
    if has_surrogate(value):
        raise ValueError("the answer's text holds a lone UTF-16 surrogate")
    return value


class AnthropicProvider(HTTPProvider):
    provider_type = "anthropic"

    config_keys = ("anthropic_version", "default_max_tokens")  # beyond HTTPConfig

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        anthropic_version: str = ANTHROPIC_VERSION,
        default_max_tokens: int = 1024,
        **options: Unpack[HTTPOptions],
    ) -> None:
        # Accept the base with or without /v1 (the SDK uses it without).
        super().__init__(base_url.rstrip("/").removesuffix("/v1"), **options)
        self.anthropic_version = anthropic_version
        # The Messages API requires max_tokens; OpenAI's does not.
        self.default_max_tokens = default_max_tokens

    def _auth_headers(self) -> dict[str, str]:
        headers = {"anthropic-version": self.anthropic_version}
        if self._api_key:
            headers["x-api-key"] = self._api_key
        return headers

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        system, turns = to_anthropic_messages(request.messages)
        body: dict[str, Any] = {
            "model": self._model(request.model),
            "messages": turns,
            "max_tokens": request.max_tokens or self.default_max_tokens,
        }
        if system:
            body["system"] = system
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.stop:
            body["stop_sequences"] = request.stop
        if request.tools:
            body["tools"] = to_anthropic_tools(request.tools)
        if request.tool_choice is not None:
            body["tool_choice"] = to_anthropic_tool_choice(request.tool_choice)
        if request.tools and request.extra.get("parallel_tool_calls") is False:
            body["tool_choice"] = no_parallel_tool_use(body.get("tool_choice"))
        body.update({k: v for k, v in request.extra.items() if k in PASSTHROUGH})
        escape = request.extra.get("anthropic")
        if isinstance(escape, dict):
            body.update(escape)
        return body

    def _parse_message(self, data: Any, latency_ms: int) -> ChatResult:
        if data.get("type") != "message":
            raise ValueError(f"type is {data.get('type')!r}, expected 'message'")
        text: list[str] = []
        tool_calls: list[ToolCall] = []
        for block in data["content"]:
            if block["type"] == "text":
                text.append(_text(block["text"]))
            elif block["type"] == "tool_use":
                arguments = json.dumps(block["input"])
                tool_calls.append(ToolCall(id=block["id"], name=block["name"], arguments=arguments))
        usage = data.get("usage") or {}
        stop = data.get("stop_reason")
        return ChatResult(
            content="".join(text),
            finish_reason=STOP_REASONS.get(stop, stop),
            tokens_in=token_count(usage.get("input_tokens")),
            tokens_out=token_count(usage.get("output_tokens")),
            model=data.get("model"),
            tool_calls=tool_calls,
            latency_ms=latency_ms,
            raw=data,
        )

    async def chat(self, request: ChatRequest) -> ChatResult:
        data, latency = await self._request_json("POST", "/v1/messages", self._body(request))
        return self._parse(data, lambda d: self._parse_message(d, latency))

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        body = self._body(request)
        body["stream"] = True
        model: str | None = None
        tokens_in = 0
        tool_index: dict[int, int] = {}  # content block index -> tool call index
        finished = False
        async with self._open_stream("/v1/messages", body) as resp:
            events = self._sse_events(resp)
            async for _event, data in events:
                obj = decode_json_event(self, data)
                kind = obj.get("type")
                if kind == "message_stop":
                    finished = True
                    await self._drain(events)
                    break
                if kind == "error":
                    err = obj.get("error") or {}
                    message = self._safe(str(err.get("message", "")))
                    detail = f"provider {self.name!r} failed mid-stream: {message}"
                    if err.get("type") in RETRYABLE_STREAM_ERRORS:
                        raise ProviderUnavailable(detail, provider=self.name)
                    raise self._bad_response(detail)
                if kind == "message_start":
                    model, tokens_in = self._parse(obj, _message_start)
                    continue
                chunk = self._parse(obj, lambda o: self._stream_event(o, tool_index))
                if chunk is None:
                    continue
                chunk.model = model
                if kind == "message_delta":
                    chunk.tokens_in = chunk.tokens_in or tokens_in
                yield chunk
        if not finished:
            raise self._bad_response("stream ended before message_stop")

    def _stream_event(self, obj: dict[str, Any], tool_index: dict[int, int]) -> ChatChunk | None:
        kind = obj.get("type")
        if kind == "content_block_start":
            block = obj["content_block"]
            if block["type"] == "tool_use":
                idx = tool_index.setdefault(int(obj["index"]), len(tool_index))
                delta = ToolCallDelta(index=idx, id=block["id"], name=block["name"])
                return ChatChunk(tool_calls=[delta], raw=obj)
            if block["type"] == "text" and block.get("text"):
                return ChatChunk(delta=_text(block["text"]), raw=obj)
            return None
        if kind == "content_block_delta":
            delta = obj["delta"]
            if delta["type"] == "text_delta":
                return ChatChunk(delta=_text(delta["text"]), raw=obj)
            if delta["type"] == "input_json_delta":
                idx = tool_index[int(obj["index"])]
                part = ToolCallDelta(index=idx, arguments=delta["partial_json"])
                return ChatChunk(tool_calls=[part], raw=obj)
            return None  # thinking / signature deltas are not part of the answer
        if kind == "message_delta":
            stop = obj["delta"].get("stop_reason")
            usage = obj.get("usage") or {}
            return ChatChunk(
                finish_reason=STOP_REASONS.get(stop, stop),
                tokens_in=token_count(usage["input_tokens"]) if usage.get("input_tokens") else None,
                tokens_out=token_count(usage.get("output_tokens")),
                raw=obj,
            )
        return None  # message_start (handled by caller), ping, content_block_stop

    async def embed(self, texts: list[str], model: str | None = None) -> EmbeddingResult:
        raise ProviderNotSupported(
            f"provider {self.name!r} (anthropic) has no embeddings API", provider=self.name
        )

    async def list_models(self) -> list[str]:
        data, _ = await self._request_json("GET", "/v1/models")
        return self._parse(data, usable_model_ids)

    async def health(self) -> HealthResult:
        return await self._timed_health(self.list_models)

"""Provider for any server speaking OpenAI's HTTP API.

One implementation covers OpenAI itself, vLLM, Ollama (``/v1``), llama.cpp's
``llama-server``, LM Studio and most hosted gateways: ``base_url`` is the URL
that ends in ``/v1`` (as with the official SDK) and the paths appended are
``/chat/completions``, ``/embeddings`` and ``/models``.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final, Unpack

from roost.llm.base import (
    EMBEDDING_BYTES_PER_INPUT,
    HTTPOptions,
    HTTPProvider,
    decode_json_event,
    error_message,
    token_count,
    usable_model_ids,
)
from roost.llm.errors import ProviderUnavailable, has_surrogate
from roost.llm.types import (
    ChatChunk,
    ChatRequest,
    ChatResult,
    EmbeddingResult,
    HealthResult,
    ToolCall,
    ToolCallDelta,
    ToolCallIds,
)

FLOAT32_MAX: Final = 3.4028234663852886e38  # the largest finite float32


def _text_of(content: Any) -> str:
    """Message content as text; some servers return a list of parts instead of a string.
    Text with a lone UTF-16 surrogate is a malformed answer (ValueError): it could be
    neither stored nor sent on."""
    if content is None:
        return ""
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        text = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    else:
        raise TypeError(f"content is {type(content).__name__}")
    if has_surrogate(text):
        raise ValueError("the answer's text holds a lone UTF-16 surrogate")
    return text


def _choice_logprobs(choice: Mapping[str, Any]) -> dict[str, Any] | None:
    """The choice's logprobs object (``{"content": [{"token", "logprob", ...}]}``), if any."""
    lp = choice.get("logprobs")
    if not isinstance(lp, dict) or not isinstance(lp.get("content"), list):
        return None
    return lp


def _logprobs_of(lp: Mapping[str, Any] | None) -> list[float] | None:
    return None if lp is None else [float(t["logprob"]) for t in lp["content"]]


def parse_openai_chat(data: Any, latency_ms: int = 0) -> ChatResult:
    """Parse an OpenAI chat.completion object (also what llama-cpp-python returns)."""
    choice = data["choices"][0]
    message = choice["message"]
    usage = data.get("usage") or {}
    logprobs = _choice_logprobs(choice)
    calls = message.get("tool_calls") or []
    # A made-up id avoids every id the provider sent, even a later call's.
    ids = ToolCallIds(str(tc["id"]) for tc in calls if tc.get("id"))
    return ChatResult(
        content=_text_of(message.get("content")),
        finish_reason=choice.get("finish_reason"),
        tokens_in=token_count(usage.get("prompt_tokens")),
        tokens_out=token_count(usage.get("completion_tokens")),
        model=data.get("model"),
        tool_calls=[
            ToolCall(
                id=ids.fix(i, str(tc["id"]) if tc.get("id") else None),
                name=tc["function"]["name"],
                arguments=tc["function"].get("arguments") or "{}",
            )
            for i, tc in enumerate(calls)
        ],
        logprobs=_logprobs_of(logprobs),
        choice_logprobs=logprobs,
        latency_ms=latency_ms,
        raw=data,
    )


def parse_openai_chunk(obj: dict[str, Any]) -> ChatChunk:
    """Parse one chat.completion.chunk object."""
    choices = obj.get("choices") or []
    usage = obj.get("usage") or None
    chunk = ChatChunk(model=obj.get("model"), raw=obj)
    if choices:
        choice = choices[0]
        delta = choice.get("delta") or {}
        chunk.delta = _text_of(delta.get("content"))
        chunk.finish_reason = choice.get("finish_reason")
        chunk.choice_logprobs = _choice_logprobs(choice)
        chunk.logprobs = _logprobs_of(chunk.choice_logprobs)
        chunk.tool_calls = [
            ToolCallDelta(
                index=int(tc.get("index", 0)),
                id=tc.get("id"),
                name=(tc.get("function") or {}).get("name"),
                arguments=(tc.get("function") or {}).get("arguments") or "",
            )
            for tc in delta.get("tool_calls") or []
        ]
    if isinstance(usage, dict):
        # Only the counts this chunk reports: a stream may send them in different chunks.
        if "prompt_tokens" in usage:
            chunk.tokens_in = token_count(usage["prompt_tokens"])
        if "completion_tokens" in usage:
            chunk.tokens_out = token_count(usage["completion_tokens"])
    return chunk


def is_meaningful(chunk: ChatChunk) -> bool:
    """Role-only and empty keep-alive chunks carry nothing a consumer needs."""
    return bool(chunk.delta or chunk.tool_calls or chunk.finish_reason
                or chunk.tokens_in is not None or chunk.tokens_out is not None)


class OpenAICompatibleProvider(HTTPProvider):
    provider_type = "openai"

    config_keys = ("stream_usage",)  # config keys of this type beyond HTTPConfig

    def __init__(
        self, base_url: str, *, stream_usage: bool = True, **options: Unpack[HTTPOptions]
    ) -> None:
        super().__init__(base_url, **options)
        # OpenAI only reports usage on streams when asked; a few older
        # servers reject the unknown field, hence the switch.
        self.stream_usage = stream_usage

    def _auth_headers(self) -> dict[str, str]:
        # Local servers (Ollama, llama.cpp) need no key; sending none keeps them happy.
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self._model(request.model),
            "messages": [m.to_openai() for m in request.messages],
        }
        for key in ("temperature", "top_p", "stop", "tools", "tool_choice"):
            value = getattr(request, key)
            if value is not None:
                body[key] = value
        if request.max_tokens is not None:
            body[request.max_tokens_name] = request.max_tokens
        body.update(request.extra)
        return body

    # --- chat ------------------------------------------------------------------------

    async def chat(self, request: ChatRequest) -> ChatResult:
        data, latency = await self._request_json("POST", "/chat/completions", self._body(request))
        if isinstance(data, dict) and data.get("error"):
            # Servers report overload so on a 200 too: unavailable, as a stream's error event.
            message = error_message(data) or json.dumps(data["error"])[:200]
            raise ProviderUnavailable(
                f"provider {self.name!r} answered with an error: {self._safe(message)}",
                provider=self.name,
            )
        return self._parse(data, lambda d: parse_openai_chat(d, latency))

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        body = self._body(request)
        body["stream"] = True
        if self.stream_usage:
            body.setdefault("stream_options", {"include_usage": True})
        finished = False
        async with self._open_stream("/chat/completions", body) as resp:
            events = self._sse_events(resp)
            async for _event, data in events:
                if data.strip() == "[DONE]":
                    finished = True
                    await self._drain(events)
                    break
                obj = decode_json_event(self, data)
                if obj.get("error"):  # some servers send "error": null on every chunk
                    # Servers report mid-stream failures (overload, OOM) as an
                    # error event on a 200 response.
                    raise ProviderUnavailable(
                        f"provider {self.name!r} failed mid-stream: "
                        f"{self._safe(self._upstream_message(data))}",
                        provider=self.name,
                    )
                chunk = self._parse(obj, parse_openai_chunk)
                if chunk.finish_reason is not None:
                    finished = True
                if is_meaningful(chunk):
                    yield chunk
        if not finished:
            raise self._bad_response("stream ended before the model finished")

    # --- embeddings, models, health --------------------------------------------------

    def _parse_embeddings(
        self, data: Any, count: int, latency_ms: int, dimensions: int | None = None,
    ) -> EmbeddingResult:
        """One vector per input, matched by ``index`` (its position when absent): anything
        that is not one embedding space (indexes not exactly 0..count-1, an empty vector,
        vectors of different lengths or of another length than the ``dimensions`` asked,
        a value that is not a finite float32) is a malformed answer (ValueError)."""
        items = data["data"]
        if len(items) != count:
            raise ValueError(f"{len(items)} vectors for {count} inputs")
        slots: list[list[float] | None] = [None] * count
        for position, item in enumerate(items):
            index = item.get("index", position)
            if type(index) is not int or not 0 <= index < count or slots[index] is not None:
                raise ValueError(f"the vectors' indexes are not 0 to {count - 1}, once each")
            slots[index] = [float(x) for x in item["embedding"]]
        vectors = [vector for vector in slots if vector is not None]
        width = dimensions or len(vectors[0])
        for vector in vectors:
            if not vector or len(vector) != width:
                raise ValueError(f"the vectors are not all {width} numbers long")
            # A finite sum has no NaN or Infinity in it (fast, in C).
            if not math.isfinite(sum(vector)) and not all(map(math.isfinite, vector)):
                raise ValueError("a vector holds a value that is not a finite number "
                                 "(NaN, Infinity)")
            # Vectors are float32 (base64 answers pack them so, pgvector stores them so).
            if max(vector) > FLOAT32_MAX or min(vector) < -FLOAT32_MAX:
                raise ValueError("a vector holds a value beyond float32's range")
        usage = data.get("usage") or {}
        return EmbeddingResult(
            vectors=vectors,
            model=data.get("model"),
            tokens_in=token_count(usage.get("prompt_tokens")),
            latency_ms=latency_ms,
        )

    async def embed(
        self, texts: list[str], model: str | None = None, *, dimensions: int | None = None
    ) -> EmbeddingResult:
        if not texts:
            return EmbeddingResult(vectors=[], model=model or self.default_model)
        body: dict[str, Any] = {"model": self._model(model), "input": texts}
        if dimensions is not None:
            body["dimensions"] = dimensions
        # Vectors as JSON floats are large: the limit grows with the inputs.
        limit = self.max_answer_bytes + len(texts) * EMBEDDING_BYTES_PER_INPUT
        data, latency = await self._request_json("POST", "/embeddings", body, limit=limit)
        return self._parse(data, lambda d: self._parse_embeddings(d, len(texts), latency, dimensions))

    async def list_models(self) -> list[str]:
        data, _ = await self._request_json("GET", "/models")
        return self._parse(data, usable_model_ids)

    async def health(self) -> HealthResult:
        return await self._timed_health(self.list_models)


__all__ = [
    "OpenAICompatibleProvider",
    "is_meaningful",
    "parse_openai_chat",
    "parse_openai_chunk",
]

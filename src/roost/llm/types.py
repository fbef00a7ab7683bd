"""Provider-neutral request/response types for the LLM layer.

These are Pydantic models so the database layer can dump them straight into
JSONB columns (``llm_requests.messages``/``model_params``,
``llm_responses.raw_response``) and the HTTP layer can reuse them.  The shapes
follow OpenAI's chat format because that is what every OpenAI-compatible
server (vLLM, Ollama, llama.cpp, LM Studio) speaks; other providers map to it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Role = Literal["system", "developer", "user", "assistant", "tool"]


class ToolCall(BaseModel):
    """A complete function call requested by the model.

    Accepted flat (``{"id", "name", "arguments"}``, Roost's own shape) or nested as
    OpenAI sends and expects it back in a conversation's history (``{"id", "type":
    "function", "function": {"name", "arguments"}}``: what every OpenAI SDK tool loop
    sends); :meth:`to_openai` gives the nested shape."""

    id: str
    name: str
    # JSON text, exactly as OpenAI returns it: models sometimes emit invalid
    # JSON and the caller must be able to see (and reject) what was produced.
    arguments: str = "{}"
    type: Literal["function"] = "function"

    @model_validator(mode="before")
    @classmethod
    def _openai_shape(cls, data: Any) -> Any:
        """OpenAI's nested ``function`` object, flattened (its ``arguments`` are JSON text
        already; an object some clients send instead becomes that text).  Another type
        (OpenAI's ``custom`` tool calls, free text input) is refused as such, not for a
        missing name."""
        if isinstance(data, dict) and data.get("type", "function") != "function":
            raise ValueError('only function tool calls are supported (type "function")')
        if not isinstance(data, dict) or "function" not in data:
            return data
        function = data["function"]
        if not isinstance(function, dict):
            return data  # left as it is: refused for its missing name
        flat = {k: v for k, v in data.items() if k != "function"}
        for key in ("name", "arguments"):
            if key in function:
                if key in flat and flat[key] != function[key]:
                    raise ValueError(f"{key} is given twice, differently (at the top and in "
                                     "function)")
                flat[key] = function[key]
        if isinstance(flat.get("arguments"), dict):
            flat["arguments"] = json.dumps(flat["arguments"], ensure_ascii=False)
        return flat

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


class ToolCallDelta(BaseModel):
    """One streamed fragment of a tool call; fragments with the same index join up."""

    index: int = 0
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Role
    # str for plain text; a list of OpenAI content parts for multimodal input;
    # None for an assistant turn that only carries tool calls.
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[ToolCall] | None = None

    def text(self) -> str:
        """Plain text of the message (text parts joined), for prompts and token estimates."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p["text"] for p in self.content
                       if p.get("type") in ("text", None) and isinstance(p.get("text"), str))

    def to_openai(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.name is not None:
            out["name"] = self.name
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.tool_calls:
            out["tool_calls"] = [tc.to_openai() for tc in self.tool_calls]
        return out


class ChatRequest(BaseModel):
    """A chat completion request, provider-neutral.

    ``model`` may be None: each provider then uses its own default model, which
    is what an ensemble over differently-configured providers needs.
    ``extra`` is passed through verbatim to OpenAI-compatible servers (e.g.
    ``{"logprobs": True, "seed": 1}``); other providers ignore keys they cannot map.
    """

    model: str | None = None
    messages: list[ChatMessage]
    temperature: float | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    # The name the caller gave the limit: OpenAI's reasoning models take only
    # ``max_completion_tokens`` and refuse ``max_tokens``, so an OpenAI-compatible
    # provider is sent the one the client sent.
    max_tokens_name: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    top_p: float | None = None
    stop: list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    def model_params(self) -> dict[str, Any]:
        """Sampling parameters only (what ``llm_requests.model_params`` stores)."""
        keys = ("temperature", "max_tokens", "top_p", "stop", "tool_choice")
        params = {k: getattr(self, k) for k in keys if getattr(self, k) is not None}
        params.update(self.extra)
        return params

    def prompt_text(self) -> str:
        """Text of the last user message (what ``llm_requests.prompt`` stores)."""
        for msg in reversed(self.messages):
            if msg.role == "user":
                return msg.text()
        return ""


class ChatResult(BaseModel):
    content: str
    finish_reason: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    model: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    # Per-token log probabilities when the server returned them; the ensemble
    # uses them for its confidence score.
    logprobs: list[float] | None = None
    # The choice's whole logprobs object as an OpenAI-compatible server sent it
    # (``{"content": [{"token", "logprob", "bytes", "top_logprobs"}]}``), which /v1 gives
    # back to a caller that asked for logprobs; no larger than the answer it came in
    # (ROOST_LLM_MAX_ANSWER_BYTES).  Whole answers only: a stream's are on its chunks.
    choice_logprobs: dict[str, Any] | None = None
    latency_ms: int = 0
    raw: dict[str, Any] = Field(default_factory=dict)

    @property
    def tokens_total(self) -> int:
        return self.tokens_in + self.tokens_out


class ChatChunk(BaseModel):
    """One streamed increment.  ``delta`` is text to append; usage arrives on the last chunk."""

    delta: str = ""
    finish_reason: str | None = None
    tool_calls: list[ToolCallDelta] = Field(default_factory=list)
    model: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    logprobs: list[float] | None = None
    choice_logprobs: dict[str, Any] | None = None  # this chunk's, as ChatResult's
    raw: dict[str, Any] = Field(default_factory=dict)


class EmbeddingResult(BaseModel):
    vectors: list[list[float]]
    model: str | None = None
    tokens_in: int = 0
    latency_ms: int = 0

    @property
    def dimensions(self) -> int:
        return len(self.vectors[0]) if self.vectors else 0


class HealthResult(BaseModel):
    ok: bool
    response_time_ms: int
    error: str | None = None

    @property
    def status(self) -> Literal["healthy", "unhealthy"]:
        """Value for ``llm_providers.health_status``."""
        return "healthy" if self.ok else "unhealthy"


@dataclass
class StreamAccumulator:
    """Folds a chunk stream back into a ChatResult (content, tool calls, usage).

    Used by the streaming fallback to record what a stream produced, and by
    callers that stream to the user but persist the whole answer.
    """

    content_parts: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    model: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    logprobs: list[float] | None = None
    chunks: int = 0
    _tools: dict[int, dict[str, str]] = field(default_factory=dict)
    _ids: ToolCallIds = field(default_factory=lambda: ToolCallIds())

    def add(self, chunk: ChatChunk) -> None:
        self.chunks += 1
        if chunk.delta:
            self.content_parts.append(chunk.delta)
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
        if chunk.model:
            self.model = chunk.model
        if chunk.tokens_in is not None:
            self.tokens_in = chunk.tokens_in
        if chunk.tokens_out is not None:
            self.tokens_out = chunk.tokens_out
        if chunk.logprobs:
            self.logprobs = (self.logprobs or []) + chunk.logprobs
        for d in chunk.tool_calls:
            slot = self._tools.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
            if not slot["id"]:  # fixed by the call's first piece, as /v1 streams it
                slot["id"] = self._ids.fix(d.index, d.id)
            if d.name:
                slot["name"] = d.name
            slot["arguments"] += d.arguments

    def extend(self, chunks: Iterable[ChatChunk]) -> StreamAccumulator:
        for c in chunks:
            self.add(c)
        return self

    @property
    def content(self) -> str:
        return "".join(self.content_parts)

    def result(self, *, latency_ms: int = 0) -> ChatResult:
        tool_calls = [
            ToolCall(id=t["id"], name=t["name"], arguments=t["arguments"] or "{}")
            for _index, t in sorted(self._tools.items())
        ]
        return ChatResult(
            content=self.content,
            finish_reason=self.finish_reason,
            tokens_in=self.tokens_in,
            tokens_out=self.tokens_out,
            model=self.model,
            tool_calls=tool_calls,
            logprobs=self.logprobs,
            latency_ms=latency_ms,
            raw={"streamed": True, "chunks": self.chunks},
        )


def fallback_tool_call_id(index: int, taken: Collection[str] = ()) -> str:
    """The id of a tool call a provider gave none (a tool's answer names its call by id):
    ``call_<index>``, or ``call_<index>_1``, ``_2``... when that one is in ``taken``."""
    candidate, n = f"call_{index}", 0
    while candidate in taken:
        n += 1
        candidate = f"call_{index}_{n}"
    return candidate


class ToolCallIds:
    """The ids of one answer's tool calls, each its own: a client answers a call by its id,
    so two calls sharing one (a provider's id and one made up for a call without, or a
    provider's id repeated for another call) could not both be answered.

    A call's id is fixed the first time its index is seen: the provider's id unless an
    earlier call has it, else one made up (:func:`fallback_tool_call_id`) that no call seen
    so far and no ``reserved`` id has.  Given the same pieces in the same order it gives the
    same ids, so a stream relayed to a client and its stored answer agree."""

    def __init__(self, reserved: Iterable[str] = ()) -> None:
        self._reserved = set(reserved)  # ids to avoid when making one up
        self._given: dict[int, str] = {}

    def fix(self, index: int, provider_id: str | None) -> str:
        if index in self._given:
            return self._given[index]
        used = set(self._given.values())
        if provider_id and provider_id not in used:
            given = provider_id
        else:
            given = fallback_tool_call_id(index, used | self._reserved)
        self._reserved.add(given)
        self._given[index] = given
        return given


def estimate_tokens(text: str) -> int:
    """A rough token count (about four characters a token) for providers that report none."""
    return math.ceil(len(text) / 4) if text else 0


def fill_missing_usage(result: ChatResult, request: ChatRequest) -> ChatResult:
    """Estimate the token counts a provider did not report (0), streamed or not alike.

    The prompt estimate counts every message's text plus 4 tokens of framing per message
    (OpenAI's rule of thumb); the completion estimate counts the answer's text and tool
    calls.  Estimated fields are listed in ``raw["usage_estimated"]``.
    """
    estimated: list[str] = []
    if result.tokens_in <= 0 and request.messages:
        result.tokens_in = sum(estimate_tokens(m.text()) + 4 for m in request.messages)
        estimated.append("tokens_in")
    if result.tokens_out <= 0:
        produced = result.content + "".join(t.name + t.arguments for t in result.tool_calls)
        if produced:
            result.tokens_out = estimate_tokens(produced)
            estimated.append("tokens_out")
    if estimated:
        result.raw = {**result.raw, "usage_estimated": estimated}
    return result


def parse_tool_arguments(arguments: str) -> dict[str, Any]:
    """Decode a tool call's JSON arguments; an empty or invalid payload becomes ``{}``.

    Lenient on purpose: it is used when translating to providers that need an
    object (Anthropic), where sending nothing beats failing the whole request.
    """
    try:
        value = json.loads(arguments) if arguments else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def mean_token_probability(logprobs: list[float]) -> float:
    """Geometric mean of the token probabilities, in 0..1 (exp of the mean logprob)."""
    if not logprobs:
        return 0.0
    finite = [lp for lp in logprobs if math.isfinite(lp)]
    if not finite:
        return 0.0
    return max(0.0, min(1.0, math.exp(sum(finite) / len(finite))))

"""The OpenAI-compatible gateway: ``POST /v1/chat/completions``, ``GET /v1/models``,
``GET /v1/models/{model}``, ``POST /v1/embeddings``, authenticated with Roost API keys
(``Authorization: Bearer``).

Point any OpenAI client at ``http://<roost>/v1``.  Requests are routed by model name to
the enabled providers that serve it, falling back down the priority order on
connection errors, timeouts, 5xx, a refused key and a missing model
(``ROOST_LLM_FALLBACK_ON``); the Roost extension
``ensemble`` (in the body, ``extra_body`` in the SDK) asks several providers at once.
Every call is recorded (``llm_requests``, ``llm_responses``, ``usage_records``).

Errors use OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, not the
problem JSON of the rest of the API, so OpenAI SDKs raise their usual exceptions; this holds
for every answer under ``/v1`` (unknown routes, 405, 413, 500, 503 too: ``http/problems.py``).
"""

from __future__ import annotations

import base64
import json
import re
import struct
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Annotated, Any, Final, Literal

import structlog
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator

from roost.context import current_context
from roost.errors import NotFound, PayloadTooLarge, RoostError
from roost.http.problems import (
    NO_RETRY,
    json_error_reason,
    openai_code,
    openai_error,
    retry_after,
    retry_useless,
)
from roost.http.routing import RoostRoute, RoostRouter
from roost.http.streams import until_disconnected
from roost.identity.deps import StreamSlots
from roost.inputs import StrictInput, holds_nul
from roost.llm import calls, routing
from roost.llm.deps import CallerPrincipal, GatewayDep
from roost.llm.errors import ModelNotFound
from roost.llm.gateway import LLMGateway
from roost.llm.schemas import EnsembleSpec
from roost.llm.types import (
    ChatMessage,
    ChatRequest,
    ChatResult,
    ToolCallDelta,
    ToolCallIds,
)
from roost.principal import Principal

log = structlog.get_logger(__name__)

# OpenAI request keys passed through to providers unchanged: the typed fields of
# ChatCompletionBody (a wrong type is a 400), then keys taken as sent.  Every other key is
# accepted and dropped (docs/chat.md lists them): ``store``, ``metadata`` and
# ``service_tier`` would act on the operator's provider account (stored completions,
# pricier tiers), and an ``anthropic`` provider reads ``metadata`` and ``service_tier``
# in other shapes.
TYPED_PASSTHROUGH = ("seed", "logprobs", "top_logprobs", "response_format",
                     "parallel_tool_calls")
PASSTHROUGH = ("presence_penalty", "frequency_penalty", "logit_bias", "reasoning_effort",
               "verbosity", "prediction")
MAX_EMBEDDING_INPUTS = 2048


def error_code(exc: RoostError) -> str | None:
    """The ``code`` of /v1's error shape for ``exc`` (also an agent model's stream)."""
    slug = exc.type_slug
    return {
        "model-not-found": "model_not_found", "no-llm-provider": "no_provider",
        "llm-provider-timeout": "provider_timeout", "llm-provider-failed": "provider_error",
        "llm-request-rejected": "provider_rejected_request",
    }.get(slug) or openai_code(slug)


# What pydantic adds to an error's ``loc`` beyond the fields: a union member's label
# ("str", "list[str]", "function-after[...]", a model's class name) and a dict's key (the
# caller's data, not echoed).  ``param`` names the field as the caller wrote it.
_TYPE_LABELS = frozenset({"str", "int", "float", "bool", "bytes", "none", "list", "dict", "any"})
_NOT_A_FIELD = re.compile(r"[^a-z0-9_]")


def field_path(loc: Sequence[int | str]) -> list[str]:
    """The body's field (and list indexes) an error's ``loc`` points at."""
    return [str(part) for part in loc if part != "body" and (
        isinstance(part, int)
        or not (part in _TYPE_LABELS or _NOT_A_FIELD.search(part)))]


# The errors about the ``model`` asked for: their ``param`` names it.
MODEL_ERRORS = frozenset({"model-not-found", "model-without-embeddings"})


def _retry_useless(exc: RoostError) -> bool:
    """Whether sending the request again cannot help: a 4xx other than 408/429 (the
    request itself, or the configuration, must change first: 409 ``no_provider``), or an
    error that says so (an agent's run that failed or goes on: a retry starts another).
    A provider's failure or timeout (502/504) may pass: a retry may help."""
    if exc.retry_helps is not None:
        return not exc.retry_helps
    return retry_useless(exc.status)


def _reported_error(errors: Sequence[Any]) -> dict[str, Any]:
    """The validation error to report: the first, or for a field several union members
    refused (``content: ["hello"]``: not a string, and its part 0 not an object) the one
    that went deepest into the value, the member its shape matched (not "should be a
    valid string" for a list, which is allowed)."""
    if not errors:
        return {}
    first: dict[str, Any] = errors[0]
    field = field_path(first.get("loc", ()))
    same_field = [e for e in errors if field_path(e.get("loc", ()))[:len(field)] == field]
    return max(same_field, key=lambda e: len(field_path(e.get("loc", ()))))


def _message_of(error: dict[str, Any]) -> str:
    """A validation error's message in JSON's words (an object, not a "dictionary")."""
    if error.get("type") in ("dict_type", "model_type", "model_attributes_type"):
        return "must be an object"
    return str(error.get("msg", "invalid"))


class OpenAIRoute(RoostRoute):
    """Answers errors (auth, validation, domain, providers) in OpenAI's error shape, with
    the field (``param``) and the gateway's codes; everything else under /v1 (unknown
    routes, 405, 413, 500, 503) gets the same shape from ``http/problems.py``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                first = _reported_error(exc.errors())
                loc = field_path(first.get("loc", ()))
                if first.get("type") == "json_invalid":
                    return openai_error(
                        400, f"the request body is not valid JSON: {json_error_reason(exc)}",
                        code="invalid_json", headers=NO_RETRY)
                message = f"{'.'.join(loc) or 'body'}: {_message_of(first)}"
                return openai_error(400, message, param=".".join(loc) or None,
                                    code="invalid_value", headers=NO_RETRY)
            except RoostError as exc:
                param = exc.extra.get("param") or (
                    "model" if exc.type_slug in MODEL_ERRORS else None)
                headers = {**(retry_after(exc) or {}), **(NO_RETRY if _retry_useless(exc) else {})}
                answer = openai_error(exc.status, exc.detail, code=error_code(exc),
                                      param=param, headers=headers or None)
                return _with_llm_request(answer, exc.extra.get("llm_request_id"))

        return route


def _with_llm_request(answer: Response, llm_request_id: str | None) -> Response:
    """A failed model call's error names its recorded request in ``error.roost.request_id``
    (where a success names it in ``roost.request_id``), so its owner can read every
    attempt with ``GET /api/v1/llm/requests/{id}``."""
    if llm_request_id is None:
        return answer
    body = json.loads(bytes(answer.body))
    body["error"]["roost"] = {"request_id": llm_request_id}
    answer.body = answer.render(body)
    answer.headers["content-length"] = str(len(answer.body))
    return answer


router = RoostRouter(prefix="/v1", tags=["openai-compatible"], route_class=OpenAIRoute)
SLASHED_METHODS: Final = ["GET", "POST", "PUT", "PATCH", "DELETE"]


class ChatCompletionBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=255)
    messages: list[ChatMessage] = Field(min_length=1, max_length=10_000)
    # Typed as OpenAI types them: ``stream: "yes"`` or ``max_tokens: "8"`` is a 400 naming
    # the field, not read as true or 8 (a client bug would otherwise change what is billed).
    stream: StrictBool = False
    stream_options: dict[str, Any] | None = None
    temperature: Annotated[float, Field(strict=True)] | None = Field(default=None, ge=0, le=2)
    top_p: Annotated[float, Field(strict=True)] | None = Field(default=None, ge=0, le=1)
    max_tokens: StrictInt | None = Field(default=None, ge=1, le=1_000_000)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1, le=1_000_000)
    stop: str | list[str] | None = None
    n: StrictInt | None = Field(default=None, ge=1, le=1, description="Only 1 is supported")
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=128)
    # A misspelt choice ("requried") is a 400: an anthropic provider read it as "auto".
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None
    logprobs: StrictBool | None = None
    top_logprobs: StrictInt | None = Field(default=None, ge=0, le=20)
    seed: StrictInt | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    response_format: dict[str, Any] | None = None
    # Only text answers: typed so that ``modalities: "audio"`` is refused too
    # (check_messages refuses any modality but text).
    modalities: list[str] | None = None
    user: str | None = Field(default=None, max_length=256)
    ensemble: EnsembleSpec | None = Field(
        default=None, description="Roost extension: ask several providers, keep one answer"
    )

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    def check_messages(self) -> None:
        """As OpenAI: a message's content is text or a non-empty list of parts; only an
        assistant turn that carries tool calls may leave it out (``null``).  A 400
        ``invalid_value`` whose ``param`` names the message (``messages.0.content``)."""
        for i, message in enumerate(self.messages):
            problem: str | None = None
            where: tuple[str | int, ...] = ("body", "messages", i, "content")
            if message.content == []:
                problem = "must not be an empty list"
            elif message.content is None and not (message.role == "assistant" and message.tool_calls):
                problem = "is required (only an assistant message with tool_calls may omit it)"
            elif isinstance(message.content, list):
                for j, part in enumerate(message.content):
                    # A text part's text is a string (a null was read as the word "None").
                    if part.get("type") in ("text", None) and not isinstance(part.get("text"), str):
                        problem, where = "a text part's text must be a string", (*where, j, "text")
                        break
                    image = part.get("image_url")
                    if part.get("type") == "image_url" and not (
                            isinstance(image, dict) and isinstance(image.get("url"), str)):
                        # A provider translating it would fail on it: a 500, not the
                        # client's mistake named.
                        problem = "an image_url part's image_url must be an object with a url"
                        where = (*where, j, "image_url")
                        break
            if problem:
                raise RequestValidationError([{
                    "type": "value_error", "loc": where, "msg": problem, "input": None}])
        self._check_tools()
        self._check_text_output()

    def _check_text_output(self) -> None:
        """Answers are text only (``parse_openai_chat`` keeps the text): asking for audio
        (``modalities`` with anything but ``"text"``, or ``audio``) is a 400 naming the
        key, as ``n: 2`` is, not a text answer without the audio."""
        extra = self.model_extra or {}
        problem: tuple[str, str] | None = None
        if any(modality != "text" for modality in self.modalities or []):
            problem = "modalities", "only text output is supported (modalities: [\"text\"])"
        elif extra.get("audio") is not None:
            problem = "audio", "audio output is not supported"
        elif self.stream_options is not None and not self.stream:
            # As OpenAI: the client expects a usage chunk a whole answer never sends.
            problem = "stream_options", "only allowed when stream is true"
        if problem:
            raise RequestValidationError([{
                "type": "value_error", "loc": ("body", problem[0]), "msg": problem[1],
                "input": None}])

    def _check_tools(self) -> None:
        """A function tool names its function (``{"type": "function", "function": {"name":
        ...}}``): without a name a provider's translation failed (a 500) where OpenAI
        answers 400."""
        for i, tool in enumerate(self.tools or []):
            if "type" not in tool:  # as OpenAI: an anthropic provider took it for its own
                raise RequestValidationError([{
                    "type": "value_error", "loc": ("body", "tools", i, "type"),
                    "msg": "is required (\"function\" for a function tool)", "input": None}])
            if tool["type"] != "function":
                continue
            function = tool.get("function")
            name = function.get("name") if isinstance(function, dict) else None
            if not isinstance(name, str) or not name.strip():
                raise RequestValidationError([{
                    "type": "value_error", "loc": ("body", "tools", i, "function", "name"),
                    "msg": "a function tool needs function.name, a non-empty string",
                    "input": None}])

    def check_stored_values(self) -> None:
        """The values kept in ``llm_requests.model_params`` (JSONB, which holds no NUL
        character): a NUL in one is a 400 ``invalid_value`` naming the field (``param``),
        like any invalid field, not a failure to store the request."""
        fields = {"stop": self.stop, "tool_choice": self.tool_choice, **self.passed_on()}
        for name, value in fields.items():
            if holds_nul(value):
                raise RequestValidationError([{
                    "type": "value_error", "loc": ("body", name),
                    "msg": "must not contain NUL characters (\\u0000)", "input": None}])

    def passed_on(self) -> dict[str, Any]:
        """The keys sent on to providers as they are (``ChatRequest.extra``): the typed
        ones set, then the PASSTHROUGH keys the body holds."""
        extra = self.model_extra or {}
        typed = {k: getattr(self, k) for k in TYPED_PASSTHROUGH if getattr(self, k) is not None}
        return {**typed, **{k: extra[k] for k in PASSTHROUGH if k in extra}}

    def to_request(self) -> ChatRequest:
        extra = self.passed_on()
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        return ChatRequest(
            model=self.model, messages=self.messages, temperature=self.temperature,
            max_tokens=self.max_completion_tokens or self.max_tokens,
            max_tokens_name="max_tokens" if self.max_completion_tokens is None
            else "max_completion_tokens", top_p=self.top_p,
            stop=stop, tools=self.tools, tool_choice=self.tool_choice, extra=extra,
        )


class EmbeddingsBody(StrictInput):
    """Strictly typed (``dimensions: "8"``, ``8.0`` or ``true`` is refused, not read as 8 or 1);
    unknown keys are ignored, as OpenAI's API does."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=255)
    input: Annotated[str, Field(min_length=1)] | Annotated[
        list[Annotated[str, Field(min_length=1)]],
        Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)] = Field(
        description=f"Text or list of 1 to {MAX_EMBEDDING_INPUTS} texts (token arrays unsupported)")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = Field(default=None, ge=1, le=16_384)
    user: str | None = None


def _check_sizes(gateway: LLMGateway, texts: list[str], what: str) -> None:
    limit = gateway.settings.chat_max_message_chars
    for i, text in enumerate(texts):
        if len(text) > limit:
            raise PayloadTooLarge(
                f"{what}[{i}] is {len(text)} characters; the limit is {limit} "
                "(ROOST_CHAT_MAX_MESSAGE_CHARS)"
            )


def _asked_logprobs(body: ChatCompletionBody) -> bool:
    """Whether the caller sent ``logprobs: true`` (passed through to the provider)."""
    return body.logprobs is True


def completion_id(request_id: Any) -> str:
    return f"chatcmpl-{request_id.hex if hasattr(request_id, 'hex') else request_id}"


def _message(result: ChatResult) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": result.content or None}
    if result.tool_calls:
        message["tool_calls"] = [tc.to_openai() for tc in result.tool_calls]
    elif message["content"] is None:
        message["content"] = ""
    return message


ModelHandler = Callable[[Principal, ChatCompletionBody],
                        Coroutine[Any, Any, Response | dict[str, Any]]]


ModelDescriber = Callable[[Principal, str], Coroutine[Any, Any, dict[str, Any] | None]]
"""A higher domain's ``GET /v1/models/<prefix>:...``: the model object of a name its
handler answers, None when the caller cannot use it (404 as any unknown model)."""


def model_handler(request: Request, model: str) -> ModelHandler | None:
    """A higher domain's answerer for models named ``<prefix>:...`` (e.g. ``agent:<slug>``:
    roost.agents), registered at start-up in ``app.state.openai_model_handlers``."""
    prefix, colon, _ = model.partition(":")
    handlers: dict[str, ModelHandler] = getattr(request.app.state, "openai_model_handlers", {})
    return handlers.get(prefix) if colon else None


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionBody, principal: CallerPrincipal, gateway: GatewayDep, request: Request,
    slot: StreamSlots,
) -> Response | dict[str, Any]:
    """OpenAI's chat completions; ``stream: true`` answers server-sent ``chat.completion.chunk``
    events ending with ``data: [DONE]``.  ``model: "agent:<slug>"`` runs that agent."""
    body.check_messages()
    body.check_stored_values()  # an agent model's request too: the same body, the same 400s
    if body.stream:  # a concurrent-stream slot (roost.identity.ratelimits), else 429
        await slot.acquire()
    _check_sizes(gateway, [m.text() for m in body.messages], "messages")
    handler = model_handler(request, body.model)
    if handler is not None:
        return await handler(principal, body)
    chat = body.to_request()
    if body.stream:
        return await _stream(request, gateway, principal, body, chat)
    outcome = await calls.complete(gateway, principal, chat, model=body.model,
                                   ensemble_spec=body.ensemble)
    result = outcome.result
    logprobs = result.choice_logprobs if _asked_logprobs(body) else None
    return {
        "id": completion_id(outcome.request_id),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": result.model or body.model,
        "choices": [{"index": 0, "message": _message(result),
                     "finish_reason": result.finish_reason or "stop", "logprobs": logprobs}],
        "usage": {"prompt_tokens": result.tokens_in, "completion_tokens": result.tokens_out,
                  "total_tokens": result.tokens_total},
        "system_fingerprint": None,
        "roost": {"request_id": str(outcome.request_id), "provider": outcome.winner.name,
                  "attempts": len(outcome.attempts)},
    }


async def _stream(
    request: Request, gateway: LLMGateway, principal: Principal, body: ChatCompletionBody,
    chat: ChatRequest,
) -> Response:
    # A client that gives up before the first chunk frees its stream slot at once.
    stream = await until_disconnected(request, calls.stream(
        gateway, principal, chat, model=body.model, ensemble_spec=body.ensemble))
    include_usage = bool((body.stream_options or {}).get("include_usage"))
    logprobs = _asked_logprobs(body)
    cid, created = completion_id(stream.request_id), int(time.time())
    calls_sent: dict[int, ToolCallDelta] = {}  # per tool call index: what the client has
    call_ids = ToolCallIds()  # as the stored answer's StreamAccumulator gives them
    # As every /v1 error (openai_error) names the HTTP request, and a failed model call
    # its recorded request: read now, the body is sent outside the request's context.
    names = {"request_id": current_context().request_id,
             "roost": {"request_id": str(stream.request_id)}}

    def frame(delta: dict[str, Any], finish: str | None = None,
              choice_logprobs: dict[str, Any] | None = None, **extra: Any) -> bytes:
        chunk = {"id": cid, "object": "chat.completion.chunk", "created": created,
                 "model": body.model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                              "logprobs": choice_logprobs if logprobs else None}], **extra}
        return f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n".encode()

    async def events() -> AsyncIterator[bytes]:
        yield frame({"role": "assistant", "content": ""})
        finish: str | None = None
        try:
            async with stream:
                async for chunk in stream.chunks():
                    if chunk.delta:
                        yield frame({"content": chunk.delta},
                                    choice_logprobs=chunk.choice_logprobs)
                    for tc in chunk.tool_calls:
                        yield frame({"tool_calls": [_tool_call_delta(tc, calls_sent, call_ids)]})
                    finish = chunk.finish_reason or finish
        except RoostError as err:  # recorded as failed; the client sees OpenAI's error shape
            payload = {"error": {"message": err.detail, "type": "api_error", "param": None,
                                 "code": error_code(err), **names}}
            yield f"data: {json.dumps(payload)}\n\n".encode()
            return
        except Exception:  # a bug: the stream still ends with the error frame it promises
            log.exception("llm.v1.stream_failed", request_id=str(stream.request_id))
            payload = {"error": {"message": "internal error: the answer broke off",
                                 "type": "server_error", "param": None,
                                 "code": "internal_error", **names}}
            yield f"data: {json.dumps(payload)}\n\n".encode()
            return
        outcome = stream.saved
        assert outcome is not None
        for index, sent in sorted(calls_sent.items()):
            if not sent.arguments:  # no arguments at all: "{}", as the whole answer has them
                yield frame({"tool_calls": [{"index": index, "function": {"arguments": "{}"}}]})
        yield frame({}, finish or outcome.result.finish_reason or "stop")
        if include_usage:
            res = outcome.result
            usage = {"prompt_tokens": res.tokens_in, "completion_tokens": res.tokens_out,
                     "total_tokens": res.tokens_total}
            last = {"id": cid, "object": "chat.completion.chunk", "created": created,
                    "model": body.model, "choices": [], "usage": usage}
            yield f"data: {json.dumps(last, separators=(',', ':'))}\n\n".encode()
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _tool_call_delta(tc: ToolCallDelta, sent: dict[int, ToolCallDelta],
                     ids: ToolCallIds) -> dict[str, Any]:
    """``tc`` as OpenAI streams a tool call: its id (fixed by ``ids``: made up when the
    provider's first piece has none or another call's, as the stored answer has it:
    clients answer a call by its id), type and name only the first time its
    index has them (some providers repeat them in every delta, and OpenAI clients join
    every string they get for an index: "call_1call_1"), ``arguments`` always a string
    (a client's assembled call has text to parse even when it has no arguments).
    ``sent`` keeps, per index, what the client has been sent."""
    seen = sent.setdefault(tc.index, ToolCallDelta(index=tc.index))
    out: dict[str, Any] = {"index": tc.index}
    function: dict[str, Any] = {}
    if not seen.id:
        seen.id = ids.fix(tc.index, tc.id)
        out["id"], out["type"] = seen.id, "function"
    if tc.name and not seen.name:
        function["name"] = seen.name = tc.name
    function["arguments"] = tc.arguments
    seen.arguments = seen.arguments or tc.arguments  # their first piece: whether any came
    out["function"] = function
    return out


@router.get("/models", response_model=None)
async def models(principal: CallerPrincipal, gateway: GatewayDep) -> dict[str, Any]:
    """The models of the enabled providers (OpenAI's list shape)."""
    return {"object": "list", "data": [
        {"id": name, "object": "model", "created": int(created.timestamp()), "owned_by": owner}
        for name, owner, created in await routing.available_models(gateway, principal)
    ]}


@router.get("/models/{model:path}", response_model=None)
async def model(model: str, principal: CallerPrincipal, gateway: GatewayDep,
                request: Request) -> dict[str, Any]:
    """One model of the enabled providers (OpenAI's model object; 404 ``model_not_found``).
    Model names may hold ``/`` (``org/model``), sent as is or as ``%2F``.  A name another
    domain answers on chat completions (``agent:<slug>``) is described by that domain
    (``app.state.openai_model_describers``): a client checking a model before using it
    finds the one it may use."""
    prefix, colon, _ = model.partition(":")
    describers: dict[str, ModelDescriber] = getattr(
        request.app.state, "openai_model_describers", {})
    describe = describers.get(prefix) if colon else None
    if describe is not None:
        described = await describe(principal, model)
        if described is None:
            raise ModelNotFound(f"no model {model!r} is visible to you")
        return described
    name, owner, created = await routing.get_model(gateway, principal, model)
    return {"id": name, "object": "model", "created": int(created.timestamp()), "owned_by": owner}


@router.post("/embeddings", response_model=None)
async def embeddings(
    body: EmbeddingsBody, principal: CallerPrincipal, gateway: GatewayDep
) -> dict[str, Any]:
    texts = [body.input] if isinstance(body.input, str) else list(body.input)  # 1 to 2,048
    _check_sizes(gateway, texts, "input")
    outcome = await calls.embed(gateway, principal, texts, model=body.model,
                                dimensions=body.dimensions)
    result = outcome.embedding
    assert result is not None

    def encode(vector: list[float]) -> list[float] | str:
        if body.encoding_format == "base64":
            return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        return vector

    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": encode(v)}
                 for i, v in enumerate(result.vectors)],
        "model": result.model or body.model,
        "usage": {"prompt_tokens": result.tokens_in, "total_tokens": result.tokens_in},
        "roost": {"request_id": str(outcome.request_id), "provider": outcome.winner.name},
    }


# ``/chat/completions/`` and ``/embeddings/`` (a trailing slash): a 404 in OpenAI's shape
# naming the path without it, not the app's 307 redirect (whose empty body an SDK cannot
# read, and which a POST's client may not follow).  The routes' own paths only: a
# catch-all "/{path}/" would turn every unknown path's 404 into a redirect to it.
@router.api_route("/chat/completions/", methods=SLASHED_METHODS, include_in_schema=False,
                  response_model=None)
@router.api_route("/embeddings/", methods=SLASHED_METHODS, include_in_schema=False,
                  response_model=None)
async def trailing_slash(request: Request) -> None:
    path = request.url.path
    raise NotFound(f"no route for {request.method} {path}: drop the trailing slash "
                   f"({path.rstrip('/')})")

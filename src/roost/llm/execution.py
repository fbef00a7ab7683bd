"""Running a routed call against its providers: a fallback chain or an ensemble, whole
or streamed, and embeddings.  Nothing here touches the database; ``roost.llm.calls``
wraps these in the recorded lifecycle.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import structlog

from roost.db.base import utcnow
from roost.llm import leases
from roost.llm.base import LLMProvider, elapsed_ms
from roost.llm.errors import AllProvidersFailed, ProviderError, ProviderNotSupported, ProviderTimeout
from roost.llm.gateway import LLMGateway
from roost.llm.openai_compat import OpenAICompatibleProvider
from roost.llm.orchestration import (
    Attempt,
    FallbackStream,
    call_with_fallback,
    ensemble,
    record_error,
)
from roost.llm.records import CallOutcome
from roost.llm.routing import Route
from roost.llm.types import (
    ChatChunk,
    ChatRequest,
    ChatResult,
    EmbeddingResult,
    StreamAccumulator,
    ToolCallDelta,
    estimate_tokens,
    fill_missing_usage,
)

log = structlog.get_logger(__name__)
T = TypeVar("T")


def retry_predicate(gateway: LLMGateway) -> Callable[[ProviderError], bool]:
    """Whether an error moves on to the next provider (``ROOST_LLM_FALLBACK_ON``)."""
    kinds = gateway.fallback_kinds

    def retry(err: ProviderError) -> bool:
        return err.kind in kinds

    return retry


def _model_request(route: Route, chat: ChatRequest) -> ChatRequest:
    return chat.model_copy(update={"model": route.model})


async def execute(gateway: LLMGateway, route: Route, chat: ChatRequest, request_id: uuid.UUID) -> CallOutcome:
    """Run the call (fallback chain or ensemble).  Raises ProviderError with ``.attempts``."""
    started = time.perf_counter()
    request = _model_request(route, chat)
    if route.mode == "ensemble":
        outcome = await ensemble(route.members, request, route.strategy or "weighted_vote",
                                 timeout_s=gateway.settings.llm_timeout_s)
        return CallOutcome(request_id=request_id,
                           result=fill_missing_usage(outcome.result, request), winner=outcome.winner_ref,
                           attempts=outcome.responses, latency_ms=elapsed_ms(started), votes=outcome.votes)
    ref, result, attempts = await call_with_fallback(
        route.members, request, retry_on=retry_predicate(gateway),
        attempt_timeout_s=gateway.settings.llm_timeout_s,
    )
    return CallOutcome(request_id=request_id, result=fill_missing_usage(result, request),
                       winner=ref, attempts=attempts, latency_ms=elapsed_ms(started))


class CallStream:
    """A streamed call: chunks as they come, the whole answer and its attempts at the end.

    ``await start()`` fetches the first chunk (falling back between providers until one
    produces it) so a failure before any output can still be an ordinary error answer.
    An ensemble cannot stream (the winner is known only at the end): its answer arrives
    as one chunk (text, tool calls and logprobs).
    """

    def __init__(self, gateway: LLMGateway, route: Route, chat: ChatRequest, request_id: uuid.UUID) -> None:
        self.gateway = gateway
        self.route = route
        self.request = _model_request(route, chat)
        self.request_id = request_id
        self.started = time.perf_counter()
        self._first: ChatChunk | None = None
        self._iter: AsyncIterator[ChatChunk] | None = None
        self._fallback: FallbackStream | None = None
        self._ensemble: CallOutcome | None = None
        self.accumulator = StreamAccumulator()

    @property
    def attempts(self) -> list[Attempt]:
        if self._ensemble is not None:
            return self._ensemble.attempts
        return self._fallback.attempts if self._fallback is not None else []

    async def start(self) -> None:
        if self.route.mode == "ensemble":
            self._ensemble = await execute(self.gateway, self.route, self.request, self.request_id)
            res = self._ensemble.result
            # The whole answer as one chunk: its tool calls and logprobs too.
            calls = [ToolCallDelta(index=i, id=tc.id, name=tc.name, arguments=tc.arguments)
                     for i, tc in enumerate(res.tool_calls)]
            self._first = ChatChunk(delta=res.content, finish_reason=res.finish_reason,
                                    tool_calls=calls, model=res.model,
                                    tokens_in=res.tokens_in, tokens_out=res.tokens_out,
                                    logprobs=res.logprobs,
                                    choice_logprobs=res.choice_logprobs)
            return
        settings = self.gateway.settings
        self._fallback = FallbackStream(
            self.route.members, self.request, retry_on=retry_predicate(self.gateway),
            first_chunk_timeout_s=settings.llm_timeout_s,
            max_duration_s=settings.llm_stream_max_s,
            max_answer_bytes=settings.llm_max_answer_bytes,
        )
        self._iter = aiter(self._fallback)
        self._first = await anext(self._iter)

    async def chunks(self) -> AsyncIterator[ChatChunk]:
        assert self._first is not None, "start() first"
        self.accumulator.add(self._first)
        yield self._first
        if self._iter is not None:
            async for chunk in self._iter:
                self.accumulator.add(chunk)
                yield chunk

    def outcome(self) -> CallOutcome:
        if self._ensemble is not None:
            return self._ensemble
        assert self._fallback is not None and self._fallback.winner is not None
        result = self._fallback.result or self.accumulator.result(latency_ms=elapsed_ms(self.started))
        # Usage from the stream's last chunk when the provider sent it (OpenAI servers
        # are asked with stream_options.include_usage), else the same estimate as a
        # non-streamed answer without usage.
        return CallOutcome(request_id=self.request_id,
                           result=fill_missing_usage(result, self.request),
                           winner=self._fallback.winner, attempts=self._fallback.attempts,
                           latency_ms=elapsed_ms(self.started))

    def latency_ms(self) -> int:
        return elapsed_ms(self.started)

    async def aclose(self) -> None:
        closer = getattr(self._iter, "aclose", None)
        if closer is not None:
            try:
                await closer()
            except Exception as exc:  # already failing or finished; nothing left to save
                log.debug("llm.stream.close_failed", error=type(exc).__name__)


async def _embed_call(
    provider: LLMProvider, texts: list[str], model: str | None, dimensions: int | None,
    timeout_s: float, name: str,
) -> EmbeddingResult:
    try:
        async with asyncio.timeout(timeout_s), leases.held(provider):
            if dimensions is not None and isinstance(provider, OpenAICompatibleProvider):
                return await provider.embed(texts, model, dimensions=dimensions)
            return await provider.embed(texts, model)
    except TimeoutError:
        raise ProviderTimeout(f"provider {name!r} did not answer within {timeout_s}s",
                              provider=name) from None


async def execute_embedding(
    gateway: LLMGateway, route: Route, texts: list[str], request_id: uuid.UUID,
    dimensions: int | None = None,
) -> CallOutcome:
    """Embed ``texts`` with the first provider of ``route`` that can (fallback as for
    chat; a provider type without embeddings never blocks the next one).  The vectors
    are ``outcome.embedding``.  Raises ProviderError with ``.attempts``."""
    started = time.perf_counter()
    attempts: list[Attempt] = []
    retry = retry_predicate(gateway)
    errors: list[ProviderError] = []
    for ref, provider in route.members:
        attempt = Attempt(ref=ref, started_at=utcnow())
        attempts.append(attempt)
        t0 = time.perf_counter()
        try:
            result = await _embed_call(provider, texts, route.model, dimensions,
                                       gateway.settings.llm_timeout_s, ref.name)
        except ProviderError as exc:
            record_error(attempt, exc, t0)
            errors.append(exc)
            if retry(exc) or isinstance(exc, ProviderNotSupported):
                continue
            break
        attempt.finished_at, attempt.latency_ms = utcnow(), elapsed_ms(t0)
        attempt.outcome, attempt.selected, attempt.confidence = "success", True, 1.0
        raw: dict[str, Any] = {"dimensions": result.dimensions, "count": len(result.vectors)}
        if result.tokens_in <= 0:  # no usage reported (many self-hosted servers): estimated
            # as a chat prompt's is, so embeddings are billed, and the answer says so
            result.tokens_in = sum(estimate_tokens(text) for text in texts)
            raw["usage_estimated"] = ["tokens_in"]
        attempt.result = ChatResult(
            content="", model=result.model or route.model, tokens_in=result.tokens_in,
            finish_reason="stop", raw=raw,
        )
        return CallOutcome(request_id=request_id, result=attempt.result, winner=ref,
                           attempts=attempts, latency_ms=elapsed_ms(started), embedding=result)
    error: ProviderError = (
        errors[0] if len(errors) == 1 else AllProvidersFailed("every provider failed", errors=errors)
    )
    error.attempts = attempts
    raise error

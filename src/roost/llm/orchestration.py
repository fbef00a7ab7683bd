"""Gateway orchestration over providers: fallback chains, streaming fallback, ensembles.

Pure orchestration: no database, no HTTP framework.  Every provider call is
recorded as an :class:`Attempt` (who, when, how long, outcome, error kind,
result) so the database layer can write one ``llm_responses`` row per attempt,
winners and losers alike.  When a call fails as a whole, the
:class:`~roost.llm.errors.ProviderError` raised carries the attempts in
``.attempts`` for the same reason.

Streaming fallback only works until the first chunk has been handed to the
caller: after that, the caller (and maybe a user) has seen part of one
provider's answer, and splicing another provider's answer onto it would
produce text nobody generated.  A failure after the first chunk is therefore
raised to the caller, with the partial answer recorded on the attempt.
"""

from __future__ import annotations

import asyncio
import json
import time
import unicodedata
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NoReturn
from uuid import UUID

import structlog

from roost.db.base import utcnow
from roost.llm import leases
from roost.llm.base import LLMProvider, elapsed_ms
from roost.llm.errors import (
    AllProvidersFailed,
    ProviderBadResponse,
    ProviderError,
    ProviderTimeout,
)
from roost.llm.types import (
    ChatChunk,
    ChatRequest,
    ChatResult,
    StreamAccumulator,
    mean_token_probability,
)

log = structlog.get_logger(__name__)

Outcome = Literal["success", "error", "timeout", "cancelled"]
Strategy = Literal["first_success", "highest_confidence", "weighted_vote"]
STRATEGIES: tuple[Strategy, ...] = ("first_success", "highest_confidence", "weighted_vote")

RetryOn = Callable[[ProviderError], bool] | Collection[type[ProviderError]]


@dataclass(frozen=True)
class ProviderRef:
    """Identifies a configured provider (an ``llm_providers`` row) without holding it."""

    name: str
    id: UUID | str | None = None
    type: str | None = None
    weight: float = 1.0  # ensemble voting weight (llm_providers.weight)


@dataclass
class Attempt:
    """One call to one provider and how it ended."""

    ref: ProviderRef
    started_at: datetime
    finished_at: datetime | None = None
    latency_ms: int = 0
    outcome: Outcome = "error"
    error_kind: str | None = None  # ProviderError.kind, "timeout", "cancelled" or "internal"
    error: str | None = None  # safe, human-readable (never contains secrets)
    upstream_status: int | None = None
    retryable: bool | None = None
    result: ChatResult | None = None  # partial for a stream that failed mid-way
    confidence: float | None = None
    selected: bool = False
    streamed: bool = False
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.outcome == "success"

    def to_response_row(self) -> dict[str, Any]:
        """Column values for an ``llm_responses`` row."""
        res = self.result
        raw: dict[str, Any] = dict(res.raw) if res else {}
        if not self.ok:
            raw["error"] = {
                "kind": self.error_kind,
                "message": self.error,
                "upstream_status": self.upstream_status,
            }
        return {
            "provider_id": self.ref.id,
            "provider_name": self.ref.name,
            "content": res.content if res else "",
            "raw_response": raw,
            "tokens_prompt": res.tokens_in if res else 0,
            "tokens_completion": res.tokens_out if res else 0,
            "tokens_total": res.tokens_total if res else 0,
            "confidence": self.confidence if self.confidence is not None else 0.0,
            "response_time": self.latency_ms,
            "finish_reason": res.finish_reason if res else None,
            "selected": self.selected,
            "outcome": self.outcome,
            "error_kind": self.error_kind,
            "error_message": self.error,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


def _should_retry(err: ProviderError, retry_on: RetryOn | None) -> bool:
    if retry_on is None:
        return err.retryable
    if callable(retry_on):
        return retry_on(err)
    return isinstance(err, tuple(retry_on))


def record_error(attempt: Attempt, err: BaseException, start: float) -> None:
    """Record on ``attempt`` how it failed (a provider error, cancellation or a bug)."""
    attempt.finished_at = utcnow()
    attempt.latency_ms = elapsed_ms(start)
    attempt.exception = err
    if isinstance(err, ProviderError):
        attempt.outcome = "timeout" if isinstance(err, ProviderTimeout) else "error"
        attempt.error_kind = err.kind
        attempt.error = err.detail
        attempt.upstream_status = err.upstream_status
        attempt.retryable = err.retryable
    elif isinstance(err, asyncio.CancelledError | GeneratorExit):
        attempt.outcome = "cancelled"
        attempt.error_kind = "cancelled"
        attempt.error = "cancelled before it finished"
    else:
        # A bug in a provider: keep the type name only, the message may hold anything.
        attempt.outcome = "error"
        attempt.error_kind = "internal"
        attempt.error = f"internal error ({type(err).__name__})"
        attempt.retryable = False


async def _run_attempt(
    attempt: Attempt, provider: LLMProvider, request: ChatRequest, timeout_s: float | None
) -> None:
    """Call ``provider.chat`` and record the outcome on ``attempt``; never raises
    provider errors (they stay on ``attempt.exception``), re-raises cancellation."""
    start = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            result = await leases.chat(provider, request)
    except TimeoutError:
        err = ProviderTimeout(
            f"provider {attempt.ref.name!r} did not answer within {timeout_s}s",
            provider=attempt.ref.name,
        )
        record_error(attempt, err, start)
    except asyncio.CancelledError as exc:
        record_error(attempt, exc, start)
        raise
    except Exception as exc:
        record_error(attempt, exc, start)
    else:
        attempt.finished_at = utcnow()
        attempt.latency_ms = elapsed_ms(start)
        attempt.outcome = "success"
        attempt.result = result
        attempt.confidence = response_confidence(result)


def _raise_failure(attempts: list[Attempt], what: str) -> NoReturn:
    errors = [a.exception for a in attempts if isinstance(a.exception, ProviderError)]
    summary = "; ".join(f"{a.ref.name}: {a.error_kind}" for a in attempts) or "no providers"
    err = AllProvidersFailed(f"{what} failed ({summary})", errors=errors)
    err.attempts = attempts
    raise err


# --- fallback ---------------------------------------------------------------------------


async def call_with_fallback(
    providers: Sequence[tuple[ProviderRef, LLMProvider]],
    request: ChatRequest,
    *,
    retry_on: RetryOn | None = None,
    attempt_timeout_s: float | None = None,
    retries_per_provider: int = 0,
    retry_backoff_s: float = 0.0,
) -> tuple[ProviderRef, ChatResult, list[Attempt]]:
    """Try providers in order until one answers.

    Moves on after an error for which ``retry_on`` says yes: by default the
    error's own ``retryable`` flag (connection errors, timeouts, 5xx, 429,
    malformed answers); ``retry_on`` may also be a predicate or a collection of
    ProviderError classes.  Any other error (e.g. a 400: the request itself is
    wrong) is re-raised at once with ``.attempts`` set.  When every provider
    failed, raises AllProvidersFailed with all attempts.

    ``retries_per_provider`` retries the same provider (with exponential
    backoff from ``retry_backoff_s``) before moving on.  Unexpected exceptions
    (bugs) are recorded as an ``internal`` attempt and re-raised untouched.
    """
    attempts: list[Attempt] = []
    for ref, provider in providers:
        for try_no in range(retries_per_provider + 1):
            attempt = Attempt(ref=ref, started_at=utcnow())
            attempts.append(attempt)
            await _run_attempt(attempt, provider, request, attempt_timeout_s)
            if attempt.ok and attempt.result is not None:
                attempt.selected = True
                return ref, attempt.result, attempts
            err = attempt.exception
            if not isinstance(err, ProviderError):
                assert err is not None
                raise err
            log.info(
                "llm.fallback.attempt_failed",
                provider=ref.name,
                kind=err.kind,
                upstream_status=err.upstream_status,
            )
            if not _should_retry(err, retry_on):
                err.attempts = attempts
                raise err
            if try_no < retries_per_provider and retry_backoff_s > 0:
                await asyncio.sleep(retry_backoff_s * 2**try_no)
    _raise_failure(attempts, "every provider")


async def _aclose(it: AsyncIterator[ChatChunk]) -> None:
    closer = getattr(it, "aclose", None)
    if closer is not None:
        await closer()


class FallbackStream:
    """Async iterator of chunks that falls back between providers until the first chunk.

    ``async for chunk in stream_with_fallback(...)``.  While iterating,
    ``attempts`` grows; ``winner`` is the provider whose first chunk was
    delivered; once the stream ends, ``result`` holds the reassembled answer
    (also stored on the winning attempt).  After the first chunk there is no
    fallback: a later failure is raised with ``.attempts`` set.

    ``max_duration_s`` bounds a provider's whole stream, first chunk included (a
    provider sending keep-alives forever resets the HTTP read timeout with each one):
    past it the stream fails with :class:`ProviderTimeout`.  ``max_answer_bytes`` bounds
    the text and tool-call arguments it accumulates (UTF-8 bytes): past it the stream
    fails with :class:`ProviderBadResponse`.
    """

    def __init__(
        self,
        providers: Sequence[tuple[ProviderRef, LLMProvider]],
        request: ChatRequest,
        *,
        retry_on: RetryOn | None = None,
        first_chunk_timeout_s: float | None = None,
        max_duration_s: float | None = None,
        max_answer_bytes: int | None = None,
    ) -> None:
        self.providers = list(providers)
        self.request = request
        self.retry_on = retry_on
        self.first_chunk_timeout_s = first_chunk_timeout_s
        self.max_duration_s = max_duration_s
        self.max_answer_bytes = max_answer_bytes
        self.attempts: list[Attempt] = []
        self.winner: ProviderRef | None = None
        self.result: ChatResult | None = None

    def __aiter__(self) -> AsyncIterator[ChatChunk]:
        return self._run()

    async def _first_chunk(self, attempt: Attempt, it: AsyncIterator[ChatChunk]) -> ChatChunk:
        try:
            async with asyncio.timeout(self.first_chunk_timeout_s):
                return await anext(it)
        except TimeoutError:
            raise ProviderTimeout(
                f"provider {attempt.ref.name!r} sent nothing within {self.first_chunk_timeout_s}s",
                provider=attempt.ref.name,
            ) from None
        except StopAsyncIteration:
            raise ProviderBadResponse(
                f"provider {attempt.ref.name!r} ended the stream without any chunk",
                provider=attempt.ref.name,
            ) from None

    async def _next_chunk(self, attempt: Attempt, it: AsyncIterator[ChatChunk],
                          deadline: float | None) -> ChatChunk:
        """The stream's next chunk, before ``deadline`` (loop time); StopAsyncIteration at
        its end.  Never waits across a ``yield``: the deadline covers the provider only."""
        try:
            async with asyncio.timeout_at(deadline):
                return await anext(it)
        except TimeoutError:
            raise ProviderTimeout(
                f"provider {attempt.ref.name!r} was still streaming after "
                f"{self.max_duration_s:g}s, the limit of a streamed answer "
                "(ROOST_LLM_STREAM_MAX_S)", provider=attempt.ref.name,
            ) from None

    def _check_size(self, attempt: Attempt, size: int) -> None:
        if self.max_answer_bytes is not None and size > self.max_answer_bytes:
            raise ProviderBadResponse(
                f"provider {attempt.ref.name!r} streamed an answer larger than "
                f"{self.max_answer_bytes} bytes (ROOST_LLM_MAX_ANSWER_BYTES)",
                provider=attempt.ref.name, retryable=False,
            )

    async def _run(self) -> AsyncIterator[ChatChunk]:
        for ref, provider in self.providers:
            attempt = Attempt(ref=ref, started_at=utcnow(), streamed=True)
            self.attempts.append(attempt)
            start = time.perf_counter()
            deadline = (None if self.max_duration_s is None
                        else asyncio.get_running_loop().time() + self.max_duration_s)
            it = leases.stream_chat(provider, self.request)
            acc = StreamAccumulator()
            try:
                first = await self._first_chunk(attempt, it)
            except ProviderError as err:
                record_error(attempt, err, start)
                await _aclose(it)
                if not _should_retry(err, self.retry_on):
                    err.attempts = self.attempts
                    raise
                continue
            except BaseException as exc:
                record_error(attempt, exc, start)
                await _aclose(it)
                raise
            # Committed: from here on this provider's answer is the answer.
            self.winner = ref
            attempt.selected = True
            try:
                size = _chunk_size(first)
                self._check_size(attempt, size)
                acc.add(first)
                yield first
                while True:
                    try:
                        chunk = await self._next_chunk(attempt, it, deadline)
                    except StopAsyncIteration:
                        break
                    size += _chunk_size(chunk)
                    self._check_size(attempt, size)
                    acc.add(chunk)
                    yield chunk
            except BaseException as exc:
                record_error(attempt, exc, start)
                attempt.result = acc.result(latency_ms=attempt.latency_ms)
                if isinstance(exc, ProviderError):
                    exc.attempts = self.attempts
                raise
            finally:
                await _aclose(it)
            attempt.finished_at = utcnow()
            attempt.latency_ms = elapsed_ms(start)
            attempt.outcome = "success"
            attempt.result = self.result = acc.result(latency_ms=attempt.latency_ms)
            attempt.confidence = response_confidence(attempt.result)
            return
        _raise_failure(self.attempts, "every provider (stream)")


def _chunk_size(chunk: ChatChunk) -> int:
    """What a chunk adds to the answer held in memory (UTF-8 bytes of text and arguments)."""
    size = len(chunk.delta.encode("utf-8", "surrogatepass")) if chunk.delta else 0
    for call in chunk.tool_calls:
        size += len(call.arguments.encode("utf-8", "surrogatepass")) + len(call.name or "")
    return size


def stream_with_fallback(
    providers: Sequence[tuple[ProviderRef, LLMProvider]],
    request: ChatRequest,
    *,
    retry_on: RetryOn | None = None,
    first_chunk_timeout_s: float | None = None,
) -> FallbackStream:
    """Stream from the first provider that produces a chunk (see FallbackStream)."""
    return FallbackStream(providers, request, retry_on=retry_on, first_chunk_timeout_s=first_chunk_timeout_s)


# --- ensemble ---------------------------------------------------------------------------

# Heuristic confidence by finish reason when the server gave no logprobs: a
# natural stop (or a deliberate tool call) is a complete answer, a length cut
# is probably truncated, a content filter hit is barely an answer.
FINISH_CONFIDENCE = {"stop": 0.9, "tool_calls": 0.9, "length": 0.5, "content_filter": 0.1}
UNKNOWN_FINISH_CONFIDENCE = 0.6


def response_confidence(result: ChatResult) -> float:
    """Confidence of one response, in 0..1 (stored as ``llm_responses.confidence``).

    - With logprobs: the geometric mean of the token probabilities,
      ``exp(mean(logprob))``, i.e. how sure the model was per token on average.
    - Without: 0 for an empty answer (no text, no tool calls); otherwise by
      finish reason (``FINISH_CONFIDENCE``: stop/tool_calls 0.9, length 0.5,
      content_filter 0.1, anything else 0.6).

    Logprob-based scores and heuristic ones are not strictly comparable; ask
    every ensemble member for logprobs (``extra={"logprobs": True}``) when
    mixing providers under ``highest_confidence``.
    """
    if not result.content.strip() and not result.tool_calls:
        return 0.0
    if result.logprobs:
        return round(mean_token_probability(result.logprobs), 4)
    return FINISH_CONFIDENCE.get(result.finish_reason or "", UNKNOWN_FINISH_CONFIDENCE)


_STRIP = " \t\r\n.!?;:,\"'`*_…"


def normalise_content(result: ChatResult) -> str:
    """Key under which weighted_vote groups answers: Unicode-normalised, case-folded,
    whitespace collapsed, surrounding punctuation/markdown emphasis stripped.  Tool
    calls vote by name and arguments."""
    text = unicodedata.normalize("NFKC", result.content).casefold()
    text = " ".join(text.split()).strip(_STRIP)
    if result.tool_calls:
        calls = ",".join(f"{tc.name}({_arguments_key(tc.arguments)})" for tc in result.tool_calls)
        text = f"{text}|tools:{calls}"
    return text


def _arguments_key(arguments: str) -> str:
    """A tool call's arguments as weighted_vote compares them: the same JSON object however
    a provider wrote it (key order, spacing) is one key; text that is not JSON as sent."""
    try:
        value = json.loads(arguments)
    except (ValueError, RecursionError):
        return arguments
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass
class EnsembleOutcome:
    strategy: Strategy
    responses: list[Attempt]  # one per member, in member order; the winner has selected=True
    winner: Attempt
    votes: dict[str, float] = field(default_factory=dict)  # weighted_vote: key -> weight sum

    @property
    def result(self) -> ChatResult:
        assert self.winner.result is not None
        return self.winner.result

    @property
    def winner_ref(self) -> ProviderRef:
        return self.winner.ref


def _pick_highest_confidence(ok: list[tuple[int, Attempt]]) -> Attempt:
    # Highest confidence; ties to the heavier provider, then the faster, then member order.
    return min(ok, key=lambda p: (-(p[1].confidence or 0.0), -p[1].ref.weight, p[1].latency_ms, p[0]))[1]


def _pick_weighted_vote(ok: list[tuple[int, Attempt]]) -> tuple[Attempt, dict[str, float]]:
    candidates = [(i, a) for i, a in ok if a.result and normalise_content(a.result)]
    candidates = candidates or ok  # all empty: let the empties vote among themselves
    groups: dict[str, list[tuple[int, Attempt]]] = {}
    for i, a in candidates:
        assert a.result is not None
        groups.setdefault(normalise_content(a.result), []).append((i, a))
    votes = {key: sum(a.ref.weight for _, a in members) for key, members in groups.items()}

    def fastest(members: list[tuple[int, Attempt]]) -> tuple[int, Attempt]:
        return min(members, key=lambda p: (p[1].latency_ms, p[0]))

    # Max weight; ties go to the group whose fastest member answered first.
    def rank(key: str) -> tuple[float, int, int]:
        index, first = fastest(groups[key])
        return (-round(votes[key], 9), first.latency_ms, index)

    best_key = min(groups, key=rank)
    return fastest(groups[best_key])[1], votes


async def ensemble(
    members: Sequence[tuple[ProviderRef, LLMProvider]],
    request: ChatRequest,
    strategy: Strategy = "weighted_vote",
    *,
    timeout_s: float | None = None,
) -> EnsembleOutcome:
    """Ask every member concurrently and choose one answer.

    - ``first_success``: the first successful answer wins; members still
      running are cancelled and reported with outcome ``cancelled``.
    - ``highest_confidence``: waits for all; highest ``response_confidence``
      wins (ties: higher weight, then lower latency).
    - ``weighted_vote``: waits for all; answers are grouped by
      ``normalise_content``, each group scores the sum of its members'
      ``ref.weight``; the best group wins (ties: the group with the fastest
      member), and its fastest member is the selected response.

    ``timeout_s`` bounds each member separately (a timed-out member counts as
    failed).  Members are called with the same request; leave
    ``request.model`` as None so each uses its own default model.  Raises
    AllProvidersFailed (with ``.attempts``) when no member succeeds.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown ensemble strategy {strategy!r}; use one of {STRATEGIES}")
    attempts = [Attempt(ref=ref, started_at=utcnow()) for ref, _ in members]
    tasks = [
        asyncio.create_task(_run_attempt(a, p, request, timeout_s), name=f"llm-{a.ref.name}")
        for a, (_, p) in zip(attempts, members, strict=True)
    ]
    try:
        if strategy == "first_success":
            pending: set[asyncio.Task[None]] = set(tasks)
            while pending and not any(a.ok for a in attempts):
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        else:
            await asyncio.gather(*tasks)
    finally:
        # Cancel whatever still runs (first_success losers, or everything if
        # our caller was cancelled) and wait so each records "cancelled".
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for a in attempts:
            if a.finished_at is None:  # cancelled before its task ever ran
                a.finished_at = utcnow()
                a.outcome, a.error_kind = "cancelled", "cancelled"
                a.error = "cancelled before it finished"

    ok = [(i, a) for i, a in enumerate(attempts) if a.ok]
    if not ok:
        _raise_failure(attempts, f"ensemble ({strategy})")
    votes: dict[str, float] = {}
    if strategy == "first_success":
        winner = min(ok, key=lambda p: (p[1].finished_at or p[1].started_at, p[0]))[1]
    elif strategy == "highest_confidence":
        winner = _pick_highest_confidence(ok)
    else:
        winner, votes = _pick_weighted_vote(ok)
    winner.selected = True
    return EnsembleOutcome(strategy=strategy, responses=attempts, winner=winner, votes=votes)

"""Fallback chains, streaming fallback and ensembles against the stub process.

Every provider below talks to the same stub; each uses its own default model
and a step scripted for that model makes them differ (fail, hang, reply...).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Callable

import pytest

from roost.llm import (
    AllProvidersFailed,
    ChatRequest,
    ChatResult,
    OpenAICompatibleProvider,
    ProviderError,
    ProviderRef,
    ProviderRequestError,
    ProviderUnavailable,
    call_with_fallback,
    ensemble,
    normalise_content,
    response_confidence,
    stream_with_fallback,
)
from tests.support.openai_stub import Drop, Fail, Hang, Junk, Reply, Step, StubServer

Make = Callable[..., tuple[ProviderRef, OpenAICompatibleProvider]]
REQ = ChatRequest(messages=[{"role": "user", "content": "capital of France?"}])


@pytest.fixture
async def make(stub: StubServer) -> AsyncIterator[Make]:
    """make(model, step=None, weight=1.0, timeout=5.0) -> (ref, provider); the stub answers
    every request for ``model`` with ``step``."""
    created: list[OpenAICompatibleProvider] = []

    def factory(
        model: str, step: Step | None = None, weight: float = 1.0, timeout: float = 5.0
    ) -> tuple[ProviderRef, OpenAICompatibleProvider]:
        if step is not None:
            stub.script(dataclasses.replace(step, model=model, times=None))
        p = OpenAICompatibleProvider(stub.base_url, default_model=model, timeout=timeout, name=f"p-{model}")
        created.append(p)
        return ProviderRef(name=f"p-{model}", id=model, type="openai", weight=weight), p

    yield factory
    for p in created:
        await p.aclose()


# --- fallback ---------------------------------------------------------------------------


async def test_fallback_skips_503_and_hanging_provider(make: Make, stub: StubServer) -> None:
    down = make("down", Fail(503))
    stuck = make("stuck", Hang(), timeout=0.3)
    good = make("good")
    start = time.monotonic()
    winner, result, attempts = await call_with_fallback([down, stuck, good], REQ)
    assert winner.name == "p-good"
    assert result.content == "echo: capital of France? (model good)"
    assert [(a.ref.name, a.outcome, a.error_kind) for a in attempts] == [
        ("p-down", "error", "unavailable"),
        ("p-stuck", "timeout", "timeout"),
        ("p-good", "success", None),
    ]
    assert attempts[0].upstream_status == 503
    assert [a.selected for a in attempts] == [False, False, True]
    assert all(a.finished_at and a.finished_at >= a.started_at for a in attempts)
    assert attempts[1].latency_ms >= 250
    assert time.monotonic() - start < 3
    assert [len(stub.requests(model=m)) for m in ("down", "stuck", "good")] == [1, 1, 1]


async def test_gateway_level_attempt_timeout(make: Make) -> None:
    slow = make("slow", Reply(delay_ms=2000))
    good = make("good2")
    winner, _, attempts = await call_with_fallback([slow, good], REQ, attempt_timeout_s=0.2)
    assert winner.name == "p-good2"
    assert attempts[0].outcome == "timeout" and attempts[0].retryable


async def test_no_fallback_on_400(make: Make, stub: StubServer) -> None:
    bad = make("bad-request", Fail(400))
    good = make("never-called")
    with pytest.raises(ProviderRequestError) as info:
        await call_with_fallback([bad, good], REQ)
    assert [a.ref.name for a in info.value.attempts] == ["p-bad-request"]
    assert info.value.attempts[0].upstream_status == 400
    assert stub.requests(model="never-called") == []


async def test_junk_answer_falls_back(make: Make) -> None:
    junk = make("junk", Junk("text"))
    good = make("ok")
    winner, _, attempts = await call_with_fallback([junk, good], REQ)
    assert winner.name == "p-ok"
    assert attempts[0].error_kind == "bad_response"


async def test_all_failed_carries_every_attempt(make: Make) -> None:
    a = make("a", Fail(500))
    b = make("b", Fail(502))
    with pytest.raises(AllProvidersFailed) as info:
        await call_with_fallback([a, b], REQ)
    err = info.value
    assert err.retryable and len(err.errors) == 2
    assert [x.upstream_status for x in err.attempts] == [500, 502]
    assert "p-a: unavailable" in err.detail
    rows = [x.to_response_row() for x in err.attempts]
    assert rows[0]["content"] == "" and rows[0]["selected"] is False
    assert rows[0]["raw_response"]["error"]["upstream_status"] == 500


async def test_retry_on_predicate_and_classes(make: Make) -> None:
    a = make("r1", Fail(503))
    b = make("r2")
    # Refuse to fall back on anything:
    with pytest.raises(ProviderUnavailable):
        await call_with_fallback([a, b], REQ, retry_on=lambda e: False)
    # Fall back on exactly these classes (a 503 qualifies):
    winner, _, _ = await call_with_fallback([a, b], REQ, retry_on=(ProviderUnavailable,))
    assert winner.name == "p-r2"


async def test_retries_same_provider_before_moving_on(make: Make, stub: StubServer) -> None:
    stub.script(Fail(503, model="flaky"))  # once
    flaky = make("flaky")
    winner, _, attempts = await call_with_fallback([flaky], REQ, retries_per_provider=1)
    assert winner.name == "p-flaky"
    assert [a.outcome for a in attempts] == ["error", "success"]
    assert len(stub.requests(model="flaky")) == 2


async def test_empty_provider_list_fails_cleanly() -> None:
    with pytest.raises(AllProvidersFailed) as info:
        await call_with_fallback([], REQ)
    assert info.value.attempts == [] and not info.value.retryable


async def test_success_row_for_the_database(make: Make) -> None:
    only = make("row")
    _, result, attempts = await call_with_fallback([only], REQ)
    row = attempts[0].to_response_row()
    assert row["provider_id"] == "row" and row["provider_name"] == "p-row"
    assert row["content"] == result.content
    assert row["tokens_total"] == result.tokens_in + result.tokens_out
    assert row["selected"] is True and row["finish_reason"] == "stop"
    assert 0 < row["confidence"] <= 1


# --- streaming fallback -----------------------------------------------------------------


async def test_stream_falls_back_before_first_chunk(make: Make) -> None:
    down = make("s-down", Fail(503))
    stuck = make("s-stuck", Hang(), timeout=5)
    good = make("s-good")
    stream = stream_with_fallback([down, stuck, good], REQ, first_chunk_timeout_s=0.3)
    text = "".join([c.delta async for c in stream])
    assert text == "echo: capital of France? (model s-good)"
    assert stream.winner is not None and stream.winner.name == "p-s-good"
    assert [a.outcome for a in stream.attempts] == ["error", "timeout", "success"]
    assert stream.result is not None and stream.result.content == text
    assert stream.result.tokens_out == 6
    assert stream.attempts[2].selected and stream.attempts[2].streamed


async def test_stream_does_not_fall_back_after_first_chunk(make: Make, stub: StubServer) -> None:
    breaks = make("s-breaks", Drop(after=2))
    spare = make("s-spare")
    stream = stream_with_fallback([breaks, spare], REQ)
    seen: list[str] = []
    with pytest.raises(ProviderUnavailable) as info:
        async for chunk in stream:
            seen.append(chunk.delta)
    assert "".join(seen) == "echo: capital "
    attempt = info.value.attempts[0]
    assert len(info.value.attempts) == 1 and attempt.outcome == "error"
    assert attempt.result is not None and attempt.result.content == "echo: capital "
    assert stub.requests(model="s-spare") == []


async def test_stream_stops_on_400(make: Make) -> None:
    bad = make("s-400", Fail(400))
    spare = make("s-spare2")
    with pytest.raises(ProviderRequestError):
        [c async for c in stream_with_fallback([bad, spare], REQ)]


async def test_stream_consumer_breaking_off_records_cancelled(make: Make) -> None:
    good = make("s-long", Reply(chunk_delay_ms=20))
    stream = stream_with_fallback([good], REQ)
    it = stream.__aiter__()
    first = await it.__anext__()
    assert first.delta
    await it.aclose()  # type: ignore[attr-defined]
    assert stream.attempts[0].outcome == "cancelled"


# --- ensembles --------------------------------------------------------------------------


async def test_first_success_cancels_the_slow_ones(make: Make, stub: StubServer) -> None:
    fast = make("e-fast", Reply(delay_ms=50))
    slow1 = make("e-slow1", Reply(delay_ms=3000))
    slow2 = make("e-slow2", Reply(delay_ms=3000))
    broken = make("e-broken", Fail(500))
    start = time.monotonic()
    out = await ensemble([slow1, fast, slow2, broken], REQ, "first_success")
    assert time.monotonic() - start < 2
    assert out.winner_ref.name == "p-e-fast"
    assert out.result.content.endswith("(model e-fast)")
    outcomes = {a.ref.name: a.outcome for a in out.responses}
    assert outcomes == {
        "p-e-slow1": "cancelled",
        "p-e-fast": "success",
        "p-e-slow2": "cancelled",
        "p-e-broken": "error",
    }
    assert [a.selected for a in out.responses] == [False, True, False, False]
    # The slow ones really were asked (and then abandoned).
    assert len(stub.requests(model="e-slow1")) == 1


async def test_first_success_skips_failures(make: Make) -> None:
    broken = make("f-broken", Fail(503))
    later = make("f-later", Reply(delay_ms=100))
    out = await ensemble([broken, later], REQ, "first_success")
    assert out.winner_ref.name == "p-f-later"


async def test_highest_confidence_uses_logprobs(make: Make) -> None:
    unsure = make("c-unsure", Reply(logprob=-2.0))
    sure = make("c-sure", Reply(logprob=-0.01))
    meh = make("c-meh", Reply(logprob=-0.5))
    request = REQ.model_copy(update={"extra": {"logprobs": True}})
    out = await ensemble([unsure, sure, meh], request, "highest_confidence")
    assert out.winner_ref.name == "p-c-sure"
    conf = {a.ref.name: a.confidence for a in out.responses}
    assert conf["p-c-sure"] == pytest.approx(0.99, abs=0.001)
    assert conf["p-c-unsure"] == pytest.approx(0.1353, abs=0.001)


async def test_highest_confidence_heuristic_without_logprobs(make: Make) -> None:
    truncated = make("h-trunc", Reply(finish_reason="length"))
    empty = make("h-empty", Reply(""))
    complete = make("h-complete")
    failed = make("h-failed", Fail(502))
    out = await ensemble([truncated, empty, complete, failed], REQ, "highest_confidence")
    assert out.winner_ref.name == "p-h-complete"
    conf = {a.ref.name: a.confidence for a in out.responses}
    assert conf == {"p-h-trunc": 0.5, "p-h-empty": 0.0, "p-h-complete": 0.9, "p-h-failed": None}


async def test_weighted_vote_majority_and_weights(make: Make) -> None:
    a = make("v-a", Reply("Paris"))
    b = make("v-b", Reply("  paris. "))
    c = make("v-c", Reply("Lyon"), weight=1.5)
    out = await ensemble([a, b, c], REQ, "weighted_vote")
    assert normalise_content(out.result) == "paris"
    assert out.votes == {"paris": 2.0, "lyon": 1.5}
    assert out.winner_ref.name in ("p-v-a", "p-v-b")
    # A heavy enough provider outvotes the majority.
    heavy = make("v-c", weight=2.5)
    out = await ensemble([a, b, heavy], REQ, "weighted_vote")
    assert out.winner_ref.name == "p-v-c" and out.result.content == "Lyon"
    assert sum(x.selected for x in out.responses) == 1


async def test_weighted_vote_tie_goes_to_the_fastest(make: Make) -> None:
    slow = make("t-slow", Reply("blue", delay_ms=400))
    fast = make("t-fast", Reply("green", delay_ms=10))
    out = await ensemble([slow, fast], REQ, "weighted_vote")
    assert out.winner_ref.name == "p-t-fast"
    assert out.votes == {"blue": 1.0, "green": 1.0}


async def test_ensemble_timeout_and_total_failure(make: Make) -> None:
    stuck = make("x-stuck", Hang())
    down = make("x-down", Fail(503))
    with pytest.raises(AllProvidersFailed) as info:
        await ensemble([stuck, down], REQ, "weighted_vote", timeout_s=0.3)
    kinds = sorted((a.ref.name, a.outcome) for a in info.value.attempts)
    assert kinds == [("p-x-down", "error"), ("p-x-stuck", "timeout")]


async def test_ensemble_rejects_unknown_strategy(make: Make) -> None:
    with pytest.raises(ValueError, match="strategy"):
        await ensemble([make("u")], REQ, "coin_flip")  # type: ignore[arg-type]


# --- pure helpers -----------------------------------------------------------------------


def test_confidence_and_normalisation_rules() -> None:
    assert response_confidence(ChatResult(content="x", finish_reason="stop")) == 0.9
    assert response_confidence(ChatResult(content="x", finish_reason="weird")) == 0.6
    assert response_confidence(ChatResult(content=" ", finish_reason="stop")) == 0.0
    assert response_confidence(ChatResult(content="x", logprobs=[0.0, 0.0])) == 1.0
    assert normalise_content(ChatResult(content="**Hello,   World!**")) == "hello, world"
    assert normalise_content(ChatResult(content="\uff21\uff22\uff23")) == "abc"  # NFKC


def test_provider_error_is_a_bad_gateway() -> None:
    err = ProviderUnavailable("x")
    assert isinstance(err, ProviderError) and err.status == 502 and err.retryable


class _Broken:
    """A provider with a bug: it raises something that is not a ProviderError."""

    name = "broken"
    default_model = "b"

    async def chat(self, request: ChatRequest) -> ChatResult:
        raise RuntimeError("secret-ish internal detail")


async def test_provider_bugs_are_recorded_not_swallowed(make: Make) -> None:
    good = make("bug-neighbour")
    broken = (ProviderRef(name="broken"), _Broken())
    # In an ensemble the others still win; the bug is recorded without its message.
    out = await ensemble([broken, good], REQ, "weighted_vote")  # type: ignore[list-item]
    assert out.winner_ref.name == "p-bug-neighbour"
    assert out.responses[0].error_kind == "internal"
    assert "secret-ish" not in (out.responses[0].error or "")
    # In a fallback chain a bug is not a reason to try the next provider: it surfaces.
    with pytest.raises(RuntimeError):
        await call_with_fallback([broken, good], REQ)  # type: ignore[list-item]


async def test_providers_satisfy_the_protocol(make: Make) -> None:
    from roost.llm import AnthropicProvider, LLMProvider

    _, p = make("proto")
    assert isinstance(p, LLMProvider)
    async with AnthropicProvider(api_key="k") as claude:
        assert isinstance(claude, LLMProvider)

